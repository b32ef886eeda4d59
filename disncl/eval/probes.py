"""Measuring disentanglement: linear probes from codes to known factors, and an MI estimate.

Pure functions over numpy arrays (scikit-learn does the fitting); docs/method.md §8 gives the
definitions. A code "carries" a factor when a linear probe predicts it well above chance.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_accuracy(codes: np.ndarray, labels: np.ndarray, seed: int = 0, train_fraction: float = 0.5) -> dict:
    """Held-out accuracy of a multinomial logistic-regression probe ``codes -> labels`` (Eq. 20).

    The rows are split once at random (``train_fraction`` to fit, the rest to score). ``chance`` is
    the held-out frequency of the most common training label: the accuracy of a probe that learned
    nothing. Rows with a negative label (a factor that does not exist for that row) are dropped.
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    if codes.ndim != 2 or len(codes) != len(labels):
        raise ValueError(f"codes must be (N, D) with N == len(labels); got {codes.shape} and {labels.shape}")
    keep = labels >= 0
    codes, labels = codes[keep], labels[keep]
    order = np.random.default_rng(seed).permutation(len(labels))
    n_fit = int(round(train_fraction * len(labels)))
    fit, held = order[:n_fit], order[n_fit:]
    if len(held) == 0 or len(np.unique(labels[fit])) < 2:
        raise ValueError("a probe needs at least two classes among the fitting rows and one held-out row")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    probe.fit(codes[fit], labels[fit])
    values, counts = np.unique(labels[fit], return_counts=True)
    majority = values[np.argmax(counts)]
    return {
        "accuracy": float(probe.score(codes[held], labels[held])),
        "chance": float(np.mean(labels[held] == majority)),
        "n_classes": int(len(values)),
        "n_held_out": int(len(held)),
    }


def gaussian_mi(a: np.ndarray, b: np.ndarray, components: int = 8) -> float:
    """Mutual information (nats) between two code sets under a joint-Gaussian model (Eq. 21).

    I(A; B) = ½ (log det Σ_A + log det Σ_B − log det Σ_AB), on the first ``components`` principal
    components of each set (fewer dimensions keep the estimate's small-sample bias small).
    """
    a = _principal(np.asarray(a, dtype=np.float64), components)
    b = _principal(np.asarray(b, dtype=np.float64), components)
    if len(a) != len(b):
        raise ValueError(f"a and b need the same number of rows; got {len(a)} and {len(b)}")
    joint = np.cov(np.hstack([a, b]), rowvar=False)
    k = a.shape[1]
    return 0.5 * float(_logdet(joint[:k, :k]) + _logdet(joint[k:, k:]) - _logdet(joint))


def mi_with_baseline(a: np.ndarray, b: np.ndarray, components: int = 8, seed: int = 0) -> dict:
    """:func:`gaussian_mi` next to its value with the rows of ``b`` shuffled (the estimator's floor)."""
    shuffled = np.asarray(b)[np.random.default_rng(seed).permutation(len(b))]
    return {"mi": gaussian_mi(a, b, components), "mi_shuffled": gaussian_mi(a, shuffled, components)}


def _principal(x: np.ndarray, components: int) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"codes must be 2-D (N, D), got shape {x.shape}")
    k = min(components, x.shape[1], x.shape[0] - 1)
    return PCA(n_components=k, whiten=True, random_state=0).fit_transform(x)


def _logdet(m: np.ndarray) -> float:
    sign, value = np.linalg.slogdet(m + 1e-9 * np.eye(len(m)))
    return float(value) if sign > 0 else float("-inf")
