"""Pair and triplet losses of the sibling labs, and the selectors that choose their pairs and triplets in a batch.

The siamese-triplet lab's design (after adambielski/siamese-triplet): a network embeds a plain mini-batch, and
an *online* loss builds its pairs or triplets inside that batch from the labels. Which ones it keeps is a
pluggable selector object, so that a strategy is one small class, testable on its own:

- :class:`PairSelector` (``get_pairs(embeddings, labels) -> (positive_pairs, negative_pairs)``), for
  :class:`OnlineContrastiveLoss`: :class:`AllPositivePairSelector` (every positive pair, negatives drawn at
  random, as many as the positives when ``balance``) and :class:`HardNegativePairSelector` (every positive
  pair, and as many of the *closest* negative pairs);
- :class:`TripletSelector` (``get_triplets(embeddings, labels) -> (T, 3) [anchor, positive, negative]``), for
  :class:`OnlineTripletLoss`: :class:`AllTripletSelector`, and per (anchor, positive) pair one negative,
  the one that violates the margin most (:class:`HardestNegativeTripletSelector`), a random one among those
  violating it (:class:`RandomHardNegativeTripletSelector`) or a random semi-hard one, farther than the
  positive but inside the margin (:class:`SemihardNegativeTripletSelector`).

Two faults of the upstream code are fixed here: every positive pair serves as (anchor, positive) in *both*
orders (upstream takes ``combinations``, so of two same-class images only the lower index is ever an anchor),
and a batch without any positive pair or negative gives a zero loss (upstream crashes, or invents a triplet).
Distances are Euclidean, as in ``utils/TripletLoss.py`` (upstream compares squared distances).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.TripletLoss import pairwise_euclidean, positive_negative_masks, safe_sqrt


# --------------------------------------------------------------------------- pair losses
def contrastive_loss(distances: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss (Hadsell et al. 2006) averaged over pairs: ``y D^2 + (1 - y) max(0, m - D)^2``.

    Args:
        distances: (N,) Euclidean distances D between the two embeddings of each pair.
        same: (N,) y = 1 for a same-class pair, 0 otherwise (a lab whose Y = 1 means *dissimilar* passes
            ``1 - Y``: the loss ``(1 - Y) D^2 + Y max(0, m - D)^2`` is the same).
        margin: m; dissimilar pairs farther apart than m cost nothing.

    Returns:
        Scalar tensor; 0 (still in the graph) for N = 0.
    """
    same = same.to(distances.dtype)
    terms = same * distances.pow(2) + (1 - same) * F.relu(margin - distances).pow(2)
    return terms.mean() if terms.numel() else distances.sum() * 0.0


