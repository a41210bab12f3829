"""Exercise 2 Q6 (given, to explain): the Market-1501 evaluation protocol, CMC and mAP.

For each query, the gallery is ranked by increasing distance (equal distances keep the gallery order, as a
stable sort does), then:

1. gallery images of the query's person taken by the query's own camera are ignored: finding the same
   shot again says nothing about re-identification across cameras;
2. junk images (person id -1, false detections) are ignored; distractors (id 0) stay, as wrong answers;
3. a query left without a true match (its person, another camera) is skipped;
4. CMC@k is 1 when a true match is among the first k remaining images, and AP is the mean, over the true
   matches, of the precision at each of them: (true matches up to it) / (its position).

CMC is averaged over the evaluated queries and mAP is the mean of their APs. This is the AP of torchreid's
``eval_market1501`` and of the "bag of tricks" code; the official MATLAB evaluation interpolates precision
between true matches (trapezoids), which gives slightly different numbers.

Why no sort: sorting every row of a Market-1501 distance matrix (3,368 x 15,913) costs seconds of CPU time,
and a Python loop over the queries about a minute. Only the positions of the true matches matter, and the
position of a true match is a count: 1 + the true matches before it + the other counted images before it.
``true_matches_before`` tells, for every gallery image, how many of its query's sorted true matches come
before it (coarse bins for most images, a binary search for the few that share a bin with a true match);
a histogram of that number then counts the images before each true match.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.TripletLoss import pairwise_euclidean

JUNK_ID = -1
# Distance entries handled at once: bounds the (rows, gallery) temporaries to a few MB.
CHUNK_ENTRIES = 1 << 18
# Bins per query row in true_matches_before (at least 5: two hold the values outside the true matches' range).
BINS = 4096


def compute_cmc_map(distmat: Any, q_ids: Any, g_ids: Any, q_cams: Any, g_cams: Any,
                    max_rank: int = 50) -> tuple[np.ndarray, float]:
    """CMC curve and mAP of a query x gallery distance matrix under the Market-1501 protocol.

    Args:
        distmat: (Q, G) distances, smaller = more similar (numpy array or torch tensor).
        q_ids, g_ids: (Q,), (G,) integer person ids; q_cams, g_cams: (Q,), (G,) integer cameras.
        max_rank: length of the returned CMC curve.

    Returns:
        ``(cmc, mAP)``: ``cmc`` float64 array of length ``max_rank``, ``cmc[k]`` the fraction of evaluated
        queries whose first true match is within the top k + 1; ``mAP`` in [0, 1].

    Raises:
        ValueError: bad shapes or dtypes, NaN distances, or no query with a true match (one line).
    """
    distmat, q_ids, g_ids, q_cams, g_cams = checked_inputs(distmat, q_ids, g_ids, q_cams, g_cams, max_rank)
    first_positions, average_precisions = [], []
    junk = g_ids == JUNK_ID
    rows_per_chunk = max(1, CHUNK_ENTRIES // max(1, distmat.shape[1]))
    for start in range(0, len(distmat), rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        same_person = g_ids[None, :] == q_ids[rows, None]  # (C, G)
        ignored = (same_person & (g_cams[None, :] == q_cams[rows, None])) | junk
        true_match = same_person & ~ignored
        other = ~same_person & ~ignored  # the wrong answers, distractors included
        num_matches = true_match.sum(1)
        if num_matches.max() == 0:
            continue
        distances = distmat[rows]
        match_distances, match_index = sorted_true_matches(distances, true_match, num_matches)  # (C, R)
        num_rows, width = match_distances.shape

        # For every gallery image: how many true matches of its query rank before it (non-"other"
        # images go to bucket `width`, past every true match, where they count for nothing).
        before = true_matches_before(distances, match_distances, match_index, num_matches).masked_fill_(~other, width)
        buckets = torch.arange(num_rows)[:, None] * (width + 1) + before
        histogram = torch.bincount(buckets.flatten(), minlength=num_rows * (width + 1)).view(num_rows, width + 1)
        # True match s (0-based) follows the s true matches before it and the other images that have
        # at most s true matches before them.
        positions = torch.arange(1, width + 1) + histogram.cumsum(1)[:, :width]  # 1-based ranks
        precision = torch.arange(1, width + 1) / positions.double()
        is_real = torch.arange(width) < num_matches[:, None]  # not padding
        evaluated = num_matches > 0  # a query without a true match is skipped
        average_precisions.append((precision * is_real).sum(1)[evaluated] / num_matches[evaluated])
        first_positions.append(positions[evaluated, 0])
    if not first_positions:
        raise ValueError("compute_cmc_map: no query has a true match (same id, other camera) in the gallery")
    first_position = torch.cat(first_positions)
    cmc = (first_position[:, None] <= torch.arange(1, max_rank + 1)).double().mean(0)
    return cmc.numpy(), float(torch.cat(average_precisions).mean())


def sorted_true_matches(distances: torch.Tensor, true_match: torch.Tensor,
                        num_matches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's true-match distances in ranking order (ties by gallery index) and their gallery indices,
    both (C, R) with R the most true matches of a row, padded with +inf and G (after every real entry)."""
    rows, columns = true_match.nonzero(as_tuple=True)  # row by row, columns ascending
    slots = torch.arange(len(rows)) - (num_matches.cumsum(0) - num_matches)[rows]
    shape = (len(distances), int(num_matches.max()))
    match_distances = distances.new_full(shape, float("inf"))
    match_index = torch.full(shape, distances.shape[1])
    match_distances[rows, slots], match_index[rows, slots] = distances[rows, columns], columns
    match_distances, order = match_distances.sort(dim=1, stable=True)
    return match_distances, match_index.gather(1, order)


