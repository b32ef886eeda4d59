"""Stream a split from WebDataset-style tar shards (img2dataset, open_clip) without holding its pixels.

A shard is an uncompressed ``.tar`` whose members are grouped into samples by key: the member path
up to the first dot of its file name (``dir/000123.jpg`` and ``dir/000123.txt`` form sample
``dir/000123``). A sample needs an image (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, …) and its
caption(s), taken in this order of precedence:

1. ``KEY.json`` with a ``"captions"`` list (several captions of one image);
2. ``KEY.txt`` (one caption, as img2dataset writes it; its ``KEY.json`` then holds only metadata);
3. ``KEY.json`` with a ``"caption"`` string.

:func:`index_shards` reads the tar headers and the caption members once; images stay in the tar and
are located by byte offset. :class:`ShardImages` decodes them on demand with the same code as the
folder loader (:func:`disncl.data.images.decode_image_bytes`), so a batch equals the in-memory
:class:`~disncl.data.images.ImageArray` pixel for pixel. Samples that cannot be used (no image, no
caption, a corrupt, truncated or huge image, unreadable caption JSON) are skipped and counted in a
:class:`~disncl.data.validate.DataReport` with the folder loader's reasons, so every index handed to
the trainer decodes. A sample with several images keeps the first, and is counted too.

Shard lists: a brace pattern ``data/{00000..00009}.tar`` (also ``{a,b}``), a glob ``data/*.tar`` or
a folder (every ``*.tar`` in it, sorted). ``data.shards`` must contain ``{split}``, which is
replaced by the split's name: ``data/shards/{split}-*.tar``.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import sys
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm

from disncl.config import DataConfig
from disncl.data.images import TOO_LARGE, ImageDecodeError, decode_image_bytes
from disncl.data.pairs import CaptionedImages
from disncl.data.validate import DataError, DataReport, Problem

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
SPLIT_PLACEHOLDER = "{split}"

# Verification decodes each image to one pixel: the same code path as training (so an image that
# passes decodes later), at the cost of a JPEG's smallest DCT scale only (as images.check_image).
_VERIFY_SIZE = 1
# Open shard files kept per ShardImages; more shards than this are reopened as reads move along.
_MAX_OPEN_SHARDS = 64
_SHARD_ADVICE = "Re-create the shard, or remove the sample from it."


class ShardError(ValueError):
    """A shard pattern that matches nothing, a shard that is not a readable uncompressed tar, or no usable sample."""


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and ``{000..012}`` ranges (zero padding kept), as bash and ``braceexpand`` do.

    Groups holding neither a comma nor ``..`` (e.g. ``{split}``) are left as they are.
    """
    for match in re.finditer(r"\{([^{}]*)\}", pattern):
        body = match.group(1)
        numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
        if numeric:
            first, last = numeric.groups()
            width = max(len(first), len(last)) if first.startswith("0") or last.startswith("0") else 0
            step = 1 if int(last) >= int(first) else -1
            items = [str(i).zfill(width) for i in range(int(first), int(last) + step, step)]
        elif "," in body:
            items = body.split(",")
        else:
            continue
        head, tail = pattern[: match.start()], pattern[match.end() :]
        return [head + item + rest for item in items for rest in expand_braces(tail)]
    return [pattern]


def resolve_shards(pattern: str) -> list[Path]:
    """The shard files a pattern names, in pattern order (globs and folders sorted), each once."""
    expanded = [os.path.expanduser(p) for p in expand_braces(pattern)]
    if len(expanded) == 1 and os.path.isdir(expanded[0]):
        found = sorted(Path(expanded[0]).glob("*.tar"))
        if not found:
            raise ShardError(
                f"shard folder {expanded[0]} holds no .tar files; write some with `python -m disncl shards`"
            )
        return found
    paths: list[Path] = []
    missing: list[str] = []
    for item in expanded:
        if glob.has_magic(item):
            matches = [Path(m) for m in sorted(glob.glob(item)) if os.path.isfile(m)]
            if not matches:
                missing.append(item)
            paths.extend(matches)
        elif os.path.isfile(item):
            paths.append(Path(item))
        else:
            missing.append(item)
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ShardError(
            f"shard pattern {pattern!r}: no file at {listed}; check the folder, the brace range or the glob"
        )
    return list(dict.fromkeys(paths))


@dataclass(frozen=True, eq=False)
class ShardLocations:
    """Where each image's encoded bytes are: shard file, byte offset and length (no pixels)."""

    shards: tuple[str, ...]
    shard: np.ndarray
    offset: np.ndarray
    length: np.ndarray

    def __len__(self) -> int:
        return len(self.shard)


