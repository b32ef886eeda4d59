"""Synthetic noisy correspondence: which image each training caption is paired with.

The field uses two conventions, both supported:

* **per-caption** (NCR, BiCro): a fraction of captions is chosen and their images are shuffled
  among them. The index has one entry per caption: ``index[c]`` is caption ``c``'s image.
* **per-image** (RCL, DECL): a fraction of images is chosen and deranged, and every caption of
  image ``i`` is paired with image ``index[i]``. The index is a permutation, one entry per image.

Either way the clean map stays in :class:`~disncl.data.pairs.CaptionedImages`; the noise lives in
a :class:`NoiseIndex` that can be saved next to a run and reloaded to reproduce it exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from disncl.data.pairs import CaptionedImages
from disncl.io import atomic_write, atomic_write_json

NoiseKind = Literal["caption", "image"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("caption", "image")


class NoiseIndexError(ValueError):
    """A noise index (in memory or in a file) does not fit the dataset it is applied to."""


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate!r}")


def _check_kind(kind: str) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be 'caption' or 'image', got {kind!r}")


def _n_noisy(rate: float, n: int) -> int:
    return int(round(rate * n))


def per_caption_noise(cap2img: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """NCR-style noise: shuffle the images of ``round(rate * n_captions)`` randomly chosen captions.

    Returns ``a`` with ``a[c]`` the image caption ``c`` is paired with. A shuffled caption can
    land back on its own image; that pair is then clean, so the realised noise is a little
    below ``rate`` (compare ``a`` with ``cap2img`` to see which pairs are noisy).
    """
    _check_rate(rate)
    cap2img = np.asarray(cap2img)
    if cap2img.ndim != 1 or not np.issubdtype(cap2img.dtype, np.integer):
        raise ValueError(f"cap2img must be a 1-D integer array, got {cap2img.dtype} {cap2img.shape}")
    rng = np.random.default_rng(seed)
    noisy = cap2img.astype(np.int64)
    chosen = rng.choice(len(noisy), size=_n_noisy(rate, len(noisy)), replace=False)
    noisy[chosen] = rng.permutation(noisy[chosen])
    return noisy


def per_image_noise(n_images: int, rate: float, seed: int) -> np.ndarray:
    """RCL/DECL-style noise: a permutation moving exactly ``round(rate * n_images)`` images.

    The chosen images are put in random order and each is sent to the next one (a single
    cycle), so every chosen image really moves and the others stay put.
    """
    _check_rate(rate)
    if n_images < 0:
        raise ValueError(f"n_images must be non-negative, got {n_images}")
    k = _n_noisy(rate, n_images)
    if k == 1:
        fix = "use rate 0" if n_images < 2 else f"use rate 0 or at least {2 / n_images:.4g}"
        raise ValueError(
            f"rate {rate} of {n_images} images selects a single image, which has no other image to swap "
            f"with; {fix}"
        )
    rng = np.random.default_rng(seed)
    perm = np.arange(n_images, dtype=np.int64)
    chosen = rng.choice(n_images, size=k, replace=False)
    perm[chosen] = np.roll(chosen, -1)
    return perm


def _check_array(index: np.ndarray, source: str) -> None:
    """Shape and dtype first: a 2-D or float array's length says nothing about which dataset it fits."""
    if index.ndim != 1:
        raise NoiseIndexError(f"{source}: expected a 1-D array, found shape {index.shape}")
    if not np.issubdtype(index.dtype, np.integer):
        raise NoiseIndexError(
            f"{source}: expected integer image indices, found dtype {index.dtype}; "
            "save it with index.astype(np.int64)"
        )


def _validate_index(
    index: np.ndarray, kind: NoiseKind, n_images: int, n_captions: int, source: str
) -> np.ndarray:
    """``index`` as int64 if it is a valid noise index of ``kind``; else an error naming ``source``."""
    _check_array(index, source)
    expected = n_captions if kind == "caption" else n_images
    if len(index) != expected:
        what = "captions" if kind == "caption" else "images"
        raise NoiseIndexError(
            f"{source}: a per-{kind} noise index needs one entry per {what[:-1]} "
            f"({expected} {what}), found {len(index)} entries; was it made for another dataset or split?"
        )
    if len(index) and (index.min() < 0 or index.max() >= n_images):
        raise NoiseIndexError(
            f"{source}: image indices must lie in 0..{n_images - 1}, found values from {index.min()} "
            f"to {index.max()}"
        )
    if kind == "image" and len(np.unique(index)) != len(index):
        raise NoiseIndexError(
            f"{source}: a per-image noise index must be a permutation of 0..{n_images - 1}, "
            "but some images appear twice"
        )
    return index.astype(np.int64)


def pair_images(
    cap2img: np.ndarray, index: np.ndarray, kind: NoiseKind, n_images: int | None = None
) -> np.ndarray:
    """The image of each training pair (one per caption) under a noise ``index`` of ``kind``.

    ``n_images`` defaults to the number the index implies (its length for kind "image",
    ``cap2img.max() + 1`` for kind "caption"); pass the dataset's count for a full range check.
    """
    _check_kind(kind)
    cap2img = np.asarray(cap2img)
    index = np.asarray(index)
    if n_images is None:
        n_images = len(index) if kind == "image" else int(cap2img.max(initial=-1)) + 1
    index = _validate_index(index, kind, n_images, len(cap2img), "noise index")
    return index if kind == "caption" else index[cap2img]


