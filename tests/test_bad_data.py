"""Bad training data: every case is skipped with a counted report (or refused with strict), never a deep traceback.

Each test writes real files into ``tmp_path``: truncated and corrupt images, huge PNG headers,
unusual colour modes, Latin-1 bytes in a CSV, empty captions, repeated rows and image entries,
noise indices that do not fit.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from disncl.cli import main
from disncl.config import DataConfig
from disncl.data.dataset import load_split, resolve_noise, semantic_keys
from disncl.data.formats import CaptionFileError, read_captions_file, read_karpathy
from disncl.data.images import MAX_PIXELS, ImageDecodeError, load_image
from disncl.data.noise import NoiseIndex, NoiseIndexError, make_noisy_pairs
from disncl.data.pairs import CaptionedImages
from disncl.data.validate import DataError, DataReport, validate_split

RED = (255, 0, 0)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _good_png() -> bytes:
    return _png_bytes(Image.new("RGB", (12, 10), RED))


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _bilevel_png(width: int, height: int, pixel_rows: bool = True) -> bytes:
    """A 1-bit greyscale PNG of any size, written by hand: all-black rows compress to a few KB.

    Without ``pixel_rows`` the image data is a single junk byte, so the file can only be refused
    from its header: decoding it would fail as "undecodable" instead.
    """
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    if pixel_rows:
        comp = zlib.compressobj(6)
        row = b"\x00" * (1 + (width + 7) // 8)
        data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    else:
        data = b"\x00"
    return b"\x89PNG\r\n\x1a\n" + header + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _dataset(tmp_path: Path, rows: list[tuple[str, str]], images: dict[str, bytes]) -> Path:
    """``tmp_path/data`` with ``train.csv`` holding ``rows`` and the given image files."""
    root = tmp_path / "data"
    root.mkdir()
    for name, data in images.items():
        (root / name).write_bytes(data)
    lines = ["image,caption"] + [f"{image},{caption}" for image, caption in rows]
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _load(root: Path, capsys: pytest.CaptureFixture[str], strict: bool = False) -> tuple[list[str], str]:
    """Image paths kept by the trainer's loader, and the report it printed."""
    ds = load_split(DataConfig(root=str(root), strict=strict), "train")
    return ds.image_paths, capsys.readouterr().err


def _report(root: Path) -> DataReport:
    return validate_split(*read_captions_file(root / "train.csv"), split="train")[1]


# --- images ------------------------------------------------------------------------------------


def test_missing_image_is_skipped_with_its_captions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("gone.png", "lost one"), ("gone.png", "lost two")],
                    {"a.png": _good_png()})
    kept, err = _load(root, capsys)
    assert kept == ["a.png"]
    assert "kept 1 of 2 images and 1 of 3 captions" in err
    assert "image file missing" in err and "gone.png: skipped with its 2 captions: file not found" in err
    assert _report(root).counts == {"missing_image": 1}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_skipped(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format=fmt)
    cut = buf.getvalue()[: len(buf.getvalue()) // 2]
    root = _dataset(tmp_path, [("a.png", "red"), ("cut.img", "half a file")], {"a.png": _good_png(), "cut.img": cut})
    report = _report(root)
    assert report.counts == {"undecodable_image": 1}
    assert "cut.img" in report.examples["undecodable_image"][0]
    assert "truncated" in report.examples["undecodable_image"][0]


def test_corrupt_image_is_skipped(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("junk.jpg", "not an image")],
                    {"a.png": _good_png(), "junk.jpg": b"<html>404 not found</html>"})
    report = _report(root)
    assert report.counts == {"undecodable_image": 1}
    assert "UnidentifiedImageError" in report.examples["undecodable_image"][0]


def test_huge_png_is_refused_without_decoding(tmp_path: Path) -> None:
    # 20000 x 20000 pixels in 50 KB: past PIL's decompression-bomb limit, which must not surface raw.
    huge = _bilevel_png(20_000, 20_000)
    assert len(huge) < 200_000
    root = _dataset(tmp_path, [("a.png", "red"), ("huge.png", "a bomb")], {"a.png": _good_png(), "huge.png": huge})
    report = _report(root)
    assert report.counts == {"image_too_large": 1}
    assert f"400,000,000 pixels, over the limit of {MAX_PIXELS:,} pixels" in report.examples["image_too_large"][0]
    assert "Downscale it" in report.examples["image_too_large"][0]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    # Only the header is valid: decoding would fail as "undecodable", so "too large" proves no decoding.
    (tmp_path / "big.png").write_bytes(_bilevel_png(9_500, 9_500, pixel_rows=False))
    with pytest.raises(ImageDecodeError, match="9500×9500 = 90,250,000 pixels, over the limit") as info:
        load_image(tmp_path / "big.png", 8)
    assert info.value.kind == "too_large"


