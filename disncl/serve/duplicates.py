"""Near-duplicate items of a gallery: pairs whose full-space embeddings have cosine ≥ a threshold.

Duplicated captions (and re-uploaded images) make many-to-many matches that a noise detector reads as
mismatches, so an audit lists them beside the flagged pairs. The search is FAISS's exact range search
over a flat inner-product index of the unit-norm embeddings (cosine = inner product).
"""

from __future__ import annotations

import faiss
import numpy as np

# Pairs returned at most: a threshold set too low on a large gallery would otherwise return N² pairs.
MAX_PAIRS = 100_000


def near_duplicate_pairs(
    embeddings: np.ndarray, threshold: float, max_pairs: int = MAX_PAIRS, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Index pairs ``(i, j)``, ``i < j``, with ``cos(x_i, x_j) >= threshold``, most similar first.

    Args:
        embeddings: (N, D) unit-norm rows.
        threshold: cosine in (0, 1].
        max_pairs: keep at most this many (the most similar).
        chunk: query rows per range search, bounding memory.

    Returns:
        (pairs (P, 2) int64, cosines (P,) float32, truncated: whether pairs were dropped for ``max_pairs``).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in (0, 1], got {threshold}")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    found_i, found_j, found_s = [], [], []
    for lo in range(0, len(x), chunk):
        lims, sims, ids = index.range_search(x[lo : lo + chunk], threshold)
        rows = np.repeat(np.arange(lo, lo + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = ids > rows  # each pair once, and not an item with itself
        found_i.append(rows[keep])
        found_j.append(ids[keep])
        found_s.append(sims[keep])
    i, j, s = (np.concatenate(a) if a else np.empty(0) for a in (found_i, found_j, found_s))
    order = np.lexsort((j, i, -s))
    truncated = len(order) > max_pairs
    order = order[:max_pairs]
    return np.stack([i[order], j[order]], axis=1).astype(np.int64), s[order].astype(np.float32), truncated
