"""The training machinery every script shares: flags, device, seeds, the epoch loop, logging, checkpoints.

Written once here so that each question's script only holds what the question is about.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.io import load_checkpoint, save_checkpoint, write_json_atomic

DRY_RUN_BATCHES = 2
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------- flags, device, seeds
def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float | None = None,
    momentum: float | None = None,
) -> None:
    """Add the flags shared by the training scripts, with the script's own defaults."""
    group = parser.add_argument_group("training")
    # None until parsed: parse_training_args fills in the script's default, or 1 under --dry-run.
    group.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {epochs})")
    parser.set_defaults(default_epochs=epochs)
    group.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default {batch_size})")
    group.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    if weight_decay is not None:
        group.add_argument(
            "--weight-decay", type=float, default=weight_decay, help=f"L2 weight decay (default {weight_decay})"
        )
    if momentum is not None:
        group.add_argument("--momentum", type=float, default=momentum, help=f"SGD momentum (default {momentum})")
    group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    group.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when available"
    )
    group.add_argument(
        "--dry-run", action="store_true",
        help=f"{DRY_RUN_BATCHES} batches per epoch and 1 epoch unless --epochs is given: checks the code path",
    )
    add_output_arguments(parser)


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse flags added by ``add_training_arguments``, settle ``--epochs`` and check the numbers."""
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.dry_run else args.default_epochs
    del args.default_epochs
    check_positive(args, "epochs", "batch_size", "lr")
    return args


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runs-dir``, ``--run-name``, ``--checkpoint-dir`` and ``--resume``."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--runs-dir", default="runs", help="TensorBoard and metrics root (default runs/)")
    group.add_argument("--run-name", default=None, help="run folder name (default: date and time)")
    group.add_argument("--checkpoint-dir", default="checkpoints", help="checkpoint folder (default checkpoints/)")
    group.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """One-line error for a flag that must be a positive number."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be > 0, got {value}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` gives CUDA when available, else CPU; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def progress_disabled() -> bool:
    """Progress bars only when a person watches: quiet in logs, pipes and CI."""
    return not sys.stdout.isatty()


