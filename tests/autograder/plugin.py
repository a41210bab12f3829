"""The pytest plugin that turns graded test outcomes into points, in the trusted grading process only.

Each test under ``tests/graded/`` is worth the points the table gives it (``points.py``) when its setup,
call and teardown all pass, and 0 otherwise, with a one-line reason in the grader's words. Written
questions are scored from the instructor's marking (``--manual scores.csv``), else shown as awaiting
marking. Results go to ``<grades-dir>/results.json`` (Gradescope's schema, with an ``audit`` block),
``summary.md`` and ``marking.md`` (the student's written answers beside the rubric); they are written once
collection is done and rewritten after each graded test, so a grading that dies still leaves a table whose
maximum is 100. Nothing here imports or runs submission code.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .audit import audit_record
from .points import CODE_POINTS, QUESTION_BY_MODULE, QUESTIONS, TOTAL_POINTS, WRITTEN, WRITTEN_POINTS, Question
from .reasons import reason_for
from .files import write_text_atomic
from .written import ManualScore, extract_all, marking_sheet

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


def _number(key: str, index: int) -> str:
    """Gradescope's test number, ``"2.4.1"`` for the first test of Ex2 Q4."""
    exercise, number = re.findall(r"\d+", key)[:2]
    return f"{exercise}.{number}.{index}"


