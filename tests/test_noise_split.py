"""Tests for disncl.train.noise_split (Eq. 6 and Eq. 10 in docs/method.md)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from disncl.train.noise_split import SplitConfig, bimodality, clean_probability


def _bimodal(seed: int, n_clean: int = 1600, n_noisy: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    losses = np.concatenate([rng.normal(0.5, 0.15, n_clean), rng.normal(3.0, 0.5, n_noisy)])
    is_clean = np.concatenate([np.ones(n_clean, bool), np.zeros(n_noisy, bool)])
    perm = rng.permutation(losses.size)
    return losses[perm], is_clean[perm]


@pytest.mark.parametrize("seed", range(3))
def test_bimodal_losses_are_separated(seed: int) -> None:
    losses, is_clean = _bimodal(seed)
    w = clean_probability(losses)
    assert w.shape == losses.shape and w.min() >= 0.0 and w.max() <= 1.0
    assert roc_auc_score(~is_clean, 1.0 - w) > 0.95
    split = w > SplitConfig().threshold
    assert (split == is_clean).mean() > 0.95


def test_deterministic_and_scale_invariant() -> None:
    losses, _ = _bimodal(0)
    w = clean_probability(losses, SplitConfig(seed=3))
    np.testing.assert_array_equal(w, clean_probability(losses, SplitConfig(seed=3)))
    np.testing.assert_allclose(clean_probability(10.0 * losses + 4.0, SplitConfig(seed=3)), w, atol=1e-6)


def test_low_loss_component_is_clean() -> None:
    losses = np.array([0.1, 0.12, 0.11, 0.13, 5.0, 5.1, 4.9, 5.05])
    w = clean_probability(losses)
    assert (w[:4] > 0.9).all() and (w[4:] < 0.1).all()


def test_degenerate_inputs() -> None:
    np.testing.assert_array_equal(clean_probability(np.full(7, 2.5)), np.ones(7))
    np.testing.assert_array_equal(clean_probability(np.array([1.0])), np.ones(1))
    with pytest.raises(ValueError, match="NaN"):
        clean_probability(np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError):
        clean_probability(np.array([0.1, np.inf, 0.3]))
    with pytest.raises(ValueError):
        clean_probability(np.array([]))


def test_bimodality() -> None:
    losses, _ = _bimodal(1)
    assert bimodality(losses) > 2.0
    unimodal = np.random.default_rng(1).normal(1.0, 0.2, 2000)
    assert bimodality(unimodal) < bimodality(losses)
    assert bimodality(np.full(5, 1.0)) == 0.0


def test_smoothed_clean_probability_is_the_running_average_of_eq_6c():
    from disncl.train.noise_split import smooth_clean_probability

    prev, cur = np.array([1.0, 0.0, 0.5], np.float32), np.array([0.0, 1.0, 0.5], np.float32)
    assert np.allclose(smooth_clean_probability(prev, cur, 0.75), [0.75, 0.25, 0.5])
    assert smooth_clean_probability(prev, cur, 0.75).dtype == np.float32
    assert smooth_clean_probability(prev, cur, 0.0) is cur
    with pytest.raises(ValueError, match=r"split.ema must be in \[0, 1\)"):
        smooth_clean_probability(prev, cur, 1.0)
    with pytest.raises(ValueError, match="shape"):
        smooth_clean_probability(prev[:2], cur, 0.5)


def test_cosine_split_fits_the_mixture_on_the_pairs_own_distance(tiny_synth, tmp_path) -> None:
    """DisNCL's split (split.score auto = cosine): the pair table's loss column is 1 - cos in the selection
    space, and the clean probability is the mixture fitted on it; split.score=loss fits Eq. 6's loss."""
    from conftest import tiny_overrides

    from disncl.config import load_config
    from disncl.serve.pair_scores import PairScores
    from disncl.train.loop import train

    run = train(load_config(None, tiny_overrides(tiny_synth, tmp_path / "r")), progress=False)
    scores = PairScores.read(run / "pair_scores.csv")
    np.testing.assert_allclose(scores.loss, 1 - scores.mii_sim, atol=2e-5)
    order = np.argsort(scores.loss)
    # The mixture's clean posterior falls with the distance (up to the file's 5-decimal rounding).
    assert scores.clean_prob[order[: len(order) // 10]].mean() >= scores.clean_prob[order[-len(order) // 10 :]].mean()
    run = train(load_config(None, tiny_overrides(tiny_synth, tmp_path / "l", **{"split.score": "loss"})),
                progress=False)
    loss = PairScores.read(run / "pair_scores.csv")
    assert np.abs(loss.loss - (1 - loss.mii_sim)).max() > 0.1


def test_the_warm_up_gate_reads_eq6s_loss_whatever_the_split_is_fitted_on() -> None:
    """With the split on the distance (Eq. 6e), the gate's Ashman's D is still that of Eq. 6's loss."""
    from disncl.config import load_config
    from disncl.data.noise import NoisyPairs
    from disncl.eval.encode import Embeddings
    from disncl.train.loop import gate_losses, score_embeddings
    from disncl.train.noise_split import bimodality
    from disncl.train.scoring import per_pair_loss

    rng = np.random.default_rng(0)

    def unit(n: int, d: int) -> np.ndarray:
        x = rng.normal(size=(n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    img, txt = unit(60, 8), unit(300, 8)
    truth = np.repeat(np.arange(60), 5)
    paired = np.where(rng.random(300) < 0.4, rng.integers(0, 60, 300), truth)
    # Clean captions lie near their image, so the two scores differ in shape.
    txt[paired == truth] = img[truth[paired == truth]] + 0.3 * txt[paired == truth]
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    emb = Embeddings(img_full=img, img_mii=img, txt_full=txt, txt_mii=txt)
    pairs = NoisyPairs(caption=np.arange(300), image=paired, is_clean=paired == truth)
    cfg = load_config(None, ["train.method=disncl", "train.batch_size=32"])
    assert cfg.split_score() == "cosine"
    table, _ = score_embeddings(emb, pairs, cfg)
    expected = bimodality(per_pair_loss(img, txt, pairs, cfg.split.tau, 32, cfg.train.seed), cfg.split)
    assert bimodality(gate_losses(emb, pairs, table, cfg), cfg.split) == expected
    assert bimodality(table["loss"], cfg.split) != expected
    loss_cfg = load_config(None, ["train.method=disncl", "train.batch_size=32", "split.score=loss"])
    loss_table, _ = score_embeddings(emb, pairs, loss_cfg)
    assert bimodality(gate_losses(emb, pairs, loss_table, loss_cfg), loss_cfg.split) == expected


def test_the_fallback_reads_how_far_the_pairs_are_from_being_fit() -> None:
    """Eq. 6h: the mean per-pair loss over log B is 1 for codes that cannot tell pairs apart, above 1 for
    unrelated random codes, and far below for pairs the model fits; the shut gate's fallback starts only
    above train.shut_gate_unfit."""
    from disncl.config import load_config
    from disncl.data.noise import NoisyPairs
    from disncl.train.loop import starts_fallback
    from disncl.train.noise_split import loss_vs_chance
    from disncl.train.scoring import per_pair_loss

    rng = np.random.default_rng(0)
    img = rng.normal(size=(512, 64)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    unrelated = rng.normal(size=(512, 64)).astype(np.float32)
    unrelated /= np.linalg.norm(unrelated, axis=1, keepdims=True)
    pairs = NoisyPairs(caption=np.arange(512), image=np.arange(512), is_clean=np.ones(512, dtype=bool))
    unfit = loss_vs_chance(per_pair_loss(img, unrelated, pairs, 0.07, 128, 0), 128)
    fit = loss_vs_chance(per_pair_loss(img, img, pairs, 0.07, 128, 0), 128)
    same = np.tile(img[:1], (512, 1))
    assert loss_vs_chance(per_pair_loss(same, same, pairs, 0.07, 128, 0), 128) == pytest.approx(1.0, abs=1e-5)
    assert unfit > 1.0 and fit < 0.05
    with pytest.raises(ValueError, match="at least 2"):
        loss_vs_chance(np.ones(3), 1)
    gated = ["train.warmup=gated", "train.shut_gate=complementary"]
    alone = load_config(None, [*gated, "train.shut_gate_unfit=0"])
    assert starts_fallback(alone, fit)  # Eq. 6g alone: wherever the gate stays shut
    defaults = load_config(None, [])  # the fallback only where the pairs are not fit (Eq. 6h at 0.5)
    assert starts_fallback(defaults, unfit) and not starts_fallback(defaults, fit)
    assert not starts_fallback(load_config(None, ["train.shut_gate=no_split"]), unfit)


@pytest.mark.parametrize(("method", "warmup_epochs"), [("ncr", 0), ("disncl", 0), ("disncl", 1)])
def test_oracle_split_trains_on_the_ground_truth(tiny_synth, tmp_path, method, warmup_epochs) -> None:
    """split.oracle (the bench's perfect-detector reference): after train.warmup_epochs (0: from the first epoch)
    w is the ground truth, whatever the gated warm-up's gate would have said; without injected noise it refuses
    to start."""
    import json

    from conftest import tiny_overrides

    from disncl.config import load_config
    from disncl.serve.pair_scores import PairScores
    from disncl.train.loop import split_active, train

    overrides = tiny_overrides(tiny_synth, tmp_path / method, **{"split.oracle": "true", "train.method": method,
                                                                  "train.warmup": "gated",
                                                                  "train.warmup_epochs": warmup_epochs})
    cfg = load_config(None, overrides)
    assert split_active(cfg, 0) == (warmup_epochs == 0)
    assert not split_active(load_config(None, tiny_overrides(tiny_synth, tmp_path)), 0)
    run = train(cfg, progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["split_used"] for r in log] == [warmup_epochs == 0, True]
    assert {r["detection_gmm"]["auroc"] for r in log} == {1.0}
    scores = PairScores.read(run / "pair_scores.csv")
    assert scores.truth_known.all() and 0 < scores.is_clean.mean() < 1
    np.testing.assert_array_equal(scores.clean_prob, scores.is_clean.astype(np.float32))
    clean = tiny_overrides(tiny_synth, tmp_path / "clean", **{"split.oracle": "true", "data.noise_rate": 0})
    with pytest.raises(ValueError, match="split.oracle"):
        train(load_config(None, clean), progress=False)


def test_a_monotone_posterior_never_rises_with_the_loss_where_the_wide_clean_component_takes_both_tails() -> None:
    rng = np.random.default_rng(0)
    # The clean component is the wider one, so the plain posterior gives it the largest losses too.
    losses = np.concatenate([rng.normal(0.4, 0.2, 1000), rng.normal(0.6, 0.02, 4000)])
    cfg = SplitConfig(max_iter=200, tol=1e-5)
    order = np.argsort(losses)
    plain = clean_probability(losses, cfg)[order]
    assert plain[-1] > 0.5 > plain[len(plain) // 2]
    mono = clean_probability(losses, replace(cfg, monotone=True))[order]
    assert np.all(np.diff(mono) <= 1e-12)
    assert mono[-1] < 0.5
    # Where the plain posterior already falls with the loss, the fit keeps it.
    assert np.abs(mono[:100] - plain[:100]).max() < 1e-6
