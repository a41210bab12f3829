"""Class integrity: how alike every pair of submissions is, the starter's own text never counting.

    python -m tests.autograder.similarity CLASS_DIR --out DIR [--threshold 0.5] [--starter DIR]

CLASS_DIR holds one folder or zip file per student, as for grading (``classroom.py``); zips are extracted
with the grader's safe extraction. Two rankings come out, one for the code students write (the files of
the code questions in ``points.QUESTIONS``) and one for the written answers (``points.WRITTEN``):

- **Fingerprints** (MOSS's winnowing, Schleimer et al. 2003, as implemented by ``copydetect``): code is
  tokenised by Pygments, every name becomes ``V``/``F``/``O``, every string ``S``, and comments and layout
  disappear; a written answer is lower-cased with its layout and Markdown marks removed. The fingerprints
  are the hashes of every ``k``-character window of that text (winnowing window 1: all of them are kept,
  so the report is the same in every run, whatever Python's per-process string hashing).
- **Boilerplate**: the lines of the starter's version of a code file are left out first (compared without
  indentation; for an answer, ``written.extract_answer`` leaves out the starter's lines); then the
  fingerprints of the starter's version (for an answer: the starter's answer file and the TP's question)
  never count, nor those in more than half of the versions of a file that students wrote, and in at
  least ``COMMON_MIN`` of them (the idioms every correct solution writes; MOSS's ``-m``).
- **Similarity** of a pair on a file: the share of one side's remaining fingerprinted text that the other
  side also has, the larger of the two shares. Overall: the same over all the files both students wrote.
  A pair is flagged when its overall similarity reaches ``--threshold`` on at least ``MIN_MATCH`` matching
  characters of normalised text.

Renaming variables, reordering functions or rewriting comments leaves a copy's fingerprints in place;
two solutions written independently share only short runs of tokens, below the window length.

Outputs in ``--out``: ``similarity.md`` (both rankings as text), ``similarity_pairs.csv`` (a row per pair),
``similarity_students.csv`` (a row per student for the gradebook: the most similar classmate for code and
for answers, and the flags) and ``similarity.html`` (the rankings, then every flagged or top-ranked pair
with its matching regions side by side). Similarity is evidence to read, not a verdict.
"""

from __future__ import annotations

import argparse
import html
import io
import itertools
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from copydetect import CodeFingerprint, compare_files

from .classroom import GRADER_ROOT, SubmissionProblem, csv_text, extract_zip, project_root, student_name
from .files import write_text_atomic
from .points import QUESTIONS, WRITTEN
from .written import extract_answer

CODE_FILES = tuple(sorted({path for question in QUESTIONS for path in question.files}))
ANSWER_FILES = tuple(written.answer_file for written in WRITTEN)
CODE_K = 40  # characters of tokenised code (about 25 tokens) in one fingerprint
TEXT_K = 30  # characters of normalised prose (about 5 words) in one fingerprint
COMMON_SHARE = 0.5  # fingerprints in more than this share of the class's versions of a file are idioms
COMMON_MIN = 4  # ... once at least this many versions hold them (a copy shared by 2 or 3 always counts)
MIN_MATCH = 120  # characters of normalised text a flagged pair must share at least
THRESHOLD = 0.5
MAX_FILE_BYTES = 512 << 10
RANKED_IN_TEXT, RANKED_IN_HTML = 20, 200  # pairs in the tables (all of them in the CSV)
DETAILS_PER_KIND = 8  # pairs shown in full in the HTML besides the flagged ones
CONTEXT_LINES = 2


@dataclass
class Version:
    """One student's own text in one file, its line numbers in the file (code) and its fingerprint.

    ``fingerprint`` is None when nothing of the student's own remains (a stub handed in as given).
    """

    text: str
    numbers: list[int] | None
    fingerprint: CodeFingerprint | None


@dataclass
class FileMatch:
    path: str
    similarity: float  # the larger of the two sides' shares
    shares: tuple[float, float]
    matched: int  # characters of normalised text both sides share (side a)
    sizes: tuple[int, int]  # fingerprinted characters of each side
    slices: tuple[np.ndarray, np.ndarray]  # matching regions in each side's text (2 x n: starts, ends)


@dataclass
class Pair:
    kind: str  # "code" or "written"
    a: str
    b: str
    files: list[FileMatch] = field(default_factory=list)
    overall: float = 0.0
    matched: int = 0
    flagged: bool = False


