"""Reference for Ex2 Q3: the invariants a P x K identity sampler must keep, checked one batch at a time."""

from __future__ import annotations

from collections import Counter

import numpy as np


def labels_with_uneven_counts(seed: int, num_ids: int = 12, max_images: int = 9) -> list[int]:
    """Identity labels with 1..max_images images each, shuffled; some identities have fewer than K."""
    rng = np.random.default_rng(seed)
    labels = [identity for identity in range(num_ids) for _ in range(int(rng.integers(1, max_images + 1)))]
    labels[: num_ids] = list(range(num_ids))  # every identity present at least once
    rng.shuffle(labels)
    return [int(label) * 3 + 100 for label in labels]  # not 0..P-1: ids need not be class indices


def pk_batch_problems(indices: list[int], labels: list[int], batch_size: int, num_instances: int) -> list[str]:
    """Everything wrong with ``indices`` as consecutive P x K batches (empty list when all is right)."""
    problems = []
    if len(indices) % batch_size:
        problems.append(f"{len(indices)} indices is not a whole number of batches of {batch_size}")
    if any(not 0 <= i < len(labels) for i in indices):
        problems.append("an index is outside the dataset")
        return problems
    identities_per_batch = batch_size // num_instances
    for start in range(0, len(indices) - len(indices) % batch_size, batch_size):
        counts = Counter(labels[i] for i in indices[start:start + batch_size])
        if len(counts) != identities_per_batch or set(counts.values()) != {num_instances}:
            problems.append(
                f"batch {start // batch_size} holds {len(counts)} identities with "
                f"{sorted(set(counts.values()))} images each, expected {identities_per_batch} x {num_instances}"
            )
            break
    return problems


def identity_coverage(indices: list[int], labels: list[int]) -> set[int]:
    return {labels[i] for i in indices}


class ReferenceIdentitySampler:
    """A minimal ``RandomIdentitySampler`` (same constructor, ``batch_size``, ``set_epoch``, ``len``),
    swapped in where another question's code builds P x K batches."""

    def __init__(self, labels, batch_size: int = 64, num_instances: int = 4, seed: int = 0):
        self.batch_size, self.num_instances, self.seed, self.epoch = batch_size, num_instances, seed, 0
        self.by_identity: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            self.by_identity.setdefault(int(label), []).append(index)
        per_batch = batch_size // num_instances
        self.num_batches = -(-len(self.by_identity) // per_batch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        identities = list(self.by_identity)
        per_batch = self.batch_size // self.num_instances
        order = [identities[i] for i in rng.permutation(len(identities))]
        while len(order) < self.num_batches * per_batch:
            last = order[len(order) - len(order) % per_batch:]
            order.append(next(i for i in identities if i not in last))
        for identity in order:
            images = self.by_identity[identity]
            yield from rng.choice(images, self.num_instances, replace=len(images) < self.num_instances).tolist()
