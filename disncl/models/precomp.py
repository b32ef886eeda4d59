"""The paper setting's towers: an encoder of precomputed region features and a GRU caption encoder.

This is the backbone of the noisy-correspondence literature's tables (SCAN's "precomp" features,
used by NCR, DECL, RCL and the DisNCL and SREM papers): each image is ``R`` bottom-up-attention
region features of ``region_dim`` (36 x 2048 for BUTD), each caption a sequence of word ids.

* Image: a linear map of every region to ``embed_dim`` (Xavier-initialised, as SCAN's image
  encoder), then pooling over the regions.
* Text: word embeddings of ``word_dim`` (uniform in ±0.1 at init, as VSE++/SCAN), a
  bidirectional GRU of hidden size ``embed_dim`` whose two directions are averaged (SCAN), then
  pooling over the caption's tokens (padding excluded).
* Pooling (``ModelConfig.pool``, both towers): ``"max"`` (default) or ``"mean"``. Our choice:
  VSE∞ (Chen et al., CVPR 2021) measured max pooling well above mean pooling for these encoders
  on Flickr30K and COCO; their learned GPO pooling is not implemented.

Both return un-normalised features; :class:`~disncl.models.disncl.DisNCLModel` L2-normalises them
into ``h`` and puts the usual MII/MEI heads on top. The GRU runs in float32 even under autocast
(on CUDA, autocast would run the cuDNN GRU in bf16): its recurrence compounds rounding over the
caption's length, and it is a small part of the cost next to the region projection.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .config import ModelConfig


def pool_tokens(x: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pool ``(B, L, D)`` over ``L``; positions where ``mask`` is 0 are left out (``None``: keep all)."""
    if how not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {how!r}")
    if mask is None:
        return x.mean(dim=1) if how == "mean" else x.amax(dim=1)
    keep = mask.bool().unsqueeze(-1)
    if how == "mean":
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)
    # The dtype's lowest value, not -inf: a row without tokens then pools to a finite number.
    return x.masked_fill(~keep, torch.finfo(x.dtype).min).amax(dim=1)


class RegionEncoder(nn.Module):
    """``(B, R, region_dim)`` region features -> ``(B, embed_dim)``: per-region linear map, then pooling."""

    def __init__(self, region_dim: int, embed_dim: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.proj = nn.Linear(region_dim, embed_dim)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, regions: Tensor) -> Tensor:
        return pool_tokens(self.proj(regions), None, self.pool)


class GRUTextEncoder(nn.Module):
    """Word ids ``(B, L)`` with attention mask -> ``(B, embed_dim)`` via a bidirectional GRU."""

    def __init__(self, vocab_size: int, word_dim: int, embed_dim: int, layers: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.embed = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.gru = nn.GRU(word_dim, embed_dim, num_layers=layers, batch_first=True, bidirectional=True)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        # Packing keeps the backward direction from starting on padding; lengths must be on the CPU.
        lengths = attention_mask.sum(dim=1).clamp(min=1).cpu()
        words = self.embed(input_ids)
        with torch.autocast(device_type=input_ids.device.type, enabled=False):
            packed = pack_padded_sequence(words.float(), lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=input_ids.shape[1])
        forward, backward = out.chunk(2, dim=-1)
        return pool_tokens((forward + backward) / 2, attention_mask, self.pool)


class PrecompTowers(nn.Module):
    """Both towers of ``arch="precomp"``, with the input conversion the trainer calls ``preprocess``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        for name in ("region_dim", "word_dim", "gru_layers", "embed_dim", "vocab_size"):
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer for arch=precomp, got {value!r}")
        self.region_dim = cfg.region_dim
        self.image = RegionEncoder(cfg.region_dim, cfg.embed_dim, cfg.pool)
        self.text = GRUTextEncoder(cfg.vocab_size, cfg.word_dim, cfg.embed_dim, cfg.gru_layers, cfg.pool)

    def preprocess(self, features: Tensor | np.ndarray) -> Tensor:
        """Region features ``(N, R, region_dim)`` as a float tensor on the towers' device and dtype."""
        x = torch.as_tensor(features)
        if x.ndim != 3 or x.shape[-1] != self.region_dim:
            raise ValueError(
                f"expected region features of shape (N, regions, {self.region_dim}), got {tuple(x.shape)}; "
                "set model.region_dim to the feature size of your {split}_ims.npy files"
            )
        if not x.is_floating_point():
            raise ValueError(f"expected floating-point region features, got {x.dtype}")
        weight = self.image.proj.weight
        return x.to(device=weight.device, dtype=weight.dtype)

    def image_features(self, regions: Tensor) -> Tensor:
        return self.image(regions)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.text(input_ids, attention_mask)
