"""Eq. 3c: the alignment weighted by the clean probability only in epochs whose split flags a minority."""

from __future__ import annotations

import numpy as np

from disncl.config import load_config
from disncl.train.loop import epoch_config, flagged_share


def test_flagged_share_counts_the_pairs_at_or_below_theta() -> None:
    hard = load_config(None, [])  # θ = 0.9 (Eq. 5b)
    assert flagged_share(np.array([0.1, 0.9, 0.95, 1.0]), hard) == 0.5
    soft = load_config(None, ["loss.alpha_hard_threshold=0"])
    assert flagged_share(np.array([0.1, 0.5, 0.6, 1.0]), soft) == 0.5


def test_weighting_is_on_only_while_the_split_flags_a_minority() -> None:
    cfg = load_config(None, ["loss.weight_by_clean_prob_below=0.5"])
    assert epoch_config(cfg, 3, 0.3).loss.weight_by_clean_prob
    assert not epoch_config(cfg, 3, 0.5).loss.weight_by_clean_prob
    assert not epoch_config(cfg, 3, 0.7).loss.weight_by_clean_prob
    # Before the split (no share) the weights are ones, and nothing changes.
    assert not epoch_config(cfg, 0, None).loss.weight_by_clean_prob
    # The rest of the configuration is the run's own.
    assert epoch_config(cfg, 3, 0.3).loss.weight_by_clean_prob_below == 0.5
    off = load_config(None, ["loss.weight_by_clean_prob_below=0"])
    assert epoch_config(off, 3, 0.0) is off
    # The default (§9.11): a majority.
    assert load_config(None, []).loss.weight_by_clean_prob_below == 0.5
    always = load_config(None, ["loss.weight_by_clean_prob=true", "loss.weight_by_clean_prob_below=0.5"])
    assert epoch_config(always, 3, 0.7).loss.weight_by_clean_prob
