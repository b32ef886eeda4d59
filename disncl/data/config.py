"""Where the data is and how noise is injected: the ``data`` section of a run's configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DataConfig:
    """Where the data is and how noise is injected into the training split.

    Either ``root`` (a folder with ``{split}.csv|tsv|jsonl``, e.g. the synthetic benchmark),
    ``karpathy_json`` + ``images_root`` (Flickr30K / MS-COCO), or ``shards``: WebDataset-style tar
    shards streamed without decoding the split into memory, a pattern where ``{split}`` stands for
    the split's name (``data/shards/{split}-*.tar``, ``data/shards/{split}-{00000..00009}.tar`` or a
    folder ``data/shards/{split}``; see :mod:`disncl.data.shards`). ``noise_file`` (an existing
    ``.npy`` index of either convention) overrides ``noise_kind``/``noise_rate``.

    ``captions_file``: one captions table (``.csv``/``.tsv``/``.jsonl``) with ``image``, ``caption``
    and ``split`` fields, its image paths relative to ``images_root`` (default: the table's folder);
    each split is the table's rows with that ``split`` value. ``python -m disncl audit`` writes one.

    ``precomp_root``: a SCAN "precomp" folder (``{split}_ims.npy`` region features +
    ``{split}_caps.txt``; see :mod:`disncl.data.precomp`), for ``model.arch: precomp``. Its
    validation split keeps only the first ``precomp_val_images`` images (1,000 as in NCR/SCAN;
    0 keeps all).
    """

    root: str = ""
    captions_file: str = ""
    karpathy_json: str = ""
    images_root: str = ""
    shards: str = ""
    precomp_root: str = ""
    precomp_val_images: int = 1000
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    noise_kind: Literal["image", "caption"] = "image"
    noise_rate: float = 0.0
    noise_seed: int = 0
    noise_file: str = ""
    # Unusable rows and images are skipped and reported; strict refuses the data instead.
    strict: bool = False
