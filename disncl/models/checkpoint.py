"""Building a DisNCL model, and saving/loading it as a self-describing directory.

A saved model directory holds:

* ``model.safetensors`` - the full ``state_dict`` (CLIP towers, heads, CLUB networks);
* ``model.json`` - ``{"format_version", "model_config", "clip_config"}``, enough to rebuild the
  architecture offline, even when it started from a pretrained backbone (``clip_config`` is
  ``null`` for ``arch="precomp"``, which ``model_config`` describes alone);
* ``tokenizer/`` - the tokenizer, via ``save_pretrained``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import CLIPModel, PreTrainedTokenizerBase

from disncl.io import atomic_write, atomic_write_json

from .config import ModelConfig
from .disncl import DisNCLModel
from .precomp import PrecompTowers
from .tokenizer import load_tokenizer, train_word_tokenizer
from .towers import (
    build_clip,
    clip_config_dict,
    clip_from_config_dict,
    load_clip,
    set_text_eos_id,
    text_eos_id,
)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
TOKENIZER_DIR = "tokenizer"
# What CLIPImageProcessor uses when a checkpoint ships no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# How many differing keys an error message lists before summarising the rest as a count.
_SHOWN = 5
# What to do when weights and architecture disagree: loading into a model built by hand, or a
# directory whose files come from two different saves (load_model rebuilds from model.json).
_OTHER_CONFIG_ADVICE = (
    "The checkpoint was written for a different ModelConfig: load its directory with load_model (which "
    "rebuilds the architecture from model.json) or build the model with the config it was trained with."
)
_MIXED_FILES_ADVICE = (
    f"The directory mixes files of different checkpoints: copy {META_FILE}, {WEIGHTS_FILE} and {TOKENIZER_DIR}/ "
    "together from one save, or re-save the model."
)


class CheckpointError(ValueError):
    """A saved model cannot be loaded: missing, corrupt, from a newer format, or another architecture."""


def build_model(cfg: ModelConfig, captions: list[str] | None) -> tuple[DisNCLModel, PreTrainedTokenizerBase]:
    """Create a fresh model and its tokenizer; ``cfg`` is updated in place to describe what was built.

    With ``cfg.backbone=None`` a word-level tokenizer is trained on ``captions`` and a tiny CLIP
    is built from ``cfg`` (``cfg.vocab_size`` is set). Otherwise CLIP and its tokenizer are
    loaded from the local directory ``cfg.backbone`` and the tower fields of ``cfg`` are taken
    from the checkpoint (see :class:`ModelConfig`); ``captions`` is ignored. ``cfg.arch="precomp"``
    trains the word-level tokenizer too and builds the region/GRU towers (no backbone allowed).
    """
    if cfg.arch == "precomp" and cfg.backbone is not None:
        raise ValueError(
            f"model.backbone={cfg.backbone!r} is a CLIP checkpoint but model.arch=precomp trains its region "
            "and GRU towers from scratch; unset model.backbone or use model.arch=clip"
        )
    if cfg.vision_arch != "vit" and (cfg.backbone is not None or cfg.arch != "clip"):
        raise ValueError(
            f"model.vision_arch={cfg.vision_arch!r} builds its own image tower from scratch for model.arch=clip; "
            "it cannot be combined with model.backbone or model.arch=precomp"
        )
    if cfg.freeze_towers and cfg.backbone is None:
        raise ValueError(
            "model.freeze_towers keeps a pretrained CLIP fixed and trains the heads on its features; set "
            "model.backbone (--backbone) to a local CLIP checkpoint folder, or unset model.freeze_towers"
        )
    if cfg.backbone is None:
        if not captions:
            raise ValueError("training a tokenizer from scratch needs captions (cfg.backbone is None)")
        tokenizer = train_word_tokenizer(captions)
        cfg.vocab_size = len(tokenizer)
        towers = PrecompTowers(cfg) if cfg.arch == "precomp" else build_clip(cfg, tokenizer)
        return DisNCLModel(cfg, towers), tokenizer

    clip = load_clip(cfg.backbone)
    tokenizer = load_tokenizer(cfg.backbone)
    _adopt_backbone(cfg, clip, tokenizer)
    return DisNCLModel(cfg, clip), tokenizer


def _adopt_backbone(cfg: ModelConfig, clip: CLIPModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Copy a pretrained CLIP's architecture and preprocessing into ``cfg`` and check the tokenizer fits."""
    text, vision = clip.config.text_config, clip.config.vision_config
    if len(tokenizer) > text.vocab_size:
        raise ValueError(
            f"{cfg.backbone}: tokenizer has {len(tokenizer)} tokens but the text tower only {text.vocab_size}"
        )
    if cfg.max_text_len > text.max_position_embeddings:
        raise ValueError(
            f"max_text_len={cfg.max_text_len} exceeds the backbone's {text.max_position_embeddings} positions"
        )
    # OpenAI configs carry a legacy eos_token_id of 2; the tokenizer knows the real one.
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id != text_eos_id(clip):
        set_text_eos_id(clip, tokenizer.eos_token_id)
    cfg.embed_dim = clip.config.projection_dim
    cfg.image_size = _as_int(vision.image_size)
    cfg.patch_size = _as_int(vision.patch_size)
    cfg.vision_width, cfg.vision_layers = vision.hidden_size, vision.num_hidden_layers
    cfg.vision_heads = vision.num_attention_heads
    cfg.text_width, cfg.text_layers = text.hidden_size, text.num_hidden_layers
    cfg.text_heads = text.num_attention_heads
    cfg.vocab_size = text.vocab_size
    cfg.image_mean, cfg.image_std = _image_stats(Path(cfg.backbone))


