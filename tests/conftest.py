from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic benchmark on disk, shared by the tests that need a real dataset."""
    from disncl.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    generate(out, SynthConfig(n_train=48, n_val=12, n_test=12, image_size=32, seed=3), progress=False)
    return out


def tiny_overrides(data_root: Path, out: Path, **extra: object) -> list[str]:
    """Config overrides for a model small enough to train in seconds on a CPU."""
    values = {
        "data.root": str(data_root),
        "data.noise_rate": 0.5,
        "data.noise_kind": "image",
        "model.image_size": 32,
        "model.patch_size": 8,
        "model.vision_width": 32,
        "model.vision_layers": 1,
        "model.vision_heads": 2,
        "model.text_width": 32,
        "model.text_layers": 1,
        "model.text_heads": 2,
        "model.embed_dim": 32,
        "model.mii_dim": 16,
        "model.mei_dim": 16,
        "model.head_hidden": 32,
        "train.batch_size": 32,
        "train.eval_batch_size": 64,
        "train.epochs": 2,
        "train.warmup_epochs": 1,
        # One epoch leaves a tiny model's losses unimodal, so the gated warm-up (the default) would keep the
        # split off and the tests of the split's machinery would not exercise it.
        "train.warmup": "fixed",
        "train.lr_warmup_steps": 2,
        "train.device": "cpu",
        "train.out": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_model_config(**overrides: object):
    """A :class:`~disncl.models.ModelConfig` small enough to build and run in milliseconds."""
    from disncl.models.config import ModelConfig

    base = dict(
        image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
        text_width=32, text_layers=1, text_heads=2, max_text_len=12,
        embed_dim=16, mii_dim=8, mei_dim=8, head_hidden=32,
    )
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


def http_status(url: str) -> int:
    """The HTTP status a GET of ``url`` gets (error statuses returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def save_tiny_backbone(path: Path, captions: list[str], image_size: int = 32) -> Path:
    """A tiny random-weight CLIP saved like a downloaded checkpoint (``save_pretrained``), with a
    word-level tokenizer that knows ``captions``' words: what ``--backbone`` loads in tests."""
    import torch

    from disncl.models.tokenizer import train_word_tokenizer
    from disncl.models.towers import build_clip, set_text_eos_id

    torch.manual_seed(1)
    tok = train_word_tokenizer(captions)
    clip = build_clip(tiny_model_config(image_size=image_size, embed_dim=16, max_text_len=32), tok)
    set_text_eos_id(clip, tok.eos_token_id)
    clip.save_pretrained(path)
    tok.save_pretrained(path)
    return path
