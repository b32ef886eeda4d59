"""Encode images and captions of a split into full and MII embeddings (no gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from disncl.models.disncl import DisNCLModel


@dataclass
class TokenTable:
    """All captions of a split tokenised once, padded to the longest; batches trim the padding."""

    input_ids: Tensor
    attention_mask: Tensor

    def batch(self, idx: np.ndarray | Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
        idx_t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        mask = self.attention_mask[idx_t]
        length = int(mask.sum(1).max())
        return (
            self.input_ids[idx_t, :length].to(device, non_blocking=True),
            mask[:, :length].to(device, non_blocking=True),
        )

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class Embeddings:
    """L2-normalised embeddings of a split, ``float32`` numpy arrays."""

    img_full: np.ndarray
    img_mii: np.ndarray
    txt_full: np.ndarray
    txt_mii: np.ndarray

    def space(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "mii":
            return self.img_mii, self.txt_mii
        if name == "full":
            return self.img_full, self.txt_full
        raise ValueError(f"unknown similarity space {name!r}; choose mii or full")


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def encode_images(
    model: DisNCLModel, images, batch_size: int, device: torch.device, amp: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``images`` is anything indexable by an index array giving (B, H, W, 3) uint8."""
    model.eval()
    full, mii = [], []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc="encode images", disable=not progress, leave=False):
        idx = np.arange(s, min(s + batch_size, len(images)))
        with autocast(device, amp):
            out = model.encode_image(model.preprocess(images[idx]))
        full.append(out.h.float().cpu())
        mii.append(out.mii().float().cpu())
    return torch.cat(full).numpy(), torch.cat(mii).numpy()


@torch.no_grad()
def encode_texts(
    model: DisNCLModel, tokens: TokenTable, batch_size: int, device: torch.device, amp: bool = True,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    full, mii = [], []
    starts = range(0, len(tokens), batch_size)
    for s in tqdm(starts, desc="encode captions", disable=not progress, leave=False):
        ids, mask = tokens.batch(np.arange(s, min(s + batch_size, len(tokens))), device)
        with autocast(device, amp):
            out = model.encode_text(ids, mask)
        full.append(out.h.float().cpu())
        mii.append(out.mii().float().cpu())
    return torch.cat(full).numpy(), torch.cat(mii).numpy()


def encode_split(
    model: DisNCLModel, images, tokens: TokenTable, batch_size: int, device: torch.device, amp: bool = True,
    progress: bool = False,
) -> Embeddings:
    img_full, img_mii = encode_images(model, images, batch_size, device, amp, progress)
    txt_full, txt_mii = encode_texts(model, tokens, batch_size, device, amp, progress)
    return Embeddings(img_full, img_mii, txt_full, txt_mii)
