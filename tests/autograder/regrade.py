"""Grade a submission again exactly as its recorded grade was made, and say whether the result is the same.

    python -m tests.autograder.regrade GRADES_DIR SUBMISSION [--starter DIR] [--manual CSV] [--out DIR]

``GRADES_DIR/results.json`` is the grade to reproduce (a student's folder of a class grading, or one
grading's ``--grades-dir``); SUBMISSION is the student's folder or zip. The submission is graded again
(``classroom.grade_submission``, into a temporary folder unless ``--out``) on the same questions, with the
seed, memory and time limits, jobs and student name that the grade's ``audit`` block records. Each test's
score, status and message are then compared with the recorded ones. Identical: exit status 0. Otherwise
every test that changed is listed (exit status 1) with its cause, from the two audit blocks:

- **different grader version**: the content hash of the grader and hidden tests differs (or, same
  content, the repository's commit, from which the starter the other files are replaced by is made);
- **different submission content**: the sha256 of one of that question's files differs (named);
- neither: the test is **not deterministic**, a bug of the grader to fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit import graded_files
from .classroom import grade_submission
from .plugin import NOT_RUN
from .points import QUESTIONS, WRITTEN

COMPARED = ("score", "max_score", "status", "output")
WRITTEN_NAMES = tuple(f"(written, {written.answer_file})" for written in WRITTEN)


@dataclass
class Change:
    """One test whose recorded and new results differ, and why."""

    name: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    causes: list[str]

    def describe(self) -> str:
        def state(test: dict[str, Any] | None) -> str:
            if test is None:
                return "absent"
            return f"{test['status']} {test['score']:g}/{test['max_score']:g}"

        lines = [f"- {self.name}: {state(self.before)} -> {state(self.after)}"]
        if self.after is not None and self.after.get("status") != "passed":
            lines.append(f"    now: {self.after['output'].splitlines()[0]}")
        lines += [f"    cause: {cause}" for cause in self.causes]
        return "\n".join(lines)


def load_results(grades_dir: Path) -> dict[str, Any]:
    path = grades_dir / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {path}: not a readable results.json ({type(error).__name__})") from None
    if not isinstance(results.get("audit"), dict) or "seed" not in results["audit"]:
        raise SystemExit(f"error: {path}: no audit block (graded before the audit trail existed): cannot reproduce")
    return results


def files_of(test_name: str) -> tuple[str, ...]:
    """The submission files a test's result depends on (its question's files, or its answer file)."""
    for question in QUESTIONS:
        if test_name.startswith(f"{question.key} {question.title}:"):
            return question.files
    for written, suffix in zip(WRITTEN, WRITTEN_NAMES):
        if test_name.endswith(suffix):
            return (written.answer_file,)
    return ()


def graded_test_files(results: dict[str, Any]) -> list[str]:
    """The graded test modules the recorded grade ran (the others' tests say they did not run)."""
    ran = {test["name"] for test in results.get("tests", []) if NOT_RUN not in test.get("output", "")}
    return [f"tests/graded/{question.test_module}" for question in QUESTIONS
            if any(name.startswith(f"{question.key} {question.title}:") for name in ran)]


def grading_options(audit: dict[str, Any]) -> list[str]:
    limits = audit.get("limits", {})
    options = [f"--grading-seed={audit['seed']}"]
    if limits.get("memory_gb") is not None:
        options += [f"--memory-limit={limits['memory_gb']}"]
    if limits.get("time_limit_s") is not None:
        options += [f"--time-limit={limits['time_limit_s']}"]
    return options


def grader_difference(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """How the grader of two audit blocks differs, or None."""
    old, new = before.get("grader", {}), after.get("grader", {})
    commits = f"commit {str(old.get('git_commit'))[:12]} -> {str(new.get('git_commit'))[:12]}"
    if old.get("content_sha256") != new.get("content_sha256"):
        return (f"different grader version: content {str(old.get('content_sha256'))[:12]} -> "
                f"{str(new.get('content_sha256'))[:12]}, {commits}")
    if old.get("git_commit") != new.get("git_commit"):
        return f"different repository {commits} (same grader; the starter is made from the repository)"
    return None


def file_differences(before: dict[str, Any], after: dict[str, Any], files: tuple[str, ...]) -> list[str]:
    """The submission files among ``files`` whose sha256 differs between two audit blocks."""
    old = before.get("submission", {}).get("files_sha256", {})
    new = after.get("submission", {}).get("files_sha256", {})
    return [f"different submission content: {relpath} sha256 {str(old.get(relpath))[:12]} -> "
            f"{str(new.get(relpath))[:12]}" for relpath in files if old.get(relpath) != new.get(relpath)]


def causes_of(name: str, before: dict[str, Any], after: dict[str, Any], manual: bool) -> list[str]:
    """Why a test's result changed, from the two audit blocks."""
    causes = [cause for cause in [grader_difference(before, after)] if cause] + \
        file_differences(before, after, files_of(name))
    if not causes and name.endswith(WRITTEN_NAMES):
        causes.append("the instructor's marks differ: regrade with the same --manual CSV" if manual else
                      "written marks come from the instructor's CSV: pass it with --manual")
    if not causes:
        machines = [(before.get(key), after.get(key)) for key in ("python", "torch")]
        causes.append("same grader, same submission files: the test is NOT DETERMINISTIC, a grader bug to fix"
                      + ("" if all(old == new for old, new in machines) else
                         f" (the machine differs too: Python {machines[0][0]} -> {machines[0][1]}, torch "
                         f"{machines[1][0]} -> {machines[1][1]})"))
    return causes


def compare_results(before: dict[str, Any], after: dict[str, Any], manual: bool = False) -> list[Change]:
    """Every test whose score, status or message differs between two ``results.json``, with its causes."""
    old = {test["name"]: test for test in before.get("tests", [])}
    new = {test["name"]: test for test in after.get("tests", [])}
    changes = []
    for name in list(old) + [name for name in new if name not in old]:
        first, second = old.get(name), new.get(name)
        if first is not None and second is not None and all(first.get(key) == second.get(key) for key in COMPARED):
            continue
        causes = causes_of(name, before.get("audit", {}), after.get("audit", {}), manual)
        if first is None or second is None:
            causes.insert(0, "the test is new or gone: the grader's tests differ")
        changes.append(Change(name, first, second, causes))
    return changes


def regrade(grades_dir: Path, submission: Path, out: Path, *, starter: Path | None = None,
            manual: Path | None = None) -> tuple[dict[str, Any], dict[str, Any], list[Change]]:
    """Grade ``submission`` again into ``out`` as ``grades_dir/results.json`` records; return both and the changes."""
    before = load_results(grades_dir)
    audit = before["audit"]
    tests = graded_test_files(before)
    after = grade_submission(submission, out, starter=starter, jobs=int(audit.get("jobs", 1)), manual=manual,
                             student=audit.get("student"), tests=tests, options=grading_options(audit))
    if "audit" not in after:
        raise SystemExit(f"error: {submission}: the new grading failed: {after.get('output')}")
    return before, after, compare_results(before, after, manual is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grades_dir", help="folder holding the results.json to reproduce")
    parser.add_argument("submission", help="the student's submission (folder or zip)")
    parser.add_argument("--starter", default=None,
                        help="the handed-out starter the grade used (default: generated from this repository)")
    parser.add_argument("--manual", default=None, help="the instructor's marks of the written answers (marking.csv)")
    parser.add_argument("--out", default=None, help="keep the new grade in this folder (default: a temporary one)")
    args = parser.parse_args(argv)
    grades_dir, submission = Path(args.grades_dir).resolve(), Path(args.submission).resolve()
    if not submission.exists():
        raise SystemExit(f"error: {submission}: no such submission")
    if args.out and Path(args.out).resolve() == grades_dir:
        raise SystemExit("error: --out must differ from GRADES_DIR (the recorded grade would be overwritten)")
    starter = Path(args.starter).resolve() if args.starter else None
    manual = Path(args.manual).resolve() if args.manual else None
    with tempfile.TemporaryDirectory(prefix="siamese-tp-regrade-") as folder:
        out = Path(args.out).resolve() if args.out else Path(folder)
        before, after, changes = regrade(grades_dir, submission, out, starter=starter, manual=manual)
    audit = before["audit"]
    print(f"Regraded {submission} with seed {audit['seed']}, limits {audit.get('limits')}, jobs {audit.get('jobs')}, "
          f"on {', '.join(graded_test_files(before)) or 'no graded test'} (recorded in {grades_dir / 'results.json'})")
    if not changes:
        print(f"IDENTICAL: every test as recorded ({after['score']:g} points)")
        notes = [grader_difference(audit, after["audit"])] + file_differences(audit, after["audit"], graded_files())
        print("".join(f"note: {note}, without effect on the result\n" for note in notes if note), end="")
        return 0
    print(f"DIFFERENT: {len(changes)} test(s) changed, {before['score']:g} -> {after['score']:g} points")
    print("\n".join(change.describe() for change in changes))
    return 1


if __name__ == "__main__":
    sys.exit(main())