# --------------------------------------------------------------------------- reading a class
def submissions_in(class_dir: Path, scratch: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Each student's project folder (zips extracted under ``scratch``), and why others could not be read."""
    entries = sorted(path for path in class_dir.iterdir() if not path.name.startswith(".") and not path.is_symlink()
                     and (path.is_dir() or path.suffix.lower() == ".zip"))
    roots: dict[str, Path] = {}
    problems: dict[str, str] = {}
    for path in entries:
        name = student_name(path)
        if name in roots or name in problems:
            raise SystemExit(f"error: {class_dir}: two submissions are named {name!r} once cleaned; rename one")
        try:
            if path.is_dir():
                roots[name] = project_root(path)
            else:
                extract_zip(path, scratch / name)
                roots[name] = project_root(scratch / name)
        except (SubmissionProblem, OSError) as error:
            problems[name] = str(error)
    return roots, problems


def read_text(root: Path, relpath: str) -> str | None:
    """``root/relpath``'s text (bounded, undecodable bytes replaced); None when missing, a link or outside ``root``."""
    path = root / relpath
    if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
        return None
    with path.open("rb") as handle:
        return handle.read(MAX_FILE_BYTES).decode("utf-8", "replace")


def normalise_prose(text: str) -> str:
    """Lower case, Markdown emphasis/quote/table marks and layout removed: what rewording does not change."""
    return " ".join(re.sub(r"[*_`#>|~]", " ", text.lower()).split())


# --------------------------------------------------------------------------- fingerprints
def fingerprint(text: str, name: str, k: int, code: bool) -> CodeFingerprint:
    """copydetect's fingerprint of ``text``: tokenised and names normalised for code, as is for prose."""
    return CodeFingerprint(name, k, 1, filter=code, language="python" if code else None, fp=io.StringIO(text))


def drop_fingerprints(print_: CodeFingerprint, hashes: set[int]) -> None:
    """Remove ``hashes`` (boilerplate, idioms) from a fingerprint and recount the text they cover.

    Done on the fingerprint's documented attributes rather than through its ``boilerplate`` argument, which
    treats a k-gram repeated inside one file as boilerplate and drops its earlier occurrences.
    """
    print_.hashes = print_.hashes - hashes
    print_.hash_idx = {value: where for value, where in print_.hash_idx.items() if value not in hashes}
    covered = np.zeros(len(print_.filtered_code) + print_.k, dtype=bool)
    for where in print_.hash_idx.values():
        for start in where:
            covered[start:start + print_.k] = True
    print_.token_coverage = int(covered.sum())


def own_code(text: str, starter_text: str) -> tuple[str, list[int]]:
    """The lines of ``text`` that are not lines of the starter (compared without indentation), and their numbers.

    Fingerprints alone would keep the windows that straddle a stub's given signature and the student's
    first line: every student filling the same stub would share them.
    """
    given = {line.strip() for line in starter_text.splitlines()}
    kept = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip() not in given]
    return "".join(line + "\n" for _, line in kept), [number for number, _ in kept]


def versions_of(relpath: str, owns: dict[str, tuple[str, list[int] | None]], boilerplate: list[str], k: int,
                code: bool) -> dict[str, Version]:
    """Every student's fingerprinted own text of one file, boilerplate and class-wide idioms removed."""
    given: set[int] = set()
    for text in boilerplate:
        given |= fingerprint(text, relpath, k, code).hashes
    versions = {name: Version(text, numbers, fingerprint(text, relpath, k, code) if text.strip() else None)
                for name, (text, numbers) in owns.items()}
    written = [version.fingerprint for version in versions.values() if version.fingerprint is not None]
    counts = Counter(value for print_ in written for value in print_.hashes - given)
    holders = max(COMMON_MIN, int(COMMON_SHARE * len(written)) + 1)
    common = {value for value, count in counts.items() if count >= holders}
    for version in versions.values():
        if version.fingerprint is not None:
            drop_fingerprints(version.fingerprint, given | common)
            if version.fingerprint.token_coverage == 0:
                version.fingerprint = None
    return versions


def code_versions(roots: dict[str, Path], starter: Path) -> dict[str, dict[str, Version]]:
    by_file = {}
    for relpath in CODE_FILES:
        given = read_text(starter, relpath) or ""
        texts = {name: read_text(root, relpath) for name, root in roots.items()}
        owns = {name: own_code(text, given) for name, text in texts.items() if text is not None}
        by_file[relpath] = versions_of(relpath, owns, [given], CODE_K, code=True)
    return by_file


def answer_versions(roots: dict[str, Path], starter: Path) -> dict[str, dict[str, Version]]:
    by_file = {}
    for written in WRITTEN:
        owns = {name: (normalise_prose(extract_answer(root, written, starter)[0]), None)
                for name, root in roots.items()}
        question = [normalise_prose(read_text(starter, written.answer_file) or ""), normalise_prose(written.prompt)]
        by_file[written.answer_file] = versions_of(written.answer_file, owns, question, TEXT_K, code=False)
    return by_file


