"""The in-memory shape of one split of an image–caption dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class CaptionedImages:
    """Images and captions of one split, with the clean caption→image map.

    ``cap2img[c]`` is the index (into ``image_paths``) of the image that caption ``c``
    truly describes. Noise is never stored here: a noisy training set is this object plus
    a noise index (see :mod:`disncl.data.noise`).
    """

    root: Path
    image_paths: list[str]
    captions: list[str]
    cap2img: np.ndarray

    def __post_init__(self) -> None:
        if len(self.captions) != len(self.cap2img):
            raise ValueError(
                f"{len(self.captions)} captions but cap2img has {len(self.cap2img)} entries"
            )
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
