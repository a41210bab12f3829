"""Run untrusted student code in a child process that can decide nothing about its own score.

A child gets a private workspace (a copy of the files it may import, its own ``HOME``/``TMPDIR``, an
``out/`` folder), a scrubbed environment, and hard limits set before any student code runs: wall clock
(the parent kills the whole process group), CPU time, address space, file size, open files. When the
grader runs as root (CI, a Gradescope container), each child also runs under a user id of its own that owns
nothing else (so it cannot read the grader's files, another child's workspace or the parent's memory), in
new mount and network namespaces (``unshare``): no network, the grader's folders hidden under empty
mounts, and of the folders above the Python installation only that installation visible.

The child answers by writing ``out/result.pt`` (plain tensors, numbers and strings), which the parent
reads with ``torch.load(..., weights_only=True)``; the verdict is computed in the parent only.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

CHILD_DIR = Path(__file__).resolve().parent / "child"
RESULT_FILE = "result.pt"
LOG_TAIL_BYTES = 20_000
MAX_RESULT_BYTES = 64 << 20
SIGNAL_REASONS = {
    signal.SIGXCPU: "stopped: CPU time limit of {cpu} s reached",
    signal.SIGXFSZ: "stopped: wrote a file larger than the {file_mb} MB limit",
    signal.SIGSEGV: "crashed (segmentation fault)",
    signal.SIGBUS: "crashed (bus error)",
    signal.SIGABRT: "crashed (aborted)",
    signal.SIGFPE: "crashed (floating-point exception)",
    signal.SIGILL: "crashed (illegal instruction)",
}


@dataclass(frozen=True)
class Limits:
    """Hard limits of one child. ``cpu_seconds`` defaults to the wall limit (one thread)."""

    wall_seconds: float = 90.0
    memory_bytes: int = 6 << 30
    file_bytes: int = 256 << 20
    open_files: int = 256
    processes: int = 64  # only applied under a dedicated unprivileged user (RLIMIT_NPROC counts per user)
    cpu_seconds: float | None = None

    @property
    def memory_text(self) -> str:
        return f"{self.memory_bytes / (1 << 30):g} GB"


@dataclass
class ChildOutcome:
    """What came back from one child: the answers, or the reason there are none (grader's words)."""

    answers: dict[str, Any] | None
    reason: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    log_tail: str = ""  # the child's own output, for the instructor only (never shown to the student)
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SandboxUser:
    """The user id a child runs as: one per child, from a block no account uses."""

    uid: int
    gid: int


class SandboxIds:
    """Hands out one unprivileged user id per child, when this process is root (else children keep our id)."""

    FIRST, LAST = 2_000_000, 2_900_000

    def __init__(self):
        self.enabled = can_switch_user()
        self.next = random.SystemRandom().randrange(self.FIRST, self.LAST, 1000)

    def allocate(self) -> SandboxUser | None:
        if not self.enabled:
            return None
        self.next += 1
        return SandboxUser(self.next, self.next)


@lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """This process may give a child its own mount and network namespaces (root, and a kernel and
    container that allow it): tried once with ``unshare``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    try:
        done = subprocess.run(["unshare", "--mount", "--net", "--", "mount", "--make-rprivate", "/"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _others_can_reach(path: str) -> bool:
    """Every folder from / down to ``path`` can be traversed by a user who owns none of them."""
    current = path
    while True:
        if not os.stat(current).st_mode & 0o001:
            return False
        if current == os.path.dirname(current):
            return True
        current = os.path.dirname(current)


@lru_cache(maxsize=1)
def can_switch_user() -> bool:
    """Children can run under another user id: we are root, and that user can run Python (directly, or
    through a mount namespace that shows it the installation)."""
    return os.geteuid() == 0 and (namespaces_available() or all(_others_can_reach(p) for p in python_paths()))


def python_paths() -> list[str]:
    """What a child's interpreter must be able to read: its installation and its site-packages."""
    import site
    import sysconfig

    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable)),
             sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
             *site.getsitepackages()}
    return sorted(os.path.realpath(path) for path in paths if os.path.isdir(path))