# --------------------------------------------------------------------------- pairs
def compare(kind: str, a: str, b: str, by_file: dict[str, dict[str, Version]], threshold: float) -> Pair:
    pair = Pair(kind, a, b)
    totals = np.zeros((2, 2))  # rows: side a, side b; columns: matched, fingerprinted
    for relpath, versions in by_file.items():
        first, second = versions.get(a), versions.get(b)
        if first is None or second is None or first.fingerprint is None or second.fingerprint is None:
            continue
        matched, shares, slices = compare_files(first.fingerprint, second.fingerprint)
        sizes = (first.fingerprint.token_coverage, second.fingerprint.token_coverage)
        other_matched = int(round(shares[1] * sizes[1]))
        totals += [[matched, sizes[0]], [other_matched, sizes[1]]]
        pair.files.append(FileMatch(relpath, float(max(shares)), (float(shares[0]), float(shares[1])), int(matched),
                                    sizes, slices))
    if pair.files:
        pair.overall = float(max(totals[0, 0] / totals[0, 1], totals[1, 0] / totals[1, 1]))
        pair.matched = int(totals[:, 0].min())
    pair.flagged = pair.overall >= threshold and pair.matched >= MIN_MATCH
    return pair


def rank(kind: str, names: list[str], by_file: dict[str, dict[str, Version]], threshold: float) -> list[Pair]:
    pairs = [compare(kind, a, b, by_file, threshold) for a, b in itertools.combinations(names, 2)]
    return sorted(pairs, key=lambda pair: (-pair.overall, -pair.matched, pair.a, pair.b))


# --------------------------------------------------------------------------- reports
def short(relpath: str) -> str:
    return Path(relpath).stem


def percent(value: float) -> str:
    return f"{100 * value:.0f} %"


def ranking(pairs: list[Pair], files: tuple[str, ...], limit: int) -> tuple[list[str], list[tuple[Pair, list[str]]]]:
    """The first ``limit`` pairs that share a file, the files they share, and each pair's cells for them."""
    shown = [pair for pair in pairs if pair.files][:limit]
    columns = [path for path in files if any(match.path == path for pair in shown for match in pair.files)]
    rows = []
    for pair in shown:
        cells = {match.path: percent(match.similarity) for match in pair.files}
        rows.append((pair, [cells.get(path, "") for path in columns]))
    return columns, rows


def ranking_markdown(title: str, pairs: list[Pair], files: tuple[str, ...], limit: int) -> list[str]:
    """A ranked table: the pair, the overall similarity, each file's, and the flag."""
    columns, rows = ranking(pairs, files, limit)
    header = "".join(f"{short(path)} | " for path in columns)
    lines = [f"### {title}", "", f"| # | pair | overall | {header}flag |",
             "|---:|---|---:|" + "---:|" * len(columns) + "---|"]
    for number, (pair, cells) in enumerate(rows, start=1):
        lines.append(f"| {number} | {pair.a} ~ {pair.b} | {percent(pair.overall)} | "
                     + "".join(f"{cell} | " for cell in cells) + ("**FLAGGED** |" if pair.flagged else "|"))
    if not rows:
        lines.append("| | no two submissions wrote the same file | | |")
    hidden = sum(1 for pair in pairs if pair.files) - len(rows)
    return lines + (["", f"({hidden} more pairs in similarity_pairs.csv)"] if hidden > 0 else []) + [""]


def summary_lines(code: list[Pair], written: list[Pair], names: list[str], problems: dict[str, str],
                  threshold: float) -> list[str]:
    flagged = [pair for pair in code + written if pair.flagged]
    lines = [f"{len(names)} submissions compared pairwise; threshold {percent(threshold)} (on at least {MIN_MATCH} "
             f"matching characters). Flagged pairs: {len(flagged)}.", ""]
    lines += [f"- {pair.kind}: {pair.a} ~ {pair.b} ({percent(pair.overall)})" for pair in flagged]
    return lines + [f"- not compared: {name} ({reason})" for name, reason in sorted(problems.items())]


def report_markdown(code: list[Pair], written: list[Pair], summary: list[str]) -> str:
    return "\n".join(["# Class similarity report", "", *summary, "",
                      *ranking_markdown("Code (files of the code questions)", code, CODE_FILES, RANKED_IN_TEXT),
                      *ranking_markdown("Written answers", written, ANSWER_FILES, RANKED_IN_TEXT)])


