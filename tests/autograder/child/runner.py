"""What a sandboxed grading child does, from ``run(config_path)`` on (called by ``zygote.py`` in the
child it has just forked, still root when the grader is).

Before any student code runs: in the child's own mount namespace, the grader's folders hidden and the
Python installation made visible (``isolate_filesystem``); hard resource limits (address space, CPU time,
file size, open files, processes); the switch to the child's own unprivileged user id. Then the question's
probes run (``probes.py``) and their plain-data answers go to ``out/result.pt``; the process ends with
``os._exit`` so that no handler registered by student code runs after the answer is written.
"""

import importlib.util
import json
import os
import resource
import subprocess
import sys


def apply_limits(limits: dict, user: dict | None) -> None:
    def hard(kind: int, value: int) -> None:
        resource.setrlimit(kind, (value, value))

    hard(resource.RLIMIT_AS, int(limits["memory_bytes"]))
    cpu = int(limits["cpu_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU at the soft limit, SIGKILL at the hard one
    hard(resource.RLIMIT_FSIZE, int(limits["file_bytes"]))
    hard(resource.RLIMIT_NOFILE, int(limits["open_files"]))
    hard(resource.RLIMIT_CORE, 0)
    if user is not None:
        hard(resource.RLIMIT_NPROC, int(limits["processes"]))
        os.setgroups([])
        os.setgid(user["gid"])
        os.setuid(user["uid"])
        if os.getuid() == 0 or os.geteuid() == 0:
            raise SystemExit("grading child: could not drop root privileges")


def mount(*arguments: str) -> None:
    subprocess.run(["mount", *arguments], check=True, capture_output=True)


def isolate_filesystem(hide: list, expose: list, scratch: str) -> None:
    """In this child's own mount namespace (still root): an empty mount over each folder of ``hide`` (the
    grader's repository, the grades); and over each folder, above a path of ``expose`` (the Python
    installation), that is hidden or closed to other users, an empty world-readable mount into which only
    the subfolders leading to ``expose`` are bound back."""
    mount("--make-rprivate", "/")
    hidden = {os.path.realpath(path) for path in hide if os.path.isdir(path)}
    hidden = {path for path in hidden if not any(path.startswith(other + os.sep) for other in hidden)}
    reopened: dict = {}
    for path in expose:
        parts = os.path.realpath(path).split(os.sep)
        for depth in range(1, len(parts)):
            folder = os.sep.join(parts[:depth]) or os.sep
            if folder in hidden or not os.stat(folder).st_mode & 0o001:
                reopened.setdefault(folder, set()).add(os.sep.join(parts[:depth + 1]))
                break
    for folder in sorted(hidden - set(reopened)):
        mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", folder)
    for index, (folder, needed) in enumerate(sorted(reopened.items())):
        stashed = []
        for number, path in enumerate(sorted(needed)):
            stash = os.path.join(scratch, f"{index}-{number}")
            os.makedirs(stash)
            mount("--bind", path, stash)
            stashed.append((path, stash))
        mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", folder)
        for path, stash in stashed:
            os.makedirs(path, exist_ok=True)
            mount("--bind", stash, path)


def load_harness_module(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run(config_path: str) -> None:
    with open(config_path) as handle:
        config = json.load(handle)
    if config["isolate"]:
        isolate_filesystem(config["hide"], config["expose"], config["scratch"])
    apply_limits(config["limits"], config["user"])
    os.umask(0o022)
    os.chdir(config["repo"])
    harness = config["harness"]
    for name in sorted(os.listdir(harness)):  # the test doubles this question needs, and only those
        if name.startswith("doubles_") and name.endswith(".py"):
            load_harness_module(f"_grader_{name[:-3]}", os.path.join(harness, name))
    probes = load_harness_module("_grader_probes", os.path.join(harness, "probes.py"))
    # The submission's project files, and nothing else, sit in the copy: its root goes first.
    sys.path.insert(0, config["repo"])
    result = probes.run_question(config["question"], config)

    import torch

    out = config["out"]
    temporary = os.path.join(out, ".result.pt.tmp")
    torch.save(result, temporary)
    os.replace(temporary, os.path.join(out, "result.pt"))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
