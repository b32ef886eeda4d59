"""Frozen-tower audit costs at ViT-B/32 size, offline: what ``audit --backbone`` spends on a laptop CPU.

``python benchmarks/frozen_towers.py --vocab BPE_VOCAB [--work DIR] [--images 1000] [--flickr-images 29000]``

``BPE_VOCAB`` as for ``benchmarks/real_size.py`` (CLIP's BPE file or the ``open-clip-torch`` wheel holding
it); the CLIP has random weights, which cost the same time as trained ones. Two figures:

1. **encode**: the towers encode ``--images`` synthetic 224 px images and their captions once, as the
   feature cache does (:mod:`disncl.train.feature_cache`): seconds per 1,000 images and per 1,000 captions.
2. **head training per epoch at Flickr30K scale**: ``--flickr-images`` training images with 5 captions each
   (29,000 x 5 = 145,000 pairs) and 1,000 validation images. Their cache entries are filled with random
   unit features (encoding 29,000 images is figure 1 times 29), then ``disncl train`` runs 2 epochs on
   them with the audit's frozen-tower plan: optimiser steps, the per-pair scoring and GMM split, the
   ``pair_scores.csv``, validation and the checkpoints, as the log's ``train_seconds``/``epoch_seconds``.

Writes ``benchmarks/results/frozen_towers.md``. Needs about 3 GB of disk and ~10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from real_size import build_backbone, run  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "frozen_towers.md"
_WORDS = ("red", "blue", "dog", "cat", "runs", "sits", "beach", "street", "a", "the", "two", "on", "near", "small")


def flickr_sized_folder(out: Path, n_train: int, n_val: int, seed: int = 0) -> Path:
    """A dataset folder of Flickr30K's shape: one small PNG hard-linked under every image name (never
    decoded: the cache is filled beforehand), 5 random captions per image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    proto = out / "proto.png"
    Image.new("RGB", (32, 32), (120, 80, 40)).save(proto)
    for split, n in (("train", n_train), ("val", n_val)):
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "caption"])
            for i in range(n):
                name = f"images/{split}_{i:06d}.png"
                os.link(proto, out / name)
                for _ in range(5):
                    w.writerow([name, " ".join(rng.choice(_WORDS, size=rng.integers(6, 14)))])
    return out


def encode_cost(clip_dir: Path, data: Path, batch: int) -> dict[str, float]:
    """Seconds the frozen towers take per 1,000 images and per 1,000 captions (ImageFiles, as the cache reads)."""
    import torch

    from disncl.config import load_config
    from disncl.data.dataset import load_split
    from disncl.eval.encode import encode_images, encode_texts
    from disncl.eval.splits import prepare_split
    from disncl.models.checkpoint import build_model

    cfg = load_config(None, [f"data.root={data}", f"model.backbone={clip_dir}", "model.freeze_towers=true"])
    model, tok = build_model(cfg.model, None)
    split = prepare_split(load_split(cfg.data, "train"), tok, cfg, progress=False)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    encode_images(model, split.images, batch, device)
    t_img = time.perf_counter() - t0
    t0 = time.perf_counter()
    encode_texts(model, split.tokens, 256, device)
    t_txt = time.perf_counter() - t0
    return {"images": len(split.images), "captions": len(split.tokens),
            "s_per_1k_images": 1000 * t_img / len(split.images), "s_per_1k_captions": 1000 * t_txt / len(split.tokens),
            "threads": torch.get_num_threads()}


