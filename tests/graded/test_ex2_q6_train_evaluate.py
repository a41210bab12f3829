"""Ex2 Q6: ``compute_cmc_map`` (Market-1501 protocol), ``evaluate`` and one tiny ``train`` epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from reference import market, reid_metrics

from .conftest import TINY_SIZE, use_reference_dependencies

pytestmark = pytest.mark.timeout(60, method="signal")
METRICS, MAIN = "utils/metrics.py", "main.py"


def check_against_loop(compute_cmc_map, case: dict, max_rank: int, label: str) -> None:
    cmc, mean_ap = compute_cmc_map(case["distmat"], case["q_ids"], case["g_ids"], case["q_cams"], case["g_cams"],
                                   max_rank=max_rank)
    expected_cmc, expected_map = reid_metrics.cmc_map_per_query_loop(**case, max_rank=max_rank)
    cmc = np.asarray(cmc, dtype=np.float64)
    assert cmc.shape == (max_rank,), f"{label}: cmc has shape {cmc.shape}, expected ({max_rank},)"
    assert abs(float(mean_ap) - expected_map) < 1e-6, \
        f"{label}: mAP {float(mean_ap):.6f}, the per-query loop gives {expected_map:.6f}"
    worst = int(np.argmax(np.abs(cmc - expected_cmc)))
    assert np.allclose(cmc, expected_cmc, atol=1e-6), \
        f"{label}: cmc[{worst}] = {cmc[worst]:.4f}, the per-query loop gives {expected_cmc[worst]:.4f}"


def test_compute_cmc_map_matches_per_query_loop(submission):
    """compute_cmc_map equals a per-query loop on random cases with ties, same-camera matches and unmatched queries."""
    compute_cmc_map = submission.get(METRICS, "compute_cmc_map")
    for seed in range(6):
        ties = seed % 2 == 1
        case = reid_metrics.random_case(seed, ties=ties)
        check_against_loop(compute_cmc_map, case, 10, f"random case {seed}{' with ties' if ties else ''}")


def test_compute_cmc_map_hand_made_case(submission):
    """A hand-computed case: same-id-same-camera items ignored, ties in gallery order, a query skipped."""
    compute_cmc_map = submission.get(METRICS, "compute_cmc_map")
    distmat = np.array([[0.1, 0.5, 0.2, 0.3, 0.9],
                        [0.4, 0.4, 0.4, 0.1, 0.4],
                        [0.3, 0.2, 0.1, 0.5, 0.6]], dtype=np.float32)
    q_ids, q_cams = np.array([1, 2, 9]), np.array([1, 2, 1])
    g_ids, g_cams = np.array([1, 1, 2, 3, 1]), np.array([1, 2, 1, 3, 3])
    cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=5)
    # Query 0: g0 ignored, then g2, g3 miss, g1, g4 hit: AP (1/3 + 2/4) / 2. Query 1: g3, g0, g1 miss (ties in
    # gallery order), g2 hits: AP 1/4. Query 2 (id 9) has no match: skipped.
    expected_map = ((1 / 3 + 2 / 4) / 2 + 1 / 4) / 2
    assert abs(float(mean_ap) - expected_map) < 1e-6, f"mAP {float(mean_ap):.6f}, expected {expected_map:.6f}"
    assert np.allclose(np.asarray(cmc, dtype=np.float64), [0, 0, 0.5, 1, 1], atol=1e-6), \
        f"cmc {np.round(np.asarray(cmc, dtype=np.float64), 4).tolist()}, expected [0, 0, 0.5, 1, 1]"


class RowProfileNet(nn.Module):
    """A stand-in network whose embedding is known: each channel's profile of row means, standardised.

    It is unchanged by a horizontal flip and by any per-channel scale-and-shift normalisation of the
    input, so it does not depend on how ``evaluate`` preprocesses or flips images.
    """

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))
        self.num_classes = num_classes

    @staticmethod
    def embed(images: torch.Tensor) -> torch.Tensor:
        rows = images.double().mean(dim=3)
        rows = (rows - rows.mean(dim=2, keepdim=True)) / rows.std(dim=2, keepdim=True)
        return rows.flatten(1)

    def forward(self, images: torch.Tensor):
        features = self.embed(images).float() + 0 * self.unused
        logits = torch.zeros(len(images), self.num_classes)
        return torch.cat([logits, features], 1), logits, features


def reference_evaluation(root, split_query="query", split_gallery="gallery") -> dict:
    from PIL import Image

    def split(name):
        dataset = market.ReferenceMarket1501(root, name)
        images = []
        for path in dataset.imgs:
            with Image.open(path) as file:
                images.append(np.asarray(file.convert("RGB"), dtype=np.float64).transpose(2, 0, 1))
        features = RowProfileNet.embed(torch.from_numpy(np.stack(images))).numpy()
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        return features, np.array(dataset.ids), np.array(dataset.cameras)

    q, q_ids, q_cams = split(split_query)
    g, g_ids, g_cams = split(split_gallery)
    distmat = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    cmc, mean_ap = reid_metrics.cmc_map_per_query_loop(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=50)
    return {"rank1": cmc[0], "rank5": cmc[4], "rank10": cmc[9], "mAP": mean_ap, "cmc": cmc}


def test_evaluate_matches_reference(submission, tiny_market_root, monkeypatch):
    """evaluate(model, query, gallery) = CMC/mAP of Euclidean distances between L2-normalised embeddings."""
    main = submission.load(MAIN)
    use_reference_dependencies(submission, monkeypatch)
    load_image_set = submission.get(MAIN, "load_image_set")
    query = load_image_set(tiny_market_root, "query", *TINY_SIZE)
    gallery = load_image_set(tiny_market_root, "gallery", *TINY_SIZE)
    results = main.evaluate(RowProfileNet(), query, gallery)
    expected = reference_evaluation(tiny_market_root)
    for key in ("rank1", "rank5", "rank10", "mAP"):
        assert key in results, f"evaluate returned no {key!r} (keys: {sorted(results)})"
        assert abs(float(results[key]) - expected[key]) < 1e-4, \
            f"evaluate: {key} = {float(results[key]):.4f}, expected {expected[key]:.4f} (L2-normalised embeddings, " \
            "Euclidean distances, Market-1501 protocol)"
    cmc = np.asarray(results.get("cmc"), dtype=np.float64)
    assert cmc.shape == expected["cmc"].shape and np.allclose(cmc, expected["cmc"], atol=1e-4), \
        "evaluate: the cmc curve differs from the reference"


def test_train_one_tiny_epoch(reid_run):
    """main.py --dry-run trains one tiny epoch, saves a checkpoint and returns rank-1/5/10, mAP and the CMC."""
    results, checkpoints = reid_run["results"], reid_run["checkpoints"]
    assert isinstance(results, dict), f"main() returned {type(results).__name__}, expected the evaluation dict"
    for key in ("rank1", "rank5", "rank10", "mAP"):
        value = float(results.get(key, math.nan))
        assert 0.0 <= value <= 1.0, f"results[{key!r}] = {results.get(key)!r}, expected a fraction in [0, 1]"
    cmc = np.asarray(results.get("cmc"), dtype=np.float64)
    assert cmc.ndim == 1 and len(cmc) >= 10 and np.all(np.diff(cmc) >= 0), "results['cmc'] is not a rising curve"
    assert abs(cmc[0] - float(results["rank1"])) < 1e-9, "rank1 differs from cmc[0]"
    assert len(checkpoints) == 1, f"expected one checkpoint under --checkpoint-dir, found {len(checkpoints)}"
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    weights = state.get("model", state) if isinstance(state, dict) else None
    assert isinstance(weights, dict) and any(torch.is_tensor(v) and v.is_floating_point() for v in weights.values()), \
        "the checkpoint holds no model weights"
    assert all(torch.isfinite(v).all() for v in weights.values() if torch.is_tensor(v) and v.is_floating_point()), \
        "the trained weights contain NaN/inf"
