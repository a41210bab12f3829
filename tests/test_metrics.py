"""utils/metrics.py: compute_cmc_map against a slow torchreid-style loop, hand-made cases, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import utils.metrics as metrics
from utils.metrics import compute_cmc_map, euclidean_distance_matrix

METHODS = ["binning", "search"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small torch ops gain nothing from threads, and threads on a shared 2-core machine cost a lot."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def slow_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank):
    """torchreid's eval_market1501, one query at a time, with a full *stable* sort of each row."""
    distmat = np.asarray(distmat, dtype=np.float64)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        keep = ~((g_ids[order] == q_ids[q]) & (g_cams[order] == q_cams[q]))
        hits = (g_ids[order] == q_ids[q])[keep].astype(np.int64)
        if not hits.any():
            continue
        cmc = np.minimum(hits.cumsum(), 1)[:max_rank]
        cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])  # gallery shorter than max_rank
        all_cmc.append(cmc)
        precision_at_hits = hits.cumsum() / np.arange(1, len(hits) + 1) * hits
        all_ap.append(precision_at_hits.sum() / hits.sum())
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def random_case(seed: int, kind: str):
    rng = np.random.default_rng(seed)
    num_query, num_gallery, num_ids = rng.integers(1, 25), rng.integers(1, 300), rng.integers(1, 8)
    q_ids = rng.integers(0, num_ids, num_query)
    g_ids = rng.integers(-1, num_ids, num_gallery)  # -1 and 0: junk-like and distractor-like ids
    q_cams, g_cams = rng.integers(1, 4, num_query), rng.integers(1, 4, num_gallery)
    shape = (num_query, num_gallery)
    if kind == "integer":  # heavy ties
        distmat = rng.integers(0, 5, shape).astype(np.float64)
    elif kind == "float32":
        distmat = rng.random(shape, dtype=np.float32)
    elif kind == "float64":  # not representable in float32: the other tie-breaking path
        distmat = rng.normal(size=shape) * 10.0 ** rng.integers(-4, 4)
    elif kind == "halves":  # negative values, -0.0 and +0.0, infinities
        distmat = rng.integers(-4, 4, shape).astype(np.float32) * 0.5
        distmat[rng.random(shape) < 0.1] = -0.0
        distmat[rng.random(shape) < 0.1] = np.inf
        distmat[rng.random(shape) < 0.05] = -np.inf
    else:  # "constant": every gallery item tied
        distmat = np.full(shape, 0.7, dtype=np.float32)
    return distmat, q_ids, g_ids, q_cams, g_cams


def has_true_match(q_ids, g_ids, q_cams, g_cams) -> bool:
    return bool(((q_ids[:, None] == g_ids[None, :]) & (q_cams[:, None] != g_cams[None, :])).any())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["integer", "float32", "float64", "halves", "constant"])
def test_equals_slow_loop_on_random_cases(method: str, kind: str) -> None:
    compared = 0
    for seed in range(40):
        distmat, q_ids, g_ids, q_cams, g_cams = random_case(seed, kind)
        if not has_true_match(q_ids, g_ids, q_cams, g_cams):
            with pytest.raises(ValueError, match="no query has a true match"):
                compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=10, method=method)
            continue
        expected_cmc, expected_map = slow_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=10)
        cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=10, method=method)
        assert cmc.shape == (10,) and cmc.dtype == np.float64
        np.testing.assert_allclose(cmc, expected_cmc, rtol=0, atol=1e-12)
        assert mean_ap == pytest.approx(expected_map, rel=1e-12, abs=1e-15)
        compared += 1
    assert compared >= 20


@pytest.mark.parametrize("method", METHODS)
def test_many_chunks_and_bins_equal_slow_loop(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks: the junk pairs and true matches of every chunk are cut at the right rows.
    monkeypatch.setattr(metrics, "CHUNK_ENTRIES", 3000)
    monkeypatch.setattr(metrics, "GPU_CHUNK_ENTRIES", 3000)
    rng = np.random.default_rng(0)
    num_query, num_gallery = 60, 1200
    q_ids, g_ids = rng.integers(1, 30, num_query), rng.integers(0, 30, num_gallery)
    q_cams, g_cams = rng.integers(1, 7, num_query), rng.integers(1, 7, num_gallery)
    shape = (num_query, num_gallery)
    for distmat in (rng.random(shape, dtype=np.float32), rng.integers(0, 40, shape).astype(np.float32)):
        expected_cmc, expected_map = slow_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=50)
        cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, method=method)
        np.testing.assert_allclose(cmc, expected_cmc, rtol=0, atol=1e-12)
        assert mean_ap == pytest.approx(expected_map, rel=1e-12)