@pytest.mark.parametrize(
    ("mode_image", "expected"),
    [
        (Image.new("CMYK", (16, 16), (0, 255, 255, 0)), RED),
        (Image.fromarray(np.full((16, 16), 65535, np.uint16)), (255, 255, 255)),  # 16-bit greyscale
        (Image.new("LA", (16, 16), (0, 0)), (255, 255, 255)),  # fully transparent: white
        (Image.new("RGBA", (16, 16), (255, 0, 0, 255)), RED),
        (Image.new("L", (16, 16), 128), (128, 128, 128)),
        (Image.new("RGB", (16, 16), RED).convert("P"), RED),
        (Image.new("1", (16, 16), 1), (255, 255, 255)),
    ],
    ids=["cmyk", "i16", "la", "rgba", "l", "p", "1"],
)
def test_unusual_modes_are_kept_and_read_as_rgb(
    tmp_path: Path, mode_image: Image.Image, expected: tuple[int, int, int]
) -> None:
    name = "img.jpg" if mode_image.mode == "CMYK" else "img.png"
    buf = io.BytesIO()
    mode_image.save(buf, format="JPEG" if name.endswith(".jpg") else "PNG", quality=95)
    root = _dataset(tmp_path, [(name, "an image")], {name: buf.getvalue()})
    clean, report = validate_split(*read_captions_file(root / "train.csv"))
    assert report.ok and clean.image_paths == [name]
    pixels = load_image(root / name, 8)
    assert pixels.shape == (8, 8, 3)
    assert np.abs(pixels.astype(int) - expected).max() <= 3


# --- captions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\t \t"])
def test_empty_or_whitespace_caption_is_skipped(tmp_path: Path, blank: str) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("a.png", blank)], {"a.png": _good_png()})
    clean, report = validate_split(*read_captions_file(root / "train.csv"))
    assert clean.captions == ["red"]
    assert report.counts == {"empty_caption": 1}
    expected = f"{root / 'train.csv'}, line 3: empty 'caption'; fill it in or delete the row"
    assert report.examples["empty_caption"] == [expected]


def test_non_utf8_line_is_skipped_alone(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("a.png", "café crème")], {"a.png": _good_png()})
    with open(root / "train.csv", "ab") as fh:
        fh.write("a.png,caf\xe9 au lait\n".encode("latin-1"))
        fh.write("a.png,naïve\n".encode())
    clean, report = validate_split(*read_captions_file(root / "train.csv"))
    assert clean.captions == ["café crème", "naïve"]
    assert report.counts == {"not_utf8": 1}
    assert "line 3: field 'caption' is not valid UTF-8 (byte 0xe9 after 'caf')" in report.examples["not_utf8"][0]


def test_repeated_rows_are_kept_and_noted(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("./a.png", "red"), ("a.png", "crimson")], {"a.png": _good_png()})
    clean, report = validate_split(*read_captions_file(root / "train.csv"))
    assert clean.captions == ["red", "red", "crimson"]
    assert report.ok
    assert report.counts == {"duplicate_row": 1}
    assert report.examples["duplicate_row"] == [f"{root / 'train.csv'}, line 3: same image and caption as line 2"]


def test_malformed_rows_are_skipped(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("a.png", "a dog, running")], {"a.png": _good_png()})
    clean, report = validate_split(*read_captions_file(root / "train.csv"))
    assert clean.captions == ["red"]
    assert report.counts == {"malformed_row": 1}
    assert "line 3: 3 fields but the header has 2" in report.examples["malformed_row"][0]


def test_bad_jsonl_lines_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.png").write_bytes(_good_png())
    (root / "train.jsonl").write_text(
        '{"image": "a.png", "caption": "red"}\n{"image": "a.png", \n[1, 2]\n{"image": "a.png", "caption": 5}\n',
        encoding="utf-8",
    )
    clean, report = validate_split(*read_captions_file(root / "train.jsonl"))
    assert clean.captions == ["red"]
    assert report.counts == {"malformed_row": 3}
    assert [e.split(": ", 1)[0][-6:] for e in report.examples["malformed_row"]] == ["line 2", "line 3", "line 4"]


