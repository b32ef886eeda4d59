"""SCAN "precomp" splits: precomputed region features and their captions, as NCR/DECL/RCL read them.

A precomp folder (``f30k_precomp``, ``coco_precomp``, ``cc152k_precomp``) holds per split:

* ``{split}_ims.npy`` - region features of shape ``(n_images, regions, dim)``, float32 or
  float16 (bottom-up-attention: 36 x 2048). Memory-mapped, never read whole: Flickr30K's
  training file alone is 8.5 GB.
* ``{split}_caps.txt`` - one caption per line, ``k`` consecutive lines per image in image order
  (Flickr30K and COCO: ``k = 5``); or ``{split}_caps.tsv`` with ``image id<TAB>caption`` rows
  (CC152K: ``k = 1``). ``k`` is found as ``n_captions / n_images`` and must be a whole number.

Caption ``c`` belongs to image ``c // k``, so NCR's per-caption noise files
(``noise_index/*.npy``, one image index per caption) and the per-image permutations of RCL/DECL
apply unchanged (:mod:`disncl.data.noise`).

Split names are the files' (``train``, ``dev``, ``test``, COCO's 5,000-image ``testall``); the
suffix ``@fold<k>`` selects images ``1000k .. 1000k + 999`` and their captions, which gives the
field's COCO 1K protocol (the mean over ``testall@fold0`` .. ``testall@fold4``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disncl.data.formats import CaptionFileError
from disncl.data.pairs import CaptionedImages

FEATURES_SUFFIX = "_ims.npy"
CAPTION_SUFFIXES = ("_caps.txt", "_caps.tsv")
FOLD_IMAGES = 1000
_FOLD = re.compile(r"^(?P<name>[^@]+)@fold(?P<fold>\d+)$")


class PrecompError(ValueError):
    """A precomp split is missing a file, or its features and captions do not fit together."""


class RegionFeatures:
    """A split's region features, indexed like :class:`~disncl.data.images.ImageArray`.

    ``features[idx]`` gives a float32 ``(B, regions, dim)`` array (``(regions, dim)`` for an int),
    always a fresh writable copy, whatever the stored dtype.
    """

    def __init__(self, array: np.ndarray, source: str = "region features") -> None:
        if array.ndim != 3:
            raise PrecompError(
                f"{source}: expected region features of shape (n_images, regions, dim), found shape "
                f"{array.shape}; precomp files hold one (regions x dim) matrix per image, e.g. 36 x 2048"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise PrecompError(f"{source}: expected float32 or float16 features, found dtype {array.dtype}")
        if array.shape[1] == 0 or array.shape[2] == 0:
            raise PrecompError(f"{source}: every image needs at least one region of at least one value, "
                               f"found shape {array.shape}")
        self._array = array
        self.source = source

    @classmethod
    def open(cls, path: str | Path) -> RegionFeatures:
        """Memory-map ``path`` (a ``.npy`` file); nothing is read until a batch is indexed."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"region features file not found: {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise PrecompError(
                f"{path}: not a readable .npy array ({err}); re-download or re-copy the precomp features"
            ) from err
        if not isinstance(array, np.ndarray):
            array.close()
            raise PrecompError(f"{path}: is an .npz archive; precomp features are a single .npy array")
        return cls(array, str(path))

    def __len__(self) -> int:
        return self._array.shape[0]

    @property
    def n_regions(self) -> int:
        return self._array.shape[1]

    @property
    def dim(self) -> int:
        return self._array.shape[2]

    def __getitem__(self, idx: int | slice | np.ndarray) -> np.ndarray:
        return np.array(self._array[idx], dtype=np.float32)

    def images(self, start: int, stop: int) -> RegionFeatures:
        """Images ``start .. stop - 1`` as a view (still memory-mapped)."""
        return RegionFeatures(self._array[start:stop], f"{self.source}[{start}:{stop}]")


@dataclass(frozen=True, eq=False, kw_only=True)
class PrecompSplit(CaptionedImages):
    """A precomp split: captions and caption->image map as any split, plus its region features.

    ``image_paths`` are names, not files (nothing to open or check on disk): the CC152K image
    ids where the captions file gives them, else ``{split}_ims.npy[i]``.
    """

    features: RegionFeatures
    captions_per_image: int

    def __post_init__(self) -> None:
        super().__post_init__()
        # Guards copies made with dataclasses.replace (e.g. a subset) that forgot to cut the features.
        if len(self.features) != self.n_images:
            raise ValueError(
                f"{len(self.features)} region feature rows for {self.n_images} images; a precomp split's "
                "images and features must be selected together"
            )


def split_name(split: str) -> tuple[str, int | None]:
    """``"testall@fold2"`` -> ``("testall", 2)``; a plain name -> ``(name, None)``."""
    if "@" not in split:
        return split, None
    match = _FOLD.match(split)
    if match is None:
        raise PrecompError(
            f"split {split!r}: write a fold of 1,000 images as NAME@foldK (e.g. testall@fold0), or a plain split name"
        )
    return match["name"], int(match["fold"])


def _read_txt(path: Path) -> list[str]:
    """One caption per line; trailing blank lines are ignored, blank lines elsewhere are an error."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [line.rstrip("\r\n") for line in fh]
    except UnicodeDecodeError as err:
        raise CaptionFileError(f"{path}: not UTF-8 text ({err}); convert the file to UTF-8") from err
    while lines and not lines[-1].strip():
        lines.pop()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            raise CaptionFileError(
                f"{path}, line {lineno}: empty caption; every line is one caption and the line order pairs "
                "captions with images, so fill or restore the line rather than deleting it"
            )
    return [line.strip() for line in lines]


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    """``image id<TAB>caption`` rows (CC152K); further columns are ignored. Returns (captions, ids)."""
    captions, ids = [], []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            # No quote processing: Conceptual Captions leave quotes unescaped.
            for lineno, row in enumerate(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if len(row) < 2 or not row[1].strip():
                    raise CaptionFileError(
                        f"{path}, line {lineno}: expected 'image id<TAB>caption', found {'<TAB>'.join(row)!r}"
                    )
                ids.append(row[0].strip())
                captions.append(row[1].strip())
    except UnicodeDecodeError as err:
        raise CaptionFileError(f"{path}: not UTF-8 text ({err}); convert the file to UTF-8") from err
    return captions, ids


def read_captions(root: Path, name: str) -> tuple[list[str], list[str] | None, Path]:
    """Captions of split ``name``, the image id of each when the file has them, and the file read."""
    for suffix in CAPTION_SUFFIXES:
        path = root / f"{name}{suffix}"
        if path.is_file():
            if suffix.endswith(".tsv"):
                captions, ids = _read_tsv(path)
                return captions, ids, path
            return _read_txt(path), None, path
    raise FileNotFoundError(
        f"no captions for split {name!r} in {root}: expected {name}_caps.txt (or {name}_caps.tsv); "
        f"splits found there: {available_splits(root) or 'none'}"
    )


def available_splits(root: Path) -> list[str]:
    """Split names with a features file in ``root``."""
    return sorted(p.name[: -len(FEATURES_SUFFIX)] for p in root.glob(f"*{FEATURES_SUFFIX}"))


def captions_per_image(n_captions: int, n_images: int, captions_file: Path, features_file: Path) -> int:
    """``n_captions / n_images`` when it is a whole number >= 1, else a :class:`PrecompError`."""
    if n_images == 0:
        raise PrecompError(f"{features_file}: holds no images")
    if n_captions == 0 or n_captions % n_images:
        raise PrecompError(
            f"{captions_file} has {n_captions} captions for the {n_images} images of {features_file}: "
            "the precomp format needs the same number of captions for every image, in image order "
            "(5 for Flickr30K and COCO, 1 for CC152K). Check that both files belong to the same split "
            "and that no caption line was added or removed."
        )
    return n_captions // n_images


def load_precomp(root: str | Path, split: str, max_images: int = 0) -> PrecompSplit:
    """Load split ``split`` (optionally ``NAME@foldK``) of the precomp folder ``root``.

    ``max_images > 0`` keeps only the first ``max_images`` images and their captions (NCR and
    SCAN validate on the first 1,000 ``dev`` images).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.precomp_root {root} is not a folder; point it at the folder holding {{split}}_ims.npy and "
            "{split}_caps.txt (e.g. data/f30k_precomp)"
        )
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 0:
        raise ValueError(f"max_images must be a non-negative integer (0 = all), got {max_images!r}")
    name, fold = split_name(split)
    features_file = root / f"{name}{FEATURES_SUFFIX}"
    if not features_file.is_file():
        raise FileNotFoundError(
            f"no region features for split {name!r}: {features_file} does not exist; "
            f"splits found in {root}: {available_splits(root) or 'none'}"
        )
    features = RegionFeatures.open(features_file)
    captions, ids, captions_file = read_captions(root, name)
    k = captions_per_image(len(captions), len(features), captions_file, features_file)

    start, stop = 0, len(features)
    if fold is not None:
        start, stop = fold * FOLD_IMAGES, (fold + 1) * FOLD_IMAGES
        if stop > len(features):
            raise PrecompError(
                f"split {split!r}: fold {fold} needs images {start}..{stop - 1} but {features_file} has "
                f"{len(features)}, i.e. {len(features) // FOLD_IMAGES} whole fold(s) of {FOLD_IMAGES}"
            )
    if max_images:
        stop = min(stop, start + max_images)
    names = ids[::k] if ids is not None else [f"{features_file.name}[{i}]" for i in range(len(features))]
    return PrecompSplit(
        root=root,
        image_paths=names[start:stop],
        captions=captions[start * k : stop * k],
        cap2img=np.arange((stop - start) * k, dtype=np.int64) // k,
        features=features.images(start, stop),
        captions_per_image=k,
    )
