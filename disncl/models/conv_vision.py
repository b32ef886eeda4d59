"""A convolutional image tower (ConvNeXt from ``transformers``) that stands in for CLIP's ViT.

It is shaped like ``CLIPVisionTransformer`` where :class:`~transformers.CLIPModel` uses it:
called with ``pixel_values``, it returns a ``BaseModelOutputWithPooling`` whose
``pooler_output`` the CLIP model then projects with ``visual_projection``. So a CLIP model
with this tower attached trains, saves, exports to ONNX and serves exactly like a ViT one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPModel, ConvNextConfig, ConvNextModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .config import ModelConfig


def convnext_config(cfg: ModelConfig) -> ConvNextConfig:
    """The ConvNeXt configuration described by ``cfg``'s ``conv_*`` fields."""
    if len(cfg.conv_widths) != len(cfg.conv_depths) or not cfg.conv_widths:
        raise ValueError(
            f"model.conv_widths {cfg.conv_widths} and model.conv_depths {cfg.conv_depths} need one entry per stage"
        )
    stride = cfg.conv_patch * 2 ** (len(cfg.conv_widths) - 1)
    if cfg.image_size % stride or cfg.image_size // stride < cfg.conv_grid:
        raise ValueError(
            f"model.image_size={cfg.image_size} must be a multiple of conv_patch x 2^(stages-1) = {stride} and leave "
            f"at least conv_grid={cfg.conv_grid} cells per side"
        )
    return ConvNextConfig(
        num_channels=3,
        patch_size=cfg.conv_patch,
        num_stages=len(cfg.conv_widths),
        hidden_sizes=list(cfg.conv_widths),
        depths=list(cfg.conv_depths),
        image_size=cfg.image_size,
        # ConvNeXt's default layer scale (1e-6) starts every block as the identity; with a few blocks trained
        # from scratch the tower then stays nearly linear for many epochs and learns colour but not shape.
        layer_scale_init_value=0.0,
    )


class ConvVisionTower(nn.Module):
    """ConvNeXt stages, then the last feature map pooled to ``grid`` x ``grid`` cells and flattened."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.convnext = ConvNextModel(convnext_config(cfg))
        self.pool = nn.AdaptiveAvgPool2d(cfg.conv_grid)
        self.out_dim = cfg.conv_widths[-1] * cfg.conv_grid**2
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, pixel_values: Tensor, **_: Any) -> BaseModelOutputWithPooling:
        # CLIPModel passes ViT-only keyword arguments (interpolate_pos_encoding, return_dict); none apply here.
        fmap = self.convnext(pixel_values=pixel_values).last_hidden_state
        pooled = self.norm(torch.flatten(self.pool(fmap), start_dim=1))
        return BaseModelOutputWithPooling(last_hidden_state=fmap, pooler_output=pooled)


def attach_conv_vision(clip: CLIPModel, cfg: ModelConfig) -> None:
    """Replace ``clip``'s ViT and its projection by a :class:`ConvVisionTower` sized by ``cfg``, in place."""
    tower = ConvVisionTower(cfg)
    clip.vision_model = tower
    clip.visual_projection = nn.Linear(tower.out_dim, clip.config.projection_dim, bias=False)
