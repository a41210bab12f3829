"""Test doubles for Ex2 Q6's ``train()``: a small network with the TP's three outputs and batch norm on the
embedding, and a stand-in for the given ``ReIDLoss`` returning ``(total, parts)``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrainProbeNet(nn.Module):
    """A small ReID-shaped network: ``(cat, logits, features)`` with batch norm on the embedding."""

    def __init__(self, num_classes: int, feat_dim: int = 6, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.FC1 = nn.Sequential(nn.Linear(4, feat_dim, bias=False), nn.BatchNorm1d(feat_dim))
        self.FC2 = nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor):
        pooled = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)
        features = self.FC1(pooled)
        logits = self.FC2(features)
        return torch.cat([logits, features], 1), logits, features


class ProbeCriterion(nn.Module):
    """Stands for the given ``ReIDLoss``: ``(total, parts)`` from ``(logits, features, labels)``."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor):
        if logits.dim() != 2 or features.dim() != 2 or labels.dim() != 1 or labels.dtype != torch.long:
            raise ValueError("criterion(logits (N, C), features (N, D), labels (N,) int64): got other shapes")
        if not (len(logits) == len(features) == len(labels)) or features.shape[1] == logits.shape[1]:
            raise ValueError("criterion(logits, features, labels): arguments in the wrong order")
        self.calls += 1
        identity = F.cross_entropy(logits, labels)
        spread = features.pow(2).mean()
        total = identity + 0.5 * spread
        return total, {"id": identity.detach(), "triplet": spread.detach(), "total": total.detach()}
