"""Ex2 Q5: ``ReIDNet`` (ResNet backbone + FC1/BN embedding + FC2 logits) and ``ReIDLoss``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference import models, triplet

pytestmark = pytest.mark.timeout(40, method="signal")
NETWORK, LOSS = "network.py", "loss.py"
NUM_CLASSES, FEAT_DIM = 7, 32


@pytest.fixture(scope="module")
def reidnet(submission):
    torch.manual_seed(0)
    return submission.get(NETWORK, "ReIDNet")(NUM_CLASSES, backbone="resnet50", feat_dim=FEAT_DIM, pretrained=False)


def test_reidnet_outputs_in_tp_order(reidnet):
    """forward returns (cat([logits, features], 1), logits (N, classes), features (N, feat_dim)), train and eval."""
    images = torch.rand(3, 3, 64, 32)
    for mode in ("train", "eval"):
        getattr(reidnet, mode)()
        with torch.no_grad():
            outputs = reidnet(images)
        assert isinstance(outputs, (tuple, list)) and len(outputs) == 3, \
            f"ReIDNet.forward should return 3 tensors, got {type(outputs).__name__} of length {len(outputs)}"
        joined, logits, features = outputs
        shapes = [tuple(t.shape) for t in outputs]
        expected = [(3, NUM_CLASSES + FEAT_DIM), (3, NUM_CLASSES), (3, FEAT_DIM)]
        assert shapes == expected, f"{mode} mode: output shapes {shapes}, expected {expected}"
        assert torch.equal(joined, torch.cat([logits, features], 1)), \
            "the first output must be torch.cat([logits, features], 1), in that order"
        assert torch.isfinite(joined).all(), f"{mode} mode: non-finite outputs"


def test_reidnet_backbone_and_heads(reidnet):
    """The backbone keeps every convolution of torchvision's resnet50; FC1 = Linear(2048, feat_dim) with
    BatchNorm1d, FC2 = Linear(feat_dim, classes); the ImageNet classifier is gone."""
    convolutions = sum(m.weight.numel() for m in reidnet.modules() if isinstance(m, nn.Conv2d))
    expected = models.resnet_backbone_conv_parameters("resnet50")
    assert convolutions == expected, f"convolution parameters {convolutions:,}, resnet50 has {expected:,}"
    linears = [(m.in_features, m.out_features) for m in reidnet.modules() if isinstance(m, nn.Linear)]
    assert sorted(linears) == sorted([(2048, FEAT_DIM), (FEAT_DIM, NUM_CLASSES)]), \
        f"linear layers {linears}, expected FC1 (2048, {FEAT_DIM}) and FC2 ({FEAT_DIM}, {NUM_CLASSES}) only"
    norms = [m.num_features for m in reidnet.modules() if isinstance(m, nn.BatchNorm1d)]
    assert norms == [FEAT_DIM], f"expected one BatchNorm1d({FEAT_DIM}) after FC1, found {norms}"


def loss_inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(3)[torch.randperm(12, generator=generator)]
    logits = torch.randn(12, 5, generator=generator) * 2
    features = torch.randn(12, 8, generator=generator) * 0.4
    return logits, features, labels


def use_reference_triplet(submission, monkeypatch):
    """Grade ReIDLoss on its own: its triplet term comes from the reference TripletLoss."""
    submission.load(LOSS)
    submission.use_reference(monkeypatch, "utils/TripletLoss.py", "TripletLoss", triplet.ReferenceTripletLoss)


def parts_values(parts) -> list[float]:
    assert isinstance(parts, dict) and parts, f"ReIDLoss should return (total, dict of parts), got {type(parts).__name__}"
    return [float(value) for value in parts.values()]


def test_reidloss_combines_triplet_and_smoothed_ce(submission, monkeypatch):
    """ReIDLoss = batch-hard triplet on features + label-smoothed cross-entropy on logits; parts listed."""
    use_reference_triplet(submission, monkeypatch)
    ReIDLoss = submission.get(LOSS, "ReIDLoss")
    for seed in range(3):
        logits, features, labels = loss_inputs(seed)
        criterion = ReIDLoss(5, margin=0.3, mining="batch_hard", triplet_weight=1.0, id_weight=1.0,
                             label_smoothing=0.1)
        total, parts = criterion(logits, features, labels)
        expected_triplet = triplet.batch_hard(features.numpy(), labels.numpy(), 0.3)
        expected_id = float(models.smoothed_cross_entropy(logits, labels, 0.1))
        values = parts_values(parts)
        assert any(abs(v - expected_id) < 1e-4 for v in values), \
            f"no part equals the label-smoothed (0.1) cross-entropy {expected_id:.4f}: parts {parts}"
        assert any(abs(v - expected_triplet) < 1e-4 for v in values), \
            f"no part equals the batch-hard triplet loss {expected_triplet:.4f}: parts {parts}"
        assert abs(float(total) - expected_id - expected_triplet) < 1e-4, \
            f"total {float(total):.4f} != triplet {expected_triplet:.4f} + cross-entropy {expected_id:.4f}"


def test_reidloss_weights_and_gradients(submission, monkeypatch):
    """The weights scale each term (total = w_t * triplet + w_id * CE) and the total back-propagates."""
    use_reference_triplet(submission, monkeypatch)
    ReIDLoss = submission.get(LOSS, "ReIDLoss")
    logits, features, labels = loss_inputs(5)
    logits.requires_grad_(True)
    features.requires_grad_(True)
    criterion = ReIDLoss(5, margin=0.3, mining="batch_hard", triplet_weight=2.0, id_weight=0.5, label_smoothing=0.2)
    total, _ = criterion(logits, features, labels)
    expected = 2.0 * triplet.batch_hard(features.detach().numpy(), labels.numpy(), 0.3) + \
        0.5 * float(models.smoothed_cross_entropy(logits.detach(), labels, 0.2))
    value = float(total.detach())
    assert abs(value - expected) < 1e-4, \
        f"ReIDLoss(triplet_weight=2, id_weight=0.5, label_smoothing=0.2) total {value:.4f}, expected {expected:.4f}"
    total.backward()
    for name, tensor in (("logits", logits), ("features", features)):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0, \
            f"the total loss does not back-propagate a finite, non-zero gradient to the {name}"
