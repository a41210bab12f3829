"""Reference for Ex1 Q1: the 784-128-10 sigmoid/softmax MLP, its loss and gradients by torch autograd."""

from __future__ import annotations

import numpy as np
import torch


def random_params(seed: int) -> dict[str, np.ndarray]:
    """Parameters large enough that every gradient is far from 0: W1 (784, 128), b1, W2 (128, 10), b2."""
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.normal(0.0, 0.05, (784, 128)),
        "b1": rng.normal(0.0, 0.5, (128,)),
        "W2": rng.normal(0.0, 0.5, (128, 10)),
        "b2": rng.normal(0.0, 0.5, (10,)),
    }


def random_batch(seed: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``(size, 784)`` in [0, 1] and labels ``(size,)`` in 0..9."""
    rng = np.random.default_rng(1000 + seed)
    return rng.uniform(0.0, 1.0, (size, 784)), rng.integers(0, 10, size)


def _torch_loss(params: dict[str, torch.Tensor], X: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.sigmoid(X @ params["W1"] + params["b1"])
    logits = hidden @ params["W2"] + params["b2"]
    probs = torch.softmax(logits, dim=1)
    loss = torch.nn.functional.cross_entropy(logits, y)
    return probs, loss


def forward(params: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, 10)``: softmax(sigmoid(X W1 + b1) W2 + b2)."""
    tensors = {name: torch.as_tensor(value, dtype=torch.float64) for name, value in params.items()}
    probs, _ = _torch_loss(tensors, torch.as_tensor(X, dtype=torch.float64), torch.zeros(len(X), dtype=torch.long))
    return probs.numpy()


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean of -log p[y], one sample at a time."""
    return float(np.mean([-np.log(probs[i, label]) for i, label in enumerate(y)]))


def gradients(params: dict[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy w.r.t. each parameter, by autograd in float64."""
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    _, loss = _torch_loss(tensors, torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.long))
    loss.backward()
    return {name: tensor.grad.numpy() for name, tensor in tensors.items()}


def sgd_momentum_steps(params: dict[str, np.ndarray], grads_per_step: list[dict[str, np.ndarray]], lr: float,
                       momentum: float, weight_decay: float) -> dict[str, np.ndarray]:
    """Parameters after ``torch.optim.SGD`` takes one step per gradient dict (decay on every parameter)."""
    tensors = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in params.items()}
    optimizer = torch.optim.SGD(tensors.values(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for grads in grads_per_step:
        for name, tensor in tensors.items():
            tensor.grad = torch.as_tensor(grads[name], dtype=torch.float64).clone()
        optimizer.step()
    return {name: tensor.detach().numpy() for name, tensor in tensors.items()}


def relative_error(value: np.ndarray, expected: np.ndarray) -> float:
    value, expected = np.asarray(value, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(value - expected) / max(np.linalg.norm(expected), 1e-12))
