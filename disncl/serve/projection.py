"""A 2-D map of a gallery's embeddings: images and captions projected together, once per space.

The projection is PCA (scikit-learn), fitted on a seeded sample of at most ``FIT_ROWS`` rows of the
images and captions together, then applied to every row. Chosen over t-SNE or UMAP because it is
linear and deterministic: nearby points are near in the space itself, the same gallery always draws
the same map, the cost grows linearly (a 10 M-caption gallery is one matrix product per chunk), and a
*modality gap* — images and captions in separate clouds, as in the tower space of CLIP-style models —
shows as it is instead of being folded away. What it loses: clusters that need more than two
directions to separate overlap on the map.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

FIT_ROWS = 20_000
_CHUNK = 65_536


def project_2d(images: np.ndarray, captions: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(n_images + n_captions, 2)`` float32 map coordinates: images first, then captions.

    PCA to two components fitted on ``min(N, FIT_ROWS)`` rows drawn without replacement (``seed``);
    with fewer than 3 rows in all, the coordinates are zeros.
    """
    parts = [np.asarray(x, dtype=np.float32) for x in (images, captions) if len(x)]
    n = sum(len(x) for x in parts)
    out = np.zeros((n, 2), dtype=np.float32)
    if n < 3:
        return out
    rows = np.concatenate(parts) if n <= FIT_ROWS else None
    if rows is None:
        pick = np.sort(np.random.default_rng(seed).choice(n, size=FIT_ROWS, replace=False))
        offsets = np.cumsum([0] + [len(x) for x in parts])
        fit = np.concatenate([parts[i][pick[(pick >= a) & (pick < b)] - a]
                              for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True))])
    else:
        fit = rows
    pca = PCA(n_components=2, svd_solver="full", random_state=seed).fit(fit)
    start = 0
    for x in parts:
        for s in range(0, len(x), _CHUNK):
            chunk = x[s : s + _CHUNK]
            out[start + s : start + s + len(chunk)] = pca.transform(chunk)
        start += len(x)
    return out
