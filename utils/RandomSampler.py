"""Exercise 2 Q3: the P x K identity sampler behind every triplet-loss batch.

A batch of ``batch_size`` indices holds ``P = batch_size // num_instances`` distinct identities with
``K = num_instances`` images each, so every anchor has ``K - 1`` positives and ``(P - 1) K`` negatives in
its own batch: batch-hard mining needs both, and a uniformly shuffled batch over hundreds of identities
would almost never contain a positive pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    """Yield dataset indices in consecutive P x K batches; one epoch visits every identity once.

    Each epoch shuffles the identities and cuts them into batches of ``P``; the last batch is completed
    with identities drawn from those not already in it, so every batch is full and has ``P`` distinct
    identities. Each identity contributes ``K`` of its images, drawn without replacement, or with
    replacement when it has fewer than ``K``.

    Args:
        labels: identity of every dataset item (any integers), length N.
        batch_size: indices per batch, a multiple of ``num_instances``.
        num_instances: K, images per identity in a batch.
        seed: non-negative; the order of epoch ``e`` depends only on ``(seed, e)``.

    ``len(sampler) == ceil(num_identities / P) * batch_size`` exactly.
    """

    def __init__(self, labels: Sequence[int], batch_size: int = 64, num_instances: int = 4, seed: int = 0):
        super().__init__()
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a non-empty 1-D sequence of integers, got shape {labels.shape} "
                             f"of {labels.dtype}")
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        if batch_size < 1 or batch_size % num_instances != 0:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of num_instances={num_instances}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        identities, inverse = np.unique(labels, return_inverse=True)
        self.identities_per_batch = batch_size // num_instances
        if len(identities) < self.identities_per_batch:
            raise ValueError(
                f"batch_size={batch_size} with num_instances={num_instances} needs "
                f"{self.identities_per_batch} identities per batch, but labels hold only {len(identities)}")
        self.batch_size = batch_size
        self.num_instances = num_instances
        self.seed = seed
        self.epoch = 0
        self.num_identities = len(identities)
        order = np.argsort(inverse, kind="stable")
        self.indices_by_identity = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.num_batches = -(-self.num_identities // self.identities_per_batch)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s order (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        identity_order = rng.permutation(self.num_identities)
        shortfall = self.num_batches * self.identities_per_batch - self.num_identities
        if shortfall:
            last_batch = identity_order[(self.num_batches - 1) * self.identities_per_batch:]
            others = np.setdiff1d(np.arange(self.num_identities), last_batch)
            identity_order = np.concatenate([identity_order, rng.choice(others, shortfall, replace=False)])
        for identity in identity_order:
            images = self.indices_by_identity[identity]
            chosen = rng.choice(images, self.num_instances, replace=len(images) < self.num_instances)
            yield from chosen.tolist()
