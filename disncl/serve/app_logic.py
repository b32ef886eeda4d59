"""What the Gradio app computes, without Gradio: search, pair inspection, the noisy-pair explorer, exports.

``app.py`` only lays out components and wires events to the functions here, so every number the
app shows can be tested (and reproduced) by calling these functions on a loaded :class:`Services`.
Nothing here imports torch: the encoders are a torch-free :class:`~disncl.serve.bundle.Bundle`.

Similarity spaces: ``"mii"`` ranks by the modality-invariant codes (what DisNCL retrieves with) and
``"full"`` by the tower features (docs/method.md, Section 1).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from disncl.data.images import ImageDecodeError
from disncl.serve.bundle import Bundle
from disncl.serve.gallery import Gallery, UnsafePathError, safe_relative_path
from disncl.serve.pair_scores import PairScores

SPACES = ("mii", "full")
SPACE_NAMES = {"mii": "MII only", "full": "full feature"}
# The training default of the alignment temperature (docs/method.md, Section 3), used when the
# bundle's manifest does not record the run's own value.
DEFAULT_TAU = 0.07
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
EXPLORER_SORTS = {
    "clean probability": "clean_prob",
    "MII similarity": "mii_sim",
    "full similarity": "full_sim",
    "full − MII": "exclusive",
    "rank of the true image": "image_rank",
    "loss": "loss",
    "pair": "pair",
}
EXPLORER_SHOW = ("all", "flagged", "kept")
EXPLORER_HEADERS = [
    "pair", "thumbnail", "caption", "clean prob", "MII sim", "full sim", "full − MII", "image rank", "flagged",
    "ground truth",
]


class AppError(ValueError):
    """A request the app cannot answer; the message says what to change (the UI shows it verbatim)."""


@dataclass
class Services:
    """The loaded model bundle and gallery, the gallery's attached pair scores, and a folder for exports."""

    bundle: Bundle
    gallery: Gallery
    pair_scores: PairScores | None = None
    export_root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="disncl-app-")))

    def __post_init__(self) -> None:
        # Exports are per-request files handed to the browser; remove them with the app, not one by one.
        weakref.finalize(self, shutil.rmtree, self.export_root, True)

    @classmethod
    def load(cls, bundle_dir: str | Path, gallery_dir: str | Path, providers: list[str] | None = None) -> Services:
        """Open a bundle and a gallery, and the gallery's pair scores when it has them."""
        bundle = Bundle.load(bundle_dir, providers=providers)
        gallery = Gallery.load(gallery_dir)
        dims = bundle.embedding_dims
        if gallery.dims != {space: dims[space] for space in SPACES}:
            raise AppError(
                f"the gallery in {gallery_dir} has embedding widths {gallery.dims} but the bundle in {bundle_dir} "
                f"produces {dims}; rebuild the gallery with this bundle (python -m disncl index --bundle ...)"
            )
        return cls(bundle=bundle, gallery=gallery, pair_scores=gallery.load_pair_scores())

    @property
    def tau(self) -> float:
        """The temperature of the soft match score: the trained one when the manifest records it."""
        return manifest_tau(self.bundle.manifest)


def manifest_tau(manifest: dict[str, Any]) -> float:
    """The run's ``loss.tau`` from a bundle manifest, else :data:`DEFAULT_TAU`."""
    training = manifest.get("training") or {}
    tau = ((training.get("config") or {}).get("loss") or {}).get("tau")
    if isinstance(tau, (int, float)) and not isinstance(tau, bool) and tau > 0:
        return float(tau)
    return DEFAULT_TAU


# ---------------------------------------------------------------------------------------------- inputs


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


# ---------------------------------------------------------------------------------------------- search


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


def _search(services: Services, modality: str, query: dict[str, np.ndarray], k: int) -> dict[str, list[Hit]]:
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
    return _search(services, "image", encode_caption(services, text), k)


def search_image(services: Services, query: ImageQuery, k: float) -> dict[str, list[Hit]]:
    """Image → text: the gallery captions closest to an image, in the MII and the full space."""
    if services.gallery.n_captions == 0:
        raise AppError("this gallery has no captions to search; build it with a captions file")
    k = check_k(k, services.gallery.n_captions)
    return _search(services, "caption", encode_image(services, query), k)


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


