"""SREM baseline: clean-sample filtration, swapped entropy weighting, biased complementary learning.

A documented reconstruction of Dang et al., *Noisy Correspondence Learning with Self-Reinforcing Errors
Mitigation* (AAAI 2024), which has no public code: every formula is given in Section 7.2 of
docs/method.md (Eq. 14-19), which also says which choices are ours. All functions are pure: tensors in,
tensors out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from disncl.losses.config import SREMLossConfig
from disncl.losses.infonce import similarity


def _check_square(sim: Tensor) -> None:
    """Raise ValueError unless sim is a square (B, B) matrix with B >= 2 (Eq. 14 in docs/method.md)."""
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"expected a square (B, B) similarity matrix with B >= 2, got {tuple(sim.shape)}")


def energy(sim: Tensor, tau: float) -> Tensor:
    """Per-pair matching energy, mean of both directions (Eq. 15 in docs/method.md).

    E_i = 1/2 * [ -tau * logsumexp_j(S_ij / tau)  -  tau * logsumexp_j(S_ji / tau) ];
    low energy = a confident prediction.

    Args:
        sim: (B, B) similarity matrix S (image rows, caption columns).
        tau: temperature (> 0).

    Returns:
        (B,) energies.
    """
    _check_square(sim)
    logits = sim / tau
    return -0.5 * tau * (torch.logsumexp(logits, dim=1) + torch.logsumexp(logits, dim=0))


def select_clean(sim: Tensor, clean_prob: Tensor, cfg: SREMLossConfig) -> Tensor:
    """Clean-sample filtration, without gradient (Eq. 16 in docs/method.md).

    sel_i = [w_i > theta_w] AND [S_ii >= Q_q(diag S)] AND [E_i <= Q_{1-q}(E)],
    with Q_q the batch q-quantile (q = cfg.quantile; 0.5: both batch medians; 0: the batch test is off
    and only the GMM clean probability w decides).

    Args:
        sim: (B, B) similarity matrix S.
        clean_prob: (B,) clean probability w from the trainer's GMM split (ones during warm-up).
        cfg: SREM hyperparameters (tau, quantile, clean_threshold).

    Returns:
        (B,) bool mask of the selected (trusted) pairs.
    """
    _check_square(sim)
    if clean_prob.shape != (sim.shape[0],):
        raise ValueError(f"clean_prob must have shape ({sim.shape[0]},), got {tuple(clean_prob.shape)}")
    return batch_confident(sim, cfg.tau, cfg.quantile) & (clean_prob.detach().to(sim.device) > cfg.clean_threshold)


def batch_confident(sim: Tensor, tau: float, quantile: float) -> Tensor:
    """The batch test of Eq. 16, without gradient: [S_ii >= Q_q(diag S)] AND [E_i <= Q_{1-q}(E)].

    Shared by SREM's selection and DisNCL's confidence gate (Eq. 5c in docs/method.md).

    Args:
        sim: (B, B) similarity matrix S.
        tau: temperature of the energy (Eq. 15).
        quantile: q in [0, 1]; 0 passes every pair.

    Returns:
        (B,) bool mask.
    """
    _check_square(sim)
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    with torch.no_grad():
        s = sim.detach().float()
        diag = s.diagonal()
        e = energy(s, tau)
        return (diag >= torch.quantile(diag, quantile)) & (e <= torch.quantile(e, 1.0 - quantile))


def swapped_entropy_weights(sim: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Sensitivity weights from the entropy of the *other* direction, without gradient (Eq. 17).

    a^{i2t}_i = 1 - H(softmax_j(S_ji / tau)) / log B,   a^{t2i}_i = 1 - H(softmax_j(S_ij / tau)) / log B,
    H(p) = -sum_j p_j log p_j (Eq. 17 in docs/method.md). Each weight lies in [0, 1].

    Returns:
        (a_i2t, a_t2i), each (B,), detached.
    """
    _check_square(sim)
    with torch.no_grad():
        logits = sim.detach() / tau
        log_b = math.log(sim.shape[0])

        def normalised_entropy(lg: Tensor) -> Tensor:
            logp = F.log_softmax(lg, dim=1)
            return -(logp.exp() * logp).sum(dim=1) / log_b

        h_i2t, h_t2i = normalised_entropy(logits), normalised_entropy(logits.T)
        return (1.0 - h_t2i).clamp(0.0, 1.0), (1.0 - h_i2t).clamp(0.0, 1.0)


def relative_weights(a: Tensor, sel: Tensor, eps: float = 1e-6) -> Tensor:
    """Sensitivity weights relative to their mean over the selected pairs, without gradient (Eq. 17b).

    a~_i = (a_i + eps) / (mean_{k in sel} a_k + eps) (Eq. 17b in docs/method.md), so the weighted
    classification loss keeps the scale of plain cross-entropy: early in training every prediction is
    near-uniform, every a is near 0, and the raw weights would switch the loss off.

    Args:
        a: (B,) weights of Eq. 17.
        sel: (B,) 0/1 selection mask (Eq. 16), float.
        eps: keeps a~ = 1 when all selected a are 0.
    """
    with torch.no_grad():
        mean = (sel * a).sum() / sel.sum().clamp_min(1.0)
        return (a + eps) / (mean + eps)


