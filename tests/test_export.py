"""ONNX export: a trained tiny run to a bundle, parity with PyTorch, the CLI and its failure modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from tokenizers import Tokenizer

from disncl.config import load_config
from disncl.export import ParityError, ParityInputs, export_bundle
from disncl.export.__main__ import main
from disncl.export.parity import check_parity, default_inputs, synthetic_inputs
from disncl.models.checkpoint import CheckpointError, load_model
from disncl.models.tokenizer import tokenize
from disncl.serve.bundle import Bundle, sha256_file
from disncl.serve.preprocess import tokenize_texts
from disncl.serve.providers import CPU
from disncl.train.evaluate import evaluate_run
from disncl.train.loop import train

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    train(load_config(None, tiny_overrides(tiny_synth, out, **{"train.epochs": 1})), progress=False)
    evaluate_run(out, "best", detection=False, progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run: Path) -> tuple[Path, dict]:
    out = run.parent / "bundle"
    return out, export_bundle(run / "best", out, progress=False)


def test_manifest_records_parity_on_validation_data(run: Path, exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    assert json.loads((out / "manifest.json").read_text()) == manifest
    parity = manifest["parity"]
    assert parity["passed"] and parity["tolerance"] == TOLERANCE
    assert parity["batch_sizes"] == [1, 7]
    assert "val images" in parity["inputs"]
    assert all(0 <= v <= TOLERANCE for d in parity["max_abs_diff"].values() for v in d.values())
    max_len = manifest["model_config"]["max_text_len"]
    assert max(parity["caption_lengths"]) > max_len > parity["caption_lengths"][0]
    assert parity["tokenizer"]["identical"]


def test_manifest_describes_model_preprocessing_and_run(run: Path, exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    model, tokenizer = load_model(run / "best")
    cfg = model.cfg
    assert manifest["format_version"] == 1
    assert manifest["model_config"] == json.loads((run / "best" / "model.json").read_text())["model_config"]
    assert manifest["embedding_dims"] == {"full": cfg.embed_dim, "mii": cfg.mii_dim, "mei": cfg.mei_dim}
    image = manifest["preprocessing"]["image"]
    assert (image["image_size"], image["mean"], image["std"]) == (cfg.image_size, [0.5] * 3, [0.5] * 3)
    text = manifest["preprocessing"]["text"]
    assert text["max_text_len"] == cfg.max_text_len
    assert text["special_tokens"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert manifest["graphs"]["text"]["inputs"][0] == {"name": "input_ids", "dtype": "int64",
                                                        "shape": ["batch", "sequence"]}
    assert {"torch", "transformers", "onnx", "onnxruntime", "opset"} <= manifest["versions"].keys()
    assert set(manifest["files"]) == {"image.onnx", "text.onnx", "tokenizer.json"}
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    training = manifest["training"]
    assert (training["method"], training["noise_kind"], training["noise_rate"]) == ("disncl", "image", 0.5)
    evaluation = manifest["evaluation"]
    assert evaluation["file"] == "eval_test_best.json" and evaluation["up_to_date"]
    assert evaluation["result"] == json.loads((run / "eval_test_best.json").read_text())


def test_tokenizer_file_alone_reproduces_training_ids(run: Path, exported: tuple[Path, dict]) -> None:
    out, manifest = exported
    _, tokenizer = load_model(run / "best")
    max_len = manifest["preprocessing"]["text"]["max_text_len"]
    captions = ["a red circle", "CAFÉ crème, zebra!", "x", " ".join(["a blue square left of a circle"] * 10)]
    reference = tokenize(tokenizer, captions, max_len)
    ids, mask = tokenize_texts(Tokenizer.from_file(str(out / "tokenizer.json")), captions, 2)
    assert np.array_equal(ids, reference["input_ids"].numpy())
    assert np.array_equal(mask, reference["attention_mask"].numpy())
    assert ids.shape[1] == max_len and ids[3, -1] == 2


def test_parity_check_catches_a_model_that_differs(run: Path, exported: tuple[Path, dict]) -> None:
    out, _ = exported
    model, tokenizer = load_model(run / "best")
    with torch.no_grad():
        model.text_head.mii.net[0].bias.add_(0.05)
    inputs = synthetic_inputs(tokenizer, model.cfg.max_text_len, model.cfg.image_size)
    with pytest.raises(ParityError, match=r"text\.mii="):
        check_parity(model, tokenizer, Bundle.load(out, providers=[CPU]), inputs, TOLERANCE)


def test_parity_inputs_fall_back_to_deterministic_ones_without_data(run: Path, tmp_path: Path) -> None:
    model, tokenizer = load_model(run / "best")
    cfg = model.cfg
    inputs = default_inputs(tmp_path / "best", tokenizer, cfg.max_text_len, cfg.image_size)
    again = default_inputs(tmp_path / "best", tokenizer, cfg.max_text_len, cfg.image_size)
    assert inputs.source.startswith("synthetic") and inputs.captions == again.captions
    assert inputs.images.shape == (7, cfg.image_size, cfg.image_size, 3)
    lengths = [len(ids) for ids in tokenizer(inputs.captions)["input_ids"]]
    assert len(lengths) == 7 and max(lengths) > cfg.max_text_len
    assert not any(tokenizer.unk_token_id in ids for ids in tokenizer(inputs.captions)["input_ids"])


def test_failed_export_leaves_nothing_behind(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(ValueError, match="parity image arrays"):
        export_bundle(run / "best", out, ParityInputs(np.zeros((2, 8, 8, 3), np.uint8), ["a circle"]), progress=False)
    # A caption the bundle rejects fails the parity step, after the graphs were written.
    images = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="caption 1 is empty"):
        export_bundle(run / "best", out, ParityInputs(images, ["a red circle", " "]), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_replaces_an_existing_bundle(
    run: Path, exported: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(exported[0], out)
    assert main(["--run", str(run), "--checkpoint", "last", "--out", str(out), "--no-progress"]) == 0
    assert "parity max abs diff" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert json.loads((out / "manifest.json").read_text())["training"]["checkpoint"] == "last"
    assert Bundle.load(out, providers=[CPU]).manifest["parity"]["passed"]


def test_cli_refuses_to_replace_a_folder_that_is_not_a_bundle(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    assert main(["--run", str(run), "--out", str(tmp_path), "--no-progress"]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert keep.read_text() == "mine"


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CheckpointError, match="model.json"):
        export_bundle(tmp_path / "nothing", tmp_path / "bundle", progress=False)
    (tmp_path / "run").mkdir()
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"), "--no-progress"]) == 2
    assert "model.json" in capsys.readouterr().err


def test_corrupt_evaluation_file_is_named(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "eval_test_best.json").write_text('{"retrieval": ', encoding="utf-8")
    with pytest.raises(ValueError, match=r"eval_test_best\.json: not valid JSON"):
        export_bundle(copy / "best", tmp_path / "bundle", progress=False)
    assert not (tmp_path / "bundle").exists()


def test_resnet_image_tower_trains_saves_exports_and_serves(tiny_synth: Path, tmp_path: Path) -> None:
    """The benchmark's convolutional tower goes through the same checkpoint, ONNX and bundle path as CLIP's ViT."""
    out = tmp_path / "run"
    conv = {"train.epochs": 1, "model.vision_arch": "resnet", "model.conv_widths": "[8,16]",
            "model.conv_depths": "[1,1]", "model.conv_grid": 2}
    train(load_config(None, tiny_overrides(tiny_synth, out, **conv)), progress=False)
    model, _ = load_model(out / "best")
    assert type(model.clip.vision_model).__name__ == "ConvVisionTower"
    assert model.clip.visual_projection.in_features == 16 * 2 * 2
    manifest = export_bundle(out / "best", tmp_path / "bundle", progress=False)
    assert manifest["parity"]["passed"] and manifest["model_config"]["vision_arch"] == "resnet"
    bundle = Bundle.load(tmp_path / "bundle", providers=[CPU])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    served = bundle.encode_images(images)
    with torch.no_grad():
        ref = model.encode_image(model.preprocess(images))
    assert np.allclose(served.full, ref.h.numpy(), atol=TOLERANCE)


def test_resnet_tower_refuses_sizes_its_stages_cannot_divide(tiny_synth: Path) -> None:
    from conftest import tiny_model_config

    from disncl.models.checkpoint import build_model

    cfg = tiny_model_config(image_size=30, vision_arch="resnet", conv_widths=(8, 16), conv_depths=(1, 1))
    with pytest.raises(ValueError, match="must be a multiple of 8"):
        build_model(cfg, ["a red circle"])
    with pytest.raises(ValueError, match="backbone"):
        build_model(tiny_model_config(vision_arch="resnet", backbone="/models/clip"), None)
