"""Hyper-parameters that fix the architecture of a DisNCL model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class ModelConfig:
    """Architecture of the towers and the MII/MEI heads.

    With ``backbone=None`` the towers are a tiny CLIP trained from scratch and every field
    below is used as written. With ``backbone`` set to a local CLIP checkpoint directory,
    :func:`disncl.models.checkpoint.build_model` overwrites the tower fields (widths, layers,
    heads, ``image_size``, ``patch_size``, ``embed_dim``, ``vocab_size``) with the
    checkpoint's values, and ``image_mean``/``image_std`` with the ones in its
    ``preprocessor_config.json`` (OpenAI CLIP's statistics when that file is absent), so the
    stored config always describes the model that was actually built.

    ``arch="precomp"`` replaces both CLIP towers by the paper setting's encoders over precomputed
    region features (:mod:`disncl.models.precomp`): ``region_dim``-wide regions projected to
    ``embed_dim`` and pooled, and a bidirectional GRU over ``word_dim`` word embeddings, pooled
    the same way (``pool``). The CLIP tower fields are then unused and ``backbone`` must stay unset
    (these towers train from scratch); the heads and ``max_text_len`` work as for CLIP.

    ``vision_arch="resnet"`` (with ``arch="clip"``, no backbone) replaces CLIP's ViT image tower
    by a ResNet built from a ``transformers`` config (:mod:`disncl.models.conv_vision`): its stem
    divides the side by 4, then one stage of basic blocks per entry of ``conv_widths`` /
    ``conv_depths`` (each later stage halves the resolution), then the feature map average-pooled to a
    ``conv_grid`` x ``conv_grid`` grid and flattened, so where an object is survives pooling
    (captions say "left of" / "above"). The ViT fields (``patch_size``, ``vision_*``) are then
    unused. It exists because the small ViT trained from scratch on the synthetic benchmark never
    learns shape (docs/method.md §9.3).

    ``freeze_towers=True`` (needs ``backbone``) keeps the pretrained towers fixed: they encode every
    training and validation image and caption once, the features are cached on disk
    (:mod:`disncl.train.feature_cache`), and only the MII/MEI heads (and CLUB networks) train on them.
    The saved model still holds the towers, so export and serving are unchanged.
    """

    arch: Literal["clip", "precomp"] = "clip"
    backbone: str | None = None
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    max_text_len: int = 32
    embed_dim: int = 128
    mii_dim: int = 64
    mei_dim: int = 64
    head_hidden: int = 256
    logvar_init: float = -6.0
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vocab_size: int = 0
    region_dim: int = 2048
    word_dim: int = 300
    gru_layers: int = 1
    pool: Literal["mean", "max"] = "max"
    vision_arch: Literal["vit", "resnet"] = "vit"
    conv_widths: tuple[int, ...] = (32, 64, 128)
    conv_depths: tuple[int, ...] = (1, 1, 1)
    conv_grid: int = 2
    freeze_towers: bool = False
