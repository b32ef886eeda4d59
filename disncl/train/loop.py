"""The training loop shared by every method: epochs of pairs, a scoring pass, the GMM split,
validation, logging and checkpoints. Side effects (files, devices) live here and in the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from disncl.config import RunConfig, dump_yaml
from disncl.data.dataset import load_split, resolve_noise, semantic_keys
from disncl.data.images import ImageArray
from disncl.data.noise import NoiseIndex, NoisyPairs, make_noisy_pairs
from disncl.data.pairs import CaptionedImages
from disncl.eval.detection import detection_metrics
from disncl.eval.encode import TokenTable, autocast, encode_split
from disncl.eval.retrieval import retrieval_report
from disncl.io import atomic_dir, atomic_write_text
from disncl.models.checkpoint import build_model, save_model
from disncl.models.tokenizer import tokenize
from disncl.train.noise_split import clean_probability
from disncl.train.objective import batch_objective
from disncl.train.scoring import pair_table, per_pair_loss, write_pair_scores
from disncl.train.state import TrainState, find_checkpoint, load_checkpoint, save_checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for CUDA but torch sees no CUDA device; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class SplitData:
    """A split made ready for the model: decoded images and tokenised captions."""

    ds: CaptionedImages
    images: ImageArray
    tokens: TokenTable


def prepare_split(ds: CaptionedImages, tokenizer: Any, cfg: RunConfig, progress: bool) -> SplitData:
    images = ImageArray.from_dataset(ds, cfg.model.image_size, progress=progress)
    enc = tokenize(tokenizer, ds.captions, cfg.model.max_text_len)
    return SplitData(ds, images, TokenTable(enc["input_ids"], enc["attention_mask"]))


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero over the whole run."""
    total = max(1, cfg.train.epochs * steps_per_epoch)
    warm = min(cfg.train.lr_warmup_steps, total // 2)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluate_retrieval(
    model, split: SplitData, cfg: RunConfig, device: torch.device, keys=None, progress: bool = False
) -> dict[str, dict[str, float]]:
    """Recall on a clean split for each space the method trains: ``{"mii": {...}, "full": {...}}``."""
    emb = encode_split(model, split.images, split.tokens, cfg.train.eval_batch_size, device, cfg.train.amp, progress)
    out = {}
    for space in cfg.trained_spaces():
        img, txt = emb.space(space)
        img_keys, cap_keys = keys if keys is not None else (None, None)
        out[space] = retrieval_report(img @ txt.T, split.ds.cap2img, img_keys, cap_keys)
    return out


