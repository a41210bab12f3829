"""Exercise 1 Q1: a 784-128-10 MLP on MNIST with forward and backward passes written in NumPy.

The network: ``h = sigmoid(X W1 + b1)``, ``p = softmax(h W2 + b2)``, loss = mean cross-entropy
``-log p[y]``. Training is minibatch SGD with momentum and weight decay, the hyper-parameters of Q2
(lr 0.01, momentum 0.9, weight decay 1e-3, batch 64), so the two scripts can be compared line by line.

Run: ``python exercise1/q1_numpy_mlp.py [--epochs 10]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.mnist import add_mnist_arguments, mnist_from_args  # noqa: E402
from utils.training import DRY_RUN_BATCHES, RunLogger, add_output_arguments, parse_training_args  # noqa: E402

Params = dict[str, np.ndarray]
N_IN, N_HIDDEN, N_OUT = 784, 128, 10


def init_params(seed: int = 0) -> Params:
    """Weights drawn like ``nn.Linear``'s default: uniform in ``±1/sqrt(fan_in)``.

    Shapes: W1 (784, 128), b1 (128,), W2 (128, 10), b2 (10,).
    """
    rng = np.random.default_rng(seed)

    def uniform(fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape)

    return {
        "W1": uniform(N_IN, (N_IN, N_HIDDEN)),
        "b1": uniform(N_IN, (N_HIDDEN,)),
        "W2": uniform(N_HIDDEN, (N_HIDDEN, N_OUT)),
        "b2": uniform(N_HIDDEN, (N_OUT,)),
    }


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
    # BEGIN SOLUTION
    hidden = sigmoid(X @ params["W1"] + params["b1"])
    probs = softmax(hidden @ params["W2"] + params["b2"])
    return probs, {"X": X, "hidden": hidden, "probs": probs}
    # END SOLUTION


def cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean of ``-log p[y]`` over the batch (probabilities clipped away from 0)."""
    # BEGIN SOLUTION
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    # END SOLUTION


def backward(params: Params, cache: dict[str, np.ndarray], y: np.ndarray) -> Params:
    """Gradients of the mean cross-entropy w.r.t. W1, b1, W2, b2 (chain rule, layer by layer)."""
    # BEGIN SOLUTION
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
    # END SOLUTION


def sgd_momentum_step(params: Params, grads: Params, velocity: Params, lr: float, momentum: float,
                      weight_decay: float) -> None:
    """One in-place SGD step with PyTorch's conventions: ``g += wd * w; v = m v + g; w -= lr v``."""
    # BEGIN SOLUTION
    for name, weight in params.items():
        gradient = grads[name] + weight_decay * weight
        velocity[name] = momentum * velocity.get(name, np.zeros_like(weight)) + gradient
        weight -= lr * velocity[name]
    # END SOLUTION


def evaluate(params: Params, X: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean loss and accuracy (in [0, 1]) on a whole set."""
    probs, _ = forward(params, X)
    return cross_entropy(probs, y), float((probs.argmax(axis=1) == y).mean())


def train_epoch(params: Params, velocity: Params, X: np.ndarray, y: np.ndarray, args: argparse.Namespace,
                rng: np.random.Generator, max_batches: int | None) -> tuple[float, float]:
    """One shuffled pass of minibatch SGD; returns the running mean loss and accuracy."""
    order = rng.permutation(len(y))
    total_loss, total_correct, seen = 0.0, 0, 0
    for step, start in enumerate(range(0, len(y), args.batch_size)):
        if max_batches is not None and step == max_batches:
            break
        batch = order[start : start + args.batch_size]
        probs, cache = forward(params, X[batch])
        grads = backward(params, cache, y[batch])
        sgd_momentum_step(params, grads, velocity, args.lr, args.momentum, args.weight_decay)
        total_loss += cross_entropy(probs, y[batch]) * len(batch)
        total_correct += int((probs.argmax(axis=1) == y[batch]).sum())
        seen += len(batch)
    return total_loss / seen, total_correct / seen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 10)")
    parser.set_defaults(default_epochs=10)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"{DRY_RUN_BATCHES} batches per epoch and 1 epoch unless --epochs is given")
    add_output_arguments(parser)
    add_mnist_arguments(parser)
    return parse_training_args(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    data = mnist_from_args(args)
    X_train = data.train_images.reshape(-1, N_IN).double().numpy()
    y_train = data.train_labels.numpy()
    X_test = data.test_images.reshape(-1, N_IN).double().numpy()
    y_test = data.test_labels.numpy()

    params, velocity = init_params(args.seed), {}
    rng = np.random.default_rng(args.seed)
    logger = RunLogger(args.runs_dir, "q1_numpy_mlp", args.run_name, vars(args), tensorboard=False)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    metrics: dict[str, float] = {}
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        train_loss, train_accuracy = train_epoch(params, velocity, X_train, y_train, args, rng, max_batches)
        test_loss, test_accuracy = evaluate(params, X_test, y_test)
        metrics = {"Loss/train": train_loss, "Accuracy/train": train_accuracy,
                   "Loss/test": test_loss, "Accuracy/test": test_accuracy,
                   "Time/train_epoch_s": time.perf_counter() - started}
        logger.log_epoch(epoch, metrics)
        print(f"epoch {epoch:3d}/{args.epochs}  train loss {train_loss:.4f} acc {100 * train_accuracy:6.2f}%"
              f"  test loss {test_loss:.4f} acc {100 * test_accuracy:6.2f}%", flush=True)
    logger.save(data=data.source)
    return metrics


if __name__ == "__main__":
    main()
