"""Decode image files into fixed-size RGB ``uint8`` arrays, one file or a whole split at once.

Geometry follows the CLIP convention: resize the shorter side to ``size`` (bicubic), then
centre-crop ``size × size``. Turning pixels into normalised float tensors is the model's job.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from disncl.data.pairs import CaptionedImages
from disncl.io import atomic_write

# Bump when the decoding pipeline changes, so stale caches are not reused.
_CACHE_VERSION = "1"
# Images per thread-pool task: large enough to amortise scheduling, small enough for smooth progress.
_CHUNK = 64
# How many failing files an error message lists before summarising.
_MAX_LISTED_FAILURES = 10

# PIL signals broken files with a spread of exception types depending on the format plugin.
_PIL_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
# Images with more pixels are refused from their header, before any pixel is decoded. This is PIL's
# own decompression-bomb warning threshold (about 9459 x 9459): far above any photo a retrieval
# model needs, and small enough that decoding one cannot exhaust memory (about 270 MB as RGB).
MAX_PIXELS = 89_478_485

# ImageDecodeError.kind values.
MISSING, TOO_LARGE, UNDECODABLE = "missing", "too_large", "undecodable"


class ImageDecodeError(ValueError):
    """One or more image files are missing, corrupt, truncated, too large or in an unsupported format.

    ``paths`` lists every file that failed; ``kind`` says why for a single file (``MISSING``,
    ``TOO_LARGE`` or ``UNDECODABLE``).
    """

    def __init__(self, message: str, paths: Sequence[str | os.PathLike[str]], kind: str = UNDECODABLE) -> None:
        super().__init__(message)
        self.paths = [str(p) for p in paths]
        self.kind = kind


_FILE_ADVICE = "Replace the file, or remove its rows from the captions file."


def _decode_error(
    path: str | os.PathLike[str], reason: str, advice: str = _FILE_ADVICE, kind: str = UNDECODABLE
) -> ImageDecodeError:
    return ImageDecodeError(f"cannot decode image {path}: {reason}. {advice}", [path], kind)


def _too_large(path: str | os.PathLike[str], pixels: str, advice: str) -> ImageDecodeError:
    return _decode_error(
        path,
        f"{pixels}, over the limit of {MAX_PIXELS:,} pixels",
        f"Downscale it (e.g. to 4096 pixels on the long side). {advice}",
        TOO_LARGE,
    )


def _bomb_pixels(err: Image.DecompressionBombError) -> str:
    """The pixel count in PIL's decompression-bomb message, which is raised before the size is known."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    return f"{int(found.group(1)):,} pixels" if found else str(err)


def _sixteen_bit_to_l(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) greyscale to 8-bit by scaling, since PIL's convert clips at 255."""
    wide = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparent pixels are composited over white, as a viewer shows them."""
    if img.mode == "I" or img.mode.startswith("I;16"):
        img = _sixteen_bit_to_l(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resize_and_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` then a centred square crop, rounding as torchvision does."""
    width, height = img.size
    short, long = min(width, height), max(width, height)
    if short != size:
        new_long = max(size, int(size * long / short))
        new_size = (size, new_long) if width <= height else (new_long, size)
        img = img.resize(new_size, Image.Resampling.BICUBIC)
        width, height = new_size
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"image size must be a positive integer number of pixels, got {size!r}")


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """Decode one image file to a ``(size, size, 3)`` uint8 RGB array.

    Any PIL mode is accepted (L, LA, P, RGBA, CMYK, 16-bit greyscale, …). JPEGs are decoded at
    the smallest DCT scale that still covers ``size``, which is several times faster on large
    photos. Raises :class:`ImageDecodeError` naming the file if it is missing or unreadable.
    """
    _check_size(size)
    if not os.path.isfile(path):
        raise _decode_error(path, "file not found", kind=MISSING)
    return _decode(path, size, path, _FILE_ADVICE)


def check_image(path: str | os.PathLike[str]) -> None:
    """Raise the :class:`ImageDecodeError` that :func:`load_image` would, as cheaply as possible.

    The whole file is still decoded (truncation only shows at the end of the data), but JPEGs at
    their smallest DCT scale and everything to a single pixel.
    """
    load_image(path, 1)


def decode_image_bytes(data: bytes, size: int, name: str, advice: str) -> np.ndarray:
    """:func:`load_image` for an encoded image held in memory (e.g. a member of a tar shard).

    ``name`` says where the bytes came from and ``advice`` what to do, both for the
    :class:`ImageDecodeError` raised if they are not a decodable image.
    """
    _check_size(size)
    return _decode(io.BytesIO(data), size, name, advice)


