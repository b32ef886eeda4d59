"""Faster bundles: ONNX Runtime fusion (same parity) and int8 (checked by retrieval on validation data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from disncl.app.model_card import model_card
from disncl.config import load_config
from disncl.export import export_bundle
from disncl.export.__main__ import main
from disncl.export.parity import validation_split
from disncl.export.variants import VariantCheckError, VariantSpec, retrieval_check
from disncl.serve.bundle import Bundle, sha256_file
from disncl.train.loop import train


@pytest.fixture(scope="module")
def run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("variants") / "run"
    train(load_config(None, tiny_overrides(tiny_synth, out, **{"train.epochs": 1})), progress=False)
    return out


# The tiny one-epoch model's MII head is ill-conditioned (int8 moves its mean MII cosine to ~0.97 while
# the full features stay at 0.9999) and 12 validation images make one rank swap an 8-point recall
# change, so the tests that must pass use a loose tolerance; the default one (1 point, 0.99) is
# measured on trained models by benchmarks/real_size.py and on the bundled demo.
LOOSE = {"max_recall_drop": 100.0, "min_cosine": 0.9}


@pytest.fixture(scope="module")
def float32(run: Path) -> Path:
    out = run.parent / "float32"
    export_bundle(run / "best", out, progress=False)
    return out


def test_int8_bundle_passes_the_retrieval_check_and_says_so(run: Path, float32: Path) -> None:
    out = run.parent / "int8"
    manifest = export_bundle(run / "best", out, progress=False, variant=VariantSpec(quantize="int8", **LOOSE))
    variant = manifest["variant"]
    assert variant["name"] == "int8"
    check = variant["check"]
    assert check["passed"] and "val images" in check["split"]
    for space in ("mii", "full"):
        assert set(check[space]["drop"]) == {f"{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)}
        assert min(check[space]["mean_cosine"].values()) >= 0.9
    assert min(check["full"]["mean_cosine"].values()) >= 0.999
    # The graphs really are quantised (int8 weights), and the manifest's checksums are theirs.
    assert (out / "image.onnx").read_bytes() != (float32 / "image.onnx").read_bytes()
    for name, digest in manifest["files"].items():
        assert sha256_file(out / name) == digest
    card = model_card(manifest)
    assert "**Graphs served:** int8" in card and "largest recall drop" in card
    assert not any(p.name.startswith(".int8") for p in out.parent.iterdir()), "the float32 reference is cleaned up"
    # The recorded check is what a recomputation gives.
    images, captions, cap2img, _ = validation_split(run / "best")
    again = retrieval_check(Bundle.load(float32), Bundle.load(out), images, captions, cap2img, VariantSpec(**LOOSE))
    assert again["mii"]["variant"] == check["mii"]["variant"]


def test_a_broken_int8_export_fails_and_leaves_nothing(run: Path, float32: Path, tmp_path: Path) -> None:
    # A bundle whose graphs are not the model's (another seed's weights) stands in for a broken quantisation.
    other = tmp_path / "other_run"
    cfg = load_config(None, tiny_overrides(_data_root(run), other, **{"train.epochs": 1, "train.seed": 7}))
    train(cfg, progress=False)
    broken = Bundle.load(run.parent / "float32")
    images, captions, cap2img, _ = validation_split(run / "best")
    export_bundle(other / "best", tmp_path / "other_bundle", progress=False)
    with pytest.raises(VariantCheckError, match="mean cosine"):
        retrieval_check(broken, Bundle.load(tmp_path / "other_bundle"), images, captions, cap2img, VariantSpec())
    # Through the exporter: an impossible tolerance fails the int8 check, and the output path stays empty.
    out = tmp_path / "strict"
    with pytest.raises(VariantCheckError, match="the bundle was not written"):
        export_bundle(run / "best", out, progress=False, variant=VariantSpec(quantize="int8", min_cosine=1.0))
    assert not out.exists() and not any(p.name.startswith(".strict") for p in tmp_path.iterdir())


def _data_root(run: Path) -> Path:
    return Path(load_config(run / "config.yaml").data.root)


def test_fused_bundle_passes_the_float32_parity(run: Path) -> None:
    out = run.parent / "fused"
    manifest = export_bundle(run / "best", out, progress=False, variant=VariantSpec(optimize="fused"))
    assert manifest["variant"]["name"] == "fused"
    assert manifest["parity"]["passed"]
    assert max(v for d in manifest["parity"]["max_abs_diff"].values() for v in d.values()) <= 1e-4


def test_cli_exports_int8_and_reports_the_check(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run.parent / "cli_int8"
    assert main(["--run", str(run), "--out", str(out), "--quantize", "int8", "--no-progress",
                 "--max-recall-drop", "100", "--min-cosine", "0.9"]) == 0
    printed = capsys.readouterr().out
    assert "graphs: int8" in printed and "largest recall drop" in printed
    assert json.loads((out / "manifest.json").read_text())["variant"]["name"] == "int8"
    assert main(["--run", str(run), "--out", str(out), "--quantize", "int8", "--min-cosine", "1.5"]) == 2
    assert json.loads((out / "manifest.json").read_text())["variant"]["name"] == "int8"  # the old bundle stays
