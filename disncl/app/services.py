"""What every tab works with: the loaded bundle, gallery and pair scores, and the app's error type."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from disncl.serve.bundle import Bundle
from disncl.serve.gallery import Gallery
from disncl.serve.pair_scores import PairScores

SPACES = ("mii", "full")
SPACE_NAMES = {"mii": "MII only", "full": "full feature"}
# The training default of the alignment temperature (docs/method.md, Section 3), used when the
# bundle's manifest does not record the run's own value.
DEFAULT_TAU = 0.07


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

    @cached_property
    def caption_pairs(self) -> Any:
        """For each gallery caption, the pair-table row that pairs it, else -1: a pass over every pair,
        made once (:func:`disncl.app.embedding_map.caption_pair_rows`) for every map drawn or picked."""
        from disncl.app.embedding_map import caption_pair_rows

        return caption_pair_rows(self)

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
