"""Metric learning shared by the sibling labs: pairs, triplets, the training loop, running metrics, kNN.

One place for what every embedding lab needs, so that each script only holds its own question:

- offline sampling: :func:`random_pairs` (half same-label pairs by default) and :func:`random_triplets`
  (one triplet per anchor), and the ``Dataset`` wrappers :class:`PairDataset` / :class:`TripletDataset`
  that apply them to any labelled dataset (the pairs of a test set drawn once stay fixed);
- P x K batches for online selection (``utils/siamese_losses.py``): :func:`identity_batches`;
- :func:`fit_embedding`, the one training loop (any batches, any loss), with validation, running metrics
  (:class:`AccumulatedAccuracy`, :class:`AverageNonzeroTriplets`), checkpoints and resume, logging through
  ``RunLogger``;
- evaluation on embeddings: :func:`compute_embeddings`, :func:`knn_predict`, :func:`recall_at_k`,
  :func:`centroid_predict`, :func:`best_threshold`, plus :func:`dry_run_subset` and :func:`save_figure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from utils.io import atomic_write, load_checkpoint, save_checkpoint
from utils.metrics import euclidean_distance_matrix
from utils.mnist import MnistData
from utils.RandomSampler import RandomIdentitySampler
from utils.training import RunLogger, progress_disabled
from utils.TripletLoss import Triplets


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


# --------------------------------------------------------------------------- running metrics
class RunningMetric:
    """A quantity accumulated over the batches of an epoch (the lab's metrics): ``reset()``, then the
    script's ``batch_loss`` calls ``update(...)``, then ``value()``; logged as ``<name>/train`` and
    ``<name>/val`` by :func:`fit_embedding`."""

    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def value(self) -> float:
        raise NotImplementedError


class AccumulatedAccuracy(RunningMetric):
    """Share of correct argmax predictions over every sample seen since ``reset`` (a fraction in [0, 1])."""

    name = "Accuracy"

    def reset(self) -> None:
        self.correct, self.total = 0, 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct += int((logits.detach().argmax(1) == labels).sum())
        self.total += len(labels)

    def value(self) -> float:
        return self.correct / max(self.total, 1)


class AverageNonzeroTriplets(RunningMetric):
    """Mean, over the batches since ``reset``, of the number of selected triplets with a loss > 0: how many
    triplets still teach something (it falls as the embedding satisfies the margin)."""

    name = "NonzeroTriplets"

    def reset(self) -> None:
        self.counts: list[int] = []

    def update(self, count: int) -> None:
        self.counts.append(count)

    def value(self) -> float:
        return float(np.mean(self.counts)) if self.counts else 0.0


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
    validation_batches: Iterable[Any] | None = None,
    metrics: Sequence[RunningMetric] = (),
    on_epoch_end: Callable[[int], dict[str, float]] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    seed: int | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``epochs`` epochs on any batches and any loss: the one embedding loop.

    Args:
        batches: ``batches(epoch)`` (epoch from 1) yields the epoch's batches: index tensors, (images,
            labels), pairs, triplets, whatever ``batch_loss`` takes. For an exact ``resume`` it must depend
            on ``epoch`` only (seed its generators with the epoch).
        batch_loss: computes the scalar loss of one batch (the forward pass happens inside it) and updates
            ``metrics``.
        scheduler: stepped after every batch. ``max_batches`` caps each epoch and the validation (``--dry-run``).
        validation_batches: a re-iterable (list, ``DataLoader``) of fixed batches for ``batch_loss``, run
            after each epoch in eval mode without gradients: ``Loss/val`` and each metric's ``/val`` value.
        metrics: running metrics, reset before the epoch and before the validation.
        on_epoch_end: ``on_epoch_end(epoch)`` returns more scalars to log for the epoch (e.g. a kNN accuracy).
        checkpoint_path: saved atomically after every epoch (model, optimizer, scheduler, epoch, ``config``;
            readable with ``weights_only=True``). With ``resume``, training continues after its last epoch (a
            file that is not such a checkpoint ends the script with one line).
        seed: reseeds torch's global generator at each epoch start with ``(seed, epoch)``, so that what
            draws from it (random selectors) repeats identically after a resume.

    Logs ``Loss/train_step`` per batch and ``Loss/train``, ``LearningRate``, ``Time/train_epoch_s`` (and the
    above) per epoch. Returns the last epoch's scalars. A non-finite loss ends the script with one line.
    """
    from tqdm import tqdm

    metrics_out: dict[str, float] = {}
    start_epoch, global_step = 1, 0
    if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
        try:
            state = load_embedding_checkpoint(checkpoint_path, model, optimizer, scheduler)
        except ValueError as error:
            raise SystemExit(f"error: --resume: {error}") from None
        start_epoch, global_step, metrics_out = state["epoch"] + 1, state["global_step"], state["metrics"]
        if verbose:
            print(f"{description}: resumed from {checkpoint_path} after epoch {state['epoch']}", flush=True)
    for epoch in range(start_epoch, epochs + 1):
        if seed is not None:
            torch.manual_seed(seed * 100_003 + epoch)
        model.train()
        for metric in metrics:
            metric.reset()
        learning_rate = optimizer.param_groups[0]["lr"]
        total, count = 0.0, 0
        started = time.perf_counter()
        for step, batch in enumerate(tqdm(batches(epoch), desc=f"{description} {epoch}/{epochs}", leave=False,
                                          disable=progress_disabled())):
            if max_batches is not None and step == max_batches:
                break
            loss = batch_loss(batch)
            value = loss.item()
            if not math.isfinite(value):  # NaN weights would follow: stop while the last checkpoint is sound
                raise SystemExit(f"error: {description}: the training loss became {value} at epoch {epoch}, "
                                 f"batch {step + 1} (diverged: try a lower --lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total, count, global_step = total + value, count + 1, global_step + 1
            if logger is not None:
                logger.log_step(global_step, {"Loss/train_step": value})
        metrics_out = {"Loss/train": total / max(count, 1),
                       **{f"{metric.name}/train": metric.value() for metric in metrics},
                       "LearningRate": learning_rate, "Time/train_epoch_s": time.perf_counter() - started}
        if validation_batches is not None:
            metrics_out.update(validate(model, validation_batches, batch_loss, metrics, max_batches))
        if on_epoch_end is not None:
            metrics_out.update(on_epoch_end(epoch))
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "epoch": epoch, "global_step": global_step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                "metrics": metrics_out, "config": config or {}})
        if logger is not None:
            logger.log_epoch(epoch, metrics_out)
        if verbose:
            shown = "  ".join(f"{key} {value:.4f}" for key, value in metrics_out.items() if key != "LearningRate")
            print(f"{description} epoch {epoch}/{epochs}  {shown}", flush=True)
    return metrics_out


