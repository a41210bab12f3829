"""Reference for Ex2 Q2: triplet losses by brute force over every (anchor, positive, negative).

Distances are Euclidean (not squared), computed one pair at a time in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def distance_matrix(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    distances = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            distances[i, j] = math.sqrt(float(np.sum((features[i] - features[j]) ** 2)))
    return distances


def _positives_negatives(labels: np.ndarray, anchor: int) -> tuple[list[int], list[int]]:
    positives = [j for j in range(len(labels)) if j != anchor and labels[j] == labels[anchor]]
    negatives = [j for j in range(len(labels)) if labels[j] != labels[anchor]]
    return positives, negatives


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def batch_hard(features: np.ndarray, labels: np.ndarray, margin: float, soft_margin: bool = False) -> float:
    """Per anchor with a positive and a negative: hardest positive, hardest negative; mean over anchors."""
    d = distance_matrix(features)
    losses = []
    for a in range(len(labels)):
        positives, negatives = _positives_negatives(labels, a)
        if not positives or not negatives:
            continue
        d_ap = max(d[a, p] for p in positives)
        d_an = min(d[a, n] for n in negatives)
        losses.append(softplus(d_ap - d_an) if soft_margin else max(0.0, margin + d_ap - d_an))
    return float(np.mean(losses)) if losses else 0.0


def batch_all(features: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """Every valid (a, p, n); mean over the triplets with a loss > 0 (0 if none)."""
    d = distance_matrix(features)
    losses = []
    for a in range(len(labels)):
        positives, negatives = _positives_negatives(labels, a)
        for p in positives:
            for n in negatives:
                loss = margin + d[a, p] - d[a, n]
                if loss > 0:
                    losses.append(loss)
    return float(np.mean(losses)) if losses else 0.0


def semi_hard(features: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """Per (a, p): the nearest negative with d_ap < d_an < d_ap + margin; mean over pairs that have one."""
    d = distance_matrix(features)
    losses = []
    for a in range(len(labels)):
        positives, negatives = _positives_negatives(labels, a)
        for p in positives:
            band = [d[a, n] for n in negatives if d[a, p] < d[a, n] < d[a, p] + margin]
            if band:
                losses.append(margin + d[a, p] - min(band))
    return float(np.mean(losses)) if losses else 0.0


def explicit_triplets(anchor: np.ndarray, positive: np.ndarray, negative: np.ndarray, margin: float) -> float:
    """The TP's formula on row-aligned triplets, averaged: mean_i max(0, m + |a_i - p_i| - |a_i - n_i|)."""
    losses = []
    for a, p, n in zip(np.asarray(anchor, np.float64), np.asarray(positive, np.float64),
                       np.asarray(negative, np.float64)):
        losses.append(max(0.0, margin + math.sqrt(np.sum((a - p) ** 2)) - math.sqrt(np.sum((a - n) ** 2))))
    return float(np.mean(losses))


def closest_to_boundary(features: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """Smallest gap between a candidate's distance and a mining threshold (d_ap, d_ap + m, hinge at 0).

    Random cases whose gap is tiny are skipped by the tests: float32 and float64 could then
    legitimately pick different triplets.
    """
    d = distance_matrix(features)
    gaps = [1.0]
    for a in range(len(labels)):
        positives, negatives = _positives_negatives(labels, a)
        for p in positives:
            for n in negatives:
                gaps += [abs(d[a, n] - d[a, p]), abs(d[a, n] - d[a, p] - margin)]
    return min(gaps)


MODES = {"batch_hard": batch_hard, "batch_all": batch_all, "semi_hard": semi_hard}


class ReferenceTripletLoss(nn.Module):
    """A differentiable brute-force ``TripletLoss`` (loops over triplets), swapped in where another
    question's code uses the triplet loss, so that question is graded on its own."""

    def __init__(self, margin: float = 0.3, mining: str = "batch_hard", soft_margin: bool = False, **_: object):
        super().__init__()
        self.margin, self.mining, self.soft_margin = float(margin), mining, soft_margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.tolist()
        n = len(labels)
        diff = features.unsqueeze(1) - features.unsqueeze(0)
        d = (diff.pow(2).sum(-1) + 1e-12).sqrt()
        terms = []
        for a in range(n):
            positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
            negatives = [k for k in range(n) if labels[k] != labels[a]]
            if not positives or not negatives:
                continue
            if self.mining == "batch_hard":
                d_ap = torch.stack([d[a, p] for p in positives]).max()
                d_an = torch.stack([d[a, k] for k in negatives]).min()
                terms.append(nn.functional.softplus(d_ap - d_an) if self.soft_margin
                             else torch.relu(self.margin + d_ap - d_an))
            for p in positives if self.mining != "batch_hard" else []:
                if self.mining == "batch_all":
                    terms += [t for k in negatives if (t := self.margin + d[a, p] - d[a, k]) > 0]
                else:
                    band = [d[a, k] for k in negatives if d[a, p] < d[a, k] < d[a, p] + self.margin]
                    if band:
                        terms.append(self.margin + d[a, p] - torch.stack(band).min())
        if not terms:
            return features.sum() * 0.0
        return torch.stack(terms).mean()
