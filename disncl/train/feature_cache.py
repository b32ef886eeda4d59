"""Frozen towers' outputs, computed once and kept on disk (``model.freeze_towers``).

With the towers fixed, an image's or caption's tower feature never changes, so encoding a split
through a ViT-B/32 every epoch (for training and for the per-pair scores) would repeat the same
work. Instead each split is encoded once into two ``float32`` tables, ``images.npy`` ``(N_images,
embed_dim)`` and ``captions.npy`` ``(N_captions, embed_dim)``, read back memory-mapped, and the
trainer feeds their rows to the heads (:meth:`DisNCLModel.encode_image` takes them in place of pixels).

A cache entry is a folder named by a key over everything the features depend on: the towers'
weights, the preprocessing (image size, mean, std, text length), the tokenizer, and the split's
image paths (with each file's size and modification time) and captions. Changing any of them
makes a new entry; a stale entry is never read. Entries are written to a temporary folder and
renamed into place, so an interrupted encode leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disncl.eval.encode import encode_split
from disncl.eval.splits import SplitData
from disncl.io import atomic_dir
from disncl.models.disncl import DisNCLModel

IMAGES_FILE = "images.npy"
CAPTIONS_FILE = "captions.npy"
KEY_FILE = "key.json"


@dataclass
class CachedTokens:
    """Caption features in the place of a :class:`~disncl.eval.encode.TokenTable`: ``batch`` gives the
    rows (and no attention mask), which the frozen model's ``encode_text`` takes as they are."""

    features: np.ndarray

    def batch(self, idx: np.ndarray | Iterable[int], device: torch.device) -> tuple[torch.Tensor, None]:
        rows = np.ascontiguousarray(self.features[np.asarray(idx)])
        return torch.from_numpy(rows).to(device), None

    def __len__(self) -> int:
        return len(self.features)


def towers_digest(model: DisNCLModel) -> str:
    """SHA-256 over the towers' parameter names, shapes and bytes: which checkpoint encodes."""
    h = hashlib.sha256()
    for name, tensor in model.clip.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def split_key(model: DisNCLModel, split: SplitData, towers: str) -> dict[str, Any]:
    """What one split's cached features depend on (hashed into the entry's name)."""
    cfg = model.cfg
    files = hashlib.sha256()
    for rel in split.ds.image_paths:
        path = Path(split.ds.root) / rel
        try:
            st = path.stat()
            files.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            files.update(f"{rel}\0missing\n".encode())
    captions = hashlib.sha256("\n".join(split.ds.captions).encode())
    tokens = hashlib.sha256(split.tokens.input_ids.numpy().tobytes())
    return {
        "towers": towers,
        "image_size": cfg.image_size,
        "image_mean": list(cfg.image_mean),
        "image_std": list(cfg.image_std),
        "max_text_len": cfg.max_text_len,
        "images": files.hexdigest(),
        "captions": captions.hexdigest(),
        "tokens": tokens.hexdigest(),
        "n_images": len(split.ds.image_paths),
        "n_captions": len(split.ds.captions),
    }


def entry_name(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_split(
    model: DisNCLModel, split: SplitData, cache_dir: str | os.PathLike[str], towers: str,
    batch_size: int, device: torch.device, amp: bool, progress: bool = False,
) -> SplitData:
    """``split`` with its images and captions replaced by the frozen towers' features.

    Reads the entry for ``split`` under ``cache_dir`` if one exists, else encodes the split once
    and writes it. ``towers`` is :func:`towers_digest` of ``model`` (computed once per session).
    """
    if not model.cfg.freeze_towers:
        raise ValueError("cached tower features are for model.freeze_towers=true")
    key = split_key(model, split, towers)
    entry = Path(cache_dir) / entry_name(key)
    if not (entry / KEY_FILE).is_file():
        emb = encode_split(model, split.images, split.tokens, batch_size, device, amp, progress)

        def fill(tmp: Path) -> None:
            np.save(tmp / IMAGES_FILE, emb.img_full.astype(np.float32))
            np.save(tmp / CAPTIONS_FILE, emb.txt_full.astype(np.float32))
            # Written last: an entry with its key file is complete.
            (tmp / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True), encoding="utf-8")

        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_dir(entry, fill)
    images = np.load(entry / IMAGES_FILE, mmap_mode="r")
    captions = np.load(entry / CAPTIONS_FILE, mmap_mode="r")
    if images.shape != (key["n_images"], model.cfg.embed_dim) or len(captions) != key["n_captions"]:
        raise ValueError(f"{entry}: cached features do not match the split; delete the folder to re-encode")
    return SplitData(split.ds, images, CachedTokens(captions))  # type: ignore[arg-type]
