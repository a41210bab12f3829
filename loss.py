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