class GradingPlugin:
    """Scores the graded tests of one pytest session (see the module docstring)."""

    def __init__(self, submission_root: Path, grades_dir: Path, graded_dir: Path, engine: Any,
                 manual: dict[str, ManualScore], context: dict[str, Any]):
        self.submission_root = submission_root
        self.grades_dir = grades_dir
        self.graded_dir = graded_dir.resolve()
        self.engine = engine
        self.manual = manual
        self.context = context
        self.started = time.time()
        self.results: dict[tuple[str, str], TestResult] = {}
        for question in QUESTIONS:
            for name, points in question.tests.items():
                self.results[(question.test_module, name)] = TestResult(question, name, points, _describe(name))
        self.graded_items: dict[str, tuple[str, str]] = {}  # nodeid -> results key
        self.answers: dict[str, dict[str, Any]] | None = None  # the written answers, extracted once

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
            if key not in self.results:
                raise pytest.UsageError(f"tests/graded/{key[0]}::{key[1]} has no entry in tests/autograder/points.py")
            self.graded_items[item.nodeid] = key
            self.results[key].description = _describe(key[1], getattr(item, "function", None))
            self.results[key].reason = "did not run (grading stopped before it)"

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if session.config.option.collectonly:  # nothing will run: keep the last grades as they are
            self.graded_items.clear()
        if self.graded_items:
            modules = {module for module, _ in self.graded_items.values()}
            self.engine.start([QUESTION_BY_MODULE[module].slug for module in sorted(modules)])
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
                    phase = "in teardown: " if report.when == "teardown" else ""
                    result.reason = phase + reason_for(call.excinfo)
                else:
                    result.reason = f"failed in {report.when}"
        elif report.when == "call" and report.passed:
            result.status, result.reason = "passed", ""
        if report.when == "teardown":
            self.write()
        return report

    # ------------------------------------------------------------------ reporting
    @property
    def code_score(self) -> int:
        return sum(result.score for result in self.results.values())

    @property
    def written_score(self) -> float:
        return sum(self.manual[q.slug].score for q in WRITTEN if q.slug in self.manual)

    @property
    def score(self) -> float:
        return self.code_score + self.written_score

    def ordered(self) -> list[TestResult]:
        return sorted(self.results.values(), key=lambda r: QUESTIONS.index(r.question))

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
            tests.append({"name": f"{result.question.key} {result.question.title}: {result.description}",
                          "number": _number(result.question.key, index), "score": result.score,
                          "max_score": result.max_score, "status": "passed" if result.status == "passed" else "failed",
                          "output": output, "visibility": "visible"})
        for written in WRITTEN:
            marked = self.manual.get(written.slug)
            output = (f"Marked by the instructor: {marked.score:g} / {written.points}"
                      + (f". {marked.comment}" if marked.comment else "") if marked
                      else "Written answer: awaiting the instructor's marking")
            tests.append({"name": f"{written.key} {written.title} (written, {written.answer_file})",
                          "number": _number(written.key, 9), "score": marked.score if marked else 0,
                          "max_score": written.points, "status": "passed" if marked else "failed",
                          "output": output, "visibility": "visible"})
        pending = [q for q in WRITTEN if q.slug not in self.manual]
        note = f" (written answers awaiting marking: {sum(q.points for q in pending)} points)" if pending else ""
        return {
            "score": self.score,
            "execution_time": round(time.time() - self.started, 2),
            "output": f"Total: {self.score:g} / {TOTAL_POINTS}{note}",
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
            "audit": audit_record(self.submission_root, {
                **self.context, "code_score": self.code_score, "written_score": self.written_score,
                "questions_graded": sorted({QUESTION_BY_MODULE[module].slug for module, _ in self.graded_items.values()}),
                "starter_sha256": self.engine.starter_hash if self.graded_items else None}),
        }

    def question_rows(self) -> list[tuple[str, str, float, int, list[str]]]:
        rows = []
        for question in QUESTIONS:
            results = [r for r in self.ordered() if r.question is question]
            lost = [f"{r.description} ({r.max_score} pt): {r.reason}" for r in results if r.status != "passed"]
            rows.append((question.key, question.title, sum(r.score for r in results), question.points, lost))
        for written in WRITTEN:
            marked = self.manual.get(written.slug)
            rows.append((written.key, f"{written.title} (written)", marked.score if marked else 0, written.points,
                         [] if marked else ["awaiting marking"]))
        return rows

    def summary_markdown(self) -> str:
        elapsed = time.time() - self.started
        lines = [f"# Grade: {self.score:g} / {TOTAL_POINTS}", "",
                 f"Code {self.code_score} / {CODE_POINTS}, written {self.written_score:g} / {WRITTEN_POINTS}. "
                 f"Submission `{self.submission_root.name}`, graded on {time.strftime('%Y-%m-%d %H:%M')} in "
                 f"{elapsed:.1f} s.", "",
                 "| Question | Graded item | Points | Max | Lost on |", "|---|---|---:|---:|---|"]
        for key, title, score, maximum, lost in self.question_rows():
            reasons = "<br>".join(text.replace("|", "\\|") for text in lost)
            lines.append(f"| {key} | {title} | {score:g} | {maximum} | {reasons} |")
        lines += [f"| **Total** | | **{self.score:g}** | **{TOTAL_POINTS}** | |", ""]
        return "\n".join(lines)

    def write(self) -> None:
        write_text_atomic(self.grades_dir / "results.json", json.dumps(self.results_json(), indent=2) + "\n")
        write_text_atomic(self.grades_dir / "summary.md", self.summary_markdown())
        if self.answers is None:
            self.answers = extract_all(self.submission_root, self.engine.starter)
            write_text_atomic(self.grades_dir / "answers.json", json.dumps(self.answers, indent=2) + "\n")
        write_text_atomic(self.grades_dir / "marking.md",
                          marking_sheet(self.context["student"], self.answers, self.manual))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.graded_items:
            self.write()
        self.engine.close()

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        if not self.graded_items:
            return
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", f"grade: {self.score:g} / {TOTAL_POINTS}  ({self.submission_root})")
        for key, title, score, maximum, lost in self.question_rows():
            write(f"{key:7s} {title[:46]:46s} {score:5g} / {maximum:3d}")
            for text in lost:
                write(f"        - {text}")
        write(f"results: {self.grades_dir / 'results.json'}  summary: {self.grades_dir / 'summary.md'}  "
              f"marking sheet: {self.grades_dir / 'marking.md'}")
