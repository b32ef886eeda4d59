"""Check an exported bundle against the PyTorch model it came from, on real or deterministic inputs.

The bundle side runs the whole serving path (:class:`disncl.serve.Bundle`: image decoding,
normalisation, ``tokenizer.json``, ONNX Runtime on the CPU); the PyTorch side runs the training
path (:func:`disncl.data.images.load_image`, ``DisNCLModel.preprocess``,
:func:`disncl.models.tokenizer.tokenize`, ``encode_image``/``encode_text``). Both are compared
at every batch size, so a graph that silently fixed its batch or caption length fails here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from disncl.config import ConfigError, load_config
from disncl.data.dataset import load_split
from disncl.data.images import load_image
from disncl.models.disncl import DisNCLModel, Encoded
from disncl.models.tokenizer import tokenize
from disncl.serve.bundle import OUTPUTS, Bundle, Encodings

# Inputs per modality; the check runs batches of 1 and of all of them.
N_INPUTS = 7
RUN_CONFIG = "config.yaml"


class ParityError(RuntimeError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance: the bundle must not be used."""


@dataclass
class ParityInputs:
    """Images (paths, or a uint8 ``(N, S, S, 3)`` array at the model's size) and captions to compare on."""

    images: list[str | os.PathLike[str]] | np.ndarray
    captions: list[str]
    source: str = "given"

    def __post_init__(self) -> None:
        if len(self.images) == 0 or not self.captions:
            raise ValueError("parity inputs need at least one image and one caption")

    def check(self, size: int) -> None:
        """Raise ``ValueError`` unless image arrays are uint8 ``(N, size, size, 3)``, the model's input size."""
        images = self.images
        if isinstance(images, np.ndarray) and (images.dtype != np.uint8 or images.shape[1:] != (size, size, 3)):
            raise ValueError(
                f"parity image arrays must be uint8 (N, {size}, {size}, 3), got {images.dtype} {images.shape}"
            )


def default_inputs(model_dir: Path, tokenizer: PreTrainedTokenizerBase, max_text_len: int, size: int) -> ParityInputs:
    """Validation images and captions of the run that trained the model, else deterministic stand-ins."""
    return _validation_inputs(model_dir.parent, tokenizer, max_text_len) or synthetic_inputs(
        tokenizer, max_text_len, size
    )


def _run_validation(run_dir: Path) -> tuple[Any, Any] | None:
    """The run's config and validation split, or None when the run or its data is not reachable."""
    if not (run_dir / RUN_CONFIG).is_file():
        return None
    try:
        cfg = load_config(run_dir / RUN_CONFIG)
        return cfg, load_split(cfg.data, cfg.data.val_split)
    except (ConfigError, OSError, ValueError):
        return None


def _validation_inputs(run_dir: Path, tokenizer: PreTrainedTokenizerBase, max_text_len: int) -> ParityInputs | None:
    """The first validation images and captions spanning the length range, plus one over-long caption."""
    found = _run_validation(run_dir)
    if found is None:
        return None
    cfg, ds = found
    paths = [ds.image_path(i) for i in range(min(N_INPUTS, ds.n_images))]
    if len(paths) < N_INPUTS or not all(p.is_file() for p in paths) or len(ds.captions) < N_INPUTS - 1:
        return None
    captions = _spread_by_length(ds.captions, tokenizer, N_INPUTS - 1)
    captions.insert(1, _overlong(ds.captions, tokenizer, max_text_len))
    where = cfg.data.root or cfg.data.karpathy_json
    return ParityInputs(images=[os.fspath(p) for p in paths], captions=captions, source=f"{where} ({ds.n_images} "
                        f"{cfg.data.val_split} images): first {N_INPUTS} images, captions of varied length")


def validation_split(model_dir: Path) -> tuple[list[str], list[str], np.ndarray, str] | None:
    """The validation images (paths), captions, caption→image map and a description, of the run that
    trained the model in ``model_dir`` (a run's ``best/`` or ``last/``); None when not reachable."""
    found = _run_validation(model_dir.parent)
    if found is None:
        return None
    cfg, ds = found
    paths = [os.fspath(ds.image_path(i)) for i in range(ds.n_images)]
    if not paths or not all(Path(p).is_file() for p in paths):
        return None
    where = cfg.data.root or cfg.data.karpathy_json
    return paths, list(ds.captions), np.asarray(ds.cap2img), f"{where} ({ds.n_images} {cfg.data.val_split} images)"


def _token_counts(tokenizer: PreTrainedTokenizerBase, captions: list[str]) -> np.ndarray:
    return np.array([len(ids) for ids in tokenizer(captions)["input_ids"]])


