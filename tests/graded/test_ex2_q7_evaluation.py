"""Ex2 Q7: ``evaluation_tp.py`` reloads main.py's checkpoint and reproduces its numbers."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import use_reference_dependencies

pytestmark = pytest.mark.timeout(60, method="signal")
FILE = "evaluation_tp.py"


def run_evaluation(submission, monkeypatch, workdir, root, checkpoint):
    main = submission.get(FILE, "main")
    use_reference_dependencies(submission, monkeypatch)
    monkeypatch.chdir(workdir)
    return main(["--checkpoint", str(checkpoint), "--data-root", str(root), "--device", "cpu", "--dry-run",
                 "--workers", "1", "--runs-dir", str(workdir / "eval_runs"), "--run-name", "graded"])


def test_reload_reproduces_the_trained_numbers(submission, reid_run, tiny_market_root, monkeypatch):
    """evaluation_tp.py --checkpoint gives main.py's rank-1/5/10 and mAP again, and writes results.json."""
    assert reid_run["checkpoints"], "main.py wrote no checkpoint to reload"
    results = run_evaluation(submission, monkeypatch, reid_run["workdir"], tiny_market_root, reid_run["checkpoints"][0])
    trained = reid_run["results"]
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert abs(float(results[key]) - float(trained[key])) < 1e-6, \
            f"reloaded {key} = {float(results[key]):.6f}, main.py reported {float(trained[key]):.6f}"
    written = sorted((reid_run["workdir"] / "eval_runs").rglob("results.json"))
    assert written, "evaluation_tp.py wrote no results.json under --runs-dir"
    saved = json.loads(written[0].read_text())
    assert abs(float(saved["mAP"]) - float(trained["mAP"])) < 1e-6, "results.json holds another mAP"


def test_foreign_checkpoint_is_a_one_line_error(submission, tiny_market_root, tmp_path, monkeypatch):
    """A checkpoint that is not main.py's gives a one-line error naming the file, not a traceback."""
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": {"layer.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(SystemExit) as raised:
        run_evaluation(submission, monkeypatch, tmp_path, tiny_market_root, foreign)
    message = str(raised.value.code)
    assert raised.value.code not in (0, None) and "\n" not in message.strip(), \
        f"expected a one-line error, got {message!r}"
    assert "foreign.pt" in message, f"the error does not name the checkpoint: {message!r}"
