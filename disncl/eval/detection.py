"""Quality of the clean/noisy split against ground-truth noise flags (Eq. 12 in docs/method.md).

numpy + sklearn.metrics; pure functions (arrays in, dicts of floats out).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def _ratio(num: int, den: int) -> float:
    """num / den, NaN when den == 0 (an undefined rate is reported as NaN, not 0)."""
    return float(num) / float(den) if den > 0 else float("nan")


def detection_metrics(
    clean_prob: np.ndarray, is_clean: np.ndarray, threshold: float = 0.5, auroc: float | None = None,
    flag: np.ndarray | None = None,
) -> dict[str, float]:
    """Noise-detection metrics of the clean probabilities (Eq. 12 in docs/method.md).

    Noisy is the positive class. flag_k = [w_k <= threshold] (the complement of NCR's clean rule w > 0.5),
    or ``flag`` where given (a count rule, Eq. 12c: the N first pairs of a total order).
    auroc = ROC-AUC of the score 1 - w against the noisy label (NaN and auroc_defined = 0.0 when only
    one class is present); with TP/FP/FN/TN counted on flag vs. noisy:
    noisy_precision = TP/(TP+FP), noisy_recall = TP/(TP+FN), noisy_f1 = 2TP/(2TP+FP+FN),
    clean_precision = TN/(TN+FN), clean_recall = TN/(TN+FP), flagged_fraction = mean(flag),
    true_noise_rate = mean(noisy). Undefined ratios (0/0) are NaN.
    """
    w = np.asarray(clean_prob, dtype=np.float64).reshape(-1)
    clean = np.asarray(is_clean).reshape(-1).astype(bool)
    if w.size != clean.size or w.size == 0:
        raise ValueError(f"clean_prob and is_clean need equal non-zero lengths, got {w.size}, {clean.size}")
    if not np.all(np.isfinite(w)):
        raise ValueError("clean_prob contains NaN/inf")
    noisy = ~clean
    if flag is None:
        flag = w <= threshold
    else:
        flag = np.asarray(flag).reshape(-1)
        if flag.dtype != bool or flag.size != w.size:
            raise ValueError(f"flag must be a bool array of length {w.size}, got {flag.dtype} {flag.shape}")
    tp = int(np.sum(flag & noisy))
    fp = int(np.sum(flag & clean))
    fn = int(np.sum(~flag & noisy))
    tn = int(np.sum(~flag & clean))
    defined = bool(noisy.any() and clean.any())
    return {
        # The AUROC does not depend on the threshold: a caller asking at many thresholds passes it in.
        "auroc": (float(roc_auc_score(noisy, 1.0 - w)) if auroc is None else auroc) if defined else float("nan"),
        "auroc_defined": 1.0 if defined else 0.0,
        "noisy_precision": _ratio(tp, tp + fp),
        "noisy_recall": _ratio(tp, tp + fn),
        "noisy_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "clean_precision": _ratio(tn, tn + fn),
        "clean_recall": _ratio(tn, tn + fp),
        "flagged_fraction": float(np.mean(flag)),
        "true_noise_rate": float(np.mean(noisy)),
    }


def detector_aurocs(is_clean: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Noise-detection AUROC of several clean scores at once (Eq. 12): for each ``scores[name]`` (higher =
    more likely clean), ROC-AUC of ``-score`` against the noisy label; ties count half. NaN with one class."""
    noisy = ~np.asarray(is_clean).reshape(-1).astype(bool)
    if noisy.all() or not noisy.any():
        return {name: float("nan") for name in scores}
    return {name: float(roc_auc_score(noisy, -np.asarray(s, dtype=np.float64))) for name, s in scores.items()}
