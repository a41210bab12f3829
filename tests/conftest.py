"""pytest configuration: the test session is offline, and the autograder's options and plugin.

``python -m pytest`` runs every test and grades this repository; ``python -m pytest --submission=PATH``
grades the repository at PATH (a student's copy with this layout) and runs only the graded tests. The
grading itself happens in sandboxed child processes (``tests/autograder/engine.py``); this process only
compares their answers with the hidden reference and writes the grades.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import pytest

# Tests are hermetic: no code under test may fetch data (the scripts honour this variable).
os.environ["SIAMESE_TP_OFFLINE"] = "1"

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
GRADED_DIR = TESTS_DIR / "graded"

if str(TESTS_DIR) not in sys.path:  # the grader's packages (autograder, reference), whatever the import mode
    sys.path.insert(0, str(TESTS_DIR))

from autograder.engine import GradingEngine  # noqa: E402
from autograder.handout import write_handout  # noqa: E402
from autograder.plugin import GradingPlugin  # noqa: E402
from autograder.sandbox import Limits, can_switch_user, namespaces_available  # noqa: E402
from autograder.written import read_manual  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograder")
    group.addoption("--submission", default=None, metavar="PATH",
                    help="grade the repository at PATH (default: this repository)")
    group.addoption("--grades-dir", default=None, metavar="DIR",
                    help="where results.json, summary.md and marking.md go (default: grades/ in the invocation folder)")
    group.addoption("--jobs", type=int, default=2, metavar="N", help="questions graded at once (default 2)")
    group.addoption("--grading-seed", type=int, default=0, metavar="N",
                    help="seed of the graded inputs (default 0; recorded in results.json)")
    group.addoption("--time-limit", type=float, default=None, metavar="S",
                    help="wall-clock limit of every question's child, in seconds (default: per question, 60-90 s)")
    group.addoption("--memory-limit", type=float, default=6.0, metavar="GB",
                    help="address-space limit of each child in GB (default 6; PyTorch alone maps about 3.6)")
    group.addoption("--manual", default=None, metavar="CSV",
                    help="the instructor's marks of the written answers (columns student, question, score, comment)")
    group.addoption("--student", default=None, metavar="NAME",
                    help="this submission's name in --manual (default: the submission folder's name)")
    group.addoption("--starter", default=None, metavar="DIR",
                    help="the handed-out starter to grade against (default: generated from this repository)")
    group.addoption("--keep-workspaces", action="store_true", help="keep the children's folders (debugging)")


def submission_root(config: pytest.Config) -> Path:
    option = config.getoption("--submission")
    return Path(option).expanduser().resolve() if option else REPO_ROOT


def grades_external(config: pytest.Config) -> bool:
    return submission_root(config) != REPO_ROOT


def starter_root(config: pytest.Config) -> Path | Callable[[], Path]:
    """``--starter``, or a function that writes the starter from this repository when grading first needs it."""
    option = config.getoption("--starter")
    if option:
        return Path(option).expanduser().resolve()

    def generate() -> Path:
        folder = Path(tempfile.mkdtemp(prefix="siamese-tp-starter-"))
        config._starter_tmp = folder
        write_handout(folder / "starter")
        return folder / "starter"

    return generate


def pytest_configure(config: pytest.Config) -> None:
    root = submission_root(config)
    if not root.is_dir():
        raise pytest.UsageError(f"--submission {root}: no such folder (expected a copy of the repository)")
    if config.getoption("--jobs") < 1 or config.getoption("--memory-limit") <= 0:
        raise pytest.UsageError("--jobs must be >= 1 and --memory-limit > 0")
    grades_dir = Path(config.getoption("--grades-dir") or Path(config.invocation_params.dir) / "grades").resolve()
    limits = Limits(memory_bytes=int(config.getoption("--memory-limit") * (1 << 30)))
    engine = GradingEngine(root, starter_root(config), seed=config.getoption("--grading-seed"),
                           jobs=config.getoption("--jobs"), limits=limits, time_limit=config.getoption("--time-limit"),
                           hide=(REPO_ROOT, grades_dir), keep=config.getoption("--keep-workspaces"))
    student = config.getoption("--student") or root.name
    manual_path = config.getoption("--manual")
    manual = read_manual(Path(manual_path), student) if manual_path else {}
    context = {"student": student, "seed": config.getoption("--grading-seed"), "jobs": config.getoption("--jobs"),
               "limits": {"memory_gb": config.getoption("--memory-limit"), "time_limit_s": config.getoption("--time-limit"),
                          "per_question_default_s": "60-90"},
               "sandbox": {"own_user_per_child": can_switch_user(), "namespaces": namespaces_available()}}
    config._grading_engine = engine
    config.pluginmanager.register(GradingPlugin(root, grades_dir, GRADED_DIR, engine, manual, context),
                                  "autograder")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "_starter_tmp", None)
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Grading another repository collects only ``tests/graded``: the other tests check this one."""
    if not grades_external(config):
        return None
    path = Path(collection_path).resolve()
    if path == TESTS_DIR or path == GRADED_DIR or GRADED_DIR in path.parents:
        return None
    if TESTS_DIR in path.parents:
        return True
    return None
