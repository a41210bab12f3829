"""utils/metrics.py: compute_cmc_map against an independent per-query loop, hand-made cases, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import utils.metrics as metrics
from utils.metrics import compute_cmc_map, euclidean_distance_matrix


@pytest.fixture(autouse=True)
def one_thread():
    """Small torch ops gain nothing from threads, and threads on a shared 2-core machine cost a lot."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def per_query_loop(distmat, q_ids, g_ids, q_cams, g_cams, max_rank):
    """The Market-1501 protocol one query at a time, from its definition: a full stable sort of each row,
    junk (-1) and same-person-same-camera images dropped, CMC from the first hit, AP from every hit."""
    distmat = np.asarray(distmat, dtype=np.float64)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        ranked = [g for g in np.argsort(distmat[q], kind="stable")
                  if g_ids[g] != -1 and not (g_ids[g] == q_ids[q] and g_cams[g] == q_cams[q])]
        hits = [rank for rank, g in enumerate(ranked, start=1) if g_ids[g] == q_ids[q]]
        if not hits:
            continue
        all_cmc.append([1.0 if hits[0] <= k else 0.0 for k in range(1, max_rank + 1)])
        all_ap.append(sum(number / rank for number, rank in enumerate(hits, start=1)) / len(hits))
    return np.mean(all_cmc, axis=0), float(np.mean(all_ap))


def random_case(seed: int, kind: str):
    rng = np.random.default_rng(seed)
    num_query, num_gallery, num_ids = rng.integers(1, 25), rng.integers(1, 300), rng.integers(1, 8)
    q_ids = rng.integers(0, num_ids, num_query)
    g_ids = rng.integers(-1, num_ids, num_gallery)  # -1 junk and 0 distractors among them
    q_cams, g_cams = rng.integers(1, 4, num_query), rng.integers(1, 4, num_gallery)
    shape = (num_query, num_gallery)
    if kind == "integer":  # heavy ties
        distmat = rng.integers(0, 5, shape).astype(np.float64)
    elif kind == "float32":
        distmat = rng.random(shape, dtype=np.float32)
    elif kind == "float64":  # values float32 cannot hold
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
    return bool(((q_ids[:, None] == g_ids[None, :]) & (q_cams[:, None] != g_cams[None, :]) & (g_ids[None, :] != -1))
                .any())


def assert_equal_to_loop(distmat, q_ids, g_ids, q_cams, g_cams, max_rank: int) -> None:
    expected_cmc, expected_map = per_query_loop(distmat, q_ids, g_ids, q_cams, g_cams, max_rank)
    cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=max_rank)
    assert cmc.shape == (max_rank,) and cmc.dtype == np.float64
    np.testing.assert_allclose(cmc, expected_cmc, rtol=0, atol=1e-12)
    assert mean_ap == pytest.approx(expected_map, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("kind", ["integer", "float32", "float64", "halves", "constant"])
def test_equals_the_per_query_loop_on_random_cases(kind: str) -> None:
    compared = 0
    for seed in range(40):
        case = random_case(seed, kind)
        if not has_true_match(*case[1:]):
            with pytest.raises(ValueError, match="no query has a true match"):
                compute_cmc_map(*case, max_rank=10)
            continue
        assert_equal_to_loop(*case, max_rank=10)
        compared += 1
    assert compared >= 20


@pytest.mark.parametrize("chunk_entries, bins", [(3000, 4096), (1, 5), (50_000, 6)])
def test_chunks_and_bins_do_not_change_the_result(chunk_entries: int, bins: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks cut between query rows; few bins send most images to the exact search, many leave few there.
    monkeypatch.setattr(metrics, "CHUNK_ENTRIES", chunk_entries)
    monkeypatch.setattr(metrics, "BINS", bins)
    rng = np.random.default_rng(0)
    num_query, num_gallery = 60, 1200
    q_ids, g_ids = rng.integers(1, 30, num_query), rng.integers(-1, 30, num_gallery)
    q_cams, g_cams = rng.integers(1, 7, num_query), rng.integers(1, 7, num_gallery)
    shape = (num_query, num_gallery)
    for distmat in (rng.random(shape, dtype=np.float32), rng.integers(0, 40, shape).astype(np.float32),
                    np.exp(rng.normal(size=shape) * 20)):  # spans many orders of magnitude
        assert_equal_to_loop(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=50)


def test_hand_made_case() -> None:
    # Query 0 (id 1, cam 1). Gallery: 0 same id and camera (ignored), 1 other id, 2 and 3 true matches,
    # 4 a distractor, 5 junk (ignored). Remaining order by distance, the 0.2 tie by gallery index:
    # [1, 3, 2, 4], so the true matches sit at positions 2 and 3.
    # Query 1 (id 2, cam 2) has only a same-camera image of itself: skipped. Query 2 (id 5): no match.
    distmat = np.array([[0.1, 0.2, 0.3, 0.2, 0.9, 0.0],
                        [0.5, 0.1, 0.1, 0.1, 0.1, 0.0],
                        [0.5, 0.1, 0.1, 0.1, 0.1, 0.0]])
    q_ids, q_cams = np.array([1, 2, 5]), np.array([1, 2, 1])
    g_ids, g_cams = np.array([1, 2, 1, 1, 0, -1]), np.array([1, 2, 2, 3, 4, 2])
    cmc, mean_ap = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams, max_rank=6)
    np.testing.assert_array_equal(cmc, [0, 1, 1, 1, 1, 1])  # 4 items remain: the curve stays at 1
    assert mean_ap == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_ties_follow_gallery_order() -> None:
    # One query, all distances equal: the ranking is the gallery order.
    g_ids = np.array([7, 3, 3, 7, 3])
    cmc, mean_ap = compute_cmc_map(np.zeros((1, 5)), [3], g_ids, [0], [1, 1, 1, 1, 1], max_rank=3)
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


def test_torch_and_other_dtypes_give_identical_results() -> None:
    distmat, q_ids, g_ids, q_cams, g_cams = random_case(3, "integer")
    expected = compute_cmc_map(distmat, q_ids, g_ids, q_cams, g_cams)
    as_tensors = [torch.from_numpy(np.asarray(a)) for a in (distmat, q_ids, g_ids, q_cams, g_cams)]
    as_integers = torch.from_numpy(distmat.astype(np.int64))
    for distances in (as_tensors[0], as_tensors[0].half(), as_tensors[0].float(), as_integers):
        cmc, mean_ap = compute_cmc_map(distances, *as_tensors[1:])
        np.testing.assert_array_equal(cmc, expected[0])
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
    distmat = np.zeros((2, 3))
    distmat[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_cmc_map(distmat, [1, 1], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="no query has a true match"):
        compute_cmc_map(np.zeros((1, 2)), [4], [1, 4], [1], [1, 1])


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
