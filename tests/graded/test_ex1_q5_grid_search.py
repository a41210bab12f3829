"""Ex1 Q5: the Optuna grid runner fills Tables 1 and 2, each cell exactly once, and resumes for free.

The script runs as a student would run it (``python exercise1/q5_grid_search.py ...``, a subprocess: its
workers are separate processes) on a tiny 2 x 2 grid per table, a tiny MNIST, one epoch of two batches.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from autograder.loader import SubmissionError
from reference import mnist

pytestmark = pytest.mark.timeout(330, method="signal")
FILE = "exercise1/q5_grid_search.py"
LRS, WEIGHT_DECAYS, BATCH_SIZES = (0.1, 0.01), (0.01, 0.001), (16, 32)
RUN_SECONDS = 300
FILLED = re.compile(r"^\d+(\.\d+)?( \(diverged\))?$")


def grid_command(submission, out: Path, workers: int) -> list[str]:
    script = submission.path(FILE)
    if not script.is_file():
        raise SubmissionError(f"missing file {FILE}")
    data_root = out.parent / "mnist"
    if not data_root.is_dir():
        mnist.write_tiny_mnist(data_root)
    return [sys.executable, str(script), "--dry-run", "--device", "cpu", "--seed", "0", "--table", "both",
            "--data-root", str(data_root), "--train-size", "0", "--workers", str(workers), "--out", str(out),
            "--storage", str(out / "journal.log"),
            "--lrs", *map(str, LRS), "--weight-decays", *map(str, WEIGHT_DECAYS),
            "--batch-sizes", *map(str, BATCH_SIZES)]


def run_grid(submission, workdir: Path, workers: int) -> subprocess.CompletedProcess:
    """Run the grid script from an empty folder, on a tiny MNIST (--data-root): only the grid is graded."""
    env = {**os.environ, "PYTHONPATH": str(submission.root)}
    # Its own session, so that a timeout ends the script and the worker processes it started, together.
    process = subprocess.Popen(grid_command(submission, workdir / "grid", workers), cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Timeout (>{RUN_SECONDS}s) from the grid run: {FILE} did not finish the tiny grid")
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left: a hung script or workers
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        error = next((line for line in reversed(lines) if re.match(r"^\w*(Error|Exception|Exit)\b|^error:", line)),
                     lines[-1] if lines else "no output")
        raise AssertionError(f"{FILE} exited with code {done.returncode}: {error.strip()}")
    return done


@pytest.fixture(scope="module")
def grid_run(submission, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid")
    run_grid(submission, workdir, workers=2)
    try:
        check_tables_filled_once(workdir / "grid")
    except AssertionError as error:  # kept for the re-run test, which has nothing to check then
        return workdir, error
    return workdir, None


def trials_per_cell(journal: Path) -> dict[str, Counter]:
    """COMPLETE trials per grid cell, per study, read from the Optuna journal itself."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    counts = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "COMPLETE"]
        counts[summary.study_name] = Counter(tuple(sorted(trial.params.items())) for trial in complete)
    return counts


def read_table(path: Path) -> list[list[str]]:
    assert path.is_file(), f"no {path.name} under --out"
    with open(path, newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def failure_details(out: Path) -> str:
    """The first error a failed cell recorded, when the script's results.json keeps one."""
    results = out / "results.json"
    if results.is_file():
        match = re.search(r'"error": "([^"]+)"', results.read_text())
        if match:
            return f" ({match.group(1)})"
    return ""


def check_tables_filled_once(out: Path) -> None:
    for name, rows in (("table1.csv", WEIGHT_DECAYS), ("table2.csv", BATCH_SIZES)):
        table = read_table(out / name)
        header = [float(value) for value in table[0][1:]]
        assert header == list(LRS), f"{name}: columns {table[0][1:]}, expected the learning rates {list(LRS)}"
        assert [float(row[0]) for row in table[1:]] == list(rows), \
            f"{name}: rows {[row[0] for row in table[1:]]}, expected {list(rows)}"
        empty = [f"{row[0]} x lr {lr}: {text!r}" for row in table[1:] for lr, text in zip(LRS, row[1:])
                 if not FILLED.match(text.strip())]
        assert not empty, f"{name}: cells not filled with an accuracy: {', '.join(empty)}{failure_details(out)}"
    counts = trials_per_cell(out / "journal.log")
    trained = Counter()
    for cells in counts.values():
        trained.update(cells)
    expected = {tuple(sorted({"lr": lr, "weight_decay": wd}.items())) for lr in LRS for wd in WEIGHT_DECAYS} | \
               {tuple(sorted({"lr": lr, "batch_size": bs}.items())) for lr in LRS for bs in BATCH_SIZES}
    twice = {cell: count for cell, count in trained.items() if count != 1}
    assert not twice, f"cells trained more than once: {twice}"
    assert set(trained) == expected, f"trained cells {sorted(trained)} differ from the grid {sorted(expected)}"


def test_tiny_grid_fills_every_cell_once(grid_run):
    """A 2 x 2 grid per table with 2 workers: every cell of table1.csv/table2.csv filled, each trained once."""
    _, problem = grid_run
    if problem is not None:
        raise problem


def test_rerun_trains_nothing_new(submission, grid_run):
    """Re-running the same grid finds every cell done: no new trial, the same tables."""
    workdir, problem = grid_run
    assert problem is None, f"the first run did not fill the grid, nothing to resume: {problem}"
    out = workdir / "grid"
    before = {name: (out / name).read_text() for name in ("table1.csv", "table2.csv")}
    trials_before = trials_per_cell(out / "journal.log")
    run_grid(submission, workdir, workers=1)
    assert trials_per_cell(out / "journal.log") == trials_before, "the re-run trained cells again"
    for name, text in before.items():
        assert (out / name).read_text() == text, f"{name} changed on the re-run"
