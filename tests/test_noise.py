"""Noisy-correspondence injection in both conventions, and saving/loading noise indices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from disncl.data.noise import (
    NoiseIndex,
    NoiseIndexError,
    inject,
    make_noisy_pairs,
    pair_images,
    per_caption_noise,
    per_image_noise,
)
from disncl.data.pairs import CaptionedImages

CAPS_PER_IMAGE = 5


def _dataset(n_images: int = 200) -> CaptionedImages:
    """Five captions per image, in image order, as in Flickr30K/COCO."""
    cap2img = np.repeat(np.arange(n_images, dtype=np.int64), CAPS_PER_IMAGE)
    return CaptionedImages(
        root=Path("."),
        image_paths=[f"{i}.jpg" for i in range(n_images)],
        captions=[f"caption {c}" for c in range(len(cap2img))],
        cap2img=cap2img,
    )


def test_per_caption_noise_permutes_exactly_the_chosen_count() -> None:
    cap2img = np.arange(1000, dtype=np.int64)
    noisy = per_caption_noise(cap2img, 0.3, seed=1)
    assert noisy.dtype == np.int64
    assert sorted(noisy.tolist()) == cap2img.tolist()
    moved = int((noisy != cap2img).sum())
    # 300 captions are shuffled among themselves; a few may land back on their own image.
    assert 290 <= moved <= 300


def test_per_caption_noise_only_shuffles_within_the_chosen_set() -> None:
    cap2img = _dataset().cap2img
    noisy = per_caption_noise(cap2img, 0.2, seed=3)
    assert np.array_equal(np.sort(noisy), np.sort(cap2img))
    assert (noisy != cap2img).sum() <= round(0.2 * len(cap2img))


def test_per_caption_noise_is_deterministic_by_seed() -> None:
    cap2img = _dataset().cap2img
    assert np.array_equal(per_caption_noise(cap2img, 0.4, 7), per_caption_noise(cap2img, 0.4, 7))
    assert not np.array_equal(per_caption_noise(cap2img, 0.4, 7), per_caption_noise(cap2img, 0.4, 8))


def test_per_caption_is_clean_is_computed() -> None:
    ds = _dataset()
    pairs = make_noisy_pairs(ds, inject(ds, "caption", 0.5, seed=0))
    assert np.array_equal(pairs.caption, np.arange(ds.n_captions))
    assert np.array_equal(pairs.is_clean, pairs.image == ds.cap2img)
    # Five captions per image: a shuffled caption often lands on another caption's same image.
    assert 0.3 < pairs.noise_rate <= 0.5


@pytest.mark.parametrize(("n", "rate"), [(200, 0.2), (200, 0.5), (7, 0.6), (10, 1.0)])
def test_per_image_noise_moves_exactly_round_rate_n(n: int, rate: float) -> None:
    perm = per_image_noise(n, rate, seed=0)
    assert perm.dtype == np.int64
    assert sorted(perm.tolist()) == list(range(n))
    assert int((perm != np.arange(n)).sum()) == round(rate * n)


def test_per_image_noise_moves_all_captions_of_an_image_together() -> None:
    ds = _dataset()
    noise = inject(ds, "image", 0.3, seed=5)
    pairs = make_noisy_pairs(ds, noise)
    by_image = pairs.image.reshape(ds.n_images, CAPS_PER_IMAGE)
    clean_by_image = pairs.is_clean.reshape(ds.n_images, CAPS_PER_IMAGE)
    assert (by_image == by_image[:, :1]).all()
    assert np.array_equal(by_image[:, 0], noise.index)
    assert (clean_by_image == clean_by_image[:, :1]).all()
    assert int((~clean_by_image[:, 0]).sum()) == 60
    assert pairs.noise_rate == pytest.approx(0.3)


def test_per_image_noise_rejects_a_single_noisy_image() -> None:
    with pytest.raises(ValueError, match="selects a single image"):
        per_image_noise(10, 0.1, seed=0)


@pytest.mark.parametrize("kind", ["caption", "image"])
def test_rate_zero_is_clean(kind: str) -> None:
    ds = _dataset(20)
    pairs = make_noisy_pairs(ds, inject(ds, kind, 0.0, seed=0))  # type: ignore[arg-type]
    assert pairs.is_clean.all()
    assert make_noisy_pairs(ds, None).is_clean.all()


def test_bad_rate_and_kind() -> None:
    ds = _dataset(20)
    with pytest.raises(ValueError, match=r"noise rate must be in \[0, 1\], got 1.5"):
        inject(ds, "caption", 1.5, seed=0)
    with pytest.raises(ValueError, match="noise kind must be 'caption' or 'image', got 'pair'"):
        inject(ds, "pair", 0.2, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["caption", "image"])
@pytest.mark.parametrize("with_sidecar", [True, False])
def test_save_load_round_trip(tmp_path: Path, kind: str, with_sidecar: bool) -> None:
    ds = _dataset()
    noise = inject(ds, kind, 0.4, seed=11)  # type: ignore[arg-type]
    path = noise.save(tmp_path / "noise.npy")
    assert path == tmp_path / "noise.npy"
    sidecar = tmp_path / "noise.json"
    assert json.loads(sidecar.read_text(encoding="utf-8"))["kind"] == kind
    if not with_sidecar:
        sidecar.unlink()
    loaded = NoiseIndex.load(path, ds.n_images, ds.n_captions)
    assert loaded.kind == kind
    assert loaded.index.dtype == np.int64
    assert np.array_equal(loaded.index, noise.index)
    assert (loaded.rate, loaded.seed) == ((0.4, 11) if with_sidecar else (None, None))
    before, after = make_noisy_pairs(ds, noise), make_noisy_pairs(ds, loaded)
    assert np.array_equal(before.image, after.image)
    assert np.array_equal(before.is_clean, after.is_clean)


def test_load_ambiguous_length_needs_kind(tmp_path: Path) -> None:
    path = tmp_path / "square.npy"
    np.save(path, np.arange(10)[::-1].copy())
    with pytest.raises(NoiseIndexError, match="pass kind='caption' or kind='image'"):
        NoiseIndex.load(path, n_images=10, n_captions=10)
    assert NoiseIndex.load(path, n_images=10, n_captions=10, kind="image").kind == "image"


def test_load_sidecar_kind_conflict(tmp_path: Path) -> None:
    ds = _dataset(10)
    path = inject(ds, "image", 0.5, seed=0).save(tmp_path / "noise.npy")
    with pytest.raises(
        NoiseIndexError, match="asked for kind 'caption' but its sidecar noise.json says 'image'"
    ):
        NoiseIndex.load(path, ds.n_images, ds.n_captions, kind="caption")


def test_load_wrong_length_names_file_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "short.npy"
    np.save(path, np.arange(7))
    with pytest.raises(NoiseIndexError) as info:
        NoiseIndex.load(path, n_images=10, n_captions=50)
    message = str(info.value)
    assert str(path) in message
    assert "found 7 entries" in message
    assert "expected 50 (one per caption) or 10 (one per image)" in message
    with pytest.raises(NoiseIndexError, match=r"one entry per caption \(50 captions\), found 7 entries"):
        NoiseIndex.load(path, n_images=10, n_captions=50, kind="caption")


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.arange(10, dtype=np.float64), "found dtype float64"),
        (np.ones(10, dtype=bool), "found dtype bool"),
        (np.arange(10).reshape(2, 5), r"expected a 1-D array, found shape \(2, 5\)"),
        (np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 8]), "must be a permutation"),
        (np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]), "must lie in 0..9, found values from 0 to 10"),
    ],
)
def test_load_rejects_bad_arrays(tmp_path: Path, array: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(NoiseIndexError, match=message) as info:
        NoiseIndex.load(path, n_images=10, n_captions=50, kind="image")
    assert str(path) in str(info.value)


def test_load_unreadable_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "junk.npy"
    path.write_bytes(b"not numpy")
    with pytest.raises(NoiseIndexError, match="junk.npy is not a readable .npy integer array"):
        NoiseIndex.load(path, n_images=10, n_captions=50)
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        NoiseIndex.load(tmp_path / "absent.npy", n_images=10, n_captions=50)


def test_pair_images_validates_against_the_dataset() -> None:
    ds = _dataset(4)
    with pytest.raises(NoiseIndexError, match=r"one entry per caption \(20 captions\), found 4 entries"):
        pair_images(ds.cap2img, np.arange(4), "caption")
    with pytest.raises(NoiseIndexError, match=r"one entry per image \(4 images\), found 5 entries"):
        pair_images(ds.cap2img, np.arange(5), "image", n_images=4)
    with pytest.raises(NoiseIndexError, match="must be a permutation"):
        pair_images(ds.cap2img, np.array([0, 0, 1, 2]), "image")
    swapped = pair_images(ds.cap2img, np.array([1, 0, 2, 3]), "image")
    assert swapped[:CAPS_PER_IMAGE].tolist() == [1] * CAPS_PER_IMAGE


def test_save_refuses_json_name(tmp_path: Path) -> None:
    noise = inject(_dataset(4), "image", 0.5, seed=0)
    with pytest.raises(ValueError, match="name the noise index file .npy"):
        noise.save(tmp_path / "noise.json")
