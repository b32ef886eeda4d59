"""Eq. 6o: with split.clean_share = q the split trusts at most the ⌈qN⌉ pairs of lowest score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from disncl.bench.presets import CLEAN_SHARE_KNOWN, CLEAN_SHARE_OVER, PRESETS, RunSpec
from disncl.config import load_config
from disncl.data.noise import NoisyPairs
from disncl.eval.encode import Embeddings
from disncl.train.loop import score_embeddings
from disncl.train.noise_split import cap_clean_share


def test_the_cap_keeps_the_lowest_scores_own_probability_and_zeroes_the_rest() -> None:
    w = np.array([0.9, 1.0, 0.2, 1.0, 0.7, 1.0], dtype=np.float32)
    scores = np.array([0.5, 0.1, 0.3, 0.9, 0.2, 0.4])
    capped = cap_clean_share(w, scores, 0.5)
    # ⌈0.5 · 6⌉ = 3 pairs of lowest score: indices 1, 4, 2 keep their w (a low w stays low), the rest are 0.
    assert capped.dtype == np.float32
    np.testing.assert_array_equal(capped, np.array([0.0, 1.0, 0.2, 0.0, 0.7, 0.0], dtype=np.float32))
    # The share is rounded up: 0.34 · 6 = 2.04 keeps three pairs.
    assert np.count_nonzero(cap_clean_share(np.ones(6), scores, 0.34)) == 3
    assert cap_clean_share(w, scores, 1.0) is w


def test_tied_scores_keep_the_lower_index_so_exactly_the_share_is_kept() -> None:
    capped = cap_clean_share(np.ones(10), np.zeros(10), 0.3)
    np.testing.assert_array_equal(np.flatnonzero(capped), [0, 1, 2])


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5, math.nan])
def test_a_share_outside_the_unit_interval_is_refused(share: float) -> None:
    with pytest.raises(ValueError, match="clean share"):
        cap_clean_share(np.ones(4), np.zeros(4), share)
    with pytest.raises(ValueError, match="clean_share"):
        load_config(None, [f"split.clean_share={share}"])


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        cap_clean_share(np.ones(4), np.zeros(5), 0.5)


def test_the_oracle_and_a_clean_share_are_refused_together() -> None:
    with pytest.raises(ValueError, match="split.oracle"):
        load_config(None, ["split.oracle=true", "split.clean_share=0.5"])


def test_the_trainers_split_trusts_at_most_the_share_and_the_closest_pairs() -> None:
    # 200 pairs, 120 wrong; the wrong ones' captions lie half on their image, half far away, so the mixture's clean
    # component takes the half-way ones too: it trusts more pairs than are clean, the cap does not.
    rng = np.random.default_rng(0)
    n, idx = 200, np.arange(200)
    img = rng.normal(size=(n, 16))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    noise = rng.normal(size=(n, 16))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    mix = np.where(idx < 80, 0.05, np.where(idx < 140, 0.6, 1.0))[:, None]
    txt = (1 - mix) * img + mix * noise
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    img, txt = img.astype(np.float32), txt.astype(np.float32)
    emb = Embeddings(img_full=img, img_mii=img, txt_full=txt, txt_mii=txt)
    pairs = NoisyPairs(caption=idx, image=idx, is_clean=idx < 80)
    _, own = score_embeddings(emb, pairs, load_config(None, ["split.score=cosine"]))
    _, capped = score_embeddings(emb, pairs, load_config(None, ["split.score=cosine", "split.clean_share=0.4"]))
    assert (own > 0.5).sum() > 80
    assert (capped > 0).sum() <= 80
    # The cap keeps the pairs nearest their partners, which here are the clean ones, with the mixture's own w.
    np.testing.assert_array_equal(capped[:80], own[:80])
    assert (capped[80:] == 0).all()


def test_the_bench_variants_take_the_cells_clean_share() -> None:
    preset = PRESETS["standard-variants"]

    def share(rate: float, ablation: str) -> float:
        spec = RunSpec("disncl", "image", rate, 0, ablation=ablation)
        return load_config(None, spec.overrides(preset, "/data")).split.clean_share

    assert share(0.8, CLEAN_SHARE_KNOWN) == pytest.approx(0.2)
    assert share(0.4, CLEAN_SHARE_KNOWN) == pytest.approx(0.6)
    assert share(0.8, CLEAN_SHARE_OVER) == pytest.approx(0.3)
    assert share(0.0, CLEAN_SHARE_OVER) == 1.0
    assert share(0.8, "") == 1.0
    scheduled = {s.name for s in preset.runs()}
    assert RunSpec("disncl", "image", 0.8, 4, ablation=CLEAN_SHARE_KNOWN, data_seed=1).name in scheduled