def pairs_csv(code: list[Pair], written: list[Pair]) -> str:
    rows = []
    for kind, pairs, files in (("code", code, CODE_FILES), ("written", written, ANSWER_FILES)):
        for number, pair in enumerate(pairs, start=1):
            row = {"kind": kind, "rank": number, "student_a": pair.a, "student_b": pair.b,
                   "overall": f"{pair.overall:.4f}", "matched_chars": pair.matched, "flagged": int(pair.flagged)}
            for match in pair.files:
                row[match.path] = f"{match.similarity:.4f}"
            rows.append(row)
    return csv_text(rows, ["kind", "rank", "student_a", "student_b", "overall", "matched_chars", "flagged",
                           *CODE_FILES, *ANSWER_FILES])


def students_csv(names: list[str], code: list[Pair], written: list[Pair]) -> str:
    rows = []
    for name in names:
        row = {"student": name}
        for kind, pairs in (("code", code), ("written", written)):
            mine = [pair for pair in pairs if name in (pair.a, pair.b)]
            top = max(mine, key=lambda pair: pair.overall, default=None)
            row[f"{kind}_similarity"] = f"{top.overall:.4f}" if top and top.files else ""
            row[f"{kind}_closest"] = (top.b if top.a == name else top.a) if top and top.files else ""
            row[f"{kind}_flagged_with"] = " ".join(sorted(pair.b if pair.a == name else pair.a
                                                          for pair in mine if pair.flagged))
        rows.append(row)
    return csv_text(rows, ["student", "code_similarity", "code_closest", "code_flagged_with", "written_similarity",
                           "written_closest", "written_flagged_with"])


def highlighted_excerpt(text: str, numbers: list[int] | None, slices: np.ndarray) -> str:
    """HTML of ``text`` with its matching regions marked, cut to the lines around them."""
    marked = np.zeros(len(text) + 1, dtype=bool)
    for start, end in zip(*(np.asarray(side, dtype=int) for side in slices)):
        marked[max(0, start):max(0, min(len(text), end))] = True
    lines, offset, shown = text.splitlines(keepends=True), 0, []
    spans = []
    for line in lines:
        spans.append((offset, offset + len(line)))
        offset += len(line)
    hot = [marked[start:end].any() for start, end in spans]
    keep = [any(hot[max(0, i - CONTEXT_LINES): i + CONTEXT_LINES + 1]) for i in range(len(lines))]
    for number, ((start, end), kept) in enumerate(zip(spans, keep), start=1):
        if not kept:
            if shown and shown[-1] != "…\n":
                shown.append("…\n")
            continue
        label = numbers[number - 1] if numbers else number
        pieces, cursor = [f"<span class=n>{label:4d}</span> "], start
        for value, run in itertools.groupby(range(start, end), key=lambda index: bool(marked[index])):
            length = len(list(run))
            piece = html.escape(text[cursor:cursor + length])
            pieces.append(f"<mark>{piece}</mark>" if value else piece)
            cursor += length
        shown.append("".join(pieces))
    return "".join(shown)


def anchor(pair: Pair) -> str:
    return html.escape(f"{pair.kind}-{pair.a}-{pair.b}")


def pair_html(pair: Pair, by_file: dict[str, dict[str, Version]]) -> str:
    parts = [f"<h3 id='{anchor(pair)}'>{pair.kind}: {html.escape(pair.a)} ~ "
             f"{html.escape(pair.b)}: {percent(pair.overall)}{' (flagged)' if pair.flagged else ''}</h3>"]
    for match in sorted(pair.files, key=lambda match: -match.similarity):
        if match.matched == 0:
            continue
        versions = by_file[match.path]
        parts.append(f"<h4>{html.escape(match.path)}: {percent(match.similarity)} ({pair.a} "
                     f"{percent(match.shares[0])}, {pair.b} {percent(match.shares[1])})</h4><div class=side>")
        for name, slices in ((pair.a, match.slices[0]), (pair.b, match.slices[1])):
            excerpt = highlighted_excerpt(versions[name].text, versions[name].numbers, slices)
            parts.append(f"<div><b>{html.escape(name)}</b><pre>{excerpt}</pre></div>")
        parts.append("</div>")
    return "\n".join(parts)


