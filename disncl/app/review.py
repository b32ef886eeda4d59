"""The review queue: flagged training pairs with a suggested re-match, decided pair by pair, exported.

For each flagged pair (clean probability ≤ threshold, least likely first) the queue shows two
suggestions from the training set, both already in the pair-scores table: the caption that best
matches the pair's image (``best_caption_for_image``) and the image that best matches its caption
(``best_image``). A reviewer decides per pair:

- ``accept``: the image keeps the suggested caption instead of its own (a corrected pair);
- ``keep``: the flag was wrong, the pair stays as it is;
- ``drop``: the pair leaves the data.

Flagged pairs left undecided are dropped on export; unflagged pairs are kept. The export writes a
corrected captions file (``image,caption``: every kept pair, accepted ones with the suggested caption)
and the keep and drop lists of pair numbers. Decisions travel as a JSON object ``{pair: decision}``,
so a client can hold them and the server stays stateless.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from disncl.app.explorer import (
    check_count,
    check_row_limit,
    check_threshold,
    pair_image_path,
    require_pair_scores,
)
from disncl.app.services import AppError, Services
from disncl.io import atomic_write

DECISIONS = ("accept", "keep", "drop")
REVIEW_HEADERS = ["pair", "image", "caption", "clean prob", "suggested caption (best for this image)",
                  "suggested image (best for this caption)", "decision"]
# Rows the app's queue shows: the least likely clean flagged pairs; a reviewer works from the top, and a
# queue of every flagged pair of a large set would not render. The rest are decided by pair number.
REVIEW_QUEUE_ROWS = 100


def check_decisions(decisions: dict[str, str] | None) -> dict[int, str]:
    """``{pair: decision}`` with integer pairs and known decisions; AppError naming the first bad entry."""
    out: dict[int, str] = {}
    for key, value in (decisions or {}).items():
        try:
            pair = int(key)
        except (TypeError, ValueError) as exc:
            raise AppError(f"decision key {key!r} is not a pair number") from exc
        if value not in DECISIONS:
            raise AppError(f"decision for pair {pair} is {value!r}; expected one of {', '.join(DECISIONS)}")
        out[pair] = value
    return out


def decide(services: Services, decisions: dict[str, str] | None, pair: float, decision: str) -> dict[str, str]:
    """The decisions with ``pair`` set to ``decision`` (``"undecided"`` removes it), as JSON-ready keys."""
    scores = require_pair_scores(services)
    current = check_decisions(decisions)
    try:
        number = int(float(pair))
    except (TypeError, ValueError, OverflowError) as exc:
        raise AppError(f"pair {pair!r} is not a pair number; pick a row of the queue") from exc
    if not np.any(scores.pair == number):
        raise AppError(f"pair {number} is not a training pair of this table")
    if decision == "undecided":
        current.pop(number, None)
    elif decision in DECISIONS:
        current[number] = decision
    else:
        raise AppError(f"decision must be one of {', '.join(DECISIONS)} or undecided, got {decision!r}")
    return {str(k): v for k, v in sorted(current.items())}


def _suggested_caption(scores: Any, r: int) -> str:
    hits = np.flatnonzero(scores.caption_index == scores.best_caption_for_image[r])
    return scores.caption[int(hits[0])] if len(hits) else ""


def review_rows(
    services: Services,
    threshold: float,
    decisions: dict[str, str] | None = None,
    limit: float = REVIEW_QUEUE_ROWS,
    thumbnail: Callable[[Path | None], str] = lambda p: "" if p is None else str(p),
    count: float | None = None,
) -> list[list[Any]]:
    """The queue's rows (:data:`REVIEW_HEADERS`): flagged pairs (threshold or ``count`` rule), least likely
    clean first in the flag order of Eq. 12c."""
    scores = require_pair_scores(services)
    decided = check_decisions(decisions)
    flagged = np.flatnonzero(scores.flagged(check_threshold(threshold), check_count(services, count)))
    rows = scores.in_flag_order(flagged)[: check_row_limit(limit)]
    image_of = {int(i): p for i, p in zip(scores.image_index, scores.image, strict=True)}
    return [
        [
            int(scores.pair[r]),
            thumbnail(pair_image_path(services, scores.image[r])),
            scores.caption[r],
            round(float(scores.clean_prob[r]), 4),
            _suggested_caption(scores, int(r)),
            thumbnail(pair_image_path(services, image_of.get(int(scores.best_image[r])))),
            decided.get(int(scores.pair[r]), "undecided"),
        ]
        for r in rows
    ]


def export_review(
    services: Services, threshold: float, decisions: dict[str, str] | None, count: float | None = None
) -> list[Path]:
    """Write the corrected captions file and the keep and drop lists; returns their paths. Undecided
    pairs are dropped where the flag rule (threshold or ``count``) flags them, else kept.

    Files go to a fresh folder per call. ``corrected_captions.csv`` has ``image,caption`` rows in
    the training table's order (a captions file ``disncl train`` reads, relative to the data root).
    """
    scores = require_pair_scores(services)
    decided = check_decisions(decisions)
    flagged = scores.flagged(check_threshold(threshold), check_count(services, count))
    keep, drop, corrected = [], [], []
    for r in range(len(scores)):
        pair = int(scores.pair[r])
        decision = decided.get(pair, "drop" if flagged[r] else "keep")
        if decision == "drop":
            drop.append(pair)
            continue
        keep.append(pair)
        caption = _suggested_caption(scores, r) if decision == "accept" else scores.caption[r]
        corrected.append((scores.image[r], caption or scores.caption[r]))
    folder = services.export_root / uuid.uuid4().hex
    folder.mkdir(parents=True)

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "caption"])
            writer.writerows(corrected)

    def write_list(values: list[int]) -> Callable[[Path], None]:
        return lambda tmp: tmp.write_text("".join(f"{v}\n" for v in values), encoding="utf-8")

    if not corrected and not drop:
        raise AppError("no training pairs to export")
    return [
        atomic_write(folder / "corrected_captions.csv", write_csv),
        atomic_write(folder / "keep_pairs.txt", write_list(keep)),
        atomic_write(folder / "drop_pairs.txt", write_list(drop)),
    ]