def _decode(
    source: str | os.PathLike[str] | BinaryIO, size: int, name: str | os.PathLike[str], advice: str
) -> np.ndarray:
    """Decode, convert to RGB, resize and crop; PIL failures become one :class:`ImageDecodeError`."""
    try:
        with Image.open(source) as img:
            # The header gives the size without decoding: refuse huge images before allocating them.
            if img.width * img.height > MAX_PIXELS:
                raise _too_large(name, f"{img.width}×{img.height} = {img.width * img.height:,} pixels", advice)
            img.draft(None, (size, size))
            # load() inside the try: PIL opens lazily, so truncation only shows up here.
            img.load()
            pixels = np.asarray(_resize_and_crop(_to_rgb(img), size), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise _too_large(name, _bomb_pixels(err), advice) from err
    except _PIL_DECODE_ERRORS as err:
        raise _decode_error(name, f"{type(err).__name__}: {err}", advice) from err
    return pixels


def _cache_file(cache_dir: Path, ds: CaptionedImages, size: int) -> Path:
    """Cache file named after the relative image paths, each file's size and mtime, and ``size``.

    File stats make a regenerated dataset with the same file names miss the cache; relative
    paths let a moved dataset folder keep hitting it.
    """
    digest = hashlib.sha256(f"disncl-images/{_CACHE_VERSION}/{size}\n".encode())
    for i, rel in enumerate(ds.image_paths):
        try:
            stat = ds.image_path(i).stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{rel}\0{stamp}\n".encode())
    return cache_dir / f"images-{size}px-{ds.n_images}-{digest.hexdigest()[:16]}.npy"


def _read_cache(cache: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached pixels if the file is present, readable and of the expected shape."""
    if not cache.is_file():
        return None
    try:
        pixels = np.load(cache, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if pixels.shape != shape or pixels.dtype != np.uint8:
        return None
    return pixels


def _write_cache(cache: Path, pixels: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        # A file handle, because np.save appends ".npy" to path names that lack it.
        with open(tmp, "wb") as fh:
            np.save(fh, pixels, allow_pickle=False)

    atomic_write(cache, write)


def _failure_report(failures: list[tuple[int, ImageDecodeError]], n: int) -> ImageDecodeError:
    """One error for every file that failed, listing the first few in dataset order."""
    failures.sort(key=lambda item: item[0])
    if len(failures) == 1:
        return failures[0][1]
    listed = "\n".join(f"  {err}" for _, err in failures[:_MAX_LISTED_FAILURES])
    more = len(failures) - _MAX_LISTED_FAILURES
    tail = f"\n  … and {more} more" if more > 0 else ""
    return ImageDecodeError(
        f"{len(failures)} of {n} images could not be decoded; replace them or remove their rows "
        f"from the captions file:\n{listed}{tail}",
        [p for _, err in failures for p in err.paths],
    )


def _decode_all(paths: Sequence[Path], size: int, progress: bool, num_threads: int) -> np.ndarray:
    """Decode every path into one preallocated array with a thread pool (PIL drops the GIL)."""
    pixels = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def decode_chunk(chunk: range) -> list[tuple[int, ImageDecodeError]]:
        failed = []
        for i in chunk:
            try:
                pixels[i] = load_image(paths[i], size)
            except ImageDecodeError as err:
                failed.append((i, err))
        return failed

    chunks = [range(start, min(start + _CHUNK, len(paths))) for start in range(0, len(paths), _CHUNK)]
    failures: list[tuple[int, ImageDecodeError]] = []
    with (
        ThreadPoolExecutor(max_workers=num_threads) as pool,
        tqdm(total=len(paths), desc="decoding images", unit="img", disable=not progress) as bar,
    ):
        futures = {pool.submit(decode_chunk, chunk): len(chunk) for chunk in chunks}
        try:
            for future in as_completed(futures):
                failures.extend(future.result())
                bar.update(futures[future])
        except BaseException:
            # Without this, Ctrl-C would wait for every queued chunk to finish decoding.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if failures:
        raise _failure_report(failures, len(paths))
    return pixels


class ImageArray:
    """A split's images decoded once into memory as a ``(N, size, size, 3)`` uint8 array.

    Index it like a numpy array: an int gives one ``(size, size, 3)`` image, an index array or
    slice gives a batch.
    """

    def __init__(self, pixels: np.ndarray) -> None:
        if (
            pixels.dtype != np.uint8
            or pixels.ndim != 4
            or pixels.shape[3] != 3
            or pixels.shape[1] != pixels.shape[2]
        ):
            raise ValueError(
                "ImageArray needs a uint8 array of shape (N, size, size, 3); "
                f"got {pixels.dtype} {pixels.shape}"
            )
        self._pixels = pixels

    @classmethod
    def from_dataset(
        cls,
        ds: CaptionedImages,
        size: int,
        progress: bool = True,
        num_threads: int = 2,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> ImageArray:
        """Decode every image of ``ds`` (see :func:`load_image`).

        With ``cache_dir``, the decoded array is saved there as ``.npy`` and reused on the next
        call for the same image files (same paths, sizes and modification times) and ``size``.
        All undecodable files are reported together in one :class:`ImageDecodeError`.
        """
        _check_size(size)
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
        paths = [ds.image_path(i) for i in range(ds.n_images)]
        cache = _cache_file(Path(cache_dir), ds, size) if cache_dir is not None else None
        if cache is not None:
            cached = _read_cache(cache, (len(paths), size, size, 3))
            if cached is not None:
                return cls(cached)
        pixels = _decode_all(paths, size, progress, num_threads)
        if cache is not None:
            _write_cache(cache, pixels)
        return cls(pixels)

    @staticmethod
    def nbytes_estimate(n: int, size: int) -> int:
        """Bytes that ``n`` decoded images of ``size × size`` take in memory."""
        return n * size * size * 3

    @property
    def pixels(self) -> np.ndarray:
        """The whole ``(N, size, size, 3)`` uint8 array."""
        return self._pixels

    @property
    def size(self) -> int:
        return self._pixels.shape[1]

    def __len__(self) -> int:
        return self._pixels.shape[0]

    def __getitem__(self, idx: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        return self._pixels[idx]


class ImageFiles:
    """A split's images decoded from their files on demand, batch by batch: for a single pass such as
    frozen towers' encoding (:mod:`disncl.train.feature_cache`), where holding every decoded image in
    memory (150 KB each at 224 px) would cost more than the pass itself. Indexed like :class:`ImageArray`."""

    def __init__(self, ds: CaptionedImages, size: int) -> None:
        _check_size(size)
        self.paths = [ds.image_path(i) for i in range(ds.n_images)]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            return load_image(self.paths[int(idx)], self.size)
        rows = range(len(self))[idx] if isinstance(idx, slice) else np.asarray(idx).reshape(-1)
        return np.stack([load_image(self.paths[int(i)], self.size) for i in rows])
