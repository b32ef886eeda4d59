"""Clean/noisy split of training pairs from their per-pair losses (Eq. 6 and Eq. 10 in docs/method.md).

numpy + scikit-learn only; pure functions (arrays in, arrays out).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.isotonic import IsotonicRegression
from sklearn.mixture import GaussianMixture

from disncl.train.config import SplitConfig


def _normalised(losses: np.ndarray) -> np.ndarray | None:
    """Min-max normalisation l~ = (l - min l) / (max l - min l) (Eq. 6a in docs/method.md).

    Returns None when all losses are equal; raises ValueError on empty or non-finite input.
    """
    x = np.asarray(losses, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("losses is empty")
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"losses contains {int(bad.sum())} NaN/inf values (first at index {int(np.flatnonzero(bad)[0])})"
        )
    span = x.max() - x.min()
    if span <= 0.0:
        return None
    return (x - x.min()) / span


def _fit_gmm(x: np.ndarray, cfg: SplitConfig) -> GaussianMixture:
    """Fit the 1-D Gaussian mixture of Eq. 6b in docs/method.md (ConvergenceWarning silenced: max_iter=10)."""
    gmm = GaussianMixture(
        n_components=cfg.n_components,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        reg_covar=cfg.reg_covar,
        random_state=cfg.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x.reshape(-1, 1))
    return gmm


def clean_probability(losses: np.ndarray, cfg: SplitConfig = SplitConfig()) -> np.ndarray:
    """Clean probability of every training pair (Eq. 6 in docs/method.md).

    l~_k = (l_k - min l) / (max l - min l); fit p(l~) = sum_c pi_c N(l~; m_c, s_c^2);
    w_k = p(c* | l~_k) with c* = argmin_c m_c (the low-loss, clean component).
    A pair is called clean when w_k > cfg.threshold.

    Args:
        losses: (N,) per-pair losses over the whole training set.
        cfg: mixture settings.

    Returns:
        (N,) float64 array in [0, 1]. All-equal losses give all ones (nothing to separate).

    Raises:
        ValueError: empty input or any NaN/inf loss.
    """
    x = _normalised(losses)
    if x is None:
        return np.ones(np.asarray(losses).size, dtype=np.float64)
    if x.size < cfg.n_components:
        raise ValueError(f"need at least {cfg.n_components} losses to fit the mixture, got {x.size}")
    gmm = _fit_gmm(x, cfg)
    posterior = gmm.predict_proba(x.reshape(-1, 1))[:, int(np.argmin(gmm.means_.reshape(-1)))]
    if cfg.monotone:
        posterior = monotone_in_loss(x, posterior)
    return np.clip(posterior, 0.0, 1.0)


def monotone_in_loss(x: np.ndarray, posterior: np.ndarray) -> np.ndarray:
    """The least-squares fit of the clean posterior that never rises with the loss (Eq. 6l in docs/method.md).

    w^mono = argmin_{m non-increasing} Σ_k (m(l~_k) − w_k)², scikit-learn's isotonic regression. A mixture whose
    clean component is the wider one gives it both tails, so its posterior rises again at the largest losses;
    the fit pools that tail with its neighbours instead.
    """
    return IsotonicRegression(increasing=False, y_min=0.0, y_max=1.0).fit_transform(x, posterior)


def cap_clean_share(clean_prob: np.ndarray, scores: np.ndarray, share: float) -> np.ndarray:
    """Trust at most the share ``q`` of the pairs, those of lowest score (Eq. 6o in docs/method.md).

    w^cap_k = w_k · 1[rank_k ≤ ⌈q N⌉], rank_k the 1-based rank of ``scores[k]`` (the split's score, low = clean;
    ties keep the lower index). A mixture fitted where most pairs are wrong gives its clean component far more
    pairs than are clean (at 80 % noise about half of them, §9.13); a known clean share bounds it. ``share = 1``
    returns ``clean_prob`` unchanged.
    """
    if not 0.0 < share <= 1.0:
        raise ValueError(f"the clean share must lie in (0, 1], got {share}")
    w, x = np.asarray(clean_prob), np.asarray(scores).reshape(-1)
    if w.shape != x.shape:
        raise ValueError(f"clean probability has shape {w.shape}, scores {x.shape}")
    if share == 1.0:
        return w
    kept = np.zeros(x.size, dtype=bool)
    kept[np.argsort(x, kind="stable")[: math.ceil(share * x.size)]] = True
    return np.where(kept, w, 0.0).astype(w.dtype)


def smooth_clean_probability(previous: np.ndarray, current: np.ndarray, ema: float) -> np.ndarray:
    """Running average of the clean probability across epochs (Eq. 6c in docs/method.md).

    w_t = ema * w_{t-1} + (1 - ema) * w'_t, where w'_t is this epoch's Eq. 6 posterior. ``ema = 0``
    returns ``current``. One epoch's GMM can flip pairs near the boundary; averaging keeps a pair's
    weight from jumping with it (CRCL and GSC smooth their targets the same way).
    """
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"split.ema must be in [0, 1), got {ema}")
    prev, cur = np.asarray(previous), np.asarray(current)
    if prev.shape != cur.shape:
        raise ValueError(f"previous clean probability has shape {prev.shape}, current {cur.shape}")
    return cur if ema == 0.0 else (ema * prev + (1.0 - ema) * cur).astype(cur.dtype)


def loss_vs_chance(losses: np.ndarray, batch_size: int) -> float:
    """Mean per-pair loss (Eq. 6) over its chance level: r = mean_k ℓ_k / log B (Eq. 6h).

    Eq. 6's symmetric InfoNCE over batches of B pairs is log B where a batch's similarities are all equal
    (a uniform softmax both ways: the codes tell no pair apart; unrelated codes whose similarities spread
    score above it), so r ≳ 1 says the model fits hardly any training pair, and r ≪ 1 that it fits most.
    ``train.shut_gate_unfit`` reads it where the gate stays shut.
    """
    if batch_size < 2:
        raise ValueError(f"the chance level log B needs batches of at least 2 pairs, got {batch_size}")
    return float(np.mean(losses)) / math.log(batch_size)


def bimodality(losses: np.ndarray, cfg: SplitConfig = SplitConfig()) -> float:
    """Ashman's D of the two lowest-mean mixture components (Eq. 10 in docs/method.md).

    D = sqrt(2) * |m_1 - m_2| / sqrt(s_1^2 + s_2^2) on the min-max normalised losses; D > 2 is the usual
    reading of "clearly separated". Returns 0.0 when all losses are equal.
    """
    x = _normalised(losses)
    if x is None:
        return 0.0
    if cfg.n_components < 2:
        raise ValueError("bimodality needs a mixture of at least 2 components")
    if x.size < cfg.n_components:
        raise ValueError(f"need at least {cfg.n_components} losses to fit the mixture, got {x.size}")
    gmm = _fit_gmm(x, cfg)
    means = gmm.means_.reshape(-1)
    variances = gmm.covariances_.reshape(-1)
    lo, hi = np.argsort(means)[:2]
    return float(np.sqrt(2.0) * abs(means[hi] - means[lo]) / np.sqrt(variances[lo] + variances[hi]))
