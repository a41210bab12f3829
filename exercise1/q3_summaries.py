"""Exercise 1 Q3: the Q2 training with TensorBoard summaries.

Besides the training loss and accuracy, the two other quantities worth keeping are the **test** loss
and the **test** accuracy: only the gap between train and test curves shows over-fitting, and the
test accuracy is the number the model is judged on. Logged tags, under ``runs/q3_summaries/<run>``:

- per epoch: ``Loss/train``, ``Accuracy/train``, ``Loss/test``, ``Accuracy/test``, ``LearningRate``;
- per iteration: ``Loss/train_step``;
- the same per-epoch values in ``metrics.json`` beside the event file (read by the report builder).

Run: ``python exercise1/q3_summaries.py`` then ``tensorboard --logdir runs/q3_summaries``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from exercise1.q2_module_mlp import Net  # noqa: E402
from utils.mnist import add_mnist_arguments, prepare_mnist_run  # noqa: E402
from utils.training import (  # noqa: E402
    DRY_RUN_BATCHES,
    RunLogger,
    add_training_arguments,
    fit_classifier,
    parse_training_args,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser, epochs=10, batch_size=64, lr=0.01, weight_decay=1e-3, momentum=0.9)
    add_mnist_arguments(parser)
    return parse_training_args(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    # BEGIN SOLUTION
    args = parse_args(argv)
    device, data = prepare_mnist_run(args)

    model = Net().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                momentum=args.momentum)
    logger = RunLogger(args.runs_dir, "q3_summaries", args.run_name, vars(args))
    print(f"TensorBoard: tensorboard --logdir {logger.directory.parent}")
    metrics = fit_classifier(
        model, optimizer, data.train_images, data.train_labels, data.test_images, data.test_labels,
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, logger=logger,
        max_batches=DRY_RUN_BATCHES if args.dry_run else None, config=logger.config,
    )
    logger.save(data=data.source)
    logger.close()
    return metrics
    # END SOLUTION


if __name__ == "__main__":
    main()
