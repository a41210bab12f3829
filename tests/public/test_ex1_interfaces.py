"""Exercise 1, public checks: names, signatures and shapes (no expected values)."""

from __future__ import annotations

import math

import torch
from torch import nn

from exercise1 import q2_module_mlp, q4_resnet


def batches(count: int = 2, size: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.rand(size, 1, 28, 28), torch.randint(0, 10, (size,))) for _ in range(count)]


def test_q2_net_layers_and_output_shape():
    net = q2_module_mlp.Net()
    assert isinstance(net.FC1, nn.Linear) and isinstance(net.FC2, nn.Linear)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_q2_train_and_test_return_loss_and_accuracy():
    net = q2_module_mlp.Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    for result in (q2_module_mlp.train(net, torch.device("cpu"), batches(), optimizer),
                   q2_module_mlp.test(net, torch.device("cpu"), batches())):
        loss, accuracy = result
        assert math.isfinite(float(loss)) and 0.0 <= float(accuracy) <= 1.0


def test_q3_dry_run_writes_an_event_file(tiny_mnist, tmp_path):
    from exercise1 import q3_summaries

    q3_summaries.main(["--dry-run", "--device", "cpu", "--data-root", str(tiny_mnist), "--runs-dir", str(tmp_path),
                       "--run-name", "public"])
    assert list((tmp_path / "q3_summaries" / "public").glob("events.out.tfevents.*"))


def test_q4_resnet18_shapes():
    for stem in ("imagenet", "cifar"):
        model = q4_resnet.ResNet18(num_classes=10, in_channels=1, stem=stem).eval()
        assert all(hasattr(model, f"layer{index}") for index in range(1, 5))
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert q4_resnet.BasicBlock(16, 32, 2)(torch.rand(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def test_q5_dry_run_writes_both_tables(tiny_mnist, tmp_path):
    from exercise1 import q5_grid_search

    q5_grid_search.main(["--dry-run", "--device", "cpu", "--data-root", str(tiny_mnist), "--out", str(tmp_path),
                         "--workers", "1", "--lrs", "0.1", "0.01", "--weight-decays", "0.001",
                         "--batch-sizes", "16", "64", "--train-size", "0"])
    for name in ("table1.csv", "table2.csv"):
        assert (tmp_path / name).is_file()
