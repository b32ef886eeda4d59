"""Loss functions: InfoNCE (Eq. 0), DisNCL (Eq. 1-9) and the SREM baseline (Eq. 14-19 in docs/method.md)."""

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
from disncl.losses.srem import (
    SREMLossConfig,
    complementary_loss,
    energy,
    log1m_softmax,
    relative_weights,
    select_clean,
    srem_loss,
    swapped_entropy_weights,
)

__all__ = [
    "CLUB_PAIRS",
    "LOGVAR_LIMIT",
    "DisNCLInputs",
    "DisNCLLossConfig",
    "SREMLossConfig",
    "alpha_from_clean_prob",
    "club_bound",
    "complementary_loss",
    "cross_covariance_penalty",
    "disncl_loss",
    "energy",
    "gaussian_kl",
    "gaussian_nll",
    "infonce",
    "log1m_softmax",
    "per_pair_infonce",
    "reconstruction_loss",
    "relative_weights",
    "select_clean",
    "similarity",
    "soft_infonce",
    "soft_targets",
    "srem_loss",
    "swapped_entropy_weights",
]
