"""One training step's loss: runs the model on a batch and hands tensors to the pure losses.

Every objective has the same signature (the registry, :mod:`disncl.methods`, names one per method):
``(model, pixels, input_ids, attention_mask, clean_prob, cfg, use_split) -> (loss, terms)`` with
``cfg`` the whole :class:`~disncl.config.RunConfig` (each reads its own section) and ``terms`` the
loss parts as detached 0-d tensors; the trainer moves them to the host once per log step.

The CLUB variational networks q_θ are fitted by their own NLL on detached codes (Eq. 9) while
the encoders minimise the CLUB bound evaluated with q_θ frozen (Eq. 8): both happen in one
backward pass because the bound is computed through ``functional_call`` with detached
parameters, so its gradient reaches the codes and never q_θ.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from disncl.config import RunConfig
from disncl.losses.disncl import CLUB_ROLES, DisNCLInputs, disncl_loss, gaussian_nll
from disncl.losses.infonce import infonce
from disncl.losses.srem import srem_loss
from disncl.methods import get_method
from disncl.models.disncl import DisNCLModel
from disncl.models.heads import reparameterize

Terms = dict[str, Tensor]


def infonce_objective(
    model: DisNCLModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, clean_prob: Tensor,
    cfg: RunConfig, use_split: bool,
) -> tuple[Tensor, Terms]:
    """The CLIP baseline: symmetric InfoNCE on the full tower features (Eq. 0); ignores the split."""
    h_v = model.encode_image(pixels).h
    h_t = model.encode_text(input_ids, attention_mask).h
    loss = infonce(h_v, h_t, cfg.infonce.tau)
    return loss, {"infonce": loss.detach()}


def ncr_objective(
    model: DisNCLModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, clean_prob: Tensor,
    cfg: RunConfig, use_split: bool,
) -> tuple[Tensor, Terms]:
    """NCR-style baseline, one network: InfoNCE on the tower features weighted by w (Eq. 13)."""
    h_v = model.encode_image(pixels).h
    h_t = model.encode_text(input_ids, attention_mask).h
    loss = infonce(h_v, h_t, cfg.infonce.tau, weights=clean_prob)
    return loss, {"ncr": loss.detach(), "clean_prob_mean": clean_prob.float().mean()}


def srem_objective(
    model: DisNCLModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, clean_prob: Tensor,
    cfg: RunConfig, use_split: bool,
) -> tuple[Tensor, Terms]:
    """SREM on the tower features (Eq. 14-19); plain InfoNCE (Eq. 0) during warm-up (Section 7.2)."""
    h_v = model.encode_image(pixels).h
    h_t = model.encode_text(input_ids, attention_mask).h
    if cfg.srem.warmup_infonce and not use_split:
        loss = infonce(h_v, h_t, cfg.srem.tau)
        return loss, {"total": loss.detach(), "warmup_infonce": loss.detach()}
    return srem_loss(h_v, h_t, clean_prob, cfg.srem)


def heads_detached(cfg: RunConfig, use_split: bool) -> bool:
    """Whether this batch trains with Eq. 2c's gradient path (the heads on ``sg(h)``, the towers on the full-space
    terms alone): DisNCL with ``train.heads_detached`` (set by Eq. 6j's fallback), in its warm-up with
    ``train.warmup_heads: detached``, or after it with ``train.split_heads: detached`` (Eq. 2d)."""
    if cfg.train.method != "disncl":
        return False
    if cfg.train.heads_detached:
        return True
    return (cfg.train.split_heads if use_split else cfg.train.warmup_heads) == "detached"


def disncl_objective(
    model: DisNCLModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, clean_prob: Tensor,
    run_cfg: RunConfig, use_split: bool,
) -> tuple[Tensor, Terms]:
    """DisNCL (Eq. 1–9 in docs/method.md) for one batch of pairs; where :func:`heads_detached` says so the heads
    read ``sg(h)`` (Eq. 2c)."""
    cfg = run_cfg.loss
    detached = heads_detached(run_cfg, use_split)
    share = 0.0 if detached else run_cfg.train.heads_grad_scale
    ev = model.encode_image(pixels, heads_grad=share)
    et = model.encode_text(input_ids, attention_mask, heads_grad=share)
    # Eq. 2c: the reconstruction target is sg(h) too, so only the full-space alignment reaches the towers.
    h_v, h_t = (ev.h.detach(), et.h.detach()) if detached else (ev.h, et.h)
    z_v, u_v = reparameterize(ev.mu_z, ev.logvar_z), reparameterize(ev.mu_u, ev.logvar_u)
    z_t, u_t = reparameterize(et.mu_z, et.logvar_z), reparameterize(et.mu_u, et.logvar_u)
    # Scale-free codes for the MI estimate (Eq. 8c): otherwise the encoders lower the CLUB value by
    # rescaling codes against q_θ's fixed variances instead of removing shared information.
    unit = {name: F.normalize(c, dim=-1) for name, c in (("z_v", z_v), ("z_t", z_t), ("u_v", u_v), ("u_t", u_t))}

    club: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    q_nll = pixels.new_zeros(())
    if cfg.use_mi and cfg.mi_estimator == "club":
        for name, (a_name, b_name) in CLUB_ROLES.items():
            a, b = unit[a_name], unit[b_name]
            q = model.club[name]
            frozen = {k: p.detach() for k, p in q.named_parameters()}
            q_mu, q_logvar = functional_call(q, frozen, (a,))
            club[name] = (q_mu, q_logvar, b)
            q_nll = q_nll + gaussian_nll(*q(a.detach()), b.detach())

    inputs = DisNCLInputs(
        z_v=z_v, z_t=z_t,
        mu_zv=ev.mu_z, logvar_zv=ev.logvar_z, mu_zt=et.mu_z, logvar_zt=et.logvar_z,
        mu_uv=ev.mu_u, logvar_uv=ev.logvar_u, mu_ut=et.mu_u, logvar_ut=et.logvar_u,
        u_v=u_v, u_t=u_t, h_v=h_v, h_t=h_t,
        recon_v=model.decode_image(z_v, u_v), recon_t=model.decode_text(z_t, u_t),
        club=club, clean_prob=clean_prob if use_split else None,
        h_full_v=ev.h if detached else None, h_full_t=et.h if detached else None,
    )
    total, terms = disncl_loss(inputs, cfg)
    terms["q_nll"] = q_nll.detach()
    return total + q_nll, terms


def batch_objective(
    model: DisNCLModel, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor, clean_prob: Tensor,
    cfg: RunConfig, use_split: bool,
) -> tuple[Tensor, Terms]:
    """One batch of ``cfg.train.method``'s objective (its registry record names the function).

    ``use_split`` is False during the trainer's warm-up epochs (``clean_prob`` is then all ones).
    """
    objective = get_method(cfg.train.method).objective_fn()
    return objective(model, pixels, input_ids, attention_mask, clean_prob, cfg, use_split)
