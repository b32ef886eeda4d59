"""Noise detectors side by side (docs/method.md Eq. 12): the learned clean probability, the per-pair
loss it is fitted on, the cosine in the tower space (the "CLIP-score filter" of clip-retrieval and
DataComp when the towers are a pretrained CLIP) and the cosine in the MII space. Pure: arrays in,
numbers out."""

from __future__ import annotations

import numpy as np

from disncl.eval.detection import detector_aurocs as _aurocs
from disncl.serve.pair_scores import PairScores

DETECTORS = {
    "clean_prob": "learned clean probability (GMM split)",
    "loss": "the score the split is fitted on (1 − cos or Eq. 6's per-pair loss; low = clean)",
    "full_sim": "cosine, tower space (CLIP-score filter)",
    "mii_sim": "cosine, MII space",
}


def detector_aurocs(scores: PairScores) -> dict[str, float] | None:
    """Noise-detection AUROC of each detector on the rows with known truth; ``None`` when there are none.

    Noisy is the positive class and each detector's noisiness score is minus its clean score, so
    AUROC = P(score(noisy) < score(clean)) with ties counted half; NaN when one class is absent.
    """
    known = scores.truth_known
    if not known.any():
        return None
    sign = {"loss": -1.0}  # a low per-pair loss means clean
    return _aurocs(scores.is_clean[known], {name: sign.get(name, 1.0) * getattr(scores, name)[known]
                                            for name in DETECTORS})


def score_quantiles(scores: PairScores, qs: tuple[float, ...] = (0.01, 0.1, 0.5, 0.9, 0.99)) -> dict[str, list[float]]:
    """Quantiles ``qs`` of each detector's score: what the report shows when the truth is unknown."""
    return {name: [float(v) for v in np.quantile(getattr(scores, name), qs)] for name in DETECTORS}
