"""Plumbing every training script shares: flags, device, seeds, run folders, logging, checkpoints.

No training loop lives here: each question's script holds its own (Exercise 1: ``train``/``test`` of
``exercise1/q2_module_mlp.py``). What is here only moves files and numbers around them:

- ``RunLogger``: the run folder ``runs/<script>/<run>/`` (unique, locked while the run lives), TensorBoard
  summaries and ``metrics.json`` (strict JSON, rewritten atomically after each epoch);
- checkpoints: folders checked writable before the first step, saves that fail in one line;
- a non-finite loss ends the run in one line, the run marked ``diverged``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from utils.io import process_alive, save_checkpoint, write_json_atomic

DRY_RUN_BATCHES = 2
LOCK_FILE = ".lock"


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
    group.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")
    group.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto picks CUDA when available"
    )
    group.add_argument(
        "--dry-run", action="store_true",
        help=f"{DRY_RUN_BATCHES} batches per epoch and 1 epoch unless --epochs is given: checks the code path",
    )
    add_output_arguments(parser)


def parse_training_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse flags added by ``add_training_arguments``, settle ``--epochs``, check the numbers and that
    ``--resume`` names the run it continues."""
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 1 if args.dry_run else args.default_epochs
    del args.default_epochs
    check_positive(args, "epochs", "batch_size", "lr")
    check_non_negative(args, "seed", "weight_decay", "momentum")
    if getattr(args, "resume", False) and args.run_name is None:
        raise SystemExit("error: --resume needs --run-name (the run to continue)")
    return args


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runs-dir``, ``--run-name``, ``--checkpoint-dir`` and ``--resume``."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--runs-dir", default="runs", help="TensorBoard and metrics root (default runs/)")
    group.add_argument("--run-name", default=None,
                       help="run folder name (default: date and time to the microsecond, a new folder)")
    group.add_argument("--checkpoint-dir", default="checkpoints", help="checkpoint folder (default checkpoints/)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run --run-name from its last checkpoint")


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """One-line error for a flag that must be a positive number."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be > 0, got {value}")


def check_non_negative(args: argparse.Namespace, *names: str) -> None:
    """One-line error for a flag that must be a number >= 0 (flags the parser does not have are skipped)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not value >= 0:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 0, got {value}")


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
    """Date and time to the microsecond, e.g. ``20250301-141502-123456``."""
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}"


def epoch_line(epoch: int, epochs: int, scalars: dict[str, float]) -> str:
    """``epoch   3/10  train loss 0.1234 acc  96.50%  val ...  test ...``: the splits ``scalars`` has."""
    parts = [f"epoch {epoch:3d}/{epochs}"]
    for split in ("train", "val", "test"):
        if f"Loss/{split}" in scalars and f"Accuracy/{split}" in scalars:
            parts.append(f"{split} loss {scalars[f'Loss/{split}']:.4f} acc {100 * scalars[f'Accuracy/{split}']:6.2f}%")
    return "  ".join(parts)


def configure_cpu_threads(threads: int | None) -> None:
    """Limit PyTorch's intra-op threads (used to keep parallel workers from oversubscribing cores)."""
    if threads is not None and threads > 0:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


# --------------------------------------------------------------------------- batching (the sibling labs)
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


