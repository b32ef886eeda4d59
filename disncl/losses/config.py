"""Hyperparameters of the losses, one dataclass per objective (torch-free, so configuration loads without torch).

The equation numbers refer to docs/method.md; each loss module imports its dataclass from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class InfoNCELossConfig:
    """The InfoNCE objectives of the plain and NCR-style baselines (Eq. 0 and Eq. 13)."""

    tau: float = 0.07


@dataclass(frozen=True)
class DisNCLLossConfig:
    """Hyperparameters and ablation switches of the DisNCL loss (Section 3 of docs/method.md)."""

    gamma: float = 0.8
    beta: float = 1e-3
    beta_mei: float = 1e-3
    lambda_rec: float = 1.0
    # Defaults chosen on validation in the standard bench (docs/method.md §9.4, §9.8): the kernel HSIC
    # penalty at weight 1 (Eq. 8d; the cross-covariance Eq. 8b until §9.8, bench variant ``xcov_mi``) with
    # Eq. 4b and a hard split at θ = 0.9 (Eq. 5b). Before §9.4 the defaults were CLUB at weight 0.1 with
    # soft Eq. 5 targets (bench variant ``v1_default``).
    lambda_mi: float = 1.0
    tau: float = 0.07
    tau_target: float = 0.05
    # Eq. 5's α for a trusted pair: 0 since §9.8 (with Eq. 4b, 0.1 put a tenth of every trusted pair's target
    # on the batch's other items, a smoothing towards wrong matches; bench variant ``alpha_min_tenth``).
    alpha_min: float = 0.0
    alpha_max: float = 1.0
    soft_targets: bool = True
    # Eq. 4b: the self-distilled part of a target leaves the annotated partner out.
    target_exclude_self: bool = True
    # Eq. 5b: > 0 turns w into the flag w > threshold before Eq. 5 (a hard split, as SREM selects); 0 = soft.
    alpha_hard_threshold: float = 0.9
    # Eq. 5c: > 0 multiplies w by SREM's batch confidence test at this quantile (after warm-up only).
    confident_quantile: float = 0.0
    # Eq. 5d/5e: what a pair flagged by the hard split (w <= θ) trains on: "rematch" (its Eq. 4b target),
    # "complementary" (SREM's bounded complementary loss, Eq. 18, which never pulls it to any caption) or
    # "outranked" (the re-match only where the model ranks another batch item above the partner, else no
    # loss: a clean pair flagged by mistake is not pushed away from a partner the model still prefers).
    flagged_loss: Literal["rematch", "complementary", "outranked"] = "rematch"
    complementary_tau: float = 0.05
    complementary_bias: float = 0.5
    weight_by_clean_prob: bool = False
    # Eq. 3c: > 0 turns Eq. 3b on for an epoch whose split flags (w <= θ) less than this share of the training
    # pairs: where the flagged pairs are a minority their re-match mostly adds wrong targets, where they are the
    # majority it is most of the signal left. 0 = never (the defaults until §9.11; bench variant
    # ``rematch_flagged``); 0.5, a majority, chosen on validation in docs/method.md §9.11.
    weight_by_clean_prob_below: float = 0.5
    recon: Literal["mse", "cosine"] = "mse"
    mi_estimator: Literal["club", "xcov", "hsic"] = "hsic"
    use_kl: bool = True
    use_mi: bool = True
    use_recon: bool = True
    lambda_full: float = 1.0


@dataclass(frozen=True)
class SREMLossConfig:
    """Hyperparameters of the SREM loss (Section 7.2 of docs/method.md)."""

    tau: float = 0.07
    tau_c: float = 0.05
    lambda_c: float = 1.0
    quantile: float = 0.5
    clean_threshold: float = 0.5
    bias: float = 0.5
    swapped_weights: bool = True
    warmup_infonce: bool = True
