"""Checkpoint after every epoch, and ``--resume``, for scripts that write their own epoch loop.

``checkpoints/<script>/<run-name>.pt`` holds the epoch just finished, the ``state_dict`` of every stateful
object passed (model, optimizer, scheduler) and the run's config. ``--resume --run-name NAME`` reloads it
and the script goes on with the next epoch; as each epoch's batches depend only on ``(seed, epoch)``, the
resumed run ends where an uninterrupted one would. Every problem is one line naming the flag or the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from utils.io import load_checkpoint, save_checkpoint
from utils.training import ensure_writable_folder


def checkpoint_path(args: argparse.Namespace, script: str, run_name: str) -> Path:
    """``<--checkpoint-dir>/<script>/<run_name>.pt``, its folder created and checked writable before training."""
    return ensure_writable_folder(Path(args.checkpoint_dir) / script, "--checkpoint-dir") / f"{run_name}.pt"


def resume_epoch(args: argparse.Namespace, path: Path, states: dict[str, Any], settings: tuple[str, ...]) -> int:
    """Load ``path`` into ``states`` under ``--resume`` and return the last finished epoch (0 otherwise).

    Args:
        states: name -> object with ``load_state_dict`` (saved under the same names by :func:`save_epoch`).
        settings: flag names that must equal the checkpoint's (a different model or schedule cannot continue).
    """
    if not args.resume:
        return 0
    try:
        saved = load_checkpoint(path)
    except FileNotFoundError:
        raise SystemExit(f"error: --resume: no checkpoint {path} (run without --resume to start run "
                         f"{args.run_name!r})") from None
    except ValueError as error:
        raise SystemExit(f"error: --resume: {error}") from None
    if not all(name in saved for name in ("epoch", "config", *states)):
        raise SystemExit(f"error: --resume: {path} is not a checkpoint of this script (expected epoch, config, "
                         f"{', '.join(states)})")
    for name in settings:
        if name not in saved["config"] and getattr(args, name) is not None:
            raise SystemExit(f"error: --resume: {path} has no --{name.replace('_', '-')} setting: not a checkpoint "
                             f"of this script")
        if saved["config"].get(name) != getattr(args, name):
            raise SystemExit(f"error: --resume: {path} was trained with --{name.replace('_', '-')} "
                             f"{saved['config'].get(name)}, not {getattr(args, name)}")
    try:
        for name, state in states.items():
            state.load_state_dict(saved[name])
    except (RuntimeError, KeyError, ValueError) as error:
        raise SystemExit(f"error: --resume: {path}: its {name} does not fit ({str(error).splitlines()[0]})") from None
    print(f"Resumed from {path} after epoch {saved['epoch']}")
    return int(saved["epoch"])


def save_epoch(path: Path, epoch: int, states: dict[str, Any], config: dict[str, Any]) -> None:
    """Atomically save ``epoch``, every ``states[name].state_dict()`` and ``config``."""
    save_checkpoint(path, {"epoch": epoch, "config": config,
                           **{name: state.state_dict() for name, state in states.items()}})


def keep_final_metrics(logger: Any) -> None:
    """A ``RunLogger`` resumed after its last epoch logs no epoch: keep that epoch's values as its final ones
    (``metrics.json`` would otherwise lose them)."""
    if not logger.final and logger.history:
        logger.final = {key: value for key, value in logger.history[-1].items() if key != "epoch"}