def test_karpathy_bad_entries(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_good_png())
    (tmp_path / "b.jpg").write_bytes(_good_png())

    def entry(name: str, *captions: str) -> dict[str, object]:
        return {"filename": name, "split": "train", "sentences": [{"raw": c} for c in captions]}

    images = [entry("a.jpg", "one", "one", "  "), entry("b.jpg", ""), entry("a.jpg", "again"), "junk",
              {"split": "train", "sentences": []}]
    (tmp_path / "k.json").write_text(json.dumps({"images": images}), encoding="utf-8")
    clean, report = validate_split(*read_karpathy(tmp_path / "k.json", tmp_path, "train"))
    assert clean.image_paths == ["a.jpg"] and clean.captions == ["one", "one"]
    assert report.counts == {"malformed_row": 2, "empty_caption": 2, "duplicate_image": 1, "no_captions": 1,
                             "duplicate_row": 1}
    assert (report.images_read, report.captions_read) == (5, 5)
    assert "images[2] (a.jpg): same image as images[0]" in report.examples["duplicate_image"][0]


def test_karpathy_non_utf8_caption(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_good_png())
    text = '{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "ok"}, {"raw": "caf\xe9"}]}]}'
    (tmp_path / "k.json").write_bytes(text.encode("latin-1"))
    clean, report = validate_split(*read_karpathy(tmp_path / "k.json", tmp_path, "test"))
    assert clean.captions == ["ok"]
    assert report.counts == {"not_utf8": 1}


def test_image_left_without_captions_is_dropped(tmp_path: Path) -> None:
    # Another reader (or a caller) may hand over an image no caption points at; it must not reach the gallery.
    for name in ("a.png", "lonely.png", "b.png"):
        (tmp_path / name).write_bytes(_good_png())
    ds = CaptionedImages(tmp_path, ["a.png", "lonely.png", "b.png"], ["red", "blue"], np.array([0, 2]))
    clean, report = validate_split(ds)
    assert clean.image_paths == ["a.png", "b.png"] and clean.cap2img.tolist() == [0, 1]
    assert report.counts == {"no_captions": 1}
    assert "lonely.png" in report.examples["no_captions"][0]


# --- whole-split outcomes ----------------------------------------------------------------------


def _mixed(tmp_path: Path) -> Path:
    return _dataset(
        tmp_path,
        [("a.png", "red"), ("a.png", " "), ("gone.png", "lost"), ("bad.png", "broken")],
        {"a.png": _good_png(), "bad.png": _good_png()[:40]},
    )


def test_strict_refuses_and_lists_every_reason(tmp_path: Path) -> None:
    root = _mixed(tmp_path)
    with pytest.raises(DataError) as info:
        load_split(DataConfig(root=str(root), strict=True), "train")
    message = str(info.value)
    for text in ("kept 1 of 3 images and 1 of 4 captions", "empty caption", "image file missing",
                 "image undecodable or truncated", "line 3", "gone.png", "bad.png", "drop --strict"):
        assert text in message


def test_strict_does_not_fail_on_repeated_rows(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("a.png", "red"), ("a.png", "red")], {"a.png": _good_png()})
    assert load_split(DataConfig(root=str(root), strict=True), "train").captions == ["red", "red"]


def test_nothing_usable_left_is_a_clear_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path, [("x/a.png", "red"), ("x/b.png", "blue")], {})
    with pytest.raises(DataError, match="No usable image-caption pair is left in the train split") as info:
        load_split(DataConfig(root=str(root)), "train")
    assert "image file missing        2" in str(info.value)


def test_report_is_saved_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _mixed(tmp_path)
    load_split(DataConfig(root=str(root)), "train", report_dir=tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "data_report_train.json").read_text(encoding="utf-8"))
    assert saved["images"] == {"read": 3, "kept": 1}
    assert saved["captions"] == {"read": 4, "kept": 1}
    assert saved["skipped"] == {"empty_caption": 1, "missing_image": 1, "undecodable_image": 1}
    assert "kept 1 of 3 images" in capsys.readouterr().err


def test_clean_split_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _dataset(tmp_path, [("a.png", "red")], {"a.png": _good_png()})
    assert _load(root, capsys) == (["a.png"], "")


