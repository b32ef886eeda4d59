"""Loss functions: InfoNCE baseline (Eq. 0) and the DisNCL objective (Eq. 1-9 in docs/method.md)."""

from disncl.losses.disncl import (
    CLUB_PAIRS,
    LOGVAR_LIMIT,
    DisNCLInputs,
    DisNCLLossConfig,
    alpha_from_clean_prob,
    club_bound,
    cross_covariance_penalty,
    disncl_loss,
    gaussian_kl,
    gaussian_nll,
    reconstruction_loss,
    soft_targets,
)
from disncl.losses.infonce import infonce, per_pair_infonce, similarity, soft_infonce

__all__ = [
    "CLUB_PAIRS",
    "LOGVAR_LIMIT",
    "DisNCLInputs",
    "DisNCLLossConfig",
    "alpha_from_clean_prob",
    "club_bound",
    "cross_covariance_penalty",
    "disncl_loss",
    "gaussian_kl",
    "gaussian_nll",
    "infonce",
    "per_pair_infonce",
    "reconstruction_loss",
    "similarity",
    "soft_infonce",
    "soft_targets",
]