# ---------------------------------------------------------------------------------------------- pair inspector


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
    return _search(services, modality, query, check_k(k, n))["mii"]


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


# ---------------------------------------------------------------------------------------------- explorer


def require_pair_scores(services: Services) -> PairScores:
    if services.pair_scores is None:
        raise AppError(
            "this gallery has no pair scores attached; rebuild it with a training run's pair_scores.csv "
            "(python -m disncl index ... --pair-scores RUN/pair_scores.csv)"
        )
    return services.pair_scores


def check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise AppError(f"threshold {threshold!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise AppError(f"threshold must be a clean probability between 0 and 1, got {threshold}")
    return value


def pair_image_path(services: Services, relative: str | None) -> Path | None:
    """A training image (path relative to the data root) if it lies under the gallery root and exists.

    Training paths come from the pair-scores file, not from the user, and are still checked to stay
    under the root, which is the only folder the app serves files from.
    """
    if not relative:
        return None
    try:
        path = services.gallery.root / safe_relative_path(relative)
    except UnsafePathError:
        return None
    return path if path.is_file() else None


def _truth(scores: PairScores, rows: np.ndarray) -> list[str]:
    return ["clean" if scores.is_clean[r] else "noisy" if scores.truth_known[r] else "unknown" for r in rows]


def explorer_rows(
    services: Services,
    threshold: float,
    show: str = "all",
    sort_by: str = "clean probability",
    descending: bool = False,
    contains: str = "",
    limit: float = 200,
    thumbnail: Callable[[Path | None], str] = lambda p: "" if p is None else str(p),
) -> list[list[Any]]:
    """Rows of the explorer table (:data:`EXPLORER_HEADERS`), filtered, sorted and cut to ``limit``.

    ``show`` keeps all, only flagged (clean probability ≤ threshold) or only kept pairs; ``contains``
    keeps captions containing that text (case-insensitive); ``thumbnail`` renders an image path.
    """
    scores = require_pair_scores(services)
    flag = scores.flagged(check_threshold(threshold))
    if show not in EXPLORER_SHOW:
        raise AppError(f"show must be one of {', '.join(EXPLORER_SHOW)}, got {show!r}")
    if sort_by not in EXPLORER_SORTS:
        raise AppError(f"sort by must be one of {', '.join(EXPLORER_SORTS)}, got {sort_by!r}")
    keep = np.ones(len(scores), dtype=bool) if show == "all" else flag if show == "flagged" else ~flag
    needle = check_text_length((contains or "").strip(), "filter text").lower()
    if needle:
        keep &= np.array([needle in c.lower() for c in scores.caption], dtype=bool)
    key = EXPLORER_SORTS[sort_by]
    values = scores.full_sim - scores.mii_sim if key == "exclusive" else getattr(scores, key)
    rows = np.flatnonzero(keep)
    # Stable sort with the pair id as the tie-break, so equal scores keep a reproducible order.
    order = np.lexsort((scores.pair[rows], -values[rows] if descending else values[rows]))
    rows = rows[order][: _row_limit(limit)]
    truth = _truth(scores, rows)
    return [
        [
            int(scores.pair[r]),
            thumbnail(pair_image_path(services, scores.image[r])),
            scores.caption[r],
            round(float(scores.clean_prob[r]), 4),
            round(float(scores.mii_sim[r]), 4),
            round(float(scores.full_sim[r]), 4),
            round(float(scores.full_sim[r] - scores.mii_sim[r]), 4),
            int(scores.image_rank[r]),
            "yes" if flag[r] else "no",
            t,
        ]
        for r, t in zip(rows, truth, strict=True)
    ]


def _row_limit(limit: float) -> int:
    try:
        value = int(limit)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"number of rows {limit!r} is not a number") from exc
    if value < 1:
        raise AppError(f"number of rows must be at least 1, got {limit}")
    return value


