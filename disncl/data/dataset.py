"""Resolve a :class:`~disncl.config.DataConfig` into splits and the noisy training pairs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from disncl.config import DataConfig
from disncl.data.formats import read_captions_file, read_dataset_dir, read_karpathy, split_file
from disncl.data.noise import NoiseIndex, NoiseIndexError, inject
from disncl.data.pairs import CaptionedImages
from disncl.data.precomp import load_precomp
from disncl.data.shards import load_shard_split
from disncl.data.validate import Problem, validate_split


def load_split(cfg: DataConfig, split: str, report_dir: str | os.PathLike[str] | None = None) -> CaptionedImages:
    """One split of the configured dataset (captions file folder, Karpathy JSON, tar shards or precomp features).

    For a captions folder or Karpathy JSON, unusable rows and images are skipped and summarised on
    stderr, or refused with ``data.strict`` (see :mod:`disncl.data.validate`); with ``report_dir``
    the report is also saved there as ``data_report_{split}.json``.
    """
    if cfg.precomp_root:
        if cfg.root or cfg.karpathy_json or cfg.shards:
            raise ValueError("data.precomp_root names the whole dataset; unset data.root, data.karpathy_json "
                             "and data.shards")
        return load_precomp(cfg.precomp_root, split, cfg.precomp_val_images if split == cfg.val_split else 0)
    if cfg.shards:
        return load_shard_split(cfg, split, report_dir)
    if cfg.captions_file:
        if cfg.root or cfg.karpathy_json:
            raise ValueError("data.captions_file names the whole dataset; unset data.root and data.karpathy_json")
        ds, problems = read_captions_file(cfg.captions_file, cfg.images_root or None, split)
        return _checked(cfg, split, ds, problems, cfg.captions_file, report_dir)
    if cfg.karpathy_json:
        if not cfg.images_root:
            raise ValueError("data.karpathy_json needs data.images_root (the folder holding the images)")
        ds, problems = read_karpathy(cfg.karpathy_json, cfg.images_root, split)
        return _checked(cfg, split, ds, problems, cfg.karpathy_json, report_dir)
    if not cfg.root:
        raise ValueError(
            "no dataset given: set data.root to a folder with {split}.csv (e.g. from `python -m disncl synth`) "
            "or data.captions_file (with a split column) or data.karpathy_json + data.images_root or data.shards or "
            "data.precomp_root"
        )
    ds, problems = read_dataset_dir(cfg.root, split)
    return _checked(cfg, split, ds, problems, str(split_file(cfg.root, split)), report_dir)


def _checked(
    cfg: DataConfig,
    split: str,
    ds: CaptionedImages,
    problems: list[Problem],
    source: str,
    report_dir: str | os.PathLike[str] | None,
) -> CaptionedImages:
    """``ds`` without its unusable entries; the report goes to stderr (if anything was skipped) and ``report_dir``."""
    clean, report = validate_split(ds, problems, split=split, source=source, strict=cfg.strict)
    if not report.ok:
        print(report.format_table(), file=sys.stderr)
    if report_dir is not None:
        report.save(Path(report_dir) / f"data_report_{split}.json")
    return clean


def resolve_noise(cfg: DataConfig, train: CaptionedImages) -> NoiseIndex | None:
    """The noise index for the training split: a given ``.npy`` file, injected noise, or none."""
    if cfg.noise_file:
        try:
            # With one caption per image (CC152K) the length cannot tell the convention; without a
            # sidecar saying which, data.noise_kind does.
            ambiguous = train.n_images == train.n_captions and not Path(cfg.noise_file).with_suffix(".json").is_file()
            kind = cfg.noise_kind if ambiguous else None
            return NoiseIndex.load(cfg.noise_file, train.n_images, train.n_captions, kind)
        except NoiseIndexError as err:
            on_disk = train.source_counts
            if on_disk is None or on_disk == (train.n_images, train.n_captions):
                raise
            # Entries were skipped: an index made for the split as it is on disk no longer lines up.
            raise NoiseIndexError(
                f"{err}\nNote: unusable entries were skipped from the training split (see the data report "
                f"above): the files name {on_disk[0]} images and {on_disk[1]} captions, {train.n_images} and "
                f"{train.n_captions} are usable. A noise index refers to the usable pairs only, so fix or remove "
                "the bad entries until nothing is skipped, or leave data.noise_file empty to inject noise with "
                "data.noise_rate."
            ) from err
    if cfg.noise_rate <= 0:
        return None
    return inject(train, cfg.noise_kind, cfg.noise_rate, cfg.noise_seed)


def semantic_keys(
    cfg: DataConfig, split: str, ds: CaptionedImages | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Shared-factor keys of a synthetic benchmark split (for semantic recall), else ``None``.

    Pass the loaded split as ``ds``: if unusable entries were skipped from it, the saved factors no
    longer line up with it, and ``None`` is returned (semantic recall is then not reported).
    """
    if not cfg.root or not (Path(cfg.root) / "synth.json").is_file():
        return None
    if ds is not None and ds.source_counts not in (None, (ds.n_images, ds.n_captions)):
        print(f"note: no semantic recall on the {split} split: entries were skipped from it, so the synthetic "
              "factors no longer line up", file=sys.stderr)
        return None
    from disncl.data.synth import load_factors

    factors = load_factors(cfg.root, split)
    return np.asarray(factors.image_shared_key), np.asarray(factors.caption_shared_key)
