"""Exercise 1 Q5: the grid trains each distinct cell once, resumes, retries failures, measures honestly.

Most tests replace Q4's ``ResNet18`` and Q2's ``train``/``test`` in the script's module by stand-ins (as the
autograder does): ``fake_train`` records the cell each call trains (learning rate and weight decay read from
the optimizer, batch size from the batches it receives) and ``fake_test`` reports, for each cell, accuracies
written in this file, so every expected table below is built from those numbers, not by the code under
test. The data is a tiny MNIST in torchvision's layout whose splits are told apart by their labels:
training digits 0-6, validation (the end of the training file) 8, test 9.
"""

from __future__ import annotations

import csv
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

from exercise1 import q5_grid_search as q5
from utils.grid import GridStudy, cell_key, open_storage

LRS, WEIGHT_DECAYS, BATCH_SIZES = (0.5, 0.05, 0.005), (0.01, 0.001), (8, 64)
GRID_FLAGS = ["--lrs", *map(str, LRS), "--weight-decays", *map(str, WEIGHT_DECAYS),
              "--batch-sizes", *map(str, BATCH_SIZES)]
# Distinct cells (lr, weight decay, batch size), written out by hand: Table 1 at batch 64, Table 2 at weight
# decay 0.001; the three cells (lr, 0.001, 64) belong to both tables.
CELLS = [(0.5, 0.01, 64), (0.05, 0.01, 64), (0.005, 0.01, 64),
         (0.5, 0.001, 64), (0.05, 0.001, 64), (0.005, 0.001, 64),
         (0.5, 0.001, 8), (0.05, 0.001, 8), (0.005, 0.001, 8)]
# (validation accuracy, test accuracy) of each cell: the best test cell (0.05, 0.01, 64) is not the best
# validation cell (0.005, 0.001, 64), and (0.05, 0.001, 8) has the best validation of all but diverges.
ACCURACY = {(0.5, 0.01, 64): (0.30, 0.31), (0.05, 0.01, 64): (0.80, 0.99), (0.005, 0.01, 64): (0.70, 0.71),
            (0.5, 0.001, 64): (0.11, 0.12), (0.05, 0.001, 64): (0.85, 0.86), (0.005, 0.001, 64): (0.90, 0.91),
            (0.5, 0.001, 8): (0.10, 0.10), (0.05, 0.001, 8): (0.95, 0.96), (0.005, 0.001, 8): (0.60, 0.61)}
TRAIN_DIGITS, VAL_DIGIT, TEST_DIGIT = 7, 8, 9


# ----------------------------------------------------------------------------- data and stand-ins
def write_mnist(root: Path, train: int = 240, test: int = 30) -> Path:
    """IDX files in torchvision's layout: training digits 0-6 then a validation sixth of 8s, test all 9s."""
    rng = np.random.default_rng(0)
    validation = train // 6  # the end of the training file that utils.mnist holds out
    train_labels = np.concatenate([np.arange(train - validation) % TRAIN_DIGITS, np.full(validation, VAL_DIGIT)])
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)

    def header(*sizes: int) -> bytes:  # IDX: magic 0 0 8 (unsigned bytes) ndim, then big-endian sizes
        return bytes([0, 0, 8, len(sizes)]) + b"".join(size.to_bytes(4, "big") for size in sizes)

    for prefix, labels in (("train", train_labels), ("t10k", np.full(test, TEST_DIGIT))):
        images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header(len(labels), 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header(len(labels)) + labels.astype(np.uint8).tobytes())
    return root


