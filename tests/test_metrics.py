"""Tests for disncl.eval.retrieval (Eq. 11) and disncl.eval.detection (Eq. 12 in docs/method.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from disncl.eval.detection import detection_metrics
from disncl.eval.retrieval import recall_at_k, retrieval_report


def _brute_recall(
    sim: np.ndarray, img_labels: np.ndarray, cap_labels: np.ndarray, k: int
) -> tuple[float, float]:
    """Double loop over queries and their top-K (stable sort: ties broken by ascending index)."""
    hits_i2t = 0
    for i in range(sim.shape[0]):
        order = np.argsort(-sim[i], kind="stable")[:k]
        hits_i2t += any(cap_labels[c] == img_labels[i] for c in order)
    hits_t2i = 0
    for c in range(sim.shape[1]):
        order = np.argsort(-sim[:, c], kind="stable")[:k]
        hits_t2i += any(img_labels[i] == cap_labels[c] for i in order)
    return 100.0 * hits_i2t / sim.shape[0], 100.0 * hits_t2i / sim.shape[1]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_recall_matches_brute_force(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    n_img = 23
    cap2img = np.repeat(np.arange(n_img), 5)
    rng.shuffle(cap2img)
    sim = rng.standard_normal((n_img, cap2img.size)).astype(np.float32)
    sim[cap2img, np.arange(cap2img.size)] += 1.5  # make recall non-trivial
    if ties:
        sim = np.round(sim, 0)
    got = recall_at_k(sim, np.arange(n_img), cap2img, ks=(1, 2, 5, 10), chunk=4)
    for k in (1, 2, 5, 10):
        i2t, t2i = _brute_recall(sim, np.arange(n_img), cap2img, k)
        assert got[f"i2t_r{k}"] == pytest.approx(i2t)
        assert got[f"t2i_r{k}"] == pytest.approx(t2i)
    assert got["rsum"] == pytest.approx(sum(v for key, v in got.items() if key != "rsum"))


def test_chunk_size_does_not_matter() -> None:
    rng = np.random.default_rng(7)
    cap2img = np.repeat(np.arange(30), 5)
    sim = rng.random((30, 150))
    ref = recall_at_k(sim, np.arange(30), cap2img, chunk=1024)
    for chunk in (1, 7, 30, 149):
        assert recall_at_k(sim, np.arange(30), cap2img, chunk=chunk) == ref


def test_tie_broken_by_index() -> None:
    sim = np.zeros((2, 2))
    # every score tied: image 0's first caption (index 0) is correct, image 1's (index 1) is ranked second
    got = recall_at_k(sim, np.arange(2), np.arange(2), ks=(1, 2))
    assert got["i2t_r1"] == 50.0 and got["i2t_r2"] == 100.0
    assert got["t2i_r1"] == 50.0 and got["t2i_r2"] == 100.0


def test_perfect_similarity_gives_100() -> None:
    cap2img = np.repeat(np.arange(12), 5)
    sim = (cap2img[None, :] == np.arange(12)[:, None]).astype(np.float64)
    got = retrieval_report(sim, cap2img)
    assert all(v == 100.0 for k, v in got.items() if k != "rsum")
    assert got["rsum"] == 600.0


def test_missing_label_never_hits() -> None:
    sim = np.eye(3)
    got = recall_at_k(sim, np.array([0, 1, 9]), np.array([0, 1, 2]), ks=(1, 3))
    assert got["i2t_r3"] == pytest.approx(200.0 / 3)
    assert got["t2i_r3"] == pytest.approx(200.0 / 3)


@pytest.mark.parametrize("seed", range(3))
def test_semantic_recall_at_least_standard(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_img = 40
    cap2img = np.repeat(np.arange(n_img), 5)
    img_keys = [f"factor-{v}" for v in rng.integers(0, 6, n_img)]
    cap_keys = [img_keys[i] for i in cap2img]
    sim = rng.standard_normal((n_img, cap2img.size))
    got = retrieval_report(sim, cap2img, img_keys, cap_keys)
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"):
        assert got[f"semantic_{key}"] >= got[key]
    assert got["semantic_rsum"] > got["rsum"]
    with pytest.raises(ValueError):
        retrieval_report(sim, cap2img, img_keys, None)


def test_recall_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        recall_at_k(np.zeros((2, 3)), np.arange(2), np.arange(2))
    with pytest.raises(ValueError):
        recall_at_k(np.full((2, 2), np.nan), np.arange(2), np.arange(2))


# ---------------------------------------------------------------- detection (Eq. 12)


def test_detection_perfect_separation() -> None:
    is_clean = np.array([1, 1, 1, 0, 0], dtype=bool)
    got = detection_metrics(np.array([0.9, 0.8, 0.99, 0.1, 0.3]), is_clean)
    assert got["auroc"] == 1.0 and got["auroc_defined"] == 1.0
    assert got["noisy_precision"] == 1.0 and got["noisy_recall"] == 1.0 and got["noisy_f1"] == 1.0
    assert got["clean_precision"] == 1.0 and got["clean_recall"] == 1.0
    assert got["flagged_fraction"] == pytest.approx(0.4) and got["true_noise_rate"] == pytest.approx(0.4)


def test_detection_random_is_chance() -> None:
    rng = np.random.default_rng(0)
    got = detection_metrics(rng.random(20000), rng.random(20000) > 0.3)
    assert abs(got["auroc"] - 0.5) < 0.03


def test_detection_hand_count() -> None:
    w = np.array([0.1, 0.5, 0.7, 0.2, 0.9, 0.6, 0.4, 0.95])
    is_clean = np.array([0, 1, 0, 1, 1, 0, 0, 1], dtype=bool)
    # flagged (w <= 0.5): idx 0, 1, 3, 6 -> TP = {0, 6}, FP = {1, 3}; FN = {2, 5}; TN = {4, 7}
    got = detection_metrics(w, is_clean)
    assert got["noisy_precision"] == pytest.approx(0.5)
    assert got["noisy_recall"] == pytest.approx(0.5)
    assert got["noisy_f1"] == pytest.approx(0.5)
    assert got["clean_precision"] == pytest.approx(0.5)
    assert got["clean_recall"] == pytest.approx(0.5)
    assert got["flagged_fraction"] == pytest.approx(0.5)
    # AUROC by pair counting: noisy scores 1-w = {.9, .3, .4, .6}, clean = {.5, .8, .1, .05}
    noisy_s, clean_s = [0.9, 0.3, 0.4, 0.6], [0.5, 0.8, 0.1, 0.05]
    pairs = sum((n > c) + 0.5 * (n == c) for n in noisy_s for c in clean_s)
    assert got["auroc"] == pytest.approx(pairs / 16)
    strict = detection_metrics(w, is_clean, threshold=0.4999)
    assert strict["flagged_fraction"] == pytest.approx(3 / 8)


def test_detection_single_class() -> None:
    got = detection_metrics(np.array([0.9, 0.2, 0.7]), np.ones(3, dtype=bool))
    assert math.isnan(got["auroc"]) and got["auroc_defined"] == 0.0
    assert got["noisy_precision"] == 0.0 and math.isnan(got["noisy_recall"])
    assert got["true_noise_rate"] == 0.0
    none_flagged = detection_metrics(np.ones(4), np.array([1, 0, 1, 0]))
    assert math.isnan(none_flagged["noisy_precision"]) and none_flagged["noisy_recall"] == 0.0
    assert none_flagged["noisy_f1"] == 0.0
    with pytest.raises(ValueError):
        detection_metrics(np.ones(3), np.ones(2))


def test_exact_match_ceiling_ranks_identical_descriptions_at_random():
    from disncl.eval.retrieval import exact_match_ceiling

    # Distinct descriptions: a perfect matcher is perfect.
    assert exact_match_ceiling(["a", "b", "c"], np.repeat(np.arange(3), 5))["rsum"] == pytest.approx(600.0)
    # Two images share a description: t2i R@1 is a coin flip; i2t misses only when all 5 of the other image's
    # captions come first: C(5, 5) / C(10, 5) = 1 / 252.
    two = exact_match_ceiling(["a", "a"], np.repeat(np.arange(2), 5))
    assert two["t2i_r1"] == pytest.approx(50.0) and two["t2i_r5"] == pytest.approx(100.0)
    assert two["i2t_r1"] == pytest.approx(50.0)
    assert two["i2t_r5"] == pytest.approx(100.0 * (1 - 1 / 252))
    # Agrees with simulation: random order inside each key group.
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, 12)
    cap2img = np.repeat(np.arange(12), 3)
    hits = []
    for _ in range(2000):
        noise = rng.random((12, 36)) * 1e-3
        sim = (keys[:, None] == keys[cap2img][None, :]).astype(float) + noise
        hits.append(recall_at_k(sim, np.arange(12), cap2img)["t2i_r1"])
    assert exact_match_ceiling(list(keys), cap2img)["t2i_r1"] == pytest.approx(np.mean(hits), abs=1.0)


def test_detector_aurocs_rank_each_score_against_the_noisy_label() -> None:
    from disncl.eval.detection import detector_aurocs

    is_clean = np.array([1, 1, 1, 0, 0], dtype=bool)
    perfect = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    out = detector_aurocs(is_clean, {"perfect": perfect, "reversed": -perfect, "tied": np.zeros(5),
                                     "one_swap": np.array([0.9, 0.8, 0.1, 0.2, 0.05])})
    assert out["perfect"] == 1.0 and out["reversed"] == 0.0 and out["tied"] == 0.5
    assert out["one_swap"] == pytest.approx(5 / 6)  # one of the six clean-noisy pairs is misordered
    assert np.isnan(detector_aurocs(np.ones(3, bool), {"x": np.arange(3.0)})["x"])
