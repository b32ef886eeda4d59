"""Turn images and captions into the arrays the exported graphs take, with numpy only.

The image rule is the training pipeline's own (:mod:`disncl.data.images`, which is torch-free):
any PIL mode to RGB (transparency over white), shorter side to ``size`` with bicubic resampling,
centre crop, then ``(x / 255 - mean) / std`` in float32 exactly as ``DisNCLModel.preprocess``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from disncl.data.images import (
    _PIL_DECODE_ERRORS,
    ImageDecodeError,
    _check_size,
    _resize_and_crop,
    _to_rgb,
    load_image,
)

ImageSource = str | os.PathLike[str] | bytes | Image.Image


def load_rgb(source: ImageSource, size: int) -> np.ndarray:
    """Decode a path, encoded file bytes or a PIL image to a ``(size, size, 3)`` uint8 RGB array.

    Paths go through :func:`disncl.data.images.load_image` itself, so served and trained pixels
    are identical. Raises :class:`~disncl.data.images.ImageDecodeError` for unreadable input.
    """
    if isinstance(source, (str, os.PathLike)):
        return load_image(source, size)
    _check_size(size)
    if isinstance(source, Image.Image):
        return np.asarray(_resize_and_crop(_to_rgb(source), size), dtype=np.uint8)
    if isinstance(source, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(source)) as img:
                # Same JPEG DCT-scaling shortcut as load_image, so bytes and files decode alike.
                img.draft(None, (size, size))
                img.load()
                return np.asarray(_resize_and_crop(_to_rgb(img), size), dtype=np.uint8)
        except _PIL_DECODE_ERRORS as err:
            raise ImageDecodeError(f"cannot decode image bytes: {type(err).__name__}: {err}", ["<bytes>"]) from err
    raise TypeError(f"expected an image path, encoded bytes or a PIL image, got {type(source).__name__}")


def fit_array(images: np.ndarray, size: int) -> np.ndarray:
    """Bring a uint8 ``(N, H, W, 3)`` array to ``(N, size, size, 3)`` with the :func:`load_rgb` rule.

    Arrays already at ``size`` are returned unchanged (no copy), which is the common case of
    images decoded by :func:`load_rgb` or :class:`disncl.data.images.ImageArray`.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 images, got {images.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([load_rgb(Image.fromarray(img), size) for img in images])


def normalise(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` RGB to float32 ``(N, 3, H, W)``: ``(x / 255 - mean) / std``."""
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {batch.dtype} {batch.shape}")
    # Same float32 operations in the same order as DisNCLModel.preprocess, for bitwise-equal inputs.
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s)


def tokenize_texts(tokenizer: Tokenizer, texts: Sequence[str], eos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Encode captions to int64 ``input_ids`` and ``attention_mask`` of shape ``(N, L)``.

    ``tokenizer`` is a bundle's ``tokenizer.json``, which carries the training truncation and
    padding (right-padded to the longest caption). As in :func:`disncl.models.tokenizer.tokenize`,
    a row left without ``eos_id`` gets it on its last attended token, where the text tower pools.
    """
    encodings = tokenizer.encode_batch(list(texts))
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    if eos_id is not None:
        missing = ~(input_ids == eos_id).any(axis=1)
        if missing.any():
            last = np.maximum(attention_mask.sum(axis=1), 1) - 1
            rows = np.flatnonzero(missing)
            input_ids[rows, last[rows]] = eos_id
    return input_ids, attention_mask



def tokenizer_words(tokenizer: Tokenizer) -> tuple[int | None, list[str] | None]:
    """The unknown token's id (None if there is none) and, for a word-level tokenizer, its words.

    The words are sorted with special tokens left out; None for a subword tokenizer (BPE, WordPiece,
    Unigram), which spells any word from pieces. Parses the tokenizer's JSON: call once, not per query.
    """
    spec = json.loads(tokenizer.to_str())
    model = spec["model"]
    unk = model.get("unk_token")
    unk_id = tokenizer.token_to_id(unk) if unk is not None else None
    if model.get("type") != "WordLevel":
        return unk_id, None
    special = {t["content"] for t in spec.get("added_tokens") or []}
    return unk_id, sorted(w for w in model["vocab"] if w not in special)


def unknown_words(tokenizer: Tokenizer, unk_id: int | None, text: str) -> list[str]:
    """The words of ``text`` that ``tokenizer`` maps to ``unk_id``, in order, without repeats."""
    if unk_id is None:
        return []
    encoding = tokenizer.encode(text)
    found = [text[a:b] for i, (a, b) in zip(encoding.ids, encoding.offsets, strict=True) if i == unk_id and b > a]
    return list(dict.fromkeys(found))