# eq=False: field-wise == on numpy arrays is ambiguous; compare ``index`` arrays explicitly.
@dataclass(frozen=True, eq=False)
class NoiseIndex:
    """A noise index with how it was made; ``rate``/``seed`` are None when unknown (external file)."""

    kind: NoiseKind
    index: np.ndarray
    rate: float | None
    seed: int | None

    def __post_init__(self) -> None:
        _check_kind(self.kind)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index as ``.npy`` and its kind/rate/seed to a ``.json`` sidecar beside it."""
        path = Path(path)
        if path.suffix == ".json":
            raise ValueError(f"{path}: name the noise index file .npy; the .json name is for its sidecar")

        def write(tmp: Path) -> None:
            # A file handle, because np.save appends ".npy" to path names that lack it.
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(self.index, dtype=np.int64), allow_pickle=False)

        atomic_write(path, write)
        atomic_write_json(
            path.with_suffix(".json"),
            {"kind": self.kind, "rate": self.rate, "seed": self.seed, "length": len(self.index)},
        )
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        n_images: int,
        n_captions: int,
        kind: NoiseKind | None = None,
    ) -> NoiseIndex:
        """Read and validate a saved index for a dataset of ``n_images`` images and ``n_captions`` captions.

        The kind comes from the ``.json`` sidecar if present, else from ``kind``, else from the
        array's length (one entry per caption or per image); pass ``kind`` when the counts are equal.
        """
        path = Path(path)
        if kind is not None:
            _check_kind(kind)
        index = _read_npy(path)
        _check_array(index, f"noise index file {path}")
        meta = _read_sidecar(path)
        kind = _resolve_kind(path, meta.get("kind"), kind, len(index), n_images, n_captions)
        index = _validate_index(index, kind, n_images, n_captions, f"noise index file {path}")
        rate, seed = meta.get("rate"), meta.get("seed")
        return cls(
            kind=kind,
            index=index,
            rate=float(rate) if isinstance(rate, (int, float)) else None,
            seed=seed if isinstance(seed, int) else None,
        )


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"noise index file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise NoiseIndexError(
            f"noise index file {path} is not a readable .npy integer array ({err}); "
            "write it with np.save(path, index.astype(np.int64))"
        ) from err
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise NoiseIndexError(f"noise index file {path} is an .npz archive; save a single array with np.save")
    return loaded


def _read_sidecar(path: Path) -> dict[str, object]:
    """The ``.json`` written beside the ``.npy`` by :meth:`NoiseIndex.save`, or {} if absent."""
    sidecar = path.with_suffix(".json")
    if sidecar == path or not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NoiseIndexError(f"{sidecar}: unreadable noise index sidecar ({err}); fix or delete it") from err
    if not isinstance(meta, dict):
        raise NoiseIndexError(f"{sidecar}: expected a JSON object with kind/rate/seed; fix or delete it")
    return meta


def _resolve_kind(
    path: Path, sidecar_kind: object, kind: NoiseKind | None, length: int, n_images: int, n_captions: int
) -> NoiseKind:
    """Kind of a loaded index: the sidecar's, else the caller's, else inferred from its length."""
    if sidecar_kind is not None:
        if sidecar_kind not in NOISE_KINDS:
            raise NoiseIndexError(
                f"{path.with_suffix('.json')}: kind must be 'caption' or 'image', found {sidecar_kind!r}"
            )
        if kind is not None and kind != sidecar_kind:
            raise NoiseIndexError(
                f"noise index file {path}: asked for kind {kind!r} but its sidecar "
                f"{path.with_suffix('.json').name} says {sidecar_kind!r}"
            )
        return sidecar_kind
    if kind is not None:
        return kind
    if length == n_captions == n_images:
        raise NoiseIndexError(
            f"noise index file {path}: {length} entries fits both one per caption and one per image; "
            "pass kind='caption' or kind='image'"
        )
    if length == n_captions:
        return "caption"
    if length == n_images:
        return "image"
    raise NoiseIndexError(
        f"noise index file {path}: found {length} entries, expected {n_captions} (one per caption) "
        f"or {n_images} (one per image); was it made for another dataset or split?"
    )


@dataclass(frozen=True, eq=False)
class NoisyPairs:
    """The training pairs: caption ``caption[p]`` with image ``image[p]``, clean iff ``is_clean[p]``."""

    caption: np.ndarray
    image: np.ndarray
    is_clean: np.ndarray

    def __len__(self) -> int:
        return len(self.caption)

    @property
    def noise_rate(self) -> float:
        """Fraction of pairs that are actually mismatched."""
        return float(1.0 - self.is_clean.mean()) if len(self.is_clean) else 0.0


def make_noisy_pairs(ds: CaptionedImages, noise: NoiseIndex | None) -> NoisyPairs:
    """One training pair per caption of ``ds``, paired as ``noise`` says (all clean when None)."""
    cap2img = np.asarray(ds.cap2img, dtype=np.int64)
    if noise is None:
        image = cap2img.copy()
    else:
        image = pair_images(cap2img, noise.index, noise.kind, n_images=ds.n_images)
    return NoisyPairs(
        caption=np.arange(ds.n_captions, dtype=np.int64), image=image, is_clean=image == cap2img
    )


def inject(ds: CaptionedImages, kind: NoiseKind, rate: float, seed: int) -> NoiseIndex:
    """Make a seeded noise index of ``kind`` for ``ds``; rate 0 gives the clean pairing."""
    _check_kind(kind)
    if kind == "caption":
        index = per_caption_noise(ds.cap2img, rate, seed)
    else:
        index = per_image_noise(ds.n_images, rate, seed)
    return NoiseIndex(kind=kind, index=index, rate=rate, seed=seed)
