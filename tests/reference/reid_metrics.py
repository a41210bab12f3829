"""Reference for Ex2 Q6: CMC and mAP with one Python loop per query (torchreid's protocol).

For each query: drop gallery items with the query's id *and* camera; skip the query when no true
match remains; rank the rest by a stable sort (ties keep gallery order); CMC[k] = 1 when the first
true match is within the top k + 1; AP = mean of the precision at each true match.
"""

from __future__ import annotations

import numpy as np


def cmc_map_per_query_loop(distmat: np.ndarray, q_ids: np.ndarray, g_ids: np.ndarray, q_cams: np.ndarray,
                           g_cams: np.ndarray, max_rank: int = 50) -> tuple[np.ndarray, float]:
    distmat = np.asarray(distmat, dtype=np.float64)
    all_cmc, all_ap = [], []
    for q in range(distmat.shape[0]):
        order = np.argsort(distmat[q], kind="stable")
        matches, rank = [], 0
        for g in order:
            if g_ids[g] == q_ids[q] and g_cams[g] == q_cams[q]:
                continue
            matches.append(g_ids[g] == q_ids[q])
            rank += 1
        if not any(matches):
            continue
        first = matches.index(True)
        all_cmc.append([1.0 if first <= k else 0.0 for k in range(max_rank)])
        hits, precisions = 0, []
        for position, is_match in enumerate(matches, start=1):
            if is_match:
                hits += 1
                precisions.append(hits / position)
        all_ap.append(sum(precisions) / len(precisions))
    if not all_ap:
        raise ValueError("no query has a true match in the gallery")
    return np.mean(np.asarray(all_cmc), axis=0), float(np.mean(all_ap))
