"""Exercise 2 end to end on a tiny generated set: train (main.py), reload (evaluation_tp.py), resume, evaluate,
one epoch of ``train``, the checkpoint, the schedule, the Q1 script, and the one-line errors."""

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
from data import Market1501, evaluation_loader
from network import ReIDNet
from utils.reid_transforms import evaluation_transform
from utils.training import claim_run_folder
from utils.synthetic_market import generate_market

REPO = Path(__file__).resolve().parents[1]
TINY = ["--device", "cpu", "--backbone", "resnet18", "--height", "64", "--width", "32", "--feat-dim", "32",
        "--batch-size", "16", "--num-instances", "4", "--workers", "0", "--eval-batch-size", "64"]
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


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


def split_arrays(root: Path, split: str, size: tuple[int, int]):
    """Standardised images (N, 3, H, W) float64, ids and cameras of a split, parsed here from the file names."""
    folder = root / {"query": "query", "gallery": "bounding_box_test"}[split]
    names = sorted(p.name for p in folder.glob("*.jpg") if not p.name.startswith("-1_"))
    images = []
    for name in names:
        with Image.open(folder / name) as image:
            pixels = np.asarray(image.convert("RGB").resize(size[::-1], Image.BILINEAR), dtype=np.float64)
        images.append(((pixels / 255 - MEAN) / STD).transpose(2, 0, 1))
    ids = np.array([int(n.split("_")[0]) for n in names])
    return np.stack(images), ids, np.array([int(n[n.index("_c") + 2]) for n in names])


