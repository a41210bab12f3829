"""Ex2 Q7: ``main.save_checkpoint`` and ``evaluation_tp.py`` (reload, evaluate, refuse a bad file).

Q5's ``ReIDNet`` and Q4's ``Market1501`` are replaced by stand-ins; the stand-in network's embedding does not
change under a horizontal flip or a per-channel normalisation, so the expected numbers do not depend on how
the given ``evaluate`` preprocesses images.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from autograder.child.doubles_eval import MarketDouble, checkpoint_model
from reference import reid_metrics

from .checks import close, same_state

KEYS = ("rank1", "rank5", "rank10", "mAP")


@pytest.fixture(scope="module")
def expected_metrics(run) -> dict[str, float]:
    model, _ = checkpoint_model(run.inputs["checkpoint"])
    model.eval()
    root = run.private / "market"

    def embed(split: str):
        dataset = MarketDouble(root, split)
        images = []
        for path in dataset.imgs:
            with Image.open(path) as file:
                images.append(np.asarray(file.convert("RGB"), dtype=np.float64).transpose(2, 0, 1))
        with torch.no_grad():
            features = model(torch.from_numpy(np.stack(images)))[2].double()
        features = torch.nn.functional.normalize(features, dim=1).numpy()
        return features, np.array(dataset.ids), np.array(dataset.cameras)

    query, q_ids, q_cams = embed("query")
    gallery, g_ids, g_cams = embed("gallery")
    distances = np.sqrt(((query[:, None, :] - gallery[None, :, :]) ** 2).sum(-1))
    cmc, mean_ap = reid_metrics.cmc_map_per_query_loop(distances, q_ids, g_ids, q_cams, g_cams, max_rank=10)
    return {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap}


def test_checkpoint_holds_model_epoch_config(run):
    """save_checkpoint(path, model, optimizer, epoch, config) writes a weights_only-loadable dict: model, epoch, config"""
    run.probe("ex2_q7_save")
    data = run.child_bytes("checkpoints/graded.pt", max_bytes=64 << 20)
    assert data is not None, "save_checkpoint wrote no file at the path it was given"
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever the file holds, it is not what was asked
        raise AssertionError("the checkpoint does not load with torch.load(..., weights_only=True)") from None
    assert isinstance(state, dict), "the checkpoint is not a dict"
    model, _ = checkpoint_model(run.inputs["checkpoint"])
    same_state(state.get("model"), model.state_dict(), "checkpoint['model']")
    assert state.get("epoch") == 3, "checkpoint['epoch'] is not the epoch given (3)"
    assert state.get("config") == run.inputs["checkpoint"]["config"], "checkpoint['config'] is not the config given"
    assert isinstance(state.get("optimizer"), dict), "checkpoint['optimizer'] (the optimizer's state) is missing"


def test_reload_rebuilds_the_model(run):
    """load_reid_checkpoint(path) rebuilds ReIDNet from the config, loads the weights, and sets evaluation mode"""
    value = run.probe("ex2_q7_reload")
    model, _ = checkpoint_model(run.inputs["checkpoint"])
    same_state(value["state"], model.state_dict(), "the reloaded model's weights")
    assert value["training"] is False, "the reloaded model is left in training mode (call .eval())"
    config = run.inputs["checkpoint"]["config"]
    for key in ("num_classes", "feat_dim", "height", "width"):
        assert value["config"].get(key) == config[key], f"the returned config's {key!r} differs from the saved one"


def test_evaluation_reproduces_the_reference(run, expected_metrics):
    """evaluation_tp.py --checkpoint ... evaluates query vs gallery: rank-1/5/10 and mAP as computed here"""
    returned = run.probe("ex2_q7_evaluate")["returned"]
    data = run.child_bytes("runs/evaluation_tp/graded/results.json", max_bytes=1 << 20)
    assert data is not None, "no results.json under --runs-dir/evaluation_tp/--run-name"
    try:
        written = json.loads(data)
    except ValueError:
        raise AssertionError("results.json is not valid JSON") from None
    for key in KEYS:
        assert key in returned, f"main() of evaluation_tp.py returned no {key!r}"
        close(returned[key], expected_metrics[key], f"evaluation_tp {key}", atol=1e-4)
        assert isinstance(written, dict) and key in written, f"results.json holds no {key!r}"
        close(written[key], expected_metrics[key], f"results.json {key}", atol=1e-4)


def test_bad_checkpoint_is_one_line(run):
    """A file that is not a checkpoint (a foreign dict, random bytes) stops evaluation_tp.py with one line naming it"""
    value = run.probe("ex2_q7_bad_checkpoints")
    for name, outcome in value.items():
        assert outcome["exited"], f"--checkpoint {name}: expected a one-line error (SystemExit), got " + \
            (f"a {outcome['raised']} traceback" if outcome["raised"] else "no error at all")
        message = outcome["message"]
        assert outcome.get("code_is_text") and message.strip() and "\n" not in message.strip(), \
            f"--checkpoint {name}: the error must be one line of text"
        assert name in message, f"--checkpoint {name}: the error does not name the file"
