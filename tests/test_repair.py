"""Eq. 6k: flagged pairs re-paired with the flagged image they match best, mutually and as closely as trusted pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from disncl.config import load_config
from disncl.train.loop import train
from disncl.train.repair import NOT_REPAIRED, repair_images, train_pairing


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _world(n: int = 8, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n images, two captions each, close to their own image's embedding; the pairs' images are a derangement
    of the first half (those pairs are wrong), the second half keeps its own."""
    rng = np.random.default_rng(seed)
    img = _unit(rng.normal(size=(n, d)))
    txt = _unit(np.repeat(img, 2, axis=0) + 0.05 * rng.normal(size=(2 * n, d)))
    half = n // 2
    perm = np.arange(n)
    perm[:half] = np.roll(perm[:half], 1)
    pair_image = np.repeat(perm, 2)
    return img, txt, pair_image


def test_flagged_captions_go_back_to_their_own_images() -> None:
    img, txt, pair_image = _world()
    caption = np.arange(len(txt))
    wrong = pair_image != caption // 2
    # The flagged captions describe their own images at least as well as the trusted ones do theirs.
    txt = txt.copy()
    txt[wrong] = img[caption[wrong] // 2]
    prob = np.where(wrong, 0.05, 0.99)
    out = repair_images(img, txt, pair_image, caption, prob, threshold=0.9, quantile=0.5)
    assert (out[~wrong] == NOT_REPAIRED).all()
    assert (out[wrong] == caption[wrong] // 2).all()


def test_a_match_farther_than_the_trusted_pairs_is_not_taken() -> None:
    img, txt, pair_image = _world()
    caption = np.arange(len(txt))
    wrong = pair_image != caption // 2
    # Every flagged caption drifts away from its image: its best match is now far beyond any trusted pair's distance.
    txt = txt.copy()
    txt[wrong] = _unit(txt[wrong] + 3.0 * _unit(np.random.default_rng(1).normal(size=(int(wrong.sum()), 16))))
    prob = np.where(wrong, 0.05, 0.99)
    out = repair_images(img, txt, pair_image, caption, prob, threshold=0.9, quantile=1.0)
    assert (out == NOT_REPAIRED).all()


def test_only_a_mutual_match_is_taken() -> None:
    # Three flagged images, five flagged captions (K = ⌈5 / 3⌉ = 2). Captions 0–3 are all closest to image 0,
    # which vouches for its two closest only; caption 4 goes to image 1; the trusted pair 5 sets a loose bar.
    img = _unit(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    txt = _unit(np.array([[1.0, 0.05], [1.0, 0.1], [1.0, 0.3], [1.0, 0.4], [0.1, 1.0], [1.0, 1.0]]))
    pair_image = np.array([1, 1, 2, 2, 0, 0])
    caption = np.arange(6)
    prob = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    out = repair_images(img, txt, pair_image, caption, prob, threshold=0.9, quantile=1.0)
    assert out.tolist() == [0, 0, NOT_REPAIRED, NOT_REPAIRED, 1, NOT_REPAIRED]


def test_nothing_is_repaired_without_a_trusted_or_a_flagged_pair() -> None:
    img, txt, pair_image = _world()
    caption = np.arange(len(txt))
    for prob in (np.zeros(len(txt)), np.ones(len(txt))):
        assert (repair_images(img, txt, pair_image, caption, prob, 0.9, 0.5) == NOT_REPAIRED).all()


def test_training_pairs_take_the_new_image_as_trusted_pairs() -> None:
    image, prob = np.array([3, 1, 2]), np.array([0.1, 0.2, 0.95], dtype=np.float32)
    new_image, weights = train_pairing(image, prob, np.array([0, NOT_REPAIRED, NOT_REPAIRED]))
    assert new_image.tolist() == [0, 1, 2]
    assert weights.tolist() == pytest.approx([1.0, 0.2, 0.95])
    assert train_pairing(image, prob, None) == (image, prob)


def test_repair_quantile_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="repair_quantile"):
        load_config(None, ["split.repair_quantile=0"])


def test_a_run_with_repair_logs_it_and_resumes_to_the_same_pairs(tiny_synth: Path, tmp_path: Path) -> None:
    extra = {"split.repair": "true", "split.repair_quantile": 1.0, "train.epochs": 3}
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(load_config(None, tiny_overrides(tiny_synth, straight, **extra)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, split, **extra)), progress=False, stop_after=2)
    train(load_config(None, tiny_overrides(tiny_synth, split, **extra)), resume=True, progress=False)
    logs = [[json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] for run in (straight, split)]
    a = logs[0]
    # Warm-up epoch 1: the split (and the re-pairing for the epoch after) is decided at its end.
    assert all("repaired" in r for r in a)
    assert a[0]["repaired"] > 0
    assert all(0.0 <= r["repaired_correct"] <= r["repaired_described"] <= 1.0 for r in a if r["repaired"])
    for ra, rb in zip(a, logs[1], strict=True):
        assert ra["val"] == rb["val"]
        assert ra["repaired"] == rb["repaired"]
