"""Class integrity: the similarity report on a generated class, and ``regrade`` reproducing a grade.

The class (``build_class``) is the starter handed in 12 times: nine honest students, each with their own
implementation of one or two graded files (``tests/integrity_class/``: three ``TripletLoss``, four
``Market1501``, five ``Net``/``train``/``test``, four ``BasicBlock``/``ResNet18``, written independently and
differently) and some written answers; a disguised copy of alice (variables renamed, functions reordered,
comments rewritten, answers reworded); a copy of david with rewritten comments only; and a starter handed
in unchanged. The report must rank the two copies first and flag nothing else.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
import zipfile
from pathlib import Path

import pytest

from autograder import regrade, similarity
from autograder.classroom import grade_submission
from autograder.handout import write_handout

VARIANTS = Path(__file__).resolve().parent / "integrity_class"
REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"triplet": "utils/TripletLoss.py", "market": "data.py", "mlp": "exercise1/q2_module_mlp.py",
           "resnet": "exercise1/q4_resnet.py"}
HONEST = {  # student: (code variants, written answers)
    "alice": (["triplet_a", "market_a"], ["ex1_q3", "ex1_q6"]),
    "bruno": (["triplet_b", "mlp_a"], ["ex1_q3"]),
    "chloe": (["triplet_c", "resnet_a"], ["ex1_q3"]),
    "david": (["market_b", "resnet_b"], ["ex1_q3", "ex1_q6"]),
    "emma": (["market_c", "mlp_b"], ["ex1_q3"]),
    "farid": (["mlp_c", "resnet_c"], ["ex1_q6"]),
    "gina": (["market_d", "resnet_d"], ["ex1_q6"]),
    "hugo": (["mlp_d"], []),
    "ines": (["mlp_e"], []),
}
COPIES = {("alice", "xavier"), ("david", "yann")}
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
NEUTRAL_NAMES = ("tmp", "val", "res", "buf", "acc", "item", "cur", "aux")
OTHER_COMMENTS = ("# checked on a small example", "# see the lecture slides", "# careful here",
                  "# this part took me a while")
SYNONYMS = {"training": "train", "loss": "error", "shows": "reveals", "network": "model", "images": "pictures",
            "weights": "parameters", "tells": "indicates"}


# --------------------------------------------------------------------------- writing a student's files
def _span(node: ast.AST) -> tuple[int, int]:
    """0-based ``[start, end)`` lines of a statement, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1, node.end_lineno


def _body_start(node: ast.AST) -> int:
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    return (node.body[1] if docstring and len(node.body) > 1 else first).lineno - 1


def _filled(given: ast.AST, own: ast.AST, lines: list[str], own_lines: list[str]) -> list[str]:
    """The student's definition; with the starter's signature and docstring when the signatures agree."""
    if isinstance(given, FUNCTIONS) and isinstance(own, FUNCTIONS) and ast.dump(given.args) == ast.dump(own.args):
        return lines[_span(given)[0]:_body_start(given)] + own_lines[_body_start(own):own.end_lineno]
    return own_lines[slice(*_span(own))]


def fill_starter(starter_text: str, student_text: str) -> str:
    """The starter's file with the student's definitions in place of the stubs of the same name.

    A class's methods are filled one by one; the student's own helpers go before the first definition
    filled, their imports after the starter's.
    """
    starter, student = ast.parse(starter_text), ast.parse(student_text)
    lines, own = starter_text.splitlines(keepends=True), student_text.splitlines(keepends=True)
    top = {node.name: node for node in starter.body if isinstance(node, DEFINITIONS)}
    edits, helpers, imports, touched = [], [], [], []
    for node in student.body:
        given = top.get(node.name) if isinstance(node, DEFINITIONS) else None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports += own[slice(*_span(node))]
        elif isinstance(node, ast.ClassDef) and isinstance(given, ast.ClassDef):
            touched.append(_span(given)[0])
            members = {member.name: member for member in given.body if isinstance(member, DEFINITIONS)}
            for member in node.body:
                if isinstance(member, DEFINITIONS) and member.name in members:
                    edits.append((*_span(members[member.name]), _filled(members[member.name], member, lines, own)))
                else:
                    edits.append((given.end_lineno, given.end_lineno, ["\n"] + own[slice(*_span(member))]))
        elif given is not None:
            touched.append(_span(given)[0])
            edits.append((*_span(given), _filled(given, node, lines, own)))
        else:
            helpers.append(node)
    if helpers:
        edits.append((min(touched), min(touched), [line for node in helpers
                                                   for line in own[slice(*_span(node))] + ["\n", "\n"]]))
    if imports:
        last = max(node.end_lineno for node in starter.body if isinstance(node, (ast.Import, ast.ImportFrom)))
        edits.append((last, last, imports))
    for start, end, new in sorted(edits, key=lambda edit: edit[:2], reverse=True):
        lines[start:end] = new
    return "".join(lines)


