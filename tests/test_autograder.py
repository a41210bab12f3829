"""The autograder's own tests: a hostile submission, the starter through the Gradescope bundle, a class.

Each grading runs as an instructor runs it (a separate ``python -m pytest --submission=…`` or the bundle's
``run_autograder``), so what is checked is what lands in ``results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder import gradescope, handout, points
from autograder.benchmark import copy_solution
from autograder.sandbox import can_switch_user, namespaces_available

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
CANARY = "canary-7f3a9c-the-grader-environment"
pytestmark = pytest.mark.timeout(900)


def grade(submission: Path, grades: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--submission={submission}",
               f"--grades-dir={grades}", *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=800)
    results = grades / "results.json"
    assert results.is_file(), f"no results.json; grader output:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    return json.loads(results.read_text())


def question_scores(results: dict) -> dict[str, tuple[float, list[str]]]:
    """``{"Ex1 Q2": (score, [outputs of its failed tests])}`` for the code questions."""
    scores: dict[str, tuple[float, list[str]]] = {}
    for test in results["tests"]:
        key = " ".join(test["name"].split()[:2])
        if "(written" in test["name"]:
            continue
        score, outputs = scores.get(key, (0.0, []))
        scores[key] = (score + test["score"], outputs + ([test["output"]] if test["status"] != "passed" else []))
    return scores


# --------------------------------------------------------------------------- a hostile submission
def hostile_submission(root: Path) -> dict[str, str]:
    """The solution with one attack per question; returns what each attacked question must say."""
    copy_solution(root)
    grader = str(TESTS)

    def append(relpath: str, code: str) -> None:
        with (root / relpath).open("a") as handle:
            handle.write("\n\n" + code.strip() + "\n")

    # Patch the grader's scoring, forge a results.json wherever one might be read, then leave at import.
    append("exercise1/q2_module_mlp.py", f"""
import json as _json, os as _os, sys as _sys
_sys.path[:0] = [{grader!r}, {str(REPO)!r}]
for _name in ("autograder.plugin", "tests.autograder.plugin"):
    try:
        _plugin = __import__(_name, fromlist=["GradingPlugin"])
        _plugin.GradingPlugin.code_score = property(lambda self: 60)
    except BaseException:
        pass
for _folder in (_os.getcwd(), "/tmp", {str(REPO)!r}, _os.path.expanduser("~")):
    try:
        _os.makedirs(_os.path.join(_folder, "grades"), exist_ok=True)
        with open(_os.path.join(_folder, "grades", "results.json"), "w") as _handle:
            _json.dump({{"score": 100, "tests": []}}, _handle)
    except BaseException:
        pass
_os._exit(0)
""")
    # A loop that swallows every exception, the timeout's included.
    append("exercise1/q3_summaries.py", """
def main(argv=None):
    import time
    while True:
        try:
            time.sleep(1000)
        except BaseException:
            continue
""")
    # Memory growth without end.
    append("exercise1/q4_resnet.py", """
_honest_resnet = ResNet18


def ResNet18(*args, **kwargs):
    hoard = []
    while True:
        hoard.append(torch.empty(1 << 28))
""")
    # A long call in C, which no signal-based alarm interrupts.
    append("exercise1/q5_grid_search.py", """
def main(argv=None):
    import ctypes
    ctypes.CDLL(None).sleep(100000)
""")
    # The hidden reference, imported from where the grader keeps it.
    append("utils/TripletLoss.py", f"""
import sys as _sys
_sys.path.insert(0, {grader!r})
from reference.triplet import ReferenceTripletLoss as TripletLoss  # noqa: E402,F811
""")
    # Leaks through an exception message: the environment, the hidden tests, the grader's folder.
    append("data.py", f"""
def _leak(self, *args, **kwargs):
    import os
    secrets = [os.environ.get("SIAMESE_TP_CANARY", "no-canary"), str(sorted(os.environ))]
    for path in ({grader + '/graded/test_ex2_q4_market.py'!r}, {grader + '/reference/market.py'!r}):
        try:
            secrets.append(open(path).read()[:300])
        except OSError as error:
            secrets.append(type(error).__name__)
    raise ValueError(" | ".join(secrets))


Market1501.__init__ = _leak
""")
    # A link to the grader's own file instead of the student's network.
    (root / "network.py").unlink()
    (root / "network.py").symlink_to(TESTS / "reference" / "models.py")
    # Kill the grading process.
    append("main.py", """
_honest_train = train


def train(*args, **kwargs):
    import os, signal
    os.kill(os.getppid(), signal.SIGKILL)
    return _honest_train(*args, **kwargs)
""")
    # A process that leaves its session to outlive the grading (the question itself stays correct).
    append("evaluation_tp.py", """