@dataclass(frozen=True, kw_only=True)
class ShardedCaptions(CaptionedImages):
    """A split read from tar shards: captions in memory, images located in the shards.

    ``image_paths`` are labels ``SHARD.tar/MEMBER`` relative to ``root`` (the shards' common
    folder); they name an image in reports and ``pair_scores.csv`` but are not files. ``report``
    counts the samples read, kept and skipped.
    """

    locations: ShardLocations
    report: DataReport

    def image_path(self, i: int) -> Path:
        raise ShardError(
            f"image {self.image_paths[i]} lives inside a tar shard, not in a file; "
            "read it with disncl.data.shards.ShardImages"
        )


@dataclass
class _Sample:
    images: list[tarfile.TarInfo] = field(default_factory=list)
    txt: tarfile.TarInfo | None = None
    json: tarfile.TarInfo | None = None


@dataclass
class _ShardIndex:
    """What one shard contributes: per kept sample its label, image location and captions."""

    labels: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    captions: list[list[str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    samples_read: int = 0
    captions_read: int = 0


def _split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension): the path up to the first dot of the file name, and the rest."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


def _members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of ``tf``; a shard cut short (an interrupted download) ends at its last whole header.

    The member the cut falls in is still listed: its data runs past the end of the file, which the
    caller reports.
    """
    while True:
        try:
            info = tf.next()
        except tarfile.ReadError:
            if tf.offset == 0:
                raise
            return
        if info is None:
            return
        yield info


def _group_samples(tf: tarfile.TarFile) -> dict[str, _Sample]:
    """Samples by key, in order of first appearance; extra fields (``.cls``, ``.parquet``, …) are ignored."""
    samples: dict[str, _Sample] = {}
    for info in _members(tf):
        if not info.isfile():
            continue
        key, ext = _split_member_name(info.name)
        sample = samples.setdefault(key, _Sample())
        if ext in IMAGE_EXTENSIONS:
            sample.images.append(info)
        elif ext == "txt":
            sample.txt = info
        elif ext == "json":
            sample.json = info
    return samples


def _read_member(fh: BinaryIO, info: tarfile.TarInfo) -> bytes:
    fh.seek(info.offset_data)
    return fh.read(info.size)


# Why a member cannot be used: (a reason key of disncl.data.validate.REASONS, what is wrong).
_Issue = tuple[str, str]


def _captions(fh: BinaryIO, sample: _Sample, file_size: int) -> list[str] | _Issue:
    """The sample's captions, or why it has none usable (see the module docstring for precedence)."""
    for info in (sample.json, sample.txt):
        if info is not None and info.offset_data + info.size > file_size:
            return "malformed_row", f"{info.name} is cut off: the shard is truncated"
    meta: Any = None
    if sample.json is not None:
        name = sample.json.name
        try:
            meta = json.loads(_read_member(fh, sample.json).decode("utf-8-sig"))
        except UnicodeDecodeError:
            return "not_utf8", f"{name} is not UTF-8 text"
        except json.JSONDecodeError as err:
            return "malformed_row", f"{name} is not valid JSON ({err.msg})"
        if not isinstance(meta, dict):
            return "malformed_row", f"{name} holds a {type(meta).__name__}, expected an object"
        if "captions" in meta:
            caps = meta["captions"]
            if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
                return "malformed_row", f"{name}: 'captions' must be a non-empty list of strings"
            if not all(c.strip() for c in caps):
                return "empty_caption", f"{name}: 'captions' holds an empty caption"
            return [c.strip() for c in caps]
    if sample.txt is not None:
        try:
            text = _read_member(fh, sample.txt).decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            return "not_utf8", f"{sample.txt.name} is not UTF-8 text"
        return [text] if text else ("empty_caption", f"{sample.txt.name} is empty")
    if meta is not None and "caption" in meta:
        caption = meta["caption"]
        if not isinstance(caption, str) or not caption.strip():
            return "empty_caption", f"{sample.json.name}: 'caption' is empty or not text"
        return [caption.strip()]
    return "no_captions", "no KEY.txt, and no KEY.json with 'captions' or 'caption'"


def _image_issue(fh: BinaryIO, image: tarfile.TarInfo, label: str) -> _Issue | None:
    """Why the image member does not decode, or ``None``."""
    try:
        decode_image_bytes(_read_member(fh, image), _VERIFY_SIZE, label, _SHARD_ADVICE)
    except ImageDecodeError as err:
        return ("image_too_large" if err.kind == TOO_LARGE else "undecodable_image"), str(err)
    return None


def _index_shard(path: Path, label_prefix: str, verify: bool) -> _ShardIndex:
    """Read one shard's headers and captions (and, with ``verify``, decode every image once)."""
    out = _ShardIndex()
    file_size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            raise ShardError(
                f"{path} is gzip-compressed; images are read by seeking into the shard, which compressed tars "
                f"do not allow: decompress it (gunzip -c {path.name} > {path.stem}.tar)"
            )
    try:
        with open(path, "rb") as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            for key, sample in _group_samples(tf).items():
                out.samples_read += 1
                caps = _captions(fh, sample, file_size)
                if isinstance(caps, list):
                    out.captions_read += len(caps)

                def skip(reason: str, detail: str, key: str = key) -> None:
                    out.problems.append(Problem(reason, str(path), key, detail))

                if not sample.images:
                    skip("missing_image", "no image member (KEY.jpg, .png, .webp, …) for this key")
                    continue
                image = sample.images[0]
                if image.offset_data + image.size > file_size:
                    skip("undecodable_image", f"{image.name} is cut off: the shard is truncated")
                    continue
                if isinstance(caps, tuple):
                    skip(*caps)
                    continue
                if len(sample.images) > 1:
                    skip("duplicate_image", f"kept {image.name}, not {', '.join(m.name for m in sample.images[1:])}")
                label = f"{label_prefix}{image.name}"
                issue = _image_issue(fh, image, label) if verify else None
                if issue is not None:
                    skip(*issue)
                    continue
                out.labels.append(label)
                out.offsets.append(image.offset_data)
                out.lengths.append(image.size)
                out.captions.append(caps)
    except tarfile.ReadError as err:
        raise ShardError(
            f"{path} is not a tar file ({err}); give shards written by tar, img2dataset or `python -m disncl shards`"
        ) from err
    return out


def index_shards(
    shards: Sequence[Path], split: str = "", source: str = "", verify: bool = True, num_threads: int = 2
) -> ShardedCaptions:
    """Index ``shards`` into a split; images are numbered in shard order, then sample order.

    ``verify`` decodes every image once (one sequential read of the shards) so that corrupt ones
    are skipped here instead of stopping training later; without it, a corrupt image raises
    :class:`~disncl.data.images.ImageDecodeError` when a batch reaches it. ``split`` and
    ``source`` name the split in the report.
    """
    if not shards:
        raise ShardError("no shards given")
    shards = [Path(s) for s in shards]
    root = Path(os.path.commonpath([os.path.abspath(s.parent) for s in shards]))
    prefixes = [Path(os.path.relpath(os.path.abspath(s), root)).as_posix() + "/" for s in shards]
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        # disable=None: a progress bar on a terminal only, not in logs.
        parts = list(tqdm(pool.map(lambda i: _index_shard(shards[i], prefixes[i], verify), range(len(shards))),
                          total=len(shards), desc="indexing shards", unit="shard", disable=None, leave=False))
    labels: list[str] = []
    captions: list[str] = []
    cap2img: list[int] = []
    shard_of: list[int] = []
    for s, part in enumerate(parts):
        for label, caps in zip(part.labels, part.captions, strict=True):
            cap2img.extend([len(labels)] * len(caps))
            labels.append(label)
            captions.extend(caps)
        shard_of.extend([s] * len(part.labels))
    read = (sum(p.samples_read for p in parts), sum(p.captions_read for p in parts))
    problems = [problem for p in parts for problem in p.problems]
    source = source or (str(shards[0]) if len(shards) == 1 else f"{len(shards)} shards under {root}")
    if not labels:
        listed = "".join(f"\n  {p}" for p in problems[:5])
        raise ShardError(
            f"no usable sample in {source} ({read[0]} samples read); each needs KEY.jpg|png|webp and KEY.txt "
            f"or KEY.json with captions. First problems:{listed or ' none (the shards are empty)'}"
        )
    locations = ShardLocations(
        shards=tuple(str(s) for s in shards),
        shard=np.asarray(shard_of, dtype=np.int32),
        offset=np.concatenate([np.asarray(p.offsets, dtype=np.int64) for p in parts]),
        length=np.concatenate([np.asarray(p.lengths, dtype=np.int64) for p in parts]),
    )
    kept = CaptionedImages(root, labels, captions, np.asarray(cap2img, dtype=np.int64), source_counts=read)
    return ShardedCaptions(
        root=root,
        image_paths=labels,
        captions=captions,
        cap2img=kept.cap2img,
        source_counts=read,
        locations=locations,
        report=DataReport.build(split, source, read, kept, problems),
    )


def load_shard_split(
    cfg: DataConfig, split: str, report_dir: str | os.PathLike[str] | None = None
) -> ShardedCaptions:
    """The split named ``split`` of ``cfg.shards``, reported like a captions folder's split.

    Skipped samples are summarised on stderr, or refused with ``data.strict``; with ``report_dir``
    the report is also saved there as ``data_report_{split}.json``.
    """
    if cfg.root or cfg.karpathy_json:
        raise ShardError(
            "data.shards is set together with data.root or data.karpathy_json; set exactly one source "
            "(e.g. --set data.root= to clear the folder)"
        )
    if SPLIT_PLACEHOLDER not in cfg.shards:
        raise ShardError(
            f"data.shards {cfg.shards!r} must contain {SPLIT_PLACEHOLDER}, replaced by each split's name, "
            "e.g. data/shards/{split}-*.tar or data/shards/{split}-{00000..00009}.tar"
        )
    pattern = cfg.shards.replace(SPLIT_PLACEHOLDER, split)
    ds = index_shards(resolve_shards(pattern), split, pattern)
    if cfg.strict and not ds.report.ok:
        raise DataError(
            f"{ds.report.format_table()}\nStrict mode (data.strict) refuses bad data: fix or remove these "
            "samples from the shards, or set data.strict=false to skip them."
        )
    if not ds.report.ok:
        print(ds.report.format_table(), file=sys.stderr)
    if report_dir is not None:
        ds.report.save(Path(report_dir) / f"data_report_{split}.json")
    return ds


class ShardImages:
    """A split's images decoded on demand from its shards; indexes like :class:`~disncl.data.images.ImageArray`.

    Holds only the byte locations (20 bytes per image) and up to ``_MAX_OPEN_SHARDS`` open files.
    Reads are serialised by a lock and decoding runs on ``num_threads`` threads, so one object may
    be used from several threads. Pickling drops the open files and the thread pool.
    """

    def __init__(self, locations: ShardLocations, size: int, num_threads: int = 2) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"image size must be a positive integer number of pixels, got {size!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        self._locations = locations
        self._size = size
        self._num_threads = num_threads
        self._lock = threading.Lock()
        self._files: OrderedDict[int, BinaryIO] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"locations": self._locations, "size": self._size, "num_threads": self._num_threads}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["locations"], state["size"], state["num_threads"])

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._locations)

    def close(self) -> None:
        """Close the open shard files and stop the decoding threads (reading again reopens them)."""
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def _file(self, shard: int) -> BinaryIO:
        """The open file of ``shard``, closing the least recently used one beyond the limit (lock held)."""
        fh = self._files.get(shard)
        if fh is None:
            fh = open(self._locations.shards[shard], "rb")  # kept open across reads, closed by close()
            self._files[shard] = fh
            if len(self._files) > _MAX_OPEN_SHARDS:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(shard)
        return fh

    def _read(self, i: int) -> bytes:
        loc = self._locations
        with self._lock:
            fh = self._file(int(loc.shard[i]))
            fh.seek(int(loc.offset[i]))
            data = fh.read(int(loc.length[i]))
        if len(data) != loc.length[i]:
            raise ImageDecodeError(
                f"image {i} of {loc.shards[loc.shard[i]]} ends early: the shard changed after it was indexed; "
                "restart so the shards are indexed again",
                [loc.shards[loc.shard[i]]],
            )
        return data

    def _decode(self, i: int) -> np.ndarray:
        where = f"{self._locations.shards[self._locations.shard[i]]} (image {i} at byte {self._locations.offset[i]})"
        return decode_image_bytes(self._read(i), self._size, where, _SHARD_ADVICE)

    def __getitem__(self, idx: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        n = len(self)
        if isinstance(idx, (int, np.integer)) and not isinstance(idx, bool):
            if not -n <= idx < n:
                raise IndexError(f"image index {idx} out of range for {n} images")
            return self._decode(int(idx) % n)
        flat = np.arange(n)[idx] if isinstance(idx, slice) else np.asarray(idx)
        if flat.ndim != 1 or not (flat.size == 0 or np.issubdtype(flat.dtype, np.integer)):
            raise IndexError(f"index images with an int, a slice or a 1-D integer array, got {idx!r}")
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"image indices must lie in [-{n}, {n}), got {flat.min()}..{flat.max()}")
        # A noisy batch may name one image several times: decode each once.
        unique, inverse = np.unique(flat % n if n else flat, return_inverse=True)
        out = np.empty((len(unique), self._size, self._size, 3), dtype=np.uint8)
        if self._num_threads > 1 and len(unique) > 1:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self._num_threads)
                pool = self._pool
            for k, pixels in enumerate(pool.map(self._decode, unique.tolist())):
                out[k] = pixels
        else:
            for k, i in enumerate(unique.tolist()):
                out[k] = self._decode(i)
        return out[inverse.reshape(-1)]