def _spread_by_length(captions: list[str], tokenizer: PreTrainedTokenizerBase, k: int) -> list[str]:
    """``k`` captions at evenly spaced length quantiles, shortest first."""
    lengths = _token_counts(tokenizer, captions)
    order = np.argsort(lengths, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
    return [captions[i] for i in picks]


def _overlong(captions: list[str], tokenizer: PreTrainedTokenizerBase, max_text_len: int) -> str:
    """Captions joined until the result has more tokens than ``max_text_len``, so truncation is exercised."""
    text = ""
    # Every non-blank caption adds at least one token, so this many joins always suffice.
    for i in range(max_text_len + 1):
        text = f"{text} {captions[i % len(captions)]}".strip()
        if _token_counts(tokenizer, [text])[0] > max_text_len:
            return text
    raise ValueError(f"could not build a caption longer than {max_text_len} tokens from the validation captions")


def synthetic_inputs(tokenizer: PreTrainedTokenizerBase, max_text_len: int, size: int, seed: int = 0) -> ParityInputs:
    """Seeded random images and captions of vocabulary words, one of them longer than ``max_text_len``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(N_INPUTS, size, size, 3), dtype=np.uint8)
    words = vocabulary_words(tokenizer)
    if not words:
        raise ValueError("the tokenizer has no plain-word tokens to build parity captions from; pass parity_inputs")
    lengths = [3, max_text_len + 8, 1, 6, 10, max(1, max_text_len // 2), max(1, max_text_len - 2)]
    captions = [" ".join(rng.choice(words, size=n)) for n in lengths]
    return ParityInputs(images=images, captions=captions, source=f"synthetic (seed {seed}): random pixels, "
                        "captions of vocabulary words")


def vocabulary_words(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The vocabulary's alphabetic tokens as plain words, in id order (special tokens excluded)."""
    special = set(tokenizer.all_special_ids)
    ids = sorted(i for i in tokenizer.get_vocab().values() if i not in special)
    words = (tokenizer.decode([i]).strip() for i in ids)
    return [w for w in words if w.isalpha()]


@torch.no_grad()
def _torch_images(model: DisNCLModel, images: list[str | os.PathLike[str]] | np.ndarray) -> Encodings:
    size = model.cfg.image_size
    pixels = images if isinstance(images, np.ndarray) else np.stack([load_image(p, size) for p in images])
    return _as_encodings(model.encode_image(model.preprocess(pixels)))


@torch.no_grad()
def _torch_texts(model: DisNCLModel, tokenizer: PreTrainedTokenizerBase, captions: list[str]) -> Encodings:
    tokens = tokenize(tokenizer, captions, model.cfg.max_text_len)
    return _as_encodings(model.encode_text(tokens["input_ids"], tokens["attention_mask"]))


def _as_encodings(enc: Encoded) -> Encodings:
    return Encodings(
        full=enc.h.float().numpy(), mii=enc.mii().float().numpy(), mei=F.normalize(enc.mu_u, dim=-1).float().numpy()
    )


def _max_diffs(a: Encodings, b: Encodings) -> dict[str, float]:
    return {k: float(np.max(np.abs(getattr(a, k) - getattr(b, k)))) for k in OUTPUTS}


def check_parity(
    model: DisNCLModel,
    tokenizer: PreTrainedTokenizerBase,
    bundle: Bundle,
    inputs: ParityInputs,
    tolerance: float,
) -> dict[str, Any]:
    """Max absolute difference per output, modality and batch size; raise :class:`ParityError` beyond ``tolerance``."""
    model = model.to("cpu").eval()
    inputs.check(model.cfg.image_size)
    n = min(len(inputs.images), len(inputs.captions))
    by_batch: dict[str, dict[str, dict[str, float]]] = {}
    for b in sorted({1, n}):
        images, captions = inputs.images[:b], inputs.captions[:b]
        by_batch[str(b)] = {
            "image": _max_diffs(_torch_images(model, images), bundle.encode_images(images, batch_size=b)),
            "text": _max_diffs(_torch_texts(model, tokenizer, captions), bundle.encode_texts(captions, batch_size=b)),
        }
    worst = {
        modality: {k: max(r[modality][k] for r in by_batch.values()) for k in OUTPUTS} for modality in ("image", "text")
    }
    # `not <=` so that NaN counts as a failure.
    failed = [f"{m}.{k}={v:.3g}" for m, d in worst.items() for k, v in d.items() if not v <= tolerance]
    if failed:
        raise ParityError(
            f"ONNX Runtime and PyTorch outputs differ beyond tolerance {tolerance:g}: {', '.join(failed)} "
            f"(all results: {by_batch}); the bundle was not written"
        )
    return {
        "passed": True,
        "tolerance": tolerance,
        "provider": "CPUExecutionProvider",
        "inputs": inputs.source,
        "n_images": len(inputs.images),
        "n_captions": len(inputs.captions),
        "caption_lengths": [int(x) for x in _token_counts(tokenizer, inputs.captions)],
        "batch_sizes": [int(b) for b in by_batch],
        "max_abs_diff": worst,
        "by_batch": by_batch,
    }
