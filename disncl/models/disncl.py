"""The DisNCL network: two towers (CLIP, or the precomp region/GRU encoders), per-modality MII/MEI
heads, and the CLUB estimators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import CLIPModel

from disncl.losses.disncl import CLUB_ROLES

from .config import ModelConfig
from .heads import GaussianPredictor, HeadOutput, ModalityHead
from .precomp import PrecompTowers
from .towers import image_features, text_features

# The state-dict prefixes of the towers' parameters (CLIP, or the precomp encoders); the rest are the heads,
# decoders and CLUB networks.
TOWER_PREFIXES: tuple[str, ...] = ("clip.", "towers.")


@dataclass
class Encoded:
    """One modality's outputs for a batch.

    ``h`` is the L2-normalised tower feature (the "full" embedding); ``z`` is the
    modality-invariant code (MII) and ``u`` the modality-exclusive code (MEI), each given by
    its posterior mean and log-variance.
    """

    h: Tensor
    mu_z: Tensor
    logvar_z: Tensor
    mu_u: Tensor
    logvar_u: Tensor

    def mii(self) -> Tensor:
        """L2-normalised MII mean: the embedding compared at retrieval time."""
        return F.normalize(self.mu_z, dim=-1)


class DisNCLModel(nn.Module):
    """Two towers followed by heads that split each modality's feature into MII and MEI.

    The towers are a ``CLIPModel`` (``self.clip``; ``cfg.arch == "clip"``) or
    :class:`~disncl.models.precomp.PrecompTowers` (``self.towers``; ``cfg.arch == "precomp"``);
    the other attribute is ``None``. Heads, decoders and CLUB networks are the same for both.

    ``club`` holds the four CLUB variational networks ``q(b | a)``, keyed ``"<a>_<b>"``:
    ``uv_zt`` (image MEI -> text MII), ``ut_zv`` (text MEI -> image MII), ``zv_uv`` (image
    MII -> image MEI) and ``zt_ut`` (text MII -> text MEI).
    """

    def __init__(self, cfg: ModelConfig, towers: CLIPModel | PrecompTowers) -> None:
        super().__init__()
        expected = PrecompTowers if cfg.arch == "precomp" else CLIPModel
        if not isinstance(towers, expected):
            raise ValueError(f"model.arch={cfg.arch!r} needs {expected.__name__} towers, got {type(towers).__name__}")
        if isinstance(towers, CLIPModel) and towers.config.projection_dim != cfg.embed_dim:
            raise ValueError(
                f"cfg.embed_dim={cfg.embed_dim} but the CLIP projection dim is {towers.config.projection_dim}"
            )
        if cfg.freeze_towers and cfg.arch != "clip":
            raise ValueError("model.freeze_towers keeps pretrained CLIP towers fixed; model.arch=precomp "
                             "trains its towers from scratch, so it cannot freeze them")
        self.cfg = cfg
        # Separate attribute names keep CLIP checkpoints' state-dict keys ("clip.*") unchanged.
        self.clip: CLIPModel | None = towers if isinstance(towers, CLIPModel) else None
        self.towers: PrecompTowers | None = towers if isinstance(towers, PrecompTowers) else None
        self.image_head = ModalityHead(cfg.embed_dim, cfg.mii_dim, cfg.mei_dim, cfg.head_hidden, cfg.logvar_init)
        self.text_head = ModalityHead(cfg.embed_dim, cfg.mii_dim, cfg.mei_dim, cfg.head_hidden, cfg.logvar_init)
        # One q(b | a) per CLUB role (the loss owns the roles): MII codes are mii_dim wide, MEI mei_dim.
        width = {"z": cfg.mii_dim, "u": cfg.mei_dim}
        self.club = nn.ModuleDict(
            {
                name: GaussianPredictor(width[a[0]], width[b[0]], cfg.head_hidden)
                for name, (a, b) in CLUB_ROLES.items()
            }
        )
        if cfg.freeze_towers:
            towers.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, images_uint8: Tensor | np.ndarray) -> Tensor:
        """Turn ``(N, H, W, 3)`` uint8 RGB images into normalised ``(N, 3, S, S)`` pixel values.

        ``S = cfg.image_size``; other sizes (including non-square ones) are resized to ``S x S``
        with antialiased bilinear interpolation. The result is on the model's device and dtype.
        A precomp model takes ``(N, R, region_dim)`` float region features instead.
        """
        if self.towers is not None:
            return self.towers.preprocess(images_uint8)
        if self._is_cached_features(images_uint8):
            return torch.as_tensor(images_uint8).to(self.device, next(self.parameters()).dtype)
        images = torch.as_tensor(images_uint8)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        dtype = next(self.parameters()).dtype
        x = images.to(self.device).permute(0, 3, 1, 2).to(dtype) / 255.0
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.cfg.image_mean, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.cfg.image_std, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def _is_cached_features(self, x: Tensor | np.ndarray) -> bool:
        """Whether ``x`` holds frozen towers' cached outputs rather than pixels or token ids."""
        if not self.cfg.freeze_towers or x.ndim != 2:
            return False
        return x.dtype.kind == "f" if isinstance(x, np.ndarray) else x.is_floating_point()

    def encode_image(self, pixel_values: Tensor, heads_grad: float = 1.0) -> Encoded:
        """Encode preprocessed images (see :meth:`preprocess`), or frozen towers' cached image features.

        ``heads_grad``: the share of the heads' gradient that reaches the tower (Eq. 2e); 0 feeds them ``sg(h)``, so
        none does (Eq. 2c)."""
        if self._is_cached_features(pixel_values):
            feats = pixel_values
        elif self.towers is not None:
            feats = self.towers.image_features(pixel_values)
        else:
            feats = image_features(self.clip, pixel_values)
        h = F.normalize(feats, dim=-1)
        return _encoded(h, self.image_head(_scale_grad(h, heads_grad)))

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None, heads_grad: float = 1.0) -> Encoded:
        """Encode tokenised captions (see :func:`disncl.models.tokenizer.tokenize`), or frozen towers'
        cached caption features (``attention_mask`` is then unused); ``heads_grad`` as in :meth:`encode_image`."""
        if self._is_cached_features(input_ids):
            feats = input_ids
        elif self.towers is not None:
            feats = self.towers.text_features(input_ids, attention_mask)
        else:
            feats = text_features(self.clip, input_ids, attention_mask)
        h = F.normalize(feats, dim=-1)
        return _encoded(h, self.text_head(_scale_grad(h, heads_grad)))

    def decode_image(self, z: Tensor, u: Tensor) -> Tensor:
        """Reconstruct the normalised image feature from MII ``z`` and MEI ``u``."""
        return self.image_head.decode(z, u)

    def decode_text(self, z: Tensor, u: Tensor) -> Tensor:
        """Reconstruct the normalised text feature from MII ``z`` and MEI ``u``."""
        return self.text_head.decode(z, u)


def _scale_grad(h: Tensor, share: float) -> Tensor:
    """``h`` in the forward pass; ``share`` times its gradient in the backward pass (Eq. 2e)."""
    if share == 1.0:
        return h
    frozen = h.detach()
    return frozen if share == 0.0 else frozen + share * (h - frozen)


def _encoded(h: Tensor, out: HeadOutput) -> Encoded:
    return Encoded(h=h, mu_z=out.mu_z, logvar_z=out.logvar_z, mu_u=out.mu_u, logvar_u=out.logvar_u)