# --------------------------------------------------------------------------- disguises
def rewrite_comments(text: str) -> str:
    """Every comment replaced by another one, and a new one above every ``return`` (what a copier does first)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    lines = text.splitlines(keepends=True)
    comments = [token for token in tokens if token.type == tokenize.COMMENT]
    for number, token in reversed(list(enumerate(comments))):
        row, col = token.start
        line = lines[row - 1]
        lines[row - 1] = line[:col] + OTHER_COMMENTS[number % len(OTHER_COMMENTS)] + line[token.end[1]:]
    returns = sorted({node.lineno for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Return)}, reverse=True)
    for number, row in enumerate(returns):
        line = lines[row - 1]
        indent = line[:len(line) - len(line.lstrip())]
        lines.insert(row - 1, f"{indent}{OTHER_COMMENTS[-1 - number % len(OTHER_COMMENTS)]}\n")
    return "".join(lines)


def rename_locals(text: str) -> str:
    """Every local variable of every function renamed to a meaningless name (parameters kept)."""
    tree = ast.parse(text)
    edits = []  # (line, column, old, new)
    for function in (node for node in ast.walk(tree) if isinstance(node, FUNCTIONS)):
        local = sorted({node.id for node in ast.walk(function) if isinstance(node, ast.Name)
                        and isinstance(node.ctx, ast.Store)}
                       | {arg.arg for node in ast.walk(function) if isinstance(node, ast.Lambda)
                          for arg in node.args.args})
        new = {name: f"{NEUTRAL_NAMES[i % len(NEUTRAL_NAMES)]}{i}" for i, name in enumerate(local)}
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id in new:
                edits.append((node.lineno, node.col_offset, node.id, new[node.id]))
            elif isinstance(node, ast.arg) and node.arg in new:
                edits.append((node.lineno, node.col_offset, node.arg, new[node.arg]))
    lines = text.splitlines(keepends=True)
    for row, col, old, name in sorted(set(edits), reverse=True):
        line = lines[row - 1]
        assert line[col:col + len(old)] == old
        lines[row - 1] = line[:col] + name + line[col + len(old):]
    return "".join(lines)


def reorder_definitions(text: str, names: set[str]) -> str:
    """Each run of consecutive definitions named in ``names`` (module level or in a class) reversed."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    bodies = [tree.body] + [node.body for node in tree.body if isinstance(node, ast.ClassDef)]
    edits = []
    for body in bodies:
        run: list[ast.AST] = []
        for node in body + [None]:
            if node is not None and isinstance(node, FUNCTIONS) and node.name in names:
                run.append(node)
                continue
            if len(run) > 1:
                blocks = [lines[slice(*_span(item))] for item in run]
                gaps = [lines[run[i].end_lineno:_span(run[i + 1])[0]] for i in range(len(run) - 1)]
                merged = blocks[-1]
                for gap, block in zip(gaps, reversed(blocks[:-1])):
                    merged = merged + gap + block
                edits.append((_span(run[0])[0], run[-1].end_lineno, merged))
            run = []
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = new
    return "".join(lines)


def reword(text: str) -> str:
    """A written answer lightly reworded: a few synonyms, as a copier does."""
    return re.sub(r"\b(" + "|".join(SYNONYMS) + r")\b", lambda match: SYNONYMS[match.group(1)], text)


def defined_names(text: str) -> set[str]:
    tree = ast.parse(text)
    return {node.name for node in ast.walk(tree) if isinstance(node, FUNCTIONS)}


# --------------------------------------------------------------------------- the class
def write_student(starter: Path, folder: Path, variants: list[str], answers: dict[str, str],
                  disguise=lambda text: text, reorder: bool = False) -> None:
    """A copy of the starter with these variants filled in (through ``disguise``) and these answers."""
    shutil.copytree(starter, folder)
    for variant in variants:
        relpath = TARGETS[variant.split("_")[0]]
        own = disguise((VARIANTS / f"{variant}.py").read_text())
        text = fill_starter((starter / relpath).read_text(), own)
        if reorder:
            text = reorder_definitions(text, defined_names(own))
        ast.parse(text)
        (folder / relpath).write_text(text)
    for slug, answer in answers.items():
        path = folder / "report" / "answers" / f"{slug}.md"
        path.write_text(path.read_text().replace("_Write your answer here._", answer.strip()))


def honest_answers(student: str) -> dict[str, str]:
    return {slug: (VARIANTS / "answers" / f"{slug}_{student}.md").read_text() for slug in HONEST[student][1]}


