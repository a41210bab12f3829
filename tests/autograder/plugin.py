"""The pytest plugin that turns graded test outcomes into points.

Each test under ``tests/graded/`` is worth the points the table gives it (``points.py``) when its setup,
call and teardown all pass, and 0 otherwise, with a one-line reason. Results go to
``<grades-dir>/results.json`` (Gradescope's ``results.json`` schema) and ``<grades-dir>/summary.md``;
both are written once collection is done (every test "did not run") and rewritten after each graded
test, so a grading process that dies still leaves a complete table whose maximum is 100.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .points import QUESTION_BY_MODULE, QUESTIONS, TOTAL_POINTS, Question
from .reasons import reason_for

NOT_RUN = "did not run (deselected, not collected, or grading stopped before it)"


@dataclass
class TestResult:
    question: Question
    name: str
    max_score: int
    description: str
    status: str = "not run"  # "passed", "failed" or "not run"
    reason: str = NOT_RUN

    @property
    def score(self) -> int:
        return self.max_score if self.status == "passed" else 0


def _describe(name: str, function: Any = None) -> str:
    doc = (getattr(function, "__doc__", None) or "").strip()
    if doc:
        return " ".join(doc.split("\n\n")[0].split()).rstrip(".")
    return name.removeprefix("test_").replace("_", " ")


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _number(question: Question, index: int) -> str:
    """Gradescope's test number, ``"2.4.1"`` for the first test of Ex2 Q4."""
    exercise, number = re.findall(r"\d+", question.key)[:2]
    return f"{exercise}.{number}.{index}"


