"""The explorer's embedding map: the gallery's images and captions on the 2-D map computed when the
gallery was built (:mod:`disncl.serve.projection`), in the MII or the full space, captions coloured by
their training pair's clean probability or flag. Picking a point finds the nearest caption that is a
training pair, whose "why flagged" the explorer then shows.

A gallery caption is a training pair when the pair table names it (:func:`caption_pair_rows`): an
audit's gallery is its training split, so every caption is; the bundled demo's gallery is the test
split, so none is, and the map shows the spaces only.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from disncl.app.explorer import check_count, check_threshold
from disncl.app.services import SPACE_NAMES, SPACES, AppError, Services

MAP_COLOURS = ("clean probability", "flag")
MAX_POINTS = 50_000
# Where the axes sit in the figure (fractions of width and height): fixed, so that a click's pixel
# position converts to map coordinates without asking matplotlib.
AXES_RECT = (0.08, 0.1, 0.74, 0.84)
_SIZE_IN, _DPI = (7.0, 5.0), 100


@dataclass(frozen=True)
class MapView:
    """A rendered map: the RGB image, a summary line, and what converts a pixel back to map coordinates."""

    image: np.ndarray
    summary: str
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def to_map(self, px: float, py: float) -> tuple[float, float]:
        """Map coordinates of pixel ``(px, py)`` (from the image's top-left corner)."""
        h, w = self.image.shape[:2]
        left, bottom, width, height = AXES_RECT
        fx, fy = (px / w - left) / width, (1 - py / h - bottom) / height
        return (self.xlim[0] + fx * (self.xlim[1] - self.xlim[0]), self.ylim[0] + fy * (self.ylim[1] - self.ylim[0]))


def caption_pair_rows(services: Services) -> np.ndarray:
    """For each gallery caption, the pair-table row that pairs it, else -1.

    Row ``r`` pairs gallery caption ``caption_index[r]`` when that caption has the row's text and the
    row's image (its partner in training, mismatched or not) is in the gallery too: true of a gallery
    built from the training split, not of one built from another split.
    """
    scores = services.pair_scores
    gallery = services.gallery
    out = np.full(gallery.n_captions, -1, dtype=np.int64)
    if scores is None:
        return out
    images = set(gallery.image_paths)
    for r, c in enumerate(scores.caption_index.tolist()):
        if c < gallery.n_captions and gallery.captions[c] == scores.caption[r] and scores.image[r] in images:
            out[c] = r
    return out


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise AppError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    return space


def embedding_map(
    services: Services, space: str, colour_by: str, threshold: float, count: float | None = None
) -> MapView:
    """Draw the map of ``space`` with captions coloured by ``colour_by`` (:data:`MAP_COLOURS`); "flag"
    colours by the flag rule (the threshold, or ``count``)."""
    _check_space(space)
    if colour_by not in MAP_COLOURS:
        raise AppError(f"colour_by must be one of {', '.join(MAP_COLOURS)}, got {colour_by!r}")
    t = check_threshold(threshold)
    n = check_count(services, count)
    gallery = services.gallery
    xy = np.asarray(gallery.map_coordinates(space))
    img_xy, cap_xy = xy[: gallery.n_images], xy[gallery.n_images :]
    rows = services.caption_pairs
    linked = rows >= 0
    step = max(1, -(-len(xy) // MAX_POINTS))  # draw every step-th point of a huge gallery
    fig = Figure(figsize=_SIZE_IN, dpi=_DPI)
    ax = fig.add_axes(AXES_RECT)
    ax.scatter(img_xy[::step, 0], img_xy[::step, 1], s=14, marker="s", c="#9d9d9d", alpha=0.6, label="images")
    other = ~linked
    if other.any():
        ax.scatter(cap_xy[other][::step, 0], cap_xy[other][::step, 1], s=8, c="#c9c9c9", label="captions (not pairs)")
    if linked.any():
        prob = services.pair_scores.clean_prob[rows[linked]]
        pts = cap_xy[linked][::step]
        if colour_by == "flag":
            flagged = services.pair_scores.flagged(t, n)[rows[linked]][::step]
            rule = f"≤ {t:.2f}" if n is None else f"the {n:,} least likely"
            ax.scatter(*pts[~flagged].T, s=9, c="#4c78a8", label="kept pairs")
            ax.scatter(*pts[flagged].T, s=12, c="#e45756", label=f"flagged pairs ({rule})")
        else:
            dots = ax.scatter(*pts.T, s=9, c=prob[::step], cmap="RdYlBu", vmin=0, vmax=1, label="training pairs")
            fig.colorbar(dots, cax=fig.add_axes((0.85, 0.1, 0.025, 0.84)), label="clean probability")
    xlim, ylim = _padded(xy[:, 0]), _padded(xy[:, 1])
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_title(f"{SPACE_NAMES[space]} space, PCA of images and captions together", fontsize="medium")
    ax.legend(loc="lower left", fontsize="x-small", markerscale=1.5, framealpha=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    image = np.asarray(Image.open(buf).convert("RGB"))
    summary = (f"{gallery.n_images} images and {gallery.n_captions} captions"
               + (f" (every {step}th drawn)" if step > 1 else "")
               + f"; {int(linked.sum())} captions are training pairs"
               + (", click one to see why it is flagged." if linked.any()
                  else ". This gallery's captions are not the training pairs, so the map shows the space only."))
    return MapView(image=image, summary=summary, xlim=xlim, ylim=ylim)


def _padded(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    margin = 0.04 * (hi - lo) + 1e-6
    return lo - margin, hi + margin


def nearest_pair(services: Services, space: str, x: float, y: float) -> int:
    """The training pair whose caption lies nearest map point ``(x, y)`` in ``space``."""
    _check_space(space)
    rows = services.caption_pairs
    linked = np.flatnonzero(rows >= 0)
    if not len(linked):
        raise AppError("no gallery caption is a training pair here, so the map has no pair to pick")
    try:
        point = np.array([float(x), float(y)])
    except (TypeError, ValueError) as exc:
        raise AppError(f"map coordinates must be numbers, got {x!r}, {y!r}") from exc
    if not np.all(np.isfinite(point)):
        raise AppError("map coordinates must be finite numbers")
    gallery = services.gallery
    cap_xy = np.asarray(gallery.map_coordinates(space))[gallery.n_images :][linked]
    span = np.ptp(np.asarray(gallery.map_coordinates(space)), axis=0) + 1e-9
    nearest = int(np.argmin((((cap_xy - point) / span) ** 2).sum(1)))
    return int(services.pair_scores.pair[rows[linked[nearest]]])
