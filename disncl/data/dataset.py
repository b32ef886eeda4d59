"""Resolve a :class:`~disncl.config.DataConfig` into splits and the noisy training pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from disncl.config import DataConfig
from disncl.data.formats import load_dataset_dir, load_karpathy
from disncl.data.noise import NoiseIndex, inject
from disncl.data.pairs import CaptionedImages


def load_split(cfg: DataConfig, split: str) -> CaptionedImages:
    """One split of the configured dataset (captions file folder or Karpathy JSON)."""
    if cfg.karpathy_json:
        if not cfg.images_root:
            raise ValueError("data.karpathy_json needs data.images_root (the folder holding the images)")
        return load_karpathy(cfg.karpathy_json, cfg.images_root, split)
    if not cfg.root:
        raise ValueError(
            "no dataset given: set data.root to a folder with {split}.csv (e.g. from `python -m disncl synth`) "
            "or data.karpathy_json + data.images_root"
        )
    return load_dataset_dir(cfg.root, split)


def resolve_noise(cfg: DataConfig, train: CaptionedImages) -> NoiseIndex | None:
    """The noise index for the training split: a given ``.npy`` file, injected noise, or none."""
    if cfg.noise_file:
        return NoiseIndex.load(cfg.noise_file, train.n_images, train.n_captions)
    if cfg.noise_rate <= 0:
        return None
    return inject(train, cfg.noise_kind, cfg.noise_rate, cfg.noise_seed)


def semantic_keys(cfg: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Shared-factor keys of a synthetic benchmark split (for semantic recall), else ``None``."""
    if not cfg.root or not (Path(cfg.root) / "synth.json").is_file():
        return None
    from disncl.data.synth import load_factors

    factors = load_factors(cfg.root, split)
    return np.asarray(factors.image_shared_key), np.asarray(factors.caption_shared_key)
