"""Metric learning shared by the sibling labs: pairs, triplets, online selection, the training loop, kNN.

One place for what every embedding lab needs, so that each script only holds its own question:

- offline sampling: :func:`random_pairs` (half same-label pairs by default) and :func:`random_triplets`
  (one triplet per anchor), and the ``Dataset`` wrappers :class:`PairDataset` / :class:`TripletDataset`
  that apply them to any labelled dataset;
- online selection inside a P x K batch (the batch comes from ``utils.RandomSampler``, see
  :func:`identity_batches`): :func:`select_pairs` (all positive pairs + the hardest negative pairs) and
  :func:`select_triplets` (all, hardest negative, random hard negative, semi-hard negative); the
  strategies ``utils/TripletLoss.py`` already mines are reused from there;
- :func:`fit_embedding`, the one training loop (any batches, any loss), logging through ``RunLogger``;
- evaluation on embeddings: :func:`compute_embeddings`, :func:`knn_predict`, :func:`centroid_predict`,
  :func:`recall_at_k`, :func:`best_threshold`, plus :func:`dry_run_subset` and :func:`save_figure`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from utils.io import atomic_write
from utils.metrics import euclidean_distance_matrix
from utils.mnist import MnistData
from utils.RandomSampler import RandomIdentitySampler
from utils.training import RunLogger, progress_disabled
from utils.TripletLoss import Triplets, mine_batch_all, mine_batch_hard, mine_semi_hard, positive_negative_masks

TRIPLET_STRATEGIES = ("all", "hardest", "random_hard", "semi_hard", "batch_hard")
PAIR_STRATEGIES = ("all", "hard_negatives")


# --------------------------------------------------------------------------- offline pairs and triplets
class _ClassIndex:
    """Items grouped by label: ``order`` lists item indices class by class, ``start``/``count`` per class."""

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor):
        labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels: expected a non-empty 1-D sequence, got shape {labels.shape}")
        _, self.klass = np.unique(labels, return_inverse=True)
        self.order = np.argsort(self.klass, kind="stable")
        self.count = np.bincount(self.klass)
        self.start = np.concatenate([[0], np.cumsum(self.count)[:-1]])
        self.rank = np.empty(len(labels), dtype=np.int64)  # position of each item inside its class
        self.rank[self.order] = np.arange(len(labels)) - self.start[self.klass[self.order]]

    def other_positive(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each item (its class must hold >= 2 items), a uniformly drawn *other* item of its class."""
        klass = self.klass[items]
        draw = rng.integers(0, self.count[klass] - 1)
        draw += draw >= self.rank[items]  # skip the item itself
        return self.order[self.start[klass] + draw]

    def negative(self, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each item (at least two classes must exist), a uniformly drawn item of another class."""
        klass = self.klass[items]
        draw = rng.integers(0, len(self.order) - self.count[klass])
        draw += np.where(draw >= self.start[klass], self.count[klass], 0)  # jump over the item's own class
        return self.order[draw]

    def with_positive(self) -> np.ndarray:
        return np.flatnonzero(self.count[self.klass] >= 2)


def random_pairs(labels: Sequence[int] | np.ndarray | torch.Tensor, num_pairs: int, rng: np.random.Generator,
                 positive_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num_pairs`` random pairs, ``round(positive_fraction * num_pairs)`` of them same-label.

    Returns:
        ``(first, second, same)``: int64 item indices (num_pairs,) and float ``same`` (1 same label, 0 not);
        the positive pairs come first. A pair never repeats an item.
    """
    index = _ClassIndex(labels)
    if len(index.count) < 2:
        raise ValueError("labels: pairs need at least two classes")
    eligible = index.with_positive()
    if len(eligible) == 0:
        raise ValueError("labels: positive pairs need a class with at least two items")
    num_positive = round(positive_fraction * num_pairs)
    positive_first = rng.choice(eligible, num_positive)
    negative_first = rng.integers(0, len(index.order), num_pairs - num_positive)
    first = np.concatenate([positive_first, negative_first])
    second = np.concatenate([index.other_positive(positive_first, rng), index.negative(negative_first, rng)])
    same = np.concatenate([np.ones(num_positive), np.zeros(num_pairs - num_positive)])
    return torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(same).float()


def random_triplets(labels: Sequence[int] | np.ndarray | torch.Tensor, rng: np.random.Generator) -> Triplets:
    """One triplet per anchor: every item whose class has another item, a random positive and negative.

    Returns:
        ``(anchors, positives, negatives)`` int64 index tensors of equal length.
    """
    index = _ClassIndex(labels)
    if len(index.count) < 2:
        raise ValueError("labels: triplets need at least two classes")
    anchors = index.with_positive()
    return (torch.from_numpy(anchors), torch.from_numpy(index.other_positive(anchors, rng)),
            torch.from_numpy(index.negative(anchors, rng)))


class PairDataset(Dataset):
    """Random pairs of any labelled dataset: item ``i`` is ``(x1, x2, same)``, ``same`` 1.0 for one label.

    Args:
        dataset: any ``Dataset`` whose items are ``(x, label)``.
        labels: the label of each item of ``dataset`` (read once, so that no image is loaded to pair them).
        num_pairs: pairs per epoch (default ``len(dataset)``); half are same-label pairs.
        seed: the pairs of epoch ``e`` depend only on ``(seed, e)``; :meth:`set_epoch` redraws them.
    """

    def __init__(self, dataset: Dataset, labels: Sequence[int] | torch.Tensor, num_pairs: int | None = None,
                 seed: int = 0):
        self.dataset, self.labels, self.seed = dataset, labels, seed
        self.num_pairs = num_pairs or len(labels)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.first, self.second, self.same = random_pairs(self.labels, self.num_pairs,
                                                          np.random.default_rng([self.seed, epoch]))

    def __len__(self) -> int:
        return self.num_pairs

    def __getitem__(self, index: int) -> tuple[Any, Any, torch.Tensor]:
        return self.dataset[int(self.first[index])][0], self.dataset[int(self.second[index])][0], self.same[index]


class TripletDataset(Dataset):
    """One random triplet per anchor of any labelled dataset: item ``i`` is ``(anchor, positive, negative)``.

    Arguments as :class:`PairDataset`; :meth:`set_epoch` redraws the positives and negatives.
    """

    def __init__(self, dataset: Dataset, labels: Sequence[int] | torch.Tensor, seed: int = 0):
        self.dataset, self.labels, self.seed = dataset, labels, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.triplets = random_triplets(self.labels, np.random.default_rng([self.seed, epoch]))

    def __len__(self) -> int:
        return len(self.triplets[0])

    def __getitem__(self, index: int) -> tuple[Any, Any, Any]:
        return tuple(self.dataset[int(part[index])][0] for part in self.triplets)


def identity_batches(sampler: RandomIdentitySampler, num_batches: int, first_pass: int = 0) -> Iterator[torch.Tensor]:
    """``num_batches`` P x K index batches from ``sampler``, chaining its epochs when one is too short.

    With few classes (10 digits) one sampler epoch is only ``ceil(10 / P)`` batches, so a training epoch
    over N images walks several sampler passes; pass ``p`` uses ``set_epoch(first_pass + p)``.
    """
    produced, current = 0, first_pass
    while produced < num_batches:
        sampler.set_epoch(current)
        indices = torch.tensor(list(sampler), dtype=torch.long).view(-1, sampler.batch_size)
        for batch in indices[: num_batches - produced]:
            yield batch
        produced += min(len(indices), num_batches - produced)
        current += 1


# --------------------------------------------------------------------------- online selection
def _check_square(distances: torch.Tensor, labels: torch.Tensor) -> None:
    if distances.dim() != 2 or distances.shape[0] != distances.shape[1] or labels.shape != distances.shape[:1]:
        raise ValueError(f"distances, labels: expected (N, N) and (N,), got {tuple(distances.shape)} "
                         f"and {tuple(labels.shape)}")


def select_pairs(distances: torch.Tensor, labels: torch.Tensor,
                 strategy: str = "hard_negatives") -> tuple[torch.Tensor, torch.Tensor]:
    """Online pair selection in a batch.

    Args:
        distances: (N, N) embedding distances (only compared; no gradient needed).
        labels: (N,) labels.
        strategy: ``"all"`` every pair, or ``"hard_negatives"``: every positive pair and as many negative
            pairs as there are positive ones, the closest (hardest) negatives (all of them if fewer).

    Returns:
        ``(positive_pairs, negative_pairs)``: int64 (P, 2) and (M, 2) index pairs with ``i < j``.
    """
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(PAIR_STRATEGIES)}, got {strategy!r}")
    _check_square(distances, labels)
    positive, negative = positive_negative_masks(labels)
    upper = torch.ones_like(positive).triu(1)
    positive_pairs = torch.nonzero(positive & upper)
    negative_pairs = torch.nonzero(negative & upper)
    if strategy == "hard_negatives" and len(negative_pairs) > len(positive_pairs):
        negative_distances = distances.detach()[negative_pairs[:, 0], negative_pairs[:, 1]]
        hardest = torch.topk(negative_distances, len(positive_pairs), largest=False).indices
        negative_pairs = negative_pairs[hardest]
    return positive_pairs, negative_pairs