def default_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------- batching and epochs
def minibatch_indices(
    num_items: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[torch.Tensor]:
    """Yield index tensors covering ``range(num_items)`` in batches (shuffled with ``generator``)."""
    order = torch.randperm(num_items, generator=generator) if shuffle else torch.arange(num_items)
    order = order.to(device)
    for start in range(0, num_items, batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(num_items: int, batch_size: int, max_batches: int | None = None) -> int:
    """Optimiser steps in one epoch (the last batch may be partial), capped by ``max_batches``."""
    steps = -(-num_items // batch_size)
    return steps if max_batches is None else min(steps, max_batches)


@dataclass
class EpochStats:
    """Mean loss and accuracy (in [0, 1]) over ``num_samples`` samples."""

    loss: float
    accuracy: float
    num_samples: int


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    augment: Augment | None = None,
    scheduler: Any = None,
    max_batches: int | None = None,
    on_step: Callable[[float], None] | None = None,
    description: str = "train",
) -> EpochStats:
    """One pass of minibatch training over device-resident ``images``/``labels``.

    ``scheduler`` (if any) steps after every batch; ``on_step(loss)`` sees each batch loss
    (for per-iteration summaries). Returns the running mean loss and accuracy of the epoch.
    """
    from tqdm import tqdm

    model.train()
    total_loss = torch.zeros((), device=images.device)
    total_correct = torch.zeros((), device=images.device, dtype=torch.long)
    seen = 0
    batches = minibatch_indices(len(labels), batch_size, shuffle=True, generator=generator, device=images.device)
    num_batches = steps_per_epoch(len(labels), batch_size, max_batches)
    for step, index in enumerate(tqdm(batches, total=num_batches, desc=description, leave=False,
                                      disable=progress_disabled())):
        if step == num_batches:
            break
        inputs, targets = images[index], labels[index]
        if augment is not None:
            inputs = augment(inputs, generator)
        logits = model(inputs)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch_loss = loss.detach()
        total_loss += batch_loss * len(targets)
        total_correct += (logits.detach().argmax(1) == targets).sum()
        seen += len(targets)
        if on_step is not None:
            on_step(batch_loss.item())
    return EpochStats(total_loss.item() / max(seen, 1), total_correct.item() / max(seen, 1), seen)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    max_batches: int | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> EpochStats:
    """Mean loss and accuracy of ``model`` in eval mode on ``images``/``labels``."""
    model.eval()
    total_loss, total_correct, seen = 0.0, 0, 0
    for step, index in enumerate(minibatch_indices(len(labels), batch_size, shuffle=False, device=images.device)):
        if max_batches is not None and step == max_batches:
            break
        logits = model(images[index])
        targets = labels[index]
        total_loss += loss_fn(logits, targets, reduction="sum").item()
        total_correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
    return EpochStats(total_loss / max(seen, 1), total_correct / max(seen, 1), seen)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total_steps: int,
                           warmup_fraction: float = 0.15) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up from 0.04 to 1, then a cosine decay to 0.

    A ``LambdaLR`` saves only its step count, so a run resumed with a different ``--epochs`` follows
    the schedule of the new length instead of the saved one.
    """
    import math

    warmup_steps = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return 0.04 + 0.96 * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- logging
class RunLogger:
    """TensorBoard summaries under ``runs/<script>/<run_name>`` plus a ``metrics.json`` beside them.

    ``metrics.json`` holds the run's config, one row per epoch and the final values; it is rewritten
    atomically after every epoch so the report builder can always read it. With ``tensorboard=False``
    only ``metrics.json`` is written (the scripts that come before the question on summaries).
    """

    def __init__(self, runs_dir: str | Path, script: str, run_name: str | None, config: dict[str, Any],
                 tensorboard: bool = True):
        self.script = script
        self.run_name = run_name or default_run_name()
        self.directory = Path(runs_dir) / script / self.run_name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.directory))
        self.config = {key: value for key, value in config.items() if isinstance(value, (int, float, str, bool))}
        self.history: list[dict[str, float]] = []
        self.final: dict[str, float] = {}
        metrics_path = self.directory / "metrics.json"
        if metrics_path.is_file():  # a resumed run keeps its earlier epochs
            import json

            previous = json.loads(metrics_path.read_text())
            self.history = previous.get("history", [])

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)

    def log_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        """Write the epoch's scalars to TensorBoard and ``metrics.json`` (a resumed epoch replaces its row)."""
        self.log_step(epoch, scalars)
        if self.writer is not None:
            self.writer.flush()
        self.history = [row for row in self.history if row["epoch"] < epoch]
        self.history.append({"epoch": epoch, **scalars})
        self.final = dict(scalars)
        self.save()

    def save(self, **extra: Any) -> None:
        write_json_atomic(
            self.directory / "metrics.json",
            {"script": self.script, "run_name": self.run_name, "config": self.config,
             "history": self.history, "final": self.final, **extra},
        )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- the classification loop
def checkpoint_path_for(args: argparse.Namespace, script: str, run_name: str) -> Path:
    return Path(args.checkpoint_dir) / script / f"{run_name}.pt"


def fit_classifier(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    logger: RunLogger | None = None,
    scheduler: Any = None,
    augment: Augment | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    checkpoint_path: Path | None = None,
    resume: bool = False,
    max_batches: int | None = None,
    config: dict[str, Any] | None = None,
    verbose: bool = True,
) -> dict[str, float]:
    """Train for ``epochs`` epochs, evaluating on the test set after each one.

    Logs ``Loss/train``, ``Accuracy/train``, ``Loss/test``, ``Accuracy/test`` and ``LearningRate`` per
    epoch and ``Loss/train_step`` per iteration; saves ``checkpoint_path`` after each epoch, and with
    ``resume`` continues after the last saved epoch. ``loss_fn`` is the training loss; the test loss is
    plain cross-entropy. The shuffling of epoch ``e`` depends only on
    ``(seed, e)``, so a resumed run sees the same batches as an uninterrupted one.

    Returns the last epoch's metrics (accuracies in [0, 1]).
    """
    start_epoch = 1
    if resume and checkpoint_path is not None and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=train_images.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
        if verbose:
            print(f"Resumed from {checkpoint_path} at epoch {start_epoch}")
    elif resume and verbose:
        print(f"--resume: no checkpoint at {checkpoint_path}, starting from scratch")

    generator = torch.Generator()
    metrics: dict[str, float] = {}
    epoch_steps = steps_per_epoch(len(train_labels), batch_size, max_batches)
    for epoch in range(start_epoch, epochs + 1):
        generator.manual_seed(seed * 100_003 + epoch)
        step_counter = [(epoch - 1) * epoch_steps]

        def log_iteration(loss: float) -> None:
            step_counter[0] += 1
            if logger is not None:
                logger.log_step(step_counter[0], {"Loss/train_step": loss})

        learning_rate = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        train_stats = train_one_epoch(
            model, optimizer, train_images, train_labels,
            batch_size=batch_size, generator=generator, loss_fn=loss_fn, augment=augment, scheduler=scheduler,
            max_batches=max_batches, on_step=log_iteration, description=f"epoch {epoch}/{epochs}",
        )
        train_seconds = time.perf_counter() - started
        test_stats = evaluate_classifier(model, test_images, test_labels, max_batches=max_batches)
        metrics = {
            "Loss/train": train_stats.loss,
            "Accuracy/train": train_stats.accuracy,
            "Loss/test": test_stats.loss,
            "Accuracy/test": test_stats.accuracy,
            "LearningRate": learning_rate,
            "Time/train_epoch_s": train_seconds,
        }
        if logger is not None:
            logger.log_epoch(epoch, metrics)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "config": config or {},
                "metrics": metrics,
            })
        if verbose:
            print(
                f"epoch {epoch:3d}/{epochs}  train loss {train_stats.loss:.4f} acc {100 * train_stats.accuracy:6.2f}%"
                f"  test loss {test_stats.loss:.4f} acc {100 * test_stats.accuracy:6.2f}%"
                f"  ({train_stats.num_samples / train_seconds:.0f} img/s)",
                flush=True,
            )
    return metrics


def configure_cpu_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads (used to keep parallel workers from oversubscribing cores)."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