class Workspace:
    """A child's private folder: ``repo/`` (the files it may import, its cwd), ``data/`` (inputs written by
    the parent), ``home/``, ``tmp/``, ``out/`` (where it answers), and the harness in ``grader/``."""

    def __init__(self, root: Path, doubles: tuple[str, ...] = ()):
        self.root = root
        self.repo = root / "repo"
        self.data = root / "data"
        self.out = root / "out"
        self.harness = root / "grader"
        for folder in (self.repo, self.data, root / "home", root / "tmp", self.out):
            folder.mkdir(parents=True, exist_ok=True)
        self.harness.mkdir()
        for name in ("probes.py", *(f"doubles_{double}.py" for double in doubles)):
            shutil.copyfile(CHILD_DIR / name, self.harness / name)

    def hand_over(self, user: SandboxUser | None) -> None:
        """Give the workspace to the child's user; the harness stays the parent's (readable, not writable),
        its ``config.json`` readable by the parent's user only (the runner reads it before it drops root)."""
        if user is None:
            return
        for path in [self.root, *self.root.rglob("*")]:
            if path.is_symlink() or self.harness in path.parents or path == self.harness:
                continue
            os.chown(path, user.uid, user.gid)
        for path in [self.harness, *self.harness.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (self.harness / "config.json").chmod(0o600)


def new_workspace_base() -> Path:
    """A fresh folder for this grading's workspaces: traversable, not listable, by other users."""
    base = Path(tempfile.mkdtemp(prefix="siamese-tp-grading-"))
    base.chmod(0o711)
    return base


def copy_files(source_root: Path, dest_root: Path, relpaths: list[str]) -> None:
    """Copy regular files only: a symbolic link in a submission is never followed (it could point at the
    grader's own files)."""
    for relpath in relpaths:
        source = source_root / relpath
        if source.is_symlink() or not source.is_file():
            continue
        target = dest_root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target, follow_symlinks=False)


def clean_environment(workspace: Workspace) -> dict[str, str]:
    """Nothing of the grading machine's environment: only what a Python child needs to run."""
    root = workspace.root
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "TMPDIR": str(root / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": str(root / "tmp"),
        "TORCH_HOME": str(root / "home" / "torch"),
        "SIAMESE_TP_OFFLINE": "1",
        "NO_PROXY": "*",
    }


def open_child_file(workspace_root: Path, path: Path, max_bytes: int):
    """Open a file the child wrote, for reading, or return None: never through a symbolic link, never outside
    the workspace, never larger than ``max_bytes`` (the child may have planted any of these)."""
    try:
        real = Path(os.path.realpath(path))
        if workspace_root.resolve() not in real.parents:
            return None
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    handle = os.fdopen(descriptor, "rb")
    status = os.fstat(descriptor)
    if not (status.st_mode & 0o170000 == 0o100000) or status.st_size > max_bytes:
        handle.close()
        return None
    return handle


def _log_tail(path: Path) -> str:
    handle = open_child_file(path.parent, path, 1 << 62)
    if handle is None:
        return ""
    with handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - LOG_TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_answers(workspace: Workspace) -> dict[str, Any] | None:
    """The child's ``out/result.pt`` as plain data, or None when it is missing, too large or not plain data."""
    import torch

    handle = open_child_file(workspace.root, workspace.out / RESULT_FILE, MAX_RESULT_BYTES)
    if handle is None:
        return None
    try:
        with handle:
            answers = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything unreadable is "no answer", whatever the reason
        return None
    if not isinstance(answers, dict) or not isinstance(answers.get("probes"), dict):
        return None
    return answers