def true_matches_before(distances: torch.Tensor, match_distances: torch.Tensor, match_index: torch.Tensor,
                        num_matches: torch.Tensor) -> torch.Tensor:
    """(C, G) int64: how many of its row's true matches rank before each gallery image.

    A binary search of every image among its row's true matches (``torch.searchsorted``) would cost most of
    the time, and most images do not need one. Each row maps its distances onto ``BINS`` bins by one
    monotone function spanning its finite true-match distances (lower values in bin 0, higher ones in the
    last bin): an image in a bin without a true match has exactly the true matches of the lower bins before
    it. Only the images sharing a bin with a true match (a few percent) are placed by binary search.
    """
    is_real = torch.arange(match_distances.shape[1]) < num_matches[:, None]  # not padding
    finite = is_real & torch.isfinite(match_distances)
    low = torch.where(finite, match_distances, float("inf")).amin(1, keepdim=True).nan_to_num(posinf=0.0)
    high = torch.where(finite, match_distances, float("-inf")).amax(1, keepdim=True).nan_to_num(neginf=0.0)
    # [low, high] maps to [2, BINS - 2]: lower values fall in bin 0, higher ones in the last bin, and the
    # spare bin on each side keeps float rounding from putting a true match in those two crowded bins.
    scale = torch.where(high > low, (BINS - 4) / (high - low), 1.0).clamp(max=1e30)

    def to_bin(values: torch.Tensor) -> torch.Tensor:
        # Each step is one correctly rounded, non-decreasing operation, the same for every element: equal
        # values get equal bins and a larger value never a smaller bin (a fused multiply-add could round
        # differently in vectorised and scalar code).
        return values.sub(low).mul_(scale).add_(2).floor_().clamp_(0, BINS - 1).long()

    matches_per_bin = torch.zeros(len(distances), BINS, dtype=torch.long)
    matches_per_bin.scatter_add_(1, to_bin(match_distances), is_real.long())
    # Per bin: the true matches in the lower bins, or -1 where the bin holds a true match itself.
    matches_below = (matches_per_bin.cumsum(1) - matches_per_bin).masked_fill_(matches_per_bin > 0, -1)
    before = matches_below.gather(1, to_bin(distances))
    rows, columns = (before < 0).nonzero(as_tuple=True)
    values, row_matches = distances[rows, columns, None], match_distances[rows]
    exact = torch.searchsorted(row_matches, values).squeeze(1)  # true matches at a smaller distance
    # At an equal distance the smaller gallery index ranks first: add those tied true matches.
    exact += ((row_matches == values) & (match_index[rows] < columns[:, None])).sum(1)
    before[rows, columns] = exact
    return before


def checked_inputs(distmat: Any, q_ids: Any, g_ids: Any, q_cams: Any, g_cams: Any,
                   max_rank: int) -> tuple[torch.Tensor, ...]:
    """The inputs of :func:`compute_cmc_map` as CPU tensors, or a one-line ``ValueError`` naming the bad one."""
    if isinstance(max_rank, bool) or int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    distances = distmat.detach().cpu() if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
    if distances.dim() != 2:
        raise ValueError(f"distmat: expected a 2-D (num_query, num_gallery) matrix, got shape {tuple(distances.shape)}")
    if distances.dtype not in (torch.float32, torch.float64):
        distances = distances.double()  # holds every float16 and every realistic integer exactly
    if torch.isnan(distances).any():
        raise ValueError("distmat: contains NaN distances")
    vectors = []
    for name, value, length in (("q_ids", q_ids, len(distances)), ("g_ids", g_ids, distances.shape[1]),
                                ("q_cams", q_cams, len(distances)), ("g_cams", g_cams, distances.shape[1])):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype.kind not in "iub" or array.shape != (length,):
            raise ValueError(f"{name}: expected {length} integers, got shape {array.shape} of {array.dtype}")
        vectors.append(torch.from_numpy(array.astype(np.int64)))
    return (distances.contiguous(), *vectors)


def euclidean_distance_matrix(
    query_features: torch.Tensor,
    gallery_features: torch.Tensor,
    normalize: bool = True,
    rows_per_chunk: int = 1024,
) -> torch.Tensor:
    """Query x gallery Euclidean distances, on L2-normalised embeddings by default (no gradient).

    Args:
        query_features: (Q, D) embeddings; gallery_features: (G, D), same device.
        normalize: divide each embedding by its L2 norm first, so distances lie in [0, 2] and the
            ranking depends on the angle between embeddings only.
        rows_per_chunk: query rows per matrix product (bounds the temporaries; the result is (Q, G)).

    Returns:
        (Q, G) float32 tensor on the features' device.
    """
    if query_features.dim() != 2 or gallery_features.dim() != 2 or query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(
            "query_features, gallery_features: expected (Q, D) and (G, D) tensors, got "
            f"{tuple(query_features.shape)} and {tuple(gallery_features.shape)}"
        )
    with torch.no_grad():
        query = query_features.float()
        gallery = gallery_features.float()
        if normalize:
            query = F.normalize(query, dim=1)
            gallery = F.normalize(gallery, dim=1)
        result = torch.empty(len(query), len(gallery), dtype=torch.float32, device=query.device)
        for start in range(0, len(query), rows_per_chunk):
            result[start : start + rows_per_chunk] = pairwise_euclidean(query[start : start + rows_per_chunk], gallery)
    return result
