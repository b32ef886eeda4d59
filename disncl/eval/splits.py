"""A split made ready for a model (decoded images, tokenised captions) and its retrieval metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from disncl.config import RunConfig
from disncl.data.images import ImageArray, ImageFiles
from disncl.data.pairs import CaptionedImages
from disncl.data.precomp import PrecompSplit, RegionFeatures
from disncl.data.shards import ShardedCaptions, ShardImages
from disncl.eval.encode import Embeddings, TokenTable, encode_split
from disncl.eval.retrieval import retrieval_report
from disncl.models.tokenizer import tokenize


@dataclass
class SplitData:
    """A split made ready for the model: decoded images and tokenised captions."""

    ds: CaptionedImages
    images: ImageArray | ImageFiles | ShardImages | RegionFeatures
    tokens: TokenTable


def prepare_split(ds: CaptionedImages, tokenizer: Any, cfg: RunConfig, progress: bool) -> SplitData:
    """Tokenise the captions; decode the images into memory, or read them on demand from their files
    (frozen towers), from tar shards or (precomp) from memory-mapped region features."""
    if isinstance(ds, PrecompSplit) != (cfg.model.arch == "precomp"):
        raise ValueError(
            "model.arch=precomp and data.precomp_root go together: region features need the precomp towers "
            f"and the precomp towers need region features (model.arch is {cfg.model.arch!r}, "
            f"data.precomp_root is {cfg.data.precomp_root!r})"
        )
    images: ImageArray | ImageFiles | ShardImages | RegionFeatures
    if isinstance(ds, PrecompSplit):
        images = ds.features
    elif isinstance(ds, ShardedCaptions):
        images = ShardImages(ds.locations, cfg.model.image_size)
    elif cfg.model.freeze_towers:
        # Frozen towers see each image once (or never, when its features are cached): read on demand.
        images = ImageFiles(ds, cfg.model.image_size)
    else:
        images = ImageArray.from_dataset(ds, cfg.model.image_size, progress=progress)
    enc = tokenize(tokenizer, ds.captions, cfg.model.max_text_len)
    return SplitData(ds, images, TokenTable(enc["input_ids"], enc["attention_mask"]))


def evaluate_retrieval(
    model, split: SplitData, cfg: RunConfig, device: torch.device, keys=None, progress: bool = False
) -> dict[str, dict[str, float]]:
    """Recall on a clean split for each space the method trains: ``{"mii": {...}, "full": {...}}``."""
    emb = encode_split(model, split.images, split.tokens, cfg.train.eval_batch_size, device, cfg.train.amp, progress)
    return retrieval_metrics(emb, split, cfg, keys)


def retrieval_metrics(emb: Embeddings, split: SplitData, cfg: RunConfig, keys=None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_retrieval` on embeddings already computed."""
    out = {}
    for space in cfg.trained_spaces():
        img, txt = emb.space(space)
        img_keys, cap_keys = keys if keys is not None else (None, None)
        out[space] = retrieval_report(img @ txt.T, split.ds.cap2img, img_keys, cap_keys)
    return out
