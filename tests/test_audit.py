"""``python -m disncl audit``: a user's folder (no ground truth) to a bundle, a gallery the app serves, and
a report; frozen pretrained towers with known noise for the three-detector table; resuming."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import http_status, save_tiny_backbone

from disncl.audit.plan import plan_for
from disncl.audit.sources import resolve_source, validation_images
from disncl.cli import main
from disncl.data.formats import load_captions_file, load_dataset_dir
from disncl.data.synth import SynthConfig, generate
from disncl.serve.bundle import Bundle
from disncl.serve.gallery import Gallery

# A model and schedule small enough for seconds on a CPU (the audit's own plan is sized for real use).
TINY = [
    "--set", "train.epochs=2", "--set", "train.warmup_epochs=1", "--set", "train.eval_batch_size=64",
    "--set", "model.conv_widths=[8,16,16]", "--set", "model.text_width=32", "--set", "model.text_layers=1",
    "--set", "model.image_size=32", "--set", "train.num_threads=1",
]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh synthetic folder with its ground truth removed: only images and one captions table."""
    root = tmp_path_factory.mktemp("user")
    generate(root, SynthConfig(n_train=60, n_val=6, n_test=6, image_size=32, seed=5), progress=False)
    for name in ("synth.json", "val.csv", "test.csv", *(p.name for p in root.glob("factors_*"))):
        (root / name).unlink()
    (root / "train.csv").rename(root / "my_pairs.csv")
    return root


def test_audit_of_a_folder_without_ground_truth_serves_and_resumes(user_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(user_folder), "--out", str(out), "--no-progress", *TINY]) == 0
    for path in ("bundle/manifest.json", "gallery/gallery.json", "gallery/pair_scores.parquet", "audit_report.md",
                 "clean_prob.png", "run/best/model.json"):
        assert (out / path).is_file(), path
    pairs = load_captions_file(user_folder / "my_pairs.csv")
    report = json.loads((out / "audit_report.json").read_text())
    assert report["pairs"] == len(pairs.captions)  # every pair is audited, none held out
    assert report["auroc"] is None and set(report["quantiles"]) == {"clean_prob", "loss", "full_sim", "mii_sim"}
    assert "Score distributions (no ground truth)" in (out / "audit_report.md").read_text()
    log = [json.loads(line) for line in (out / "run/log.jsonl").read_text().splitlines()]
    assert report["split_used"] == any(r["split_used"] for r in log)
    assert report["bimodality"] == [r["loss_bimodality"] for r in log]

    # The gallery searches with the bundle, and app.py serves the pair (through its real services).
    gallery, bundle = Gallery.load(out / "gallery"), Bundle.load(out / "bundle")
    assert (gallery.n_images, gallery.n_captions) == (pairs.n_images, len(pairs.captions))
    _, ids = gallery.search_images(bundle.encode_texts([pairs.captions[0]]).mii, "mii", k=3)
    assert ids.shape == (1, 3)
    assert Gallery.load(out / "gallery").load_pair_scores() is not None
    _serve_and_fetch(out)

    # Re-running skips what is done; a deleted stage output is rebuilt, nothing else is redone.
    stages = json.loads((out / "audit.json").read_text())["stages"]
    shutil.rmtree(out / "gallery")
    assert main(["audit", "--data", str(user_folder), "--out", str(out), "--no-progress"]) == 0
    again = json.loads((out / "audit.json").read_text())["stages"]
    assert again["train"] == stages["train"] and again["export"] == stages["export"]
    assert (out / "gallery/gallery.json").is_file()


def _serve_and_fetch(out: Path) -> None:
    """``python app.py --bundle AUDIT/bundle --gallery AUDIT/gallery`` (the printed command) serves the page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, str(repo / "app.py"), "--bundle", str(out / "bundle"), "--gallery",
                               str(out / "gallery"), "--port", str(port)], cwd=repo, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if http_status(f"http://127.0.0.1:{port}/") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"app.py did not serve the audit: {server.stderr.read() if server.poll() else 'timeout'}")
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_frozen_backbone_audit_with_known_noise_compares_three_detectors(tiny_synth: Path, tmp_path: Path) -> None:
    captions = load_dataset_dir(tiny_synth, "train").captions + load_dataset_dir(tiny_synth, "val").captions
    backbone = save_tiny_backbone(tmp_path / "clip", captions)
    out = tmp_path / "audit"
    args = ["audit", "--data", str(tiny_synth), "--backbone", str(backbone), "--out", str(out), "--noise-rate", "0.4",
            "--no-progress", "--set", "train.epochs=3", "--set", "train.warmup_epochs=1"]
    assert main(args) == 0
    report = json.loads((out / "audit_report.json").read_text())
    assert set(report["auroc"]) == {"clean_prob", "loss", "full_sim", "mii_sim"}
    assert all(0.0 <= v <= 1.0 for v in report["auroc"].values())
    assert "cosine, tower space (CLIP-score filter)" in (out / "audit_report.md").read_text()
    assert len(list((out / "run/feature_cache").iterdir())) == 2  # the folder's own val split, not staged
    cfg = (out / "run/config.yaml").read_text()
    assert "freeze_towers: true" in cfg and "method: disncl" in cfg


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["audit", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "a.csv").write_text("image,caption\n")
    (tmp_path / "b.csv").write_text("image,caption\n")
    assert main(["audit", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no pairs found" in err and "a.csv, b.csv" in err


def test_a_table_with_train_and_val_in_its_split_column_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "pairs.csv").write_text("image,caption,split\na.png,x,train\nb.png,y,val\n")
    source = resolve_source(tmp_path, None, tmp_path / "stage")
    assert source.kind == "table" and source.data["data.captions_file"] == str(tmp_path / "pairs.csv")
    assert not (tmp_path / "stage").exists()


def test_plan_scales_with_the_data() -> None:
    small, large = plan_for(500, frozen=False), plan_for(500_000, frozen=False)
    assert (small.batch_size, small.epochs) == (32, 30) and (large.batch_size, large.epochs) == (128, 5)
    assert plan_for(145_000, frozen=True).epochs == 10  # Flickr30K-sized, heads only
    assert all(1 <= p.warmup_epochs < p.epochs for p in (small, large))
    with pytest.raises(ValueError, match="at least 2"):
        plan_for(1, frozen=False)


def test_in_sample_validation_is_a_seeded_tenth_of_the_images() -> None:
    a, b = validation_images(5000, seed=0), validation_images(5000, seed=0)
    assert np.array_equal(a, b) and len(a) == 500 and len(np.unique(a)) == 500
    assert len(validation_images(30, seed=0)) == 20 and len(validation_images(20_000, seed=0)) == 1000


def test_the_report_says_when_training_never_used_the_split() -> None:
    from disncl.audit.report import format_report

    s = {"pairs": 10, "flagged": 3, "flagged_fraction": 0.3, "auroc": None, "quantiles": {}, "epochs": 2,
         "val_rsum": {"mii": 100.0}, "most_suspicious": [], "split_used": False, "bimodality": [1.2, 1.4]}
    state = {"stages": {}}
    assert "never used the clean/noisy split" in format_report(s, state)
    assert "never used the clean/noisy split" not in format_report({**s, "split_used": True}, state)