def build_class(starter: Path, class_dir: Path) -> None:
    """The 12 submissions described in the module docstring (xavier's as a zip wrapping a folder)."""
    class_dir.mkdir()
    for student, (variants, _) in HONEST.items():
        write_student(starter, class_dir / student, variants, honest_answers(student))
    staging = class_dir.parent / "staging"
    write_student(starter, staging / "Xavier Martin", HONEST["alice"][0],
                  {slug: reword(text) for slug, text in honest_answers("alice").items()},
                  disguise=lambda text: rewrite_comments(rename_locals(text)), reorder=True)
    with zipfile.ZipFile(class_dir / "xavier.zip", "w") as archive:
        for path in sorted((staging / "Xavier Martin").rglob("*")):
            archive.write(path, path.relative_to(staging))
    write_student(starter, class_dir / "yann", HONEST["david"][0], honest_answers("david"), disguise=rewrite_comments)
    shutil.copytree(starter, class_dir / "zoe")


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("handout") / "starter"
    write_handout(folder)
    return folder


@pytest.fixture(scope="module")
def report(starter, tmp_path_factory):
    """The class, its report by the command (another process, another string-hash seed), and the rankings."""
    root = tmp_path_factory.mktemp("class")
    build_class(starter, root / "class")
    (root / "class" / "broken.zip").write_bytes(b"not a zip")
    done = subprocess.run([sys.executable, "-m", "tests.autograder.similarity", str(root / "class"), "--out",
                           str(root / "report"), "--starter", str(starter)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert done.returncode == 0, done.stderr
    code, written = similarity.similarity_report(root / "class", root / "again", starter)
    return root, done.stdout, code, written


def pair_names(pairs) -> list[tuple[str, str]]:
    return [(pair.a, pair.b) for pair in pairs]


@pytest.mark.parametrize("kind", ["code", "written"])
def test_the_two_copies_rank_first_and_alone_are_flagged(report, kind):
    _, _, code, written = report
    pairs = code if kind == "code" else written
    assert set(pair_names(pairs[:2])) == COPIES
    assert {(pair.a, pair.b) for pair in pairs if pair.flagged} == COPIES
    assert all(pair.overall >= 0.6 for pair in pairs[:2])
    honest = [pair for pair in pairs if (pair.a, pair.b) not in COPIES and pair.files]
    assert honest and max(pair.overall for pair in honest) < 0.35, [(p.a, p.b, p.overall) for p in honest[:3]]


def test_honest_solutions_of_the_same_stubs_are_compared_and_not_flagged(report):
    _, _, code, _ = report
    compared = {match.path for pair in code if (pair.a, pair.b) not in COPIES for match in pair.files}
    assert set(TARGETS.values()) <= compared  # every stub family has honest pairs side by side
    writers = {student for student, (variants, _) in HONEST.items() if any(v.startswith("mlp") for v in variants)}
    mlp = [pair for pair in code if {pair.a, pair.b} <= writers]
    assert len(mlp) == len(writers) * (len(writers) - 1) // 2 and not any(pair.flagged for pair in mlp)


def test_the_disguise_really_changes_the_text(report, starter):
    """The disguised copy shares few lines with its source: only the fingerprints find it."""
    root = report[0]
    with zipfile.ZipFile(root / "class" / "xavier.zip") as archive:
        copied = archive.read("Xavier Martin/utils/TripletLoss.py").decode()
    source = (root / "class" / "alice" / "utils" / "TripletLoss.py").read_text()
    given = (starter / "utils" / "TripletLoss.py").read_text()
    own, _ = similarity.own_code(source, given)
    kept = [line for line in own.splitlines() if line.strip() in {other.strip() for other in copied.splitlines()}]
    assert len(kept) < 0.3 * len(own.splitlines())
    order = [name for name in re.findall(r"^def (\w+)", copied, re.M) if name.startswith("mine_")]
    assert order == ["mine_semi_hard", "mine_batch_all", "mine_batch_hard"]


def test_a_starter_handed_in_unchanged_matches_nobody(report):
    _, _, code, written = report
    assert not [pair for pair in code + written if "zoe" in (pair.a, pair.b) and pair.files]


def test_reports_are_written_and_reproducible(report):
    root, stdout, code, _ = report
    out = root / "report"
    assert (out / "similarity_pairs.csv").read_text() == (root / "again" / "similarity_pairs.csv").read_text()
    rows = list(csv.DictReader(io.StringIO((out / "similarity_pairs.csv").read_text())))
    names = sorted({*HONEST, "xavier", "yann", "zoe"})
    assert len(rows) == 2 * len(names) * (len(names) - 1) // 2
    flagged = {(row["kind"], row["student_a"], row["student_b"]) for row in rows if row["flagged"] == "1"}
    assert flagged == {(kind, a, b) for kind in ("code", "written") for a, b in COPIES}
    students = {row["student"]: row
                for row in csv.DictReader(io.StringIO((out / "similarity_students.csv").read_text()))}
    assert sorted(students) == names
    assert students["alice"]["code_flagged_with"] == "xavier" and students["yann"]["written_flagged_with"] == "david"
    assert students["zoe"]["code_similarity"] == "" and students["bruno"]["code_flagged_with"] == ""
    page = (out / "similarity.html").read_text()
    for a, b in COPIES:
        assert f"id='code-{a}-{b}'" in page and f"id='written-{a}-{b}'" in page
    assert page.count("<mark>") > 20 and "not compared: broken" in (out / "similarity.md").read_text()
    assert "david ~ yann" in stdout and "4 flagged pair(s)" in stdout


def test_idioms_most_of_the_class_writes_do_not_count():
    """MOSS's -m: a run of code in most versions of a file is an idiom; a run shared by two still counts."""
    idiom = "for images, labels in loader:\n    optimizer.zero_grad()\n    loss = criterion(model(images), labels)\n"
    copied = ("weights = [value ** 2 for value in range(10) if value % 3]\n"
              "table = {key: sorted(weights, reverse=True)[key:] for key in range(3)}\n"
              "print(min(table.items(), key=lambda item: len(item[1]))[0], sum(weights) // 7)\n"
              "assert all(isinstance(value, int) for value in weights), 'weights must be integers'\n")
    owns = {f"s{i}": (idiom + f"x = {i}\n" + (copied if i < 2 else ""), None) for i in range(6)}
    versions = similarity.versions_of("loop.py", owns, [""], similarity.CODE_K, code=True)
    assert all(versions[f"s{i}"].fingerprint is None for i in range(2, 6))  # nothing but the idiom
    copy = similarity.compare("code", "s0", "s1", {"loop.py": versions}, 0.5)
    assert copy.flagged and copy.overall > 0.75  # the windows straddling "x = 0" and "x = 1" differ
    assert similarity.compare("code", "s2", "s3", {"loop.py": versions}, 0.5).files == []


def test_command_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no such folder"):
        similarity.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="no audit block"):
        (tmp_path / "results.json").write_text(json.dumps({"score": 0, "tests": []}))
        regrade.main([str(tmp_path), str(tmp_path)])


# --------------------------------------------------------------------------- regrade
@pytest.fixture(scope="module")
def graded(starter, tmp_path_factory):
    """A submission (the starter with the solution's data.py) graded on Ex2 Q4 only."""
    root = tmp_path_factory.mktemp("regrade")
    shutil.copytree(starter, root / "student")
    shutil.copy(REPO_ROOT / "data.py", root / "student" / "data.py")
    results = grade_submission(root / "student", root / "grades", starter=starter, student="student",
                               tests=["tests/graded/test_ex2_q4_market.py"])
    assert "audit" in results, results.get("output")
    return root, results


def test_regrade_reproduces_the_grade_bit_for_bit(graded, starter, capsys):
    root, results = graded
    assert results["audit"]["code_score"] > 0
    before, after, changes = regrade.regrade(root / "grades", root / "student", root / "again", starter=starter)
    assert changes == [] and after["tests"] == before["tests"] and after["score"] == before["score"]
    assert after["audit"]["seed"] == before["audit"]["seed"] and after["audit"]["limits"] == before["audit"]["limits"]
    assert after["audit"]["submission"]["files_sha256"] == before["audit"]["submission"]["files_sha256"]


def test_regrade_explains_a_change_of_submission_content(graded, starter, capsys):
    root, results = graded
    changed = root / "changed"
    shutil.copytree(root / "student", changed)
    text = (changed / "data.py").read_text()
    # The person id of a junk image becomes 1 instead of -1.
    (changed / "data.py").write_text(text.replace('return int(Path(file_path).name.split("_")[0])',
                                                  'return abs(int(Path(file_path).name.split("_")[0]))'))
    assert (changed / "data.py").read_text() != text
    status = regrade.main([str(root / "grades"), str(changed), "--starter", str(starter)])
    output = capsys.readouterr().out
    assert status == 1 and "DIFFERENT" in output
    assert "different submission content: data.py sha256" in output and "NOT DETERMINISTIC" not in output
    assert "different grader version" not in output


def test_regrade_causes_from_the_audit_blocks(graded):
    """Same grader and files but another output: a non-deterministic test; another grader: its version."""
    results = graded[1]
    test = next(test for test in results["tests"] if test["status"] == "passed")
    flaky = json.loads(json.dumps(results))
    next(item for item in flaky["tests"] if item["name"] == test["name"])["output"] += " (again)"
    [change] = regrade.compare_results(results, flaky)
    assert change.name == test["name"] and "NOT DETERMINISTIC" in change.causes[0]
    flaky["audit"]["grader"]["content_sha256"] = "0" * 64
    [change] = regrade.compare_results(results, flaky)
    assert change.causes == [regrade.grader_difference(results["audit"], flaky["audit"])]
    assert change.causes[0].startswith("different grader version")