def select_triplets(distances: torch.Tensor, labels: torch.Tensor, strategy: str = "random_hard",
                    margin: float = 1.0, generator: torch.Generator | None = None) -> Triplets:
    """Online triplet selection in a batch; a triplet's loss is ``max(0, d_ap - d_an + margin)``.

    Strategies (``all`` and ``batch_hard`` are the miners of ``utils/TripletLoss.py``):

    - ``all``: every valid (a, p, n);
    - ``hardest``: per (a, p) pair, its nearest negative, kept when it violates the margin
      (``d_an < d_ap + margin``);
    - ``random_hard``: per (a, p) pair, a uniformly drawn negative among those violating the margin;
    - ``semi_hard``: per (a, p) pair, the nearest negative with ``d_ap < d_an < d_ap + margin`` (FaceNet);
    - ``batch_hard``: per anchor, its farthest positive and nearest negative.

    Pairs without a suitable negative give no triplet. Returns int64 ``(anchors, positives, negatives)``.
    """
    if strategy not in TRIPLET_STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(TRIPLET_STRATEGIES)}, got {strategy!r}")
    _check_square(distances, labels)
    if strategy == "all":
        return mine_batch_all(distances, labels)
    if strategy == "batch_hard":
        return mine_batch_hard(distances, labels)
    if strategy == "semi_hard":
        return mine_semi_hard(distances, labels, margin)
    positive, negative = positive_negative_masks(labels)
    distances = distances.detach()
    anchors, positives = torch.nonzero(positive, as_tuple=True)
    d_ap = distances[anchors, positives].unsqueeze(1)
    d_an = distances[anchors]
    violating = negative[anchors] & (d_an < d_ap + margin)
    if strategy == "hardest":
        chosen = d_an.masked_fill(~violating, float("inf")).argmin(1)
    else:
        scores = torch.rand(d_an.shape, generator=generator).to(d_an.device)
        chosen = scores.masked_fill(~violating, -1.0).argmax(1)
    has_one = violating.any(1)
    return anchors[has_one], positives[has_one], chosen[has_one]