@torch.no_grad()
def validate(model: nn.Module, batches: Iterable[Any], batch_loss: Callable[[Any], torch.Tensor],
             metrics: Sequence[RunningMetric] = (), max_batches: int | None = None) -> dict[str, float]:
    """Mean ``batch_loss`` over ``batches`` in eval mode, without gradients (``Loss/val``), and each metric's
    value over them (``<name>/val``)."""
    model.eval()
    for metric in metrics:
        metric.reset()
    total, count = 0.0, 0
    for step, batch in enumerate(batches):
        if max_batches is not None and step == max_batches:
            break
        total, count = total + batch_loss(batch).item(), count + 1
    model.train()
    return {"Loss/val": total / max(count, 1), **{f"{metric.name}/val": metric.value() for metric in metrics}}


def load_embedding_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                              scheduler: Any = None) -> dict[str, Any]:
    """Load a checkpoint of :func:`fit_embedding` into ``model`` (and ``optimizer``, ``scheduler``).

    Returns the checkpoint dict. Raises a one-line ``ValueError`` naming the file when it is not one, or
    not one of this model (other layers or shapes).
    """
    state = load_checkpoint(path, map_location=next(model.parameters()).device)
    if not {"epoch", "model", "optimizer", "metrics"} <= set(state):
        raise ValueError(f"{path}: not a checkpoint of fit_embedding (expected epoch, model, optimizer, metrics)")
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0][:120]
        raise ValueError(f"{path}: a checkpoint of another model or optimizer ({reason})") from None
    state.setdefault("global_step", 0)
    return state


