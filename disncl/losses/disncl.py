"""DisNCL objective: information-bottleneck disentanglement of MII/MEI with soft matching targets.

L = gamma * L_S + (1 - gamma) * L_X (Eq. 1 in docs/method.md). All functions are pure: tensors in,
tensors out. Equation numbers refer to docs/method.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from disncl.losses.config import DisNCLLossConfig
from disncl.losses.infonce import similarity, soft_infonce
from disncl.losses.srem import batch_confident, complementary_loss

LOGVAR_LIMIT = 30.0
# The four dependencies the exclusivity part penalises (Eq. 7): name -> (a, b) for I(a; b), with the
# CLUB network q(b | a) (Eq. 8). MEI of one modality against the other's MII, and each modality's MII
# against its own MEI. Codes are named z_v, z_t (MII) and u_v, u_t (MEI); the model builds one
# network per entry and the objective reads the codes by these names.
CLUB_ROLES: dict[str, tuple[str, str]] = {
    "uv_zt": ("u_v", "z_t"),
    "ut_zv": ("u_t", "z_v"),
    "zv_uv": ("z_v", "u_v"),
    "zt_ut": ("z_t", "u_t"),
}
CLUB_PAIRS: tuple[str, ...] = tuple(CLUB_ROLES)


@dataclass
class DisNCLInputs:
    """Everything the DisNCL loss needs for one batch of B pairs (Section 1 of docs/method.md).

    z_*: sampled MII codes (B, D_z); u_*: sampled MEI codes (B, D_u); mu_*/logvar_*: posterior
    parameters of q(z|h) and q(u|h); h_*: tower features to reconstruct (B, E); recon_*: decoder
    outputs (B, E); club: pair name -> (q_mu, q_logvar, b) for the names in CLUB_PAIRS (may be empty
    when mi_estimator is "xcov" or "hsic"); clean_prob: (B,) clean probability w (ones during warm-up).
    """

    z_v: Tensor
    z_t: Tensor
    mu_zv: Tensor
    logvar_zv: Tensor
    mu_zt: Tensor
    logvar_zt: Tensor
    mu_uv: Tensor
    logvar_uv: Tensor
    mu_ut: Tensor
    logvar_ut: Tensor
    u_v: Tensor
    u_t: Tensor
    h_v: Tensor
    h_t: Tensor
    recon_v: Tensor
    recon_t: Tensor
    club: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)
    clean_prob: Tensor | None = None
    # The tower features the full-space alignment (Eq. 2b) reads; None: h_v / h_t. Eq. 2c's warm-up passes
    # sg(h) as h_* (the reconstruction target) and the attached h here, its only path into the towers.
    h_full_v: Tensor | None = None
    h_full_t: Tensor | None = None


def _bounded(logvar: Tensor) -> Tensor:
    """Numerical guard logvar -> clamp(logvar, -LOGVAR_LIMIT, LOGVAR_LIMIT) (Section 4 of docs/method.md)."""
    return logvar.clamp(-LOGVAR_LIMIT, LOGVAR_LIMIT)


def soft_targets(
    sim: Tensor, alpha: Tensor, tau_target: float, exclude_self: bool = False
) -> tuple[Tensor, Tensor]:
    """Soft matching targets, computed without gradient (Eq. 4, and Eq. 4b with ``exclude_self``).

    T^{i2t}_i = (1 - alpha_i) e_i + alpha_i softmax_j(sg(S_ij) / tau_t),
    T^{t2i}_i = (1 - alpha_i) e_i + alpha_i softmax_j(sg(S_ji) / tau_t).
    With ``exclude_self`` the softmax runs over j != i: the self-distilled mass goes only to the
    batch's other items, so a pair the split distrusts (alpha -> 1) is not pulled towards its own,
    possibly memorised, partner.

    Args:
        sim: (B, B) similarity matrix S (image rows, caption columns).
        alpha: (B,) or scalar mixing weights in [0, 1].
        tau_target: temperature of the target softmax (> 0).
        exclude_self: leave the annotated partner out of the softmax (Eq. 4b).

    Returns:
        (t_i2t, t_t2i), each (B, B), rows summing to 1, detached from the graph.
    """
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square (B, B) similarity matrix, got {tuple(sim.shape)}")
    with torch.no_grad():
        s = sim.detach()
        a = alpha.detach().to(s.dtype).reshape(-1, 1)
        eye = torch.eye(s.shape[0], dtype=s.dtype, device=s.device)
        logits = s / tau_target
        if exclude_self:
            logits = logits.masked_fill(eye.bool(), float("-inf"))
        t_i2t = (1.0 - a) * eye + a * F.softmax(logits, dim=1)
        t_t2i = (1.0 - a) * eye + a * F.softmax(logits.T, dim=1)
    return t_i2t, t_t2i


def alpha_from_clean_prob(w: Tensor, alpha_min: float, alpha_max: float) -> Tensor:
    """Per-pair target softness from the clean probability (Eq. 5 in docs/method.md).

    alpha_i = alpha_min + (alpha_max - alpha_min) * (1 - w_i), with w clamped to [0, 1].
    """
    return alpha_min + (alpha_max - alpha_min) * (1.0 - w.clamp(0.0, 1.0))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)), summed over dims and averaged over the batch (Eq. 2a).

    KL_i = 1/2 * sum_d (mu_id^2 + exp(logvar_id) - 1 - logvar_id)   (Eq. 2a in docs/method.md).
    logvar is clamped to [-LOGVAR_LIMIT, LOGVAR_LIMIT] as a numerical guard.
    """
    lv = _bounded(logvar)
    return 0.5 * (mu.pow(2) + lv.exp() - 1.0 - lv).sum(dim=-1).mean()