class StandInNet(nn.Module):
    """Stands for ResNet18: tiny, with batch norm (a batch of one image fails in training mode, as in ResNet)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, stem: str = "imagenet"):
        super().__init__()
        self.linear = nn.Linear(784 * in_channels, num_classes)
        self.norm = nn.BatchNorm1d(num_classes)
        self.cell: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(torch.flatten(x, 1)))


class StandIns:
    """``ResNet18``, ``train`` and ``test`` for the script, and what they saw.

    ``behaviour[cell]`` changes what training a cell does: ``"nan"`` (loss NaN), ``"raise"`` (a RuntimeError),
    ``"fpe"`` (a FloatingPointError), ``"worse"`` (the training loss ends above its start).
    """

    START_LOSS, END_LOSS = 2.0, 1.0

    def __init__(self, behaviour: dict | None = None):
        self.behaviour = dict(behaviour or {})
        self.trained: list[tuple] = []
        self.batch_sizes: dict[tuple, list[int]] = {}

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "StandIns":
        monkeypatch.setattr(q5, "ResNet18", StandInNet)
        monkeypatch.setattr(q5, "train", self.train)
        monkeypatch.setattr(q5, "test", self.test)
        return self

    def train(self, model, device, loader, optimizer):
        model.train()
        batches = [len(labels) for images, labels in loader if model(images) is not None]  # forward: BN checks
        group = optimizer.param_groups[0]
        cell = (group["lr"], group["weight_decay"], batches[0])
        model.cell = cell
        self.trained.append(cell)
        self.batch_sizes.setdefault(cell, []).extend(batches)
        behaviour = self.behaviour.get(cell)
        if behaviour == "raise":
            raise RuntimeError("simulated crash")
        if behaviour == "fpe":
            raise FloatingPointError("simulated overflow")
        return (math.nan if behaviour == "nan" else 1.0), 0.5

    def test(self, model, device, loader):
        labels = torch.cat([batch_labels for _, batch_labels in loader])
        if bool((labels < TRAIN_DIGITS).all()):  # the training images that measure the loss
            if model.cell is None:
                return self.START_LOSS, 0.1
            worse = self.behaviour.get(model.cell) == "worse"
            return (self.START_LOSS + 1 if worse else self.END_LOSS), 0.5
        val_accuracy, test_accuracy = ACCURACY.get(model.cell, (0.5, 0.5))
        return 1.0, {VAL_DIGIT: val_accuracy, TEST_DIGIT: test_accuracy}[int(labels[0])]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No download, whatever the session sets: a grid without --data-root uses the embedded sample."""
    monkeypatch.setenv("SIAMESE_TP_OFFLINE", "1")