# --------------------------------------------------------------------------- evaluation on embeddings
@torch.no_grad()
def compute_embeddings(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                       batch_size: int = 500) -> torch.Tensor:
    """``model(images)`` in eval mode, batch by batch, without gradients: (N, D) on the images' device."""
    if isinstance(model, nn.Module):
        model.eval()
    return torch.cat([model(images[start: start + batch_size]) for start in range(0, len(images), batch_size)])


def knn_class_scores(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor, k: int = 1,
                     queries_per_chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank the classes for each query by the votes of its ``k`` nearest reference embeddings (Euclidean).

    A class's score is its vote count (``k`` times its kNN probability, as scikit-learn's
    ``KNeighborsClassifier.predict_proba`` with uniform weights), ties broken in favour of the class whose
    first neighbour is nearer; a class without a vote scores ``-inf``.

    Shapes: reference (R, D), reference_labels (R,) int64, queries (Q, D). Returns ``(classes (C,), scores
    (Q, C))``, ``classes`` the sorted distinct reference labels. Queries go ``queries_per_chunk`` at a time
    (the (Q, R) distance matrix of full MNIST would take 2.4 GB).
    """
    if not 1 <= k <= len(reference):
        raise ValueError(f"k: expected 1 <= k <= {len(reference)} (reference items), got {k}")
    classes, compact = torch.unique(reference_labels, return_inverse=True)
    chunks = []
    for start in range(0, len(queries), queries_per_chunk):
        distances = euclidean_distance_matrix(queries[start: start + queries_per_chunk], reference, normalize=False)
        neighbours = compact[distances.topk(k, largest=False).indices]  # (q, k), nearest first
        counts = torch.zeros(len(neighbours), len(classes), device=neighbours.device)
        counts.scatter_add_(1, neighbours, torch.ones_like(neighbours, dtype=counts.dtype))
        first_rank = torch.full_like(counts, float(k))
        positions = torch.arange(k, device=neighbours.device, dtype=counts.dtype).expand_as(neighbours)
        first_rank.scatter_reduce_(1, neighbours, positions, reduce="amin")
        chunks.append((counts * (k + 1) - first_rank).masked_fill(counts == 0, float("-inf")))
    return classes, torch.cat(chunks)


def knn_predict(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor,
                k: int = 1) -> torch.Tensor:
    """Majority vote of the ``k`` nearest reference embeddings (Euclidean) for each query.

    A tie between classes goes to the class whose first neighbour is nearest. Shapes: reference (R, D),
    reference_labels (R,) int64, queries (Q, D); returns (Q,) labels.
    """
    classes, scores = knn_class_scores(reference, reference_labels, queries, k)
    return classes[scores.argmax(1)]


def recall_at_k(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor,
                query_labels: torch.Tensor, ks: Sequence[int] = (1, 2, 3, 4, 5),
                neighbours: int = 5) -> dict[int, float]:
    """Recall@k of a kNN classifier: the share of queries whose true class is among the ``k`` classes of
    highest kNN probability (``neighbours`` nearest reference embeddings voting, ties as in
    :func:`knn_class_scores`). A class no neighbour voted for is never retrieved, so ``k`` above
    ``neighbours`` adds nothing; recall@1 is the kNN accuracy.

    Returns ``{k: recall in [0, 1]}``.
    """
    if min(ks) < 1:
        raise ValueError(f"ks: expected values >= 1, got {min(ks)}")
    classes, scores = knn_class_scores(reference, reference_labels, queries, neighbours)
    true_column = (classes.unsqueeze(0) == query_labels.unsqueeze(1)).float().argmax(1)
    true_score = scores.gather(1, true_column.unsqueeze(1)).squeeze(1)
    known = torch.isin(query_labels, classes) & torch.isfinite(true_score)
    rank = (scores > true_score.unsqueeze(1)).sum(1)  # classes ranked before the true one
    return {k: (known & (rank < k)).float().mean().item() for k in ks}


def centroid_predict(reference: torch.Tensor, reference_labels: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """The class whose mean reference embedding is nearest to each query: (Q,) labels."""
    classes, compact = torch.unique(reference_labels, return_inverse=True)
    sums = torch.zeros(len(classes), reference.shape[1], device=reference.device).index_add_(0, compact, reference)
    centroids = sums / torch.bincount(compact, minlength=len(classes)).unsqueeze(1)
    return classes[euclidean_distance_matrix(queries, centroids, normalize=False).argmin(1)]


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
