"""Near-duplicate gallery images and captions (full-space cosine ≥ a threshold), for the explorer tab."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from disncl.app.explorer import check_row_limit
from disncl.app.services import AppError, Services
from disncl.serve.duplicates import near_duplicate_pairs

DUPLICATE_MODALITIES = ("caption", "image")
DUPLICATE_HEADERS = ["a", "b", "cosine (full)", "item a", "item b", "identical text"]


def near_duplicates(
    services: Services,
    modality: str,
    threshold: float,
    limit: float = 100,
    thumbnail: Callable[[Path | None], str] = lambda p: "" if p is None else str(p),
) -> tuple[str, list[list[Any]]]:
    """A summary line and rows (:data:`DUPLICATE_HEADERS`) of the most similar gallery pairs of a modality."""
    if modality not in DUPLICATE_MODALITIES:
        raise AppError(f"modality must be one of {', '.join(DUPLICATE_MODALITIES)}, got {modality!r}")
    try:
        t = float(threshold)
    except (TypeError, ValueError) as exc:
        raise AppError(f"threshold {threshold!r} is not a number") from exc
    if not 0.5 <= t <= 1.0:
        raise AppError(f"threshold must be a cosine between 0.5 and 1, got {threshold}")
    gallery = services.gallery
    n = gallery.n_images if modality == "image" else gallery.n_captions
    if n == 0:
        raise AppError(f"this gallery has no {modality}s")
    pairs, sims, truncated = near_duplicate_pairs(gallery.embedding(modality, "full"), t)
    involved = len(set(pairs.ravel().tolist()))
    summary = (f"**{len(pairs)}**{'+' if truncated else ''} {modality} pairs at full-space cosine ≥ {t:.3f}, "
               f"involving {involved} of {n} {modality}s.")
    if modality == "caption":
        same = sum(gallery.captions[a] == gallery.captions[b] for a, b in pairs)
        summary += f" {same} of the pairs are the identical text."

    def item(i: int) -> str:
        return gallery.captions[i] if modality == "caption" else thumbnail(gallery.image_path(i))

    rows = [
        [int(a), int(b), round(float(s), 4), item(a), item(b),
         ("yes" if gallery.captions[a] == gallery.captions[b] else "no") if modality == "caption" else ""]
        for (a, b), s in zip(pairs[: check_row_limit(limit)], sims, strict=False)
    ]
    return summary, rows