def test_file_level_problems_still_fail(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "train.csv").write_text("img,text\na.png,red\n", encoding="utf-8")
    with pytest.raises(CaptionFileError, match="missing field"):
        load_split(DataConfig(root=str(root)), "train")


# --- noise indices -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(5, dtype=np.float32), "found dtype float32"),
        (np.ones(5, dtype=bool), "found dtype bool"),
        (np.array([0, 1, -1, 3, 4]), "must lie in 0..4, found values from -1 to 4"),
        (np.array([0, 1, 2, 3, 9]), "must lie in 0..4, found values from 0 to 9"),
        (np.arange(6).reshape(2, 3), r"expected a 1-D array, found shape \(2, 3\)"),
        (np.int64(3), r"expected a 1-D array, found shape \(\)"),
        (np.arange(7), r"found 7 entries, expected 10 \(one per caption\) or 5 \(one per image\)"),
    ],
    ids=["float", "bool", "negative", "out-of-range", "2-D", "0-D", "wrong-length"],
)
def test_bad_noise_index_is_refused_not_skipped(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "noise.npy", array)
    with pytest.raises(NoiseIndexError, match=message):
        NoiseIndex.load(tmp_path / "noise.npy", n_images=5, n_captions=10)


def test_noise_index_for_the_uncleaned_split_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _mixed(tmp_path)
    cfg = DataConfig(root=str(root), noise_file=str(tmp_path / "noise.npy"))
    # One entry per caption of the file as it is on disk (4), made before anything was skipped.
    NoiseIndex("caption", np.array([0, 0, 1, 2]), None, None).save(cfg.noise_file)
    train = load_split(cfg, "train")
    with pytest.raises(NoiseIndexError) as info:
        resolve_noise(cfg, train)
    message = str(info.value)
    assert "found 4 entries" in message
    assert "the files name 3 images and 4 captions, 1 and 1 are usable" in message
    # An index made for the cleaned split fits, and pairs stay consistent with it.
    NoiseIndex("caption", np.array([0]), None, None).save(cfg.noise_file)
    pairs = make_noisy_pairs(train, resolve_noise(cfg, train))
    assert pairs.image.tolist() == [0] and pairs.is_clean.all()


def test_semantic_keys_are_dropped_when_a_synthetic_split_lost_entries(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "synth"
    shutil.copytree(tiny_synth, root)
    first = sorted((root / "images" / "val").iterdir())[0]
    first.unlink()
    cfg = DataConfig(root=str(root))
    val = load_split(cfg, "val")
    assert semantic_keys(cfg, "val", val) is None
    assert "no semantic recall on the val split" in capsys.readouterr().err
    assert semantic_keys(cfg, "test", load_split(cfg, "test")) is not None


# --- end to end --------------------------------------------------------------------------------


def _broken_synth(tiny_synth: Path, tmp_path: Path) -> Path:
    """The tiny benchmark with bad training rows: a missing and a truncated image, an empty and a Latin-1 caption."""
    root = tmp_path / "synth"
    shutil.copytree(tiny_synth, root)
    truncated = sorted((root / "images" / "train").iterdir())[0]
    truncated.write_bytes(truncated.read_bytes()[:60])
    with open(root / "train.csv", "ab") as fh:
        fh.write(b"images/train/missing.png,a photo of nothing\nimages/train/000001.png,  \n")
        fh.write("images/train/000001.png,caf\xe9 au lait\n".encode("latin-1"))
    return root


def _train_args(root: Path, run: Path) -> list[str]:
    sets = tiny_overrides(root, run, **{"train.epochs": 1, "data.noise_rate": 0.25})
    return ["train", "--no-progress", *sum((["--set", o] for o in sets), [])]


def test_train_skips_bad_rows_and_reports_counts(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _broken_synth(tiny_synth, tmp_path)
    assert main(_train_args(root, tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "data: train split" in err and "kept 47 of 49 images" in err
    for reason in ("empty caption", "text not valid UTF-8", "image file missing", "image undecodable or truncated"):
        assert reason in err
    index = np.load(tmp_path / "run" / "noise_index.npy")
    assert len(index) == 47  # per-image noise over the usable images only


def test_train_strict_exits_2_with_the_report(
    tiny_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _broken_synth(tiny_synth, tmp_path)
    assert main([*_train_args(root, tmp_path / "run"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data: train split")
    assert "image file missing" in err and "Strict mode" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "last").exists()
