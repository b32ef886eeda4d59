"""The CLIP image and text towers: construction, offline loading, and feature extraction."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import Tensor
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, PreTrainedTokenizerBase

from .config import ModelConfig
from .conv_vision import attach_conv_vision


def build_clip(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> CLIPModel:
    """A randomly initialised CLIP sized by ``cfg``, with vocabulary and special ids from ``tokenizer``.

    The vocabulary size is ``len(tokenizer)`` (``cfg.vocab_size`` is not read); the MLP width
    is 4x the model width as in CLIP. With ``cfg.vision_arch="resnet"`` the ViT is replaced by
    :class:`~disncl.models.conv_vision.ConvVisionTower`; the CLIP config then keeps a one-layer
    placeholder vision config (its weights are discarded) and ``cfg`` describes the real tower.
    """
    if cfg.max_text_len < 2:
        raise ValueError(f"max_text_len={cfg.max_text_len} leaves no room for BOS and EOS")
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=4 * cfg.text_width,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_text_len,
        projection_dim=cfg.embed_dim,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    conv = cfg.vision_arch == "resnet"
    vision = CLIPVisionConfig(
        hidden_size=8 if conv else cfg.vision_width,
        intermediate_size=8 if conv else 4 * cfg.vision_width,
        num_hidden_layers=1 if conv else cfg.vision_layers,
        num_attention_heads=1 if conv else cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.image_size if conv else cfg.patch_size,
        projection_dim=cfg.embed_dim,
    )
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.embed_dim))
    if conv:
        attach_conv_vision(clip, cfg)
    return clip


def load_clip(path: str | os.PathLike[str]) -> CLIPModel:
    """Load a CLIP checkpoint from a local directory in float32; never touches the network."""
    return CLIPModel.from_pretrained(os.fspath(path), local_files_only=True, dtype=torch.float32)


def clip_config_dict(model: CLIPModel) -> dict[str, Any]:
    """The model's architecture as a JSON-serialisable dict (for ``model.json``)."""
    # The JSON round trip turns int dict keys and other non-JSON values into what a reader sees.
    return json.loads(model.config.to_json_string(use_diff=False))


def clip_from_config_dict(d: dict[str, Any], cfg: ModelConfig) -> CLIPModel:
    """Rebuild the architecture described by :func:`clip_config_dict` (and ``cfg``'s image tower), offline.

    The weights are random; ``cfg.vision_arch="resnet"`` attaches the convolutional tower it describes.
    """
    clip = CLIPModel(CLIPConfig.from_dict(d))
    if cfg.vision_arch == "resnet":
        attach_conv_vision(clip, cfg)
    return clip


def text_eos_id(model: CLIPModel) -> int:
    """The EOS id the text tower pools at."""
    eos = model.config.text_config.eos_token_id
    if isinstance(eos, list):
        eos = eos[0]
    if eos is None:
        raise ValueError("the CLIP text config has no eos_token_id; set it to the tokenizer's EOS id")
    return int(eos)


def set_text_eos_id(model: CLIPModel, eos_id: int) -> None:
    """Make the text tower pool at ``eos_id`` (OpenAI checkpoints ship a legacy placeholder of 2)."""
    model.config.text_config.eos_token_id = eos_id
    model.text_model.config.eos_token_id = eos_id
    model.text_model.eos_token_id = eos_id


def image_features(model: CLIPModel, pixel_values: Tensor) -> Tensor:
    """Projected (un-normalised) image features, shape ``(B, projection_dim)``."""
    return model.get_image_features(pixel_values=pixel_values).pooler_output


def text_features(model: CLIPModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Projected (un-normalised) text features pooled at each row's first EOS token.

    ``CLIPTextModel`` switches to legacy pooling at the *largest token id* whenever the
    configured ``eos_token_id`` is 2, which is exactly our word-level tokenizer's EOS id, so
    the pooling is done here instead. A row without EOS falls back to its last attended token.
    For OpenAI checkpoints (EOS is the largest id) this equals ``get_text_features``.
    """
    hidden = model.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    is_eos = input_ids == text_eos_id(model)
    last = attention_mask.sum(dim=1).clamp(min=1) - 1
    pos = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1), last)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), pos]
    return model.text_projection(pooled)
