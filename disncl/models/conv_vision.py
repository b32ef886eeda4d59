"""A convolutional image tower (ResNet from ``transformers``) that stands in for CLIP's ViT.

It is shaped like ``CLIPVisionTransformer`` where :class:`~transformers.CLIPModel` uses it:
called with ``pixel_values``, it returns a ``BaseModelOutputWithPooling`` whose
``pooler_output`` the CLIP model then projects with ``visual_projection``. So a CLIP model
with this tower attached trains, saves, exports to ONNX and serves exactly like a ViT one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import CLIPModel, ResNetConfig, ResNetModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .config import ModelConfig

# ResNet's stem (7x7 convolution of stride 2, then 3x3 max pooling of stride 2) divides the side by 4.
STEM_STRIDE = 4


def resnet_config(cfg: ModelConfig) -> ResNetConfig:
    """The ResNet configuration described by ``cfg``'s ``conv_*`` fields (basic blocks, stem as wide as stage 1)."""
    if len(cfg.conv_widths) != len(cfg.conv_depths) or not cfg.conv_widths:
        raise ValueError(
            f"model.conv_widths {cfg.conv_widths} and model.conv_depths {cfg.conv_depths} need one entry per stage"
        )
    stride = STEM_STRIDE * 2 ** (len(cfg.conv_widths) - 1)
    if cfg.image_size % stride or cfg.image_size // stride < cfg.conv_grid:
        raise ValueError(
            f"model.image_size={cfg.image_size} must be a multiple of {stride} (the stem's 4 x 2 per later stage) "
            f"and leave at least conv_grid={cfg.conv_grid} cells per side"
        )
    return ResNetConfig(
        num_channels=3,
        embedding_size=cfg.conv_widths[0],
        hidden_sizes=list(cfg.conv_widths),
        depths=list(cfg.conv_depths),
        layer_type="basic",
    )


class ConvVisionTower(nn.Module):
    """ResNet stages, then the last feature map average-pooled to ``grid`` x ``grid`` cells and flattened."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.resnet = ResNetModel(resnet_config(cfg))
        self.pool = nn.AdaptiveAvgPool2d(cfg.conv_grid)
        self.out_dim = cfg.conv_widths[-1] * cfg.conv_grid**2
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, pixel_values: Tensor, **_: Any) -> BaseModelOutputWithPooling:
        # CLIPModel passes ViT-only keyword arguments (interpolate_pos_encoding, return_dict); none apply here.
        fmap = self.resnet(pixel_values=pixel_values).last_hidden_state
        pooled = self.norm(torch.flatten(self.pool(fmap), start_dim=1))
        return BaseModelOutputWithPooling(last_hidden_state=fmap, pooler_output=pooled)


def attach_conv_vision(clip: CLIPModel, cfg: ModelConfig) -> None:
    """Replace ``clip``'s ViT and its projection by a :class:`ConvVisionTower` sized by ``cfg``, in place."""
    tower = ConvVisionTower(cfg)
    clip.vision_model = tower
    clip.visual_projection = nn.Linear(tower.out_dim, clip.config.projection_dim, bias=False)
