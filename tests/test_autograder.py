"""The autograder's own tests: full marks here, 0 on stubs, and planted bugs cost their question only.

Two gradings run as subprocesses, side by side: a copy of this repository with planted bugs in six
questions (a hang included), and the student handout made from a copy with its solution markers.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import handout, points

REPO = Path(__file__).resolve().parents[1]
GRADED = REPO / "tests" / "graded"

# Each planted bug is appended to the file, so it only uses the graded API, not the solution's internals.
PLANTED_BUGS = {
    "exercise1/q1_numpy_mlp.py": '''

def cross_entropy(probs, y):  # planted: a loop that never ends
    while True:
        pass
''',
    "exercise1/q4_resnet.py": '''

def broken(:  # planted: a syntax error
    pass
''',
    "utils/TripletLoss.py": '''

_solution_init, _solution_forward = TripletLoss.__init__, TripletLoss.forward


def _planted_init(self, margin=0.3, mining="batch_hard", soft_margin=False):
    _solution_init(self, margin=margin, mining=mining, soft_margin=soft_margin)
    self._planted = (margin, mining, soft_margin)


def _batch_hard_without_hinge(self, features, labels):  # planted: m + d_ap - d_an, no max(0, .)
    margin, mining, soft_margin = self._planted
    if mining != "batch_hard" or soft_margin:
        return _solution_forward(self, features, labels)
    distances = ((features.unsqueeze(1) - features.unsqueeze(0)).pow(2).sum(-1) + 1e-12).sqrt()
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    valid = positive.any(1) & (~same).any(1)
    d_ap = distances.masked_fill(~positive, float("-inf")).max(1).values
    d_an = distances.masked_fill(same, float("inf")).min(1).values
    return (margin + d_ap - d_an)[valid].mean()


TripletLoss.__init__, TripletLoss.forward = _planted_init, _batch_hard_without_hinge
''',
    "utils/RandomSampler.py": '''

_solution_init = RandomIdentitySampler.__init__


def _planted_init(self, labels, batch_size=64, num_instances=4, seed=0):
    _solution_init(self, labels, batch_size=batch_size, num_instances=num_instances, seed=seed)
    self._planted = {"labels": [int(label) for label in labels], "seed": seed, "epoch": 0}


def _planted_set_epoch(self, epoch):
    self._planted["epoch"] = epoch


def _one_image_per_identity(self):  # planted: ignores num_instances (K)
    rng = np.random.default_rng([self._planted["seed"], self._planted["epoch"]])
    by_identity = {}
    for index, label in enumerate(self._planted["labels"]):
        by_identity.setdefault(label, []).append(index)
    for identity in rng.permutation(sorted(by_identity)):
        yield int(rng.choice(by_identity[int(identity)]))


RandomIdentitySampler.__init__ = _planted_init
RandomIdentitySampler.set_epoch = _planted_set_epoch
RandomIdentitySampler.__iter__ = _one_image_per_identity
RandomIdentitySampler.__len__ = lambda self: len(set(self._planted["labels"]))
''',
    "data.py": '''

def _camera_as_id(*args):  # planted: get_id reads the camera field
    import re as _re
    return int(_re.search(r"_c(\\d+)", Path(str(args[-1])).name).group(1))


Market1501.get_id = staticmethod(_camera_as_id)
''',
    "utils/metrics.py": '''

def compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=50, **_):  # planted: AP / wrong count
    distmat, q_ids, g_ids = np.asarray(distmat), np.asarray(q_ids), np.asarray(g_ids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    all_cmc, all_ap = [], []
    for q in range(len(q_ids)):
        order = np.argsort(distmat[q], kind="stable")
        keep = ~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))
        matches = g_ids[order][keep] == q_ids[q]
        if not matches.any():
            continue
        first = int(np.argmax(matches))
        all_cmc.append((np.arange(max_rank) >= first).astype(float))
        precision = np.cumsum(matches) / np.arange(1, len(matches) + 1)
        all_ap.append((precision * matches).sum() / (g_ids == q_ids[q]).sum())  # counts ignored matches too
    return np.mean(all_cmc, 0), float(np.mean(all_ap))
''',
}
PLANTED_MISSING = ("exercise1/q5_grid_search.py",)
# Points each question must keep: what the planted bug breaks, nothing more, nothing less.
PLANTED_SCORES = {
    "Ex1 Q1": 10 - 2,  # cross_entropy hangs: only its test times out
    "Ex1 Q2": 5, "Ex1 Q3": 5,
    "Ex1 Q4": 0,  # q4_resnet.py does not import
    "Ex1 Q5": 0,  # q5_grid_search.py missing
    "Ex2 Q2": 14 - 3,  # batch-hard without the hinge
    "Ex2 Q3": 9 - 3 - 1,  # one image per identity: no P x K batches, small identities not repeated
    "Ex2 Q4": 0,  # get_id reads the camera: ids, junk filtering and labels all wrong
    "Ex2 Q5": 10,
    "Ex2 Q6": 16 - 5 - 2 - 4,  # AP divided by every same-id item: both metric tests and evaluate
    "Ex2 Q7": 7,  # reloading reproduces main.py's numbers, wrong or not
}
PLANTED_REASONS = {  # test -> words its one-line reason must hold
    "test_cross_entropy_matches_reference": "timed out",
    "test_parameter_count_imagenet_stem": "does not import: SyntaxError",
    "test_tiny_grid_fills_every_cell_once": "missing file exercise1/q5_grid_search.py",
    "test_batch_hard_matches_brute_force": "mining='batch_hard'",
    "test_get_id_and_get_camera": "get_id(",
    "test_compute_cmc_map_hand_made_case": "mAP",
}


def copy_repository(destination: Path) -> Path:
    """The project files of this repository (not its tests), as a student would submit them."""
    for relpath in handout.repository_files(REPO):
        if relpath.startswith("tests/"):
            continue
        target = destination / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relpath, target)
    return destination


def start_grading(submission: Path, grades_dir: Path) -> subprocess.Popen:
    """``python -m pytest --submission=...`` in the background, its console output in ``grades_dir/pytest.log``."""
    grades_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", str(GRADED), f"--submission={submission}", f"--grades-dir={grades_dir}",
               "-p", "no:cacheprovider", "-q", "-o", "addopts="]
    with open(grades_dir / "pytest.log", "w") as log:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def finish_grading(process: subprocess.Popen, grades_dir: Path) -> dict:
    try:
        process.wait(timeout=540)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = (grades_dir / "pytest.log").read_text()
    results_path = grades_dir / "results.json"
    assert results_path.is_file(), f"grading wrote no results.json:\n{output[-3000:]}"
    results = json.loads(results_path.read_text())
    results["pytest_output"] = output
    return results


def scores_by_question(results: dict) -> dict[str, int]:
    scores = {question.key: 0 for question in points.QUESTIONS}
    for test in results["tests"]:
        key = " ".join(test["name"].split()[:2])
        scores[key] += test["score"]
    return scores


def find_test(results: dict, function: str) -> dict:
    question = next(q for q in points.QUESTIONS if function in q.tests)
    index = list(question.tests).index(function) + 1
    number = ".".join([*re.findall(r"\d+", question.key), str(index)])
    return next(test for test in results["tests"] if test["number"] == number)


@pytest.fixture(scope="module")
def gradings(tmp_path_factory):
    """Grade the planted-bug copy and the handout side by side, in two processes."""
    work = tmp_path_factory.mktemp("autograder")
    planted = copy_repository(work / "planted")
    for relpath, code in PLANTED_BUGS.items():
        with open(planted / relpath, "a") as handle:
            handle.write(code)
    for relpath in PLANTED_MISSING:
        (planted / relpath).unlink(missing_ok=True)
    marked = copy_repository(work / "marked")
    handout.insert_all_markers(marked)
    report = handout.write_handout(work / "handout", root=marked)
    processes = {"planted": start_grading(planted, work / "grades_planted"),
                 "handout": start_grading(work / "handout", work / "grades_handout")}
    results = {name: finish_grading(process, work / f"grades_{name}") for name, process in processes.items()}
    return {"work": work, "handout_report": report, **results}


def test_points_table_lists_every_graded_test_and_sums_to_100():
    """tests/autograder/points.py and tests/graded/ name the same tests; the points add up to 100."""
    assert sum(question.points for question in points.QUESTIONS) == points.TOTAL_POINTS == 100
    for question in points.QUESTIONS:
        tree = ast.parse((GRADED / question.test_module).read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                     and node.name.startswith("test_")}
        assert functions == set(question.tests), f"{question.key}: tests {sorted(functions)} vs table " \
                                                 f"{sorted(question.tests)}"
    graded_modules = {path.name for path in GRADED.glob("test_*.py")}
    assert graded_modules == set(points.QUESTION_BY_MODULE), "a graded test module has no question in the table"


def test_this_repository_scores_full_marks(request, tmp_path):
    """The solution gets 100/100 (from this session's grading when it ran, else a grading of its own)."""
    plugin = request.config.pluginmanager.get_plugin("autograder")
    if plugin is not None and plugin.submission_root == REPO and all(
            result.status != "not run" for result in plugin.results.values()):
        results = plugin.results_json()
    else:
        results = finish_grading(start_grading(REPO, tmp_path), tmp_path)
    lost = [f"{test['name']}: {test['output']}" for test in results["tests"] if test["score"] < test["max_score"]]
    assert results["score"] == 100, "\n".join(lost)


@pytest.mark.timeout(600)
def test_planted_bugs_cost_exactly_their_questions_points(gradings):
    """Each planted bug (a hang, a syntax error, a missing file, four wrong answers) costs its question only."""
    results = gradings["planted"]
    assert scores_by_question(results) == PLANTED_SCORES, results["pytest_output"][-4000:]
    assert results["score"] == sum(PLANTED_SCORES.values())


@pytest.mark.timeout(600)
def test_failures_explain_themselves_in_one_line(gradings):
    """Every lost test says why in one line; the hang, import error and missing file are named as such."""
    results = gradings["planted"]
    for test in results["tests"]:
        if test["status"] == "failed":
            reason = test["output"].splitlines()[0]
            assert reason.startswith("Failed: ") and len(reason) < 320, reason
    for function, words in PLANTED_REASONS.items():
        output = find_test(results, function)["output"]
        assert words in output.splitlines()[0], f"{function}: {output!r} does not mention {words!r}"
    summary = (gradings["work"] / "grades_planted" / "summary.md").read_text()
    assert f"# Grade: {results['score']} / 100" in summary
    assert all(question.key in summary for question in points.QUESTIONS)


@pytest.mark.timeout(600)
def test_results_follow_gradescope_schema(gradings):
    """results.json has Gradescope's fields, every table test (max 100 in all), scores within their maxima."""
    results = gradings["planted"]
    assert set(results) >= {"score", "execution_time", "tests"}
    assert isinstance(results["execution_time"], (int, float)) and results["execution_time"] > 0
    expected = sum(len(question.tests) for question in points.QUESTIONS)
    assert len(results["tests"]) == expected
    assert sum(test["max_score"] for test in results["tests"]) == 100
    for test in results["tests"]:
        assert set(test) >= {"name", "number", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed") and 0 <= test["score"] <= test["max_score"]
        assert test["score"] == (test["max_score"] if test["status"] == "passed" else 0)
    assert results["score"] == sum(test["score"] for test in results["tests"])


@pytest.mark.timeout(600)
def test_handout_grades_zero_on_stubs_with_reason_not_implemented(gradings):
    """Grading the handout: every stubbed item fails with "not implemented", nothing crashes, the max stays 100."""
    results = gradings["handout"]
    assert sum(test["max_score"] for test in results["tests"]) == 100
    failed = [test for test in results["tests"] if test["status"] == "failed"]
    assert failed, "the handout lost no point: its stubs are not reached"
    for test in failed:
        assert test["output"].startswith("Failed: not implemented"), f"{test['name']}: {test['output']}"
    stubbed_files = {entry.split(":")[0] for entry in gradings["handout_report"]["stubbed"]}
    scores = scores_by_question(results)
    for question in points.QUESTIONS:
        if stubbed_files.intersection(question.files):
            assert scores[question.key] < question.points, f"{question.key} is stubbed but kept all its points"


def test_handout_leaves_out_the_grader_and_keeps_the_questions(gradings):
    """The handout has no reference, graded tests or answers; stubs keep signatures and docstrings."""
    out = gradings["work"] / "handout"
    for hidden in ("tests/reference", "tests/graded", "tests/autograder", "tests/conftest.py",
                   "tests/test_autograder.py"):
        assert not (out / hidden).exists(), f"the handout contains {hidden}"
    answers = sorted((gradings["work"] / "marked" / "report" / "answers").glob("*.md"))
    for answer in answers:
        text = (out / "report" / "answers" / answer.name).read_text()
        assert text == handout.question_only(answer.read_text(), answer.name), f"{answer.name} keeps its answer"
        assert handout.ANSWER_PLACEHOLDER in text, answer.name
    for path in out.rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path))
        assert "BEGIN SOLUTION" not in path.read_text(), f"{path} still holds a solution marker"


