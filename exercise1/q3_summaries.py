"""Exercise 1 Q3: the Q2 training with TensorBoard summaries.

Besides the training loss and accuracy, the two other quantities worth keeping are the **test** loss and
the **test** accuracy: only the gap between train and test curves shows over-fitting, and the test
accuracy is the number the model is judged on. The script also logs the **validation** curves (the last
10,000 training digits, never trained on): a choice made while training, such as the number of epochs,
is read on them, so that the test accuracy stays an unbiased estimate. Tags, one point per epoch
(``global_step`` = epoch, from 1), under ``runs/q3_summaries/<run>``: ``Loss/train``, ``Accuracy/train``,
``Loss/test``, ``Accuracy/test``, ``Loss/val``, ``Accuracy/val``. ``metrics.json`` beside the event file
keeps the same values for the report.

Run: ``python exercise1/q3_summaries.py`` then ``tensorboard --logdir runs/q3_summaries``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.q2_module_mlp import Net, test, train  # noqa: E402
from utils.mnist import add_mnist_arguments, mnist_loaders, prepare_mnist_run  # noqa: E402
from utils.training import DRY_RUN_BATCHES, RunLogger, add_training_arguments, parse_training_args  # noqa: E402


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
    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    # The run folder runs/q3_summaries/<run-name> (a new one per run) and its metrics.json for the report.
    run = RunLogger(args.runs_dir, "q3_summaries", args.run_name, vars(args), tensorboard=False,
                    stop_on_divergence=True)
    run.save(data=data.describe())
    print(f"TensorBoard: tensorboard --logdir {run.directory.parent}")

    # BEGIN SOLUTION
    writer = SummaryWriter(log_dir=str(run.directory))
    metrics: dict[str, float] = {}
    for epoch in range(1, args.epochs + 1):
        train_loss, train_accuracy = train(model, device, loaders.train, optimizer)
        val_loss, val_accuracy = test(model, device, loaders.val)
        test_loss, test_accuracy = test(model, device, loaders.test)
        writer.add_scalar("Loss/train", train_loss, epoch)
        writer.add_scalar("Accuracy/train", train_accuracy, epoch)
        writer.add_scalar("Loss/test", test_loss, epoch)
        writer.add_scalar("Accuracy/test", test_accuracy, epoch)
        writer.add_scalar("Loss/val", val_loss, epoch)
        writer.add_scalar("Accuracy/val", val_accuracy, epoch)
        writer.flush()
        metrics = {"Loss/train": train_loss, "Accuracy/train": train_accuracy, "Loss/val": val_loss,
                   "Accuracy/val": val_accuracy, "Loss/test": test_loss, "Accuracy/test": test_accuracy}
        run.log_epoch(epoch, metrics, total_epochs=args.epochs)  # metrics.json and the epoch's line
    writer.close()
    # END SOLUTION
    run.close()
    return metrics


if __name__ == "__main__":
    main()
