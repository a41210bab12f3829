"""Grade a class: every submission of a folder (sub-folders or zip files), N at a time, one command.

    python -m tests.autograder.classroom CLASS_DIR --out grades/class --jobs 2 [--manual marking.csv]
    python -m tests.autograder.classroom --one SUBMISSION --out DIR      # one folder or zip (Gradescope)

Each submission is graded by its own grading process (``python -m pytest --submission=…``, whose children
are sandboxed and limited), under a time limit of its own: a submission that hangs or crashes the grader
costs only its own grade. Zip files are extracted safely (no absolute paths, no ``..``, no links, bounded
size); a zip or folder holding one folder is graded from inside it. Outputs under ``--out``: one folder per
student (``results.json``, ``summary.md``, ``marking.md``), ``gradebook.csv`` (a row per student, a column
per question), ``marking.csv`` (the written answers to mark: fill ``score`` and pass it back with
``--manual``) and ``marking.md`` (every student's answers, question by question).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from .files import write_text_atomic
from .points import QUESTIONS, TOTAL_POINTS, WRITTEN
from .written import MANUAL_COLUMNS, marking_rows

GRADER_ROOT = Path(__file__).resolve().parents[2]  # the folder holding pytest.ini and tests/
PROJECT_MARKERS = ("main.py", "data.py", "exercise1", "utils")
MAX_ZIP_BYTES = 512 << 20
MAX_ZIP_FILES = 20_000
SUBMISSION_SECONDS = 1200


class SubmissionProblem(Exception):
    """A submission that cannot be graded at all (unreadable zip, no project inside); the message says why."""


def extract_zip(path: Path, destination: Path) -> None:
    """Extract ``path`` into ``destination``, refusing what could escape it or fill the disk."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise SubmissionProblem(f"{path.name}: not a readable zip file ({type(error).__name__})") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ZIP_FILES:
            raise SubmissionProblem(f"{path.name}: more than {MAX_ZIP_FILES} files")
        total = 0
        for entry in entries:
            name = PurePosixPath(entry.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or not name.parts or name.parts[0] == "__MACOSX":
                continue
            if stat.S_ISLNK(entry.external_attr >> 16):
                continue  # a link could point at the grader's files
            target = destination.joinpath(*name.parts)
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            total += entry.file_size
            if total > MAX_ZIP_BYTES:
                raise SubmissionProblem(f"{path.name}: more than {MAX_ZIP_BYTES >> 20} MB once extracted")
            target.parent.mkdir(parents=True, exist_ok=True)
            # zipfile stops reading an entry at the size its header declares, which the total above bounds.
            with archive.open(entry) as source, target.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def project_root(folder: Path) -> Path:
    """The folder that holds the project: ``folder`` itself, or the one folder it wraps (up to three deep)."""
    for _ in range(4):
        if any((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
        children = [child for child in folder.iterdir() if not child.name.startswith((".", "__MACOSX"))]
        if len(children) != 1 or not children[0].is_dir() or children[0].is_symlink():
            break
        folder = children[0]
    raise SubmissionProblem(f"{folder.name}: no project inside (expected main.py, data.py, exercise1/, utils/)")


def student_name(path: Path) -> str:
    name = path.name[:-4] if path.suffix.lower() == ".zip" else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"


def grade_submission(submission: Path, out: Path, *, starter: Path | None, jobs: int = 1, manual: Path | None = None,
                     student: str | None = None, tests: list[str] | None = None,
                     timeout: float = SUBMISSION_SECONDS, options: list[str] | None = None) -> dict[str, Any]:
    """Grade one submission (folder or zip) into ``out``; returns its ``results.json`` (or a failure record).

    ``options``: more grading options (``--grading-seed``, ``--memory-limit``, ``--time-limit``: ``regrade.py``).
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="siamese-tp-submission-") as scratch:
        try:
            if submission.is_file() and submission.suffix.lower() == ".zip":
                extract_zip(submission, Path(scratch))
                root = project_root(Path(scratch))
            else:
                root = project_root(submission)
        except (SubmissionProblem, OSError) as error:
            return failure(out, f"not graded: {error}")
        # The grader's own pytest.ini and rootdir: a pytest.ini inside the submission must not be picked up.
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(GRADER_ROOT / "pytest.ini"),
                   "--rootdir", str(GRADER_ROOT), f"--submission={root}", f"--grades-dir={out}", f"--jobs={jobs}",
                   f"--student={student or student_name(submission)}",
                   *([f"--starter={starter}"] if starter else []), *([f"--manual={manual}"] if manual else []),
                   *(options or []), *(tests or ["tests/graded"])]
        try:
            done = subprocess.run(command, cwd=GRADER_ROOT, capture_output=True, timeout=timeout,
                                  start_new_session=True)
            (out / "grading.log").write_bytes(done.stdout[-200_000:] + done.stderr[-50_000:])
        except subprocess.TimeoutExpired:
            return failure(out, f"not graded: the grading took longer than {timeout:g} s")
    results = out / "results.json"
    if not results.is_file():
        return failure(out, "not graded: the grader stopped before writing results (see grading.log)")
    return json.loads(results.read_text())


def failure(out: Path, message: str) -> dict[str, Any]:
    record = {"score": 0, "output": message, "tests": [], "visibility": "visible"}
    write_text_atomic(out / "results.json", json.dumps(record, indent=2) + "\n")
    return record


def gradebook_row(student: str, results: dict[str, Any]) -> dict[str, Any]:
    """One gradebook line: total, code, written, and each question's points (from ``results.json``)."""
    row: dict[str, Any] = {"student": student, "total": results.get("score", 0)}
    by_question: dict[str, float] = {}
    for test in results.get("tests", []):
        key = " ".join(test["name"].split()[:2])
        by_question[key] = by_question.get(key, 0) + float(test.get("score", 0))
    audit = results.get("audit", {})
    row["code"] = audit.get("code_score", "")
    row["written"] = audit.get("written_score", "")
    for question in QUESTIONS:
        row[f"{question.key} (code)"] = by_question.get(question.key, 0)
    for written in WRITTEN:
        row[f"{written.key} (written)"] = by_question.get(written.key + " written", "")
    row["status"] = "graded" if results.get("tests") else results.get("output", "")
    return row


def csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def grade_class(class_dir: Path, out: Path, *, jobs: int, manual: Path | None, tests: list[str] | None,
                starter: Path | None, timeout: float) -> list[dict[str, Any]]:
    submissions = sorted(path for path in class_dir.iterdir() if not path.name.startswith(".")
                         and (path.is_dir() or path.suffix.lower() == ".zip") and not path.is_symlink())
    if not submissions:
        raise SystemExit(f"error: {class_dir}: no submission (expected one folder or zip file per student)")
    names = [student_name(path) for path in submissions]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: {class_dir}: two submissions share a name once cleaned; rename them")

    def grade(item: tuple[Path, str]) -> tuple[str, Path, dict[str, Any]]:
        path, name = item
        started = time.monotonic()
        results = grade_submission(path, out / name, starter=starter, manual=manual, student=name, tests=tests,
                                   timeout=timeout)
        print(f"{name}: {results.get('score', 0):g} / {TOTAL_POINTS} ({time.monotonic() - started:.0f} s)", flush=True)
        return name, path, results

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        graded = list(pool.map(grade, zip(submissions, names)))
    rows = [gradebook_row(name, results) for name, _, results in graded]
    columns = list(rows[0])
    write_text_atomic(out / "gradebook.csv", csv_text(rows, columns))
    marking = []
    sheets = []
    for name, _, _ in graded:
        sheet, answers = out / name / "marking.md", out / name / "answers.json"
        if sheet.is_file() and answers.is_file():
            sheets.append(sheet.read_text())
            marking += marking_rows(name, json.loads(answers.read_text()))
    write_text_atomic(out / "marking.csv", csv_text(marking, list(MANUAL_COLUMNS)))
    write_text_atomic(out / "marking.md", "\n\n".join(sheets))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("class_dir", nargs="?", help="folder of submissions: one folder or zip file per student")
    parser.add_argument("--one", default=None, help="grade this one submission (folder or zip) into --out")
    parser.add_argument("--out", required=True, help="where the grades go")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--manual", default=None, help="the instructor's marks of the written answers (marking.csv)")
    parser.add_argument("--starter", default=None, help="the handed-out starter (default: generated once from here)")
    parser.add_argument("--timeout", type=float, default=SUBMISSION_SECONDS,
                        help=f"time limit of one submission's grading in seconds (default {SUBMISSION_SECONDS})")
    parser.add_argument("--tests", nargs="*", default=None, metavar="TEST_FILE",
                        help="grade with these graded test files only (default: all)")
    args = parser.parse_args(argv)
    if (args.class_dir is None) == (args.one is None):
        parser.error("give CLASS_DIR or --one SUBMISSION")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    manual = Path(args.manual).resolve() if args.manual else None
    if manual is not None and not manual.is_file():
        raise SystemExit(f"error: --manual {manual}: no such file")
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="siamese-tp-starter-") as folder:
        starter = Path(args.starter).resolve() if args.starter else None
        if starter is None and (GRADER_ROOT / ".git").exists():
            from .handout import write_handout

            starter = Path(folder) / "starter"
            write_handout(starter)
        if args.one:
            results = grade_submission(Path(args.one).resolve(), out, starter=starter, jobs=args.jobs, manual=manual,
                                       tests=args.tests, timeout=args.timeout)
            print(f"{results.get('score', 0):g} / {TOTAL_POINTS}: {out / 'results.json'}")
            return
        class_dir = Path(args.class_dir).resolve()
        if not class_dir.is_dir():
            raise SystemExit(f"error: {class_dir}: no such folder")
        started = time.monotonic()
        rows = grade_class(class_dir, out, jobs=args.jobs, manual=manual, tests=args.tests, starter=starter,
                           timeout=args.timeout)
    print(f"{len(rows)} submissions in {time.monotonic() - started:.0f} s: {out / 'gradebook.csv'}, "
          f"{out / 'marking.csv'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