def score_training_pairs(
    model, train: SplitData, pairs: NoisyPairs, cfg: RunConfig, device: torch.device
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-pair loss in the selection space and the GMM clean probability fitted on it (Eq. 6)."""
    emb = encode_split(model, train.images, train.tokens, cfg.train.eval_batch_size, device, cfg.train.amp)
    img, txt = emb.space(cfg.selection_space())
    loss = per_pair_loss(img, txt, pairs, cfg.loss.tau, cfg.train.batch_size, cfg.train.seed)
    prob = clean_probability(loss, cfg.split).astype(np.float32)
    return pair_table(emb, pairs, loss, prob, cfg.selection_space()), prob


class RunDir:
    """The files of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    log = property(lambda self: self.root / "log.jsonl")
    last = property(lambda self: self.root / "last")
    best = property(lambda self: self.root / "best")
    noise = property(lambda self: self.root / "noise_index.npy")
    pair_scores = property(lambda self: self.root / "pair_scores.csv")


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _truncate_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs a resumed run will redo (logged before a checkpoint that never landed)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["epoch"] <= epochs_done]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory.

    ``stop_after`` ends this session after that many completed epochs (a checkpoint is written),
    for jobs under a wall-clock limit; ``resume=True`` later continues exactly where it stopped.
    """
    run = RunDir(cfg.train.out)
    device = resolve_device(cfg.train.device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)

    train_ds = load_split(cfg.data, cfg.data.train_split)
    val_ds = load_split(cfg.data, cfg.data.val_split)
    val_keys = semantic_keys(cfg.data, cfg.data.val_split)

    ckpt = find_checkpoint(run.last) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint under {run.last}; start the run without --resume")
    if not resume and find_checkpoint(run.last) is not None:
        raise FileExistsError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )

    if ckpt is None:
        noise = resolve_noise(cfg.data, train_ds)
        if noise is not None:
            noise.save(run.noise)
    else:
        noise = NoiseIndex.load(run.noise, train_ds.n_images, train_ds.n_captions) if run.noise.is_file() else None
    pairs = make_noisy_pairs(train_ds, noise)
    gt_known = noise is not None or val_keys is not None

    steps_per_epoch = max(1, len(pairs.caption) // cfg.train.batch_size)

    def opt_factory(m):
        return make_optimizer(m, cfg)

    def sched_factory(o):
        return make_scheduler(o, cfg, steps_per_epoch)

    if ckpt is not None:
        model, tokenizer, optimizer, scheduler, state = load_checkpoint(ckpt, opt_factory, sched_factory, device)
        _truncate_log(run.log, state.epoch)
    else:
        model, tokenizer = build_model(cfg.model, train_ds.captions)
        model.to(device)
        optimizer = opt_factory(model)
        scheduler = sched_factory(optimizer)
        state = TrainState(0, 0, -math.inf, -1, np.ones(len(pairs.caption), dtype=np.float32))
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config, dump_yaml(cfg))

    train_data = prepare_split(train_ds, tokenizer, cfg, progress)
    val_data = prepare_split(val_ds, tokenizer, cfg, progress)
    space = cfg.selection_space()

    end = cfg.train.epochs if stop_after is None else min(cfg.train.epochs, stop_after)
    for epoch in range(state.epoch, end):
        t0 = time.perf_counter()
        use_split = cfg.train.method in ("disncl", "ncr", "srem") and epoch >= cfg.train.warmup_epochs
        weights = state.clean_prob if use_split else np.ones_like(state.clean_prob)
        terms_sum: dict[str, float] = {}
        n_batches = 0
        model.train()
        order = np.random.default_rng([cfg.train.seed, epoch]).permutation(len(pairs.caption))
        batches = [order[s : s + cfg.train.batch_size] for s in range(0, steps_per_epoch * cfg.train.batch_size,
                                                                        cfg.train.batch_size)]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress, leave=False)
        for idx in bar:
            pixels = model.preprocess(train_data.images[pairs.image[idx]])
            ids, mask = train_data.tokens.batch(pairs.caption[idx], device)
            w = torch.as_tensor(weights[idx], device=device)
            with autocast(device, cfg.train.amp):
                loss, terms = batch_objective(cfg.train.method, model, pixels, ids, mask, w, cfg.loss, cfg.srem,
                                              use_split)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}, step {state.step}: {terms}; lower train.lr or check data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            state.step += 1
            n_batches += 1
            for k, v in terms.items():
                terms_sum[k] = terms_sum.get(k, 0.0) + v
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        train_seconds = time.perf_counter() - t0

        table, prob = score_training_pairs(model, train_data, pairs, cfg, device)
        state.clean_prob = prob
        write_pair_scores(run.pair_scores, table, train_ds, pairs.is_clean if gt_known else None)
        val = evaluate_retrieval(model, val_data, cfg, device, val_keys)
        score = val[space]["rsum"]
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state.step,
            "train_seconds": round(train_seconds, 2),
            "epoch_seconds": round(time.perf_counter() - t0, 2),
            "lr": scheduler.get_last_lr()[0],
            "loss_terms": {k: v / max(1, n_batches) for k, v in terms_sum.items()},
            "split_used": use_split,
            "val": val,
        }
        if gt_known:
            record["detection_gmm"] = detection_metrics(prob, pairs.is_clean)
            sim_rank = table["mii_sim"] if space == "mii" else table["full_sim"]
            record["detection_similarity_auroc"] = detection_metrics(
                unit_interval(sim_rank), pairs.is_clean
            )["auroc"]
        state.epoch = epoch + 1
        _append_log(run.log, record)
        if score > state.best_score:
            state.best_score, state.best_epoch = score, epoch + 1
            atomic_dir(run.best, lambda d: save_model(model, tokenizer, d))
        save_checkpoint(run.last, model, tokenizer, optimizer, scheduler, state)
        if progress:
            tqdm.write(_epoch_line(record, space))
    return run.root


def unit_interval(x: np.ndarray) -> np.ndarray:
    """Min–max scale similarities to [0, 1] so they read as a clean score for detection metrics."""
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.ones_like(x)


def _epoch_line(r: dict[str, Any], space: str) -> str:
    rsums = " ".join(f"{name} {rec['rsum']:.1f}" for name, rec in r["val"].items())
    parts = [f"epoch {r['epoch']}", f"{r['epoch_seconds']:.0f}s", f"val rSum {rsums} (select {space})"]
    if "detection_gmm" in r:
        parts.append(f"noise AUROC gmm {r['detection_gmm']['auroc']:.3f} sim {r['detection_similarity_auroc']:.3f}")
    return " | ".join(parts)
