"""The grading children's fork server: imports PyTorch once, then forks one child per request.

The engine starts it (as root when the grader is root) and writes one JSON request per line on its stdin:
``{"id", "config", "log", "env", "namespaces"}``; it answers on stdout ``{"id", "pid"}`` when the child is
forked and ``{"pid", "status"}`` when it has ended. A child starts its own session, drops every inherited
file descriptor (the protocol pipes included) for ``/dev/null`` and its log, takes the request's
environment, enters new mount and network namespaces when asked, and then runs ``runner.run``: nothing of
a student's code runs before that. Forking a process that has imported PyTorch but run no computation is
safe (no thread pool exists yet), and spares each child the seconds of importing it.
"""

import ctypes
import importlib.util
import json
import os
import select
import sys
import tempfile
import traceback

import numpy  # noqa: F401  (preloaded for every child)
import PIL.Image  # noqa: F401
import torch
import torchvision  # noqa: F401

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
HERE = os.path.dirname(os.path.abspath(__file__))


def load_runner():
    spec = importlib.util.spec_from_file_location("_grader_runner", os.path.join(HERE, "runner.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def become_child(request: dict, runner) -> None:
    """In the forked child: a fresh session, clean descriptors and environment, namespaces, then the runner."""
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 1 << 16)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # TMPDIR changed: recomputed on next use
        torch.set_num_threads(1)
        if request["namespaces"] and ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS | CLONE_NEWNET) failed")
        runner.run(request["config"])
    except BaseException:  # noqa: BLE001 - reported in the child's log; the parent sees "exited before answering"
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(70)
    os._exit(71)


def serve() -> None:
    runner = load_runner()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    requests = os.fdopen(0, "r")
    running: set[int] = set()
    while True:
        ready, _, _ = select.select([requests], [], [], 0.05)
        if ready:
            line = requests.readline()
            if not line:
                break
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                become_child(request, runner)
            running.add(pid)
            channel.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            running.discard(pid)
            channel.write(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    serve()
