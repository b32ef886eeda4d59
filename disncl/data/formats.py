"""Loaders that turn caption files on disk into :class:`~disncl.data.pairs.CaptionedImages`.

Supported layouts:

* a captions table (``.csv``, ``.tsv`` or ``.jsonl``) with ``image`` and ``caption`` fields and an
  optional ``split`` field — :func:`load_captions_file`;
* the Karpathy split JSON used for Flickr30K and COCO — :func:`load_karpathy`;
* a dataset folder holding ``{split}.csv|tsv|jsonl`` — :func:`load_dataset_dir`.

Image files are not opened here: :func:`check_images_exist` checks them on demand, because
stat-ing 100k files on a network disk is slow and not every caller needs it.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np

from disncl.data.pairs import CaptionedImages
from disncl.io import atomic_write

CAPTION_SUFFIXES = (".csv", ".tsv", ".jsonl")
KARPATHY_SPLITS = ("train", "val", "test", "restval")


class CaptionFileError(ValueError):
    """A captions or split file is malformed; the message names the file and the line or entry."""


# One parsed row: (where it is in the file, for messages; its fields).
_Row = tuple[str, dict[str, object]]


def _normalize_image_path(raw: str) -> str:
    """Canonical spelling of a relative image path, so "./a.png" and "a.png" are one image."""
    return posixpath.normpath(raw.strip())


def _csv_rows(path: Path, fh: TextIO, delimiter: str) -> tuple[list[str], Iterator[_Row]]:
    """Header and rows of an open CSV/TSV file.

    TSV is read without quote processing: tab-separated caption files in the wild (e.g.
    Conceptual Captions) leave quotes unescaped, and csv quoting would silently eat a caption
    that starts with a quote.
    """
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(fh, delimiter=delimiter, quoting=quoting)
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as err:
        raise CaptionFileError(f"{path}: cannot parse the header line: {err}") from err

    def rows() -> Iterator[_Row]:
        try:
            for values in reader:
                where = f"line {reader.line_num}"
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise CaptionFileError(
                        f"{path}, {where}: {len(values)} fields but the header has {len(header)} "
                        f"({', '.join(header)}). Quote fields that contain the delimiter "
                        f"{delimiter!r}, or remove the stray field."
                    )
                yield where, dict(zip(header, values, strict=True))
        except csv.Error as err:
            raise CaptionFileError(f"{path}, line {reader.line_num}: malformed row: {err}") from err

    return header, rows()


def _jsonl_rows(path: Path) -> tuple[list[str], Iterator[_Row]]:
    """Field names (union over all rows) and rows of a JSON-lines file."""
    parsed: list[_Row] = []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaptionFileError(f"{path}, line {lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise CaptionFileError(
                    f"{path}, line {lineno}: expected a JSON object like "
                    f'{{"image": ..., "caption": ...}}, found {type(obj).__name__}'
                )
            parsed.append((f"line {lineno}", obj))
    fields: dict[str, None] = {}
    for _, obj in parsed:
        fields.update(dict.fromkeys(obj))
    return list(fields), iter(parsed)


@contextmanager
def _open_table(path: Path) -> Iterator[tuple[list[str], Iterator[_Row]]]:
    """Field names and rows of a captions table, chosen by the file's suffix."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield _jsonl_rows(path)
        return
    if suffix not in (".csv", ".tsv"):
        raise CaptionFileError(
            f"{path}: unsupported captions file type {suffix!r}; use one of {', '.join(CAPTION_SUFFIXES)}"
        )
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the header.
    with open(path, encoding="utf-8-sig", newline="") as fh:
        yield _csv_rows(path, fh, "," if suffix == ".csv" else "\t")


