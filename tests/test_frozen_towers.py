"""Frozen-tower training (``model.freeze_towers``): towers encode once into a disk cache, heads train on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_backbone, tiny_overrides

from disncl.config import load_config
from disncl.data.formats import load_dataset_dir
from disncl.models.checkpoint import load_model
from disncl.train.feature_cache import CAPTIONS_FILE, IMAGES_FILE, KEY_FILE
from disncl.train.loop import train
from disncl.train.run_dir import RunDir


def _frozen_overrides(data: Path, out: Path, backbone: Path, **extra: object) -> list[str]:
    values = {"model.backbone": str(backbone), "model.freeze_towers": "true", "train.lr": 0.01, **extra}
    return tiny_overrides(data, out, **values)


@pytest.fixture(scope="module")
def backbone(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    captions = load_dataset_dir(tiny_synth, "train").captions + load_dataset_dir(tiny_synth, "val").captions
    return save_tiny_backbone(tmp_path_factory.mktemp("backbone"), captions)


def test_towers_stay_fixed_heads_train_and_cached_features_are_the_towers(
    tiny_synth: Path, backbone: Path, tmp_path: Path
) -> None:
    run = train(load_config(None, _frozen_overrides(tiny_synth, tmp_path / "run", backbone)), progress=False)
    model, tok = load_model(RunDir(run).best)
    from disncl.models.checkpoint import build_model

    start, _ = build_model(load_config(None, _frozen_overrides(tiny_synth, tmp_path / "x", backbone)).model, None)
    for name, p in model.clip.state_dict().items():
        torch.testing.assert_close(p, start.clip.state_dict()[name], rtol=0, atol=0, msg=name)
    moved = [n for n, p in model.image_head.state_dict().items()
             if not torch.equal(p, start.image_head.state_dict()[n])]
    assert moved, "the image head did not train"

    entries = sorted((run / "feature_cache").iterdir())
    assert len(entries) == 2 and all((e / KEY_FILE).is_file() for e in entries)  # train and val
    sizes = sorted(np.load(e / CAPTIONS_FILE).shape[0] for e in entries)
    ds = load_dataset_dir(tiny_synth, "train")
    assert sizes[-1] == len(ds.captions)
    train_entry = next(e for e in entries if np.load(e / CAPTIONS_FILE).shape[0] == len(ds.captions))

    # What the cache holds is what the saved model's towers produce from pixels and tokens.
    from disncl.data.images import ImageArray
    from disncl.models.tokenizer import tokenize

    pixels = model.preprocess(ImageArray.from_dataset(ds, model.cfg.image_size)[np.arange(4)])
    enc = tokenize(tok, ds.captions[:4], model.cfg.max_text_len)
    with torch.no_grad():
        np.testing.assert_allclose(np.load(train_entry / IMAGES_FILE)[:4], model.encode_image(pixels).h.numpy(),
                                   atol=1e-5)
        np.testing.assert_allclose(np.load(train_entry / CAPTIONS_FILE)[:4], model.encode_text(**enc).h.numpy(),
                                   atol=1e-5)
        # The heads give the same codes from cached rows as from pixels.
        cached = model.encode_image(torch.from_numpy(np.load(train_entry / IMAGES_FILE)[:4]))
        torch.testing.assert_close(cached.mu_z, model.encode_image(pixels).mu_z, atol=1e-5, rtol=1e-4)


def test_a_shared_cache_is_reused_and_a_changed_split_gets_a_new_entry(
    tiny_synth: Path, backbone: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    extra = {"train.feature_cache": str(cache), "train.epochs": 1}
    train(load_config(None, _frozen_overrides(tiny_synth, tmp_path / "a", backbone, **extra)), progress=False)
    first = {e.name: (e / IMAGES_FILE).stat().st_mtime_ns for e in cache.iterdir()}
    train(load_config(None, _frozen_overrides(tiny_synth, tmp_path / "b", backbone, **extra)), progress=False)
    assert {e.name: (e / IMAGES_FILE).stat().st_mtime_ns for e in cache.iterdir()} == first  # read, not re-encoded
    # Another text length tokenises differently: new entries, the old ones kept.
    train(load_config(None, _frozen_overrides(tiny_synth, tmp_path / "c", backbone, **extra,
                                              **{"model.max_text_len": 8})), progress=False)
    assert len(list(cache.iterdir())) == 4 and set(first) < {e.name for e in cache.iterdir()}


def test_freezing_needs_a_backbone(tiny_synth: Path, tmp_path: Path) -> None:
    cfg = load_config(None, tiny_overrides(tiny_synth, tmp_path / "r", **{"model.freeze_towers": "true"}))
    with pytest.raises(ValueError, match="model.backbone"):
        train(cfg, progress=False)
