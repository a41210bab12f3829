"""Ex2 Q3: ``RandomIdentitySampler``, P identities x K images per batch."""

from __future__ import annotations

import pytest

from reference import sampler as reference

pytestmark = pytest.mark.timeout(10, method="signal")
FILE = "utils/RandomSampler.py"
CONFIGS = ((16, 4), (12, 3), (8, 2))  # (batch_size, num_instances)


def make(submission, labels, batch_size, num_instances, seed=0):
    return submission.get(FILE, "RandomIdentitySampler")(labels, batch_size=batch_size, num_instances=num_instances,
                                                          seed=seed)


def test_batches_hold_p_identities_of_k_images(submission):
    """Every consecutive batch_size indices hold batch_size // K distinct identities with K images each."""
    for seed in range(3):
        labels = reference.labels_with_uneven_counts(seed)
        for batch_size, k in CONFIGS:
            sampler = make(submission, labels, batch_size, k, seed)
            for epoch in (0, 1):
                if epoch:
                    sampler.set_epoch(epoch)
                problems = reference.pk_batch_problems(list(iter(sampler)), labels, batch_size, k)
                assert not problems, f"batch_size={batch_size}, num_instances={k}, seed {seed}, epoch {epoch}: " \
                                     f"{problems[0]}"


def test_epoch_covers_every_identity(submission):
    """One epoch (one pass over the sampler) visits every identity."""
    for seed in range(3):
        labels = reference.labels_with_uneven_counts(seed)
        for batch_size, k in CONFIGS:
            seen = reference.identity_coverage(list(iter(make(submission, labels, batch_size, k, seed))), labels)
            missing = set(labels) - seen
            assert not missing, f"batch_size={batch_size}, num_instances={k}: identities {sorted(missing)} never " \
                                "appear in the epoch"


def test_len_is_exact(submission):
    """len(sampler) equals the number of indices one iteration yields."""
    for seed in range(3):
        labels = reference.labels_with_uneven_counts(seed)
        for batch_size, k in CONFIGS:
            sampler = make(submission, labels, batch_size, k, seed)
            count = len(list(iter(sampler)))
            assert len(sampler) == count, f"batch_size={batch_size}, num_instances={k}: len(sampler) = " \
                                          f"{len(sampler)} but iterating yields {count} indices"


def test_deterministic_per_seed_and_set_epoch_reshuffles(submission):
    """The same seed and epoch give the same order; set_epoch(e) and another seed give another order."""
    labels = reference.labels_with_uneven_counts(0)
    first, second = make(submission, labels, 16, 4, seed=5), make(submission, labels, 16, 4, seed=5)
    assert list(iter(first)) == list(iter(second)), "two samplers with the same seed give different orders"
    assert list(iter(first)) == list(iter(first)), "iterating the same epoch twice gives different orders"
    epoch_zero = list(iter(first))
    first.set_epoch(1)
    assert list(iter(first)) != epoch_zero, "set_epoch(1) does not reshuffle the order"
    assert list(iter(make(submission, labels, 16, 4, seed=6))) != epoch_zero, "another seed gives the same order"


def test_small_identities_sampled_with_replacement(submission):
    """An identity with fewer than K images still fills its K slots, repeating its own images."""
    labels = [identity for identity in range(8) for _ in range(2)]  # 2 images each, K = 4
    indices = list(iter(make(submission, labels, 8, 4)))
    problems = reference.pk_batch_problems(indices, labels, 8, 4)
    assert not problems, f"identities with 2 images and num_instances=4: {problems[0]}"
    assert reference.identity_coverage(indices, labels) == set(labels), \
        "identities with fewer than K images are left out of the epoch"
