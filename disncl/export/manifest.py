"""The pieces of a bundle's ``manifest.json`` that describe where the model came from and how to feed it.

Everything a torch-free server needs to reproduce the training preprocessing is stated here as
data (sizes, statistics, token ids), and the training run's settings and latest test evaluation
are copied in so an application can show a model card without the run directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import onnxruntime as ort
import yaml
from transformers import PreTrainedTokenizerBase

import disncl
from disncl.models.disncl import DisNCLModel
from disncl.models.towers import clip_config_dict, text_eos_id
from disncl.serve.bundle import MANIFEST, sha256_file

from .tokenizer import TOKENIZER_FILE, special_token_ids

RESIZE_RULE = (
    "shorter side to image_size (bicubic), then centre crop image_size x image_size; any mode to RGB with "
    "transparency composited over white (disncl.data.images.load_image)"
)
# Distributions whose versions explain how a bundle was produced.
_VERSIONED = ("torch", "transformers", "tokenizers", "onnx", "onnxscript")
# The runtime ships as either distribution; both install the same ``onnxruntime`` module.
_RUNTIME_PACKAGES = ("onnxruntime-gpu", "onnxruntime")


def versions(opset: int) -> dict[str, Any]:
    """Installed versions of disncl and the export toolchain, plus the ONNX opset."""
    found: dict[str, Any] = {"disncl": disncl.__version__, "opset": opset, "onnxruntime": ort.__version__}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    found["onnxruntime_package"] = next((p for p in _RUNTIME_PACKAGES if _installed(p)), None)
    return found


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def preprocessing(model: DisNCLModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Image and text preprocessing constants, matching the training pipeline."""
    cfg = model.cfg
    return {
        "image": {
            "image_size": cfg.image_size,
            "mean": list(cfg.image_mean),
            "std": list(cfg.image_std),
            "resize": RESIZE_RULE,
            "normalise": "float32 (x / 255 - mean) / std per RGB channel",
            "layout": "NCHW",
        },
        "text": {
            "tokenizer": TOKENIZER_FILE,
            "max_text_len": cfg.max_text_len,
            "special_tokens": special_token_ids(tokenizer),
            "pooled_token_id": text_eos_id(model.clip),
            "truncation": f"to max_text_len tokens from the {tokenizer.truncation_side}, BOS and EOS kept",
            "padding": f"{tokenizer.padding_side} with the pad id, to the longest caption of the batch",
            "eos_fill": "a row without the eos id gets it on its last attended token",
        },
    }


def checksums(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` except the manifest, keyed by POSIX relative path."""
    return {
        path.relative_to(directory).as_posix(): sha256_file(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def model_section(model: DisNCLModel) -> dict[str, Any]:
    """The model's architecture exactly as ``model.json`` stores it."""
    return {"model_config": asdict(model.cfg), "clip_config": clip_config_dict(model.clip)}


def training_section(model_dir: Path) -> dict[str, Any] | None:
    """Settings of the run that trained the checkpoint in ``model_dir`` (its parent), if it is a run."""
    config = model_dir.parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        values = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config}: not valid YAML ({exc}); fix or remove it to export this checkpoint") from exc
    data, train = values.get("data", {}), values.get("train", {})
    return {
        "run_dir": os.fspath(model_dir.parent),
        "checkpoint": model_dir.name,
        "method": train.get("method"),
        "epochs": train.get("epochs"),
        "data_root": data.get("root"),
        "karpathy_json": data.get("karpathy_json"),
        "noise_kind": data.get("noise_kind"),
        "noise_rate": data.get("noise_rate"),
        "noise_file": data.get("noise_file"),
        "config": values,
    }


def evaluation_section(model_dir: Path) -> dict[str, Any] | None:
    """The run's test-split evaluation of this checkpoint (``eval_<split>_<checkpoint>.json``), if any.

    ``up_to_date`` is false when the checkpoint was rewritten after the evaluation ran, so a model
    card can say the numbers are stale.
    """
    run = model_dir.parent
    training = training_section(model_dir)
    split = ((training or {}).get("config") or {}).get("data", {}).get("test_split", "test")
    path = run / f"eval_{split}_{model_dir.name}.json"
    if not path.is_file():
        return None
    weights = model_dir / "model.safetensors"
    up_to_date = not weights.is_file() or path.stat().st_mtime >= weights.stat().st_mtime
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); re-run `python -m disncl eval {run}` or delete the "
                         "file to export this checkpoint") from exc
    return {"file": path.name, "up_to_date": up_to_date, "result": result}
