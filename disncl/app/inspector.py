"""The Pair inspector tab: any image with any caption, its soft match score and MII vs full similarity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from disncl.app.limits import ImageQuery, check_k, encode_caption, encode_image
from disncl.app.search import Hit, rank_gallery
from disncl.app.services import Services


def soft_match_score(gallery_sims: np.ndarray, own_sim: float, tau: float, own_in_gallery: bool) -> float:
    """softmax over the candidate images of (MII similarity / τ) for a caption, at the inspected image.

    The candidates are the gallery's images plus the inspected image (once: a gallery image is
    already among them), so the value is the probability that the inspected image is the caption's
    match among them. Computed in log space, so τ = 0.01 does not overflow.
    """
    logits = np.asarray(gallery_sims, dtype=np.float64) / tau
    if not own_in_gallery:
        logits = np.append(logits, own_sim / tau)
    top = logits.max()
    log_norm = top + math.log(float(np.exp(logits - top).sum()))
    return float(math.exp(own_sim / tau - log_norm))


@dataclass(frozen=True)
class PairReport:
    """What the pair inspector shows about an (image, caption) pair."""

    soft_match: float
    mii_sim: float
    full_sim: float
    exclusive: float
    tau: float
    candidates: int
    image_to_captions: list[Hit]
    caption_to_images: list[Hit]

    def values(self) -> dict[str, float | int]:
        """The scalar values, rounded for display and JSON."""
        return {
            "soft_match_score": round(self.soft_match, 6),
            "mii_similarity": round(self.mii_sim, 6),
            "full_similarity": round(self.full_sim, 6),
            "exclusive_contribution": round(self.exclusive, 6),
            "tau": self.tau,
            "candidate_images": self.candidates,
        }


def _best(services: Services, modality: str, query: dict[str, np.ndarray], k: float) -> list[Hit]:
    n = services.gallery.n_images if modality == "image" else services.gallery.n_captions
    return rank_gallery(services, modality, query, check_k(k, n))["mii"]


def inspect_pair(services: Services, query: ImageQuery, caption: str, k: float) -> PairReport:
    """Scores of any image with any caption, and the best partners of each in the MII space."""
    image = encode_image(services, query)
    text = encode_caption(services, caption)
    mii_sim = float(image["mii"] @ text["mii"])
    full_sim = float(image["full"] @ text["full"])
    gallery = services.gallery
    gallery_sims = gallery.embedding("image", "mii") @ text["mii"]
    in_gallery = query.gallery_index is not None
    soft = soft_match_score(gallery_sims, mii_sim, services.tau, in_gallery)
    # A gallery may hold only images or only captions; the missing side just has no partners to list.
    to_captions = _best(services, "caption", image, k) if gallery.n_captions else []
    to_images = _best(services, "image", text, k) if gallery.n_images else []
    return PairReport(
        soft_match=soft,
        mii_sim=mii_sim,
        full_sim=full_sim,
        exclusive=full_sim - mii_sim,
        tau=services.tau,
        candidates=gallery.n_images + (0 if in_gallery else 1),
        image_to_captions=to_captions,
        caption_to_images=to_images,
    )


def pair_markdown(report: PairReport, query: ImageQuery) -> str:
    """The pair's values as a small markdown table with one-line readings."""
    lines = [
        f"**{query.describe()}** with the caption, over {report.candidates} candidate images (τ = {report.tau:g}):",
        "",
        "| measure | value | reading |",
        "|---|---|---|",
        f"| soft match score | {report.soft_match:.4f} | chance that this image is the caption's match |",
        f"| MII similarity | {report.mii_sim:.4f} | cosine of the modality-invariant codes |",
        f"| full similarity | {report.full_sim:.4f} | cosine of the full tower features |",
        f"| exclusive contribution | {report.exclusive:+.4f} | full − MII: what modality-exclusive detail adds |",
    ]
    return "\n".join(lines)