class GradingPlugin:
    """Scores the graded tests of one pytest session (see the module docstring)."""

    def __init__(self, submission_root: Path, grades_dir: Path, graded_dir: Path):
        self.submission_root = submission_root
        self.grades_dir = grades_dir
        self.graded_dir = graded_dir.resolve()
        self.started = time.time()
        self.results: dict[tuple[str, str], TestResult] = {}
        for question in QUESTIONS:
            for name, points in question.tests.items():
                self.results[(question.test_module, name)] = TestResult(question, name, points, _describe(name))
        self.graded_items: dict[str, tuple[str, str]] = {}  # nodeid -> results key

    # ------------------------------------------------------------------ collection
    def _key(self, item: pytest.Item) -> tuple[str, str] | None:
        path = Path(str(item.path)).resolve()
        if path.parent != self.graded_dir:
            return None
        return path.name, getattr(item, "originalname", None) or item.name

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        for item in items:
            key = self._key(item)
            if key is None:
                continue
            if key in self.graded_items.values():  # one test, one score: loop over cases inside the test
                raise pytest.UsageError(f"tests/graded/{key[0]}::{key[1]} is parametrized; graded tests must not be")
            self.graded_items[item.nodeid] = key
            if key in self.results:
                self.results[key].description = _describe(key[1], getattr(item, "function", None))
                self.results[key].reason = "did not run (grading stopped before it)"
            else:  # a graded test missing from the table: shown, worth nothing, flagged to the instructor
                question = QUESTION_BY_MODULE.get(key[0])
                if question is None:
                    raise pytest.UsageError(f"tests/graded/{key[0]} has no entry in tests/autograder/points.py")
                self.results[key] = TestResult(question, key[1], 0, _describe(key[1], getattr(item, "function", None)))
                item.warn(pytest.PytestWarning(f"{item.nodeid}: not in the points table (worth 0 points)"))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:  # nothing will run: keep the last grades as they are
            self.graded_items.clear()
        if self.graded_items:
            self.write()

    # ------------------------------------------------------------------ outcomes
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> Any:
        report = yield
        key = self.graded_items.get(item.nodeid)
        if key is None:
            return report
        result = self.results[key]
        if report.when == "setup":
            result.status, result.reason = "failed", "did not finish"
        if report.failed or (report.skipped and report.when != "teardown"):
            if result.status != "failed" or result.reason == "did not finish":
                result.status = "failed"
                if report.skipped:
                    result.reason = "skipped: " + str(report.longrepr[-1]).removeprefix("Skipped: ")
                elif call.excinfo is not None:
                    # Setup is where a shared run (a dry run, a training) fails: the reason alone says it.
                    phase = "in teardown: " if report.when == "teardown" else ""
                    result.reason = phase + reason_for(call.excinfo, self.submission_root)
                else:
                    result.reason = f"failed in {report.when}"
        elif report.when == "call" and report.passed:
            result.status, result.reason = "passed", ""
        if report.when == "teardown":
            self.write()
        return report

    # ------------------------------------------------------------------ reporting
    @property
    def score(self) -> int:
        return sum(result.score for result in self.results.values())

    def ordered(self) -> list[TestResult]:
        return sorted(self.results.values(), key=lambda r: (QUESTIONS.index(r.question), r.max_score == 0))

    def results_json(self) -> dict[str, Any]:
        tests = []
        index_in_question: dict[str, int] = {}
        for result in self.ordered():
            index = index_in_question[result.question.key] = index_in_question.get(result.question.key, 0) + 1
            files = ", ".join(result.question.files)
            if result.status == "passed":
                output = f"Passed. Checked: {result.description}"
            else:
                output = f"Failed: {result.reason}\nChecked: {result.description}\nFiles: {files}"
            tests.append({
                "name": f"{result.question.key} {result.question.title}: {result.description}",
                "number": _number(result.question, index),
                "score": result.score,
                "max_score": result.max_score,
                "status": "passed" if result.status == "passed" else "failed",
                "output": output,
                "visibility": "visible",
            })
        return {
            "score": self.score,
            "execution_time": round(time.time() - self.started, 2),
            "output": f"Total: {self.score} / {TOTAL_POINTS}",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
        }

    def question_rows(self) -> list[tuple[Question, int, int, list[TestResult]]]:
        rows = []
        for question in QUESTIONS:
            results = [r for r in self.ordered() if r.question is question]
            lost = [r for r in results if r.status != "passed" and r.max_score > 0]
            rows.append((question, sum(r.score for r in results), question.points, lost))
        return rows

    def summary_markdown(self) -> str:
        elapsed = time.time() - self.started
        lines = [
            f"# Grade: {self.score} / {TOTAL_POINTS}",
            "",
            f"Submission: `{self.submission_root}`, graded on {time.strftime('%Y-%m-%d %H:%M')} in {elapsed:.1f} s.",
            "",
            "| Question | Graded item | Points | Max | Lost on |",
            "|---|---|---:|---:|---|",
        ]
        for question, score, maximum, lost in self.question_rows():
            reasons = "<br>".join(f"{r.description} ({r.max_score} pt): {r.reason}".replace("|", "\\|")
                                  for r in lost)
            lines.append(f"| {question.key} | {question.title} | {score} | {maximum} | {reasons} |")
        lines += [f"| **Total** | | **{self.score}** | **{TOTAL_POINTS}** | |", ""]
        return "\n".join(lines)

    def write(self) -> None:
        _write_atomic(self.grades_dir / "results.json", json.dumps(self.results_json(), indent=2) + "\n")
        _write_atomic(self.grades_dir / "summary.md", self.summary_markdown())

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.graded_items:
            self.write()

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not self.graded_items:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", f"grade: {self.score} / {TOTAL_POINTS}  ({self.submission_root})")
        for question, score, maximum, lost in self.question_rows():
            write(f"{question.key:7s} {question.title[:46]:46s} {score:3d} / {maximum:3d}")
            for result in lost:
                if result.status != "not run":
                    write(f"        - {result.name} ({result.max_score} pt): {result.reason}")
            not_run = [result for result in lost if result.status == "not run"]
            if not_run:
                write(f"        - {len(not_run)} test(s) did not run ({sum(r.max_score for r in not_run)} pt)")
        write(f"results: {self.grades_dir / 'results.json'}  summary: {self.grades_dir / 'summary.md'}")
