"""Written answers: extract them into a marking sheet for the instructor, and merge the marks back.

The sheet (``marking.md`` per submission; ``marking.csv`` and ``marking.md`` for a class) shows each
written question's prompt, its rubric and the student's answer as written in ``report/answers/*.md``,
minus the starter's own text (the question and the placeholder). The instructor fills the ``score``
column of ``marking.csv`` and grades again with ``--manual marking.csv``: those marks enter
``results.json``, the summary and the gradebook.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from .points import WRITTEN, WRITTEN_BY_SLUG, WrittenQuestion

MAX_ANSWER_BYTES = 64 << 10
ANSWER_LINE_LIMIT = 25
PLACEHOLDER = "_Write your answer here._"
COMMENTS = re.compile(r"<!--.*?-->", re.S)
MANUAL_COLUMNS = ("student", "question", "score", "max", "comment")


@dataclass(frozen=True)
class ManualScore:
    score: float
    comment: str = ""


def read_manual(path: Path, student: str) -> dict[str, ManualScore]:
    """This student's marks from an instructor's CSV (columns student, question, score[, comment]).

    ``question`` is a slug (``ex1_q1``) or a key (``Ex1 Q1``); rows with an empty ``student`` apply to
    whoever is graded; rows with an empty score are not marked yet. One-line errors for a malformed file.
    """
    by_key = {written.key.lower(): written for written in WRITTEN}
    marks: dict[str, ManualScore] = {}
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SystemExit(f"error: --manual {path}: not a readable CSV ({error})") from None
    for number, row in enumerate(rows, start=2):
        if not {"question", "score"} <= set(row):
            raise SystemExit(f"error: --manual {path}: expected columns student, question, score, comment")
        if (row.get("student") or "").strip() not in ("", student) or not (row.get("score") or "").strip():
            continue
        name = (row["question"] or "").strip()
        written = WRITTEN_BY_SLUG.get(name) or by_key.get(name.lower())
        if written is None:
            raise SystemExit(f"error: --manual {path}:{number}: unknown written question {name!r}")
        try:
            score = float(row["score"])
        except ValueError:
            raise SystemExit(f"error: --manual {path}:{number}: score {row['score']!r} is not a number") from None
        if not 0 <= score <= written.points:
            raise SystemExit(f"error: --manual {path}:{number}: score {score:g} outside 0..{written.points} for "
                             f"{written.key}")
        marks[written.slug] = ManualScore(score, " ".join((row.get("comment") or "").split())[:300])
    return marks


def starter_lines(starter: Path | None, written: WrittenQuestion) -> set[str]:
    if starter is None or not (starter / written.answer_file).is_file():
        return set()
    return {line.strip() for line in (starter / written.answer_file).read_text().splitlines() if line.strip()}


def extract_answer(submission: Path, written: WrittenQuestion, starter: Path | None) -> tuple[str, list[str]]:
    """The student's answer to ``written`` and what the marker should notice about it."""
    path = submission / written.answer_file
    if path.is_symlink() or not path.is_file():
        return "", [f"no answer file ({written.answer_file})"]
    raw = path.read_bytes()[:MAX_ANSWER_BYTES].decode("utf-8", "replace")
    given = starter_lines(starter, written) | {PLACEHOLDER}
    lines = [line.rstrip() for line in COMMENTS.sub("", raw).splitlines()]
    answer = [line for line in lines if line.strip() not in given]
    while answer and not answer[0].strip():
        answer.pop(0)
    while answer and not answer[-1].strip():
        answer.pop()
    flags = []
    if not answer:
        flags.append("no answer written")
    elif len(answer) > ANSWER_LINE_LIMIT:
        flags.append(f"{len(answer)} lines (the TP asks for a concise report: {ANSWER_LINE_LIMIT} at most)")
    return "\n".join(answer), flags


def extract_all(submission: Path, starter: Path | None) -> dict[str, dict[str, object]]:
    """Every written answer of a submission with its notes, by question slug (saved as ``answers.json``)."""
    answers = {}
    for written in WRITTEN:
        answer, flags = extract_answer(submission, written, starter)
        answers[written.slug] = {"answer": answer, "flags": flags}
    return answers


def marking_sheet(name: str, answers: dict[str, dict[str, object]], manual: dict[str, ManualScore]) -> str:
    """The marking sheet of one submission, in Markdown."""
    lines = [f"# Marking sheet: {name}", "",
             "Score each written answer against its rubric; put the marks in the `score` column of "
             "`marking.csv` and grade again with `--manual marking.csv`.", ""]
    for written in WRITTEN:
        answer, flags = str(answers[written.slug]["answer"]), list(answers[written.slug]["flags"])
        marked = manual.get(written.slug)
        lines += [f"## {written.key}: {written.title} ({written.points} points)", "", f"> {written.prompt}", "",
                  "Rubric:", *(f"- [{points} pt] {criterion}" for points, criterion in written.rubric), ""]
        if flags:
            lines += [f"**Note:** {'; '.join(flags)}.", ""]
        if answer:
            lines += ["Answer:", "", "~~~~markdown", answer.replace("~~~~", "~ ~ ~ ~"), "~~~~", ""]
        lines += [f"Score: {marked.score:g} / {written.points}" if marked else f"Score: ___ / {written.points}", ""]
    return "\n".join(lines)


def marking_rows(student: str, answers: dict[str, dict[str, object]]) -> list[dict[str, str]]:
    """Rows of the class's ``marking.csv`` for one student: an unanswered question is marked 0 already."""
    rows = []
    for written in WRITTEN:
        flags = list(answers.get(written.slug, {}).get("flags", []))
        unanswered = not str(answers.get(written.slug, {}).get("answer", "")).strip()
        rows.append({"student": student, "question": written.slug, "score": "0" if unanswered else "",
                     "max": str(written.points), "comment": "; ".join(flags)})
    return rows
