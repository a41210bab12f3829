"""Output folders of the Exercise 2 scripts: one folder per run, never shared, checked writable up front.

Two runs started in the same second must not write into one folder, so a default run name carries the
time to the microsecond and the folder is created with ``exist_ok=False`` (an atomic claim: of two
processes creating the same folder, one fails and takes the next suffix).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def timestamp_run_name() -> str:
    """``YYYYmmdd-HHMMSS-ffffff``: the local time to the microsecond."""
    now = time.time()
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + f"-{int(now % 1 * 1e6):06d}"


def check_writable(folder: str | os.PathLike, flag: str) -> Path:
    """Create ``folder`` if needed and check that a file can be written there; one-line ``SystemExit`` otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SystemExit(f"error: {flag} {folder}: cannot write there ({reason})") from None
    return folder


def claim_run_folder(runs_dir: str | os.PathLike, script: str, run_name: str | None,
                     resume: bool = False) -> tuple[str, Path]:
    """The run's name and folder ``runs_dir/script/run_name``, created for this run only.

    Without ``run_name`` a new timestamp name is claimed (with a ``-1``, ``-2``... suffix if another run
    took it first). A given ``run_name`` must be new, unless ``resume`` continues that run.
    """
    parent = check_writable(Path(runs_dir) / script, "--runs-dir")
    if resume:
        if run_name is None:
            raise SystemExit("error: --resume needs --run-name (the run to continue)")
        (parent / run_name).mkdir(exist_ok=True)
        return run_name, parent / run_name
    candidates = [run_name] if run_name else [timestamp_run_name()]
    if not run_name:
        candidates += [f"{candidates[0]}-{suffix}" for suffix in range(1, 100)]
    for name in candidates:
        try:
            (parent / name).mkdir()
            return name, parent / name
        except FileExistsError:
            continue
    raise SystemExit(f"error: --run-name {run_name}: {parent / str(run_name)} already exists (another run's "
                     "folder); choose another name, or pass --resume to continue that run")
