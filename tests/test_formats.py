"""Caption-file loaders: CSV/TSV/JSONL tables, Karpathy split JSON, dataset folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from disncl.data.formats import (
    CaptionFileError,
    check_images_exist,
    load_captions_file,
    load_dataset_dir,
    load_karpathy,
    write_captions_csv,
)
from disncl.data.pairs import CaptionedImages

# Several captions per image, images interleaved, captions with the characters that break naive parsers.
ROWS = [
    ("b.png", 'A dog, "Rex", runs'),
    ("a.png", "A cat sits"),
    ("b.png", "Brown dog; outdoors"),
    ("c/d.png", "It's a 'bird'"),
    ("a.png", "  Cat on a mat  "),
]
EXPECTED_IMAGES = ["b.png", "a.png", "c/d.png"]
EXPECTED_CAPTIONS = [
    'A dog, "Rex", runs',
    "A cat sits",
    "Brown dog; outdoors",
    "It's a 'bird'",
    "Cat on a mat",
]
EXPECTED_CAP2IMG = [0, 1, 0, 2, 1]


def _write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]], delimiter: str = ",") -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, objects: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objects), encoding="utf-8")
    return path


def _assert_expected(ds: CaptionedImages, root: Path) -> None:
    assert ds.root == root
    assert ds.image_paths == EXPECTED_IMAGES
    assert ds.captions == EXPECTED_CAPTIONS
    assert ds.cap2img.dtype == np.int64
    assert ds.cap2img.tolist() == EXPECTED_CAP2IMG


def test_csv_with_commas_and_quotes(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "caps.csv", ["image", "caption"], ROWS)
    _assert_expected(load_captions_file(path), tmp_path)


def test_tsv_keeps_quotes_literally(tmp_path: Path) -> None:
    lines = ["image\tcaption"] + [f"{image}\t{caption}" for image, caption in ROWS]
    lines.append('e.png\t"Quoted" at the start')
    path = tmp_path / "caps.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ds = load_captions_file(path)
    assert ds.captions == [*EXPECTED_CAPTIONS, '"Quoted" at the start']
    assert ds.image_paths == [*EXPECTED_IMAGES, "e.png"]


def test_jsonl(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "caps.jsonl", [{"image": i, "caption": c, "extra": 1} for i, c in ROWS])
    _assert_expected(load_captions_file(path), tmp_path)


def test_images_root_override_and_path_normalisation(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "caps.csv", ["caption", "image"], [("one", "./x.png"), ("two", "x.png")])
    ds = load_captions_file(path, images_root=tmp_path / "imgs")
    assert ds.root == tmp_path / "imgs"
    assert ds.image_paths == ["x.png"]
    assert ds.cap2img.tolist() == [0, 0]


def test_split_filtering(tmp_path: Path) -> None:
    rows = [("a.png", "train cap", "train"), ("b.png", "test cap", "test"), ("a.png", "train 2", "train")]
    csv_path = _write_csv(tmp_path / "all.csv", ["image", "caption", "split"], rows)
    jsonl_path = _write_jsonl(
        tmp_path / "all.jsonl", [{"image": i, "caption": c, "split": s} for i, c, s in rows]
    )
    for path in (csv_path, jsonl_path):
        train = load_captions_file(path, split="train")
        assert train.captions == ["train cap", "train 2"]
        assert train.image_paths == ["a.png"]
        test = load_captions_file(path, split="test")
        assert test.image_paths == ["b.png"]
        assert load_captions_file(path).n_captions == 3
        with pytest.raises(CaptionFileError, match=r"no rows with split 'val'.*'test', 'train'"):
            load_captions_file(path, split="val")


def test_split_requested_but_no_split_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "caps.csv", ["image", "caption"], ROWS)
    with pytest.raises(CaptionFileError, match="split") as info:
        load_captions_file(path, split="train")
    assert str(path) in str(info.value)
    assert "split=None" in str(info.value)


def test_missing_column_lists_columns_found(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "caps.csv", ["img", "text"], [("a.png", "cap")])
    with pytest.raises(CaptionFileError) as info:
        load_captions_file(path)
    message = str(info.value)
    assert str(path) in message
    assert "image, caption" in message
    assert "img, text" in message


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_caption_names_file_and_line(tmp_path: Path, suffix: str) -> None:
    rows = [("a.png", "fine"), ("b.png", "   ")]
    if suffix == ".csv":
        path = _write_csv(tmp_path / f"caps{suffix}", ["image", "caption"], rows)
    else:
        path = _write_jsonl(tmp_path / f"caps{suffix}", [{"image": i, "caption": c} for i, c in rows])
    expected_line = 3 if suffix == ".csv" else 2
    with pytest.raises(CaptionFileError) as info:
        load_captions_file(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {expected_line}" in message
    assert "empty 'caption'" in message


def test_unquoted_comma_is_reported_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "caps.csv"
    path.write_text("image,caption\na.png,a dog, running\n", encoding="utf-8")
    with pytest.raises(CaptionFileError, match="line 2: 3 fields but the header has 2"):
        load_captions_file(path)


def test_bad_jsonl_line_and_non_text_caption(tmp_path: Path) -> None:
    path = tmp_path / "caps.jsonl"
    path.write_text('{"image": "a.png", "caption": "ok"}\n{"image": "b.png", \n', encoding="utf-8")
    with pytest.raises(CaptionFileError, match=r"caps.jsonl, line 2: not valid JSON"):
        load_captions_file(path)
    path.write_text('{"image": "a.png", "caption": 5}\n', encoding="utf-8")
    with pytest.raises(CaptionFileError, match=r"line 1: field 'caption' must be text, found int 5"):
        load_captions_file(path)


def test_empty_file_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(CaptionFileError, match="empty.csv: file is empty"):
        load_captions_file(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("image,caption\n", encoding="utf-8")
    with pytest.raises(CaptionFileError, match="no caption rows"):
        load_captions_file(header_only)
    other = tmp_path / "caps.txt"
    other.write_text("x", encoding="utf-8")
    with pytest.raises(CaptionFileError, match=r"unsupported captions file type '.txt'"):
        load_captions_file(other)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_captions_file(tmp_path / "nope.csv")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("image,caption\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(
        CaptionFileError, match=r"latin.csv, line 2: field 'caption' is not valid UTF-8 \(byte 0xe9 after 'caf'\)"
    ):
        load_captions_file(path)


def test_bom_header_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("\ufeffimage,caption\na.png,a cat\n", encoding="utf-8")
    assert load_captions_file(path).captions == ["a cat"]


def test_write_captions_csv_round_trip(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "caps.jsonl", [{"image": i, "caption": c} for i, c in ROWS])
    ds = load_captions_file(source)
    out = write_captions_csv(tmp_path / "out.csv", ds)
    assert out.read_text(encoding="utf-8").startswith("image,caption\n")
    _assert_expected(load_captions_file(out), tmp_path)
    assert not list(tmp_path.glob(".out.csv.*"))


def test_check_images_exist(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    ds = load_captions_file(_write_csv(tmp_path / "caps.csv", ["image", "caption"], ROWS))
    assert check_images_exist(ds) == ["b.png", "c/d.png"]


def _karpathy(path: Path) -> Path:
    def image(
        filename: str, split: str, captions: list[str], filepath: str | None = None
    ) -> dict[str, object]:
        entry: dict[str, object] = {
            "filename": filename,
            "split": split,
            "sentences": [{"raw": c, "tokens": c.split()} for c in captions],
        }
        if filepath is not None:
            entry["filepath"] = filepath
        return entry

    data = {
        "dataset": "coco",
        "images": [
            image("t1.jpg", "train", ["train one ", "train one b"], "train2014"),
            image("v1.jpg", "val", ["val one"], "val2014"),
            image("r1.jpg", "restval", ["restval one", "restval one b"], "val2014"),
            image("s1.jpg", "test", ["test one"], "val2014"),
            image("t2.jpg", "train", ["train two"]),
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_karpathy_train_includes_restval_in_file_order(tmp_path: Path) -> None:
    path = _karpathy(tmp_path / "dataset_coco.json")
    ds = load_karpathy(path, tmp_path / "coco", "train")
    assert ds.root == tmp_path / "coco"
    assert ds.image_paths == ["train2014/t1.jpg", "val2014/r1.jpg", "t2.jpg"]
    assert ds.captions == ["train one", "train one b", "restval one", "restval one b", "train two"]
    assert ds.cap2img.tolist() == [0, 0, 1, 1, 2]


def test_karpathy_without_restval_and_other_splits(tmp_path: Path) -> None:
    path = _karpathy(tmp_path / "dataset_coco.json")
    assert load_karpathy(path, tmp_path, "train", include_restval=False).image_paths == [
        "train2014/t1.jpg",
        "t2.jpg",
    ]
    assert load_karpathy(path, tmp_path, "test").captions == ["test one"]
    assert load_karpathy(path, tmp_path, "val").image_paths == ["val2014/v1.jpg"]
    assert load_karpathy(path, tmp_path, "restval").image_paths == ["val2014/r1.jpg"]


def test_karpathy_errors_name_the_file(tmp_path: Path) -> None:
    path = _karpathy(tmp_path / "dataset_coco.json")
    with pytest.raises(ValueError, match="unknown Karpathy split 'dev'"):
        load_karpathy(path, tmp_path, "dev")
    data = json.loads(path.read_text(encoding="utf-8"))
    data["images"][1]["sentences"][0]["raw"] = "  "
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(
        CaptionFileError, match=r"dataset_coco.json, images\[1\] \(val2014/v1.jpg\) sentences\[0\]: empty 'raw'"
    ):
        load_karpathy(path, tmp_path, "val")
    path.write_text('{"annotations": []}', encoding="utf-8")
    with pytest.raises(
        CaptionFileError, match="dataset_coco.json: expected a JSON object with an 'images' list"
    ):
        load_karpathy(path, tmp_path, "val")


def test_dataset_dir(tmp_path: Path) -> None:
    _write_csv(tmp_path / "train.csv", ["image", "caption"], ROWS)
    _assert_expected(load_dataset_dir(tmp_path, "train"), tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"no captions file for split 'test'.*test.csv, test.tsv, test.jsonl"
    ):
        load_dataset_dir(tmp_path, "test")
    _write_jsonl(tmp_path / "train.jsonl", [{"image": "a.png", "caption": "x"}])
    with pytest.raises(
        CaptionFileError, match=r"several captions files for split 'train' \(train.csv, train.jsonl\)"
    ):
        load_dataset_dir(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_dataset_dir(tmp_path / "missing", "train")