def test_hand_made_case() -> None:
    # Query 0 (id 1, cam 1). Gallery: 0 same id and camera (ignored), 1 other id, 2 and 3 true matches,
    # 4 a distractor. Remaining order by distance, the 0.2 tie by gallery index: [1, 3, 2, 4], so the
    # true matches sit at positions 2 and 3.
    # Query 1 (id 2, cam 2) has only a same-camera image of itself: skipped. Query 2 (id 5): no match.
    distmat = np.array(
        [
            [0.1, 0.2, 0.3, 0.2, 0.9],
            [0.5, 0.1, 0.1, 0.1, 0.1],
            [0.5, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    q_ids, q_cams = np.array([1, 2, 5]), np.array([1, 2, 1])
    g_ids, g_cams = np.array([1, 2, 1, 1, 0]), np.array([1, 2, 2, 3, 4])
    for method in METHODS:
        cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=6, method=method)
        np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1, 1])  # 4 items remain: the curve stays at 1
        assert mean_ap == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_ties_follow_gallery_order() -> None:
    # One query, all distances equal: the ranking is the gallery order.
    g_ids = np.array([7, 3, 3, 7, 3])
    for method in METHODS:
        cmc, mean_ap = compute_cmc_map(np.zeros((1, 5)), [3], g_ids, [0], [1, 1, 1, 1, 1], max_rank=3, method=method)
        np.testing.assert_array_equal(cmc, [0, 1, 1])
        assert mean_ap == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)


def test_perfect_and_worst_rankings() -> None:
    g_ids, g_cams = np.array([1, 2, 1, 2]), np.array([2, 2, 3, 3])
    perfect = np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    cmc, mean_ap = compute_cmc_map(perfect, [1, 2], g_ids, [1, 1], g_cams, max_rank=4)
    np.testing.assert_array_equal(cmc, [1, 1, 1, 1])
    assert mean_ap == 1.0
    cmc, mean_ap = compute_cmc_map(1.0 - perfect, [1, 2], g_ids, [1, 1], g_cams, max_rank=4)
    np.testing.assert_array_equal(cmc, [0, 0, 1, 1])
    assert mean_ap == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_torch_inputs_give_identical_results() -> None:
    distmat, q_ids, g_ids, q_cams, g_cams = random_case(3, "integer")
    expected = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams)
    as_tensors = [torch.from_numpy(np.asarray(a)) for a in (distmat, q_ids, g_ids, q_cams, g_cams)]
    for method in ["auto", *METHODS]:
        cmc, mean_ap = compute_cmc_map(*as_tensors, method=method)
        np.testing.assert_array_equal(cmc, expected[0])
        assert mean_ap == expected[1]
    # A float16 or integer matrix ranks like its exact float64 values.
    cmc, mean_ap = compute_cmc_map(torch.from_numpy(distmat).half(), *as_tensors[1:])
    np.testing.assert_array_equal(cmc, expected[0])
    assert mean_ap == expected[1]
    cmc, mean_ap = compute_cmc_map(distmat.astype(np.int64), q_ids, g_ids, q_cams, g_cams)
    assert mean_ap == expected[1]


def test_bad_inputs_give_one_line_errors() -> None:
    distmat, q_ids, g_ids, q_cams, g_cams = random_case(1, "float32")
    cases = {
        "distmat": (distmat[0], q_ids, g_ids, q_cams, g_cams),
        "q_ids": (distmat, q_ids[:-1], g_ids, q_cams, g_cams),
        "g_cams": (distmat, q_ids, g_ids, q_cams, g_cams.astype(float)),
    }
    for name, arguments in cases.items():
        with pytest.raises(ValueError, match=name) as error:
            compute_cmc_map(*arguments)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="max_rank"):
        compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=0)
    with pytest.raises(ValueError, match="method"):
        compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, method="sort")
    distmat = np.zeros((2, 3))
    distmat[1, 2] = np.nan
    for method in METHODS:
        with pytest.raises(ValueError, match="NaN"):
            compute_cmc_map(distmat, [1, 1], [1, 2, 3], [0, 0], [1, 1, 1], method=method)
        with pytest.raises(ValueError, match="no query has a true match"):
            compute_cmc_map(np.zeros((1, 2)), [4], [1, 4], [1], [1, 1], method=method)


def test_euclidean_distance_matrix_matches_cdist_of_normalised_features() -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(5, 8, generator=generator) * 3
    gallery = torch.randn(9, 8, generator=generator)
    expected = torch.cdist(query / query.norm(dim=1, keepdim=True), gallery / gallery.norm(dim=1, keepdim=True))
    torch.testing.assert_close(euclidean_distance_matrix(query, gallery, rows_per_chunk=2), expected, atol=1e-5, rtol=0)
    raw = euclidean_distance_matrix(query, gallery, normalize=False)
    torch.testing.assert_close(raw, torch.cdist(query, gallery), atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="query_features"):
        euclidean_distance_matrix(query, gallery[:, :4])
