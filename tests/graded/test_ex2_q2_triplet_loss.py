"""Ex2 Q2: ``TripletLoss`` (batch-hard, batch-all, semi-hard, soft margin) and ``triplet_loss``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import triplet

pytestmark = pytest.mark.timeout(20, method="signal")
FILE = "utils/TripletLoss.py"
TOLERANCE = 1e-4


def random_batches(count: int = 4, margin: float = 0.3):
    """P x K-like batches with one identity seen once (an anchor without positive), features spread so
    that some triplets are active and some are not; cases too close to a mining threshold are skipped."""
    rng = np.random.default_rng(7)
    batches = []
    spreads = (0.35, 0.7, 1.4, 0.5)  # from overlapping identities (every triplet active) to separated ones
    while len(batches) < count:
        labels = np.concatenate([np.repeat(np.arange(4), 4), [9]])
        rng.shuffle(labels)
        centres = rng.normal(0, spreads[len(batches) % len(spreads)], (10, 6))
        features = (centres[labels] + rng.normal(0, 0.3, (len(labels), 6))).astype(np.float32)
        if triplet.closest_to_boundary(features, labels, margin) > 1e-3:
            batches.append((features, labels))
    return batches


def loss_value(module, features: np.ndarray, labels: np.ndarray) -> float:
    value = module(torch.from_numpy(features), torch.from_numpy(labels))
    assert isinstance(value, torch.Tensor) and value.numel() == 1, \
        f"TripletLoss.forward should return a scalar tensor, got {type(value).__name__} {getattr(value, 'shape', '')}"
    return float(value)


def check_mode(submission, mining: str) -> None:
    TripletLoss = submission.get(FILE, "TripletLoss")
    for margin in (0.3, 1.0):
        module = TripletLoss(margin=margin, mining=mining)
        for case, (features, labels) in enumerate(random_batches(margin=margin)):
            value = loss_value(module, features, labels)
            expected = triplet.MODES[mining](features, labels, margin)
            assert abs(value - expected) < TOLERANCE * max(1.0, expected), \
                f"TripletLoss(margin={margin}, mining={mining!r}) = {value:.5f}, a loop over every (a, p, n) " \
                f"gives {expected:.5f} (random batch {case})"


def test_triplet_loss_on_explicit_triplets(submission):
    """triplet_loss(a, p, n, margin) = mean of max(0, margin + |a - p| - |a - n|) (Euclidean distances)."""
    triplet_loss = submission.get(FILE, "triplet_loss")
    rng = np.random.default_rng(3)
    for margin in (0.3, 1.0):
        anchor, positive, negative = (rng.normal(0, 1, (10, 5)).astype(np.float32) for _ in range(3))
        value = float(triplet_loss(torch.from_numpy(anchor), torch.from_numpy(positive), torch.from_numpy(negative),
                                   margin))
        expected = triplet.explicit_triplets(anchor, positive, negative, margin)
        assert abs(value - expected) < TOLERANCE * max(1.0, expected), \
            f"triplet_loss(margin={margin}) = {value:.5f}, expected mean(max(0, m + |a-p| - |a-n|)) = {expected:.5f}"


def test_batch_hard_matches_brute_force(submission):
    """mining="batch_hard": per anchor, hardest positive and hardest negative, hinge, mean over anchors."""
    check_mode(submission, "batch_hard")


def test_batch_all_matches_brute_force(submission):
    """mining="batch_all": every valid triplet, mean over those with a loss > 0."""
    check_mode(submission, "batch_all")


def test_semi_hard_matches_brute_force(submission):
    """mining="semi_hard": per (a, p), the nearest negative with d_ap < d_an < d_ap + margin; mean over pairs."""
    check_mode(submission, "semi_hard")


def test_batch_hard_soft_margin(submission):
    """soft_margin=True replaces the hinge by softplus(d_ap - d_an) in batch-hard mining."""
    module = submission.get(FILE, "TripletLoss")(margin=0.3, mining="batch_hard", soft_margin=True)
    for case, (features, labels) in enumerate(random_batches()):
        value = loss_value(module, features, labels)
        expected = triplet.batch_hard(features, labels, 0.3, soft_margin=True)
        assert abs(value - expected) < TOLERANCE * max(1.0, expected), \
            f"TripletLoss(soft_margin=True) = {value:.5f}, expected mean softplus(d_ap - d_an) = {expected:.5f} " \
            f"(random batch {case})"


def test_gradients_are_finite_and_flow(submission):
    """Each mining mode back-propagates finite, non-zero gradients, also when two embeddings coincide."""
    TripletLoss = submission.get(FILE, "TripletLoss")
    features, labels = random_batches(count=1)[0]
    features = features.copy()
    features[1] = features[0]  # a zero distance: a plain sqrt would give an infinite gradient
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        inputs = torch.tensor(features, requires_grad=True)
        loss = TripletLoss(margin=1.0, mining=mining)(inputs, torch.from_numpy(labels))
        loss.backward()
        assert inputs.grad is not None, f"mining={mining!r}: no gradient reaches the features"
        assert torch.isfinite(inputs.grad).all(), \
            f"mining={mining!r}: NaN/inf gradient when two embeddings coincide (use a numerically safe sqrt)"
        assert inputs.grad.abs().sum() > 0, f"mining={mining!r}: the gradient is zero everywhere"
