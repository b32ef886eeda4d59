"""Re-pairing flagged training pairs across the whole training set (Eq. 6k in docs/method.md).

The split flags a pair whose caption does not describe its image; its caption usually describes some
other training image (under per-image noise the captions are moved between images, so the right image is
among the flagged ones). Eq. 6k gives a flagged caption the flagged image it matches best, where the match
is mutual and as close as the pairs the split trusts; the next epoch trains that caption with that image as
a trusted pair. numpy only; pure functions (arrays in, arrays out).
"""

from __future__ import annotations

import numpy as np

NOT_REPAIRED = -1


def repair_images(
    img: np.ndarray,
    txt: np.ndarray,
    pair_image: np.ndarray,
    pair_caption: np.ndarray,
    clean_prob: np.ndarray,
    threshold: float,
    quantile: float,
) -> np.ndarray:
    """The image each training pair trains with instead of its own, or :data:`NOT_REPAIRED` (Eq. 6k).

    Flagged pairs F = {k : w_k ≤ threshold}, their images I_F and captions C_F. Caption c_k of a flagged pair
    is re-paired with i*_k = argmax_{i ∈ I_F} cos(v_i, t_{c_k}) where

    * the match is mutual: c_k is among the K captions of C_F closest to i*_k, K = ⌈|C_F| / |I_F|⌉ (the
      flagged captions per flagged image, 2 on a two-caption dataset), and i*_k is not the pair's own image;
    * it is as close as a trusted pair: 1 − cos(v_{i*}, t_{c_k}) ≤ the ``quantile`` of the distances
      1 − cos of the trusted pairs (w > threshold).

    Args:
        img, txt: (n_images, d) and (n_captions, d) unit-norm embeddings in the split's space.
        pair_image, pair_caption: (N,) the training pairs' image and caption rows.
        clean_prob: (N,) the split's clean probability w.
        threshold: w at or below which a pair is flagged.
        quantile: in (0, 1]; the trusted distances' quantile a re-paired pair must not exceed.

    Returns:
        (N,) int64: the new image row of each re-paired pair, :data:`NOT_REPAIRED` elsewhere.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"split.repair_quantile must lie in (0, 1], got {quantile}")
    out = np.full(len(pair_image), NOT_REPAIRED, dtype=np.int64)
    flagged = np.flatnonzero(clean_prob <= threshold)
    trusted = clean_prob > threshold
    if flagged.size == 0 or not trusted.any():
        return out
    trusted_dist = 1.0 - np.einsum("ij,ij->i", img[pair_image[trusted]], txt[pair_caption[trusted]])
    limit = float(np.quantile(trusted_dist, quantile))
    images = np.unique(pair_image[flagged])
    captions = pair_caption[flagged]
    k = int(np.ceil(len(captions) / len(images)))
    # One dense (|F|, |I_F|) block: what a training split of tens of thousands of pairs holds in memory.
    sim = txt[captions] @ img[images].T
    # The K-th best flagged caption's similarity for each flagged image: the bar a mutual match must clear.
    kth = np.partition(sim, len(captions) - k, axis=0)[len(captions) - k]
    best = sim.argmax(1)
    best_sim = sim[np.arange(len(captions)), best]
    new_image = images[best]
    ok = (best_sim >= kth[best]) & (1.0 - best_sim <= limit) & (new_image != pair_image[flagged])
    out[flagged[ok]] = new_image[ok]
    return out


def train_pairing(
    pair_image: np.ndarray, clean_prob: np.ndarray, repaired: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The image rows and weights an epoch trains with: a re-paired pair (Eq. 6k) takes its new image and
    weight 1 (trusted); every other pair keeps its own image and its clean probability."""
    if repaired is None:
        return pair_image, clean_prob
    moved = repaired != NOT_REPAIRED
    image = np.where(moved, repaired, pair_image)
    weights = np.where(moved, np.float32(1.0), clean_prob).astype(clean_prob.dtype)
    return image, weights