def fill_cache(clip_dir: Path, data: Path, cache: Path, overrides: list[str]) -> None:
    """Cache entries of random unit features under the keys the trainer will look up."""
    import torch

    from disncl.config import load_config
    from disncl.data.dataset import load_split
    from disncl.eval.splits import prepare_split
    from disncl.io import atomic_dir
    from disncl.models.checkpoint import build_model
    from disncl.train.feature_cache import CAPTIONS_FILE, IMAGES_FILE, KEY_FILE, entry_name, split_key, towers_digest

    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model, tok = build_model(cfg.model, None)
    digest = towers_digest(model)
    rng = np.random.default_rng(0)
    for name in ("train", "val"):
        split = prepare_split(load_split(cfg.data, name), tok, cfg, progress=False)
        key = split_key(model, split, digest)

        def unit(n: int) -> np.ndarray:
            x = rng.standard_normal((n, cfg.model.embed_dim)).astype(np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        def fill(tmp: Path, key=key) -> None:
            np.save(tmp / IMAGES_FILE, unit(key["n_images"]))
            np.save(tmp / CAPTIONS_FILE, unit(key["n_captions"]))
            (tmp / KEY_FILE).write_text(json.dumps(key, sort_keys=True))

        cache.mkdir(parents=True, exist_ok=True)
        atomic_dir(cache / entry_name(key), fill)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", required=True, type=Path, help="bpe_simple_vocab_16e6.txt.gz or the open-clip wheel")
    p.add_argument("--work", type=Path, default=Path("bench_runs/frozen_towers"), help="working folder (~3 GB)")
    p.add_argument("--images", type=int, default=1000, help="224 px images timed through the towers")
    p.add_argument("--flickr-images", type=int, default=29000, help="training images of the head-training run")
    p.add_argument("--batch", type=int, default=64, help="images per encoding batch")
    args = p.parse_args(argv)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    clip_dir = work / "clip_vit_b32"
    info = build_backbone(args.vocab, clip_dir)
    run(["synth", "--out", str(work / "data224"), "--n-train", str(args.images), "--n-val", "10", "--n-test", "10",
         "--image-size", "224", "--no-progress"])
    enc = encode_cost(clip_dir, work / "data224", args.batch)
    print(f"encode: {enc}", flush=True)

    flickr = flickr_sized_folder(work / "flickr", args.flickr_images, 1000)
    from disncl.audit.plan import plan_for

    plan = plan_for(args.flickr_images * 5, frozen=True)
    overrides = [f"data.root={flickr}", f"model.backbone={clip_dir}", *plan.overrides(), "train.epochs=2",
                 f"train.out={work / 'run'}", "train.device=cpu", f"train.feature_cache={work / 'cache'}"]
    fill_cache(clip_dir, flickr, work / "cache", overrides)
    run(["train", "--no-progress", *sum((["--set", o] for o in overrides), [])])
    log = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    rows = [(r["epoch"], r["train_seconds"], r["epoch_seconds"]) for r in log]
    md = [
        "# Frozen-tower audit costs at ViT-B/32 size",
        "",
        f"`python benchmarks/frozen_towers.py --vocab /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl` "
        f"({info['parameters_M']} M parameters, {info['tokens']}-token BPE, random weights; "
        f"{enc['threads']} CPU threads).",
        "",
        "| towers encode once (feature cache) | seconds |",
        "|---|---|",
        f"| per 1,000 images (224 px, batch {args.batch}, {enc['images']} timed) | {enc['s_per_1k_images']:.1f} |",
        f"| per 1,000 captions ({enc['captions']} timed) | {enc['s_per_1k_captions']:.1f} |",
        f"| Flickr30K's 29,000 + 1,014 images and 150,070 captions, estimated | "
        f"{(30014 * enc['s_per_1k_images'] + 150070 * enc['s_per_1k_captions']) / 1000:.0f} |",
        "",
        f"Head training on the cache, {args.flickr_images:,} images x 5 captions = {args.flickr_images * 5:,} pairs, "
        f"1,000 validation images, batch {plan.batch_size} (the audit's plan: {plan.epochs} epochs):",
        "",
        "| epoch | optimiser steps, s | whole epoch (steps + scoring + split + pair_scores.csv + validation + "
        "checkpoints), s |",
        "|---|---|---|",
        *(f"| {e} | {t:.1f} | {s:.1f} |" for e, t, s in rows),
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(md), encoding="utf-8")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
