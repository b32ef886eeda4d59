"""The Noisy-pair explorer tab: the training pairs' table, threshold metrics, histogram, "why flagged", exports."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from disncl.app.limits import check_text_length
from disncl.app.services import AppError, Services
from disncl.serve.gallery import UnsafePathError, safe_relative_path
from disncl.serve.pair_scores import PairScores

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


def check_count(services: Services, count: float | None) -> int | None:
    """A count rule's N (``None``: no count rule, the threshold decides), as a whole number of pairs."""
    if count is None or count == "":
        return None
    n = len(require_pair_scores(services))
    try:
        value = float(count)
    except (TypeError, ValueError) as exc:
        raise AppError(f"count {count!r} is not a number") from exc
    if not (value.is_integer() and 0 <= value <= n):
        raise AppError(f"count must be a whole number of pairs between 0 and {n}, got {count}")
    return int(value)


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
    count: float | None = None,
) -> list[list[Any]]:
    """Rows of the explorer table (:data:`EXPLORER_HEADERS`), filtered, sorted and cut to ``limit``.

    ``show`` keeps all, only flagged (clean probability ≤ threshold, or with ``count`` the N first in the
    flag order, Eq. 12c) or only kept pairs; ``contains`` keeps captions containing that text
    (case-insensitive); ``thumbnail`` renders an image path.
    """
    scores = require_pair_scores(services)
    flag = scores.flagged(check_threshold(threshold), check_count(services, count))
    if show not in EXPLORER_SHOW:
        raise AppError(f"show must be one of {', '.join(EXPLORER_SHOW)}, got {show!r}")
    if sort_by not in EXPLORER_SORTS:
        raise AppError(f"sort by must be one of {', '.join(EXPLORER_SORTS)}, got {sort_by!r}")
    needle = check_text_length((contains or "").strip(), "filter text").lower()
    keep = None if show == "all" else flag if show == "flagged" else ~flag
    if needle:
        found = scores.caption_contains(needle)
        keep = found if keep is None else keep & found
    key = EXPLORER_SORTS[sort_by]
    values = scores.exclusive if key == "exclusive" else getattr(scores, key)
    limit_rows = check_row_limit(limit)
    # Sorted with the pair id as the tie-break, so equal scores keep a reproducible order. Unfiltered, the
    # whole columns are ranked in place: gathering 10 million rows first cost more than the ranking.
    if keep is None:
        rows = first_in_order(-values if descending else values, scores.pair, limit_rows)
    else:
        rows = np.flatnonzero(keep)
        rows = rows[first_in_order(-values[rows] if descending else values[rows], scores.pair[rows], limit_rows)]
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


def first_in_order(values: np.ndarray, tie_break: np.ndarray, limit: int) -> np.ndarray:
    """``np.lexsort((tie_break, values))[:limit]`` without sorting everything: the ``limit`` smallest
    values are found by partition (linear time), so a page of 100 from 10 million rows sorts only what
    it shows (and the rows tied with the last one shown)."""
    if limit >= len(values):
        return np.lexsort((tie_break, values))
    kth = np.partition(values, limit - 1)[limit - 1]
    below = np.flatnonzero(values < kth)
    tied = np.flatnonzero(values == kth)
    tied = tied[np.argsort(tie_break[tied], kind="stable")][: limit - len(below)]
    pick = np.concatenate([below, tied])
    return pick[np.lexsort((tie_break[pick], values[pick]))]


def check_row_limit(limit: float) -> int:
    try:
        value = int(limit)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"number of rows {limit!r} is not a number") from exc
    if value < 1:
        raise AppError(f"number of rows must be at least 1, got {limit}")
    return value


