"""Exercise 1 Q2: the Q1 network as a PyTorch ``nn.Module``, trained by autograd and ``optim.SGD``.

Same model (784-128-10, sigmoid hidden layer), same loss (softmax cross-entropy), same optimiser settings,
same initial weights and same batches as the NumPy script of Q1: PyTorch computes the backward pass that
Q1 writes by hand, and the two scripts print the same curves (up to float32 rounding).

``train`` and ``test`` are the TP's loops; Q3 adds summaries around them and Q4 trains ResNet-18 with them.

Run: ``python exercise1/q2_module_mlp.py [--epochs 10]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from utils.mnist import add_mnist_arguments, mnist_loaders, prepare_mnist_run  # noqa: E402
from utils.training import DRY_RUN_BATCHES, RunLogger, add_training_arguments, parse_training_args  # noqa: E402


class Net(nn.Module):
    """784-128-10 MLP: ``FC1`` + sigmoid, then ``FC2`` giving the 10 class logits.

    Accepts ``(N, 1, 28, 28)`` images or ``(N, 784)`` vectors. The softmax lives in the loss
    (``F.cross_entropy``), which is both cheaper and numerically safer.
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


# BEGIN SOLUTION
def train(model: nn.Module, device: torch.device, train_loader, optimizer: torch.optim.Optimizer,
          scheduler=None) -> tuple[float, float]:
    """One epoch over ``train_loader``, an iterable of ``(images, labels)`` batches.

    ``scheduler`` (optional) steps after every batch. Returns the epoch's mean loss per sample and its
    accuracy in [0, 1], both from the predictions made before each step.
    """
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        output = model(images)
        loss = F.cross_entropy(output, labels)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (output.argmax(dim=1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen
# END SOLUTION


# BEGIN SOLUTION
def test(model: nn.Module, device: torch.device, test_loader) -> tuple[float, float]:
    """Mean cross-entropy per sample and accuracy in [0, 1] on ``test_loader``, without gradients."""
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for images, labels in test_loader:
            images, labels = images.to(device), labels.to(device)
            output = model(images)
            total_loss += F.cross_entropy(output, labels, reduction="sum").item()
            correct += (output.argmax(dim=1) == labels).sum().item()
            seen += len(labels)
    return total_loss / seen, correct / seen
# END SOLUTION


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser, epochs=10, batch_size=64, lr=0.01, weight_decay=1e-3, momentum=0.9)
    add_mnist_arguments(parser)
    return parse_training_args(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device, data = prepare_mnist_run(args, validation=True)
    loaders = mnist_loaders(data, args.batch_size, seed=args.seed,
                            max_batches=DRY_RUN_BATCHES if args.dry_run else None)

    model = Net().to(device)  # right after seeding: the initial weights of Q1's init_params(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    # Q2 prints its curves; it keeps them in metrics.json (no TensorBoard yet: that is Q3) for the report.
    run = RunLogger(args.runs_dir, "q2_module_mlp", args.run_name, vars(args), tensorboard=False,
                    stop_on_divergence=True)
    run.save(data=data.describe())
    metrics: dict[str, float] = {}
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        train_loss, train_accuracy = train(model, device, loaders.train, optimizer)
        seconds = time.perf_counter() - started
        test_loss, test_accuracy = test(model, device, loaders.test)
        metrics = {"Loss/train": train_loss, "Accuracy/train": train_accuracy,
                   "Loss/test": test_loss, "Accuracy/test": test_accuracy, "Time/train_epoch_s": seconds}
        run.log_epoch(epoch, metrics, total_epochs=args.epochs)  # prints the epoch's line too
    run.close()
    return metrics


if __name__ == "__main__":
    main()
