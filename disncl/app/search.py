"""The Search tab: text→image and image→text over the gallery, ranked in the MII and the full space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from disncl.app.limits import ImageQuery, check_k, encode_caption, encode_image
from disncl.app.services import SPACES, AppError, Services
from disncl.serve.gallery import Gallery


@dataclass(frozen=True)
class Hit:
    """One search result: its rank and score in the searched space and its rank in the other space."""

    space: str
    rank: int
    index: int
    score: float
    other_rank: int


def _ranks(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1-based rank of each item among all scores (ties share the best rank)."""
    return np.array([int((scores > scores[i]).sum()) + 1 for i in items], dtype=np.int64)


def rank_gallery(services: Services, modality: str, query: dict[str, np.ndarray], k: int) -> dict[str, list[Hit]]:
    """Top-``k`` of a gallery modality under each space, each hit annotated with its rank in the other space."""
    gallery = services.gallery
    search = gallery.search_images if modality == "image" else gallery.search_captions
    hits: dict[str, list[Hit]] = {}
    for space, other in (("mii", "full"), ("full", "mii")):
        scores, ids = search(query[space], space, k)
        found = ids[0][ids[0] >= 0]
        # Exact scores of every item in the other space: ranks of items outside its top-k are wanted too.
        other_scores = gallery.embedding(modality, other) @ query[other]
        other_rank = _ranks(other_scores, found)
        hits[space] = [
            Hit(space, r + 1, int(i), float(s), int(o))
            for r, (i, s, o) in enumerate(zip(found, scores[0][: len(found)], other_rank, strict=True))
        ]
    return hits


def search_text(services: Services, text: str, k: float) -> dict[str, list[Hit]]:
    """Text → image: the gallery images closest to a caption, in the MII and the full space."""
    if services.gallery.n_images == 0:
        raise AppError("this gallery has no images to search; build it with an image folder or captions file")
    k = check_k(k, services.gallery.n_images)
    return rank_gallery(services, "image", encode_caption(services, text), k)


def search_image(services: Services, query: ImageQuery, k: float) -> dict[str, list[Hit]]:
    """Image → text: the gallery captions closest to an image, in the MII and the full space."""
    if services.gallery.n_captions == 0:
        raise AppError("this gallery has no captions to search; build it with a captions file")
    k = check_k(k, services.gallery.n_captions)
    return rank_gallery(services, "caption", encode_image(services, query), k)


def image_label(gallery: Gallery, index: int) -> str:
    """A short text for a gallery image: its first caption when it has one, else its id."""
    if gallery.caption_image is not None:
        owned = np.flatnonzero(gallery.caption_image == index)
        if len(owned):
            return gallery.captions[int(owned[0])]
    return gallery.image_id(index)


def image_gallery_items(services: Services, hits: list[Hit]) -> list[tuple[str, str]]:
    """(image path, "#rank · score") per image hit: tiles are small, the hit table has the rest."""
    return [(str(services.gallery.image_path(h.index)), f"#{h.rank} · {h.score:.3f}") for h in hits]


IMAGE_HIT_HEADERS = ["space", "rank", "image #", "score", "rank in other space", "image's caption"]
CAPTION_HIT_HEADERS = ["rank", "score", "caption", "caption #", "rank in other space", "of this image"]
# Relative widths for tables of these columns: the text column takes what the numbers leave.
IMAGE_HIT_WIDTHS = ["8%", "6%", "8%", "9%", "11%", "58%"]
CAPTION_HIT_WIDTHS = ["7%", "10%", "51%", "10%", "12%", "10%"]


def image_hit_rows(services: Services, hits: dict[str, list[Hit]]) -> list[list[Any]]:
    """Both spaces' image hits as table rows (long format: one row per space and rank)."""
    return [
        [h.space, h.rank, h.index, round(h.score, 4), h.other_rank, image_label(services.gallery, h.index)]
        for space in SPACES
        for h in hits[space]
    ]


def caption_hit_rows(services: Services, hits: list[Hit], query: ImageQuery) -> list[list[Any]]:
    """One space's caption hits as table rows; the last column marks the query image's own captions."""
    owners = services.gallery.caption_image
    rows = []
    for h in hits:
        own = ""
        if query.gallery_index is not None and owners is not None:
            own = "yes" if int(owners[h.index]) == query.gallery_index else "no"
        rows.append([h.rank, round(h.score, 4), services.gallery.captions[h.index], h.index, h.other_rank, own])
    return rows


def browse_page(services: Services, page: int, per_page: int) -> list[tuple[str, str]]:
    """One page of the gallery's images as (path, "#index · label"), for picking a query image."""
    n = services.gallery.n_images
    start = max(0, int(page)) * per_page
    return [
        (str(services.gallery.image_path(i)), f"#{i} · {image_label(services.gallery, i)}")
        for i in range(start, min(n, start + per_page))
    ]


def page_count(n: int, per_page: int) -> int:
    return max(1, -(-n // per_page))


# A vocabulary longer than this is not listed in the notice: the list would not help.
MAX_LISTED_WORDS = 200


def vocabulary_notice(services: Services, text: str) -> str:
    """Markdown that names the query's words the model cannot read, and what it can; "" when none.

    A word-level tokenizer turns every word outside its vocabulary into one unknown token, so a query
    of unknown words still returns results (ranked by an almost constant embedding) with no sign of it.
    A subword tokenizer (CLIP's BPE) spells every word, and this is always "".
    """
    unknown = [w for w in services.bundle.unknown_words(text) if any(c.isalnum() for c in w)]
    if not unknown:
        return ""
    listed = ", ".join(f"**{w}**" for w in unknown)
    notice = f"⚠ The model does not know {listed}: those words carry no meaning in this search."
    words = services.bundle.vocabulary
    if words is not None and len(words) <= MAX_LISTED_WORDS:
        notice += f" It knows {len(words)} words: " + ", ".join(f"`{w}`" for w in words) + "."
    return notice


def example_captions(gallery: Gallery, n: int = 5) -> list[str]:
    """Up to ``n`` distinct gallery captions spread over the gallery, to offer as example queries."""
    distinct = list(dict.fromkeys(gallery.captions))
    if not distinct:
        return []
    picks = np.linspace(0, len(distinct) - 1, num=min(n, len(distinct))).round().astype(int)
    return [distinct[i] for i in dict.fromkeys(picks.tolist())]
