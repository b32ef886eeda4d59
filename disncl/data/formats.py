"""Loaders that turn caption files on disk into :class:`~disncl.data.pairs.CaptionedImages`.

Supported layouts:

* a captions table (``.csv``, ``.tsv`` or ``.jsonl``) with ``image`` and ``caption`` fields and an
  optional ``split`` field — :func:`load_captions_file`;
* the Karpathy split JSON used for Flickr30K and COCO — :func:`load_karpathy`;
* a dataset folder holding ``{split}.csv|tsv|jsonl`` — :func:`load_dataset_dir`.

Each ``load_*`` function refuses a file with any unusable row; its ``read_*`` twin skips those
rows and returns them as :class:`~disncl.data.validate.Problem` s, for training to report
(:mod:`disncl.data.validate`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from disncl.data.pairs import CaptionedImages
from disncl.data.validate import NOTES, Problem
from disncl.io import atomic_write

CAPTION_SUFFIXES = (".csv", ".tsv", ".jsonl")
KARPATHY_SPLITS = ("train", "val", "test", "restval")
# How many unusable rows the strict loaders' error lists before summarising.
_MAX_LISTED = 10


class CaptionFileError(ValueError):
    """A captions or split file is malformed; the message names the file and the line or entry."""


@dataclass(frozen=True)
class _Row:
    """One record of a captions table: where it is (for messages) and its fields, or why it has none."""

    where: str
    fields: dict[str, object] | None
    error: str = ""


def _normalize_image_path(raw: str) -> str:
    """Canonical spelling of a relative image path, so "./a.png" and "a.png" are one image."""
    return posixpath.normpath(raw.strip())


def _not_utf8(text: str) -> str | None:
    """Where ``text`` holds bytes that were not UTF-8 (read as surrogate escapes), or None if it is clean."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        return f"{what} after {text[: err.start][-20:]!r}" if err.start else f"{what} at the start"
    return None


# Besides syntax errors (JSONDecodeError is a ValueError), json raises ValueError for integers over
# Python's digit limit and RecursionError for very deeply nested arrays.
_JSON_ERRORS = (ValueError, RecursionError)


