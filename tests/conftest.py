"""pytest configuration: the autograder's ``--submission`` option and the ``submission`` fixture.

``python -m pytest`` runs every test and grades this repository; ``python -m pytest --submission=PATH``
grades the repository at PATH (a student's copy with this layout) and runs only the graded tests,
since the other tests check this repository, not the submission. Scores go to ``grades/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
GRADED_DIR = TESTS_DIR / "graded"

if str(TESTS_DIR) not in sys.path:  # the grader's packages (autograder, reference), whatever the import mode
    sys.path.insert(0, str(TESTS_DIR))

from autograder.loader import Submission, install_finder, uninstall_finder  # noqa: E402
from autograder.plugin import GradingPlugin  # noqa: E402

import reference  # noqa: E402,F401  (imported before the submission's root joins sys.path)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autograder")
    group.addoption("--submission", default=None, metavar="PATH",
                    help="grade the repository at PATH (default: this repository)")
    group.addoption("--grades-dir", default=None, metavar="DIR",
                    help="where results.json and summary.md go (default: grades/ in the invocation folder)")


def submission_root(config: pytest.Config) -> Path:
    option = config.getoption("--submission")
    return Path(option).expanduser().resolve() if option else REPO_ROOT


def grades_external(config: pytest.Config) -> bool:
    return submission_root(config) != REPO_ROOT


def pytest_configure(config: pytest.Config) -> None:
    root = submission_root(config)
    if not root.is_dir():
        raise pytest.UsageError(f"--submission {root}: no such folder (expected a copy of the repository)")
    config._submission_finder = install_finder(root, REPO_ROOT)
    grades_dir = Path(config.getoption("--grades-dir") or Path(config.invocation_params.dir) / "grades")
    config.pluginmanager.register(GradingPlugin(root, grades_dir.resolve(), GRADED_DIR), "autograder")


def pytest_unconfigure(config: pytest.Config) -> None:
    finder = getattr(config, "_submission_finder", None)
    if finder is not None:
        uninstall_finder(finder)


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


@pytest.fixture(scope="session")
def submission(pytestconfig: pytest.Config) -> Submission:
    """The repository being graded; ``submission.get("utils/TripletLoss.py", "TripletLoss")``."""
    return Submission(submission_root(pytestconfig))
