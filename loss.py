"""Exercise 2 Q5: the combined re-identification loss, triplet on the embedding + identity cross-entropy.

    total = triplet_weight * TripletLoss(features, labels) + id_weight * CrossEntropy(logits, labels)

The triplet term shapes the metric directly (same person closer than another person by a margin),
which is what the gallery ranking uses at test time. The cross-entropy (with label smoothing, so the
network does not grow over-confident on the few images of each training identity) gives every image a
signal of its own, also when the mined triplets are already satisfied, and makes training converge
faster and more stably than the triplet term alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from utils.TripletLoss import TripletLoss


class ReIDLoss(nn.Module):
    """Weighted sum of a mined triplet loss on ``features`` and a label-smoothed cross-entropy on ``logits``.

    Args:
        num_classes: number of training identities (the width of ``logits``; checked).
        margin, mining: passed to :class:`utils.TripletLoss.TripletLoss`.
        triplet_weight, id_weight: weights (>= 0, not both 0) of the two terms.
        label_smoothing: cross-entropy label smoothing in [0, 1).

    ``forward(logits (N, C), features (N, D), labels (N,) int64 in [0, C))`` returns ``(total, parts)``:
    ``total`` the scalar to back-propagate, and ``parts = {"triplet", "id", "total"}`` the unweighted
    triplet and ID terms and the weighted total, as *detached* 0-dim tensors on the input's device (no
    GPU sync here; call ``float()`` on them when logging).
    """

    def __init__(
        self,
        num_classes: int,
        margin: float = 0.3,
        mining: str = "batch_hard",
        triplet_weight: float = 1.0,
        id_weight: float = 1.0,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if triplet_weight < 0 or id_weight < 0 or triplet_weight + id_weight == 0:
            raise ValueError(
                f"triplet_weight, id_weight: expected weights >= 0, not both 0, got {triplet_weight}, {id_weight}"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {label_smoothing}")
        self.num_classes = int(num_classes)
        self.triplet = TripletLoss(margin=margin, mining=mining)
        self.triplet_weight = float(triplet_weight)
        self.id_weight = float(id_weight)
        self.label_smoothing = float(label_smoothing)

    def forward(
        self, logits: torch.Tensor, features: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits: expected shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        if features.dim() != 2 or features.shape[0] != logits.shape[0] or labels.shape != (logits.shape[0],):
            raise ValueError(
                f"features, labels: expected (N, D) and (N,) with N = {logits.shape[0]}, "
                f"got {tuple(features.shape)} and {tuple(labels.shape)}"
            )
        triplet = self.triplet(features, labels)
        # float32 logits: under AMP a float16 log-softmax over many identities loses precision.
        identity = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        total = self.triplet_weight * triplet + self.id_weight * identity
        parts = {"triplet": triplet.detach(), "id": identity.detach(), "total": total.detach()}
        return total, parts


# --------------------------------------------------------------------------- pairwise losses of the sibling labs
def contrastive_loss(distances: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Contrastive loss (Hadsell et al. 2006) averaged over pairs: ``y D^2 + (1 - y) max(0, m - D)^2``.

    Args:
        distances: (N,) Euclidean distances D between the two embeddings of each pair.
        same: (N,) y = 1 for a same-identity pair, 0 otherwise (a variant whose Y = 1 means *dissimilar*
            passes ``1 - Y``).
        margin: m; dissimilar pairs farther apart than m cost nothing.
    """
    same = same.to(distances.dtype)
    terms = same * distances.pow(2) + (1 - same) * F.relu(margin - distances).pow(2)
    return terms.mean() if terms.numel() else distances.sum() * 0.0


class ContrastiveLoss(nn.Module):
    """Contrastive loss of explicit pairs: ``forward(first (N, D), second (N, D), same (N,)) -> scalar``."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin: expected a value > 0, got {margin}")
        self.margin = float(margin)

    def forward(self, first: torch.Tensor, second: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        from utils.TripletLoss import safe_sqrt

        return contrastive_loss(safe_sqrt((first - second).pow(2).sum(1)), same, self.margin)


class OnlineContrastiveLoss(nn.Module):
    """Contrastive loss over pairs selected inside the batch (``utils.embedding.select_pairs``).

    ``forward(features (N, D), labels (N,))``: by default every positive pair and as many of the hardest
    negative pairs; the mean over all selected pairs.
    """

    def __init__(self, margin: float = 1.0, strategy: str = "hard_negatives") -> None:
        super().__init__()
        if margin <= 0:
            raise ValueError(f"margin: expected a value > 0, got {margin}")
        self.margin, self.strategy = float(margin), strategy

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from utils.embedding import select_pairs
        from utils.TripletLoss import pairwise_euclidean

        distances = pairwise_euclidean(features)
        positive_pairs, negative_pairs = select_pairs(distances, labels, self.strategy)
        pairs = torch.cat([positive_pairs, negative_pairs])
        same = torch.cat([torch.ones(len(positive_pairs)), torch.zeros(len(negative_pairs))]).to(features.device)
        return contrastive_loss(distances[pairs[:, 0], pairs[:, 1]], same, self.margin)


class OnlineTripletLoss(nn.Module):
    """Triplet loss over triplets selected inside the batch (``utils.embedding.select_triplets``).

    ``forward(features (N, D), labels (N,))``: mean of ``max(0, m + d_ap - d_an)`` over the selected
    triplets (0, still in the graph, when none is selected).
    """

    def __init__(self, margin: float = 1.0, strategy: str = "random_hard", seed: int = 0) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin: expected a value >= 0, got {margin}")
        self.margin, self.strategy = float(margin), strategy
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from utils.embedding import select_triplets
        from utils.TripletLoss import pairwise_euclidean, triplet_margin_terms

        distances = pairwise_euclidean(features)
        anchors, positives, negatives = select_triplets(distances, labels, self.strategy, self.margin,
                                                        self.generator)
        if len(anchors) == 0:
            return distances.sum() * 0.0
        terms = triplet_margin_terms(distances[anchors, positives], distances[anchors, negatives], self.margin,
                                     soft_margin=False)
        return terms.mean()
