"""Write the student starter repository from this solution: ``python -m tests.autograder.handout OUT``.

- Python code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` becomes
  ``raise NotImplementedError("Ex2 Q2: TripletLoss.forward")``:
  a region inside a function body is replaced where it stands (what precedes it, the signature and
  docstring included, stays); a region around whole functions or classes keeps each one's decorators,
  signature and docstring (and a class's attributes), and each body becomes the ``raise``. The label
  is the question of the file in the points table, or the text after ``# BEGIN SOLUTION``.
- ``report/answers/*.md`` keep their question (the title, ``>`` quotes, a paragraph or heading with
  "Question") and lose the answer; ``<!-- BEGIN SOLUTION -->``/``<!-- END SOLUTION -->`` mark the
  answer explicitly when the heuristic does not fit.
- Left out: every test but the public ones (``tests/public/``: interfaces, shapes, a smoke step, no
  oracle) — so the hidden reference, the graded tests, the autograder and this repository's own tests
  with their brute-force oracles —, the CI script, and everything git ignores (data, runs, checkpoints,
  grades). The README is the students' own (``starter_readme.md``), not this repository's.

Every stubbed file is checked to parse; unbalanced or nested markers stop the tool with the file and line.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .points import QUESTION_BY_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
KEPT_TESTS = "tests/public/"
LEFT_OUT = ("tests/", ".ci/")  # but KEPT_TESTS
STARTER_README = Path(__file__).resolve().parent / "starter_readme.md"
# Used only where git is unavailable: what .gitignore keeps out of the repository.
IGNORED_PARTS = {".git", "__pycache__", ".pytest_cache", "data", "runs", "checkpoints", "grades", ".ipynb_checkpoints"}
ANSWERS_DIR = "report/answers/"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\b[ \t:-]*(?P<label>.*?)\s*$")
END = re.compile(r"^[ \t]*#\s*END SOLUTION\b")
MD_BEGIN = re.compile(r"^\s*<!--\s*BEGIN SOLUTION\s*-->\s*$")
MD_END = re.compile(r"^\s*<!--\s*END SOLUTION\s*-->\s*$")
ANSWER_PLACEHOLDER = "_Write your answer here._"


class HandoutError(Exception):
    """A marker problem or an unparsable result; the message names the file and line."""


@dataclass
class Region:
    begin: int  # 1-based line of the BEGIN marker
    end: int  # 1-based line of the END marker
    indent: str
    label: str


# --------------------------------------------------------------------------- Python stubs
def find_regions(lines: list[str], relpath: str) -> list[Region]:
    regions, open_region = [], None
    for number, line in enumerate(lines, start=1):
        begin, end = BEGIN.match(line), END.match(line)
        if begin:
            if open_region is not None:
                raise HandoutError(f"{relpath}:{number}: BEGIN SOLUTION inside the region opened at line "
                                   f"{open_region.begin}")
            open_region = Region(number, 0, begin.group("indent"), begin.group("label"))
        elif end:
            if open_region is None:
                raise HandoutError(f"{relpath}:{number}: END SOLUTION without a BEGIN SOLUTION")
            open_region.end = number
            regions.append(open_region)
            open_region = None
    if open_region is not None:
        raise HandoutError(f"{relpath}:{open_region.begin}: BEGIN SOLUTION is never closed")
    return regions


def _functions_with_names(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every function in the module with its qualified name (``Class.method``, ``outer.inner``)."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append((child, prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _start_line(node: ast.AST) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [decorator.lineno for decorator in decorators])


def _has_docstring(node: ast.AST) -> bool:
    body = getattr(node, "body", [])
    return bool(body) and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str)


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _raise_line(indent: str, label: str, name: str) -> str:
    message = f"{label}: {name}" if name else label
    return f"{indent}raise NotImplementedError({json.dumps(message, ensure_ascii=False)})\n"


def _blank_lines_between(lines: list[str], after: int, before: int) -> list[str]:
    """The blank lines strictly between 1-based lines ``after`` and ``before`` (layout kept, comments not)."""
    return ["\n" for line in lines[after: before - 1] if not line.strip()]


def _trailing_blank_lines(lines: list[str]) -> int:
    count = 0
    for line in reversed(lines):
        if line.strip():
            break
        count += 1
    return count


def _stub_definition(node: ast.AST, lines: list[str], label: str, qualname: str, relpath: str) -> list[str]:
    """A function or class kept down to its signature, docstring (class attributes) and a raise."""
    if node.body[0].lineno == node.lineno and not isinstance(node, ast.ClassDef):
        raise HandoutError(f"{relpath}:{node.lineno}: a one-line def cannot be stubbed; put its body on its own line")
    keep_until = node.body[0].end_lineno if _has_docstring(node) else node.body[0].lineno - 1
    header = lines[_start_line(node) - 1: keep_until]
    body_indent = _indent_of(lines[node.body[0].lineno - 1])
    # Comments opening the body belong to the solution, not to the signature.
    while header and not _has_docstring(node) and len(header) > 1 and (
            not header[-1].strip() or (header[-1].lstrip().startswith("#") and _indent_of(header[-1]) == body_indent)):
        header.pop()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return header + [_raise_line(body_indent, label, qualname)]
    result = list(header)
    members = node.body[1:] if _has_docstring(node) else node.body
    previous_end = keep_until
    for member in members:
        result += _blank_lines_between(lines, previous_end, _start_line(member))
        if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            result += _stub_definition(member, lines, label, f"{qualname}.{member.name}", relpath)
        else:
            result += lines[_start_line(member) - 1: member.end_lineno]
        previous_end = member.end_lineno
    if len(result) == len(header) and not _has_docstring(node):
        result.append(f"{body_indent}pass\n")
    return result


def _statements_in(tree: ast.AST, begin: int, end: int) -> list[tuple[ast.AST, str]]:
    """The statements lying wholly between two marker lines, at the level the markers sit in."""
    chosen = []

    def visit(body: list[ast.AST], prefix: str) -> None:
        for node in body:
            if begin < _start_line(node) and node.end_lineno < end:
                chosen.append((node, prefix + getattr(node, "name", "")))
            elif _start_line(node) < begin <= node.end_lineno and isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")

    visit(tree.body, "")
    return chosen


def stub_python(text: str, relpath: str) -> tuple[str, list[str]]:
    """``text`` with every solution region stubbed, and the names stubbed (for the summary)."""
    lines = text.splitlines(keepends=True)
    regions = find_regions(lines, relpath)
    if not regions:
        return text, []
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        raise HandoutError(f"{relpath}:{error.lineno}: the solution file does not parse ({error.msg})") from None
    question = QUESTION_BY_FILE.get(relpath)
    functions = _functions_with_names(tree)
    stubbed = []
    for region in reversed(regions):
        label = region.label or (question.key if question else relpath)
        # A region inside a function: its BEGIN lies within the function and is indented deeper than the def.
        enclosing = [(node, name) for node, name in functions
                     if node.lineno < region.begin <= node.end_lineno
                     and len(region.indent) > len(_indent_of(lines[node.lineno - 1]))]
        if enclosing:
            node, name = max(enclosing, key=lambda pair: pair[0].lineno)  # the innermost
            replacement = [_raise_line(region.indent, label, name)]
            stubbed.append(name)
        else:
            replacement, previous_end = [], region.begin
            for node, name in _statements_in(tree, region.begin, region.end):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    gap = _blank_lines_between(lines, previous_end, _start_line(node))
                    if not replacement:  # the blank lines already above the BEGIN marker count too
                        gap = gap[_trailing_blank_lines(lines[: region.begin - 1]):]
                    replacement += gap
                    replacement += _stub_definition(node, lines, label, name, relpath)
                    previous_end = node.end_lineno
                    stubbed.append(name)
        lines[region.begin - 1: region.end] = replacement
    result = "".join(lines)
    try:
        ast.parse(result)
    except SyntaxError as error:
        raise HandoutError(f"{relpath}:{error.lineno}: the stubbed file does not parse ({error.msg}); "
                           "check where its SOLUTION markers sit") from None
    return result, sorted(stubbed)


# --------------------------------------------------------------------------- report answers
def question_only(text: str, relpath: str) -> str:
    """The answer file reduced to its question, followed by a placeholder for the student's answer."""
    lines = text.splitlines()
    if any(MD_BEGIN.match(line) for line in lines):
        kept, inside = [], False
        for number, line in enumerate(lines, start=1):
            if MD_BEGIN.match(line):
                if inside:
                    raise HandoutError(f"{relpath}:{number}: nested BEGIN SOLUTION")
                inside = True
                kept.append(ANSWER_PLACEHOLDER)
            elif MD_END.match(line):
                if not inside:
                    raise HandoutError(f"{relpath}:{number}: END SOLUTION without a BEGIN SOLUTION")
                inside = False
            elif not inside:
                kept.append(line)
        if inside:
            raise HandoutError(f"{relpath}: BEGIN SOLUTION is never closed")
        return "\n".join(kept) + "\n"
    kept, paragraph = [], []
    under_question_heading = [False]

    def flush() -> None:
        # The title stays, and a heading naming a question with the text under it; other section
        # headings outline the answer, so they go. A quoted paragraph or one opening with "Question"
        # is the question itself.
        for line in paragraph:
            if line.lstrip().startswith("#"):
                under_question_heading[0] = "question" in line.lower()
                if line.startswith("# ") or under_question_heading[0]:
                    kept.append(line.strip())
        body = [line for line in paragraph if not line.lstrip().startswith("#")]
        if body and (under_question_heading[0] or body[0].lstrip().startswith(
                (">", "**Question", "Question", "*Question", "_Question"))):
            kept.append("\n".join(body))
        paragraph.clear()

    for line in lines + [""]:
        if line.strip():
            paragraph.append(line)
        else:
            flush()
    return "\n\n".join(kept + [ANSWER_PLACEHOLDER]) + "\n"