def _text_field(path: Path, where: str, row: dict[str, object], name: str) -> str:
    """A row's field as a stripped, non-empty string, or a ValueError that says where."""
    value = row.get(name)
    if not isinstance(value, str):
        found = "nothing" if value is None else f"{type(value).__name__} {value!r}"
        raise CaptionFileError(f"{path}, {where}: field {name!r} must be text, found {found}")
    value = value.strip()
    if not value:
        raise CaptionFileError(
            f"{path}, {where}: empty {name!r}. Fill it in or delete the row "
            "(empty captions are not skipped silently)."
        )
    return value


def _build(root: Path, pairs: list[tuple[str, str]]) -> CaptionedImages:
    """Images numbered by first appearance; each caption points at its image."""
    index: dict[str, int] = {}
    cap2img = np.empty(len(pairs), dtype=np.int64)
    for c, (image, _) in enumerate(pairs):
        cap2img[c] = index.setdefault(image, len(index))
    return CaptionedImages(
        root=root, image_paths=list(index), captions=[cap for _, cap in pairs], cap2img=cap2img
    )


def _check_fields(path: Path, header: list[str], split: str | None) -> None:
    if not header:
        raise CaptionFileError(f"{path}: file is empty; expected a header line with the fields image,caption")
    missing = [name for name in ("image", "caption") if name not in header]
    if split is not None and "split" not in header:
        missing.append("split")
    if missing:
        hint = " (or load with split=None to keep every row)" if "split" in missing else ""
        raise CaptionFileError(
            f"{path}: missing field(s) {', '.join(missing)}{hint}; fields found: {', '.join(header)}. "
            "The first line must be a header naming the fields, e.g. image,caption"
        )


def _select_pairs(path: Path, rows: Iterator[_Row], split: str | None) -> list[tuple[str, str]]:
    """(image, caption) of every row in ``split`` (every row when ``split`` is None)."""
    pairs: list[tuple[str, str]] = []
    splits_seen: set[str] = set()
    for where, row in rows:
        if split is not None:
            row_split = row.get("split")
            row_split = row_split.strip() if isinstance(row_split, str) else ""
            splits_seen.add(row_split)
            if row_split != split:
                continue
        image = _normalize_image_path(_text_field(path, where, row, "image"))
        pairs.append((image, _text_field(path, where, row, "caption")))
    if not pairs:
        if split is not None:
            found = ", ".join(repr(s) for s in sorted(splits_seen)) or "none"
            raise CaptionFileError(f"{path}: no rows with split {split!r}; splits found: {found}")
        raise CaptionFileError(f"{path}: header but no caption rows")
    return pairs


