"""No lost work, no silent failure (issue 16) in the Exercise 1 scripts and the plumbing they share.

Run folders that never collide, a live run's folder refused, atomic saves that clean up after a kill or a
full disk, strict metrics.json, a NaN loss that stops the run, one-line errors for bad flags and files.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from exercise1 import q1_numpy_mlp, q2_module_mlp, q4_resnet
from test_mnist_data import offline_single_thread, write_tiny_mnist  # noqa: F401 (autouse fixture)
from utils import io as atomic_io
from utils import training
from utils.mnist import OFFLINE_ENV
from utils.training import RunLogger

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tmp_path) -> dict:
    """A tiny MNIST and output folders; ``flags`` point a script at them."""
    mnist = write_tiny_mnist(tmp_path / "mnist", n_train=60, n_test=10)
    return {"root": tmp_path, "flags": ["--data-root", str(mnist), "--runs-dir", str(tmp_path / "runs"),
                                        "--checkpoint-dir", str(tmp_path / "ckpt")]}


def one_line_exit(function, *args) -> str:
    """The message of the ``SystemExit`` that ``function(*args)`` raises, checked to be one line."""
    with pytest.raises(SystemExit) as exit_info:
        function(*args)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message and len(message) < 400, message
    return message


@pytest.fixture
def live_process():
    """The pid of a process that stays alive during the test."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ----------------------------------------------------------------------------- run folders
def test_runs_started_in_the_same_microsecond_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "default_run_name", lambda: "20250101-000000-000000")
    first = RunLogger(tmp_path, "q2_module_mlp", None, {}, tensorboard=False)
    second = RunLogger(tmp_path, "q2_module_mlp", None, {}, tensorboard=False)
    assert first.directory != second.directory
    assert second.directory.name == "20250101-000000-000000-1" and second.run_name == second.directory.name
    first.close()
    second.close()
    assert len(training.default_run_name()) == len("20250101-000000-000000")


def test_a_folder_held_by_a_live_run_is_refused_and_a_dead_runs_lock_taken_over(tiny, live_process):
    folder = tiny["root"] / "runs" / "q2_module_mlp" / "taken"
    folder.mkdir(parents=True)
    (folder / training.LOCK_FILE).write_text(f"{live_process}\n")
    message = one_line_exit(q2_module_mlp.main, [*tiny["flags"], "--run-name", "taken", "--dry-run"])
    assert "--run-name taken" in message and str(live_process) in message
    (folder / training.LOCK_FILE).write_text(f"{dead_pid()}\n")
    q2_module_mlp.main([*tiny["flags"], "--run-name", "taken", "--dry-run"])
    assert not (folder / training.LOCK_FILE).exists()  # released at the end of the run
    assert json.loads((folder / "metrics.json").read_text())["history"][0]["epoch"] == 1


def test_two_scripts_started_together_write_two_folders(tiny):
    command = [sys.executable, "exercise1/q1_numpy_mlp.py", *tiny["flags"], "--dry-run"]
    environment = {**os.environ, OFFLINE_ENV: "1"}
    processes = [subprocess.Popen(command + ["--lr", lr], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for lr in ("0.01", "0.05")]
    for process in processes:
        assert process.wait(timeout=240) == 0, process.stderr.read()
    runs = sorted((tiny["root"] / "runs" / "q1_numpy_mlp").iterdir())
    assert len(runs) == 2
    assert sorted(json.loads((run / "metrics.json").read_text())["config"]["lr"] for run in runs) == [0.01, 0.05]


def test_unwritable_output_folders_are_refused_before_the_first_step(tiny, monkeypatch):
    blocker = tiny["root"] / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(q4_resnet, "train", lambda *args: pytest.fail("trained before checking the folders"))
    message = one_line_exit(q4_resnet.main, [*tiny["flags"], "--checkpoint-dir", str(blocker / "ckpt"), "--dry-run"])
    assert "--checkpoint-dir" in message and str(blocker) in message
    message = one_line_exit(q4_resnet.main, [*tiny["flags"], "--runs-dir", str(blocker / "runs"), "--dry-run"])
    assert "--runs-dir" in message


# ----------------------------------------------------------------------------- atomic files
def test_a_full_disk_during_a_save_ends_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    training.save_run_checkpoint(path, {"epoch": 1})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io.os, "fsync", disk_full)
    message = one_line_exit(training.save_run_checkpoint, path, {"epoch": 2})
    assert str(path) in message and "No space left on device" in message
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert [item.name for item in tmp_path.iterdir()] == ["run.pt"]  # no temp file left


