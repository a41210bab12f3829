"""Test doubles for Ex1 Q5: Q4's ``ResNet18`` and Q2's ``train``/``test`` replaced by stand-ins that record the
hyper-parameters each cell used and report a value that identifies the cell and the data split."""

from __future__ import annotations

import math

import torch
from torch import nn


GRID: dict[str, object] = {"built": 0, "trained": [], "fingerprints": {}, "diverge": None}


class GridNet(nn.Module):
    """Stands for Q4's ``ResNet18`` in the grid: tiny, and it remembers the hyper-parameters it was trained
    with (a buffer, so copies and state dicts keep them)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: str = "imagenet", **kwargs):
        super().__init__()
        GRID["built"] = int(GRID["built"]) + 1
        self.linear = nn.Linear(784 * in_channels, num_classes)
        self.norm = nn.BatchNorm1d(num_classes)
        self.register_buffer("hyper", torch.zeros(3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(torch.flatten(x, 1)))


def grid_train(model, device, loader, optimizer, *args, **kwargs) -> tuple[float, float]:
    """One 'epoch': records ``(lr, weight decay, batch size)``; the configured cell returns a NaN loss."""
    group = optimizer.param_groups[0]
    first = None
    for _, labels in loader:
        first = len(labels) if first is None else first
    hyper = (float(group["lr"]), float(group.get("weight_decay", 0.0)), float(first or 0))
    model.hyper.copy_(torch.tensor(hyper, dtype=torch.float64))
    GRID["trained"].append(hyper)
    if GRID["diverge"] is not None and _same_cell(hyper, GRID["diverge"]):
        return math.nan, 0.1
    return 1.0, 0.5


def _same_cell(a, b) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b))


def grid_accuracy(hyper, mean_label: float, fingerprints: dict) -> float:
    """The 'accuracy' a cell's model reports: its cell's base value plus ``mean label / 1000`` of the loader
    (the test split holds only 7s, so it reads ``.007``: a value from another split is caught)."""
    base = next((value for cell, value in fingerprints.items() if _same_cell(cell, hyper)), 0.0)
    return base + round(mean_label) / 1000


def grid_test(model, device, loader, *args, **kwargs) -> tuple[float, float]:
    count, label_sum = 0, 0.0
    for _, labels in loader:
        count += len(labels)
        label_sum += float(torch.as_tensor(labels).sum())
    mean_label = label_sum / max(count, 1)
    return 1.0, grid_accuracy(tuple(model.hyper.tolist()), mean_label, GRID["fingerprints"])
