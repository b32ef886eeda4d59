"""Turn a split as read from disk into a clean one, plus a counted report of what was skipped and why.

Bad rows are common in real caption data: a missing or truncated image, an empty caption, a line
saved in Latin-1, a row pasted twice. By default each unusable entry is skipped and counted in a
:class:`DataReport` (what, how many, the first few with file and line); with ``strict`` the same
report is raised as a :class:`DataError` instead. Either way nothing is dropped silently and no
error surfaces from deep inside PIL or torch.

Rules, applied in this order:

* rows the captions reader cannot use (malformed, empty caption, not UTF-8) are skipped where they
  are read (:mod:`disncl.data.formats`), and so is an image entry repeating an earlier one (the
  first is kept); a repeated (image, caption) row is kept but noted, since template or
  crowd-sourced captions repeat legitimately;
* an image that is missing, undecodable/truncated or over :data:`~disncl.data.images.MAX_PIXELS`
  is dropped with all its captions (CMYK, 16-bit, greyscale, palette and alpha images are fine:
  they are converted to RGB);
* an image left without any caption is dropped.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from disncl.data.images import MISSING, TOO_LARGE, ImageDecodeError, check_image
from disncl.data.pairs import CaptionedImages
from disncl.io import atomic_write_json

# Reason codes (the keys of report counts and JSON) and how the report names them, in table order.
REASONS: dict[str, str] = {
    "malformed_row": "malformed row",
    "empty_caption": "empty caption",
    "not_utf8": "text not valid UTF-8",
    "duplicate_image": "duplicate image entry (kept the first)",
    "missing_image": "image file missing",
    "undecodable_image": "image undecodable or truncated",
    "image_too_large": "image over the pixel limit",
    "no_captions": "image with no usable caption",
    "duplicate_row": "repeated image-caption row (kept)",
}
# Reasons that are reported but not skipped: they neither make a report "not ok" nor fail strict mode.
NOTES = frozenset({"duplicate_row"})
_IMAGE_REASONS = {MISSING: "missing_image", TOO_LARGE: "image_too_large"}
# Examples per reason: in the printed table, and kept in the report (and its JSON).
_SHOWN_EXAMPLES = 3
_KEPT_EXAMPLES = 100


class DataError(ValueError):
    """A split has unusable entries and ``strict`` is on, or no usable entry is left at all."""


@dataclass(frozen=True)
class Problem:
    """One skipped entry: ``reason`` (a key of :data:`REASONS`), where it is, and what is wrong."""

    reason: str
    source: str
    where: str
    detail: str

    def __str__(self) -> str:
        place = f"{self.source}, {self.where}" if self.where else self.source
        return f"{place}: {self.detail}"


@dataclass
class DataReport:
    """What a split held on disk, what was kept, and every skipped entry counted by reason.

    ``examples`` keeps the first few problems of each reason (file and line or image path);
    ``counts`` has them all.
    """

    split: str
    source: str
    images_read: int
    captions_read: int
    images_kept: int
    captions_kept: int
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls, split: str, source: str, read: tuple[int, int], kept: CaptionedImages, problems: list[Problem]
    ) -> DataReport:
        counts = Counter(p.reason for p in problems)
        examples: dict[str, list[str]] = {}
        for p in problems:
            shown = examples.setdefault(p.reason, [])
            if len(shown) < _KEPT_EXAMPLES:
                shown.append(str(p))
        order = list(REASONS)
        return cls(
            split=split,
            source=source,
            images_read=read[0],
            captions_read=read[1],
            images_kept=kept.n_images,
            captions_kept=kept.n_captions,
            counts={r: counts[r] for r in sorted(counts, key=order.index)},
            examples={r: examples[r] for r in sorted(examples, key=order.index)},
        )

    @property
    def ok(self) -> bool:
        """True when nothing was skipped (notes such as repeated rows do not count)."""
        return all(reason in NOTES for reason in self.counts)

    def format_table(self) -> str:
        """A short plain-text summary: kept counts, then one line per reason with the first examples."""
        head = (
            f"data: {self.split} split ({self.source}): kept {self.images_kept} of {self.images_read} images "
            f"and {self.captions_kept} of {self.captions_read} captions"
        )
        if not self.counts:
            return head
        width = max(len(REASONS[r]) for r in self.counts)
        lines = [head + ":"]
        for reason, count in self.counts.items():
            lines.append(f"  {REASONS[reason]:<{width}}  {count:>7}")
            shown = self.examples[reason][:_SHOWN_EXAMPLES]
            lines.extend(f"      {example}" for example in shown)
            if count > len(shown):
                lines.append(f"      … and {count - len(shown)} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "source": self.source,
            "images": {"read": self.images_read, "kept": self.images_kept},
            "captions": {"read": self.captions_read, "kept": self.captions_kept},
            "skipped": dict(self.counts),
            "examples": {r: list(e) for r, e in self.examples.items()},
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the report as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())


def _image_problems(ds: CaptionedImages, num_threads: int) -> list[tuple[int, Problem]]:
    """Check every image file of ``ds`` in a thread pool (PIL releases the GIL while decoding)."""
    n_captions = np.bincount(ds.cap2img, minlength=ds.n_images)

    def check(i: int) -> tuple[int, Problem] | None:
        path = ds.image_path(i)
        try:
            check_image(path)
        except ImageDecodeError as err:
            reason = _IMAGE_REASONS.get(err.kind, "undecodable_image")
            detail = str(err).removeprefix(f"cannot decode image {path}: ")
            captions = "its caption" if n_captions[i] == 1 else f"its {n_captions[i]} captions"
            return i, Problem(reason, str(path), "", f"skipped with {captions}: {detail}")
        return None

    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        # disable=None: a progress bar on a terminal only, not in logs.
        results = tqdm(pool.map(check, range(ds.n_images)), total=ds.n_images, desc="checking images",
                       unit="img", disable=None, leave=False)
        return [r for r in results if r is not None]


def validate_split(
    ds: CaptionedImages,
    problems: list[Problem] | None = None,
    *,
    split: str = "",
    source: str = "",
    strict: bool = False,
    num_threads: int = 2,
) -> tuple[CaptionedImages, DataReport]:
    """Drop the unusable images of ``ds`` (and their captions) and report everything skipped.

    ``problems`` are the rows the reader already skipped (see :func:`disncl.data.formats.read_captions_file`
    and :func:`~disncl.data.formats.read_karpathy`).
    With ``strict`` any problem raises :class:`DataError` listing them; an empty result always does.
    The returned split keeps ``ds.source_counts`` (or takes ``ds``'s own counts), so a noise index
    made for the uncleaned split can be recognised later.
    """
    problems = list(problems or [])
    bad_images = _image_problems(ds, num_threads)
    problems.extend(p for _, p in bad_images)
    keep_images = np.ones(ds.n_images, dtype=bool)
    keep_images[[i for i, _ in bad_images]] = False
    keep_captions = keep_images[ds.cap2img]

    has_caption = np.zeros(ds.n_images, dtype=bool)
    has_caption[ds.cap2img[keep_captions]] = True
    for i in np.flatnonzero(keep_images & ~has_caption):
        problems.append(Problem("no_captions", str(ds.image_path(i)), "", "no caption row left for this image"))
    keep_images &= has_caption

    read = ds.source_counts or (ds.n_images, ds.n_captions)
    clean = replace(ds.subset(keep_images, keep_captions), source_counts=read)
    report = DataReport.build(split, source or str(ds.root), read, clean, problems)
    if strict and not report.ok:
        raise DataError(
            f"{report.format_table()}\n"
            "Strict mode (--strict / data.strict) refuses bad data: fix or remove these entries, "
            "or drop --strict to skip them."
        )
    if clean.n_captions == 0:
        raise DataError(
            f"{report.format_table()}\nNo usable image-caption pair is left in the {split or 'given'} split. "
            "Check that the image paths in the captions file are relative to the dataset folder "
            "(data.root, or data.images_root for Karpathy JSON)."
        )
    return clean, report