def _json_message(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"line {err.lineno}: {err.msg}" if err.lineno > 1 else err.msg
    return "nested too deeply" if isinstance(err, RecursionError) else str(err)


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
                    yield _Row(
                        where,
                        None,
                        f"{len(values)} fields but the header has {len(header)} ({', '.join(header)}). "
                        f"Quote fields that contain the delimiter {delimiter!r}, or remove the stray field.",
                    )
                    continue
                yield _Row(where, dict(zip(header, values, strict=True)))
        except csv.Error as err:
            # The reader cannot resynchronise after this (e.g. an unclosed quote ran past the field size
            # limit), so the rest of the file is unreadable: a file-level error, not a skipped row.
            raise CaptionFileError(f"{path}, line {reader.line_num}: malformed row: {err}") from err

    return header, rows()


def _jsonl_rows(path: Path) -> tuple[list[str], Iterator[_Row]]:
    """Field names (union over all rows) and rows of a JSON-lines file."""
    parsed: list[_Row] = []
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except _JSON_ERRORS as err:
                parsed.append(_Row(f"line {lineno}", None, f"not valid JSON ({_json_message(err)})"))
                continue
            if not isinstance(obj, dict):
                parsed.append(
                    _Row(
                        f"line {lineno}",
                        None,
                        f'expected a JSON object like {{"image": ..., "caption": ...}}, found {type(obj).__name__}',
                    )
                )
                continue
            parsed.append(_Row(f"line {lineno}", obj))
    fields: dict[str, None] = {}
    for row in parsed:
        fields.update(dict.fromkeys(row.fields or {}))
    return list(fields), iter(parsed)


@contextmanager
def _open_table(path: Path) -> Iterator[tuple[list[str], Iterator[_Row]]]:
    """Field names and rows of a captions table, chosen by the file's suffix.

    Bytes that are not UTF-8 are kept as surrogate escapes, so one badly encoded line can be
    skipped by itself (see :func:`_not_utf8`) instead of failing the whole file.
    """
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield _jsonl_rows(path)
        return
    if suffix not in (".csv", ".tsv"):
        raise CaptionFileError(
            f"{path}: unsupported captions file type {suffix!r}; use one of {', '.join(CAPTION_SUFFIXES)}"
        )
    # utf-8-sig drops the byte-order mark that spreadsheet exports put before the header.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        yield _csv_rows(path, fh, "," if suffix == ".csv" else "\t")


def _text_field(value: object, name: str, empty_reason: str = "malformed_row") -> tuple[str, str, str]:
    """``(stripped text, "", "")`` for a usable field, else ``("", reason, detail)``."""
    if not isinstance(value, str):
        found = "nothing" if value is None else f"{type(value).__name__} {value!r}"
        return "", "malformed_row", f"field {name!r} must be text, found {found}"
    bad = _not_utf8(value)
    if bad is not None:
        return "", "not_utf8", f"field {name!r} is not valid UTF-8 ({bad}); re-save the file as UTF-8"
    value = value.strip()
    if not value:
        return "", empty_reason, f"empty {name!r}; fill it in or delete the row"
    return value, "", ""


def _build(
    root: Path, pairs: list[tuple[str, str]], source_counts: tuple[int, int] | None = None
) -> CaptionedImages:
    """Images numbered by first appearance; each caption points at its image."""
    index: dict[str, int] = {}
    cap2img = np.empty(len(pairs), dtype=np.int64)
    for c, (image, _) in enumerate(pairs):
        cap2img[c] = index.setdefault(image, len(index))
    return CaptionedImages(
        root=root,
        image_paths=list(index),
        captions=[cap for _, cap in pairs],
        cap2img=cap2img,
        source_counts=source_counts,
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


def _select_pairs(
    path: Path, rows: Iterator[_Row], split: str | None
) -> tuple[list[tuple[str, str]], list[Problem], tuple[int, int]]:
    """(image, caption) of every usable row in ``split`` (every row when ``split`` is None).

    Also returns the skipped rows and ``(images named, rows)`` of the split as it is on disk.
    A row that cannot be parsed has no readable split, so it is reported for every split.
    """
    pairs: list[tuple[str, str]] = []
    problems: list[Problem] = []
    first_seen: dict[tuple[str, str], str] = {}
    images_named: set[str] = set()
    n_rows = 0
    splits_seen: set[str] = set()
    for row in rows:
        if row.fields is None:
            n_rows += 1
            problems.append(Problem("malformed_row", str(path), row.where, row.error))
            continue
        if split is not None:
            row_split = row.fields.get("split")
            row_split = row_split.strip() if isinstance(row_split, str) else ""
            splits_seen.add(row_split)
            if row_split != split:
                continue
        n_rows += 1
        image, reason, detail = _text_field(row.fields.get("image"), "image")
        if image:
            image = _normalize_image_path(image)
            images_named.add(image)
            caption, reason, detail = _text_field(row.fields.get("caption"), "caption", "empty_caption")
        if reason:
            problems.append(Problem(reason, str(path), row.where, detail))
            continue
        earlier = first_seen.setdefault((image, caption), row.where)
        if earlier != row.where:
            problems.append(Problem("duplicate_row", str(path), row.where, f"same image and caption as {earlier}"))
        pairs.append((image, caption))
    if n_rows == 0:
        if split is not None:
            found = ", ".join(repr(s) for s in sorted(splits_seen)) or "none"
            raise CaptionFileError(f"{path}: no rows with split {split!r}; splits found: {found}")
        raise CaptionFileError(f"{path}: header but no caption rows")
    return pairs, problems, (len(images_named), n_rows)


def _raise_problems(problems: list[Problem]) -> None:
    """The strict loaders' behaviour: any unusable row or entry is an error listing them."""
    problems = [p for p in problems if p.reason not in NOTES]
    if not problems:
        return
    if len(problems) == 1:
        raise CaptionFileError(str(problems[0]))
    listed = "\n".join(f"  {p}" for p in problems[:_MAX_LISTED])
    more = f"\n  … and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise CaptionFileError(f"{len(problems)} unusable rows or entries:\n{listed}{more}")


def read_captions_file(
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> tuple[CaptionedImages, list[Problem]]:
    """Like :func:`load_captions_file`, but skips unusable rows and returns them as problems.

    Skipped: rows with the wrong number of fields or invalid JSON, non-text or empty fields, and
    fields that are not valid UTF-8 (only those rows; the rest of the file is read). A repeat of an
    earlier (image, caption) row is kept but noted (template or crowd-sourced captions repeat
    legitimately, and dropping one would shift the caption numbering that per-caption files such as
    noise indices and the synthetic benchmark's factors refer to). Errors about the file as a whole
    (not found, no header, missing fields, no rows for ``split``) still raise :class:`CaptionFileError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"captions file not found: {path}")
    root = Path(images_root) if images_root is not None else path.parent
    with _open_table(path) as (header, rows):
        _check_fields(path, header, split)
        pairs, problems, counts = _select_pairs(path, rows, split)
    return _build(root, pairs, counts), problems


def load_captions_file(
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> CaptionedImages:
    """Load a ``.csv``/``.tsv``/``.jsonl`` captions table; any unusable row is a :class:`CaptionFileError`.

    Each row holds ``image`` (a path relative to ``images_root``, which defaults to the
    file's folder) and ``caption``; an image may have several rows in any order. Images are
    numbered in order of first appearance. If ``split`` is given, only rows whose ``split``
    field equals it are kept, and the file must have a ``split`` field. Training skips bad rows
    instead (:func:`read_captions_file`, :mod:`disncl.data.validate`).
    """
    ds, problems = read_captions_file(path, images_root, split)
    _raise_problems(problems)
    return ds


def check_images_exist(ds: CaptionedImages) -> list[str]:
    """The entries of ``ds.image_paths`` that are not files under ``ds.root``."""
    return [rel for rel in ds.image_paths if not (ds.root / rel).is_file()]


@dataclass
class _KarpathyImage:
    """One usable ``images`` entry: its relative path and usable captions."""

    rel: str
    captions: list[str]


def _karpathy_image(json_path: Path, i: int, entry: object, problems: list[Problem]) -> _KarpathyImage | None:
    """The image path and usable captions of one ``images`` entry; unusable parts go to ``problems``."""
    source = str(json_path)
    if not isinstance(entry, dict):
        problems.append(
            Problem("malformed_row", source, f"images[{i}]", f"a {type(entry).__name__}, expected an object")
        )
        return None
    filename, reason, detail = _text_field(entry.get("filename"), "filename")
    subdir = entry.get("filepath")
    if not reason and isinstance(subdir, str) and subdir:
        _, reason, detail = _text_field(subdir, "filepath")
    if reason:
        problems.append(Problem(reason, source, f"images[{i}]", detail))
        return None
    rel = _normalize_image_path(posixpath.join(subdir, filename) if isinstance(subdir, str) and subdir else filename)
    sentences = entry.get("sentences")
    if not isinstance(sentences, list):
        problems.append(Problem("malformed_row", source, f"images[{i}] ({rel})", "no 'sentences' list"))
        return None
    captions: list[str] = []
    first_j: dict[str, int] = {}
    for j, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        caption, reason, detail = _text_field(raw, "raw", "empty_caption")
        where = f"images[{i}] ({rel}) sentences[{j}]"
        if reason:
            problems.append(Problem(reason, source, where, detail))
            continue
        earlier = first_j.setdefault(caption, j)
        if earlier != j:
            problems.append(Problem("duplicate_row", source, where, f"same caption as sentences[{earlier}]"))
        captions.append(caption)
    return _KarpathyImage(rel, captions)


def read_karpathy(
    json_path: str | os.PathLike[str],
    images_root: str | os.PathLike[str],
    split: str,
    include_restval: bool = True,
) -> tuple[CaptionedImages, list[Problem]]:
    """Like :func:`load_karpathy`, but skips unusable entries and captions and returns them as problems.

    Skipped: entries that are not objects or lack a filename or a sentences list, empty or
    non-text captions, text that is not valid UTF-8, an image named by an earlier entry (the
    first is kept), and images left without captions. Repeated sentences of one image are kept
    but noted: they are the dataset's own annotations, and the standard test protocols count them.
    """
    json_path = Path(json_path)
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"unknown Karpathy split {split!r}; use one of {', '.join(KARPATHY_SPLITS)}")
    if not json_path.is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {json_path}")
    try:
        with open(json_path, encoding="utf-8", errors="surrogateescape") as fh:
            data = json.load(fh)
    except _JSON_ERRORS as err:
        raise CaptionFileError(f"{json_path}: not valid JSON ({_json_message(err)})") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CaptionFileError(
            f"{json_path}: expected a JSON object with an 'images' list (Karpathy split format)"
        )

    wanted = {split, "restval"} if split == "train" and include_restval else {split}
    pairs: list[tuple[str, str]] = []
    problems: list[Problem] = []
    first_entry: dict[str, int] = {}
    splits_seen: set[str] = set()
    n_entries = n_sentences = 0
    for i, entry in enumerate(data["images"]):
        # An entry that is not an object has no readable split, so every split reports it.
        if isinstance(entry, dict):
            entry_split = str(entry.get("split", ""))
            splits_seen.add(entry_split)
            if entry_split not in wanted:
                continue
            sentences = entry.get("sentences")
            n_sentences += len(sentences) if isinstance(sentences, list) else 0
        n_entries += 1
        image = _karpathy_image(json_path, i, entry, problems)
        if image is None:
            continue
        first = first_entry.setdefault(image.rel, i)
        if first != i:
            where = f"images[{i}] ({image.rel})"
            problems.append(Problem("duplicate_image", str(json_path), where, f"same image as images[{first}]"))
            continue
        if not image.captions:
            problems.append(Problem("no_captions", str(json_path), f"images[{i}] ({image.rel})", "no usable caption"))
            continue
        pairs.extend((image.rel, caption) for caption in image.captions)
    if n_entries == 0:
        found = ", ".join(repr(s) for s in sorted(splits_seen)) or "none"
        raise CaptionFileError(f"{json_path}: no images in split {split!r}; splits found: {found}")
    return _build(Path(images_root), pairs, (n_entries, n_sentences)), problems


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
    training images. Images and captions keep the file's order; every entry is one image. Any
    unusable entry is a :class:`CaptionFileError`; training skips them instead (:func:`read_karpathy`).
    """
    ds, problems = read_karpathy(json_path, images_root, split, include_restval)
    _raise_problems(problems)
    return ds


def split_file(root: str | os.PathLike[str], split: str) -> Path:
    """``root/{split}.csv``, ``.tsv`` or ``.jsonl``: exactly one must exist."""
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
    return found[0]


def read_dataset_dir(root: str | os.PathLike[str], split: str) -> tuple[CaptionedImages, list[Problem]]:
    """Like :func:`load_dataset_dir`, but skips unusable rows (see :func:`read_captions_file`)."""
    return read_captions_file(split_file(root, split), images_root=root)


def load_dataset_dir(root: str | os.PathLike[str], split: str) -> CaptionedImages:
    """Load ``root/{split}.csv``, ``.tsv`` or ``.jsonl`` (exactly one must exist).

    Image paths in the file are relative to ``root``.
    """
    return load_captions_file(split_file(root, split), images_root=root)


def write_captions_csv(path: str | os.PathLike[str], ds: CaptionedImages) -> Path:
    """Write ``ds`` as an ``image,caption`` CSV, atomically; :func:`load_captions_file` reads it back.

    Image paths stay relative to ``ds.root``, so load it with ``images_root=ds.root`` if the CSV
    lives elsewhere. Images without any caption are not representable and are dropped.
    """

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            plain = csv.writer(fh, lineterminator="\n")
            # csv quotes only the characters of its line terminator, so an unquoted lone "\r" would
            # end the row early on reading: quote every field of such rows.
            quoted = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
            plain.writerow(["image", "caption"])
            for i, caption in zip(ds.cap2img, ds.captions, strict=True):
                row = (ds.image_paths[i], caption)
                (quoted if any("\r" in field for field in row) else plain).writerow(row)

    return atomic_write(path, write)