@pytest.fixture
def mnist(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


def grid(mnist: Path, out: Path, *flags: str) -> dict:
    """The grader's command line (in this process), plus ``flags``."""
    return q5.main(["--table", "both", *GRID_FLAGS, "--epochs", "1", "--train-size", "0", "--workers", "1",
                    "--out", str(out), "--data-root", str(mnist), "--device", "cpu", "--seed", "0", *flags])


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def expected_table(rows: tuple, row_of, marks: dict | None = None) -> list[list[str]]:
    """The CSV a table must be: test accuracies in %, ``(diverged)`` or ``failed`` from ``marks``."""
    marks = marks or {}
    lines = [["weight_decay \\ lr" if rows == WEIGHT_DECAYS else "batch_size \\ lr", *map(str, LRS)]]
    for row in rows:
        texts = []
        for lr in LRS:
            cell = row_of(row, lr)
            mark = marks.get(cell)
            texts.append("failed" if mark == "failed" else
                         f"{100 * ACCURACY[cell][1]:.2f}" + (" (diverged)" if mark == "diverged" else ""))
        lines.append([str(row), *texts])
    return lines


def table1(row, lr):
    return (lr, row, 64)


def table2(row, lr):
    return (lr, 0.001, row)


# ----------------------------------------------------------------------------- the contract's run
def test_each_cell_once_in_process_tables_in_tp_layout_best_on_validation_and_rerun_trains_nothing(
        mnist, tmp_path, monkeypatch):
    stand_ins = StandIns({(0.05, 0.001, 8): "nan"}).install(monkeypatch)
    results = grid(mnist, tmp_path / "grid")
    # Every distinct cell trained once, in this process (the stand-ins live only here), each with its own
    # batch size: a cell of both tables is not trained twice.
    assert Counter(stand_ins.trained) == Counter(CELLS)
    marks = {(0.05, 0.001, 8): "diverged"}
    assert read_csv(tmp_path / "grid" / "table1.csv") == expected_table(WEIGHT_DECAYS, table1, marks)
    assert read_csv(tmp_path / "grid" / "table2.csv") == expected_table(BATCH_SIZES, table2, marks)
    # Best on validation among cells that did not diverge, found here by brute force; its test accuracy reported.
    for key, of, rows, name in (("table1", table1, WEIGHT_DECAYS, "weight_decay"),
                                ("table2", table2, BATCH_SIZES, "batch_size")):
        candidates = [(row, lr) for row in rows for lr in LRS if of(row, lr) not in marks]
        row, lr = max(candidates, key=lambda cell: ACCURACY[of(*cell)][0])
        assert results["tables"][key]["best"] == {name: row, "lr": lr, "val_accuracy": ACCURACY[of(row, lr)][0],
                                                  "test_accuracy": ACCURACY[of(row, lr)][1]}
        bold = [line for line in (tmp_path / "grid" / f"{key}.md").read_text().splitlines()
                if line.startswith("|") and "**" in line]
        texts = [text.strip() for text in bold[0].strip("|").split("|")]
        assert len(bold) == 1 and texts[0] == str(row)
        assert texts[1 + LRS.index(lr)] == f"**{100 * ACCURACY[of(row, lr)][1]:.2f}**"
    assert results["complete"] and results["tables"]["table1"]["best"]["lr"] == 0.005  # not 0.05, the test's best

    before = {name: (tmp_path / "grid" / name).read_text() for name in ("table1.csv", "table2.csv", "results.json")}
    stand_ins.trained.clear()
    again = grid(mnist, tmp_path / "grid")
    assert stand_ins.trained == []
    assert again["cells"] == results["cells"]
    for name in ("table1.csv", "table2.csv"):
        assert (tmp_path / "grid" / name).read_text() == before[name]


def test_failed_cell_shows_no_number_is_never_best_or_complete_and_is_retried_on_rerun(mnist, tmp_path, monkeypatch):
    crashing = (0.005, 0.001, 64)  # the best validation cell of both tables, when it trains
    stand_ins = StandIns({crashing: "raise"}).install(monkeypatch)
    results = grid(mnist, tmp_path / "grid")
    assert Counter(stand_ins.trained) == Counter(CELLS)
    marks = {crashing: "failed"}
    assert read_csv(tmp_path / "grid" / "table1.csv") == expected_table(WEIGHT_DECAYS, table1, marks)
    assert read_csv(tmp_path / "grid" / "table2.csv") == expected_table(BATCH_SIZES, table2, marks)
    assert not results["complete"] and not results["tables"]["table1"]["complete"]
    entry = next(cell for cell in results["cells"]
                 if (cell["lr"], cell["weight_decay"], cell["batch_size"]) == crashing)
    assert entry["status"] == "failed" and entry["error"] == "RuntimeError: simulated crash"
    assert results["tables"]["table1"]["best"] == {"weight_decay": 0.001, "lr": 0.05, "val_accuracy": 0.85,
                                                   "test_accuracy": 0.86}

    stand_ins.behaviour.clear()
    stand_ins.trained.clear()
    again = grid(mnist, tmp_path / "grid")
    assert stand_ins.trained == [crashing]  # only the failed cell
    assert again["complete"]
    assert read_csv(tmp_path / "grid" / "table1.csv") == expected_table(WEIGHT_DECAYS, table1)
    assert again["tables"]["table1"]["best"] == {"weight_decay": 0.001, "lr": 0.005, "val_accuracy": 0.90,
                                                 "test_accuracy": 0.91}


@pytest.mark.parametrize("behaviour, status", [("nan", "diverged"), ("fpe", "diverged"), ("worse", "diverged"),
                                               (None, "ok")])
def test_diverged_means_a_non_finite_loss_or_a_loss_that_ends_above_its_start(mnist, tmp_path, monkeypatch,
                                                                              behaviour, status):
    # (0.5, 0.001, 64) has 12 % accuracy: not learned, yet its loss ended below its start, so it is not diverged.
    cell = (0.5, 0.001, 64)
    StandIns({cell: behaviour}).install(monkeypatch)
    results = q5.main(["--table", "1", "--lrs", "0.5", "--weight-decays", "0.001", "--epochs", "1", "--workers", "1",
                       "--out", str(tmp_path), "--data-root", str(mnist), "--device", "cpu"])
    entry = results["cells"][0]
    assert entry["status"] == status and entry["test_accuracy"] == ACCURACY[cell][1]
    assert read_csv(tmp_path / "table1.csv")[1] == ["0.001", "12.00" + (" (diverged)" if status == "diverged" else "")]
    assert results["tables"]["table1"]["best"] == (None if status == "diverged" else
                                                   {"weight_decay": 0.001, "lr": 0.5, "val_accuracy": 0.11,
                                                    "test_accuracy": 0.12})


@pytest.mark.parametrize("train_size", [129, 201, 321])
@pytest.mark.parametrize("budget", [["--updates", "30"], ["--epochs", "2"]])
def test_train_sizes_that_leave_a_batch_of_one_train_whole_batches_only(tmp_path_factory, monkeypatch, train_size,
                                                                         budget):
    # 129, 201, 321 images leave one image after the last whole batch of 64, 200 or 5.
    mnist = write_mnist(tmp_path_factory.mktemp("mnist"), train=480)  # 400 training images after validation
    stand_ins = StandIns().install(monkeypatch)
    out = tmp_path_factory.mktemp("grid")
    results = q5.main(["--table", "2", "--lrs", "0.05", "--batch-sizes", "5", "64", "200", "--train-size",
                       str(train_size), *budget, "--workers", "1", "--out", str(out), "--data-root", str(mnist)])
    assert {cell["status"] for cell in results["cells"]} == {"ok"}
    for batch_size in (5, 64, 200):
        batch = min(batch_size, train_size)
        seen = stand_ins.batch_sizes[(0.05, 0.001, batch)]
        assert set(seen) == {batch}  # the partial batch is dropped, never trained on
        expected = 30 if budget[0] == "--updates" else 2 * (train_size // batch)
        assert len(seen) == expected


def test_train_size_smaller_than_the_digit_classes_is_a_one_line_error(mnist, tmp_path):
    with pytest.raises(SystemExit) as error:
        q5.main(["--train-size", "5", "--workers", "1", "--out", str(tmp_path), "--data-root", str(mnist)])
    message = str(error.value)
    assert message.startswith("error: --train-size 5:") and "\n" not in message


def test_a_corrupt_journal_line_is_a_one_line_error_naming_the_file(mnist, tmp_path, monkeypatch):
    StandIns().install(monkeypatch)
    grid(mnist, tmp_path)
    journal = tmp_path / "optuna-journal.log"
    lines = journal.read_text().splitlines(keepends=True)
    lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
    journal.write_text("".join(lines))
    with pytest.raises(SystemExit) as error:
        grid(mnist, tmp_path)
    message = str(error.value)
    assert str(journal) in message and "line 3" in message and "\n" not in message


def test_cells_of_killed_workers_are_trained_again_and_duplicates_are_pruned(mnist, tmp_path, monkeypatch):
    stand_ins = StandIns().install(monkeypatch)
    settings, data = q5.build_settings(q5.parse_args(
        ["--table", "1", "--lrs", "0.5", "0.05", "--weight-decays", "0.001", "--epochs", "1", "--out", str(tmp_path),
         "--data-root", str(mnist)]))
    study = GridStudy(open_storage(settings.storage), settings.study)
    killed_cell, other_cell = q5.grid_cells(settings.tables, settings, len(data.train_labels))
    study.queue_missing([killed_cell, other_cell])
    GridStudy.enqueue(study.study, other_cell)  # a second queue entry for one cell, as two racing launchers leave
    finished_process = subprocess.Popen([sys.executable, "-c", "pass"])
    finished_process.wait()
    killed = study.study.ask()  # pops the first cell, then its worker dies without a word
    assert killed.user_attrs["cell"] == cell_key(killed_cell)
    killed.set_user_attr("worker", {"host": socket.gethostname(), "pid": finished_process.pid})
    killed.set_user_attr("status", "running")

    assert q5.run_worker(settings, data) == 2
    assert sorted(lr for lr, _, _ in stand_ins.trained) == [0.05, 0.5]
    states = Counter(trial.state for trial in study.study.trials)
    assert states == {TrialState.COMPLETE: 2, TrialState.FAIL: 1, TrialState.PRUNED: 1}
    assert study.study.trials[killed.number].state == TrialState.FAIL
    assert study.is_complete([killed_cell, other_cell])
    assert q5.run_worker(settings, data) == 0 and len(stand_ins.trained) == 2


# ----------------------------------------------------------------------------- real training, worker processes
# A 2x2 Table 1 of real ResNet-18 cells, 2 SGD updates each on real digits: λ = 0.01 learns, 1e30 overflows.
REAL_GRID = ["--dry-run", "--train-size", "128", "--table", "1", "--lrs", "0.01", "1e30", "--weight-decays", "0.01",
             "0.001"]
REAL_CELLS = {(wd, lr) for wd in (0.01, 0.001) for lr in (0.01, 1e30)}


def trained_trials(results: dict, storage: str) -> list:
    study = optuna.load_study(study_name=results["settings"]["study"], storage=open_storage(storage))
    trained = [trial for trial in study.trials if trial.user_attrs.get("status") in ("ok", "diverged", "failed")]
    assert Counter((trial.params["weight_decay"], trial.params["lr"]) for trial in trained) == Counter(REAL_CELLS)
    for trial in study.trials:
        if trial not in trained:
            assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "duplicate"
    return trained


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # tbparse's own use of pandas
def test_two_worker_processes_train_real_cells_once_and_two_sgd_steps_do_not_all_diverge(tmp_path):
    results = q5.main(REAL_GRID + ["--workers", "2", "--out", str(tmp_path)])
    trained = trained_trials(results, str(tmp_path / "optuna-journal.log"))
    # Two SGD steps at λ = 0.01 lower the training loss; at 1e30 it overflows.
    assert {trial.params["lr"]: trial.user_attrs["status"] for trial in trained} == {0.01: "ok", 1e30: "diverged"}
    for trial in trained:
        if trial.params["lr"] == 0.01:
            assert trial.user_attrs["end_loss"] < trial.user_attrs["start_loss"]
    workers = {trial.user_attrs["worker"]["pid"] for trial in trained}
    assert os.getpid() not in workers and len(workers) <= 2  # trained in the worker processes
    assert results["complete"]

    from tbparse import SummaryReader

    for wd, lr in REAL_CELLS:
        reader = SummaryReader(str(tmp_path / "cells" / f"lr{lr}_wd{wd}_bs64"))
        assert dict(zip(reader.hparams.tag, reader.hparams.value)) == pytest.approx(
            {"lr": lr, "weight_decay": wd, "batch_size": 64})
        assert {"hparam/val_accuracy", "hparam/test_accuracy"} <= set(reader.scalars.tag)

    metrics_files = {path: path.stat().st_mtime_ns for path in tmp_path.glob("cells/*/metrics.json")}
    assert len(metrics_files) == len(REAL_CELLS)
    again = q5.main(REAL_GRID + ["--workers", "2", "--out", str(tmp_path)])  # nothing left: no worker starts
    assert {path: path.stat().st_mtime_ns for path in metrics_files} == metrics_files
    assert again["cells"] == results["cells"]


# ----------------------------------------------------------------------------- the Q5 comment
def test_every_placeholder_of_the_q5_comment_is_computed_from_the_tables(mnist, tmp_path, monkeypatch):
    from report.runs import Notices
    from report.sections import PLACEHOLDER, grid_fields, read_grid_results, read_grid_table, strip_comments

    StandIns({(0.05, 0.001, 8): "nan"}).install(monkeypatch)
    q5.main(["--updates", "3", *GRID_FLAGS, "--workers", "1", "--out", str(tmp_path), "--data-root", str(mnist)])
    notices = Notices()
    tables = [read_grid_table(tmp_path / f"table{number}.csv", notices) for number in (1, 2)]
    fields = grid_fields(tables, read_grid_results(tmp_path / "results.json", notices))
    answer = (Path(q5.__file__).resolve().parents[1] / "report" / "answers" / "ex1_q5.md").read_text()
    assert len(answer.splitlines()) <= 25
    assert set(PLACEHOLDER.findall(strip_comments(answer))) <= set(fields)
    assert fields["diverged_cells"] == "λ = 0.05 with batch 8 (96.00 %)"
    assert fields["chance_cells"] == "λ = 0.5 with weight decay 0.001 (12.00 %), λ = 0.5 with batch 8 (10.00 %)"
    assert fields["t1_lr_ranking"] == "λ = 0.05 (92.50 %) > λ = 0.005 (81.00 %) > λ = 0.5 (21.50 %)"
    assert fields["t1_best"] == "λ = 0.005 with weight decay 0.001: validation 90.00 %, test 91.00 %"
    assert fields["budget"] == "3 SGD updates per cell (batch 8: 24 images, batch 64: 192 images)"
    assert fields["t1_row_effect"].startswith(
        "λ = 0.5: 12.00 → 31.00 % (weight decay 0.001 → 0.01), rises by 19.0 points; λ = 0.05: 86.00 → 99.00 %")


# ----------------------------------------------------------------------------- PostgreSQL, as between machines
def postgres_bindir() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (not on PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                       key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0)
    return installed[-1].parent if installed else None


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free local port, stopped and deleted after the test."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").is_file():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin "
                    "(Debian: apt-get install postgresql)")
    workdir = Path(tempfile.mkdtemp(prefix="q5-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        user = "postgres" if user_exists("postgres") else "nobody"
        shutil.chown(workdir, user=user)
        as_user = ["runuser", "-u", user, "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    datadir = workdir / "data"

    def run(*command: object) -> None:
        done = subprocess.run(as_user + [str(part) for part in command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{command[0]} failed: {done.stderr or done.stdout}"

    try:
        run(bindir / "initdb", "-D", datadir, "-U", "grid", "-A", "trust", "--no-sync", "--locale=C", "-E", "UTF8")
        run(bindir / "pg_ctl", "-D", datadir, "-l", workdir / "server.log", "-w", "-t", "60",
            "-o", f"-p {port} -h 127.0.0.1 -k {workdir} -F", "start")
        yield f"postgresql://grid@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.postgres
def test_workers_share_one_postgres_study(postgres_url, tmp_path):
    results = q5.main(REAL_GRID + ["--workers", "2", "--storage", postgres_url, "--out", str(tmp_path / "a")])
    trained = [trial.number for trial in trained_trials(results, postgres_url)]
    # A launcher on "another machine" (its own output folder) finds the shared study done: it trains nothing.
    elsewhere = q5.main(REAL_GRID + ["--workers", "1", "--storage", postgres_url, "--out", str(tmp_path / "b")])
    assert [trial.number for trial in trained_trials(elsewhere, postgres_url)] == trained
    assert elsewhere["cells"] == results["cells"]
    assert (tmp_path / "b" / "table1.csv").read_text() == (tmp_path / "a" / "table1.csv").read_text()
