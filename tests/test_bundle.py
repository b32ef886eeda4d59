"""The torch-free serving bundle: encodings equal PyTorch's, dynamic batch, integrity checks, providers."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides
from PIL import Image

from disncl.config import load_config
from disncl.data.dataset import load_split
from disncl.data.images import ImageArray, load_image
from disncl.export import export_bundle
from disncl.models.checkpoint import load_model
from disncl.models.tokenizer import tokenize
from disncl.serve import Bundle, BundleError, Encodings, choose_providers
from disncl.serve.preprocess import load_rgb
from disncl.serve.providers import CPU
from disncl.train.loop import train

ATOL = 1e-4


@pytest.fixture(scope="module")
def run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "run"
    return train(load_config(None, tiny_overrides(tiny_synth, out, **{"train.epochs": 1})), progress=False)


@pytest.fixture(scope="module")
def bundle_dir(run: Path) -> Path:
    out = run.parent / "bundle"
    export_bundle(run / "best", out, progress=False)
    return out


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return Bundle.load(bundle_dir, providers=["CPUExecutionProvider"])


@torch.no_grad()
def _torch_images(model, pixels: np.ndarray) -> Encodings:
    enc = model.encode_image(model.preprocess(pixels))
    return Encodings(enc.h.numpy(), enc.mii().numpy(), F.normalize(enc.mu_u, dim=-1).numpy())


@torch.no_grad()
def _torch_texts(model, tokenizer, captions: list[str]) -> Encodings:
    tok = tokenize(tokenizer, captions, model.cfg.max_text_len)
    enc = model.encode_text(tok["input_ids"], tok["attention_mask"])
    return Encodings(enc.h.numpy(), enc.mii().numpy(), F.normalize(enc.mu_u, dim=-1).numpy())


def _assert_close(a: Encodings, b: Encodings, atol: float = ATOL) -> None:
    for name in ("full", "mii", "mei"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == np.float32 and x.shape == y.shape
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=name)
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_bundle_properties(bundle: Bundle, run: Path) -> None:
    model, _ = load_model(run / "best")
    assert bundle.image_size == model.cfg.image_size
    assert bundle.max_text_len == model.cfg.max_text_len
    assert bundle.embedding_dims == {"full": model.cfg.embed_dim, "mii": model.cfg.mii_dim, "mei": model.cfg.mei_dim}
    assert bundle.providers == [CPU]
    assert bundle.manifest["format_version"] == 1


def test_image_encodings_match_pytorch_on_dataset_files(bundle: Bundle, run: Path) -> None:
    model, _ = load_model(run / "best")
    ds = load_split(load_config(run / "config.yaml").data, "test")
    pixels = ImageArray.from_dataset(ds, model.cfg.image_size, progress=False).pixels
    expected = _torch_images(model, pixels)
    paths = [ds.image_path(i) for i in range(ds.n_images)]
    _assert_close(bundle.encode_images(paths, batch_size=5), expected)
    _assert_close(bundle.encode_images(pixels), expected)
    as_pil = [Image.open(io.BytesIO(p.read_bytes())) for p in paths[:3]]
    as_bytes = [p.read_bytes() for p in paths[3:6]]
    mixed = bundle.encode_images(as_pil + as_bytes)
    assert np.allclose(mixed.mii, expected.mii[:6], atol=ATOL)


def test_text_encodings_match_pytorch_for_varied_lengths(bundle: Bundle, run: Path) -> None:
    model, tokenizer = load_model(run / "best")
    captions = load_split(load_config(run / "config.yaml").data, "test").captions[:20]
    overlong = " ".join(captions)
    assert len(tokenizer(overlong)["input_ids"]) > bundle.max_text_len
    varied = ["circle", "A RED circle, left of a square!", "zebra unicorn", overlong, *captions]
    _assert_close(bundle.encode_texts(varied, batch_size=7), _torch_texts(model, tokenizer, varied))


def test_dynamic_batch_gives_the_same_rows(bundle: Bundle, run: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(9, bundle.image_size, bundle.image_size, 3), dtype=np.uint8)
    whole = bundle.encode_images(images, batch_size=64)
    for batch_size in (1, 4):
        _assert_close(bundle.encode_images(images, batch_size=batch_size), whole, atol=1e-5)
    captions = ["a red circle", "a small blue square above a large green triangle", "circle"]
    one_by_one = [bundle.encode_texts([c]) for c in captions]
    together = bundle.encode_texts(captions)
    for i, single in enumerate(one_by_one):
        assert np.allclose(single.mii[0], together.mii[i], atol=1e-5)
    assert len(together) == 3


def test_other_image_sizes_follow_the_training_resize_rule(bundle: Bundle, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    size = bundle.image_size
    expected = load_image(tmp_path / "big.png", size)
    assert np.array_equal(load_rgb(Image.fromarray(big), size), expected)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    assert np.array_equal(load_rgb(buf.getvalue(), size), expected)
    from_array = bundle.encode_images(big[None])
    from_file = bundle.encode_images([tmp_path / "big.png"])
    assert np.array_equal(from_array.full, from_file.full)


def test_bad_inputs_are_clear_errors(bundle: Bundle) -> None:
    with pytest.raises(ValueError, match="no captions"):
        bundle.encode_texts([])
    with pytest.raises(ValueError, match="caption 1 is empty"):
        bundle.encode_texts(["a circle", "  "])
    with pytest.raises(TypeError, match="list of captions"):
        bundle.encode_texts("a circle")
    with pytest.raises(ValueError, match="no images"):
        bundle.encode_images([])
    with pytest.raises(TypeError, match="wrap a single image"):
        bundle.encode_images("image.png")
    with pytest.raises(ValueError, match="uint8"):
        bundle.encode_images(np.zeros((1, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        bundle.encode_texts(["a circle"], batch_size=0)


def test_tampered_file_fails_the_checksum(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    with open(copy / "text.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"text\.onnx: checksum mismatch"):
        Bundle.load(copy, providers=[CPU])
    shutil.copy(bundle_dir / "text.onnx", copy / "text.onnx")
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer\.json: listed in the manifest but missing"):
        Bundle.load(copy, providers=[CPU])


def test_newer_format_version_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 999
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format_version 999 is newer than this disncl reads"):
        Bundle.load(copy, providers=[CPU])
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path / "nothing")


def test_serving_imports_no_torch() -> None:
    code = "import sys, disncl.serve.bundle, disncl.serve; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_choose_providers() -> None:
    assert choose_providers("cpu") == [CPU]
    auto = choose_providers()
    assert auto[-1] == CPU
    if not Path("/dev/nvidiactl").exists():
        assert auto == [CPU]
        with pytest.raises(RuntimeError, match="CUDA was requested"):
            choose_providers("cuda")
    with pytest.raises(ValueError, match="unknown provider"):
        choose_providers("tpu")


# --- damaged manifests, on copies of the bundled demo (no training needed) -----------------------

DEMO_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "bundle"


@pytest.fixture
def demo_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DEMO_BUNDLE, tmp_path / "bundle"))


def _edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_manifest_that_is_not_json_is_named(demo_copy: Path) -> None:
    (demo_copy / "manifest.json").write_text("{ this is not json")
    with pytest.raises(BundleError, match=r"manifest\.json: unreadable .*re-export the bundle"):
        Bundle.load(demo_copy, providers=[CPU])


def test_graph_without_a_checksum_is_refused(demo_copy: Path) -> None:
    # Without this check a swapped image.onnx would load unverified.
    _edit_manifest(demo_copy, lambda m: m["files"].pop("image.onnx"))
    with pytest.raises(BundleError, match=r"graphs\.image\.file names 'image\.onnx', which has no checksum"):
        Bundle.load(demo_copy, providers=[CPU])


def test_missing_manifest_field_is_named_at_load(demo_copy: Path) -> None:
    _edit_manifest(demo_copy, lambda m: m["preprocessing"]["image"].pop("mean"))
    with pytest.raises(BundleError, match=r"preprocessing\.image\.mean is missing"):
        Bundle.load(demo_copy, providers=[CPU])


def test_manifest_pointing_outside_the_bundle_is_refused_even_unverified(demo_copy: Path) -> None:
    def escape(m: dict) -> None:
        m["graphs"]["text"]["file"] = "../text.onnx"
        m["files"]["../text.onnx"] = m["files"].pop("text.onnx")

    _edit_manifest(demo_copy, escape)
    with pytest.raises(BundleError, match=r"'\.\./text\.onnx' points outside the bundle"):
        Bundle.load(demo_copy, providers=[CPU], verify=False)


def test_truncated_graph_is_named_when_checksums_are_skipped(demo_copy: Path) -> None:
    graph = demo_copy / "image.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"image\.onnx: checksum mismatch"):
        Bundle.load(demo_copy, providers=[CPU])
    with pytest.raises(BundleError, match=r"image\.onnx: ONNX Runtime cannot load it"):
        Bundle.load(demo_copy, providers=[CPU], verify=False)
