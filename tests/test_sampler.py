"""RandomIdentitySampler: P x K batches, coverage, exact length, determinism, errors (checked by brute force)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from utils.RandomSampler import RandomIdentitySampler

SEEDS = (0, 1, 2, 7, 123)
CONFIGS = ((16, 4), (12, 3), (8, 2), (6, 1), (12, 6))  # (batch_size, num_instances)


def uneven_labels(seed: int, num_ids: int = 13) -> list[int]:
    """Identities with 1..9 images (some fewer than K), shuffled, with ids that are not class indices."""
    rng = np.random.default_rng(seed)
    labels = [5 * identity + 40 for identity in range(num_ids) for _ in range(int(rng.integers(1, 10)))]
    rng.shuffle(labels)
    return labels


def check_epoch(indices: list[int], labels: list[int], batch_size: int, k: int) -> None:
    """Every invariant of one epoch, by looping over the batches one by one."""
    num_ids = len(set(labels))
    p = batch_size // k
    assert len(indices) == -(-num_ids // p) * batch_size
    assert all(isinstance(i, int) and 0 <= i < len(labels) for i in indices)
    for start in range(0, len(indices), batch_size):
        batch = indices[start:start + batch_size]
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == p, f"batch {start // batch_size} has {len(counts)} identities, expected {p}"
        assert set(counts.values()) == {k}
        for identity in counts:
            chosen = {i for i in batch if labels[i] == identity}
            if labels.count(identity) >= k:
                assert len(chosen) == k, "an identity with K images or more was sampled with replacement"
    assert {labels[i] for i in indices} == set(labels), "an identity is missing from the epoch"


@pytest.mark.parametrize("seed", SEEDS)
def test_pk_invariants_hold_for_every_batch(seed):
    labels = uneven_labels(seed)
    for batch_size, k in CONFIGS:
        sampler = RandomIdentitySampler(labels, batch_size=batch_size, num_instances=k, seed=seed)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            indices = list(sampler)
            assert len(sampler) == len(indices)
            check_epoch(indices, labels, batch_size, k)


def test_exact_multiple_needs_no_padding():
    labels = [identity for identity in range(8) for _ in range(5)]
    sampler = RandomIdentitySampler(labels, batch_size=16, num_instances=4)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 32
    assert Counter(labels[i] for i in indices) == Counter({identity: 4 for identity in range(8)})


def test_identities_with_one_image_are_repeated():
    labels = list(range(6))
    indices = list(RandomIdentitySampler(labels, batch_size=8, num_instances=4, seed=3))
    check_epoch(indices, labels, 8, 4)
    assert all(indices[start:start + 4] == [indices[start]] * 4 for start in range(0, len(indices), 4))


def test_deterministic_for_a_seed_and_reshuffled_by_set_epoch():
    labels = uneven_labels(0)
    first = RandomIdentitySampler(labels, 12, 3, seed=4)
    second = RandomIdentitySampler(labels, 12, 3, seed=4)
    assert list(first) == list(second) == list(first)
    epoch_zero = list(first)
    first.set_epoch(1)
    second.set_epoch(1)
    assert list(first) != epoch_zero and list(first) == list(second)
    assert list(RandomIdentitySampler(labels, 12, 3, seed=5)) != epoch_zero
    # The order of an epoch depends on (seed, epoch) only, not on what was iterated before.
    fresh = RandomIdentitySampler(labels, 12, 3, seed=4)
    fresh.set_epoch(1)
    assert list(fresh) == list(first)


def test_works_as_a_dataloader_sampler():
    labels = uneven_labels(1)
    sampler = RandomIdentitySampler(labels, batch_size=12, num_instances=3, seed=0)
    loader = DataLoader(torch.tensor(labels), batch_size=12, sampler=sampler)
    batches = [batch.tolist() for batch in loader]
    assert len(batches) == len(sampler) // 12
    assert all(len(batch) == 12 and set(Counter(batch).values()) == {3} and len(set(batch)) == 4 for batch in batches)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batch_size=10, num_instances=4), "multiple of num_instances"),
    (dict(batch_size=0, num_instances=4), "multiple of num_instances"),
    (dict(batch_size=8, num_instances=0), "num_instances"),
    (dict(batch_size=64, num_instances=4), "needs 16 identities"),
    (dict(batch_size=8, num_instances=4, seed=-1), "seed"),
])
def test_bad_arguments_are_one_line_errors(kwargs, fragment):
    with pytest.raises(ValueError) as error:
        RandomIdentitySampler(uneven_labels(0), **kwargs)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_bad_labels():
    with pytest.raises(ValueError, match="labels"):
        RandomIdentitySampler([], 8, 4)
    with pytest.raises(ValueError, match="labels"):
        RandomIdentitySampler([0.5, 1.5], 2, 1)
