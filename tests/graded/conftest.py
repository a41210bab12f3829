"""Fixtures of the graded tests: ``run`` is the answers of this module's question, from its sandboxed child.

The graded tests run in the trusted grading process. They never import submission code: they read what
the child returned (``run.probe(name)``, ``run.child_bytes(path)``) and compare it with the hidden
reference computed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autograder.engine import QuestionRun
from autograder.points import QUESTION_BY_MODULE


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The children compute with one thread; the references here too, so both sum in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest) -> QuestionRun:
    question = QUESTION_BY_MODULE[Path(str(request.module.__file__)).name]
    return request.config._grading_engine.result(question.slug)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The engine enforces each child's own limits; a graded test only waits for its question's answers.
    for item in items:
        if Path(str(item.path)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.timeout(3600))