def reconstruction_loss(target: Tensor, recon: Tensor, kind: str) -> Tensor:
    """Reconstruction error R of the tower features from [z, u] (Eq. 7a in docs/method.md).

    "mse":    R = mean_i ||h_i - h^_i||_2^2 (sum over dims, mean over batch);
    "cosine": R = mean_i (1 - cos(h_i, h^_i)).
    """
    if target.shape != recon.shape:
        raise ValueError(f"target and recon shapes differ: {tuple(target.shape)} vs {tuple(recon.shape)}")
    if kind == "mse":
        return (target - recon).pow(2).sum(dim=-1).mean()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(target, recon, dim=-1)).mean()
    raise ValueError(f"unknown reconstruction kind {kind!r}; expected 'mse' or 'cosine'")


def club_bound(q_mu: Tensor, q_logvar: Tensor, b: Tensor) -> Tensor:
    """CLUB upper bound of I(a; b) with a variational Gaussian q(b|a) (Eq. 8 in docs/method.md).

    CLUB = mean_i log q(b_i|a_i) - mean_i mean_j log q(b_j|a_i)
         = mean_i sum_d [ Var_j(b_jd) + (mean_j b_jd - mu_id)^2 - (b_id - mu_id)^2 ] / (2 exp(logvar_id)),
    where mu_i, logvar_i = q's outputs for a_i; the log-normaliser cancels, and the inner mean over j
    (population variance) is computed in closed form in O(B D).

    Args:
        q_mu: (B, D_b) predicted means mu(a_i).
        q_logvar: (B, D_b) predicted log-variances logvar(a_i).
        b: (B, D_b) samples b_i paired with a_i.

    Returns:
        Scalar estimate (can be slightly negative on a finite batch).
    """
    if not (q_mu.shape == q_logvar.shape == b.shape) or b.dim() != 2:
        raise ValueError(
            f"club_bound expects equal (B, D) shapes, got {tuple(q_mu.shape)}, {tuple(q_logvar.shape)}, "
            f"{tuple(b.shape)}"
        )
    inv_var = torch.exp(-_bounded(q_logvar))
    b_mean = b.mean(dim=0, keepdim=True)
    b_var = b.var(dim=0, unbiased=False, keepdim=True)
    negative = b_var + (b_mean - q_mu).pow(2)
    positive = (b - q_mu).pow(2)
    return (0.5 * (negative - positive) * inv_var).sum(dim=-1).mean()


