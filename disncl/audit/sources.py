"""Where an audit's pairs come from: a user's folder or file, turned into a run's ``data`` section.

Accepted (checked in this order):

* a Karpathy split JSON (a ``.json`` file, or the only ``.json`` in the folder that has ``images``);
* a folder of WebDataset-style tar shards named ``{split}-*.tar`` (``train`` and ``val``);
* a dataset folder with ``train.csv|tsv|jsonl`` (and ``val.*``), e.g. ``python -m disncl synth``'s;
* a single captions table (a file, or the only table in the folder) with ``image`` and ``caption``
  fields, its image paths relative to its folder (or ``--images``).

A table or dataset folder without a validation split is *staged*: its usable rows are written to
``AUDIT/data/pairs.csv`` with a ``split`` column, every row in ``train`` and a seeded sample of
images (with all their captions) also in ``val``. The audit scores every pair, so none is held
out; that in-sample validation only picks the checkpoint, and noisy pairs in it make its recall a
lower bound. Unusable rows and images are skipped and reported (``data_report_source.json``).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disncl.data.formats import CAPTION_SUFFIXES, read_captions_file
from disncl.data.pairs import CaptionedImages
from disncl.data.validate import validate_split
from disncl.io import atomic_write

STAGED_FILE = "pairs.csv"


@dataclass(frozen=True)
class AuditSource:
    """The ``data.*`` overrides that read the audited pairs, and how they were found."""

    kind: str
    description: str
    data: dict[str, str]


def resolve_source(path: Path, images: Path | None, stage_dir: Path, seed: int = 0) -> AuditSource:
    """Find the pairs at ``path`` (see the module docstring); stage them under ``stage_dir`` if needed."""
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() == ".json":
            return _karpathy(path, images or path.parent)
        if path.suffix.lower() in CAPTION_SUFFIXES:
            return _table(path, images or path.parent, stage_dir, seed)
        raise ValueError(f"--data {path}: expected a folder, a captions table ({'/'.join(CAPTION_SUFFIXES)}) "
                         "or a Karpathy .json")
    karpathy = [p for p in sorted(path.glob("*.json")) if _is_karpathy(p)]
    if len(karpathy) == 1:
        return _karpathy(karpathy[0], images or path)
    if list(path.glob("train-*.tar")):
        if not list(path.glob("val-*.tar")):
            raise FileNotFoundError(f"{path}: train-*.tar shards but no val-*.tar; pack a validation split with "
                                    "`python -m disncl shards`")
        shards = {"data.shards": f"{path}/{{split}}-*.tar"}
        return AuditSource("shards", f"tar shards {path}/{{train,val}}-*.tar", shards)
    split_tables = {s: _one(path, s) for s in ("train", "val")}
    if split_tables["train"] is not None:
        if split_tables["val"] is not None:
            return AuditSource("folder", f"dataset folder {path} (train and val splits)", {"data.root": str(path)})
        return _table(split_tables["train"], images or path, stage_dir, seed)
    tables = [p for p in sorted(path.iterdir()) if p.suffix.lower() in CAPTION_SUFFIXES and p.is_file()]
    if len(tables) == 1:
        return _table(tables[0], images or path, stage_dir, seed)
    found = ", ".join(p.name for p in tables) or "none"
    raise FileNotFoundError(
        f"--data {path}: no pairs found. Expected a captions table with image,caption columns (one "
        f"{'/'.join(CAPTION_SUFFIXES)} file, or train.* and val.*), a Karpathy .json or train-*.tar shards; "
        f"tables found: {found}"
    )


def _one(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}{s}" for s in CAPTION_SUFFIXES if (folder / f"{split}{s}").is_file()]
    if len(found) > 1:
        raise ValueError(f"{folder}: several captions files for split {split!r}; keep exactly one")
    return found[0] if found else None


def _is_karpathy(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return '"images"' in head


def _karpathy(path: Path, images: Path) -> AuditSource:
    return AuditSource("karpathy", f"Karpathy split file {path} (images under {images})",
                       {"data.karpathy_json": str(path), "data.images_root": str(images)})


def _table(table: Path, images: Path, stage_dir: Path, seed: int) -> AuditSource:
    """A table with train and val values in a ``split`` column as it is; any other table staged."""
    if _splits_in(table) >= {"train", "val"}:
        return AuditSource("table", f"captions table {table} (its split column)",
                           {"data.captions_file": str(table), "data.images_root": str(images)})
    staged = stage_dir / STAGED_FILE
    if not staged.is_file():
        ds, problems = read_captions_file(table, images_root=images)
        clean, report = validate_split(ds, problems, split="source", source=str(table))
        if not report.ok:
            print(report.format_table(), file=sys.stderr)
        stage_dir.mkdir(parents=True, exist_ok=True)
        report.save(stage_dir / "data_report_source.json")
        write_staged(staged, clean, seed)
    return AuditSource(
        "staged", f"captions table {table} (images under {images}), every pair audited, validation in-sample",
        {"data.captions_file": str(staged), "data.images_root": str(images)},
    )


def _splits_in(table: Path) -> set[str]:
    """The values of a CSV/TSV table's ``split`` column (empty for JSONL or without one)."""
    if table.suffix.lower() == ".jsonl":
        return set()
    with open(table, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if table.suffix.lower() == ".tsv" else ",")
        if reader.fieldnames is None or "split" not in reader.fieldnames:
            return set()
        return {(row.get("split") or "").strip() for row in reader}


def validation_images(n_images: int, seed: int) -> np.ndarray:
    """Sorted image indices of the in-sample validation split: 10 % of the images, 20 to 1,000."""
    n_val = min(n_images, max(20, min(1000, n_images // 10)))
    return np.sort(np.random.default_rng(seed).choice(n_images, size=n_val, replace=False))


def write_staged(path: Path, ds: CaptionedImages, seed: int) -> Path:
    """Every pair of ``ds`` as ``train``, then those of :func:`validation_images` again as ``val`` (atomically)."""
    val = np.zeros(ds.n_images, dtype=bool)
    val[validation_images(ds.n_images, seed)] = True

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            # Every field quoted: csv leaves a lone "\r" unquoted, which would end the row early on reading.
            w = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
            w.writerow(["image", "caption", "split"])
            for split, keep in (("train", None), ("val", val)):
                for image, caption in zip(ds.cap2img, ds.captions, strict=True):
                    if keep is None or keep[image]:
                        w.writerow([ds.image_paths[image], caption, split])

    return atomic_write(path, write)