def ranking_html(title: str, pairs: list[Pair], files: tuple[str, ...]) -> str:
    columns, rows = ranking(pairs, files, RANKED_IN_HTML)
    header = "".join(f"<th title='{html.escape(path)}'>{html.escape(short(path))}</th>" for path in columns)
    body = "".join(f"<tr class='{'flag' if pair.flagged else ''}'><td>{number}</td><td><a href='#{anchor(pair)}'>"
                   f"{html.escape(pair.a)} ~ {html.escape(pair.b)}</a></td><td>{percent(pair.overall)}</td>"
                   + "".join(f"<td>{cell}</td>" for cell in cells)
                   + f"<td>{'FLAGGED' if pair.flagged else ''}</td></tr>"
                   for number, (pair, cells) in enumerate(rows, start=1))
    return (f"<h2>{html.escape(title)}</h2><table><tr><th>#</th><th>pair</th><th>overall</th>{header}<th>flag</th>"
            f"</tr>{body}</table>")


def report_html(summary: list[str], code: list[Pair], written: list[Pair], code_files: dict[str, dict[str, Version]],
                answer_files: dict[str, dict[str, Version]]) -> str:
    details = [pair_html(pair, by_file) for pairs, by_file in ((code, code_files), (written, answer_files))
               for number, pair in enumerate(pairs) if pair.files and (pair.flagged or number < DETAILS_PER_KIND)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:2px 6px;text-align:right}tr.flag{background:#fdd}.side{display:flex;gap:1em}.side>div"
             "{flex:1;min-width:0}pre{background:#f8f8f8;padding:4px;overflow-x:auto;white-space:pre-wrap}"
             "mark{background:#ffd27a}.n{color:#999}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Class similarity report</title>"
            f"<style>{style}</style></head><body><h1>Class similarity report</h1>"
            f"<pre>{html.escape(chr(10).join(summary))}</pre>"
            f"{ranking_html('Code', code, CODE_FILES)}{ranking_html('Written answers', written, ANSWER_FILES)}"
            "<h2>Matching regions</h2><p>Code: the students' own lines (the starter's are left out), numbered as in "
            "their files. Answers: lower-cased, layout removed. Marked: text both sides share.</p>"
            f"{''.join(details)}</body></html>\n")


# --------------------------------------------------------------------------- the command
def similarity_report(class_dir: Path, out: Path, starter: Path,
                      threshold: float = THRESHOLD) -> tuple[list[Pair], list[Pair]]:
    """Compare every pair of submissions of ``class_dir``; write the reports into ``out``; return both rankings."""
    with tempfile.TemporaryDirectory(prefix="siamese-tp-similarity-") as folder:
        roots, problems = submissions_in(class_dir, Path(folder))
        if not roots:
            raise SystemExit(f"error: {class_dir}: no readable submission (expected one folder or zip file per "
                             "student)")
        names = sorted(roots)
        code_files, answer_files = code_versions(roots, starter), answer_versions(roots, starter)
    code = rank("code", names, code_files, threshold)
    written = rank("written", names, answer_files, threshold)
    summary = summary_lines(code, written, names, problems, threshold)
    write_text_atomic(out / "similarity.md", report_markdown(code, written, summary))
    write_text_atomic(out / "similarity_pairs.csv", pairs_csv(code, written))
    write_text_atomic(out / "similarity_students.csv", students_csv(names, code, written))
    write_text_atomic(out / "similarity.html", report_html(summary, code, written, code_files, answer_files))
    return code, written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("class_dir", help="folder of submissions: one folder or zip file per student")
    parser.add_argument("--out", required=True, help="where the reports go (created if needed)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help=f"overall similarity (0-1) from which a pair is flagged (default {THRESHOLD})")
    parser.add_argument("--starter", default=None,
                        help="the handed-out starter, whose text never counts (default: generated from here)")
    args = parser.parse_args(argv)
    if not 0 < args.threshold <= 1:
        parser.error("--threshold must be in (0, 1]")
    class_dir = Path(args.class_dir).resolve()
    if not class_dir.is_dir():
        raise SystemExit(f"error: {class_dir}: no such folder")
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="siamese-tp-starter-") as folder:
        starter = Path(args.starter).resolve() if args.starter else Path(folder) / "starter"
        if args.starter is None:
            from .handout import write_handout

            write_handout(starter, GRADER_ROOT)
        elif not starter.is_dir():
            raise SystemExit(f"error: --starter {starter}: no such folder")
        code, written = similarity_report(class_dir, out, starter, args.threshold)
    print("\n".join(ranking_markdown("Code", code, CODE_FILES, 10)
                    + ranking_markdown("Written answers", written, ANSWER_FILES, 10)))
    flagged = [pair for pair in code + written if pair.flagged]
    print(f"{len(flagged)} flagged pair(s). Reports: {out / 'similarity.html'}, {out / 'similarity.md'}, "
          f"{out / 'similarity_pairs.csv'}, {out / 'similarity_students.csv'}")


if __name__ == "__main__":
    main()
