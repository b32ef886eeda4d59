"""Tests for the synthetic benchmark generator (disncl.data.synth)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from disncl.data.synth import (
    CAPTION_FACTOR_NAMES,
    IMAGE_FACTOR_NAMES,
    SPLITS,
    SynthConfig,
    generate,
    load_config,
    load_factors,
    main,
    parse_caption,
)

SMALL = SynthConfig(n_train=40, n_val=10, n_test=10, seed=3)


def _rows(root: Path, split: str) -> list[list[str]]:
    with open(root / f"{split}.csv", encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def _vocab(root: Path) -> dict:
    return json.loads((root / "synth.json").read_text(encoding="utf-8"))["vocab"]


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _filler_is_function_of_background(root: Path, split: str) -> bool:
    f = load_factors(root, split)
    background = f.image_factors["background"][f.caption_factors["image"]]
    fillers_per_bg: dict[int, set[int]] = {}
    for bg, filler in zip(background.tolist(), f.caption_factors["filler"].tolist(), strict=True):
        fillers_per_bg.setdefault(bg, set()).add(filler)
    return all(len(s) == 1 for s in fillers_per_bg.values())


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth"), SMALL, progress=False)


def test_same_seed_gives_identical_bytes(small: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", SMALL, progress=False)
    assert _all_files(again) == _all_files(small)


def test_different_seed_gives_different_data(small: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "other", SynthConfig(n_train=40, n_val=10, n_test=10, seed=4), progress=False)
    assert (other / "train.csv").read_bytes() != (small / "train.csv").read_bytes()
    first = "images/train/000000.png"
    assert (other / first).read_bytes() != (small / first).read_bytes()


def test_layout_and_csv_grouping(small: Path) -> None:
    assert load_config(small) == SMALL
    for split, n_images in SMALL.split_sizes().items():
        rows = _rows(small, split)
        assert rows[0] == ["image", "caption"]
        body = rows[1:]
        assert len(body) == n_images * SMALL.captions_per_image
        expected = [f"images/{split}/{i:06d}.png" for i in range(n_images) for _ in range(5)]
        assert [r[0] for r in body] == expected
        for i in range(n_images):
            with Image.open(small / expected[i * 5]) as img:
                assert img.size == (64, 64) and img.mode == "RGB"
        assert (small / f"factors_{split}.npz").is_file()


def test_factor_arrays_have_consistent_lengths(small: Path) -> None:
    f = load_factors(small, "train")
    n_img, n_cap = SMALL.n_train, SMALL.n_train * SMALL.captions_per_image
    assert set(f.image_factors) == set(IMAGE_FACTOR_NAMES)
    assert set(f.caption_factors) == set(CAPTION_FACTOR_NAMES)
    assert all(len(v) == n_img for v in f.image_factors.values())
    assert all(len(v) == n_cap for v in f.caption_factors.values())
    assert len(f.image_shared_key) == n_img and len(f.caption_shared_key) == n_cap
    one = f.image_factors["n_objects"] == 1
    assert np.all(f.image_factors["shape1"][one] == -1) and np.all(f.image_factors["relation"][one] == -1)
    assert np.all(f.image_factors["relation"][~one] >= 0)
    owner = f.caption_factors["image"]
    assert [f.image_shared_key[i] for i in owner] == f.caption_shared_key


def test_captions_describe_exactly_the_shared_factors(small: Path) -> None:
    vocab = _vocab(small)
    for split in SPLITS:
        f = load_factors(small, split)
        captions = [r[1] for r in _rows(small, split)[1:]]
        for c, caption in enumerate(captions):
            assert caption == caption.lower() and len(caption.split()) <= 24
            # The parser binds each colour to the shape that follows it, so this checks binding too.
            assert parse_caption(caption) == f.caption_shared_key[c]
            img = f.caption_factors["image"][c]
            for k in range(f.image_factors["n_objects"][img]):
                assert vocab["colours"][f.image_factors[f"colour{k}"][img]] in caption.split()
                synonyms = vocab["shape_synonyms"][f.image_factors[f"shape{k}"][img]]
                assert any(s in caption.split() for s in synonyms)


def test_image_exclusive_words_never_appear_in_captions(small: Path) -> None:
    vocab = _vocab(small)
    image_only = set(vocab["backgrounds"]) | set(vocab["textures"])
    image_only |= {part for name in vocab["backgrounds"] for part in name.split("-")}
    assert not image_only & set(vocab["colours"])
    for split in SPLITS:
        for _, caption in _rows(small, split)[1:]:
            assert not image_only & set(caption.split()), caption


def test_shared_keys_are_canonical(small: Path) -> None:
    keys = load_factors(small, "train").image_shared_key
    relations = {k.split(" | ")[1] for k in keys if " | " in k}
    assert relations <= {"left-of", "above"}


def test_descriptions_repeat_across_images(tmp_path: Path) -> None:
    root = generate(tmp_path, SynthConfig(n_train=0, n_val=0, n_test=200, seed=1), progress=False)
    keys = load_factors(root, "test").image_shared_key
    assert len(set(keys)) < len(keys)


def test_confound_ties_train_fillers_to_background_only(small: Path, tmp_path: Path) -> None:
    tied_cfg = SynthConfig(n_train=40, n_val=10, n_test=40, confound=1.0, seed=3)
    tied = generate(tmp_path, tied_cfg, progress=False)
    assert _filler_is_function_of_background(tied, "train")
    assert not _filler_is_function_of_background(tied, "test")
    assert not _filler_is_function_of_background(small, "train")
    # The knob touches captions only: pixels are identical with and without the confound.
    for i in range(SMALL.n_train):
        name = f"images/train/{i:06d}.png"
        assert (tied / name).read_bytes() == (small / name).read_bytes()


def test_empty_splits_and_other_sizes(tmp_path: Path) -> None:
    cfg = SynthConfig(n_train=5, n_val=0, n_test=0, captions_per_image=2, image_size=32)
    root = generate(tmp_path, cfg, progress=False)
    assert len(_rows(root, "val")) == 1
    assert load_factors(root, "test").image_shared_key == []
    assert len(_rows(root, "train")) == 1 + 10
    with Image.open(root / "images/train/000004.png") as img:
        assert img.size == (32, 32)


def test_regenerating_smaller_removes_stale_images(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(n_train=6, n_val=0, n_test=0), progress=False)
    generate(tmp_path, SynthConfig(n_train=3, n_val=0, n_test=0), progress=False)
    assert sorted(p.name for p in (tmp_path / "images/train").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]


@pytest.mark.parametrize("bad", [{"n_train": -1}, {"confound": 1.5}, {"captions_per_image": 0}])
def test_invalid_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def test_cli_writes_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--n-train", "4", "--n-val", "2", "--n-test", "2", "--no-progress"]
    assert main(argv + ["--confound", "0.5", "--seed", "7"]) == 0
    assert load_config(tmp_path) == SynthConfig(n_train=4, n_val=2, n_test=2, confound=0.5, seed=7)
    assert "wrote 8 images" in capsys.readouterr().out


def test_training_images_can_have_fewer_captions_than_eval_images(tmp_path: Path):
    cfg = SynthConfig(n_train=6, n_val=2, n_test=3, image_size=32, train_captions_per_image=2, seed=4)
    generate(tmp_path, cfg, progress=False)
    counts = {split: len(_rows(tmp_path, split)) - 1 for split in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 10, "test": 15}
    assert load_config(tmp_path) == cfg
    # A training image's captions are the first ones it gets with five, so images and factors do not move.
    five = tmp_path / "five"
    generate(five, SynthConfig(n_train=6, n_val=2, n_test=3, image_size=32, seed=4), progress=False)
    rows2 = list(csv.reader((tmp_path / "train.csv").open()))[1:]
    rows5 = list(csv.reader((five / "train.csv").open()))[1:]
    assert rows2 == [r for k, r in enumerate(rows5) if k % 5 < 2]
    assert load_factors(tmp_path, "train").caption_factors["image"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    with pytest.raises(ValueError, match="train_captions_per_image"):
        SynthConfig(train_captions_per_image=-1)