def explorer_summary(services: Services, threshold: float, count: float | None = None) -> dict[str, float | int]:
    """Counts under the flag rule (the threshold, or ``count``) and, where ground truth exists, precision,
    recall and AUROC of the flag; ``count`` is −1 under the threshold rule."""
    summary = require_pair_scores(services).summary(check_threshold(threshold), check_count(services, count))
    # NaN is not JSON; an undefined ratio is reported as null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The explorer's live counts and detection quality as a line of markdown."""
    if summary.get("count", -1) >= 0:
        rule = (f"the {summary['count']:,} least likely clean (count rule: by clean probability, ties by MII "
                "similarity; move the threshold to return to it)")
    else:
        rule = f"at clean probability ≤ {summary['threshold']:.2f}"
    text = (
        f"**{summary['n_flagged']:,}** of {summary['n_pairs']:,} training pairs flagged as noisy "
        f"({100 * summary['flagged_fraction']:.1f} %) {rule}."
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


def histogram_figure(services: Services, threshold: float, bins: int = 20, count: float | None = None) -> Figure:
    """Stacked histogram of clean probabilities, flagged and kept pairs in two colours, threshold marked
    (under a count rule, the clean probability of its last flagged pair)."""
    threshold = check_threshold(threshold)
    hist = require_pair_scores(services).histogram(bins=bins, threshold=threshold,
                                                   count=check_count(services, count))
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


def explain_pair(
    services: Services, pair: float | int | str, threshold: float, count: float | None = None
) -> PairExplanation:
    """The "why flagged" view of one training pair, under the flag rule (the threshold, or ``count``)."""
    scores = require_pair_scores(services)
    try:
        number = int(float(pair))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"pair {pair!r} is not a pair number; pick a row of the table") from exc
    try:
        n = check_count(services, count)
        info = scores.explain(number, check_threshold(threshold), n)
    except KeyError as exc:
        raise AppError(str(exc.args[0])) from exc
    best_caption = info["best_caption_for_image"]
    best_image = info["best_image"]
    verdict = "flagged as noisy" if info["flagged"] else "kept as clean"
    truth = {True: "clean", False: "noisy", None: "unknown"}[info["is_clean"]]
    own_caption_wins = best_caption["index"] == info["caption_index"]
    own_image_wins = best_image["index"] == info["image_index"]
    rule = f"threshold {threshold:.2f}" if n is None else f"count rule: the {n:,} least likely"
    lines = [
        f"### Pair {info['pair']}: {verdict} (ground truth: {truth})",
        f"> {info['caption']}",
        "",
        f"- clean probability **{info['clean_prob']:.3f}** ({rule}); per-pair loss "
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


def export_flagged(services: Services, threshold: float, count: float | None = None) -> tuple[Path, list[Path]]:
    """Write the flagged pairs (threshold or ``count`` rule) as CSV and the pairing as a noise index with
    per-caption flags.

    Returns the CSV (``flagged_pairs_t0.50.csv``, or ``flagged_pairs_n1500.csv`` under a count rule) and
    the noise-index files (``noise_index.npy``, its ``.json`` sidecar and ``noise_index.flagged.npy``), in
    a fresh folder per call so concurrent users do not clash.
    """
    scores = require_pair_scores(services)
    threshold = check_threshold(threshold)
    n = check_count(services, count)
    mask = scores.flagged(threshold, n)
    folder = services.export_root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    name = f"flagged_pairs_t{threshold:.2f}.csv" if n is None else f"flagged_pairs_n{n}.csv"
    csv_path = scores.to_csv(folder / name, mask)
    index_path, flags_path = scores.to_noise_index(folder / "noise_index.npy", mask)
    return csv_path, [index_path, index_path.with_suffix(".json"), flags_path]


FLAG_BY = ("probability", "count", "percent")


def flag_rule_for(services: Services, flag_by: str, value: float) -> tuple[float, int | None]:
    """The flag rule ``(threshold, count)`` that flags pairs by probability, by count or by percentage.

    ``probability`` t: ``(t, None)``, the pairs with clean probability ≤ t. ``count`` N: exactly the N
    least likely clean pairs in the flag order of Eq. 12c (DataComp-style "drop the bottom N"), even
    where clean probabilities tie; ``percent`` x: N = round(x % of the pairs). The threshold returned
    with a count is the clean probability of the N-th pair (0 for N = 0), for the slider and the plot.
    """
    if flag_by not in FLAG_BY:
        raise AppError(f"flag by must be one of {', '.join(FLAG_BY)}, got {flag_by!r}")
    if flag_by == "probability":
        return check_threshold(value), None
    scores = require_pair_scores(services)
    try:
        amount = float(value)
    except (TypeError, ValueError) as exc:
        raise AppError(f"{flag_by} {value!r} is not a number") from exc
    limit = len(scores) if flag_by == "count" else 100.0
    if not 0 <= amount <= limit or (flag_by == "count" and not amount.is_integer()):
        kind = "a whole number" if flag_by == "count" else "a number"
        raise AppError(f"{flag_by} must be {kind} between 0 and {limit:g}, got {value}")
    n = int(amount) if flag_by == "count" else int(round(amount / 100 * len(scores)))
    return (scores.nth_least_likely(n) if n else 0.0), n
