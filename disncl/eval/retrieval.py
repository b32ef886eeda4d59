"""Recall@K for image-text retrieval, standard and semantic (Eq. 11 in docs/method.md).

numpy only; pure functions (arrays in, dicts of floats out).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _first_hit_rank(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """0-based rank of the first correct item per row (Eq. 11a in docs/method.md).

    The ranking sorts by score descending, ties broken by ascending column index. The first correct item
    c* is the correct column with the highest score (smallest index among equal scores), and
    rank_i = #{c : s_ic > s_ic*} + #{c < c* : s_ic = s_ic*}. Rows without a correct item get rank n_cols.
    """
    masked = np.where(correct, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    has_hit = correct.any(axis=1)
    c_star = np.argmax(correct & (scores == best), axis=1)
    cols = np.arange(scores.shape[1])
    higher = (scores > best).sum(axis=1)
    tied_before = ((scores == best) & (cols[None, :] < c_star[:, None])).sum(axis=1)
    return np.where(has_hit, higher + tied_before, scores.shape[1])


def _ranks(sim: np.ndarray, row_labels: np.ndarray, col_labels: np.ndarray, chunk: int) -> np.ndarray:
    """First-hit ranks of all rows of sim, processed chunk rows at a time (Eq. 11a in docs/method.md)."""
    out = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], chunk):
        scores = np.asarray(sim[start : start + chunk])
        if np.isnan(scores).any():
            raise ValueError("sim contains NaN")
        correct = row_labels[start : start + chunk, None] == col_labels[None, :]
        out[start : start + chunk] = _first_hit_rank(scores, correct)
    return out


def recall_at_k(
    sim: np.ndarray,
    img_labels: np.ndarray,
    cap_labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 1024,
) -> dict[str, float]:
    """Image->text and text->image Recall@K in percent (Eq. 11 in docs/method.md).

    i2t_R@K = 100/N_img * #{i : some caption c among the top-K of row i has cap_labels[c] == img_labels[i]},
    t2i_R@K = 100/N_cap * #{c : some image i among the top-K of column c has img_labels[i] == cap_labels[c]},
    rsum = sum of all reported recalls. Ranking: score descending, ties broken by ascending index.

    Args:
        sim: (N_img, N_cap) similarity matrix.
        img_labels: (N_img,) integer label per image (standard protocol: arange(N_img)).
        cap_labels: (N_cap,) integer label per caption (standard protocol: cap2img).
        ks: cut-offs K.
        chunk: rows per block, bounding memory to O(chunk * max(N_img, N_cap)).

    Returns:
        {"i2t_r{K}", "t2i_r{K}" for K in ks, "rsum"} as floats.
    """
    sim = np.asarray(sim)
    img_labels = np.asarray(img_labels).reshape(-1)
    cap_labels = np.asarray(cap_labels).reshape(-1)
    if sim.ndim != 2 or sim.shape != (img_labels.size, cap_labels.size):
        raise ValueError(
            f"sim shape {sim.shape} must be (len(img_labels), len(cap_labels)) = "
            f"({img_labels.size}, {cap_labels.size})"
        )
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    i2t = _ranks(sim, img_labels, cap_labels, chunk)
    t2i = _ranks(sim.T, cap_labels, img_labels, chunk)
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = float(100.0 * np.mean(ranks < k))
    out["rsum"] = float(sum(out.values()))
    return out


def _key_ids(img_keys: Sequence[Hashable], cap_keys: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary hashable keys to shared integer ids (equal keys <-> equal ids)."""
    table: dict[Hashable, int] = {}
    img_ids = np.array([table.setdefault(k, len(table)) for k in img_keys], dtype=np.int64)
    cap_ids = np.array([table.setdefault(k, len(table)) for k in cap_keys], dtype=np.int64)
    return img_ids, cap_ids


def retrieval_report(
    sim: np.ndarray,
    cap2img: np.ndarray,
    img_keys: Sequence[Hashable] | None = None,
    cap_keys: Sequence[Hashable] | None = None,
) -> dict[str, float]:
    """Standard Recall@{1,5,10} plus, when keys are given, semantic recall (Eq. 11 and 11b in docs/method.md).

    Standard: img_labels = arange(N_img), cap_labels = cap2img. Semantic: a retrieved item is correct when
    its key equals the query's key (keys are any hashables, e.g. shared-factor strings); reported with the
    "semantic_" prefix.
    """
    sim = np.asarray(sim)
    cap2img = np.asarray(cap2img).reshape(-1)
    out = recall_at_k(sim, np.arange(sim.shape[0]), cap2img)
    if (img_keys is None) != (cap_keys is None):
        raise ValueError("pass both img_keys and cap_keys, or neither")
    if img_keys is not None and cap_keys is not None:
        if len(img_keys) != sim.shape[0] or len(cap_keys) != sim.shape[1]:
            raise ValueError(f"keys must have lengths {sim.shape}, got ({len(img_keys)}, {len(cap_keys)})")
        img_ids, cap_ids = _key_ids(list(img_keys), list(cap_keys))
        out.update({f"semantic_{k}": v for k, v in recall_at_k(sim, img_ids, cap_ids).items()})
    return out


def exact_match_ceiling(img_keys: Sequence[Hashable], cap2img: np.ndarray, ks: Sequence[int] = (1, 5, 10)
                        ) -> dict[str, float]:
    """Expected standard recall of a model that matches descriptions perfectly but no more (Eq. 11c).

    Images with equal keys cannot be told apart from their captions, so such a model ranks every
    item of the query's key group first, in random order. Text→image: a caption whose image shares
    its key with ``n`` images is found in the top ``K`` with probability ``min(1, K / n)``.
    Image→text: with ``M`` captions in the group, ``m`` of them the query's own, the top ``K`` holds
    one of its own with probability ``1 - C(M - m, K) / C(M, K)``. Returns the same keys as
    :func:`recall_at_k` (percentages and ``rsum``).
    """
    cap2img = np.asarray(cap2img).reshape(-1)
    img_ids, _ = _key_ids(list(img_keys), [])
    group_images = np.bincount(img_ids)[img_ids]
    own_caps = np.bincount(cap2img, minlength=len(img_ids))
    group_caps = np.bincount(img_ids, weights=own_caps)[img_ids]
    out: dict[str, float] = {}
    for k in ks:
        miss = np.ones(len(img_ids))
        # C(M - m, K) / C(M, K) = prod_{j<K} (M - m - j) / (M - j), zero once M - m - j reaches 0.
        for j in range(k):
            miss *= np.clip(group_caps - own_caps - j, 0, None) / np.maximum(group_caps - j, 1)
        out[f"i2t_r{k}"] = float(100.0 * np.mean((1.0 - miss)[own_caps > 0]))
    for k in ks:
        out[f"t2i_r{k}"] = float(100.0 * np.mean(np.minimum(1.0, k / group_images[cap2img])))
    out["rsum"] = float(sum(out.values()))
    return out