# --------------------------------------------------------------------------- run folders
def create_run_folder(parent: Path, run_name: str | None) -> Path:
    """``parent/run_name``, or a new folder named after the time when ``run_name`` is None.

    A new folder is made with ``exist_ok=False``: two runs started in the same microsecond get
    ``<time>`` and ``<time>-1``, never one folder. A named folder may exist (a resumed run).
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if run_name is not None:
            (parent / run_name).mkdir(parents=True, exist_ok=True)
            return parent / run_name
        base = default_run_name()
        for attempt in range(1000):
            folder = parent / (base if attempt == 0 else f"{base}-{attempt}")
            try:
                folder.mkdir(exist_ok=False)
                return folder
            except FileExistsError:
                continue
    except OSError as error:
        raise SystemExit(f"error: --runs-dir: cannot create {parent / (run_name or '')} "
                         f"({error.strerror or error})") from None
    raise SystemExit(f"error: --runs-dir: no free run folder name under {parent}")


def acquire_run_lock(folder: Path) -> Path:
    """Mark ``folder`` as held by this process (``.lock`` holds its pid); refuse one held by a live process.

    A lock left by a process that has died (killed) is taken over. Creating the lock is also the check
    that the folder is writable, before any training step.
    """
    lock = folder / LOCK_FILE
    pending = folder / f"{LOCK_FILE}.{os.getpid()}.tmp"
    try:
        pending.write_text(f"{os.getpid()}\n")
        for _ in range(3):
            try:
                os.link(pending, lock)  # atomic: fails if the lock exists, and it never exists half-written
                return lock
            except FileExistsError:
                owner = lock.read_text().strip()
                if owner.isdigit() and int(owner) != os.getpid() and process_alive(int(owner)):
                    raise SystemExit(f"error: --run-name {folder.name}: {folder} is in use by a running process "
                                     f"(pid {owner}); wait for it to end or choose another --run-name") from None
                lock.unlink(missing_ok=True)  # left by a dead process, or by this one
    except OSError as error:
        raise SystemExit(f"error: cannot write in {folder} ({error.strerror or error})") from None
    finally:
        pending.unlink(missing_ok=True)
    raise SystemExit(f"error: could not lock {folder}: another process keeps taking it")


def ensure_writable_folder(folder: str | os.PathLike, flag: str) -> Path:
    """Create ``folder`` and check a file can be written in it, before training starts (one-line error)."""
    folder = Path(folder)
    probe = folder / f".write-check.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"error: {flag} {folder}: not writable ({error.strerror or error})") from None
    return folder


def claim_run_folder(runs_dir: str | os.PathLike, script: str, run_name: str | None,
                     resume: bool = False) -> tuple[str, Path]:
    """The run's name and its folder ``runs_dir/script/run_name``, created for this run only.

    Without ``run_name`` a new time-named folder is claimed (``create_run_folder``). A given ``run_name``
    must be new, unless ``resume`` continues that run: an earlier run's results are never overwritten.
    """
    parent = ensure_writable_folder(Path(runs_dir) / script, "--runs-dir")
    if run_name is None:
        if resume:
            raise SystemExit("error: --resume needs --run-name (the run to continue)")
        folder = create_run_folder(parent, None)
        return folder.name, folder
    try:
        (parent / run_name).mkdir(exist_ok=resume)
    except FileExistsError:
        raise SystemExit(f"error: --run-name {run_name}: {parent / run_name} already exists (another run's "
                         "folder); choose another name, or pass --resume to continue that run") from None
    return run_name, parent / run_name


def checkpoint_path_for(args: argparse.Namespace, script: str, run_name: str) -> Path:
    return Path(args.checkpoint_dir) / script / f"{run_name}.pt"


def save_run_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint atomically; a failed write (disk full, ...) ends the run in one line, the previous
    checkpoint intact."""
    try:
        save_checkpoint(path, state)
    except OSError as error:
        raise SystemExit(f"error: could not save the checkpoint {path} ({error.strerror or error}); "
                         f"the previous one is unchanged") from None


