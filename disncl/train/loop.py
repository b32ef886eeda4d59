"""The training loop shared by every method: epochs of pairs, a scoring pass, the GMM split,
validation, logging and checkpoints. Side effects (files, devices) live here and in the CLI."""

from __future__ import annotations

import json
import math
import random
import shutil
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
from disncl.data.precomp import PrecompSplit, RegionFeatures
from disncl.data.shards import ShardedCaptions, ShardImages
from disncl.eval.detection import detection_metrics
from disncl.eval.encode import Embeddings, TokenTable, autocast, encode_images, encode_split, encode_texts
from disncl.eval.retrieval import retrieval_report
from disncl.io import atomic_dir, atomic_write_text
from disncl.models.checkpoint import build_model, save_model
from disncl.models.tokenizer import tokenize
from disncl.train import distributed
from disncl.train.distributed import DistContext
from disncl.train.distributed import resolve_device as resolve_device  # re-exported for evaluate and bench
from disncl.train.noise_split import clean_probability, smooth_clean_probability
from disncl.train.objective import batch_objective
from disncl.train.scoring import pair_table, per_pair_loss, write_pair_scores
from disncl.train.state import TrainState, find_checkpoint, load_checkpoint, save_checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class SplitData:
    """A split made ready for the model: decoded images and tokenised captions."""

    ds: CaptionedImages
    images: ImageArray | ShardImages | RegionFeatures
    tokens: TokenTable


def prepare_split(ds: CaptionedImages, tokenizer: Any, cfg: RunConfig, progress: bool) -> SplitData:
    """Tokenise the captions; decode the images into memory, or read them on demand from tar shards
    or (precomp) from memory-mapped region features."""
    if isinstance(ds, PrecompSplit) != (cfg.model.arch == "precomp"):
        raise ValueError(
            "model.arch=precomp and data.precomp_root go together: region features need the precomp towers "
            f"and the precomp towers need region features (model.arch is {cfg.model.arch!r}, "
            f"data.precomp_root is {cfg.data.precomp_root!r})"
        )
    images: ImageArray | ShardImages | RegionFeatures
    if isinstance(ds, PrecompSplit):
        images = ds.features
    elif isinstance(ds, ShardedCaptions):
        images = ShardImages(ds.locations, cfg.model.image_size)
    else:
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
    return retrieval_metrics(emb, split, cfg, keys)


def retrieval_metrics(emb: Embeddings, split: SplitData, cfg: RunConfig, keys=None) -> dict[str, dict[str, float]]:
    """:func:`evaluate_retrieval` on embeddings already computed."""
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
    return score_embeddings(emb, pairs, cfg)