def test_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path, live_process):
    stale = tmp_path / f".run.pt.{dead_pid()}.0123abcd.tmp"
    in_progress = tmp_path / f".run.pt.{live_process}.4567cdef.tmp"
    other = tmp_path / f".other.pt.{dead_pid()}.89abcdef.tmp"
    for path in (stale, in_progress, other):
        path.write_bytes(b"partial")
    atomic_io.save_checkpoint(tmp_path / "run.pt", {"epoch": 3})
    assert not stale.exists() and in_progress.exists() and other.exists()


def test_outputs_get_the_permissions_of_the_umask(tiny):
    previous = os.umask(0o022)
    try:
        q4_resnet.main([*tiny["flags"], "--run-name", "r", "--dry-run"])
    finally:
        os.umask(previous)
    for path in (tiny["root"] / "runs" / "q4_resnet" / "r" / "metrics.json",
                 tiny["root"] / "ckpt" / "q4_resnet" / "r.pt"):
        assert path.stat().st_mode & 0o777 == 0o644, path


def test_metrics_json_is_strict_json_with_null_for_non_finite_numbers(tmp_path):
    atomic_io.write_json_atomic(tmp_path / "m.json", {"a": [math.nan, 1.5], "b": {"c": math.inf}, "d": -math.inf})

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse) == {
        "a": [None, 1.5], "b": {"c": None}, "d": None}