def log1m_softmax(logits: Tensor) -> Tensor:
    """log(1 - softmax_j(logits_ij)) computed stably row by row (Eq. 18a in docs/method.md).

    For j not the row's argmax, p_ij <= 1/2 and log1p(-p_ij) is accurate; at the argmax it is
    logsumexp_{k != j} logits_ik - logsumexp_k logits_ik, so a saturated p_ij -> 1 stays finite.
    """
    lse = torch.logsumexp(logits, dim=1, keepdim=True)
    top = logits.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
    lse_rest = torch.logsumexp(logits.masked_fill(is_top, -math.inf), dim=1, keepdim=True)
    p_safe = torch.exp(logits - lse).masked_fill(is_top, 0.0)
    return torch.where(is_top, lse_rest - lse, torch.log1p(-p_safe))


def complementary_loss(sim: Tensor, tau_c: float, bias: float = 0.0) -> Tensor:
    """Per-pair cross-modal biased complementary loss (Eq. 18 in docs/method.md).

    c_i = 1/2 * [ sum_{j != i} b_ij * -log(1 - p^{i2t}_ij)  +  sum_{j != i} b^T_ij * -log(1 - p^{t2i}_ij) ],
    p^{i2t}_ij = softmax_j(S_ij / tau_c), p^{t2i}_ij = softmax_j(S_ji / tau_c),
    b_ij = 1 - bias * exp((sg(S_ij) - max_{k != i} sg(S_ik)) / tau_c)  (b^T the same on S^T).
    The most similar negative (a likely false negative) gets weight 1 - bias; bias = 0 gives RCL's
    complementary contrastive loss.

    Args:
        sim: (B, B) similarity matrix S.
        tau_c: temperature of the complementary softmax (> 0).
        bias: down-weighting strength in [0, 1].

    Returns:
        (B,) per-pair losses.
    """
    _check_square(sim)
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must lie in [0, 1], got {bias}")
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)

    def direction(s: Tensor) -> Tensor:
        neg = -log1m_softmax(s / tau_c)
        with torch.no_grad():
            off = s.detach().masked_fill(eye, -math.inf)
            closeness = torch.exp((off - off.max(dim=1, keepdim=True).values) / tau_c)
            weight = 1.0 - bias * closeness
        return (weight * neg).masked_fill(eye, 0.0).sum(dim=1)

    return 0.5 * (direction(sim) + direction(sim.T))


def srem_loss(
    img: Tensor, txt: Tensor, clean_prob: Tensor, cfg: SREMLossConfig
) -> tuple[Tensor, dict[str, float]]:
    """The SREM objective for one batch (Eq. 14-19 in docs/method.md).

    L = 1/B * sum_{i in sel} 1/2 [ a~^{i2t}_i CE^{i2t}_i + a~^{t2i}_i CE^{t2i}_i ]
      + lambda_c * 1/B * sum_{i not in sel} c_i                                             (Eq. 19)
    with S_ij = cos(img_i, txt_j), CE^{i2t}_i = -log softmax_j(S_ij / tau)[i] (CE^{t2i} on S^T), the
    selection sel (Eq. 16), the swapped weights a (Eq. 17) relative to their mean over sel (a~, Eq. 17b;
    1 when swapped_weights is off) and the biased complementary loss c (Eq. 18).

    Args:
        img: (B, D) image embeddings (normalised inside).
        txt: (B, D) text embeddings; row i is paired with img row i.
        clean_prob: (B,) clean probability w (ones during warm-up).
        cfg: SREM hyperparameters.

    Returns:
        (total, logs): the scalar loss and its parts as detached 0-d tensors (moved to the host by the
        trainer once per log step, not here on every step).
    """
    sim = similarity(img, txt)
    b = sim.shape[0]
    sel = select_clean(sim, clean_prob, cfg).to(sim.dtype)
    a_i2t, a_t2i = swapped_entropy_weights(sim, cfg.tau)
    if cfg.swapped_weights:
        w_i2t, w_t2i = relative_weights(a_i2t, sel), relative_weights(a_t2i, sel)
    else:
        w_i2t = w_t2i = sim.new_ones(b)
    logits = sim / cfg.tau
    idx = torch.arange(b, device=sim.device)
    ce = 0.5 * (w_i2t * F.cross_entropy(logits, idx, reduction="none")
                + w_t2i * F.cross_entropy(logits.T, idx, reduction="none"))
    ce_term = (sel * ce).sum() / b
    comp_term = ((1.0 - sel) * complementary_loss(sim, cfg.tau_c, cfg.bias)).sum() / b
    total = ce_term + cfg.lambda_c * comp_term
    n_sel = sel.sum()
    logs = {
        "total": total,
        "ce": ce_term,
        "complementary": comp_term,
        "selected_frac": n_sel / b,
        "swap_weight_mean": (sel * 0.5 * (a_i2t + a_t2i)).sum() / n_sel.clamp_min(1.0),
        "energy_mean": energy(sim.detach(), cfg.tau).mean(),
        "clean_prob_mean": clean_prob.float().mean(),
    }
    return total, {k: v.detach() for k, v in logs.items()}
