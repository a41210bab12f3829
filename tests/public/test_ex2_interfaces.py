"""Exercise 2, public checks: names, signatures and shapes (no expected values)."""

from __future__ import annotations

import math

import torch

from data import Market1501
from network import ReIDNet
from utils.TripletLoss import TripletLoss


def test_q2_triplet_loss_is_a_differentiable_scalar():
    features = torch.randn(8, 4, requires_grad=True)
    labels = torch.arange(8) % 2
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        loss = TripletLoss(margin=0.3, mining=mining)(features, labels)
        assert loss.dim() == 0 and math.isfinite(loss.item())
    TripletLoss(soft_margin=True)(features, labels).backward()
    assert features.grad is not None


def test_q4_market1501_attributes_and_items(tiny_market):
    dataset = Market1501(tiny_market, "train")
    assert len(dataset) == len(dataset.imgs) > 0
    assert dataset.get_id(dataset.imgs[0]) in dataset.unique_ids
    image, label = dataset[0]
    assert isinstance(label, int) and 0 <= label < len(dataset.unique_ids)


def test_q5_reidnet_three_outputs():
    model = ReIDNet(5, backbone="resnet50", feat_dim=16).eval()
    concat, logits, features = model(torch.rand(2, 3, 64, 32))
    assert concat.shape == (2, 21) and logits.shape == (2, 5) and features.shape == (2, 16)


def test_q6_train_one_epoch_returns_loss_and_accuracy():
    import main
    from loss import ReIDLoss

    model = ReIDNet(4, backbone="resnet18", feat_dim=8)
    loader = [(torch.rand(8, 3, 64, 32), torch.arange(8) % 4) for _ in range(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    result = main.train(model, loader, ReIDLoss(4), optimizer, torch.device("cpu"))
    assert math.isfinite(float(result["loss"])) and 0.0 <= float(result["accuracy"]) <= 1.0


def test_q7_checkpoint_round_trip(tmp_path):
    import evaluation_tp
    import main

    model = ReIDNet(4, backbone="resnet18", feat_dim=8)
    config = {"num_classes": 4, "backbone": "resnet18", "feat_dim": 8, "height": 64, "width": 32}
    path = tmp_path / "model.pt"
    main.save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.01), 1, config)
    reloaded, saved_config = evaluation_tp.load_reid_checkpoint(path, "cpu")
    assert not reloaded.training and saved_config["num_classes"] == 4
