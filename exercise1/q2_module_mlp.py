"""Exercise 1 Q2: the Q1 network as a PyTorch ``nn.Module``, trained by autograd and ``optim.SGD``.

Same model (784-128-10, sigmoid hidden layer), same loss (softmax cross-entropy) and same optimiser
settings as the NumPy script of Q1: PyTorch computes the backward pass that Q1 writes by hand.

Run: ``python exercise1/q2_module_mlp.py [--epochs 10]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.mnist import add_mnist_arguments, prepare_mnist_run  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES,
    EpochStats,
    RunLogger,
    add_training_arguments,
    evaluate_classifier,
    parse_training_args,
    train_one_epoch,
)


class Net(nn.Module):
    """784-128-10 MLP: ``FC1`` + sigmoid, then ``FC2`` giving the 10 class logits.

    Accepts ``(N, 1, 28, 28)`` images or ``(N, 784)`` vectors. The softmax lives in the loss
    (``nn.CrossEntropyLoss``), which is both cheaper and numerically safer.
    """

    def __init__(self):
        # BEGIN SOLUTION
        super().__init__()
        self.FC1 = nn.Linear(784, 128)
        self.FC2 = nn.Linear(128, 10)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BEGIN SOLUTION
        x = torch.flatten(x, 1)
        return self.FC2(torch.sigmoid(self.FC1(x)))
        # END SOLUTION


def train(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
          batch_size: int, generator: torch.Generator, max_batches: int | None = None) -> EpochStats:
    """One epoch of minibatch SGD on ``images`` ``(N, 1, 28, 28)``; returns mean loss and accuracy."""
    return train_one_epoch(model, optimizer, images, labels, batch_size=batch_size, generator=generator,
                           loss_fn=nn.CrossEntropyLoss(), max_batches=max_batches)


def test(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
         max_batches: int | None = None) -> EpochStats:
    """Mean cross-entropy and accuracy on a held-out set, without gradients."""
    return evaluate_classifier(model, images, labels, loss_fn=F.cross_entropy, max_batches=max_batches)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser, epochs=10, batch_size=64, lr=0.01, weight_decay=1e-3, momentum=0.9)
    add_mnist_arguments(parser)
    return parse_training_args(parser, argv)


def main(argv: list[str] | None = None) -> EpochStats:
    args = parse_args(argv)
    device, data = prepare_mnist_run(args)

    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                momentum=args.momentum)
    generator = torch.Generator().manual_seed(args.seed)
    max_batches = DRY_RUN_BATCHES if args.dry_run else None
    # Q2 prints its curves; it keeps them in metrics.json (no TensorBoard yet: that is Q3) for the report.
    logger = RunLogger(args.runs_dir, "q2_module_mlp", args.run_name, vars(args), tensorboard=False)
    for epoch in range(1, args.epochs + 1):
        train_stats = train(model, optimizer, data.train_images, data.train_labels, args.batch_size, generator,
                            max_batches)
        test_stats = test(model, data.test_images, data.test_labels, max_batches)
        print(f"epoch {epoch:3d}/{args.epochs}  train loss {train_stats.loss:.4f} acc "
              f"{100 * train_stats.accuracy:6.2f}%  test loss {test_stats.loss:.4f} acc "
              f"{100 * test_stats.accuracy:6.2f}%", flush=True)
        logger.log_epoch(epoch, {"Loss/train": train_stats.loss, "Accuracy/train": train_stats.accuracy,
                                 "Loss/test": test_stats.loss, "Accuracy/test": test_stats.accuracy})
    logger.save(data=data.source)
    return test_stats


if __name__ == "__main__":
    main()
