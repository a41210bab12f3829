"""Exercise 2 Q2: the triplet loss and its online mining strategies.

A triplet (anchor a, positive p, negative n) asks the embedding to place ``a`` closer to ``p`` (same
identity) than to ``n`` (another identity) by at least a margin ``m``:

    loss(a, p, n) = max(0, m + d(a, p) - d(a, n))      with d the Euclidean distance.

Inside a P x K batch there are many possible triplets; *which* ones are used (the mining) matters as
much as the formula. Following pytorch-metric-learning's split between a miner and a reducer, each
mining strategy is a small function that only returns index triplets ``(anchors, positives, negatives)``
chosen from a detached distance matrix; :class:`TripletLoss` then recomputes those distances with
gradients, applies the hinge (or soft margin) and averages them the way that strategy prescribes.

- ``batch_hard`` (Hermans et al. 2017): per anchor, its farthest positive and nearest negative.
- ``batch_all``: every valid triplet; the mean is taken over the triplets whose loss is > 0.
- ``semi_hard`` (FaceNet, Schroff et al. 2015): per (anchor, positive) pair, the nearest negative that
  is still farther than the positive but inside the margin, ``d_ap < d_an < d_ap + m``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# Squared distances below this are treated as exactly zero: sqrt'(x) = 1 / (2 sqrt(x)) explodes near 0.
SQRT_EPS = 1e-12


# --------------------------------------------------------------------------- distances
def safe_sqrt(squared: torch.Tensor, eps: float = SQRT_EPS) -> torch.Tensor:
    """Element-wise square root whose gradient stays finite at 0.

    Entries ``<= eps`` give 0 with a zero gradient (a plain ``sqrt`` would give ``inf`` there and then
    NaN weights after one step whenever two embeddings coincide).
    """
    positive = squared > eps
    # The inner where keeps sqrt away from 0 even on the entries the outer where discards: autograd
    # multiplies their (discarded) gradient by zero, and 0 * inf would still be NaN.
    root = torch.sqrt(torch.where(positive, squared, torch.ones_like(squared)))
    return torch.where(positive, root, torch.zeros_like(squared))


def pairwise_squared_euclidean(features: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``features`` (N, D) and ``others`` (M, D).

    ``others=None`` means ``others = features``; the diagonal is then exactly 0. Computed as
    ``|x|^2 + |y|^2 - 2 x.y`` (one matrix product, O(N M) memory), clamped at 0 against rounding.

    Returns:
        (N, M) tensor, >= 0, same dtype and device as ``features``.
    """
    if features.dim() != 2:
        raise ValueError(f"features: expected a 2-D (N, D) tensor, got shape {tuple(features.shape)}")
    same_set = others is None
    if same_set:
        others = features
    elif others.dim() != 2 or others.shape[1] != features.shape[1]:
        raise ValueError(
            f"others: expected a 2-D (M, {features.shape[1]}) tensor, got shape {tuple(others.shape)}"
        )
    squared_norms = (features * features).sum(1, keepdim=True)
    other_norms = squared_norms.t() if same_set else (others * others).sum(1).unsqueeze(0)
    squared = (squared_norms + other_norms - 2.0 * (features @ others.t())).clamp_min(0.0)
    if same_set:
        squared = squared.masked_fill(torch.eye(len(features), dtype=torch.bool, device=features.device), 0.0)
    return squared