# --------------------------------------------------------------------------- the training loop
def fit_embedding(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    batch_loss: Callable[[Any], torch.Tensor],
    *,
    epochs: int,
    logger: RunLogger | None = None,
    scheduler: Any = None,
    max_batches: int | None = None,
    description: str = "train",
    verbose: bool = True,
) -> dict[str, float]:
    """Train ``model`` for ``epochs`` epochs on any batches and any loss: the one embedding loop.

    Args:
        batches: ``batches(epoch)`` (epoch from 1) yields the epoch's batches: index tensors, (images,
            labels), pairs, triplets, whatever ``batch_loss`` takes.
        batch_loss: computes the scalar loss of one batch (the forward pass happens inside it).
        scheduler: stepped after every batch. ``max_batches`` caps each epoch (``--dry-run``).

    Logs ``Loss/train_step`` per batch and ``Loss/train``, ``LearningRate``, ``Time/train_epoch_s`` per epoch
    (the labs evaluate once, after training). Returns the last epoch's metrics.
    """
    from tqdm import tqdm

    metrics: dict[str, float] = {}
    global_step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        learning_rate = optimizer.param_groups[0]["lr"]
        total, count = 0.0, 0
        started = time.perf_counter()
        for step, batch in enumerate(tqdm(batches(epoch), desc=f"{description} {epoch}/{epochs}", leave=False,
                                          disable=progress_disabled())):
            if max_batches is not None and step == max_batches:
                break
            loss = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = loss.item()
            total, count, global_step = total + value, count + 1, global_step + 1
            if logger is not None:
                logger.log_step(global_step, {"Loss/train_step": value})
        metrics = {"Loss/train": total / max(count, 1), "LearningRate": learning_rate,
                   "Time/train_epoch_s": time.perf_counter() - started}
        if logger is not None:
            logger.log_epoch(epoch, metrics)
        if verbose:
            shown = "  ".join(f"{key} {value:.4f}" for key, value in metrics.items() if key != "LearningRate")
            print(f"{description} epoch {epoch}/{epochs}  {shown}", flush=True)
    return metrics