# --------------------------------------------------------------------------- the repository
def repository_files(root: Path) -> list[str]:
    """The project's files (relative, POSIX): git's tracked and not-ignored files, else a filtered walk."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                                capture_output=True, check=True).stdout.decode().split("\0")
        files = [path for path in listed if path and (root / path).is_file()]
    except (OSError, subprocess.CalledProcessError):
        files = [path.relative_to(root).as_posix() for path in root.rglob("*")
                 if path.is_file() and not IGNORED_PARTS.intersection(path.relative_to(root).parts)
                 and path.suffix not in (".pyc", ".pyo")]
    return sorted(files)


def left_out(relpath: str) -> bool:
    if relpath.startswith(KEPT_TESTS):
        return False
    return any(relpath == entry or relpath.startswith(entry) for entry in LEFT_OUT)


def write_handout(out: Path, root: Path = REPO_ROOT) -> dict[str, list[str]]:
    """Write the handout into ``out`` (new or empty). Returns what was stubbed, replaced and left out."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise HandoutError(f"{out}: exists and is not empty; choose a new folder")
    report: dict[str, list[str]] = {"stubbed": [], "answers": [], "left_out": [], "copied": []}
    planned = []
    for relpath in repository_files(root):
        if left_out(relpath):
            report["left_out"].append(relpath)
            continue
        source = root / relpath
        if relpath == "README.md":
            planned.append((relpath, STARTER_README.read_text()))
        elif relpath.endswith(".py"):
            text, names = stub_python(source.read_text(), relpath)
            report["stubbed"] += [f"{relpath}: {name}" for name in names]
            planned.append((relpath, text))
        elif relpath.startswith(ANSWERS_DIR) and relpath.endswith(".md"):
            planned.append((relpath, question_only(source.read_text(), relpath)))
            report["answers"].append(relpath)
        else:
            planned.append((relpath, None))
    # Everything is checked before the first file is written: an error leaves no half-made handout.
    for relpath, text in planned:
        target = out / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            shutil.copy2(root / relpath, target)
        else:
            target.write_text(text)
            shutil.copymode(root / relpath, target)
        report["copied"].append(relpath)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the handout into (new or empty)")
    args = parser.parse_args(argv)
    try:
        report = write_handout(Path(args.out))
    except HandoutError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"Handout written to {args.out}: {len(report['copied'])} files.")
    print(f"Stubbed ({len(report['stubbed'])}):" + "".join(f"\n  {entry}" for entry in report["stubbed"]))
    print(f"Answers reduced to their questions ({len(report['answers'])}):"
          + "".join(f"\n  {entry}" for entry in report["answers"]))
    print(f"Left out: {len(report['left_out'])} files (tests other than {KEPT_TESTS}, .ci/)")
    if not report["stubbed"]:
        print("warning: no BEGIN/END SOLUTION markers found: the handout holds the full solution", file=sys.stderr)


if __name__ == "__main__":
    main()
