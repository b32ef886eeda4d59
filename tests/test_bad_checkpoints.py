"""Every way a saved model directory can be wrong ends in a CheckpointError naming the file, the problem and the fix.

Each test starts from a real tiny model saved by ``save_model`` and breaks one thing the way it
happens in practice: a checkpoint of another config, a copy cut short, a missing or foreign file,
a newer format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_config

from disncl.models.checkpoint import CheckpointError, build_model, load_model, load_weights, save_model
from disncl.models.config import ModelConfig

CAPTIONS = ["a red circle", "a blue square above a green triangle", "two small circles", "a large square"]
OTHER_CAPTIONS = [*CAPTIONS, "zebra unicorn dragon phoenix griffin", "kraken hydra basilisk chimera"]


def _config(**overrides: object) -> ModelConfig:
    small = dict(image_size=16, vision_width=16, text_width=16, max_text_len=8, head_hidden=16)
    return tiny_model_config(**{**small, **overrides})


def _save(out: Path, captions: list[str] = CAPTIONS, **overrides: object) -> Path:
    torch.manual_seed(0)
    model, tokenizer = build_model(_config(**overrides), captions)
    return save_model(model, tokenizer, out)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "model")


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved model to break."""
    return Path(shutil.copytree(saved, tmp_path / "model"))


def test_the_intact_copy_loads(copy: Path) -> None:
    model, tokenizer = load_model(copy)
    assert model.cfg.mii_dim == 8 and len(tokenizer) == model.cfg.vocab_size


def test_weights_of_another_width_name_the_layers_and_the_fix(saved: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    wider, _ = build_model(_config(embed_dim=24), CAPTIONS)
    with pytest.raises(CheckpointError) as err:
        load_weights(wider, saved / "model.safetensors")
    message = str(err.value)
    assert "model.safetensors: weights do not match this model's architecture" in message
    assert "shape differences" in message and "(16, 16) in file vs (24, 16) in model" in message
    assert "load its directory with load_model" in message


def test_weights_of_another_vocabulary_name_the_embedding(saved: Path) -> None:
    torch.manual_seed(0)
    other, other_tokenizer = build_model(_config(), OTHER_CAPTIONS)
    assert other.cfg.vocab_size > load_model(saved)[0].cfg.vocab_size
    with pytest.raises(CheckpointError, match=r"token_embedding\.weight \(\d+, 16\) in file vs \(\d+, 16\) in model"):
        load_weights(other, saved / "model.safetensors")


def test_model_json_of_another_config_says_the_files_are_mixed(copy: Path, tmp_path: Path) -> None:
    other = _save(tmp_path / "other", embed_dim=24)
    shutil.copy(other / "model.json", copy / "model.json")
    with pytest.raises(CheckpointError) as err:
        load_model(copy)
    message = str(err.value)
    assert f"{copy / 'model.safetensors'}: weights do not match" in message
    # Inside load_model the advice to "load with load_model" would be circular.
    assert "mixes files of different checkpoints" in message and "load_model" not in message


def test_tokenizer_of_another_checkpoint_is_caught_before_the_first_caption(copy: Path, tmp_path: Path) -> None:
    other = _save(tmp_path / "other", OTHER_CAPTIONS)
    shutil.rmtree(copy / "tokenizer")
    shutil.copytree(other / "tokenizer", copy / "tokenizer")
    with pytest.raises(CheckpointError, match=r"tokenizer: the tokenizer has \d+ tokens but .*model\.json describes"):
        load_model(copy)


@pytest.mark.parametrize("keep", [0, 7, 100, -1000, -1], ids=["empty", "in-length", "in-header", "in-data", "1-byte"])
def test_truncated_weights_at_any_point_are_named_corrupt(copy: Path, keep: int) -> None:
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:keep] if keep >= 0 else data[: len(data) + keep])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated safetensors file .*re-copy"):
        load_model(copy)


def test_missing_files_are_named(copy: Path) -> None:
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weight file not found"):
        load_model(copy)
    (copy / "model.json").unlink()
    with pytest.raises(CheckpointError, match=r"model\.json: not found, so .* is not a complete model directory"):
        load_model(copy)


def test_missing_tokenizer_is_named(copy: Path) -> None:
    shutil.rmtree(copy / "tokenizer")
    with pytest.raises(CheckpointError, match=r"tokenizer: cannot load the tokenizer"):
        load_model(copy)


def _edit_meta(directory: Path, **changes: object) -> None:
    meta_path = directory / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(changes)
    meta_path.write_text(json.dumps(meta))


def test_newer_format_version_says_upgrade(copy: Path) -> None:
    _edit_meta(copy, format_version=2)
    with pytest.raises(CheckpointError, match=r"model\.json: format_version 2 is newer than this disncl reads \(1\)"):
        load_model(copy)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", r"model\.json: unreadable"),
        ("[1, 2]", "needs format_version, model_config and clip_config"),
        ('{"format_version": "1", "model_config": {}, "clip_config": {}}', "invalid format_version '1'"),
    ],
    ids=["not-json", "not-an-object", "version-as-text"],
)
def test_damaged_model_json_is_named(copy: Path, text: str, expected: str) -> None:
    (copy / "model.json").write_text(text)
    with pytest.raises(CheckpointError, match=expected):
        load_model(copy)


def test_model_config_that_is_not_an_object_is_named(copy: Path) -> None:
    _edit_meta(copy, model_config=[1, 2, 3])
    with pytest.raises(CheckpointError, match=r"model\.json: model_config must be a JSON object"):
        load_model(copy)


def test_model_config_from_a_newer_disncl_says_upgrade(copy: Path) -> None:
    meta = json.loads((copy / "model.json").read_text())
    _edit_meta(copy, model_config={**meta["model_config"], "fancy_new_field": 1})
    with pytest.raises(CheckpointError, match=r"unknown model_config fields \['fancy_new_field'\]; upgrade disncl"):
        load_model(copy)
