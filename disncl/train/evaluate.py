"""Evaluate a trained run: retrieval on a clean split (MII-only and full) and noise detection.

It lives in ``train/`` rather than ``eval/`` because noise detection re-scores the training pairs
with the trainer's split (:func:`~disncl.train.loop.score_training_pairs`); the measurements
themselves (recall, detection metrics, probes) are in ``disncl/eval/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from disncl.config import load_config
from disncl.data.dataset import load_split, resolve_noise, semantic_keys
from disncl.data.noise import NoiseIndex, make_noisy_pairs
from disncl.eval.detection import detection_metrics
from disncl.eval.splits import evaluate_retrieval, prepare_split
from disncl.io import atomic_write_json
from disncl.models.checkpoint import load_model
from disncl.train.loop import resolve_device, score_training_pairs, unit_interval
from disncl.train.run_dir import RunDir

RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def evaluate_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    split: str | None = None,
    device: str = "auto",
    detection: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``run_dir/<checkpoint>`` and write ``eval_<split>_<checkpoint>.json`` beside it."""
    run = RunDir(run_dir)
    if not run.config.is_file():
        raise FileNotFoundError(f"{run.root} is not a run directory (no config.yaml); train one first")
    cfg = load_config(run.config)
    dev = resolve_device(device)
    split = split or cfg.data.test_split
    model, tokenizer = load_model(run.root / checkpoint, device=dev)

    test_ds = load_split(cfg.data, split)
    test = prepare_split(test_ds, tokenizer, cfg, progress)
    result: dict[str, Any] = {
        "run": str(run.root),
        "checkpoint": checkpoint,
        "split": split,
        "method": cfg.train.method,
        "selection_space": cfg.selection_space(),
        "retrieval": evaluate_retrieval(model, test, cfg, dev, semantic_keys(cfg.data, split, test_ds), progress),
    }
    if detection:
        train_ds = load_split(cfg.data, cfg.data.train_split)
        noise = (
            NoiseIndex.load(run.noise, train_ds.n_images, train_ds.n_captions)
            if run.noise.is_file()
            else resolve_noise(cfg.data, train_ds)
        )
        if noise is not None:
            pairs = make_noisy_pairs(train_ds, noise)
            train = prepare_split(train_ds, tokenizer, cfg, progress)
            table, prob = score_training_pairs(model, train, pairs, cfg, dev)
            sim = table["mii_sim"] if cfg.selection_space() == "mii" else table["full_sim"]
            result["detection"] = {
                "gmm": detection_metrics(prob, pairs.is_clean),
                "similarity_auroc": detection_metrics(unit_interval(sim), pairs.is_clean)["auroc"],
            }
    atomic_write_json(run.root / f"eval_{split}_{checkpoint}.json", result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """A readable markdown table of recall (both spaces) and detection."""
    head = "| space | " + " | ".join(RECALL_KEYS) + " |"
    lines = [f"{result['run']} ({result['method']}, {result['checkpoint']}, split {result['split']})", "", head,
             "|" + "---|" * (len(RECALL_KEYS) + 1)]
    for space, rec in result["retrieval"].items():
        lines.append(f"| {space} | " + " | ".join(f"{rec[k]:.1f}" for k in RECALL_KEYS) + " |")
        if "semantic_rsum" in rec:
            lines.append(
                f"| {space} (semantic) | " + " | ".join(f"{rec['semantic_' + k]:.1f}" for k in RECALL_KEYS) + " |"
            )
    if "detection" in result:
        g = result["detection"]["gmm"]
        lines += [
            "",
            f"noise detection: GMM AUROC {g['auroc']:.3f}, noisy precision {g['noisy_precision']:.3f}, "
            f"noisy recall {g['noisy_recall']:.3f}; similarity AUROC {result['detection']['similarity_auroc']:.3f}",
        ]
    return "\n".join(lines)