# --------------------------------------------------------------------------- evaluation on embeddings
@torch.no_grad()
def compute_embeddings(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                       batch_size: int = 500) -> torch.Tensor:
    """``model(images)`` in eval mode, batch by batch, without gradients: (N, D) on the images' device."""
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat([model(images[start: start + batch_size]) for start in range(0, len(images), batch_size)])


def knn_predict(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor,
                k: int = 1) -> torch.Tensor:
    """Majority vote of the ``k`` nearest reference embeddings (Euclidean) for each query.

    A tie between classes goes to the class whose first neighbour is nearest. Shapes: reference (R, D),
    reference_labels (R,) int64, queries (Q, D); returns (Q,) labels.
    """
    if not 1 <= k <= len(reference):
        raise ValueError(f"k: expected 1 <= k <= {len(reference)} (reference items), got {k}")
    classes, compact = torch.unique(reference_labels, return_inverse=True)
    distances = euclidean_distance_matrix(queries, reference, normalize=False)
    neighbours = compact[distances.topk(k, largest=False).indices]  # (Q, k), nearest first
    counts = torch.zeros(len(queries), len(classes), device=neighbours.device)
    counts.scatter_add_(1, neighbours, torch.ones_like(neighbours, dtype=counts.dtype))
    first_rank = torch.full_like(counts, float(k))
    positions = torch.arange(k, device=neighbours.device, dtype=counts.dtype).expand_as(neighbours)
    first_rank.scatter_reduce_(1, neighbours, positions, reduce="amin")
    return classes[(counts * (k + 1) - first_rank).argmax(1)]


def centroid_predict(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The class whose mean reference embedding is nearest to each query: (Q,) labels."""
    classes, compact = torch.unique(reference_labels, return_inverse=True)
    sums = torch.zeros(len(classes), reference.shape[1], device=reference.device).index_add_(0, compact, reference)
    centroids = sums / torch.bincount(compact, minlength=len(classes)).unsqueeze(1)
    return classes[euclidean_distance_matrix(queries, centroids, normalize=False).argmin(1)]


def recall_at_k(embeddings: torch.Tensor, labels: torch.Tensor,
                ks: Sequence[int] = (1, 2, 3, 4, 5)) -> dict[int, float]:
    """Recall@k in the retrieval sense: the share of items with a same-label item among their k nearest others.

    Each item queries all the *other* items (leave-one-out). Returns ``{k: recall in [0, 1]}``.
    """
    if max(ks) >= len(labels):
        raise ValueError(f"ks: expected values < {len(labels)} (items), got {max(ks)}")
    distances = euclidean_distance_matrix(embeddings, embeddings, normalize=False)
    distances.fill_diagonal_(float("inf"))
    neighbours = distances.topk(max(ks), largest=False).indices
    hits = labels[neighbours] == labels.unsqueeze(1)
    return {k: hits[:, :k].any(1).float().mean().item() for k in ks}


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising the accuracy of ``score >= t => same``; returns ``(t, accuracy)``.

    t is taken midway between consecutive distinct scores, so that it generalises to unseen pairs.
    """
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same).astype(bool)
    values = np.unique(scores)
    candidates = np.concatenate([[values[0] - 1.0], (values[1:] + values[:-1]) / 2, [values[-1] + 1.0]])
    accuracy = ((scores[None, :] >= candidates[:, None]) == same[None, :]).mean(1)
    best = int(accuracy.argmax())
    return float(candidates[best]), float(accuracy[best])


def dry_run_subset(data: MnistData, step: int = 10) -> MnistData:
    """Every ``step``-th training and test image, for ``--dry-run``'s tiny evaluation.

    Strided rather than a prefix: the embedded MNIST sample is ordered by digit, so a prefix has one class.
    """
    return MnistData(data.train_images[::step], data.train_labels[::step], data.test_images[::step],
                     data.test_labels[::step], data.source)


def save_figure(figure: Any, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    written = atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    plt.close(figure)
    return written