def load_captions_file(
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> CaptionedImages:
    """Load a ``.csv``/``.tsv``/``.jsonl`` captions table.

    Each row holds ``image`` (a path relative to ``images_root``, which defaults to the
    file's folder) and ``caption``; an image may have several rows in any order. Images are
    numbered in order of first appearance. If ``split`` is given, only rows whose ``split``
    field equals it are kept, and the file must have a ``split`` field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    root = Path(images_root) if images_root is not None else path.parent
    try:
        with _open_table(path) as (header, rows):
            _check_fields(path, header, split)
            pairs = _select_pairs(path, rows, split)
    except UnicodeDecodeError as err:
        raise CaptionFileError(f"{path}: not UTF-8 text ({err.reason}); re-save the file as UTF-8") from err
    return _build(root, pairs)


def check_images_exist(ds: CaptionedImages) -> list[str]:
    """The entries of ``ds.image_paths`` that are not files under ``ds.root``."""
    return [rel for rel in ds.image_paths if not (ds.root / rel).is_file()]


def _karpathy_image(json_path: Path, i: int, entry: object) -> tuple[str, str, list[str]]:
    """(split, relative image path, stripped captions) of one ``images`` entry."""
    if not isinstance(entry, dict):
        raise CaptionFileError(f"{json_path}: images[{i}] is a {type(entry).__name__}, expected an object")
    filename = entry.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise CaptionFileError(f"{json_path}: images[{i}] has no 'filename'")
    subdir = entry.get("filepath")
    rel = posixpath.join(subdir, filename) if isinstance(subdir, str) and subdir else filename
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        raise CaptionFileError(f"{json_path}: images[{i}] ({rel}) has no 'sentences' list")
    captions = []
    for j, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise CaptionFileError(
                f"{json_path}: images[{i}] ({rel}) sentences[{j}] has an empty or missing 'raw' caption"
            )
        captions.append(raw.strip())
    return str(entry.get("split", "")), _normalize_image_path(rel), captions


def load_karpathy(
    json_path: str | os.PathLike[str],
    images_root: str | os.PathLike[str],
    split: str,
    include_restval: bool = True,
) -> CaptionedImages:
    """Load one split of a Karpathy split file (``dataset_flickr30k.json``, ``dataset_coco.json``).

    The image path is ``filepath/filename`` (COCO's ``filepath`` is e.g. ``val2014``) relative to
    ``images_root``; captions are the stripped ``raw`` sentences. For ``split="train"`` with
    ``include_restval`` the ``restval`` images are added too, giving COCO's usual 113,287
    training images. Images and captions keep the file's order; every entry is one image.
    """
    json_path = Path(json_path)
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"unknown Karpathy split {split!r}; use one of {', '.join(KARPATHY_SPLITS)}")
    if not json_path.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise CaptionFileError(f"{json_path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    except UnicodeDecodeError as err:
        raise CaptionFileError(
            f"{json_path}: not UTF-8 text ({err.reason}); re-save the file as UTF-8"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionFileError(
            f"{json_path}: expected a JSON object with an 'images' list (Karpathy split format)"
        )

    wanted = {split, "restval"} if split == "train" and include_restval else {split}
    image_paths: list[str] = []
    captions: list[str] = []
    cap2img: list[int] = []
    splits_seen: set[str] = set()
    for i, entry in enumerate(data["images"]):
        entry_split, rel, entry_captions = _karpathy_image(json_path, i, entry)
        splits_seen.add(entry_split)
        if entry_split not in wanted:
            continue
        cap2img.extend([len(image_paths)] * len(entry_captions))
        image_paths.append(rel)
        captions.extend(entry_captions)
    if not image_paths:
        found = ", ".join(repr(s) for s in sorted(splits_seen)) or "none"
        raise CaptionFileError(f"{json_path}: no images in split {split!r}; splits found: {found}")
    return CaptionedImages(
        root=Path(images_root),
        image_paths=image_paths,
        captions=captions,
        cap2img=np.asarray(cap2img, np.int64),
    )


def load_dataset_dir(root: str | os.PathLike[str], split: str) -> CaptionedImages:
    """Load ``root/{split}.csv``, ``.tsv`` or ``.jsonl`` (exactly one must exist).

    Image paths in the file are relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    found = [
        root / f"{split}{suffix}" for suffix in CAPTION_SUFFIXES if (root / f"{split}{suffix}").is_file()
    ]
    if not found:
        names = ", ".join(f"{split}{suffix}" for suffix in CAPTION_SUFFIXES)
        raise FileNotFoundError(f"{root}: no captions file for split {split!r}; expected one of {names}")
    if len(found) > 1:
        raise CaptionFileError(
            f"{root}: several captions files for split {split!r} ({', '.join(p.name for p in found)}); "
            "keep exactly one"
        )
    return load_captions_file(found[0], images_root=root)


def write_captions_csv(path: str | os.PathLike[str], ds: CaptionedImages) -> Path:
    """Write ``ds`` as an ``image,caption`` CSV, atomically; :func:`load_captions_file` reads it back.

    Image paths stay relative to ``ds.root``, so load it with ``images_root=ds.root`` if the CSV
    lives elsewhere. Images without any caption are not representable and are dropped.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["image", "caption"])
            writer.writerows(
                (ds.image_paths[i], caption) for i, caption in zip(ds.cap2img, ds.captions, strict=True)
            )

    return atomic_write(path, write)
