"""Exercise 1 Q1: a 784-128-10 MLP on MNIST with forward and backward passes written in NumPy.

The network: ``h = sigmoid(X W1 + b1)``, ``p = softmax(h W2 + b2)``, loss = mean cross-entropy
``-log p[y]``. Training is minibatch SGD with momentum and weight decay, the hyper-parameters of Q2
(lr 0.01, momentum 0.9, weight decay 1e-3, batch 64). For a given seed it starts from the initial weights
of Q2's ``Net`` and sees the same batches (the same loader), so the two scripts' curves can be compared
epoch by epoch: they differ only by rounding (float64 here, float32 in PyTorch).

Run: ``python exercise1/q1_numpy_mlp.py [--epochs 10]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.mnist import add_mnist_arguments, mnist_from_args, mnist_loaders  # noqa: E402
from utils.training import DRY_RUN_BATCHES, RunLogger, add_output_arguments, parse_training_args  # noqa: E402

Params = dict[str, np.ndarray]
N_IN, N_HIDDEN, N_OUT = 784, 128, 10


def init_params(seed: int = 0) -> Params:
    """The initial weights of Q2's ``Net`` for the same seed, as float64 NumPy arrays.

    Shapes: W1 (784, 128), b1 (128,), W2 (128, 10), b2 (10,). ``nn.Linear`` draws its weights and biases
    uniform in ``±1/sqrt(fan_in)``; drawing them with PyTorch's generator (rather than NumPy's) makes Q1 and
    Q2 start from the same point. PyTorch is used for nothing else here.
    """
    import torch

    torch.manual_seed(seed)
    hidden, output = torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.Linear(N_HIDDEN, N_OUT)  # Net's FC1, FC2
    as_array = lambda tensor: tensor.detach().double().numpy().copy()  # noqa: E731
    # nn.Linear computes x W^T + b: its (out, in) weight is the transpose of W here.
    return {"W1": as_array(hidden.weight).T.copy(), "b1": as_array(hidden.bias),
            "W2": as_array(output.weight).T.copy(), "b2": as_array(output.bias)}


def sigmoid(z: np.ndarray) -> np.ndarray:
    # Written with exp(-|z|) so that neither branch overflows for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softmax(logits: np.ndarray) -> np.ndarray:
    # Subtracting the row maximum leaves softmax unchanged and keeps exp() finite.
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def forward(params: Params, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class probabilities ``(N, 10)`` for inputs ``X`` ``(N, 784)``, and the cache backward needs."""
    hidden = sigmoid(X @ params["W1"] + params["b1"])
    probs = softmax(hidden @ params["W2"] + params["b2"])
    return probs, {"X": X, "hidden": hidden, "probs": probs}


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean of ``-log p[y]`` over the batch (probabilities clipped away from 0)."""
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


def backward(params: Params, cache: dict[str, np.ndarray], y: np.ndarray) -> Params:
    """Gradients of the mean cross-entropy w.r.t. W1, b1, W2, b2 (chain rule, layer by layer)."""
    X, hidden, probs = cache["X"], cache["hidden"], cache["probs"]
    n = len(y)
    # Softmax + cross-entropy together have the simple gradient p - onehot(y) w.r.t. the logits.
    d_logits = probs.copy()
    d_logits[np.arange(n), y] -= 1.0
    d_logits /= n
    d_hidden = d_logits @ params["W2"].T
    # sigmoid'(z) = s (1 - s), computed from the cached activation.
    d_pre_hidden = d_hidden * hidden * (1.0 - hidden)
    return {
        "W1": X.T @ d_pre_hidden,
        "b1": d_pre_hidden.sum(axis=0),
        "W2": hidden.T @ d_logits,
        "b2": d_logits.sum(axis=0),
    }


def sgd_momentum_step(params: Params, grads: Params, velocity: Params, lr: float, momentum: float,
                      weight_decay: float) -> None:
    """One in-place SGD step with PyTorch's conventions: ``g += wd * w; v = m v + g; w -= lr v``."""
    for name, weight in params.items():
        gradient = grads[name] + weight_decay * weight
        velocity[name] = momentum * velocity.get(name, np.zeros_like(weight)) + gradient
        weight -= lr * velocity[name]


def as_numpy(images, labels) -> tuple[np.ndarray, np.ndarray]:
    """A loader's batch as NumPy: ``X`` (N, 784) float64 and ``y`` (N,) integers."""
    return images.reshape(len(labels), N_IN).double().numpy(), labels.numpy()


def train_epoch(params: Params, velocity: Params, train_loader, args: argparse.Namespace) -> tuple[float, float]:
    """One pass of minibatch SGD over the loader's batches; returns the mean loss and accuracy of the epoch."""
    total_loss, total_correct, seen = 0.0, 0, 0
    for images, labels in train_loader:
        X, y = as_numpy(images, labels)
        probs, cache = forward(params, X)
        grads = backward(params, cache, y)
        sgd_momentum_step(params, grads, velocity, args.lr, args.momentum, args.weight_decay)
        total_loss += cross_entropy(probs, y) * len(y)
        total_correct += int((probs.argmax(axis=1) == y).sum())
        seen += len(y)
    return total_loss / seen, total_correct / seen


def evaluate(params: Params, test_loader) -> tuple[float, float]:
    """Mean loss and accuracy (in [0, 1]) over every batch of the loader."""
    total_loss, total_correct, seen = 0.0, 0, 0
    for images, labels in test_loader:
        X, y = as_numpy(images, labels)
        probs, _ = forward(params, X)
        total_loss += cross_entropy(probs, y) * len(y)
        total_correct += int((probs.argmax(axis=1) == y).sum())
        seen += len(y)
    return total_loss / seen, total_correct / seen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    parser.set_defaults(default_epochs=10)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"{DRY_RUN_BATCHES} batches per epoch and 1 epoch unless --epochs is given")
    add_output_arguments(parser)
    add_mnist_arguments(parser)
    return parse_training_args(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    data = mnist_from_args(args, validation=True)
    loaders = mnist_loaders(data, args.batch_size, seed=args.seed,
                            max_batches=DRY_RUN_BATCHES if args.dry_run else None)
    params, velocity = init_params(args.seed), {}
    run = RunLogger(args.runs_dir, "q1_numpy_mlp", args.run_name, vars(args), tensorboard=False,
                    stop_on_divergence=True)
    run.save(data=data.describe())
    metrics: dict[str, float] = {}
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        # A 64x784 by 784x128 product is too small to share: one BLAS thread runs Q1 3x faster on 2 cores.
        with threadpool_limits(limits=1, user_api="blas"):
            train_loss, train_accuracy = train_epoch(params, velocity, loaders.train, args)
            seconds = time.perf_counter() - started
            test_loss, test_accuracy = evaluate(params, loaders.test)
        metrics = {"Loss/train": train_loss, "Accuracy/train": train_accuracy,
                   "Loss/test": test_loss, "Accuracy/test": test_accuracy, "Time/train_epoch_s": seconds}
        run.log_epoch(epoch, metrics, total_epochs=args.epochs)  # prints the epoch's line too
    run.close()
    return metrics


if __name__ == "__main__":
    main()