class ForkServer:
    """The children's fork server (``child/zygote.py``): one per grading process, started on first use.

    It has PyTorch imported once; each child is a fork of it (see the zygote's docstring). ``spawn`` returns
    the child's pid; ``wait(pid, timeout)`` its exit code (negative: the signal that ended it) or None.
    """

    _instance: "ForkServer | None" = None
    _instance_lock = threading.Lock()

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="siamese-tp-zygote-"))
        for name in ("zygote.py", "runner.py"):
            shutil.copyfile(CHILD_DIR / name, self.folder / name)
        for path in [self.folder, *self.folder.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(self.folder / "zygote.py")], cwd=self.folder,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
                 "HOME": str(self.folder)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
            start_new_session=True)
        self.write_lock = threading.Lock()
        self.condition = threading.Condition()
        self.pids: dict[int, int] = {}  # request id -> pid
        self.exits: dict[int, int] = {}  # pid -> exit code
        self.ids = itertools.count()
        threading.Thread(target=self._read, daemon=True, name="zygote-reader").start()

    @classmethod
    def shared(cls) -> "ForkServer":
        with cls._instance_lock:
            if cls._instance is None or cls._instance.process.poll() is not None:
                cls._instance = cls()
                atexit.register(cls._instance.stop)
            return cls._instance

    def _read(self) -> None:
        for line in self.process.stdout:
            message = json.loads(line)
            with self.condition:
                if "id" in message:
                    self.pids[message["id"]] = message["pid"]
                else:
                    self.exits[message["pid"]] = message["status"]
                self.condition.notify_all()
        with self.condition:  # the server is gone: nothing more will come
            self.exits.setdefault(-1, -1)
            self.condition.notify_all()

    def spawn(self, config: Path, log: Path, env: dict[str, str], namespaces: bool) -> int:
        request_id = next(self.ids)
        request = {"id": request_id, "config": str(config), "log": str(log), "env": env, "namespaces": namespaces}
        with self.write_lock:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        with self.condition:
            if not self.condition.wait_for(lambda: request_id in self.pids or -1 in self.exits, timeout=120):
                raise RuntimeError("the grading fork server did not answer")
            if request_id not in self.pids:
                raise RuntimeError("the grading fork server stopped")
            return self.pids.pop(request_id)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self.condition:
            self.condition.wait_for(lambda: pid in self.exits or -1 in self.exits, timeout=timeout)
            return self.exits.pop(pid, None)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_child(workspace: Workspace, question: str, limits: Limits, user: SandboxUser | None,
              hide: tuple[Path, ...] = ()) -> ChildOutcome:
    """Run the harness for ``question`` in ``workspace`` under ``limits``; never raises for the child's sake.

    ``hide``: folders the child must not see (the grader's own files, the grades): empty mounts over them.
    """
    cpu = limits.cpu_seconds or limits.wall_seconds
    namespaces = user is not None and namespaces_available()
    config = {
        "question": question,
        "repo": str(workspace.repo),
        "data": str(workspace.data),
        "out": str(workspace.out),
        "harness": str(workspace.harness),
        "limits": {**asdict(limits), "cpu_seconds": cpu},
        "user": asdict(user) if user else None,
        "isolate": namespaces,
        "hide": [str(path) for path in hide],
        "expose": python_paths(),
        "scratch": str(workspace.root / "mounts"),
    }
    (workspace.harness / "config.json").write_text(json.dumps(config))
    workspace.hand_over(user)
    log_path = workspace.root / "child.log"
    server = ForkServer.shared()
    started = time.monotonic()
    pid = server.spawn(workspace.harness / "config.json", log_path, clean_environment(workspace), namespaces)
    code = server.wait(pid, limits.wall_seconds)
    timed_out = code is None
    _kill_group(pid)  # whatever the child left behind in its session goes too
    if timed_out:
        code = server.wait(pid, 30)
    seconds = time.monotonic() - started
    outcome = ChildOutcome(None, seconds=seconds, exit_code=code, log_tail=_log_tail(log_path),
                           limits=config["limits"])
    if timed_out:
        outcome.reason = f"timed out after {limits.wall_seconds:g} s (a loop that never ends, or far too slow)"
        return outcome
    answers = read_answers(workspace)
    if answers is not None:
        outcome.answers = answers
        return outcome
    if code is not None and code < 0:
        template = SIGNAL_REASONS.get(-code)
        if -code == signal.SIGKILL:
            outcome.reason = f"killed (out of memory? the limit is {limits.memory_text})"
        elif template:
            outcome.reason = template.format(cpu=f"{cpu:g}", file_mb=limits.file_bytes >> 20)
        else:
            outcome.reason = f"stopped by signal {signal.Signals(-code).name}"
    elif "MemoryError" in outcome.log_tail or "can't allocate memory" in outcome.log_tail:
        outcome.reason = f"stopped: memory limit {limits.memory_text}"
    else:
        outcome.reason = f"exited before answering (exit code {code})"
    return outcome
