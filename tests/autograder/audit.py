"""The audit trail of a grade: which grader, which submission content, which seeds and limits, when, where.

Every ``results.json`` carries it, so a grade can be defended and reproduced (``python -m
tests.autograder.regrade``): the grader's version is the hash of its own files (and the git commit when
there is one), the submission is the sha256 of each file the grade depends on.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from .files import sha256_file
from .points import QUESTIONS, WRITTEN

TESTS_DIR = Path(__file__).resolve().parents[1]
# What decides a grade: the grading engine and its children, the points, the graded tests, the reference.
# (The class runner, the similarity report, the starter and bundle builders decide none.)
GRADER_PARTS = ("autograder/engine.py", "autograder/sandbox.py", "autograder/questions.py", "autograder/points.py",
                "autograder/plugin.py", "autograder/reasons.py", "autograder/written.py", "autograder/audit.py",
                "autograder/files.py", "autograder/child", "graded", "reference", "conftest.py")


def graded_files() -> list[str]:
    """Every submission file a grade depends on: the code questions' files and the written answers."""
    return sorted({path for question in QUESTIONS for path in question.files}
                  | {written.answer_file for written in WRITTEN})


@lru_cache(maxsize=1)
def grader_version() -> dict[str, str]:
    """The sha256 over the grader's own files (name and content, sorted), and the git commit if any."""
    digest = hashlib.sha256()
    for part in GRADER_PARTS:
        root = TESTS_DIR / part
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                     and "__pycache__" not in p.parts)
        for path in files:
            digest.update(str(path.relative_to(TESTS_DIR)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    version = {"content_sha256": digest.hexdigest()}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TESTS_DIR, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0:
            version["git_commit"] = commit.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return version


def submission_hashes(root: Path) -> dict[str, str | None]:
    return {relpath: sha256_file(root / relpath) for relpath in graded_files()}


def audit_record(submission_root: Path, context: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {
        "grader": grader_version(),
        "submission": {"folder": submission_root.name, "files_sha256": submission_hashes(submission_root)},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "executable": sys.executable,
        **context,
    }