def gaussian_nll(q_mu: Tensor, q_logvar: Tensor, b: Tensor) -> Tensor:
    """Negative log-likelihood used to fit the CLUB network q(b|a) (Eq. 9 in docs/method.md).

    NLL = -mean_i log q(b_i|a_i)
        = mean_i 1/2 * sum_d [ (b_id - mu_id)^2 / exp(logvar_id) + logvar_id + log(2 pi) ].
    b is detached here; the caller must compute q_mu, q_logvar from detached a.
    """
    if not (q_mu.shape == q_logvar.shape == b.shape):
        raise ValueError(
            f"gaussian_nll expects equal shapes, got {tuple(q_mu.shape)}, {tuple(q_logvar.shape)}, "
            f"{tuple(b.shape)}"
        )
    lv = _bounded(q_logvar)
    sq = (b.detach() - q_mu).pow(2) * torch.exp(-lv)
    return 0.5 * (sq + lv + math.log(2.0 * math.pi)).sum(dim=-1).mean()


def cross_covariance_penalty(a: Tensor, b: Tensor) -> Tensor:
    """Squared Frobenius norm of the batch cross-covariance (Eq. 8b in docs/method.md).

    P = || (1 / (B - 1)) * sum_i (a_i - a_bar)(b_i - b_bar)^T ||_F^2; zero iff a and b are linearly
    uncorrelated on the batch.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected (B, D_a) and (B, D_b) inputs, got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError("cross_covariance_penalty needs a batch of at least 2 rows")
    ac = a - a.mean(dim=0, keepdim=True)
    bc = b - b.mean(dim=0, keepdim=True)
    cov = ac.T @ bc / (a.shape[0] - 1)
    return cov.pow(2).sum()


def _centred_rbf_gram(x: Tensor) -> Tensor:
    """H K H for the Gaussian kernel K_ij = exp(−‖x_i − x_j‖² / (2σ²)), σ² = ½ · median of the positive squared
    distances on the batch (detached: the bandwidth follows the codes, it is not a path for the gradient)."""
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)]
    sigma2 = 0.5 * off.detach().median().clamp_min(1e-6)
    k = torch.exp(-d2 / (2 * sigma2))
    return k - k.mean(dim=0, keepdim=True) - k.mean(dim=1, keepdim=True) + k.mean()


def hsic_penalty(a: Tensor, b: Tensor) -> Tensor:
    """Normalised HSIC with Gaussian kernels (kernel CKA) between two batches of codes (Eq. 8d in
    docs/method.md).

    P = tr(K̃ L̃) / sqrt(tr(K̃ K̃) · tr(L̃ L̃)),  K̃ = H K H, L̃ = H L H, H = I − 11ᵀ/B, with K and L Gaussian
    Gram matrices of a and b at the median-heuristic bandwidth. In [0, 1]; unlike Eq. 8b it sees non-linear
    dependence (zero, for characteristic kernels and large B, only when a and b are independent).
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"expected (B, D_a) and (B, D_b) inputs, got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[0] < 3:
        raise ValueError("hsic_penalty needs a batch of at least 3 rows")
    k, l_ = _centred_rbf_gram(a), _centred_rbf_gram(b)
    return (k * l_).sum() / ((k * k).sum() * (l_ * l_).sum()).sqrt().clamp_min(1e-12)


