"""The trusted side of grading: build each code question's private workspace, run its sandboxed child
(several at once), and hand the graded tests what came back.

A question's workspace holds the handed-out starter's project files, with the student's version of the
question's own files (and any new module the student added inside a project package) in place of the
starter's. So another question's bug, stub or missing file cannot cost this question anything, and the
names this question borrows from other questions are test doubles set by the child's harness.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch

from .files import project_files
from .questions import CODE_QUESTIONS, question_seed
from .reasons import probe_reason
from .sandbox import (ChildOutcome, Limits, SandboxIds, SandboxUser, Workspace, copy_files, new_workspace_base,
                      open_child_file, run_child)

MAX_SOURCE_BYTES = 1 << 20
MAX_EXTRA_FILES = 100


class ProbeFailure(AssertionError):
    """A probe (or the whole child) gave no usable answer; the message is the grader's own words."""


@dataclass
class QuestionRun:
    key: str
    inputs: dict[str, Any]
    workspace: Workspace | None = None
    private: Path | None = None  # the parent's own copy of the inputs' files (the child may alter its copy)
    outcome: ChildOutcome | None = None
    problem: str = ""  # set when no child could be run (a missing file)
    limits: Limits = field(default_factory=Limits)

    def probe(self, name: str) -> Any:
        """The value probe ``name`` returned, or :class:`ProbeFailure` with the reason it did not."""
        if self.problem:
            raise ProbeFailure(self.problem)
        if self.outcome is None or self.outcome.answers is None:
            raise ProbeFailure(self.outcome.reason if self.outcome else "not run")
        record = self.outcome.answers["probes"].get(name)
        if not isinstance(record, dict):
            raise ProbeFailure("exited before answering this check")
        if record.get("ok") is True:
            return record.get("value")
        raise ProbeFailure(probe_reason(record, self.limits))

    def child_bytes(self, relpath: str, max_bytes: int = 16 << 20) -> bytes | None:
        """A file the child wrote under its ``out/`` folder (None if absent, too large or a link)."""
        if self.workspace is None:
            return None
        handle = open_child_file(self.workspace.root, self.workspace.out / relpath, max_bytes)
        if handle is None:
            return None
        with handle:
            return handle.read()

    def child_files(self, folder: str) -> list[str]:
        """Relative paths of the regular files under ``out/<folder>`` (links ignored)."""
        if self.workspace is None:
            return []
        base = self.workspace.out / folder
        if base.is_symlink() or not base.is_dir():
            return []
        return sorted(str(path.relative_to(self.workspace.out)) for path in base.rglob("*")
                      if path.is_file() and not path.is_symlink())


def regular_file_problem(root: Path, relpath: str) -> str:
    path = root / relpath
    if path.is_symlink():
        return f"{relpath} is a symbolic link (submit the file itself)"
    if not path.is_file():
        return f"missing file {relpath}"
    if path.stat().st_size > MAX_SOURCE_BYTES:
        return f"{relpath} is larger than {MAX_SOURCE_BYTES >> 20} MB"
    return ""


class GradingEngine:
    """Runs the code questions of one submission, ``jobs`` children at a time."""

    def __init__(self, submission: Path, starter: Path | Callable[[], Path], *, seed: int = 0, jobs: int = 2, limits: Limits | None = None,
                 time_limit: float | None = None, hide: tuple[Path, ...] = (), keep: bool = False):
        self.submission = submission
        self._starter = starter
        self.seed = seed
        self.limits = limits or Limits()
        self.time_limit = time_limit
        self.ids = SandboxIds()
        self.users: list[SandboxUser] = []
        self.hide = hide
        self.keep = keep
        self.base = new_workspace_base()
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="grading")
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()

    @cached_property
    def starter(self) -> Path:
        """The handed-out starter (made on first use: a session that grades nothing never builds it)."""
        return self._starter if isinstance(self._starter, Path) else self._starter()

    @cached_property
    def starter_files(self) -> list[str]:
        return project_files(self.starter)

    @cached_property
    def starter_hash(self) -> str:
        """sha256 over the starter's project files (names and contents): which hand-out a grade used."""
        digest = hashlib.sha256()
        for relpath in self.starter_files:
            digest.update(relpath.encode() + b"\0" + (self.starter / relpath).read_bytes() + b"\0")
        return digest.hexdigest()

    def question_limits(self, key: str) -> Limits:
        wall = self.time_limit or CODE_QUESTIONS[key].wall_seconds
        return Limits(wall_seconds=wall, memory_bytes=self.limits.memory_bytes, file_bytes=self.limits.file_bytes,
                      open_files=self.limits.open_files, processes=self.limits.processes)

    def start(self, keys: list[str]) -> None:
        with self.lock:
            for key in keys:
                if key not in self.futures:
                    self.futures[key] = self.pool.submit(self._run, key)

    def result(self, key: str) -> QuestionRun:
        self.start([key])
        return self.futures[key].result()

    def _workspace(self, key: str) -> tuple[Workspace, str]:
        question = CODE_QUESTIONS[key]
        workspace = Workspace(self.base / key, question.doubles)
        copy_files(self.starter, workspace.repo, self.starter_files)
        for relpath in question.files:
            problem = regular_file_problem(self.submission, relpath)
            if problem:
                return workspace, problem
        extras = [relpath for relpath in project_files(self.submission)
                  if relpath not in self.starter_files and "/" in relpath
                  and not regular_file_problem(self.submission, relpath)][:MAX_EXTRA_FILES]
        copy_files(self.submission, workspace.repo, [*question.files, *extras])
        return workspace, ""

    def _run(self, key: str) -> QuestionRun:
        question = CODE_QUESTIONS[key]
        limits = self.question_limits(key)
        workspace, problem = self._workspace(key)
        private = self.base / f"{key}.private"
        private.mkdir(mode=0o700)
        inputs = question.build(private, question_seed(self.seed, key))
        torch.save(inputs, private / "inputs.pt")
        shutil.copytree(private, workspace.data, dirs_exist_ok=True)
        run = QuestionRun(key, inputs, workspace, private, limits=limits, problem=problem)
        if not problem:
            with self.lock:
                user = self.ids.allocate()
                if user is not None:
                    self.users.append(user)
            run.outcome = run_child(workspace, key, limits, user, self.hide)
        return run

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        kill_leftovers({user.uid for user in self.users})
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)


def kill_leftovers(uids: set[int]) -> None:
    """Grading is over: no process of a child's user id outlives it, one that left its session included
    (each id belongs to one child of this grading, and to nothing else)."""
    if not uids:
        return
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid in uids:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