# --------------------------------------------------------------------------- logging
class RunLogger:
    """A run folder ``runs/<script>/<run_name>`` with TensorBoard summaries and a ``metrics.json``.

    ``metrics.json`` holds the run's config, one row per epoch and the final values; it is rewritten
    atomically after every epoch so the report builder can always read it. A non-finite number is written
    ``null``. A folder that already holds a ``metrics.json`` (a resumed run) keeps its epochs and final
    values. While the run lives, the folder holds a ``.lock`` with its pid, and another run asking for the
    same folder is refused.

    Args:
        tensorboard: also write TensorBoard summaries (False: ``metrics.json`` only).
        purge_step: TensorBoard hides earlier points at this step and after (a resumed run's next epoch),
            so a resumed run shows each step once.
        stop_on_divergence: ``log_epoch`` ends the run when a loss is not finite (``stop_if_diverged``).
    """

    def __init__(self, runs_dir: str | Path, script: str, run_name: str | None, config: dict[str, Any],
                 tensorboard: bool = True, purge_step: int | None = None, stop_on_divergence: bool = False):
        self.script = script
        self.directory = create_run_folder(Path(runs_dir) / script, run_name)
        self.run_name = run_name or self.directory.name
        self.lock = acquire_run_lock(self.directory)
        atexit.register(self.release)
        self.stop_on_divergence = stop_on_divergence
        self.config = {key: value for key, value in config.items() if isinstance(value, (int, float, str, bool))}
        self.history: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}
        metrics_path = self.directory / "metrics.json"
        if metrics_path.is_file():  # a resumed run keeps its earlier epochs and results
            try:
                previous = json.loads(metrics_path.read_text())
                self.history = list(previous.get("history", []))
                self.final = dict(previous.get("final") or {})
                self.extra = {key: value for key, value in previous.items()
                              if key not in ("script", "run_name", "config", "history", "final")}
            except (ValueError, AttributeError, TypeError):
                print(f"warning: {metrics_path} is not readable JSON: it is rewritten", flush=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.directory), purge_step=purge_step)

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)

    def log_epoch(self, epoch: int, scalars: dict[str, float], total_epochs: int | None = None) -> None:
        """Write the epoch's scalars to TensorBoard and ``metrics.json`` (a resumed epoch replaces its row).

        With ``total_epochs``, also print the epoch's line (``epoch_line``).
        """
        if total_epochs is not None:
            print(epoch_line(epoch, total_epochs, scalars), flush=True)
        self.log_step(epoch, scalars)
        if self.writer is not None:
            self.writer.flush()
        self.history = [row for row in self.history if row["epoch"] < epoch]
        self.history.append({"epoch": epoch, **scalars})
        self.final = dict(scalars)
        self.save()
        if self.stop_on_divergence:
            self.stop_if_diverged(epoch, scalars)

    def stop_if_diverged(self, epoch: int, scalars: dict[str, float]) -> None:
        """End the run in one line (exit status 1) when a loss of ``scalars`` (``Loss/...``) is NaN or infinite.

        The epoch's row goes to ``metrics.json`` (non-finite values as ``null``) with ``"status": "diverged"``.
        """
        losses = {tag: value for tag, value in scalars.items() if tag.startswith("Loss/")}
        bad = {tag: value for tag, value in losses.items() if not math.isfinite(value)}
        if not bad:
            return
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history = [row for row in self.history if row["epoch"] < epoch] + [{"epoch": epoch, **scalars}]
        self.save(status="diverged", diverged_epoch=epoch)
        self.close()
        tag, value = next(iter(bad.items()))
        raise SystemExit(f"error: epoch {epoch}: {tag} is {value}, training diverged (try a smaller --lr); "
                         f"{self.directory / 'metrics.json'} marks the run as diverged")

    def save(self, **extra: Any) -> None:
        """Rewrite ``metrics.json``; ``extra`` entries are kept for the later saves too. A failed write ends
        the run in one line."""
        self.extra.update(extra)
        try:
            write_json_atomic(
                self.directory / "metrics.json",
                {"script": self.script, "run_name": self.run_name, "config": self.config,
                 "history": self.history, "final": self.final, **self.extra},
            )
        except OSError as error:
            raise SystemExit(f"error: could not write {self.directory / 'metrics.json'} "
                             f"({error.strerror or error})") from None

    def release(self) -> None:
        """Remove the run's lock if this process still holds it."""
        try:
            if self.lock.read_text().strip() == str(os.getpid()):
                self.lock.unlink()
        except OSError:
            pass

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.release()