def _unit(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _mi_terms(x: DisNCLInputs, cfg: DisNCLLossConfig) -> dict[str, Tensor]:
    """The four disentanglement penalties of Eq. 7 (CLUB, Eq. 8, cross-covariance, Eq. 8b, or kernel
    HSIC, Eq. 8d), on L2-normalised codes (Eq. 8c)."""
    if cfg.mi_estimator == "club":
        missing = [name for name in CLUB_PAIRS if name not in x.club]
        if missing:
            raise KeyError(f"mi_estimator='club' needs q outputs for {missing} in DisNCLInputs.club")
        # MI >= 0: a negative estimate only says q is mis-fitted, so it must not reward the encoders.
        return {name: club_bound(*x.club[name]).clamp_min(0.0) for name in CLUB_PAIRS}
    if cfg.mi_estimator == "xcov":
        return {name: cross_covariance_penalty(_unit(getattr(x, a)), _unit(getattr(x, b)))
                for name, (a, b) in CLUB_ROLES.items()}
    if cfg.mi_estimator == "hsic":
        return {name: hsic_penalty(_unit(getattr(x, a)), _unit(getattr(x, b))) for name, (a, b) in CLUB_ROLES.items()}
    raise ValueError(f"unknown mi_estimator {cfg.mi_estimator!r}; expected 'club', 'xcov' or 'hsic'")


def partner_on_top(sim: Tensor) -> Tensor:
    """1.0 where the annotated partner is the batch's best match in both directions (Eq. 5e), else 0.0.

    top_i = 1[S_ii >= max_{j != i} S_ij] · 1[S_ii >= max_{j != i} S_ji]   (Eq. 5e in docs/method.md).
    """
    with torch.no_grad():
        s = sim.detach()
        off = s.masked_fill(torch.eye(s.shape[0], dtype=torch.bool, device=s.device), float("-inf"))
        diag = s.diagonal()
        return ((diag >= off.max(dim=1).values) & (diag >= off.max(dim=0).values)).to(s.dtype)


def _flagged_rows(
    sim: Tensor, w: Tensor, split_active: bool, cfg: DisNCLLossConfig
) -> tuple[Tensor | None, Tensor | None]:
    """(complementary, dropped): 1.0 for the pairs flagged by the hard split (w <= θ) that Eq. 5d sends to the
    complementary loss, and for those Eq. 5e leaves out of the loss; None where the mode does not apply."""
    if cfg.flagged_loss not in ("rematch", "complementary", "outranked"):
        raise ValueError(f"unknown flagged_loss {cfg.flagged_loss!r}; expected 'rematch', 'complementary' or "
                         "'outranked'")
    if cfg.flagged_loss == "rematch" or not split_active or cfg.alpha_hard_threshold <= 0:
        return None, None
    flagged = (w <= cfg.alpha_hard_threshold).to(w.dtype).detach()
    if cfg.flagged_loss == "complementary":
        return flagged, None
    return None, flagged * partner_on_top(sim)


def _complementary(sim: Tensor, flagged: Tensor | None, cfg: DisNCLLossConfig) -> Tensor:
    """Eq. 5d: 1/B * sum over flagged pairs of SREM's complementary loss c_i (Eq. 18); 0 without flags."""
    if flagged is None:
        return sim.new_zeros(())
    per_pair = complementary_loss(sim, cfg.complementary_tau, cfg.complementary_bias)
    return (flagged.to(sim.dtype) * per_pair).sum() / sim.shape[0]


def disncl_loss(x: DisNCLInputs, cfg: DisNCLLossConfig) -> tuple[Tensor, dict[str, float]]:
    """Full DisNCL objective (Eq. 1-8 in docs/method.md).

    L   = gamma * L_S + (1 - gamma) * L_X                                            (Eq. 1)
    L_S = L_align + beta * (KL(q(z^v|h^v)||N(0,I)) + KL(q(z^t|h^t)||N(0,I)))        (Eq. 2)
          + lambda_full * L_align^full                                               (Eq. 2b)
    L_X = lambda_rec * (R^v + R^t) + lambda_mi * MI + beta_mei * (KL_u^v + KL_u^t)   (Eq. 7)
    with L_align the soft-target InfoNCE on S_ij = cos(z^v_i, z^t_j) (Eq. 3-5) and MI the sum of the
    four CLUB bounds (Eq. 8) or cross-covariance penalties (Eq. 8b).

    A term switched off by its bool (use_kl, use_mi, use_recon) is not computed and logged as 0.0; a
    term with weight 0 is computed and logged but not added to the total.

    Returns:
        (total, logs): the scalar loss and every term as a detached 0-d tensor.
    """
    b = x.z_v.shape[0]
    w = x.clean_prob if x.clean_prob is not None else x.z_v.new_ones(b)
    if w.shape != (b,):
        raise ValueError(f"clean_prob must have shape ({b},), got {tuple(w.shape)}")
    zero = x.z_v.new_zeros(())

    sim = similarity(x.z_v, x.z_t)
    if cfg.confident_quantile > 0 and x.clean_prob is not None:
        # Eq. 5c: a pair the split calls clean must also be among the batch's confident matches.
        w = w * batch_confident(sim, cfg.tau, cfg.confident_quantile).to(w.dtype)
    if cfg.soft_targets:
        # Eq. 5b: a hard split gives every flagged pair the full alpha_max, every kept pair alpha_min.
        w_alpha = (w > cfg.alpha_hard_threshold).to(w.dtype) if cfg.alpha_hard_threshold > 0 else w
        alpha = alpha_from_clean_prob(w_alpha, cfg.alpha_min, cfg.alpha_max)
    else:
        alpha = torch.zeros_like(w)
    t_i2t, t_t2i = soft_targets(sim, alpha, cfg.tau_target, cfg.target_exclude_self)
    flagged, dropped = _flagged_rows(sim, w, x.clean_prob is not None, cfg)
    weights = w if cfg.weight_by_clean_prob else None
    for rows in (flagged, dropped):
        if rows is not None:
            weights = (1.0 - rows) if weights is None else weights * (1.0 - rows)
    align = soft_infonce(sim, cfg.tau, t_i2t, t_t2i, weights) + _complementary(sim, flagged, cfg)

    kl_mii = gaussian_kl(x.mu_zv, x.logvar_zv) + gaussian_kl(x.mu_zt, x.logvar_zt) if cfg.use_kl else zero
    kl_mei = gaussian_kl(x.mu_uv, x.logvar_uv) + gaussian_kl(x.mu_ut, x.logvar_ut) if cfg.use_kl else zero
    recon = (
        reconstruction_loss(x.h_v, x.recon_v, cfg.recon) + reconstruction_loss(x.h_t, x.recon_t, cfg.recon)
        if cfg.use_recon
        else zero
    )
    mi_parts = _mi_terms(x, cfg) if cfg.use_mi else {}
    mi = torch.stack(list(mi_parts.values())).sum() if mi_parts else zero

    align_full = zero
    if cfg.lambda_full != 0:
        sim_h = similarity(x.h_v if x.h_full_v is None else x.h_full_v, x.h_t if x.h_full_t is None else x.h_full_t)
        th_i2t, th_t2i = soft_targets(sim_h, alpha, cfg.tau_target, cfg.target_exclude_self)
        align_full = soft_infonce(sim_h, cfg.tau, th_i2t, th_t2i, weights) + _complementary(sim_h, flagged, cfg)

    l_s = align + (cfg.beta * kl_mii if cfg.beta != 0 else zero) + cfg.lambda_full * align_full
    l_x = zero
    for weight, term in ((cfg.lambda_rec, recon), (cfg.lambda_mi, mi), (cfg.beta_mei, kl_mei)):
        if weight != 0:
            l_x = l_x + weight * term
    total = zero
    if cfg.gamma != 0:
        total = total + cfg.gamma * l_s
    if cfg.gamma != 1:
        total = total + (1.0 - cfg.gamma) * l_x

    logs = {
        "total": total,
        "L_S": l_s,
        "L_X": l_x,
        "align": align,
        "align_full": align_full,
        "kl_mii": kl_mii,
        "kl_mei": kl_mei,
        "recon": recon,
        "mi": mi,
        **{f"mi_{name}": value for name, value in mi_parts.items()},
        "alpha_mean": alpha.mean(),
        "clean_prob_mean": w.mean(),
    }
    return total, {k: v.detach() for k, v in logs.items()}
