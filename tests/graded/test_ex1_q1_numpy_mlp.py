"""Ex1 Q1: the NumPy MLP (forward, cross-entropy, backward, SGD with momentum)."""

from __future__ import annotations

import numpy as np
import pytest

from reference import mlp

pytestmark = pytest.mark.timeout(10, method="signal")
FILE = "exercise1/q1_numpy_mlp.py"
SEEDS = (0, 1, 2)


def test_init_params_shapes(submission):
    """init_params returns W1 (784, 128), b1 (128,), W2 (128, 10), b2 (10,), the same for the same seed."""
    init_params = submission.get(FILE, "init_params")
    params = init_params(seed=0)
    shapes = {name: np.shape(params[name]) for name in ("W1", "b1", "W2", "b2") if name in params}
    expected = {"W1": (784, 128), "b1": (128,), "W2": (128, 10), "b2": (10,)}
    assert shapes == expected, f"init_params(0) shapes {shapes}, expected {expected}"
    again = init_params(seed=0)
    assert all(np.array_equal(params[name], again[name]) for name in expected), "init_params(0) differs between calls"
    assert np.all(np.isfinite(params["W1"])) and np.std(params["W1"]) > 0, "W1 must be random and finite"


def test_forward_matches_reference(submission):
    """forward gives softmax(sigmoid(X W1 + b1) W2 + b2): probabilities (N, 10) whose rows sum to 1."""
    forward = submission.get(FILE, "forward")
    for seed in SEEDS:
        params, (X, _) = mlp.random_params(seed), mlp.random_batch(seed)
        probs, _ = forward(params, X)
        expected = mlp.forward(params, X)
        assert np.shape(probs) == (len(X), 10), f"forward: probs shape {np.shape(probs)}, expected {(len(X), 10)}"
        error = mlp.relative_error(probs, expected)
        assert error < 1e-5, f"forward: probabilities differ from softmax(sigmoid(X W1 + b1) W2 + b2) " \
                             f"(relative error {error:.2e}, seed {seed})"


def test_cross_entropy_matches_reference(submission):
    """cross_entropy(probs, y) is the mean over the batch of -log probs[i, y[i]]."""
    cross_entropy = submission.get(FILE, "cross_entropy")
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        logits = rng.normal(0, 2, (12, 10))
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        y = rng.integers(0, 10, 12)
        value = float(cross_entropy(probs, y))
        expected = mlp.cross_entropy(probs, y)
        assert abs(value - expected) < 1e-6 * max(1.0, abs(expected)), \
            f"cross_entropy = {value:.6f}, expected the mean of -log p[y] = {expected:.6f} (seed {seed})"


def test_backward_matches_autograd(submission):
    """backward returns the gradients of the mean cross-entropy w.r.t. W1, b1, W2, b2 (checked by autograd)."""
    forward, backward = submission.get(FILE, "forward"), submission.get(FILE, "backward")
    for seed in SEEDS:
        params, (X, y) = mlp.random_params(seed), mlp.random_batch(seed)
        _, cache = forward(params, X)
        grads = backward(params, cache, y)
        expected = mlp.gradients(params, X, y)
        for name, reference in expected.items():
            assert name in grads, f"backward: no gradient for {name} (keys {sorted(grads)})"
            assert np.shape(grads[name]) == reference.shape, \
                f"backward: gradient of {name} has shape {np.shape(grads[name])}, expected {reference.shape}"
            error = mlp.relative_error(grads[name], reference)
            assert error < 1e-4, f"backward: gradient of {name} differs from autograd " \
                                 f"(relative error {error:.2e}, seed {seed})"


def test_sgd_momentum_step_matches_torch(submission):
    """Three sgd_momentum_step calls update params in place exactly as torch.optim.SGD(momentum, weight_decay)."""
    step = submission.get(FILE, "sgd_momentum_step")
    for seed in SEEDS:
        params = mlp.random_params(seed)
        start = {name: value.copy() for name, value in params.items()}
        rng = np.random.default_rng(seed + 50)
        grads_per_step = [{name: rng.normal(0, 1, value.shape) for name, value in params.items()} for _ in range(3)]
        velocity = {name: np.zeros_like(value) for name, value in params.items()}
        for grads in grads_per_step:
            step(params, {name: g.copy() for name, g in grads.items()}, velocity, 0.05, 0.9, 1e-2)
        expected = mlp.sgd_momentum_steps(start, grads_per_step, lr=0.05, momentum=0.9, weight_decay=1e-2)
        for name, reference in expected.items():
            error = mlp.relative_error(params[name] - start[name], reference - start[name])
            assert error < 1e-6, f"sgd_momentum_step: {name} after 3 steps differs from torch.optim.SGD with " \
                                 f"momentum and weight decay (relative error of the update {error:.2e}, seed {seed})"
