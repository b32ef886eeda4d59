"""``python -m disncl index``: encode images and captions with a bundle into a searchable gallery folder."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disncl.data.formats import check_images_exist, load_captions_file
from disncl.serve.gallery import INDEX_KINDS, Gallery
from disncl.serve.pair_scores import PairScores

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class GalleryItems:
    """What goes into a gallery: image paths under ``root``, captions and each caption's image."""

    root: Path
    image_paths: list[str]
    captions: list[str]
    caption_image: np.ndarray


def find_images(folder: Path) -> list[str]:
    """Relative POSIX paths of the image files under ``folder`` (recursively), sorted.

    Hidden files and folders are skipped: they are tool droppings such as macOS ``._x.jpg``
    resource forks, which carry an image suffix but are not images.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            found.append(rel.as_posix())
    return sorted(found)


def collect_items(images: Path | None, captions: Path | None) -> GalleryItems:
    """Images from a folder and/or a captions file.

    With both, the captions file's image paths are relative to the folder, its images come first
    (so caption owners keep their numbers), and the folder's other images follow.
    """
    if captions is None:
        if images is None:
            raise ValueError("nothing to index: give --images DIR and/or --captions FILE")
        paths = find_images(images)
        if not paths:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} files under {images}")
        return GalleryItems(images, paths, [], np.zeros(0, dtype=np.int64))
    ds = load_captions_file(captions, images_root=images)
    missing = check_images_exist(ds)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named in {captions} are not under {ds.root}, e.g. {', '.join(missing[:3])}; "
            "pass --images DIR if they are relative to another folder"
        )
    paths = list(ds.image_paths)
    if images is not None:
        listed = set(paths)
        paths += [p for p in find_images(images) if p not in listed]
    return GalleryItems(ds.root, paths, list(ds.captions), np.asarray(ds.cap2img, dtype=np.int64))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m disncl index",
        description="Encode images and captions with an exported bundle and write a searchable gallery.",
    )
    p.add_argument("--bundle", required=True, help="exported model bundle folder")
    p.add_argument("--out", required=True, help="gallery folder to write (replaced if it already holds a gallery)")
    p.add_argument("--images", type=Path, help="folder of images (.png/.jpg/.jpeg/.webp, searched recursively)")
    p.add_argument("--captions", type=Path, help="captions table (.csv/.tsv/.jsonl with image,caption columns)")
    p.add_argument("--pair-scores", type=Path, help="a run's pair_scores.csv, copied in for the noisy-pair explorer")
    p.add_argument("--index", default="flat", choices=INDEX_KINDS,
                   help="flat (exact, default), ivf, hnsw or ivfpq (compressed codes, for galleries beyond RAM)")
    p.add_argument("--nlist", type=int, help="IVF lists (default about 4*sqrt(N))")
    p.add_argument("--nprobe", type=int, help="IVF lists searched per query (default nlist/16)")
    p.add_argument("--batch-size", type=int, default=64, help="images encoded per batch (default 64)")
    p.add_argument("--no-progress", action="store_true")
    return p


def run(args: argparse.Namespace) -> Path:
    """Build and save the gallery ``args`` describe; returns its folder."""
    from disncl.serve.bundle import Bundle

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    items = collect_items(args.images, args.captions)
    # Read now: a bad pair-scores file should fail before the encoding, not after.
    scores = PairScores.read(args.pair_scores) if args.pair_scores is not None else None
    bundle = Bundle.load(args.bundle)
    gallery = Gallery.build(
        bundle,
        items.root,
        items.image_paths,
        items.captions,
        items.caption_image if items.captions else None,
        kind=args.index,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        nlist=args.nlist,
        nprobe=args.nprobe,
    )
    out = gallery.save(args.out, pair_scores=args.pair_scores)
    for note in gallery.notes:
        print(f"note: {note}")
    kinds = ", ".join(f"{key} {kind}" for key, kind in gallery.index_kinds.items())
    print(f"gallery written to {out}: {gallery.n_images} images, {gallery.n_captions} captions ({kinds})")
    if scores is not None:
        print(f"attached pair scores: {len(scores)} training pairs, {int(scores.flagged().sum())} flagged at 0.5")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        if os.environ.get("DISNCL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