def pairwise_euclidean(features: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distance matrix (N, M) between rows of ``features`` (N, D) and ``others`` (M, D).

    ``others=None`` compares ``features`` with itself. Differentiable with finite gradients, also when
    two rows coincide (see :func:`safe_sqrt`). Reusable by any distance-based loss or miner.
    """
    return safe_sqrt(pairwise_squared_euclidean(features, others))


# --------------------------------------------------------------------------- masks and miners
def _check_labels(distances: torch.Tensor, labels: torch.Tensor) -> None:
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1]:
        raise ValueError(f"distances: expected a square (N, N) matrix, got shape {tuple(distances.shape)}")
    if labels.dim() != 1 or labels.shape[0] != distances.shape[0]:
        raise ValueError(
            f"labels: expected a 1-D tensor of length {distances.shape[0]}, got shape {tuple(labels.shape)}"
        )


def positive_negative_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (N, N) masks: ``positive[i, j]`` same label and ``i != j``; ``negative[i, j]`` other label."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & not_self, ~same


def mine_batch_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """Batch-hard mining: one triplet per anchor that has both a positive and a negative in the batch.

    Args:
        distances: (N, N) distance matrix (only compared, no gradient needed).
        labels: (N,) identity labels.
        margin: unused; accepted so that every miner has the same signature.

    Returns:
        ``(anchors, positives, negatives)``, 1-D int64 index tensors of equal length: the farthest
        positive and the nearest negative of each eligible anchor (first index on ties).
    """
    # BEGIN SOLUTION
    _check_labels(distances, labels)
    positive, negative = positive_negative_masks(labels)
    anchors = torch.nonzero(positive.any(1) & negative.any(1)).flatten()
    distances = distances.detach()[anchors]
    hardest_positive = distances.masked_fill(~positive[anchors], float("-inf")).argmax(1)
    hardest_negative = distances.masked_fill(~negative[anchors], float("inf")).argmin(1)
    return anchors, hardest_positive, hardest_negative
    # END SOLUTION


def mine_batch_all(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.0) -> Triplets:
    """All valid triplets: every anchor a, positive p != a with its label, negative n with another label.

    ``distances`` only fixes N (and is checked against ``labels``); ``margin`` is unused. Returns the
    index tensors ``(anchors, positives, negatives)`` in lexicographic (a, p, n) order.
    """
    # BEGIN SOLUTION
    _check_labels(distances, labels)
    positive, negative = positive_negative_masks(labels)
    valid = positive.unsqueeze(2) & negative.unsqueeze(1)
    anchors, positives, negatives = torch.nonzero(valid, as_tuple=True)
    return anchors, positives, negatives
    # END SOLUTION


def mine_semi_hard(distances: torch.Tensor, labels: torch.Tensor, margin: float = 0.3) -> Triplets:
    """Semi-hard mining (FaceNet): per (anchor, positive) pair, the nearest negative inside the margin band.

    A negative n is semi-hard for (a, p) when ``d_ap < d_an < d_ap + margin``: it already ranks behind the
    positive, yet still violates the margin. Pairs without such a negative give no triplet.

    Returns:
        ``(anchors, positives, negatives)`` 1-D int64 index tensors, one triplet per pair that has one.
    """
    # BEGIN SOLUTION
    _check_labels(distances, labels)
    positive, negative = positive_negative_masks(labels)
    distances = distances.detach()
    pair_anchors, pair_positives = torch.nonzero(positive, as_tuple=True)
    d_ap = distances[pair_anchors, pair_positives].unsqueeze(1)
    d_an = distances[pair_anchors]
    in_band = negative[pair_anchors] & (d_an > d_ap) & (d_an < d_ap + margin)
    nearest_in_band = d_an.masked_fill(~in_band, float("inf")).argmin(1)
    has_one = in_band.any(1)
    return pair_anchors[has_one], pair_positives[has_one], nearest_in_band[has_one]
    # END SOLUTION


MINERS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], Triplets]] = {
    "batch_hard": mine_batch_hard,
    "batch_all": mine_batch_all,
    "semi_hard": mine_semi_hard,
}


# --------------------------------------------------------------------------- the loss
def triplet_margin_terms(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float, soft_margin: bool) -> torch.Tensor:
    """Per-triplet loss: ``max(0, margin + d_ap - d_an)``, or ``softplus(d_ap - d_an)`` with ``soft_margin``."""
    # BEGIN SOLUTION
    if soft_margin:
        return F.softplus(d_ap - d_an)
    return F.relu(margin + d_ap - d_an)
    # END SOLUTION


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """The TP's formula on explicit triplets, averaged: ``mean_i max(0, m + |a_i - p_i| - |a_i - n_i|)``.

    Args:
        anchor, positive, negative: (N, D) embeddings, row i forming triplet i.
        margin: the margin m, in embedding distance units.

    Returns:
        Scalar tensor (0 for N = 0).
    """
    # BEGIN SOLUTION
    if anchor.dim() != 2 or anchor.shape != positive.shape or anchor.shape != negative.shape:
        raise ValueError(
            "anchor, positive, negative: expected three (N, D) tensors of the same shape, got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    if len(anchor) == 0:
        return anchor.sum() * 0.0
    d_ap = safe_sqrt((anchor - positive).pow(2).sum(1))
    d_an = safe_sqrt((anchor - negative).pow(2).sum(1))
    return triplet_margin_terms(d_ap, d_an, margin, soft_margin=False).mean()
    # END SOLUTION


class TripletLoss(nn.Module):
    """Triplet loss with online mining inside the batch.

    Args:
        margin: the margin m (ignored by the soft-margin loss, still used by ``semi_hard`` to define its band).
        mining: ``"batch_hard"``, ``"batch_all"`` or ``"semi_hard"`` (see the module docstring).
        soft_margin: use ``softplus(d_ap - d_an)`` instead of the hinge (Hermans et al.).

    ``forward(features (N, D), labels (N,))`` returns a scalar: the mean of the per-triplet losses over
    the mined triplets (``batch_all``: over the triplets whose loss is > 0). A batch that yields no
    triplet (e.g. each label seen once) gives 0, still connected to the graph.
    """

    def __init__(self, margin: float = 0.3, mining: str = "batch_hard", soft_margin: bool = False) -> None:
        super().__init__()
        if mining not in MINERS:
            raise ValueError(f"mining: expected one of {', '.join(MINERS)}, got {mining!r}")
        if margin < 0:
            raise ValueError(f"margin: expected a value >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining
        self.soft_margin = bool(soft_margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, soft_margin={self.soft_margin}"

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        if features.dim() != 2:
            raise ValueError(f"features: expected a 2-D (N, D) tensor, got shape {tuple(features.shape)}")
        # Distances in float32 at least: under AMP the features may be float16, where the
        # |x|^2 + |y|^2 - 2 x.y expansion loses most of its digits.
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()
        distances = pairwise_euclidean(features)
        anchors, positives, negatives = MINERS[self.mining](distances, labels.to(features.device), self.margin)
        terms = triplet_margin_terms(
            distances[anchors, positives], distances[anchors, negatives], self.margin, self.soft_margin
        )
        if self.mining == "batch_all":
            # Averaging over all triplets would let the many already-satisfied ones dilute the signal.
            terms = terms[terms > 0]
        if terms.numel() == 0:
            return distances.sum() * 0.0
        return terms.mean()
        # END SOLUTION
