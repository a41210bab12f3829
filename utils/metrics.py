"""Exercise 2 Q6: the Market-1501 evaluation protocol, CMC and mAP, vectorised and exact.

Protocol (Zheng et al. 2015, as torchreid's ``eval_market1501`` implements it), for each query:

1. rank the gallery by increasing distance; equal distances keep gallery order (a stable sort);
2. ignore gallery images with the query's identity *and* camera (the same shot seen again says nothing
   about re-identification across cameras);
3. skip the query if no true match (same identity, other camera) remains;
4. CMC@k: 1 if a true match is among the first k remaining images; AP: the mean, over the true
   matches, of the precision at each match, ``(true matches up to it) / (its position)``.

CMC is averaged over the evaluated queries, mAP is the mean of their APs.

Why no sort: sorting a 3,368 x 15,913 distance matrix alone takes 2-3 s on two CPU cores, and a
per-query Python loop about a minute. CMC and AP only need the positions of the true matches (about
15 per query), and the position of true match j of query q is a count:

    rank(q, j) = #{valid gallery k : d[q, k] < d[q, j]  or  (d[q, k] == d[q, j] and k < j)}.

On the CPU each row is mapped by a *monotone* function (scale, shift, round) onto a few thousand bins
spanning its true-match distances, and one histogram per row counts the items of every bin. A bin
without a true match lies wholly between two consecutive true matches, so its items are placed
exactly without looking at them again; only the items that share a bin with a true match (under 1 %
at Market size with random distances) are placed one by one, by binary search on (distance, gallery
index), which reproduces the stable order of ties. Massive ties (e.g. a collapsed embedding where
every distance is equal) put every item in that slow lane: still exact, several times slower. Because the map is monotone, rounding can only make bins coarser, never
misplace an item. On a GPU, ``torch.searchsorted`` against the sorted true-match distances does the
same job. All methods are exact: they give torchreid's numbers with a stable sort.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from utils.TripletLoss import pairwise_euclidean

# Distance entries handled at once: on the CPU, ~0.5 M entries keep a chunk's temporaries near the
# caches (measured fastest) instead of several copies of a 214 MB Market-size matrix; a GPU wants more.
CHUNK_ENTRIES = 1 << 19
GPU_CHUNK_ENTRIES = 1 << 23
MAX_BINS_PER_ROW = 4096
# (row, float32 distance, gallery index) packed into one int64 (7 + 32 + 24 bits) compares like the
# triple: one np.searchsorted then places an item among all true matches of a chunk.
KEY_ROW_BITS, KEY_GALLERY_BITS = 7, 24
# float32 numbers in [2^23, 2^24) are exactly the integers: adding 2^23 rounds to an integer and the
# bit pattern minus that of 2^23 *is* the integer, with no float-to-int conversion pass.
FLOAT32_INTEGER_BASE = 2.0**23
FLOAT32_INTEGER_BASE_BITS = 0x4B000000
METHODS = ("auto", "binning", "search")


@dataclass
class TrueMatches:
    """The true matches of the evaluated queries, sorted in ranking order, and the ignored pairs.

    Rows are the E evaluated queries (``queries`` gives their index in the distance matrix); R is the
    largest number of true matches of one query.
    """

    queries: np.ndarray  # (E,) int64
    distances: np.ndarray  # (E, R) ascending, ties by gallery index, padded with +inf
    gallery: np.ndarray  # (E, R) int64 gallery indices, padded with G
    counts: np.ndarray  # (E,) true matches per evaluated query
    junk_rows: np.ndarray  # (J,) evaluated-row of each same-id-same-camera pair, ascending
    junk_gallery: np.ndarray  # (J,) its gallery index


def _index_vector(name: str, value: Any, length: int) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name}: expected integer ids, got dtype {array.dtype}")
    if array.ndim != 1 or array.shape[0] != length:
        raise ValueError(f"{name}: expected a 1-D array of length {length}, got shape {array.shape}")
    return array.astype(np.int64, copy=False)


def find_true_matches(
    distances: np.ndarray | torch.Tensor,
    q_ids: np.ndarray,
    g_ids: np.ndarray,
    q_cams: np.ndarray,
    g_cams: np.ndarray,
) -> TrueMatches:
    """Join queries and gallery on the person id (never a (Q, G) mask) and sort each query's true matches.

    Raises:
        ValueError: no query has a true match, or a true-match distance is NaN.
    """
    # BEGIN SOLUTION
    num_query, num_gallery = distances.shape
    gallery_by_id = np.argsort(g_ids, kind="stable")
    sorted_ids = g_ids[gallery_by_id]
    first = np.searchsorted(sorted_ids, q_ids, "left")
    same_id = np.searchsorted(sorted_ids, q_ids, "right") - first
    pair_query = np.repeat(np.arange(num_query), same_id)
    offset = np.arange(len(pair_query)) - np.repeat(np.cumsum(same_id) - same_id, same_id)
    pair_gallery = gallery_by_id[np.repeat(first, same_id) + offset]
    junk = q_cams[pair_query] == g_cams[pair_gallery]

    match_query, match_gallery = pair_query[~junk], pair_gallery[~junk]
    counts = np.bincount(match_query, minlength=num_query)
    queries = np.flatnonzero(counts)
    if len(queries) == 0:
        raise ValueError("compute_cmc_map: no query has a true match (same id, other camera) in the gallery")
    evaluated_row = np.full(num_query, -1)
    evaluated_row[queries] = np.arange(len(queries))

    if isinstance(distances, torch.Tensor):
        index = torch.from_numpy(match_query).to(distances.device), torch.from_numpy(match_gallery).to(distances.device)
        values = distances[index].cpu().numpy()
    else:
        values = distances[match_query, match_gallery]
    if np.isnan(values).any():
        raise ValueError("distmat: contains NaN distances")
    width = int(counts.max())
    slot = np.arange(len(match_query)) - (np.cumsum(counts) - counts)[match_query]
    sorted_distances = np.full((len(queries), width), np.inf, dtype=values.dtype)
    sorted_gallery = np.full((len(queries), width), num_gallery, dtype=np.int64)
    sorted_distances[evaluated_row[match_query], slot] = values
    sorted_gallery[evaluated_row[match_query], slot] = match_gallery
    # Gallery indices already ascend within each query, so a stable sort yields (distance, index) order.
    order = np.argsort(sorted_distances, axis=1, kind="stable")

    junk_rows = evaluated_row[pair_query[junk]]
    kept = junk_rows >= 0
    return TrueMatches(
        queries=queries,
        distances=np.take_along_axis(sorted_distances, order, 1),
        gallery=np.take_along_axis(sorted_gallery, order, 1),
        counts=counts[queries],
        junk_rows=junk_rows[kept],
        junk_gallery=pair_gallery[junk][kept],
    )
    # END SOLUTION


def _ranking_keys(rows: np.ndarray, distances: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """int64 keys ordered like the triples (row, distance, gallery index), for float32 distances (n,)."""
    # + 0 turns -0.0 into +0.0: equal as distances, so they must get equal keys.
    bits = (distances + np.float32(0)).view(np.int32)
    # Flipping the magnitude bits of negative floats makes signed-integer order the float order.
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    keys = rows.astype(np.int64) << 32
    keys += ordered
    keys += 1 << 31
    keys <<= KEY_GALLERY_BITS
    keys += gallery
    return keys


def _rank_chunk_by_binning(
    distances: np.ndarray,
    match_distances: np.ndarray,
    match_gallery: np.ndarray,
    counts: np.ndarray,
    junk_rows: np.ndarray,
    junk_gallery: np.ndarray,
) -> np.ndarray:
    """Ranks (C, R) of the true matches of C queries from their distance rows (C, G); see the module doc."""
    distances = np.ascontiguousarray(distances)
    num_rows, num_gallery = distances.shape
    width = match_distances.shape[1]
    bins = int(np.clip(num_gallery // 8, 16, MAX_BINS_PER_ROW))
    with np.errstate(invalid="ignore"):  # inf - inf in the sum only sends us to the exact check
        maybe_nan = np.isnan(distances.sum())
    if maybe_nan and np.isnan(distances).any():
        raise ValueError("distmat: contains NaN distances")

    # Per row, the finite true-match distances [low, high] go to bins 1 .. bins-2; below and above
    # them, bins 0 and bins-1. Row r owns the integers r*bins .. r*bins + bins - 1.
    real = np.arange(width) < counts[:, None]
    finite = real & np.isfinite(match_distances)
    low = np.where(finite, match_distances, np.inf).min(1).astype(np.float64)
    high = np.where(finite, match_distances, -np.inf).max(1).astype(np.float64)
    low[~finite.any(1)], high[~finite.any(1)] = 0.0, 0.0
    # A floor on the span keeps scale * distance within float32's exact range when all matches coincide.
    span = np.maximum(high - low, np.maximum(np.abs(low), np.abs(high)) * 2.0**-12)
    span[span == 0] = 1.0
    scale = ((bins - 3) / span).astype(np.float32)[:, None]
    row_start = FLOAT32_INTEGER_BASE + np.arange(num_rows, dtype=np.float64)[:, None] * bins
    shift = (row_start + 1.0 - low[:, None] * scale).astype(np.float32)
    lowest, highest = row_start.astype(np.float32), (row_start + bins - 1).astype(np.float32)

    def to_bins(values: np.ndarray) -> np.ndarray:
        # Every step is monotone and the same for items and true matches: equal inputs, equal bins.
        mapped = np.multiply(values, scale, out=np.empty(values.shape, np.float32), casting="unsafe")
        np.add(mapped, shift, out=mapped)
        np.clip(mapped, lowest, highest, out=mapped)
        return np.subtract(mapped.view(np.int32), FLOAT32_INTEGER_BASE_BITS, dtype=np.int64)

    match_bins = to_bins(match_distances)
    real_bins = match_bins[real]
    has_match = np.zeros(num_rows * bins, dtype=bool)
    has_match[real_bins] = True
    item_bins = to_bins(distances).ravel()
    items_per_bin = np.bincount(item_bins, minlength=num_rows * bins)
    # A bin without a true match lies wholly before or after each true match: its items precede true
    # match s exactly when the bin comes before s's bin.
    items_per_bin[has_match] = 0
    bin_in_row = match_bins - np.arange(num_rows)[:, None] * bins
    items_before = np.take_along_axis(np.cumsum(items_per_bin.reshape(num_rows, bins), 1), bin_in_row, 1)

    # The real true matches, flattened row after row, are in bin order: the matches of flat bin b are
    # flat_distances[first_in_bin[b] : first_in_bin[b] + matches_in_bin[b]].
    flat_distances, flat_gallery = match_distances[real], match_gallery[real]
    matches_in_bin = np.bincount(real_bins, minlength=num_rows * bins)
    first_in_bin = np.cumsum(matches_in_bin) - matches_in_bin

    row_first = first_in_bin[np.arange(num_rows) * bins]
    packed = distances.dtype == np.float32 and num_gallery <= 1 << KEY_GALLERY_BITS and num_rows <= 1 << KEY_ROW_BITS
    if packed:
        match_keys = _ranking_keys(np.nonzero(real)[0], flat_distances, flat_gallery)

    def matches_at_or_before(rows: np.ndarray, gallery: np.ndarray, value: np.ndarray) -> np.ndarray:
        """For items (rows, gallery) of distance ``value``: the flat index just past the last true match
        (t, j) of their row with t < value or (t == value and j <= gallery), i.e. ties in distance follow
        the gallery order and an item is its own tie."""
        if packed:
            return np.searchsorted(match_keys, _ranking_keys(rows, value, gallery), "right")
        # float64 distances: the same search, vectorised over the items, within each item's bin.
        item_bin = item_bins[rows * num_gallery + gallery]
        low = first_in_bin[item_bin]
        high = low + matches_in_bin[item_bin]
        for _ in range(int(matches_in_bin.max(initial=0)).bit_length()):
            middle = (low + high) >> 1
            index = np.minimum(middle, len(flat_distances) - 1)
            match_value, match_index = flat_distances[index], flat_gallery[index]
            at_or_before = (match_value < value) | ((match_value == value) & (match_index <= gallery))
            searching = low < high
            low = np.where(searching & at_or_before, middle + 1, low)
            high = np.where(searching & ~at_or_before, middle, high)
        return low

    # Items sharing a bin with a true match are placed one by one, as (distance, gallery index) pairs.
    shared = np.take(has_match, item_bins).reshape(num_rows, num_gallery)
    # (np.nonzero on 2-D masks and integer division are several times slower than these steps.)
    shared_rows = np.repeat(np.arange(num_rows), np.count_nonzero(shared, axis=1))
    shared_gallery = np.flatnonzero(shared) - shared_rows * num_gallery
    shared_values = distances[shared]
    # Row r's items land in buckets row_first[r] + r + p, p = how many of its true matches they follow:
    # disjoint ranges, so one histogram serves all rows.
    buckets = len(flat_distances) + num_rows
    followed = np.bincount(
        matches_at_or_before(shared_rows, shared_gallery, shared_values) + shared_rows, minlength=buckets
    )
    junk_values = distances[junk_rows, junk_gallery]
    followed -= np.bincount(
        matches_at_or_before(junk_rows, junk_gallery, junk_values) + junk_rows, minlength=buckets
    )
    # True match s is preceded by every item of its row that follows at most s true matches.
    cumulative = np.concatenate([[0], np.cumsum(followed)])
    row_bucket = row_first + np.arange(num_rows)
    bucket_of_match = np.minimum(row_bucket[:, None] + np.arange(width) + 1, buckets)
    shared_before = cumulative[bucket_of_match] - cumulative[row_bucket][:, None]
    return items_before + shared_before


def _rank_chunk_by_search(
    distances: torch.Tensor,
    match_distances: torch.Tensor,
    match_gallery: torch.Tensor,
    junk_rows: torch.Tensor,
    junk_gallery: torch.Tensor,
) -> torch.Tensor:
    """Ranks (C, R) of the true matches of C queries, with ``torch.searchsorted`` (fast on a GPU)."""
    distances = distances.contiguous()
    num_rows, num_gallery = distances.shape
    width = match_distances.shape[1]
    if bool(torch.isnan(distances).any()):
        raise ValueError("distmat: contains NaN distances")
    # bucket[c, k]: how many true matches of row c are <= item k in the (distance, index) order.
    bucket = torch.searchsorted(match_distances, distances, right=True)
    previous = match_distances.gather(1, (bucket - 1).clamp_min(0))
    tied = (bucket > 0) & (previous == distances)
    if bool(tied.any()):
        # Within a run of equal distances the order is the gallery index: place the tied items by
        # integer keys (run number, gallery index), increasing along the flattened rows.
        new_run = match_distances[:, 1:] != match_distances[:, :-1]
        run = torch.cat([new_run.new_zeros(num_rows, 1), new_run], 1).long().cumsum(1)
        row_span = width * (num_gallery + 1)
        row_offset = torch.arange(num_rows, device=distances.device).unsqueeze(1) * row_span
        match_keys = (run * (num_gallery + 1) + match_gallery + row_offset).flatten()
        rows, items = torch.nonzero(tied, as_tuple=True)
        item_keys = rows * row_span + run[rows, bucket[rows, items] - 1] * (num_gallery + 1) + items
        bucket[rows, items] = torch.searchsorted(match_keys, item_keys, right=True) - rows * width
    # Bucket `width` is past every true match: ignored items land there and count for nothing.
    bucket[junk_rows, junk_gallery] = width
    bucket_base = torch.arange(num_rows, device=distances.device).unsqueeze(1) * (width + 1)
    histogram = torch.bincount((bucket + bucket_base).flatten(), minlength=num_rows * (width + 1))
    return histogram.view(num_rows, width + 1).cumsum(1)[:, :width]


def _rows(distances: np.ndarray | torch.Tensor, queries: np.ndarray) -> np.ndarray | torch.Tensor:
    """The distance rows of ``queries``: a view when they are consecutive, else a copy."""
    first, last = int(queries[0]), int(queries[-1])
    if last - first + 1 == len(queries):
        return distances[first : last + 1]
    if isinstance(distances, torch.Tensor):
        return distances.index_select(0, torch.from_numpy(queries).to(distances.device))
    return distances[queries]


def rank_true_matches(distances: np.ndarray | torch.Tensor, matches: TrueMatches, method: str) -> np.ndarray:
    """(E, R) int64: number of valid gallery items ranked before each sorted true match (padding: garbage)."""
    # BEGIN SOLUTION
    num_evaluated, width = matches.distances.shape
    if method == "search":
        rows_per_chunk = max(1, GPU_CHUNK_ENTRIES // max(distances.shape[1], 1))
    else:
        rows_per_chunk = int(np.clip(CHUNK_ENTRIES // max(distances.shape[1], 1), 1, 1 << KEY_ROW_BITS))
    junk_bounds = np.searchsorted(matches.junk_rows, np.arange(0, num_evaluated + rows_per_chunk, rows_per_chunk))
    ranks = np.empty((num_evaluated, width), dtype=np.int64)
    for chunk_index, start in enumerate(range(0, num_evaluated, rows_per_chunk)):
        part = slice(start, start + rows_per_chunk)
        junk = slice(junk_bounds[chunk_index], junk_bounds[chunk_index + 1])
        chunk = _rows(distances, matches.queries[part])
        junk_rows, junk_gallery = matches.junk_rows[junk] - start, matches.junk_gallery[junk]
        if method == "search":
            device = chunk.device
            ranks[part] = _rank_chunk_by_search(
                chunk,
                torch.from_numpy(matches.distances[part]).to(device),
                torch.from_numpy(matches.gallery[part]).to(device),
                torch.from_numpy(junk_rows).to(device),
                torch.from_numpy(junk_gallery).to(device),
            ).cpu().numpy()
        else:
            ranks[part] = _rank_chunk_by_binning(
                chunk, matches.distances[part], matches.gallery[part], matches.counts[part], junk_rows, junk_gallery
            )
    return ranks
    # END SOLUTION


def compute_cmc_map(
    distmat: Any,
    q_ids: Any,
    g_ids: Any,
    q_cams: Any,
    g_cams: Any,
    max_rank: int = 50,
    method: str = "auto",
) -> tuple[np.ndarray, float]:
    """CMC curve and mAP of a query x gallery distance matrix under the Market-1501 protocol.

    Args:
        distmat: (Q, G) distances, smaller = more similar (numpy array or torch tensor).
        q_ids, g_ids: (Q,), (G,) integer person ids.
        q_cams, g_cams: (Q,), (G,) integer camera ids.
        max_rank: length of the returned CMC curve.
        method: ``"binning"`` (numpy, fastest on a CPU), ``"search"`` (torch, runs where ``distmat``
            lives) or ``"auto"``: search for a CUDA tensor, binning otherwise. All give identical results.

    Returns:
        ``(cmc, mAP)``: ``cmc`` float64 array of length ``max_rank``, ``cmc[k]`` the fraction of evaluated
        queries whose first true match is within the top k + 1 (constant past the gallery's end);
        ``mAP`` in [0, 1].

    Raises:
        ValueError: bad shapes, dtypes or method, NaN distances, or no query with a true match (one line).
    """
    # BEGIN SOLUTION
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if isinstance(max_rank, bool) or int(max_rank) != max_rank or max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    max_rank = int(max_rank)
    on_gpu = isinstance(distmat, torch.Tensor) and distmat.device.type != "cpu"
    if method == "auto":
        method = "search" if on_gpu else "binning"
    if method == "search":
        distances = distmat.detach() if isinstance(distmat, torch.Tensor) else torch.from_numpy(np.asarray(distmat))
        if distances.dtype not in (torch.float32, torch.float64):
            # float64 holds every integer and float16 value exactly: the ranking is unchanged.
            distances = distances.double()
    else:
        distances = distmat.detach().cpu().numpy() if isinstance(distmat, torch.Tensor) else np.asarray(distmat)
        if distances.dtype != np.float32:
            # Values that float32 holds exactly (integers, float16, float32 data stored as float64)
            # rank identically in float32, where ties are resolved by the packed keys.
            single = distances.astype(np.float32)
            distances = single if np.array_equal(single, distances) else distances.astype(np.float64, copy=False)
    if distances.ndim != 2:
        raise ValueError(f"distmat: expected a 2-D (num_query, num_gallery) matrix, got shape {tuple(distances.shape)}")
    num_query, num_gallery = distances.shape
    q_ids = _index_vector("q_ids", q_ids, num_query)
    q_cams = _index_vector("q_cams", q_cams, num_query)
    g_ids = _index_vector("g_ids", g_ids, num_gallery)
    g_cams = _index_vector("g_cams", g_cams, num_gallery)

    matches = find_true_matches(distances, q_ids, g_ids, q_cams, g_cams)
    ranks = rank_true_matches(distances, matches, method)

    width = ranks.shape[1]
    position = np.arange(1, width + 1)
    is_match = position[None, :] <= matches.counts[:, None]
    precision = np.where(is_match, position[None, :] / (ranks + 1.0), 0.0)
    average_precision = precision.sum(1) / matches.counts
    first_match = np.minimum(ranks[:, 0], max_rank)
    cmc = np.cumsum(np.bincount(first_match, minlength=max_rank + 1)[:max_rank]) / len(matches.queries)
    return cmc.astype(np.float64), float(average_precision.mean())
    # END SOLUTION


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