# ----------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("script", [q1_numpy_mlp, q2_module_mlp, q4_resnet], ids=["q1", "q2", "q4"])
def test_a_diverged_run_stops_in_one_line_and_is_marked(script, tiny, monkeypatch):
    if script is q1_numpy_mlp:
        monkeypatch.setattr(script, "cross_entropy", lambda probs, y: math.nan)
    else:
        monkeypatch.setattr(script, "train", lambda *args: (math.nan, 0.1))
    message = one_line_exit(script.main, [*tiny["flags"], "--run-name", "nan", "--epochs", "3"])
    assert "epoch 1" in message and "diverged" in message
    name = script.__name__.split(".")[-1]
    metrics = json.loads((tiny["root"] / "runs" / name / "nan" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["history"][-1]["Loss/train"] is None
    assert len(metrics["history"]) == 1
    if script is q4_resnet:
        assert not (tiny["root"] / "ckpt" / "q4_resnet" / "nan.pt").exists()  # NaN weights are not saved


def test_the_report_marks_a_diverged_run(tiny, monkeypatch, capsys):
    from report import build

    monkeypatch.setattr(q2_module_mlp, "train", lambda *args: (math.inf, 0.1))
    one_line_exit(q2_module_mlp.main, [*tiny["flags"], "--run-name", "nan", "--dry-run"])
    build.main(["--runs", str(tiny["root"] / "runs"), "--out", str(tiny["root"] / "report")])
    text = (tiny["root"] / "report" / "report.md").read_text()
    q2_section = text.split("### Q2 ", 1)[1].split("\n### ", 1)[0]
    assert "**This run diverged** (a loss became NaN or infinite in epoch 1" in q2_section
    assert "| `nan` (dry run) (diverged) |" in text.split("### Final accuracies", 1)[1]


def test_a_real_divergence_exits_non_zero(tiny):
    result = subprocess.run([sys.executable, "exercise1/q2_module_mlp.py", *tiny["flags"], "--lr", "1e38",
                             "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=240,
                            env={**os.environ, OFFLINE_ENV: "1"})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: epoch 1") and "\n" not in result.stderr.strip()


# ----------------------------------------------------------------------------- bad flags and checkpoints
@pytest.mark.parametrize("script, flags, expected", [
    (q1_numpy_mlp, ["--seed", "-1"], "--seed must be >= 0"),
    (q2_module_mlp, ["--seed", "-1"], "--seed must be >= 0"),
    (q4_resnet, ["--seed", "-1"], "--seed must be >= 0"),
    (q4_resnet, ["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (q4_resnet, ["--momentum", "-1"], "--momentum must be >= 0"),
    (q4_resnet, ["--batch-size", "1"], "--batch-size must be >= 2"),
    (q4_resnet, ["--lr", "nan"], "--lr must be > 0"),
    (q4_resnet, ["--resume"], "--resume needs --run-name"),
    (q4_resnet, ["--resume", "--run-name", "never"], "no checkpoint at"),
], ids=["q1-seed", "q2-seed", "q4-seed", "q4-wd", "q4-momentum", "q4-batch-1", "q4-lr-nan", "q4-resume-no-name",
        "q4-resume-missing"])
def test_bad_flags_give_one_line(script, flags, expected, tiny):
    assert expected in one_line_exit(script.main, [*tiny["flags"], "--dry-run", *flags])


def test_q4_has_no_label_smoothing_flag_and_says_so_without_a_traceback(tiny):
    result = subprocess.run([sys.executable, "exercise1/q4_resnet.py", "--label-smoothing", "5"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("unrecognized arguments: --label-smoothing 5")


@pytest.mark.parametrize("content", ["corrupt", "main.py", "other stem"])
def test_q4_resume_refuses_a_foreign_checkpoint_in_one_line(content, tiny):
    path = tiny["root"] / "ckpt" / "q4_resnet" / "r.pt"
    path.parent.mkdir(parents=True)
    if content == "corrupt":
        path.write_bytes(b"\x80\x02 not a checkpoint")
    elif content == "main.py":
        torch.save({"epoch": 3, "model": {"FC1.weight": torch.zeros(2)}, "optimizer": {}, "scheduler": {},
                    "config": {"num_classes": 751, "backbone": "resnet50"}}, path)
    else:
        torch.save({"epoch": 1, "model": {}, "optimizer": {}, "scheduler": {},
                    "config": {"script": "q4_resnet", "arch": "resnet18", "stem": "cifar"}}, path)
    message = one_line_exit(q4_resnet.main, [*tiny["flags"], "--run-name", "r", "--dry-run", "--resume",
                                             "--epochs", "2"])
    assert str(path) in message
    if content == "other stem":
        assert "stem cifar" in message and "--stem" in message


def test_q4_resume_of_a_finished_run_keeps_its_results_and_tensorboard_steps(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = [*tiny["flags"], "--run-name", "done", "--dry-run", "--epochs", "2"]
    first = q4_resnet.main(flags)
    again = q4_resnet.main(flags + ["--resume"])
    metrics = json.loads((tiny["root"] / "runs" / "q4_resnet" / "done" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert metrics["final"]["Accuracy/test"] == first["Accuracy/test"] == again["Accuracy/test"]
    assert metrics["final"]["Loss/train"] == first["Loss/train"]
    # A run started again under the same name: TensorBoard shows its epochs once, not the old ones too.
    q4_resnet.main([*tiny["flags"], "--run-name", "done", "--dry-run", "--epochs", "1"])
    accumulator = EventAccumulator(str(tiny["root"] / "runs" / "q4_resnet" / "done"), size_guidance={"scalars": 0})
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("Loss/train")] == [1]