def unit_rows(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def euclidean(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return np.sqrt(((first[:, None] - second[None]) ** 2).sum(-1))


# --------------------------------------------------------------------------- end to end
def test_train_writes_outputs_and_reload_gives_identical_numbers(trained, tiny_root, tmp_path):
    results, checkpoint = trained["results"], trained["checkpoint"]
    run = trained["out"] / "runs" / "main" / "tiny"
    saved = json.loads((run / "results.json").read_text())
    keys = ("rank1", "rank5", "rank10", "mAP", "cmc")
    assert {key: saved[key] for key in keys} == {key: results[key] for key in keys}
    assert saved["dataset"] == "synthetic Market-1501"
    assert results["rank1"] == results["cmc"][0] and len(results["cmc"]) == 50
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1] and history[0]["Eval/mAP"] == results["mAP"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    expected = {"Loss/triplet", "Loss/id", "Loss/total", "LearningRate", "Eval/rank1", "Eval/mAP", "Loss/total_step"}
    assert expected <= tags

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and {"model", "optimizer", "scheduler", "scaler"} <= set(state)
    assert state["config"] == {"backbone": "resnet18", "feat_dim": 32, "num_classes": 4, "height": 64, "width": 32}

    reloaded = evaluation_tp.main(["--checkpoint", str(checkpoint), "--data-root", str(tiny_root), "--device", "cpu",
                                   "--workers", "0", "--runs-dir", str(tmp_path), "--run-name", "eval"])
    for key in keys:
        assert reloaded[key] == results[key], key
    output = tmp_path / "evaluation_tp" / "eval"
    assert json.loads((output / "results.json").read_text())["mAP"] == results["mAP"]
    for figure in ("cmc.png", "ranked_list.png"):
        with Image.open(output / figure) as image:
            assert image.format == "PNG" and min(image.size) > 100


def test_resumed_run_equals_uninterrupted_run(tiny_root, tmp_path):
    # One DataLoader worker: the augmentation drawn in a worker process must replay too.
    augmented = ["--workers", "1", "--erasing", "0.5"]
    full = reid_main.main(train_args(tiny_root, tmp_path, "full", "--epochs", "2", *augmented))
    reid_main.main(train_args(tiny_root, tmp_path, "split", "--epochs", "1", *augmented))
    resumed = reid_main.main(train_args(tiny_root, tmp_path, "split", "--epochs", "2", "--resume", *augmented))
    assert resumed == full
    weights = [torch.load(tmp_path / "checkpoints" / "main" / f"{name}.pt", weights_only=True)["model"]
               for name in ("full", "split")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    history = json.loads((tmp_path / "runs" / "main" / "split" / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]


def test_evaluate_matches_a_per_image_reference(tiny_root):
    torch.manual_seed(0)
    model = ReIDNet(4, backbone="resnet18", feat_dim=16).eval()
    loaders = [evaluation_loader(Market1501(tiny_root, split, transform=evaluation_transform(64, 32)), 7, 0)
               for split in ("query", "gallery")]
    results = reid_main.evaluate(model, *loaders, "cpu")

    def embed(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.tensor(images, dtype=torch.float32)
            rows = [(model(x[i:i + 1])[2] + model(torch.flip(x[i:i + 1], dims=[3]))[2])[0].double().numpy()
                    for i in range(len(x))]
        return unit_rows(np.stack(rows))

    q, q_ids, q_cams = split_arrays(tiny_root, "query", (64, 32))
    g, g_ids, g_cams = split_arrays(tiny_root, "gallery", (64, 32))
    cmc, mean_ap = cmc_map_loop(euclidean(embed(q), embed(g)), q_ids, g_ids, q_cams, g_cams)
    assert np.allclose(results["cmc"], cmc) and results["mAP"] == pytest.approx(mean_ap, abs=1e-9)
    assert (results["rank1"], results["rank5"], results["rank10"]) == (cmc[0], cmc[4], cmc[9])


def test_raw_pixel_baseline_matches_brute_force(tiny_root, tmp_path):
    results = evaluation_tp.main(["--raw-pixels", "--data-root", str(tiny_root), "--workers", "0",
                                  "--runs-dir", str(tmp_path), "--run-name", "raw"])
    q, q_ids, q_cams = split_arrays(tiny_root, "query", (64, 32))
    g, g_ids, g_cams = split_arrays(tiny_root, "gallery", (64, 32))
    distmat = euclidean(unit_rows(q.reshape(len(q), -1)), unit_rows(g.reshape(len(g), -1)))
    cmc, mean_ap = cmc_map_loop(distmat, q_ids, g_ids, q_cams, g_cams)
    assert np.allclose(results["cmc"], cmc) and results["mAP"] == pytest.approx(mean_ap, abs=1e-9)


# --------------------------------------------------------------------------- train(), save_checkpoint(), the schedule
class TinyReID(torch.nn.Module):
    """A small stand-in for ReIDNet: same outputs, a few parameters."""

    def __init__(self, num_classes: int = 3, feat_dim: int = 4):
        super().__init__()
        self.FC1 = torch.nn.Linear(3 * 4 * 2, feat_dim)
        self.FC2 = torch.nn.Linear(feat_dim, num_classes)

    def forward(self, x: torch.Tensor):
        features = self.FC1(x.flatten(1))
        logits = self.FC2(features)
        return torch.cat([logits, features], 1), logits, features


def tiny_batches(seed: int = 0, batches: int = 3):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return [(torch.randn(6, 3, 4, 2, generator=generator), labels) for _ in range(batches)]


def test_train_one_epoch_equals_a_hand_written_loop():
    from loss import ReIDLoss

    torch.manual_seed(3)
    model, reference = TinyReID(), TinyReID()
    reference.load_state_dict(model.state_dict())
    criterion = ReIDLoss(3, margin=0.5)
    loader = tiny_batches()
    stats = reid_main.train(model, loader, criterion, torch.optim.SGD(model.parameters(), lr=0.1), "cpu")

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    losses, correct = [], 0
    for images, labels in loader:
        _, logits, features = reference(images)
        loss, _ = criterion(logits, features, labels)
        correct += int((logits.argmax(1) == labels).sum())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for name, parameter in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], parameter, rtol=1e-6, atol=1e-7)
    assert stats["loss"] == pytest.approx(np.mean(losses), rel=1e-6)
    assert stats["accuracy"] == correct / 18 and 0.0 <= stats["accuracy"] <= 1.0
    assert stats["loss"] == pytest.approx(stats["triplet"] + stats["id"], rel=1e-6)
    assert model.training


def test_train_steps_the_scheduler_per_batch_and_stops_at_max_batches():
    from loss import ReIDLoss

    model = TinyReID()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
    reid_main.train(model, tiny_batches(batches=4), ReIDLoss(3), optimizer, torch.device("cpu"), scheduler=scheduler,
                    max_batches=2)
    assert scheduler.last_epoch == 2 and optimizer.param_groups[0]["lr"] == 0.25


def test_save_checkpoint_is_atomic_and_loads_with_weights_only(tmp_path):
    model = TinyReID()
    optimizer = torch.optim.Adam(model.parameters())
    config = {"num_classes": 3, "backbone": "resnet18", "feat_dim": 4, "height": 64, "width": 32}
    path = tmp_path / "deep" / "run.pt"
    reid_main.save_checkpoint(path, model, optimizer, 7, config, metrics={"Loss/total": 1.5})
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 7 and state["config"] == config and state["metrics"] == {"Loss/total": 1.5}
    assert all(torch.equal(state["model"][key], value) for key, value in model.state_dict().items())
    assert state["optimizer"]["param_groups"][0]["lr"] == optimizer.param_groups[0]["lr"]
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # no temporary file left


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


# --------------------------------------------------------------------------- scripts
def test_main_dry_run_as_a_script(tiny_root, tmp_path):
    completed = subprocess.run(
        [sys.executable, "main.py", "--dry-run", *train_args(tiny_root, tmp_path, "dry"), "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr
    assert "rank-1" in completed.stdout and "synthetic Market-1501" in completed.stdout
    assert (tmp_path / "checkpoints" / "main" / "dry.pt").is_file()


def run_q1(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "exercise2" / "q1_plot_dataset.py"), "--data-root", str(root),
                           "--runs-dir", str(out), *extra], cwd=out, capture_output=True, text=True, timeout=120)


def test_q1_plot_dataset_as_a_script(tiny_root, tmp_path):
    completed = run_q1(tiny_root, tmp_path, "--run-name", "q1", "--num-ids", "3")
    assert completed.returncode == 0, completed.stderr
    written = json.loads((tmp_path / "q1_plot_dataset" / "q1" / "statistics.json").read_text())
    statistics = written["splits"]
    names = sorted(p.name for p in (tiny_root / "bounding_box_test").glob("*.jpg"))
    assert statistics["gallery"]["junk"] == sum(n.startswith("-1_") for n in names)
    assert statistics["gallery"]["distractors"] == sum(n.startswith("0000_") for n in names)
    assert statistics["gallery"]["images"] == len(names) - statistics["gallery"]["junk"]
    assert statistics["train"]["identities"] == 4 and statistics["query"]["identities"] == 4
    assert written["dataset"] == "synthetic Market-1501"
    with Image.open(tmp_path / "q1_plot_dataset" / "q1" / "identities_by_camera.png") as image:
        assert image.format == "PNG"


# --------------------------------------------------------------------------- errors, each one line, nothing lost
def one_line_exit(run, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as raised:
        run(argv)
    message = str(raised.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("flags, fragment", [
    (["--batch-size", "18"], "multiple of --num-instances"),
    (["--batch-size", "1"], "multiple of --num-instances"),
    (["--batch-size", "4"], "at least 2 identities"),
    (["--seed", "-1"], "--seed"),
    (["--height", "8"], "--height and --width must be >= 16"),
    (["--resume"], "--run-name"),
])
def test_bad_flags_are_one_line_errors(tiny_root, tmp_path, flags, fragment):
    argv = ["--data-root", str(tiny_root), *TINY, "--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path),
            *flags]
    assert fragment in one_line_exit(reid_main.main, argv)


def test_bad_data_and_checkpoints_are_one_line_errors(tiny_root, trained, tmp_path):
    out = ["--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)]
    assert "nowhere" in one_line_exit(reid_main.main, ["--data-root", str(tmp_path / "nowhere"), *TINY, *out])

    def evaluate(argv):
        return evaluation_tp.main([*argv, "--data-root", str(tiny_root), "--runs-dir", str(tmp_path), "--workers", "0"])

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    assert "foreign.pt" in one_line_exit(evaluate, ["--checkpoint", str(foreign)])
    state = torch.load(trained["checkpoint"], weights_only=True)
    state["config"]["feat_dim"] = 64
    mismatched = tmp_path / "mismatched.pt"
    torch.save(state, mismatched)
    assert "mismatched.pt" in one_line_exit(evaluate, ["--checkpoint", str(mismatched)])
    assert "missing.pt" in one_line_exit(evaluate, ["--checkpoint", str(tmp_path / "missing.pt")])
    assert not (tmp_path / "evaluation_tp").exists() or not any((tmp_path / "evaluation_tp").iterdir())


def test_runs_never_share_a_folder(tiny_root, tmp_path):
    names = [claim_run_folder(tmp_path, "main", None)[0] for _ in range(20)]
    assert len(set(names)) == 20 and all((tmp_path / "main" / name).is_dir() for name in names)
    assert claim_run_folder(tmp_path / "runs", "main", "mine")[0] == "mine"
    message = one_line_exit(reid_main.main, train_args(tiny_root, tmp_path, "mine", "--dry-run"))
    assert "already exists" in message and "--resume" in message
    assert not (tmp_path / "checkpoints" / "main" / "mine.pt").exists()


def test_unwritable_output_folders_are_refused_before_training(tiny_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    message = one_line_exit(reid_main.main, ["--data-root", str(tiny_root), *TINY, "--dry-run", "--runs-dir",
                                             str(tmp_path / "runs"), "--checkpoint-dir", str(blocker / "checkpoints")])
    assert "--checkpoint-dir" in message and "a_file" in message
    assert "--runs-dir" in one_line_exit(reid_main.main, ["--data-root", str(tiny_root), *TINY, "--dry-run",
                                                          "--runs-dir", str(blocker / "runs")])


def test_an_evaluation_error_keeps_the_epoch_and_resume_continues(tiny_root, tmp_path, monkeypatch):
    def broken_evaluate(*args, **kwargs):
        raise ValueError("compute_cmc_map: no query has a true match (same id, other camera) in the gallery")

    monkeypatch.setattr(reid_main, "evaluate", broken_evaluate)
    message = one_line_exit(reid_main.main, train_args(tiny_root, tmp_path, "run", "--dry-run"))
    assert "evaluation after epoch 1" in message and "no query has a true match" in message
    checkpoint = tmp_path / "checkpoints" / "main" / "run.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    monkeypatch.undo()
    results = reid_main.main(train_args(tiny_root, tmp_path, "run", "--dry-run", "--epochs", "2", "--resume"))
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2 and 0 <= results["mAP"] <= 1


def test_no_query_person_in_the_gallery_is_refused_before_training(tmp_path):
    root = tmp_path / "market"
    generate_market(root, ids=4, images_per_id=4, seed=1)
    for path in (root / "bounding_box_test").glob("*.jpg"):
        if not path.name.startswith(("0000_", "-1_")):
            path.unlink()
    message = one_line_exit(reid_main.main, train_args(root, tmp_path, "run", "--dry-run"))
    assert "no query person appears in the gallery" in message
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "runs").exists()


def test_a_non_finite_loss_stops_the_run(tiny_root, tmp_path):
    # One batch per epoch here: the first step's loss is finite, the step ruins the weights, epoch 2 is NaN.
    message = one_line_exit(reid_main.main, train_args(tiny_root, tmp_path, "nan", "--dry-run", "--epochs", "2",
                                                       "--lr", "1e30", "--warmup-epochs", "0"))
    assert "loss became nan in epoch 2" in message and "--lr" in message and "keeps epoch 1" in message
    assert torch.load(tmp_path / "checkpoints" / "main" / "nan.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_corrupt_training_image_is_one_line(tmp_path, workers):
    root = tmp_path / "market"
    generate_market(root, ids=4, images_per_id=4, seed=1)
    for path in (root / "bounding_box_train").glob("*.jpg"):
        path.write_bytes(b"not a jpeg")
    message = one_line_exit(reid_main.main, train_args(root, tmp_path, "corrupt", "--dry-run", "--workers", workers))
    assert "bounding_box_train" in message and "not a readable image" in message


def test_q1_on_a_corrupt_jpeg_is_one_line(tmp_path):
    root = tmp_path / "market"
    generate_market(root, ids=2, images_per_id=4, seed=1)
    for path in (root / "bounding_box_train").glob("*.jpg"):
        path.write_bytes(b"\xff\xd8 truncated")
    from exercise2 import q1_plot_dataset

    argv = ["--data-root", str(root), "--runs-dir", str(tmp_path)]
    assert "not a readable image" in one_line_exit(q1_plot_dataset.main, argv)
    assert "--seed" in one_line_exit(q1_plot_dataset.main, [*argv, "--seed", "-1"])


def test_the_gpu_command_is_the_same_in_readme_and_docstring_and_parses():
    def command(text: str) -> list[str]:
        start = text.index("python main.py --data-root data/Market-1501-v15.09.15 --backbone resnet50")
        lines = []
        for line in text[start:].splitlines():
            lines.append(line.split("#")[0].strip().rstrip("\\").strip())
            if not line.rstrip().split("#")[0].rstrip().endswith("\\"):
                break
        return " ".join(lines).split()

    in_docstring = command(reid_main.__doc__.replace("\\\\", "\\"))
    in_readme = command((REPO / "README.md").read_text())
    assert in_docstring == in_readme
    args = reid_main.build_parser().parse_args(in_readme[2:])
    assert (args.backbone, args.height, args.width, args.pretrained) == ("resnet50", 256, 128, True)
    # The iteration count both texts state: 751 Market-1501 training identities, P = 16 per batch.
    assert args.epochs * -(-751 // (args.batch_size // args.num_instances)) == 22_090
    assert "22,090 iterations" in reid_main.__doc__ and "22,090 iterations" in (REPO / "README.md").read_text()
