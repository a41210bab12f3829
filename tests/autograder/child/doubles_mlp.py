"""Test double for Ex1 Q2's train/test: a model whose train and eval modes differ (batch norm), so a loop
that forgets ``model.train()`` or ``model.eval()`` is caught. Written for the grader; not a reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyClassifier(nn.Module):
    """784 -> 12 -> 10 with batch norm: train and eval mode give different outputs, so a loop that forgets
    ``model.train()`` / ``model.eval()`` is caught."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(784, 12, bias=False)  # a bias before batch norm only adds noise
        self.norm = nn.BatchNorm1d(12)
        self.out = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.norm(self.hidden(torch.flatten(x, 1)))))
