"""The in-memory shape of one split of an image–caption dataset."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CaptionedImages:
    """Images and captions of one split, with the clean caption→image map.

    ``cap2img[c]`` is the index (into ``image_paths``) of the image that caption ``c``
    truly describes. Noise is never stored here: a noisy training set is this object plus
    a noise index (see :mod:`disncl.data.noise`).

    ``source_counts`` is ``(images, captions)`` as named in the source files, before unusable
    entries were skipped (see :mod:`disncl.data.validate`); ``None`` when the split was not read
    from files. It lets a noise index made for the uncleaned split be recognised and explained.
    """

    root: Path
    image_paths: list[str]
    captions: list[str]
    cap2img: np.ndarray
    source_counts: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.cap2img):
            raise ValueError(
                f"{len(self.captions)} captions but cap2img has {len(self.cap2img)} entries"
            )
        if self.cap2img.ndim != 1 or not np.issubdtype(self.cap2img.dtype, np.integer):
            raise ValueError(f"cap2img must be a 1-D integer array, got {self.cap2img.dtype} {self.cap2img.shape}")
        if len(self.cap2img) and (self.cap2img.min() < 0 or self.cap2img.max() >= len(self.image_paths)):
            raise ValueError("cap2img refers to an image index outside 0..n_images-1")

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def image_path(self, i: int) -> Path:
        return self.root / self.image_paths[i]

    def subset(self, keep_images: np.ndarray, keep_captions: np.ndarray) -> CaptionedImages:
        """The images and captions where the boolean masks are true, images renumbered in order.

        Every kept caption's image must be kept; ``source_counts`` carries over unchanged.
        """
        keep_images = np.asarray(keep_images, dtype=bool)
        keep_captions = np.asarray(keep_captions, dtype=bool)
        if keep_images.shape != (self.n_images,) or keep_captions.shape != (self.n_captions,):
            raise ValueError(
                f"masks must have shapes ({self.n_images},) and ({self.n_captions},), "
                f"got {keep_images.shape} and {keep_captions.shape}"
            )
        if not keep_images[self.cap2img[keep_captions]].all():
            raise ValueError("a kept caption points at a dropped image; drop the caption too")
        new_id = np.cumsum(keep_images) - 1
        return replace(
            self,
            image_paths=[p for p, keep in zip(self.image_paths, keep_images, strict=True) if keep],
            captions=[c for c, keep in zip(self.captions, keep_captions, strict=True) if keep],
            cap2img=new_id[self.cap2img[keep_captions]].astype(np.int64),
        )