import subprocess as _subprocess
_subprocess.Popen(["sleep", "987654"], start_new_session=True)
""")
    # Files that would shadow the standard library and installed packages.
    for name in ("json.py", "numpy.py", "torch.py", "pytest.py"):
        (root / name).write_text("raise SystemExit('shadowed')\n")
    return {"Ex1 Q2": "exited before answering", "Ex1 Q3": "timed out after", "Ex1 Q4": "memory limit",
            "Ex1 Q5": "timed out after", "Ex2 Q2": "No module named 'reference'", "Ex2 Q4": "raised ValueError",
            "Ex2 Q5": "symbolic link", "Ex2 Q6": "raised PermissionError"}


@pytest.mark.skipif(not (can_switch_user() and namespaces_available()),
                    reason="the sandbox's own user ids and namespaces need root (CI and Gradescope run as root)")
def test_hostile_submission_loses_only_the_attacked_questions(tmp_path):
    expected = hostile_submission(tmp_path / "hostile")
    results = grade(tmp_path / "hostile", tmp_path / "grades", "--time-limit", "20",
                    env={**os.environ, "SIAMESE_TP_CANARY": CANARY})
    text = json.dumps(results)
    scores = question_scores(results)
    for key, reason in expected.items():
        score, outputs = scores[key]
        assert any(reason in output for output in outputs), f"{key}: no failure says {reason!r}: {outputs[:2]}"
    # What the attacks did not break keeps its points: Q4's BasicBlock, Q4 (data)'s get_id, all of Q7.
    assert scores["Ex1 Q4"][0] == points.QUESTIONS[2].tests["test_basic_block_adds_the_shortcut"]
    assert scores["Ex2 Q4"][0] == points.QUESTIONS[5].tests["test_get_id"]
    assert scores["Ex2 Q7"][0] == points.QUESTIONS[8].points
    assert results["score"] == sum(score for score, _ in scores.values())
    assert CANARY not in text and "def test_" not in text and "write_market" not in text, "a secret leaked"
    assert str(TESTS) not in text
    for path in (tmp_path / "hostile").rglob("results.json"):
        pytest.fail(f"the submission wrote {path}")
    leftovers = subprocess.run(["pgrep", "-f", "sleep 987654"], capture_output=True, text=True).stdout.split()
    assert not leftovers, "a process of the submission outlived the grading"
    assert results["execution_time"] < 240


# --------------------------------------------------------------------------- the starter, through Gradescope
def test_starter_graded_through_the_gradescope_bundle_scores_zero_code_points(tmp_path):
    bundle = gradescope.build_bundle(tmp_path / "autograder.zip")
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        archive.extractall(root)
    assert "run_autograder" in names and "setup.sh" in names
    assert not any(name.startswith("source/tests/test_") or name.startswith("source/exercise") for name in names), \
        "the bundle ships this repository's own tests or solution code"
    # The student uploads a zip of the starter (a folder inside it), as Gradescope stores it.
    starter = tmp_path / "starter"
    handout.write_handout(starter / "Dupont-Pierre-travail-TP1")
    submission = root / "submission"
    submission.mkdir()
    shutil.make_archive(str(submission / "Dupont-Pierre-travail-TP1"), "zip", starter)
    (root / "results").mkdir()
    subprocess.run(["bash", str(root / "run_autograder")], env={**os.environ, "AUTOGRADER_ROOT": str(root),
                   "PYTHON": sys.executable}, capture_output=True, timeout=800)
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0
    code_tests = [test for test in results["tests"] if "(written" not in test["name"]]
    assert len(code_tests) == sum(len(question.tests) for question in points.QUESTIONS)
    for test in code_tests:
        assert test["score"] == 0 and "not implemented (Ex" in test["output"], test["output"]
    assert (root / "results" / "marking.md").is_file()
    answers = json.loads((root / "results" / "answers.json").read_text())
    assert all("no answer written" in answer["flags"] for answer in answers.values())


# --------------------------------------------------------------------------- a class
def test_class_grading_writes_a_gradebook_and_survives_a_broken_submission(tmp_path):
    from autograder import classroom

    class_dir = tmp_path / "class"
    copy_solution(class_dir / "alice")
    nested = tmp_path / "bob-src"
    copy_solution(nested / "Bob-Martin-travail-TP1")
    shutil.make_archive(str(class_dir / "bob"), "zip", nested)
    (class_dir / "carol.zip").write_bytes(b"this is not a zip")
    evil = zipfile.ZipFile(class_dir / "dave.zip", "w")
    evil.writestr("../../escaped.py", "print('out of the folder')\n")
    evil.writestr("Dave/data.py", (REPO / "data.py").read_text())
    evil.close()
    out = tmp_path / "grades"
    subprocess.run([sys.executable, "-m", "tests.autograder.classroom", str(class_dir), "--out", str(out),
                    "--jobs", "2", "--tests", "tests/graded/test_ex2_q4_market.py"],
                   cwd=REPO, check=True, capture_output=True, timeout=800)
    rows = {row["student"]: row for row in classroom.csv.DictReader((out / "gradebook.csv").open())}
    assert set(rows) == {"alice", "bob", "carol", "dave"}
    full = points.QUESTIONS[5].points
    assert float(rows["alice"]["Ex2 Q4 (code)"]) == full and float(rows["bob"]["Ex2 Q4 (code)"]) == full
    assert float(rows["dave"]["Ex2 Q4 (code)"]) == full, "the safe part of a zip with a bad entry is graded"
    assert "not a readable zip" in rows["carol"]["status"]
    assert not (tmp_path / "escaped.py").exists() and not (out / "escaped.py").exists()
    marking = list(classroom.csv.DictReader((out / "marking.csv").open()))
    assert {row["student"] for row in marking} == {"alice", "bob", "dave"}
    assert all(row["score"] == "0" for row in marking if row["student"] == "dave"), "dave wrote no answer"


@pytest.mark.parametrize("command", ["benchmark", "classroom", "gradescope", "handout", "regrade", "similarity"])
def test_every_instructor_command_starts_outside_pytest(command):
    # As the README runs them, from the repository root: tests/ is not on sys.path there, unlike under pytest.
    result = subprocess.run([sys.executable, "-m", f"tests.autograder.{command}", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
