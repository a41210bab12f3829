"""Exercise 1 Q5: the Optuna grid search trains every cell once, survives failures, resumes, fills the TP tables."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from exercise1 import q5_grid_search as q5
from utils.grid import CellOutcome, GridStudy, open_storage

REPO = Path(__file__).resolve().parents[1]
# A 2x2 Table 1 on 128 images (2 batches of 64, so an absurd learning rate blows up at the second batch).
TINY_GRID = ["--dry-run", "--train-size", "128", "--table", "1",
             "--lrs", "0.1", "1e30", "--weight-decays", "0.01", "0.001"]
TINY_CELLS = {(wd, lr) for wd in (0.01, 0.001) for lr in (0.1, 1e30)}
TRAINED = ("ok", "diverged", "failed")


def load_table1_study(results: dict, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=results["tables"]["table1"]["study"], storage=open_storage(storage))


def assert_each_cell_trained_once(study: optuna.Study, cells: set) -> list:
    """Every cell has exactly one trial that trained; any other trial was pruned before training."""
    trained = [trial for trial in study.trials if trial.user_attrs.get("status") in TRAINED]
    assert Counter((trial.params["weight_decay"], trial.params["lr"]) for trial in trained) == Counter(cells)
    for trial in study.trials:
        if trial not in trained:
            assert trial.state == TrialState.PRUNED and trial.user_attrs["status"] == "duplicate"
            assert "train_seconds" not in trial.user_attrs
    return trained


# ----------------------------------------------------------------------------- journal, two worker processes
@pytest.mark.filterwarnings("ignore:The inplace keyword")  # tbparse's own use of pandas
def test_two_workers_fill_every_cell_once_and_a_rerun_trains_nothing(tmp_path):
    journal = str(tmp_path / "optuna-journal.log")
    results = q5.main(TINY_GRID + ["--workers", "2", "--out", str(tmp_path)])
    study = load_table1_study(results, journal)
    trained = assert_each_cell_trained_once(study, TINY_CELLS)
    assert {trial.params["lr"]: trial.user_attrs["status"] for trial in trained} == {0.1: "ok", 1e30: "diverged"}
    workers = {trial.user_attrs["worker"]["pid"] for trial in trained}
    assert os.getpid() not in workers and len(workers) <= 2  # trained in the worker processes
    assert results["tables"]["table1"]["complete"]

    from tbparse import SummaryReader

    for wd, lr in TINY_CELLS:
        reader = SummaryReader(str(tmp_path / "table1" / f"lr{lr}_wd{wd}_bs64"))
        assert dict(zip(reader.hparams.tag, reader.hparams.value)) == pytest.approx(
            {"lr": lr, "weight_decay": wd, "batch_size": 64})
        assert "hparam/test_accuracy" in set(reader.scalars.tag)

    metrics_files = {path: path.stat().st_mtime_ns for path in tmp_path.glob("table1/*/metrics.json")}
    assert len(metrics_files) == len(TINY_CELLS)
    trials_before = len(study.trials)
    again = q5.main(TINY_GRID + ["--workers", "1", "--out", str(tmp_path)])
    assert len(load_table1_study(results, journal).trials) == trials_before
    assert {path: path.stat().st_mtime_ns for path in metrics_files} == metrics_files
    assert again["tables"]["table1"]["cells"] == results["tables"]["table1"]["cells"]


# ----------------------------------------------------------------------------- failures, kills, races (in-process)
def tiny_settings(tmp_path: Path, *flags: str) -> tuple[q5.GridSettings, q5.MnistData]:
    """Settings for a worker run in this process; one CPU thread, as each of two workers would get."""
    return q5.build_settings(q5.parse_args([*flags, "--workers", "2", "--out", str(tmp_path)]))


def test_a_raising_and_a_diverging_cell_are_marked_and_the_grid_completes(tmp_path):
    settings, data = tiny_settings(
        tmp_path, "--dry-run", "--train-size", "128", "--table", "1", "--lrs", "0.1", "1e30", "7.0",
        "--weight-decays", "0.001")

    def crash_at_lr_7(params, table, settings, data):
        if params["lr"] == 7.0:
            raise RuntimeError("simulated crash")
        return q5.train_cell(params, table, settings, data)

    assert q5.run_worker(settings, data, train=crash_at_lr_7) == 3
    results = q5.write_outputs(q5.open_grids(settings), settings, data, 0.0)
    table = results["tables"]["table1"]
    cells = {cell["lr"]: cell for cell in table["cells"]}
    assert table["complete"]
    assert cells[0.1]["status"] == "ok"
    assert cells[1e30]["status"] == "diverged" and cells[1e30]["test_accuracy"] <= 0.2  # chance level
    assert cells[7.0]["status"] == "failed" and cells[7.0]["error"] == "RuntimeError: simulated crash"
    assert (tmp_path / "table1.md").read_text().splitlines()[-1] == (
        f"| 0.001 | **{100 * cells[0.1]['test_accuracy']:.2f}** | "
        f"{100 * cells[1e30]['test_accuracy']:.2f} (diverged) | failed |")
    assert q5.run_worker(settings, data, train=crash_at_lr_7) == 0  # a failed cell is recorded, not retried


def test_cells_of_killed_workers_are_trained_again_and_duplicates_are_pruned(tmp_path):
    settings, data = tiny_settings(tmp_path, "--table", "1", "--lrs", "0.1", "0.01", "--weight-decays", "0.001")
    grid = q5.open_grids(settings)["table1"]
    finished_process = subprocess.Popen([sys.executable, "-c", "pass"])
    finished_process.wait()
    killed = grid.study.ask()  # trial 0 takes cell 0, then its worker dies without a word
    killed.set_user_attr("worker", {"host": socket.gethostname(), "pid": finished_process.pid})
    grid.enqueue(1)
    grid.enqueue(1)  # two queue entries for one cell, as two launchers racing could leave

    trained = []

    def record(params, table, settings, data):
        trained.append(params["lr"])
        return CellOutcome(value=params["lr"], attrs={"train_seconds": 0.0})

    assert q5.run_worker(settings, data, train=record) == 2
    assert sorted(trained) == [0.01, 0.1]
    states = Counter(trial.state for trial in grid.study.trials)
    assert states == {TrialState.COMPLETE: 2, TrialState.FAIL: 1, TrialState.PRUNED: 1}
    assert grid.study.trials[0].state == TrialState.FAIL and grid.is_complete()
    assert q5.run_worker(settings, data, train=record) == 0 and len(trained) == 2


# ----------------------------------------------------------------------------- the TP layout
def test_tables_have_the_tp_layout_and_fill_the_report_fields(tmp_path):
    settings, data = tiny_settings(tmp_path)  # the TP grid, both tables
    accuracy = {  # (row, lr) -> (status, accuracy)
        "table1": {(0.1, 1.0): ("diverged", 0.098), (0.1, 0.1): ("ok", 0.9), (0.1, 0.01): ("ok", 0.95),
                   (0.1, 0.001): ("ok", 0.8), (0.01, 1.0): ("diverged", 0.098), (0.01, 0.1): ("ok", 0.97),
                   (0.01, 0.01): ("ok", 0.96), (0.01, 0.001): ("ok", 0.85), (0.001, 1.0): ("ok", 0.11),
                   (0.001, 0.1): ("ok", 0.985), (0.001, 0.01): ("ok", 0.975), (0.001, 0.001): ("ok", 0.9)},
        "table2": {(5, 1.0): ("failed", None), (5, 0.1): ("ok", 0.5), (5, 0.01): ("ok", 0.97),
                   (5, 0.001): ("ok", 0.98), (64, 1.0): ("ok", 0.11), (64, 0.1): ("ok", 0.985),
                   (64, 0.01): ("ok", 0.975), (64, 0.001): ("ok", 0.9), (200, 1.0): ("diverged", 0.1),
                   (200, 0.1): ("ok", 0.96), (200, 0.01): ("ok", 0.93), (200, 0.001): ("ok", 0.7)},
    }
    grids = {}
    storage = optuna.storages.InMemoryStorage()
    for table, name in zip(settings.tables, settings.study_names):
        grid = grids[table.key] = GridStudy(storage, name, table.search_space())
        distributions = {param: CategoricalDistribution(values) for param, values in table.search_space().items()}
        for (row, lr), (status, value) in accuracy[table.key].items():
            grid.study.add_trial(create_trial(
                state=TrialState.FAIL if status == "failed" else TrialState.COMPLETE, value=value,
                params={"lr": lr, table.row_param: row}, distributions=distributions,
                user_attrs={"status": status}))
    results = q5.write_outputs(grids, settings, data, 60.0)

    assert (tmp_path / "table1.csv").read_text() == (
        "weight_decay \\ lr,1.0,0.1,0.01,0.001\n"
        "0.1,9.80 (diverged),90.00,95.00,80.00\n"
        "0.01,9.80 (diverged),97.00,96.00,85.00\n"
        "0.001,11.00,98.50,97.50,90.00\n")
    assert (tmp_path / "table2.csv").read_text() == (
        "batch_size \\ lr,1.0,0.1,0.01,0.001\n"
        "5,failed,50.00,97.00,98.00\n"
        "64,11.00,98.50,97.50,90.00\n"
        "200,10.00 (diverged),96.00,93.00,70.00\n")
    markdown = (tmp_path / "table2.md").read_text().splitlines()
    assert markdown[0].startswith("Table 2: test accuracy (%)")
    assert markdown[2:] == [
        "| batch size \\ λ | 1.0 | 0.1 | 0.01 | 0.001 |",
        "|---|---|---|---|---|",
        "| 5 | failed | 50.00 | 97.00 | 98.00 |",
        "| 64 | 11.00 | **98.50** | 97.50 | 90.00 |",
        "| 200 | 10.00 (diverged) | 96.00 | 93.00 | 70.00 |",
    ]
    assert results["tables"]["table1"]["best"] == [{"weight_decay": 0.001, "lr": 0.1, "test_accuracy": 0.985}]

    answer = (REPO / "report" / "answers" / "ex1_q5.md").read_text()
    placeholders = set(re.findall(r"\{([A-Za-z0-9_]+)\}", answer))
    assert placeholders and placeholders <= set(results["report_fields"])
    assert "{" not in answer.format_map(results["report_fields"])
    assert results["report_fields"]["t2_bs5_lr1_0"] == "failed"
    assert results["report_fields"]["t1_best_accuracy"] == "98.50"


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
    results = q5.main(TINY_GRID + ["--workers", "2", "--storage", postgres_url, "--out", str(tmp_path / "a")])
    study = load_table1_study(results, postgres_url)
    assert_each_cell_trained_once(study, TINY_CELLS)
    # A launcher on "another machine" (its own output folder) finds the shared study done: it trains nothing.
    trials_before = len(study.trials)
    elsewhere = q5.main(TINY_GRID + ["--workers", "1", "--storage", postgres_url, "--out", str(tmp_path / "b")])
    assert len(load_table1_study(results, postgres_url).trials) == trials_before
    assert elsewhere["tables"]["table1"]["cells"] == results["tables"]["table1"]["cells"]
    assert (tmp_path / "b" / "table1.csv").read_text() == (tmp_path / "a" / "table1.csv").read_text()
