"""Pack one split of a captions folder into WebDataset-style tar shards (``python -m disncl shards``).

The split is read as training reads it (:func:`disncl.data.dataset.load_split`): unusable rows and
images are left out and reported, so the shards hold exactly the pairs a run on the folder uses.
Each image becomes one sample: ``KEY.<ext>`` holding the original file's bytes (never re-encoded,
so shards decode to exactly the folder's pixels) and ``KEY.json`` with its ``"captions"`` list and
its source ``"image"`` path. Shards are named ``{split}-00000.tar``, … and each is written
atomically; read them back with ``data.shards: OUT/{split}-*.tar`` (see :mod:`disncl.data.shards`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from disncl.config import DataConfig
from disncl.data.dataset import load_split
from disncl.data.pairs import CaptionedImages
from disncl.data.shards import IMAGE_EXTENSIONS
from disncl.io import atomic_write


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    """A regular-file member with fixed metadata, so the same input gives byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    return info, io.BytesIO(data)


def _check_writable(ds: CaptionedImages, out: Path, split: str) -> None:
    odd = [p for p in ds.image_paths if Path(p).suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS]
    if odd:
        raise ValueError(
            f"{len(odd)} images have a file type shards cannot carry, e.g. {', '.join(odd[:3])}; "
            f"convert them to one of {', '.join(sorted(IMAGE_EXTENSIONS))}"
        )
    existing = sorted(out.glob(f"{split}-*.tar"))
    if existing:
        raise FileExistsError(
            f"{out} already holds {len(existing)} {split!r} shard(s) ({existing[0].name}, …); remove them or choose "
            "another --out (a pattern over the folder would mix old and new shards)"
        )


def write_shards(ds: CaptionedImages, out: str | os.PathLike[str], split: str, per_shard: int,
                 progress: bool = True) -> list[Path]:
    """Write ``ds`` as shards of ``per_shard`` images each under ``out``; returns the shard paths."""
    if isinstance(per_shard, bool) or not isinstance(per_shard, int) or per_shard < 1:
        raise ValueError(f"images per shard must be a positive integer, got {per_shard!r}")
    out = Path(out)
    _check_writable(ds, out, split)
    captions: list[list[str]] = [[] for _ in range(ds.n_images)]
    for caption, image in zip(ds.captions, ds.cap2img.tolist(), strict=True):
        captions[image].append(caption)
    width = max(6, len(str(ds.n_images - 1)))
    written: list[Path] = []
    bar = tqdm(total=ds.n_images, desc=f"writing {split} shards", unit="img", disable=not progress)
    for number, start in enumerate(range(0, ds.n_images, per_shard)):
        images = range(start, min(start + per_shard, ds.n_images))

        def write(tmp: Path, images: range = images) -> None:
            with tarfile.open(tmp, "w") as tf:
                for i in images:
                    key = str(i).zfill(width)
                    ext = Path(ds.image_paths[i]).suffix.lower()
                    tf.addfile(*_member(key + ext, ds.image_path(i).read_bytes()))
                    meta = {"captions": captions[i], "image": ds.image_paths[i]}
                    tf.addfile(*_member(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode()))

        written.append(atomic_write(out / f"{split}-{number:05d}.tar", write))
        bar.update(len(images))
    bar.close()
    return written


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m disncl shards", description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", required=True, metavar="DATASET_DIR",
                   help="dataset folder holding {split}.csv|tsv|jsonl (e.g. from `python -m disncl synth`)")
    p.add_argument("--split", default="train", help="which split to pack (default: train)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the shards ({split}-00000.tar, …)")
    p.add_argument("--per-shard", type=_positive_int, default=1000, metavar="N",
                   help="images per shard (default: 1000)")
    p.add_argument("--strict", action="store_true",
                   help="refuse a split with unusable rows or images instead of leaving them out")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m disncl shards``)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        ds = load_split(DataConfig(root=args.source, strict=args.strict), args.split)
        shards = write_shards(ds, args.out, args.split, args.per_shard, progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        if os.environ.get("DISNCL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {ds.n_images} images, {ds.n_captions} captions in {len(shards)} shards to {args.out} "
          f"in {time.perf_counter() - start:.1f}s; train from them with "
          f"--set 'data.shards={Path(args.out) / '{split}-*.tar'}'")
    return 0