def score_embeddings(
    emb: Embeddings, pairs: NoisyPairs, cfg: RunConfig, previous: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`score_training_pairs` on embeddings already computed; ``previous`` (the last epoch's clean
    probability) is averaged in with weight ``cfg.split.ema`` (Eq. 6c)."""
    img, txt = emb.space(cfg.selection_space())
    loss = per_pair_loss(img, txt, pairs, cfg.loss.tau, cfg.train.batch_size, cfg.train.seed)
    prob = clean_probability(loss, cfg.split).astype(np.float32)
    if previous is not None:
        prob = smooth_clean_probability(previous, prob, cfg.split.ema)
    return pair_table(emb, pairs, loss, prob, cfg.selection_space()), prob


class _RowRange:
    """Rows ``[start, stop)`` of a split's images, indexed from 0: one rank's shard of an encoding pass."""

    def __init__(self, base: Any, start: int, stop: int) -> None:
        self.base, self.start, self.stop = base, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, idx: np.ndarray) -> Any:
        return self.base[np.asarray(idx) + self.start]


def encode_sharded(
    model, split: SplitData, cfg: RunConfig, device: torch.device, ctx: DistContext, progress: bool = False
) -> Embeddings:
    """The whole split's embeddings on every rank: each rank encodes its shard of whole batches, then
    all ranks exchange them. Without torchrun this is :func:`~disncl.eval.encode.encode_split`."""
    bs, amp = cfg.train.eval_batch_size, cfg.train.amp
    if not ctx.enabled:
        return encode_split(model, split.images, split.tokens, bs, device, amp, progress)
    img_shards, cap_shards = ctx.shards(len(split.images), bs), ctx.shards(len(split.tokens), bs)
    (i0, i1), (c0, c1) = img_shards[ctx.rank], cap_shards[ctx.rank]
    # A rank whose shard is empty (fewer batches than ranks) still takes part in the exchange.
    dims = (model.cfg.embed_dim, model.cfg.mii_dim)
    img = (encode_images(model, _RowRange(split.images, i0, i1), bs, device, amp, progress) if i1 > i0
           else tuple(np.zeros((0, d), np.float32) for d in dims))
    tokens = TokenTable(split.tokens.input_ids[c0:c1], split.tokens.attention_mask[c0:c1])
    txt = (encode_texts(model, tokens, bs, device, amp, progress) if c1 > c0
           else tuple(np.zeros((0, d), np.float32) for d in dims))
    img_sizes, cap_sizes = [b - a for a, b in img_shards], [b - a for a, b in cap_shards]
    return Embeddings(
        img_full=distributed.all_gather_rows(ctx, img[0], img_sizes),
        img_mii=distributed.all_gather_rows(ctx, img[1], img_sizes),
        txt_full=distributed.all_gather_rows(ctx, txt[0], cap_sizes),
        txt_mii=distributed.all_gather_rows(ctx, txt[1], cap_sizes),
    )


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
    """Add one epoch's line; the file is rewritten atomically, so a kill never leaves half a line."""
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def _truncate_log(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs a resumed run will redo (logged before a checkpoint that never landed)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln and json.loads(ln)["epoch"] <= epochs_done]
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


def _recover_interrupted_writes(run: RunDir) -> None:
    """Clear what a kill in the middle of a write leaves beside the final names, before a resume reads them.

    Temporary files of :func:`~disncl.io.atomic_write` (``.NAME.*.tmp``) and ``last.tmp``/``best.tmp``
    folders are incomplete by construction and removed. ``last.old`` without ``last`` (a kill between
    :func:`~disncl.io.atomic_dir`'s two renames) is the complete previous checkpoint and is renamed
    back, so the next save does not delete the only checkpoint before the new one is in place.
    """
    for tmp in run.root.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for final, marker in ((run.last, "train_state.json"), (run.best, "model.json")):
        shutil.rmtree(final.with_name(final.name + ".tmp"), ignore_errors=True)
        old = final.with_name(final.name + ".old")
        if not (final / marker).is_file() and (old / marker).is_file():
            shutil.rmtree(final, ignore_errors=True)
            old.rename(final)
        else:
            shutil.rmtree(old, ignore_errors=True)


def train(cfg: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the run described by ``cfg``; returns the run directory.

    ``stop_after`` ends this session after that many completed epochs (a checkpoint is written),
    for jobs under a wall-clock limit; ``resume=True`` later continues exactly where it stopped.
    Under ``torchrun`` every process calls this and they train together (:mod:`disncl.train.distributed`):
    ``train.batch_size`` is the global batch, rank 0 alone writes files and shows progress.
    """
    ctx = distributed.context_from_env(cfg.train.device)
    ctx.local_batch_size(cfg.train.batch_size)  # fail before joining the group if the batch does not split
    with distributed.session(ctx):
        return _train(cfg, ctx, resume, progress and ctx.is_main, stop_after)


def _train(cfg: RunConfig, ctx: DistContext, resume: bool, progress: bool, stop_after: int | None) -> Path:
    run = RunDir(cfg.train.out)
    device = ctx.device
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)

    report_dir = None
    if ctx.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        report_dir = run.root
    train_ds = load_split(cfg.data, cfg.data.train_split, report_dir)
    val_ds = load_split(cfg.data, cfg.data.val_split, report_dir)
    val_keys = semantic_keys(cfg.data, cfg.data.val_split, val_ds)

    if resume and ctx.is_main and run.root.is_dir():
        _recover_interrupted_writes(run)
    distributed.barrier(ctx)
    ckpt = find_checkpoint(run.last) if resume else None
    if resume and ckpt is None:
        raise FileNotFoundError(f"--resume: no complete checkpoint under {run.last}; start the run without --resume")
    if not resume and find_checkpoint(run.last) is not None:
        raise FileExistsError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )

    if ckpt is None:
        noise = resolve_noise(cfg.data, train_ds)
        if noise is not None and ctx.is_main:
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
        if ctx.is_main:
            _truncate_log(run.log, state.epoch)
    else:
        model, tokenizer = build_model(cfg.model, train_ds.captions)
        model.to(device)
        optimizer = opt_factory(model)
        scheduler = sched_factory(optimizer)
        state = TrainState(0, 0, -math.inf, -1, np.ones(len(pairs.caption), dtype=np.float32))
        if ctx.is_main:
            atomic_write_text(run.config, dump_yaml(cfg))
    distributed.broadcast_module(ctx, model)

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
        # The same global order on every rank (seeded by epoch); each rank trains on its slice of a batch.
        order = np.random.default_rng([cfg.train.seed, epoch]).permutation(len(pairs.caption))
        batches = [order[s : s + cfg.train.batch_size] for s in range(0, steps_per_epoch * cfg.train.batch_size,
                                                                        cfg.train.batch_size)]
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress, leave=False)
        for idx in bar:
            local = ctx.local_rows(idx)
            pixels = model.preprocess(train_data.images[pairs.image[local]])
            ids, mask = train_data.tokens.batch(pairs.caption[local], device)
            # The objective sees the whole global batch (towers' outputs gathered), so it takes all weights.
            w = torch.as_tensor(weights[idx], device=device)
            with autocast(device, cfg.train.amp), distributed.gather_tower_features(ctx, model):
                loss, terms = batch_objective(cfg.train.method, model, pixels, ids, mask, w, cfg.loss, cfg.srem,
                                              use_split)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite loss at epoch {epoch + 1}, step {state.step}: {terms}; lower train.lr or check data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            distributed.average_gradients(ctx, model)
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

        # Scoring and validation: every rank encodes a shard; rank 0 fits the split and validates, and
        # its clean probabilities go to every rank so all train the next epoch on the same weights.
        emb = encode_sharded(model, train_data, cfg, device, ctx)
        prob = np.empty(len(pairs.caption), dtype=np.float32)
        if ctx.is_main:
            # The first scoring pass has nothing to average with (the initial all-ones is not an estimate).
            table, prob = score_embeddings(emb, pairs, cfg, state.clean_prob if epoch > 0 else None)
            write_pair_scores(run.pair_scores, table, train_ds, pairs.is_clean if gt_known else None)
        state.clean_prob = distributed.broadcast_array(ctx, prob)
        val_emb = encode_sharded(model, val_data, cfg, device, ctx)
        state.epoch = epoch + 1
        if ctx.is_main:
            val = retrieval_metrics(val_emb, val_data, cfg, val_keys)
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
            _append_log(run.log, record)
            # Only rank 0 tracks the best score: it alone validates and writes best/ and last/.
            if val[space]["rsum"] > state.best_score:
                state.best_score, state.best_epoch = val[space]["rsum"], epoch + 1
                atomic_dir(run.best, lambda d: save_model(model, tokenizer, d))
            save_checkpoint(run.last, model, tokenizer, optimizer, scheduler, state)
            if progress:
                tqdm.write(_epoch_line(record, space))
        distributed.barrier(ctx)
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