def explorer_summary(services: Services, threshold: float) -> dict[str, float | int]:
    """Counts at the threshold and, where ground truth exists, precision, recall and AUROC of the flag."""
    summary = require_pair_scores(services).summary(check_threshold(threshold))
    # NaN is not JSON; an undefined ratio is reported as null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The explorer's live counts and detection quality as a line of markdown."""
    text = (
        f"**{summary['n_flagged']}** of {summary['n_pairs']} training pairs flagged as noisy "
        f"({100 * summary['flagged_fraction']:.1f} %) at clean probability ≤ {summary['threshold']:.2f}."
    )
    if summary.get("n_truth_known"):
        def fmt(key: str) -> str:
            value = summary.get(key)
            return "n/a" if value is None else f"{value:.3f}"

        text += (
            f" Ground truth known for {summary['n_truth_known']} pairs ({summary['n_noisy']} truly noisy): "
            f"precision **{fmt('noisy_precision')}**, recall **{fmt('noisy_recall')}**, "
            f"AUROC **{fmt('auroc')}** (threshold-free)."
        )
    else:
        text += " No ground truth in this file, so precision, recall and AUROC cannot be computed."
    return text


def histogram_figure(services: Services, threshold: float, bins: int = 20) -> Figure:
    """Stacked histogram of clean probabilities, flagged and kept pairs in two colours, threshold marked."""
    threshold = check_threshold(threshold)
    hist = require_pair_scores(services).histogram(bins=bins, threshold=threshold)
    edges = hist["edges"]
    width = np.diff(edges)
    fig = Figure(figsize=(6.4, 3.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title("Clean probability of the training pairs", fontsize="medium")
    ax.bar(edges[:-1], hist["kept"], width=width, align="edge", color="#4c78a8", label="kept (clean)")
    ax.bar(
        edges[:-1], hist["flagged"], width=width, align="edge", bottom=hist["kept"], color="#e45756",
        label="flagged (noisy)",
    )
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.2f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("clean probability")
    ax.set_ylabel("training pairs")
    ax.legend(loc="upper center", fontsize="small", frameon=False, ncols=3, bbox_to_anchor=(0.5, -0.22))
    return fig


@dataclass(frozen=True)
class PairExplanation:
    """Why a training pair is (or is not) flagged: its values and the partners the model prefers."""

    values: dict[str, Any]
    image: Path | None
    best_image: Path | None
    markdown: str


def explain_pair(services: Services, pair: float | int | str, threshold: float) -> PairExplanation:
    """The "why flagged" view of one training pair."""
    scores = require_pair_scores(services)
    try:
        number = int(float(pair))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"pair {pair!r} is not a pair number; pick a row of the table") from exc
    try:
        info = scores.explain(number, check_threshold(threshold))
    except KeyError as exc:
        raise AppError(str(exc.args[0])) from exc
    best_caption = info["best_caption_for_image"]
    best_image = info["best_image"]
    verdict = "flagged as noisy" if info["flagged"] else "kept as clean"
    truth = {True: "clean", False: "noisy", None: "unknown"}[info["is_clean"]]
    own_caption_wins = best_caption["index"] == info["caption_index"]
    own_image_wins = best_image["index"] == info["image_index"]
    lines = [
        f"### Pair {info['pair']}: {verdict} (ground truth: {truth})",
        f"> {info['caption']}",
        "",
        f"- clean probability **{info['clean_prob']:.3f}** (threshold {threshold:.2f}); per-pair loss "
        f"{info['loss']:.3f}",
        f"- MII similarity {info['mii_sim']:.3f}, full similarity {info['full_sim']:.3f} "
        f"(full − MII {info['full_sim'] - info['mii_sim']:+.3f})",
        f"- its image ranks **#{info['image_rank']}** among all training images for this caption",
        "- the caption that best matches its image instead: "
        + ("this very caption" if own_caption_wins else f"#{best_caption['index']} “{best_caption['text'] or '?'}”"),
        "- the best image for this caption: "
        + ("its own image" if own_image_wins else f"training image #{best_image['index']} (right)"),
    ]
    return PairExplanation(
        values=info,
        image=pair_image_path(services, info["image"]),
        best_image=pair_image_path(services, best_image["path"]),
        markdown="\n".join(lines),
    )


def export_flagged(services: Services, threshold: float) -> tuple[Path, list[Path]]:
    """Write the flagged pairs as CSV and the pairing as a noise index with per-caption flags.

    Returns the CSV and the noise-index files (``noise_index.npy``, its ``.json`` sidecar and
    ``noise_index.flagged.npy``), in a fresh folder per call so concurrent users do not clash.
    """
    scores = require_pair_scores(services)
    threshold = check_threshold(threshold)
    mask = scores.flagged(threshold)
    folder = services.export_root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    csv_path = scores.to_csv(folder / f"flagged_pairs_t{threshold:.2f}.csv", mask)
    index_path, flags_path = scores.to_noise_index(folder / "noise_index.npy", mask)
    return csv_path, [index_path, index_path.with_suffix(".json"), flags_path]


# ---------------------------------------------------------------------------------------------- model card


def _recall_rows(retrieval: dict[str, Any]) -> list[str]:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
    rows = ["| space | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for space in SPACES:
        if space in retrieval:
            values = " | ".join(f"{retrieval[space].get(k, float('nan')):.1f}" for k in keys)
            rows.append(f"| {SPACE_NAMES[space]} | {values} |")
    return rows


def model_card(manifest: dict[str, Any], gallery: Gallery | None = None) -> str:
    """Markdown: what model, trained how and on what noise, its test recall (MII vs full), the gallery."""
    training = manifest.get("training") or {}
    model_cfg = manifest.get("model_config") or {}
    dims = manifest.get("embedding_dims") or {}
    method = training.get("method") or "unknown (the bundle records no training run)"
    lines = ["## Model card", "", f"**Method:** {method}"]
    if training:
        noise = training.get("noise_file") or (
            f"{training.get('noise_kind')}-level, rate {training.get('noise_rate')}"
            if training.get("noise_rate") else "none (clean pairs)"
        )
        data = training.get("data_root") or training.get("karpathy_json") or "unknown"
        lines += [
            f"**Trained on:** `{data}` for {training.get('epochs')} epochs, checkpoint `{training.get('checkpoint')}`",
            f"**Training noise:** {noise}",
        ]
    lines += [
        f"**Architecture:** image size {model_cfg.get('image_size', '?')}, "
        f"embedding widths full {dims.get('full', '?')}, MII {dims.get('mii', '?')}, MEI {dims.get('mei', '?')}; "
        "backbone " + (f"`{model_cfg['backbone']}`" if model_cfg.get("backbone") else "a CLIP trained from scratch"),
        f"**Soft-match temperature τ:** {manifest_tau(manifest):g}",
        f"**Exported:** {manifest.get('created', '?')}",
    ]
    lines += ["", *_evaluation_lines(manifest.get("evaluation"))]
    worst = _worst_parity(manifest.get("parity") or {})
    if worst is not None:
        lines += ["", f"ONNX Runtime matches PyTorch to {worst:.1e} (largest absolute difference of any output)."]
    if gallery is not None:
        lines += [
            "",
            f"**Gallery:** {gallery.n_images} images and {gallery.n_captions} captions, "
            f"{gallery.kind} index, pair scores {'attached' if gallery.pair_scores_path else 'not attached'}.",
        ]
    return "\n".join(_paragraphs(lines))


def _worst_parity(parity: dict[str, Any]) -> float | None:
    """The largest ONNX-vs-PyTorch difference recorded by the export's parity check, if any."""
    diffs = parity.get("max_abs_diff")
    if not isinstance(diffs, dict):
        return None
    values = [v for per_output in diffs.values() if isinstance(per_output, dict) for v in per_output.values()]
    return max(values) if values else None


def _paragraphs(lines: list[str]) -> list[str]:
    """Markdown lines, with bold "key:" lines ended by a hard break so they render one per line."""
    return [line + "  " if line.startswith("**") else line for line in lines]


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["**Test recall:** not recorded (run `python -m disncl eval RUN` before exporting)."]
    result = evaluation.get("result") or {}
    lines = [f"### Test recall on split `{result.get('split', '?')}` (checkpoint `{result.get('checkpoint', '?')}`)"]
    if not evaluation.get("up_to_date", True):
        lines.append("*The checkpoint changed after this evaluation: the numbers may be stale.*")
    lines += _recall_rows(result.get("retrieval") or {})
    detection = (result.get("detection") or {}).get("gmm")
    if detection:
        lines += ["", f"Noise detection on the training pairs: AUROC {detection.get('auroc', float('nan')):.3f}, "
                      f"noisy precision {detection.get('noisy_precision', float('nan')):.3f}, "
                      f"noisy recall {detection.get('noisy_recall', float('nan')):.3f}."]
    return lines
