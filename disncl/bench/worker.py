"""One benchmark run in its own process: train, evaluate, probe, measure; write ``result.json``.

A process per run makes the peak-memory figure that run's own (``ru_maxrss``) and lets the runner
run several at once. ``python -m disncl.bench.worker JOB.json`` — the runner writes the job file.
"""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from disncl.config import load_config
from disncl.data.dataset import load_split
from disncl.data.synth import load_factors
from disncl.eval.detection import detector_aurocs
from disncl.eval.probes import mi_with_baseline, probe_accuracy
from disncl.eval.retrieval import exact_match_ceiling
from disncl.eval.splits import prepare_split
from disncl.io import atomic_write_json
from disncl.models.checkpoint import load_model
from disncl.models.disncl import DisNCLModel
from disncl.serve.pair_scores import PairScores
from disncl.train.evaluate import evaluate_run
from disncl.train.loop import resolve_device, train
from disncl.train.run_dir import RunDir
from disncl.train.state import find_checkpoint

RESULT_FILE = "result.json"
# The noise detectors a result compares (pair_scores.csv columns, higher = cleaner except the loss):
# the learned clean probability, the per-pair loss it is fitted on, full cosine, MII cosine.
DETECTOR_COLUMNS = ("clean_prob", "loss", "full_sim", "mii_sim")
CODES_FILE = "codes_test.npz"
# "shape_single" is the shape of one-object images only (-1 elsewhere, so probes drop those rows): on
# two-object images "shape0" also asks which object comes first, which a pooled feature need not order.
IMAGE_FACTORS = {"shared": ("shape_single", "shape0", "colour0"), "exclusive": ("background", "texture")}
TEXT_FACTORS = {"shared": ("shape_single", "shape0", "colour0"), "exclusive": ("template", "filler")}
VERSIONED_PACKAGES = ("torch", "transformers", "numpy", "scikit-learn", "faiss-cpu", "onnxruntime")


