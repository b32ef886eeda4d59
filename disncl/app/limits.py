"""Request inputs, checked before any work is done: caption length, result count, uploads, image queries."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from disncl.app.services import SPACES, AppError, Services
from disncl.data.images import ImageDecodeError

MAX_K = 100
# Request limits, checked before any work is done for the request. Captions are a few words and the
# model reads only its first max_text_len tokens, so 1,000 characters is generous; longer text is a
# paste mistake (or abuse) and is refused with a message rather than tokenised.
MAX_QUERY_CHARS = 1000
# Uploads are checked from the file size and the image header, before anything decodes the pixels:
# 20 MB and 40 megapixels hold any camera photo; the model sees image_size x image_size pixels anyway.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 40_000_000
# Resizing the shorter side to image_size makes the longer side aspect x image_size: a 40000 x 1
# image of a few bytes would become gigapixels. The model sees a centred square crop, so very long
# strips carry little it can use.
MAX_UPLOAD_ASPECT = 20
# Formats read from the header alone and decoded by PIL itself; others (EPS calls Ghostscript, ...)
# have no place in an image search box.
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")



@dataclass(frozen=True)
class ImageQuery:
    """An image to ask about: a gallery image by index, or an uploaded file."""

    gallery_index: int | None = None
    upload: str | None = None

    def describe(self) -> str:
        return f"gallery image #{self.gallery_index}" if self.gallery_index is not None else "the uploaded image"


def image_query(upload: str | None, gallery_index: float | int | str | None, n_images: int) -> ImageQuery:
    """Check the two ways of giving an image; a gallery index wins, since the UI shows a picked image in
    the upload box too. An empty, negative or missing index means "no gallery image"."""
    index = _optional_index(gallery_index, n_images)
    if index is not None:
        return ImageQuery(gallery_index=index)
    if upload:
        return ImageQuery(upload=str(upload))
    raise AppError("no image: upload one, or pick one from the gallery (or give its gallery index)")


def _optional_index(value: float | int | str | None, n_images: int) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise AppError(f"gallery index {value!r} is not a number") from exc
    if not math.isfinite(number) or number != int(number):
        raise AppError(f"gallery index {value!r} must be a whole number")
    if number < 0:
        return None
    if number >= n_images:
        raise AppError(
            f"gallery index {int(number)} is out of range: the gallery has {n_images} images (0..{n_images - 1})"
        )
    return int(number)


def check_k(k: float | int, n: int) -> int:
    """The number of results to show: a whole number from 1 to :data:`MAX_K`, at most ``n``."""
    try:
        value = int(k)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"number of results {k!r} is not a number") from exc
    if not 1 <= value <= MAX_K:
        raise AppError(f"number of results must be between 1 and {MAX_K}, got {k}")
    return min(value, n)


def check_text_length(text: str, what: str) -> str:
    """``text`` if it has at most :data:`MAX_QUERY_CHARS` characters; else an :class:`AppError` naming ``what``."""
    if len(text) > MAX_QUERY_CHARS:
        raise AppError(
            f"the {what} is {len(text):,} characters long; the limit is {MAX_QUERY_CHARS:,}: shorten it"
        )
    return text


def _caption_text(text: str | None) -> str:
    text = check_text_length((text or "").strip(), "caption")
    if not text:
        raise AppError("no caption: type one (a few words describing an image)")
    return text


def encode_caption(services: Services, text: str) -> dict[str, np.ndarray]:
    """A caption's unit-length embedding in each space."""
    enc = services.bundle.encode_texts([_caption_text(text)])
    return {"mii": enc.mii[0], "full": enc.full[0]}


def check_upload(path: str | Path) -> None:
    """Refuse an uploaded file that is missing, too large, not an image or of absurd size, without decoding it.

    Only the file size and the image header are read (PIL opens lazily), so a decompression bomb
    or a huge photo costs nothing. Raises :class:`AppError` saying what is wrong and what to upload.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AppError("the uploaded image is no longer on the server (uploads expire): upload it again") from exc
    if size > MAX_UPLOAD_BYTES:
        raise AppError(
            f"the uploaded file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 2**20:g} MB: "
            "upload a smaller image"
        )
    try:
        with Image.open(path, formats=UPLOAD_FORMATS) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise AppError(f"the uploaded image has too many pixels ({exc}): downscale it first") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # UnidentifiedImageError (an OSError) for text, random bytes or a format outside the list.
        raise AppError(
            f"the uploaded file {path.name!r} is not an image this app reads: upload a "
            f"{', '.join(UPLOAD_FORMATS[:-1])} or {UPLOAD_FORMATS[-1]} file"
        ) from exc
    if width * height > MAX_UPLOAD_PIXELS:
        raise AppError(
            f"the uploaded image is {width}×{height} = {width * height / 1e6:.1f} megapixels; the limit is "
            f"{MAX_UPLOAD_PIXELS / 1e6:g} megapixels: downscale it first"
        )
    if max(width, height) > MAX_UPLOAD_ASPECT * min(width, height):
        raise AppError(
            f"the uploaded image is {width}×{height}, longer than {MAX_UPLOAD_ASPECT}:1; the model sees a "
            "centred square crop: crop it closer to a square first"
        )


def encode_image(services: Services, query: ImageQuery) -> dict[str, np.ndarray]:
    """An image's unit-length embedding in each space; a gallery image reuses its stored embedding."""
    if query.gallery_index is not None:
        return {space: np.asarray(services.gallery.embedding("image", space)[query.gallery_index]) for space in SPACES}
    if query.upload is None:
        raise AppError("no image: upload one, or pick one from the gallery (or give its gallery index)")
    check_upload(query.upload)
    try:
        enc = services.bundle.encode_images([query.upload])
    except (ImageDecodeError, FileNotFoundError) as exc:
        # The header was fine but the pixel data is not (a truncated or damaged file).
        reason = exc.__cause__ or exc
        raise AppError(
            f"cannot decode the uploaded image {Path(query.upload).name!r} ({type(reason).__name__}: {reason}): "
            "the file is damaged or incomplete; upload it again or use another image"
        ) from exc
    return {"mii": enc.mii[0], "full": enc.full[0]}