def pair_distances(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Row-wise Euclidean distances of two (N, D) embeddings, with a finite gradient at 0: (N,)."""
    return safe_sqrt((first - second).pow(2).sum(1))


def check_margin(margin: float) -> float:
    if margin <= 0:
        raise ValueError(f"margin: expected a value > 0, got {margin}")
    return float(margin)


class ContrastiveLoss(nn.Module):
    """Contrastive loss of explicit pairs: ``forward(first (N, D), second (N, D), same (N,)) -> scalar``."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = check_margin(margin)

    def forward(self, first: torch.Tensor, second: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(pair_distances(first, second), same, self.margin)


# --------------------------------------------------------------------------- pair selectors
def _check_batch(embeddings: torch.Tensor, labels: torch.Tensor) -> None:
    if embeddings.dim() != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings, labels: expected (N, D) and (N,), got {tuple(embeddings.shape)} and "
                         f"{tuple(labels.shape)}")


def _all_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every positive and every negative pair ``(i, j)`` with ``i < j``: int64 (P, 2) and (M, 2)."""
    positive, negative = positive_negative_masks(labels)
    upper = torch.ones_like(positive).triu(1)
    return torch.nonzero(positive & upper), torch.nonzero(negative & upper)


class PairSelector:
    """Chooses the pairs of a batch: ``get_pairs(embeddings (N, D), labels (N,))`` returns
    ``(positive_pairs (P, 2), negative_pairs (M, 2))``, int64 indices into the batch, ``i < j`` in each pair."""

    def get_pairs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class AllPositivePairSelector(PairSelector):
    """Every positive pair; the negatives are all negative pairs, or with ``balance`` (default) a uniform
    random sample of them as large as the positive set (a P x K batch has far more negative than positive
    pairs, which would otherwise dominate the loss). Draws from ``generator`` (default: torch's global one)."""

    def __init__(self, balance: bool = True, generator: torch.Generator | None = None):
        self.balance, self.generator = balance, generator

    def get_pairs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(embeddings, labels)
        positive_pairs, negative_pairs = _all_pairs(labels)
        if self.balance and len(negative_pairs) > len(positive_pairs):
            keep = torch.randperm(len(negative_pairs), generator=self.generator)[: len(positive_pairs)]
            negative_pairs = negative_pairs[keep.to(negative_pairs.device)]
        return positive_pairs, negative_pairs


class HardNegativePairSelector(PairSelector):
    """Every positive pair, and as many negative pairs, the closest ones (the hardest; all when fewer).

    Upstream keeps the negatives of *greatest* distance, which are the easiest; the hard ones are the closest.
    """

    def get_pairs(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(embeddings, labels)
        positive_pairs, negative_pairs = _all_pairs(labels)
        if len(negative_pairs) > len(positive_pairs):
            distances = pairwise_euclidean(embeddings.detach())[negative_pairs[:, 0], negative_pairs[:, 1]]
            negative_pairs = negative_pairs[torch.topk(distances, len(positive_pairs), largest=False).indices]
        return positive_pairs, negative_pairs


# --------------------------------------------------------------------------- triplet selectors
class TripletSelector:
    """Chooses the triplets of a batch: ``get_triplets(embeddings (N, D), labels (N,))`` returns an int64
    ``(T, 3)`` tensor of ``[anchor, positive, negative]`` indices into the batch (T may be 0)."""

    def get_triplets(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class AllTripletSelector(TripletSelector):
    """Every valid triplet: each ordered positive pair (a, p), a != p, with each negative of a. O(N^3)."""

    def get_triplets(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        positive, negative = positive_negative_masks(labels)
        return torch.nonzero(positive.unsqueeze(2) & negative.unsqueeze(1))


class NegativeTripletSelector(TripletSelector):
    """One negative per ordered positive pair (a, p), chosen from the triplet losses
    ``loss_n = d(a, p) - d(a, n) + margin`` of a's negatives by :meth:`choose`; pairs with no acceptable
    negative give no triplet. ``margin`` must be the loss's margin."""

    def __init__(self, margin: float, generator: torch.Generator | None = None):
        self.margin, self.generator = check_margin(margin), generator

    def choose(self, losses: torch.Tensor, is_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From (A, N) losses and the mask of each pair's negatives: the chosen column per row and whether
        the row has one."""
        raise NotImplementedError

    def choose_at_random(self, acceptable: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniformly drawn ``True`` column of each row of ``acceptable`` (A, N), and whether there is one."""
        scores = torch.rand(acceptable.shape, generator=self.generator).to(acceptable.device)
        return scores.masked_fill(~acceptable, -1.0).argmax(1), acceptable.any(1)

    def get_triplets(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        _check_batch(embeddings, labels)
        positive, negative = positive_negative_masks(labels)
        distances = pairwise_euclidean(embeddings.detach())
        anchors, positives = torch.nonzero(positive, as_tuple=True)  # both orders of every positive pair
        losses = distances[anchors, positives].unsqueeze(1) - distances[anchors] + self.margin
        negatives, has_one = self.choose(losses, negative[anchors])
        return torch.stack([anchors, positives, negatives], 1)[has_one]


class HardestNegativeTripletSelector(NegativeTripletSelector):
    """The negative of largest loss (the closest to the anchor), kept when that loss is > 0."""

    def choose(self, losses: torch.Tensor, is_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hardest = losses.masked_fill(~is_negative, float("-inf")).max(1)
        return hardest.indices, hardest.values > 0


class RandomHardNegativeTripletSelector(NegativeTripletSelector):
    """A random negative among those with a loss > 0 (closer than ``d(a, p) + margin``)."""

    def choose(self, losses: torch.Tensor, is_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choose_at_random(is_negative & (losses > 0))


class SemihardNegativeTripletSelector(NegativeTripletSelector):
    """A random semi-hard negative: ``0 < loss < margin``, i.e. ``d(a, p) < d(a, n) < d(a, p) + margin``
    (FaceNet's band; FaceNet and ``utils/TripletLoss.py`` take the nearest such negative, the lab a random one)."""

    def choose(self, losses: torch.Tensor, is_negative: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choose_at_random(is_negative & (losses > 0) & (losses < self.margin))


PAIR_SELECTORS = {"all_positive": AllPositivePairSelector, "hard_negative": HardNegativePairSelector}
TRIPLET_SELECTORS = {"all": AllTripletSelector, "hardest": HardestNegativeTripletSelector,
                     "random_hard": RandomHardNegativeTripletSelector, "semi_hard": SemihardNegativeTripletSelector}


def make_triplet_selector(name: str, margin: float) -> TripletSelector:
    """The selector of ``TRIPLET_SELECTORS[name]`` (the margin-based ones with ``margin``)."""
    if name not in TRIPLET_SELECTORS:
        raise ValueError(f"triplet selector: expected one of {', '.join(TRIPLET_SELECTORS)}, got {name!r}")
    return AllTripletSelector() if name == "all" else TRIPLET_SELECTORS[name](margin)


# --------------------------------------------------------------------------- online losses
class OnlineContrastiveLoss(nn.Module):
    """Contrastive loss over the pairs a :class:`PairSelector` picks in the batch.

    ``forward(embeddings (N, D), labels (N,)) -> scalar``: the mean of ``D^2`` over the positive pairs and
    of ``max(0, m - D)^2`` over the negative ones, all pairs together; 0 when the selector finds none.
    """

    def __init__(self, margin: float, pair_selector: PairSelector):
        super().__init__()
        self.margin, self.pair_selector = check_margin(margin), pair_selector

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        positive_pairs, negative_pairs = self.pair_selector.get_pairs(embeddings, labels)
        pairs = torch.cat([positive_pairs, negative_pairs])
        same = torch.cat([torch.ones(len(positive_pairs)), torch.zeros(len(negative_pairs))])
        return contrastive_loss(pair_distances(embeddings[pairs[:, 0]], embeddings[pairs[:, 1]]),
                                same.to(embeddings.device), self.margin)


class OnlineTripletLoss(nn.Module):
    """Triplet loss over the triplets a :class:`TripletSelector` picks in the batch.

    ``forward(embeddings (N, D), labels (N,))`` returns ``(loss, nonzero)``: the mean of
    ``max(0, d(a, p) - d(a, n) + m)`` over the selected triplets (0, still in the graph, when there is none)
    and how many of them have a loss > 0 (the lab's "average number of non-zero triplets" metric).
    """

    def __init__(self, margin: float, triplet_selector: TripletSelector):
        super().__init__()
        self.margin, self.triplet_selector = check_margin(margin), triplet_selector

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        triplets = self.triplet_selector.get_triplets(embeddings, labels)
        if len(triplets) == 0:
            return embeddings.sum() * 0.0, 0
        anchors, positives, negatives = (embeddings[triplets[:, column]] for column in range(3))
        terms = F.relu(pair_distances(anchors, positives) - pair_distances(anchors, negatives) + self.margin)
        return terms.mean(), int((terms > 0).sum())
