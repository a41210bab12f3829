"""Exercise 2 end to end on a tiny generated set: train (main.py), reload (evaluation_tp.py), resume, evaluate,
augmentation, schedule, the Q1 script, and the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluation_tp
import main as reid_main
from network import ReIDNet
from utils.synthetic_market import generate_market

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--backbone", "resnet18", "--height", "64", "--width", "32", "--feat-dim", "32",
        "--batch-size", "16", "--num-instances", "4", "--workers", "1", "--eval-batch-size", "64"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny workloads: one thread avoids spinning OpenMP threads on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "market"
    generate_market(root, ids=4, images_per_id=4, seed=1)
    return root


def train_args(root: Path, out: Path, run_name: str, *extra: str) -> list[str]:
    return ["--data-root", str(root), *TINY, "--runs-dir", str(out / "runs"), "--checkpoint-dir",
            str(out / "checkpoints"), "--run-name", run_name, *extra]


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("trained")
    results = reid_main.main(train_args(tiny_root, out, "tiny", "--epochs", "1"))
    return {"out": out, "results": results, "checkpoint": out / "checkpoints" / "main" / "tiny.pt"}


# --------------------------------------------------------------------------- independent references
def cmc_map_loop(distmat: np.ndarray, q_ids, g_ids, q_cams, g_cams, max_rank: int = 50) -> tuple[np.ndarray, float]:
    """Market-1501 protocol, one query at a time, straight from its definition."""
    hits_at, average_precisions = np.zeros(max_rank), []
    for q in range(len(q_ids)):
        order = sorted(range(len(g_ids)), key=lambda g: (distmat[q, g], g))
        kept = [g for g in order if not (g_ids[g] == q_ids[q] and g_cams[g] == q_cams[q])]
        positions = [rank for rank, g in enumerate(kept) if g_ids[g] == q_ids[q]]
        if not positions:
            continue
        if positions[0] < max_rank:
            hits_at[positions[0]:] += 1
        average_precisions.append(np.mean([(n + 1) / (rank + 1) for n, rank in enumerate(positions)]))
    return hits_at / len(average_precisions), float(np.mean(average_precisions))


def split_arrays(root: Path, split: str, size: tuple[int, int] | None = None):
    """Images (N, H, W, 3) float in [0, 1], ids, cameras of a split, parsed here from the file names."""
    folder = root / {"query": "query", "gallery": "bounding_box_test"}[split]
    names = sorted(p.name for p in folder.glob("*.jpg") if not p.name.startswith("-1_"))
    images = []
    for name in names:
        with Image.open(folder / name) as image:
            image = image.convert("RGB")
            if size is not None:
                image = image.resize(size[::-1], Image.BILINEAR)
            images.append(np.asarray(image, dtype=np.float64) / 255)
    return np.stack(images), np.array([int(n.split("_")[0]) for n in names]), np.array([int(n[n.index("_c") + 2])
                                                                                         for n in names])


# --------------------------------------------------------------------------- end to end
def test_train_writes_outputs_and_reload_gives_identical_numbers(trained, tiny_root, tmp_path):
    results, checkpoint = trained["results"], trained["checkpoint"]
    run = trained["out"] / "runs" / "main" / "tiny"
    saved = json.loads((run / "results.json").read_text())
    assert {key: saved[key] for key in ("rank1", "rank5", "rank10", "mAP", "cmc")} == \
        {key: results[key] for key in ("rank1", "rank5", "rank10", "mAP", "cmc")}
    assert results["rank1"] == results["cmc"][0] and len(results["cmc"]) == 50
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1] and history[0]["Eval/mAP"] == results["mAP"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    assert {"Loss/triplet", "Loss/id", "Loss/total", "LearningRate", "Eval/rank1", "Eval/mAP"} <= tags

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    assert {key: state["config"][key] for key in ("backbone", "feat_dim", "num_classes", "height", "width")} == \
        {"backbone": "resnet18", "feat_dim": 32, "num_classes": 4, "height": 64, "width": 32}

    reloaded = evaluation_tp.main(["--checkpoint", str(checkpoint), "--data-root", str(tiny_root), "--device", "cpu",
                                   "--workers", "1", "--runs-dir", str(tmp_path), "--run-name", "eval"])
    for key in ("rank1", "rank5", "rank10", "mAP", "cmc"):
        assert reloaded[key] == results[key], key
    output = tmp_path / "evaluation_tp" / "eval"
    assert json.loads((output / "results.json").read_text())["mAP"] == results["mAP"]
    for figure in ("cmc.png", "ranked_list.png"):
        with Image.open(output / figure) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_resumed_run_equals_uninterrupted_run(tiny_root, tmp_path):
    full = reid_main.main(train_args(tiny_root, tmp_path, "full", "--epochs", "2"))
    reid_main.main(train_args(tiny_root, tmp_path, "split", "--epochs", "1"))
    resumed = reid_main.main(train_args(tiny_root, tmp_path, "split", "--epochs", "2", "--resume"))
    assert resumed == full
    weights = [torch.load(tmp_path / "checkpoints" / "main" / f"{name}.pt", weights_only=True)["model"]
               for name in ("full", "split")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    history = json.loads((tmp_path / "runs" / "main" / "split" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]


def test_evaluate_matches_a_per_image_reference(tiny_root):
    torch.manual_seed(0)
    model = ReIDNet(4, backbone="resnet18", feat_dim=16).eval()
    query = reid_main.load_image_set(tiny_root, "query", 64, 32, workers=1)
    gallery = reid_main.load_image_set(tiny_root, "gallery", 64, 32, workers=1)
    results = reid_main.evaluate(model, query, gallery, batch_size=7)

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def embed(images: torch.Tensor) -> np.ndarray:
        rows = []
        with torch.no_grad():
            for image in images:
                x = ((image.double().permute(1, 2, 0).numpy() / 255 - mean) / std).transpose(2, 0, 1)
                x = torch.tensor(x[None], dtype=torch.float32)
                feature = (model(x)[2] + model(torch.flip(x, dims=[3]))[2])[0].double().numpy()
                rows.append(feature / np.linalg.norm(feature))
        return np.stack(rows)

    q, g = embed(query.images), embed(gallery.images)
    distmat = np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    cmc, mean_ap = cmc_map_loop(distmat, query.ids, gallery.ids, query.cameras, gallery.cameras)
    assert np.allclose(results["cmc"], cmc) and results["mAP"] == pytest.approx(mean_ap, abs=1e-9)
    assert (results["rank1"], results["rank5"], results["rank10"]) == (cmc[0], cmc[4], cmc[9])


def test_raw_pixel_baseline_matches_brute_force(tiny_root, tmp_path):
    results = evaluation_tp.main(["--raw-pixels", "--data-root", str(tiny_root), "--workers", "1",
                                  "--runs-dir", str(tmp_path), "--run-name", "raw"])
    q, q_ids, q_cams = split_arrays(tiny_root, "query")
    g, g_ids, g_cams = split_arrays(tiny_root, "gallery")
    distmat = np.sqrt(((q.reshape(len(q), -1)[:, None] - g.reshape(len(g), -1)[None]) ** 2).sum(-1))
    cmc, mean_ap = cmc_map_loop(distmat, q_ids, g_ids, q_cams, g_cams)
    assert np.allclose(results["cmc"], cmc) and results["mAP"] == pytest.approx(mean_ap, abs=1e-9)


# --------------------------------------------------------------------------- pieces of train()
def test_augmentation_flip_crop_and_erasing():
    images = torch.arange(2 * 3 * 8 * 6, dtype=torch.float32).view(2, 3, 8, 6) + 1
    mirror = reid_main.ReIDAugmentation(padding=0, flip_probability=1.0, erasing_probability=0.0)
    assert torch.equal(mirror(images, torch.Generator().manual_seed(0)), images.flip(3))
    shift = reid_main.ReIDAugmentation(padding=2, flip_probability=0.0, erasing_probability=0.0)
    shifted = shift(images, torch.Generator().manual_seed(1))
    assert shifted.shape == images.shape
    assert torch.equal(shifted, shift(images, torch.Generator().manual_seed(1)))
    ones = torch.ones(64, 3, 40, 20)
    erased = reid_main.random_erasing(ones, 1.0, torch.Generator().manual_seed(2)) == 0
    for mask in erased:
        assert torch.equal(mask[0], mask[1]) and torch.equal(mask[0], mask[2]), "erasing differs across channels"
        rows, cols = mask[0].any(1), mask[0].any(0)
        # One axis-aligned rectangle: its bounding box is fully erased.
        assert mask[0].sum() == rows.sum() * cols.sum() > 0
        assert mask[0].sum() <= 0.45 * 40 * 20
    assert not (reid_main.random_erasing(ones, 0.0, torch.Generator()) == 0).any()


def test_warmup_then_step_decay():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = reid_main.warmup_step_schedule(optimizer, steps_per_epoch=4, warmup_epochs=2, milestones=[3],
                                               gamma=0.1)
    rates = []
    for _ in range(16):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [0.1 + 0.9 * step / 8 for step in range(8)] + [1.0] * 4 + [0.1] * 4
    assert np.allclose(rates, expected)


# --------------------------------------------------------------------------- scripts and errors
def test_main_dry_run_as_a_script(tiny_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, "main.py", "--dry-run", *train_args(tiny_root, tmp_path, "dry")],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr
    assert "rank-1" in completed.stdout
    assert (tmp_path / "checkpoints" / "main" / "dry.pt").is_file()


def test_q1_plot_dataset_as_a_script(tiny_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "exercise2" / "q1_plot_dataset.py"), "--data-root", str(tiny_root),
         "--runs-dir", str(tmp_path), "--run-name", "q1", "--num-ids", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    statistics = json.loads((tmp_path / "q1_plot_dataset" / "q1" / "statistics.json").read_text())["splits"]
    names = sorted(p.name for p in (tiny_root / "bounding_box_test").glob("*.jpg"))
    assert statistics["gallery"]["junk"] == sum(n.startswith("-1_") for n in names)
    assert statistics["gallery"]["distractors"] == sum(n.startswith("0000_") for n in names)
    assert statistics["gallery"]["images"] == len(names) - statistics["gallery"]["junk"]
    assert statistics["train"]["identities"] == 4 and statistics["query"]["identities"] == 4
    with Image.open(tmp_path / "q1_plot_dataset" / "q1" / "identities_by_camera.png") as image:
        assert image.format == "PNG"


def one_line_exit(run, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        run(argv)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def test_bad_inputs_are_one_line_errors(tiny_root, trained, tmp_path):
    out = ["--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    assert "multiple of num_instances" in one_line_exit(
        reid_main.main, ["--data-root", str(tiny_root), *TINY, "--batch-size", "18", *out])
    assert "nowhere" in one_line_exit(reid_main.main, ["--data-root", str(tmp_path / "nowhere"), *TINY, *out])
    assert "--run-name" in one_line_exit(reid_main.main, ["--data-root", str(tiny_root), "--resume", *out])

    def evaluate(argv):
        return evaluation_tp.main([*argv, "--data-root", str(tiny_root), "--runs-dir", str(tmp_path)])

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert "foreign.pt" in one_line_exit(evaluate, ["--checkpoint", str(foreign)])
    state = torch.load(trained["checkpoint"], weights_only=True)
    state["config"]["feat_dim"] = 64
    mismatched = tmp_path / "mismatched.pt"
    torch.save(state, mismatched)
    assert "mismatched.pt" in one_line_exit(evaluate, ["--checkpoint", str(mismatched)])
    assert "missing.pt" in one_line_exit(evaluate, ["--checkpoint", str(tmp_path / "missing.pt")])