def test_stub_python_keeps_signatures_docstrings_and_layout():
    """Regions inside a body, around whole functions and around classes are stubbed as documented."""
    source = '''"""Module."""
import math


# BEGIN SOLUTION
SECRET = 3


@staticmethod
def helper(x,
           y=2):
    """Helper doc."""
    # how it is done
    return x + y + SECRET


class Block:
    """Block doc."""

    expansion = 1

    def __init__(self, a: int):
        self.a = a
# END SOLUTION


def partial(x):
    """Partial doc."""
    y = math.sqrt(x)
    # BEGIN SOLUTION Ex9 Q9
    return y * 2
    # END SOLUTION
'''
    stubbed, names = handout.stub_python(source, "utils/TripletLoss.py")
    assert names == ["Block", "helper", "partial"]
    assert "SECRET" not in stubbed and "how it is done" not in stubbed and "self.a = a" not in stubbed
    assert 'def helper(x,\n           y=2):\n    """Helper doc."""\n    raise NotImplementedError("Ex2 Q2: helper")' \
        in stubbed
    assert '    expansion = 1\n\n    def __init__(self, a: int):\n        raise NotImplementedError(' \
           '"Ex2 Q2: Block.__init__")' in stubbed
    assert '    y = math.sqrt(x)\n    raise NotImplementedError("Ex9 Q9: partial")\n' in stubbed
    namespace: dict = {}
    exec(compile(stubbed, "stub", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="Ex9 Q9: partial"):
        namespace["partial"](4.0)


@pytest.mark.parametrize("source, message", [
    ("def f():\n    # BEGIN SOLUTION\n    return 1\n", "never closed"),
    ("def f():\n    return 1\n    # END SOLUTION\n", "without a BEGIN"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "inside the region"),
])
def test_stub_python_rejects_bad_markers(source, message):
    """Unbalanced or nested markers stop the handout with the file and line."""
    with pytest.raises(handout.HandoutError, match=message):
        handout.stub_python(source, "some/file.py")


def test_answers_keep_only_their_question():
    """An answer file keeps its heading and quoted question; the answer becomes a placeholder."""
    text = "# Ex1 Q3: which two other quantities?\n\n> Which two others would you log?\n\nThe test loss.\n\nMore.\n"
    kept = handout.question_only(text, "report/answers/ex1_q3.md")
    assert kept == "# Ex1 Q3: which two other quantities?\n\n> Which two others would you log?\n\n" \
                   f"{handout.ANSWER_PLACEHOLDER}\n"
    headed = handout.question_only("# Title\n\n## Question 2\n\nWhy so?\n\n## Details\n\nBecause.\n", "a.md")
    assert headed == f"# Title\n\n## Question 2\n\nWhy so?\n\n{handout.ANSWER_PLACEHOLDER}\n"
    explicit = "# Q\n\nIntro kept.\n<!-- BEGIN SOLUTION -->\nsecret\n<!-- END SOLUTION -->\n"
    assert "secret" not in handout.question_only(explicit, "a.md") and "Intro kept." in \
        handout.question_only(explicit, "a.md")