def _as_int(size: int | list[int] | tuple[int, int]) -> int:
    if isinstance(size, int):
        return size
    if len(set(size)) != 1:
        raise ValueError(f"only square images/patches are supported, got {size}")
    return int(size[0])


def _image_stats(backbone: Path) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Normalisation mean/std from ``preprocessor_config.json``, else OpenAI CLIP's."""
    path = backbone / "preprocessor_config.json"
    if not path.is_file():
        return OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    pre = json.loads(path.read_text(encoding="utf-8"))
    mean, std = pre.get("image_mean", OPENAI_CLIP_MEAN), pre.get("image_std", OPENAI_CLIP_STD)
    return _rgb(mean, path), _rgb(std, path)


def _rgb(values: list[float] | tuple[float, ...], source: Path) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"{source}: expected 3-channel image_mean/image_std, got {values}")
    r, g, b = (float(v) for v in values)
    return r, g, b


def save_model(
    model: DisNCLModel, tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike[str]
) -> Path:
    """Write ``model`` and ``tokenizer`` to ``directory`` (created if needed); returns the directory.

    ``model.json`` is written last, so a directory with a ``model.json`` has complete weights.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(state, os.fspath(tmp), metadata={"format": "pt"}))
    meta = {
        "format_version": FORMAT_VERSION,
        "model_config": asdict(model.cfg),
        "clip_config": clip_config_dict(model.clip) if model.clip is not None else None,
    }
    atomic_write_json(out / META_FILE, meta)
    return out


def load_model(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[DisNCLModel, PreTrainedTokenizerBase]:
    """Rebuild a model saved by :func:`save_model` from ``model.json`` and load its weights strictly.

    Never reads ``cfg.backbone`` nor the network. The model is returned on ``device`` in eval
    mode. Raises :class:`CheckpointError` for anything that prevents an exact restore.
    """
    src = Path(directory)
    meta = _read_meta(src / META_FILE)
    cfg = _config_from_dict(meta["model_config"], src / META_FILE)
    try:
        towers = PrecompTowers(cfg) if cfg.arch == "precomp" else clip_from_config_dict(meta["clip_config"], cfg)
        model = DisNCLModel(cfg, towers)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{src / META_FILE}: cannot rebuild the architecture: {exc}") from exc
    load_weights(model, src / WEIGHTS_FILE, advice=_MIXED_FILES_ADVICE)
    try:
        tokenizer = load_tokenizer(src / TOKENIZER_DIR)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{src / TOKENIZER_DIR}: cannot load the tokenizer: {exc}") from exc
    # A tokenizer with more tokens than the embedding has rows would fail only at the first caption.
    if cfg.vocab_size and len(tokenizer) > cfg.vocab_size:
        raise CheckpointError(
            f"{src / TOKENIZER_DIR}: the tokenizer has {len(tokenizer)} tokens but {src / META_FILE} describes a "
            f"vocabulary of {cfg.vocab_size}. {_MIXED_FILES_ADVICE}"
        )
    return model.to(device).eval(), tokenizer


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{path}: not found, so {path.parent} is not a complete model directory ({META_FILE} is written "
            "last: a save that was interrupted has none); point at a checkpoint such as RUN/best, or re-save it"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc}); re-save the model") from exc
    if not isinstance(meta, dict) or not {"format_version", "model_config", "clip_config"} <= meta.keys():
        raise CheckpointError(f"{path}: needs format_version, model_config and clip_config; re-save the model")
    if not isinstance(meta["model_config"], dict):
        raise CheckpointError(f"{path}: model_config must be a JSON object; re-save the model")
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} is newer than this disncl reads ({FORMAT_VERSION}); "
            "upgrade disncl to load it"
        )
    return meta


def _config_from_dict(d: dict[str, Any], source: Path) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CheckpointError(f"{source}: unknown model_config fields {unknown}; upgrade disncl to load it")
    values = dict(d)
    # JSON has no tuples: every tuple-valued field comes back as a list.
    for f in fields(ModelConfig):
        if isinstance(f.default, tuple) and isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid model_config ({exc}); re-save the model") from exc


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a safetensors weight file onto the CPU, turning any corruption into :class:`CheckpointError`."""
    try:
        return load_file(os.fspath(path), device="cpu")
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: weight file not found") from exc
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: corrupt or truncated safetensors file ({exc}); re-save or re-copy the checkpoint"
        ) from exc


def load_weights(model: DisNCLModel, path: str | os.PathLike[str], advice: str = _OTHER_CONFIG_ADVICE) -> None:
    """Load a weight file into an existing ``model``, strictly; raise :class:`CheckpointError` on mismatch.

    ``advice`` ends the mismatch message: what the caller's user should do about it.
    """
    state = read_state_dict(path)
    problems = state_dict_mismatches(model.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"{path}: weights do not match this model's architecture: {'; '.join(problems)}. {advice}"
        )
    model.load_state_dict(state, strict=True)


def state_dict_mismatches(expected: dict[str, Tensor], found: dict[str, Tensor]) -> list[str]:
    """Human-readable differences (missing/unexpected keys, shape changes) between two state dicts.

    Keys are listed in ``expected``'s (module) order, so the first ones shown are the
    outermost layers that differ.
    """
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} in file vs {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    problems = []
    groups = (("missing keys", missing), ("unexpected keys", unexpected), ("shape differences", shapes))
    for label, items in groups:
        if items:
            more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_SHOWN])}{more}")
    return problems