def package_versions() -> dict[str, str]:
    """Versions of the packages that can move the numbers, plus Python and the platform."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@torch.no_grad()
def encode_codes(model: DisNCLModel, split, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Full features (h), MII means (z) and MEI means (u) of every image and caption of a split."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("img_h", "img_z", "img_u", "txt_h", "txt_z", "txt_u")}
    for s in range(0, len(split.images), batch_size):
        idx = np.arange(s, min(s + batch_size, len(split.images)))
        out = model.encode_image(model.preprocess(split.images[idx]))
        for key, value in (("img_h", out.h), ("img_z", out.mu_z), ("img_u", out.mu_u)):
            parts[key].append(value.float().cpu().numpy())
    for s in range(0, len(split.tokens), batch_size):
        ids, mask = split.tokens.batch(np.arange(s, min(s + batch_size, len(split.tokens))), device)
        out = model.encode_text(ids, mask)
        for key, value in (("txt_h", out.h), ("txt_z", out.mu_z), ("txt_u", out.mu_u)):
            parts[key].append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def factor_labels(root: str, split: str) -> dict[str, dict[str, np.ndarray]]:
    """Ground-truth labels per modality: image factors per image, caption factors per caption.

    A caption's shared factors are its owner image's (what the caption describes).
    """
    f = load_factors(root, split)
    owner = f.caption_factors["image"]
    factors = dict(f.image_factors)
    factors["shape_single"] = np.where(factors["n_objects"] == 1, factors["shape0"], -1)
    image = {name: factors[name] for group in IMAGE_FACTORS.values() for name in group}
    text = {name: factors[name][owner] for name in TEXT_FACTORS["shared"]}
    text |= {name: f.caption_factors[name] for name in TEXT_FACTORS["exclusive"]}
    return {"img": image, "txt": text}


def probe_codes(codes: dict[str, np.ndarray], labels: dict[str, dict[str, np.ndarray]], spaces: tuple[str, ...]):
    """Probe accuracy for every (modality, code space, factor), and MI between MII and MEI codes."""
    probes: dict[str, Any] = {}
    for modality in ("img", "txt"):
        for space in spaces:
            key = f"{modality}_{space}"
            probes[key] = {name: probe_accuracy(codes[key], y) for name, y in labels[modality].items()}
    mi = {}
    if "z" in spaces and "u" in spaces:
        mi = {modality: mi_with_baseline(codes[f"{modality}_z"], codes[f"{modality}_u"]) for modality in ("img", "txt")}
    return probes, mi


def summarize_log(log_path: Path) -> dict[str, Any]:
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line]
    return {
        "epochs": len(records),
        "train_seconds_per_epoch": float(np.mean([r["train_seconds"] for r in records])),
        "epoch_seconds": float(np.mean([r["epoch_seconds"] for r in records])),
        "curve": [
            {
                "epoch": r["epoch"],
                "val_rsum": {k: v["rsum"] for k, v in r["val"].items()},
                "auroc": r.get("detection_gmm", {}).get("auroc"),
                "flagged_share": r.get("flagged_share"),
            }
            for r in records
        ],
    }


def detector_record(run: RunDir) -> dict[str, float] | None:
    """Noise-detection AUROC of the last epoch's clean probability, full-space cosine and MII cosine
    (``pair_scores.csv``), side by side; None without ground truth."""
    if not run.pair_scores.is_file():
        return None
    scores = PairScores.read(run.pair_scores)
    known = scores.truth_known
    if not known.any():
        return None
    sign = {"loss": -1.0}  # a low per-pair loss means clean
    return detector_aurocs(scores.is_clean[known],
                           {k: sign.get(k, 1.0) * getattr(scores, k)[known] for k in DETECTOR_COLUMNS})


def add_detectors(result_file: Path) -> bool:
    """(Re)compute a ``result.json``'s ``detectors`` from the run's pair scores (which stay in the run
    directory), for results written before the field existed; returns whether it was written."""
    result = json.loads(result_file.read_text(encoding="utf-8"))
    record = detector_record(RunDir(result_file.parent))
    if record is None:
        return False
    atomic_write_json(result_file, {**result, "detectors": record})
    return True


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) ``job['overrides']`` into ``job['run_dir']`` and measure it."""
    start = time.perf_counter()
    run = RunDir(job["run_dir"])
    cfg = load_config(None, [*job["overrides"], f"train.out={run.root}"])
    resume = find_checkpoint(run.last) is not None
    train(cfg, resume=resume, progress=False)
    evaluation = evaluate_run(run.root, "best", progress=False)

    device = resolve_device(cfg.train.device)
    model, tokenizer = load_model(run.root / "best", device=device)
    test = prepare_split(load_split(cfg.data, cfg.data.test_split), tokenizer, cfg, progress=False)
    codes = encode_codes(model, test, cfg.train.eval_batch_size, device)
    spaces = ("h", "z", "u") if "mii" in cfg.trained_spaces() else ("h",)
    labels = factor_labels(cfg.data.root, cfg.data.test_split)
    probes, mi = probe_codes(codes, labels, spaces)
    np.savez_compressed(run.root / CODES_FILE, img_z=codes["img_z"], img_u=codes["img_u"], img_h=codes["img_h"],
                        **{f"label_{k}": v for k, v in labels["img"].items()})

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "name": job["name"],
        "run_dir": str(run.root),
        "spec": job["spec"],
        "groups": job["groups"],
        "config": cfg.to_dict(),
        "evaluation": {"retrieval": evaluation["retrieval"], "detection": evaluation.get("detection"),
                       "selection_space": evaluation["selection_space"]},
        "detectors": detector_record(run),
        "training": summarize_log(run.log),
        "probes": probes,
        "mi": mi,
        "ceiling": exact_match_ceiling(load_factors(cfg.data.root, cfg.data.test_split).image_shared_key,
                                       test.ds.cap2img),
        "peak_rss_mb": round(peak_mb, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "versions": package_versions(),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--add-detectors"]:
        added = [f for f in argv[1:] if add_detectors(Path(f))]
        print(f"detectors added to {len(added)} of {len(argv) - 1} results")
        return 0
    if len(argv) != 1:
        print("usage: python -m disncl.bench.worker JOB.json | --add-detectors RESULT.json ...", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = run_job(job)
    atomic_write_json(Path(job["run_dir"]) / RESULT_FILE, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
