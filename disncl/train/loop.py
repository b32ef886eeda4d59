"""The training loop shared by every method, in named steps: :func:`open_session` (recovery, data,
noise, model, optimiser), :func:`train_one_epoch`, :func:`score_and_split` (the GMM split),
validation, :func:`save_checkpoints`. The run directory and its log live in :mod:`.run_dir`.
Side effects (files, devices) live here and in the CLI."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from disncl.config import RunConfig, dump_yaml
from disncl.data.dataset import load_split, resolve_noise, semantic_keys
from disncl.data.noise import NoiseIndex, NoisyPairs, make_noisy_pairs
from disncl.data.pairs import CaptionedImages
from disncl.eval.detection import detection_metrics
from disncl.eval.encode import Embeddings, TokenTable, autocast, encode_images, encode_split, encode_texts
from disncl.eval.splits import SplitData, prepare_split, retrieval_metrics
from disncl.io import atomic_dir, atomic_write_text
from disncl.methods import get_method
from disncl.models.checkpoint import build_model, save_model
from disncl.models.disncl import TOWER_PREFIXES, DisNCLModel
from disncl.train import distributed
from disncl.train.distributed import DistContext
from disncl.train.distributed import resolve_device as resolve_device  # re-exported for evaluate and bench
from disncl.train.feature_cache import cached_split, towers_digest
from disncl.train.noise_split import (
    bimodality,
    cap_clean_share,
    clean_probability,
    loss_vs_chance,
    smooth_clean_probability,
)
from disncl.train.objective import batch_objective, heads_detached
from disncl.train.repair import NOT_REPAIRED, repair_images, train_pairing
from disncl.train.run_dir import RunDir, append_log, recover_interrupted_writes, truncate_log
from disncl.train.scoring import pair_distance, pair_table, per_pair_loss, write_pair_scores
from disncl.train.state import (
    NO_SPLIT,
    Peer,
    TrainState,
    find_checkpoint,
    load_checkpoint,
    load_peer,
    save_checkpoint,
)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (frozen towers' are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


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


def score_training_pairs(
    model, train: SplitData, pairs: NoisyPairs, cfg: RunConfig, device: torch.device
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-pair loss in the selection space (Eq. 6, or the distance of Eq. 6e where ``cfg.split_score()`` is cosine)
    and the GMM clean probability fitted on it."""
    emb = encode_split(model, train.images, train.tokens, cfg.train.eval_batch_size, device, cfg.train.amp)
    return score_embeddings(emb, pairs, cfg)


def score_embeddings(
    emb: Embeddings, pairs: NoisyPairs, cfg: RunConfig, previous: np.ndarray | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`score_training_pairs` on embeddings already computed; ``previous`` (the last epoch's clean
    probability) is averaged in with weight ``cfg.split.ema`` (Eq. 6c), then capped at ``split.clean_share``
    (Eq. 6o); ``split.oracle`` replaces the fit by the ground truth."""
    loss = split_scores(emb, cfg.selection_space(), pairs, cfg)
    if cfg.split.oracle:
        prob = initial_clean_prob(cfg, pairs)
    else:
        prob = clean_probability(loss, cfg.split).astype(np.float32)
        if cfg.split.agree:
            # Eq. 6m: trusted only where the method's other space trusts the pair too.
            other = "full" if cfg.selection_space() == "mii" else "mii"
            if other in get_method(cfg.train.method).spaces:
                prob = np.minimum(prob, clean_probability(split_scores(emb, other, pairs, cfg), cfg.split)).astype(
                    np.float32)
        if previous is not None:
            prob = smooth_clean_probability(previous, prob, cfg.split.ema)
        prob = cap_clean_share(prob, loss, cfg.split.clean_share)
    return pair_table(emb, pairs, loss, prob, cfg.selection_space()), prob


def split_scores(emb: Embeddings, space: str, pairs: NoisyPairs, cfg: RunConfig) -> np.ndarray:
    """What the split's mixture is fitted on in ``space``: the pair distance (Eq. 6e) or Eq. 6's per-pair loss."""
    img, txt = emb.space(space)
    if cfg.split_score() == "cosine":
        return pair_distance(img, txt, pairs)
    return per_pair_loss(img, txt, pairs, cfg.split.tau, cfg.train.batch_size, cfg.train.seed)


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


@dataclass
class Session:
    """Everything one training session works with, built by :func:`open_session`."""

    cfg: RunConfig
    ctx: DistContext
    run: RunDir
    train_ds: CaptionedImages
    pairs: NoisyPairs
    gt_known: bool
    model: DisNCLModel
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    state: TrainState
    train_data: SplitData
    val_data: SplitData
    val_keys: Any
    steps_per_epoch: int
    # The training split's shared-factor keys (synthetic data), what Eq. 6k's semantic precision reads; else None.
    train_keys: Any = None
    # Eq. 6n's second network (train.co_divide); else None.
    peer: Peer | None = None

    @property
    def device(self) -> torch.device:
        return self.ctx.device


def _train(cfg: RunConfig, ctx: DistContext, resume: bool, progress: bool, stop_after: int | None) -> Path:
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.train.seed)
    s = open_session(cfg, ctx, resume, progress)
    end = cfg.train.epochs if stop_after is None else min(cfg.train.epochs, stop_after)
    for epoch in range(s.state.epoch, end):
        t0 = time.perf_counter()
        use_split = split_active(cfg, epoch, s.state.split_from)
        # What Eq. 3c reads: the share of pairs the split this epoch trains on flags (None before the split).
        flagged = flagged_share(s.state.clean_prob, s.cfg) if use_split else None
        terms = train_one_epoch(s, epoch, use_split, flagged, progress)
        if s.peer is not None:
            peer_flagged = flagged_share(s.peer.clean_prob, s.cfg) if use_split else None
            with peer_stream(s.cfg, epoch, s.device):
                peer_terms = train_one_epoch(s, epoch, use_split, peer_flagged, progress, peer=True)
        train_seconds = time.perf_counter() - t0
        table, prob, gate = score_and_split(s, epoch)
        val_emb = encode_sharded(s.model, s.val_data, cfg, s.device, ctx)
        s.state.epoch = epoch + 1
        if ctx.is_main:
            record = {
                "epoch": epoch + 1,
                "step": s.state.step,
                "train_seconds": round(train_seconds, 2),
                "epoch_seconds": round(time.perf_counter() - t0, 2),
                "lr": s.scheduler.get_last_lr()[0],
                "loss_terms": terms,
                "split_used": use_split,
                "flagged_share": flagged,
                "val": retrieval_metrics(val_emb, s.val_data, cfg, s.val_keys),
            }
            # How bimodal this epoch's per-pair losses are (Eq. 10) and how well they are fit (Eq. 6h): what the
            # adaptive and gated warm-ups and the shut gate's fallback read.
            record |= gate
            if s.peer is not None:
                record |= peer_record(s, peer_terms)
            if s.state.repaired is not None:
                record |= repair_record(s)
            if s.gt_known:
                record |= detection_record(s, table, prob)
            append_log(s.run.log, record)
            # The session's configuration: Eq. 6i's fallback can move the selection space mid-run.
            save_checkpoints(s, record["val"][s.cfg.selection_space()]["rsum"])
            if progress:
                tqdm.write(_epoch_line(record, s.cfg.selection_space()))
        distributed.barrier(ctx)
    return s.run.root


def open_session(cfg: RunConfig, ctx: DistContext, resume: bool, progress: bool) -> Session:
    """Recover or start the run: data, noise, model, optimiser and schedule, the train state."""
    run = RunDir(cfg.train.out)
    report_dir = None
    if ctx.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        report_dir = run.root
    train_ds = load_split(cfg.data, cfg.data.train_split, report_dir)
    val_ds = load_split(cfg.data, cfg.data.val_split, report_dir)
    val_keys = semantic_keys(cfg.data, cfg.data.val_split, val_ds)

    if resume and ctx.is_main and run.root.is_dir():
        recover_interrupted_writes(run)
    distributed.barrier(ctx)
    ckpt = find_checkpoint(run.last) if resume else None
    if cfg.train.co_divide and ctx.enabled:
        raise ValueError("train.co_divide trains its two networks in one process; run it without torchrun")
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
    if cfg.split.oracle and noise is None:
        raise ValueError("split.oracle trains on the ground truth of injected noise, and this run injects none: "
                         "set data.noise_rate > 0 (or data.noise_file), or leave split.oracle off")
    pairs = make_noisy_pairs(train_ds, noise)
    steps_per_epoch = max(1, len(pairs.caption) // cfg.train.batch_size)

    def opt_factory(m):
        return make_optimizer(m, cfg)

    def sched_factory(o):
        return make_scheduler(o, cfg, steps_per_epoch)

    peer = None
    if ckpt is not None:
        model, tokenizer, optimizer, scheduler, state = load_checkpoint(ckpt, opt_factory, sched_factory, ctx.device)
        if cfg.train.co_divide:
            peer = load_peer(ckpt, opt_factory, sched_factory, ctx.device)
        if ctx.is_main:
            truncate_log(run.log, state.epoch)
    else:
        model, tokenizer = build_model(cfg.model, train_ds.captions)
        model.to(ctx.device)
        optimizer = opt_factory(model)
        scheduler = sched_factory(optimizer)
        state = TrainState(0, 0, -math.inf, -1, initial_clean_prob(cfg, pairs))
        if cfg.train.co_divide:
            peer = build_peer(cfg, train_ds, opt_factory, sched_factory, ctx.device, state.clean_prob)
        if ctx.is_main:
            atomic_write_text(run.config, dump_yaml(cfg))
    distributed.broadcast_module(ctx, model)
    train_data = prepare_split(train_ds, tokenizer, cfg, progress)
    val_data = prepare_split(val_ds, tokenizer, cfg, progress)
    if cfg.model.freeze_towers:
        train_data, val_data = _cached_features(cfg, ctx, run, model, (train_data, val_data), progress)
    return Session(
        cfg=shut_gate_config(cfg, state), ctx=ctx, run=run, train_ds=train_ds, pairs=pairs,
        gt_known=noise is not None or val_keys is not None,
        model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler, state=state,
        train_data=train_data, val_data=val_data, val_keys=val_keys, steps_per_epoch=steps_per_epoch,
        train_keys=semantic_keys(cfg.data, cfg.data.train_split, train_ds) if cfg.split.repair else None,
        peer=peer,
    )


# Added to train.seed for the second network's initialisation and batch order (Eq. 6n): the main network keeps
# the initialisation and order a run without co-divide has, so the two runs pair by seed.
PEER_SEED_OFFSET = 1


def build_peer(
    cfg: RunConfig, train_ds: CaptionedImages, opt_factory, sched_factory, device: torch.device, clean_prob: np.ndarray
) -> Peer:
    """Eq. 6n's second network, from its own initialisation; the global RNG stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed + PEER_SEED_OFFSET)
        model, _ = build_model(cfg.model, train_ds.captions)
    model.to(device)
    optimizer = opt_factory(model)
    return Peer(model, optimizer, sched_factory(optimizer), clean_prob.copy())


@contextmanager
def peer_stream(cfg: RunConfig, epoch: int, device: torch.device) -> Iterator[None]:
    """Eq. 6n's second network draws its samples (Eq. 2's reparameterisation) from a stream of its own, seeded by
    (seed + PEER_SEED_OFFSET, epoch): the main network's stream stays a plain run's, and a resumed run replays the
    peer's without a saved state."""
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
        torch.manual_seed(int(np.random.SeedSequence([cfg.train.seed + PEER_SEED_OFFSET, epoch]).generate_state(1)[0]))
        yield


def _cached_features(
    cfg: RunConfig, ctx: DistContext, run: RunDir, model: DisNCLModel, splits: tuple[SplitData, ...], progress: bool
) -> list[SplitData]:
    """Frozen towers: each split encoded once, then read from the feature cache (:mod:`.feature_cache`)."""
    if ctx.enabled:
        raise ValueError("model.freeze_towers trains the heads on cached features, which one process does "
                         "quickly; run it without torchrun")
    cache_dir = Path(cfg.train.feature_cache) if cfg.train.feature_cache else run.root / "feature_cache"
    digest = towers_digest(model)
    return [cached_split(model, split, cache_dir, digest, cfg.train.eval_batch_size, ctx.device, cfg.train.amp,
                         progress) for split in splits]


def shut_gate_config(cfg: RunConfig, state: TrainState) -> RunConfig:
    """The configuration a run trains on: ``cfg``, with the flagged pairs on the complementary loss once the
    gate stayed shut and ``train.shut_gate`` started the split anyway (Eq. 6g; ``state.split_fallback``),
    with ``train.shut_gate_space: full`` the split and model selection in the full space from then (Eq. 6i), and
    with ``train.shut_gate_heads: detached`` the heads on sg(h) from then (Eq. 6j)."""
    if not state.split_fallback:
        return cfg
    train_cfg = replace(cfg.train, select_on="full") if cfg.train.shut_gate_space == "full" else cfg.train
    if cfg.train.shut_gate_heads == "detached":
        train_cfg = replace(train_cfg, heads_detached=True)
    return replace(cfg, loss=replace(cfg.loss, flagged_loss="complementary"), train=train_cfg)


def epoch_config(cfg: RunConfig, epoch: int, flagged: float | None = None) -> RunConfig:
    """The configuration epoch ``epoch`` (0-based) trains on: with ``train.heads_detached_from`` at or before it,
    the heads on sg(h) (Eq. 2f); with the split on and flagging the share ``flagged`` of the training pairs
    below ``loss.weight_by_clean_prob_below``, the alignment weighted by w (Eq. 3c)."""
    start = cfg.train.heads_detached_from
    if start and epoch + 1 >= start and not cfg.train.heads_detached:
        cfg = replace(cfg, train=replace(cfg.train, heads_detached=True))
    if flagged is not None and flagged < cfg.loss.weight_by_clean_prob_below and not cfg.loss.weight_by_clean_prob:
        cfg = replace(cfg, loss=replace(cfg.loss, weight_by_clean_prob=True))
    return cfg


def flag_threshold(cfg: RunConfig) -> float:
    """The clean probability at or below which the split flags a pair: θ (Eq. 5b), or 0.5 with a soft split."""
    return cfg.loss.alpha_hard_threshold or 0.5


def flagged_share(clean_prob: np.ndarray, cfg: RunConfig) -> float:
    """The share of training pairs the split flags (:func:`flag_threshold`)."""
    return float(np.mean(clean_prob <= flag_threshold(cfg)))


def initial_clean_prob(cfg: RunConfig, pairs: NoisyPairs) -> np.ndarray:
    """``w`` before the first scoring pass: ones, or with ``split.oracle`` the ground truth (which a split that
    starts at once, ``train.warmup_epochs = 0``, trains on; warm-up epochs train on ones whatever ``w`` is)."""
    if cfg.split.oracle:
        return pairs.is_clean.astype(np.float32)
    return np.ones(len(pairs.caption), dtype=np.float32)


def split_active(cfg: RunConfig, epoch: int, split_from: int = -1) -> bool:
    """Whether ``epoch`` (0-based) trains with the clean probability: the method uses it and warm-up is over.

    Fixed warm-up, and the ground-truth split (``split.oracle``, which needs no gate): after
    ``train.warmup_epochs``. Adaptive or gated: from ``split_from``, the epoch
    :func:`split_start` chose (-1 while it has not, NO_SPLIT when the gate found unimodal losses).
    """
    if not get_method(cfg.train.method).uses_split:
        return False
    if cfg.warmup_mode() == "fixed" or cfg.split.oracle:
        return epoch >= cfg.train.warmup_epochs
    return 0 <= split_from <= epoch


def warmup_over(cfg: RunConfig, epochs_done: int, loss_bimodality: float) -> bool:
    """Adaptive warm-up: may the split start after ``epochs_done`` epochs, given Ashman's D of this scoring's
    per-pair losses (Eq. 10)?

    Yes once ``warmup_epochs`` are done and the losses are bimodal (D > ``split.bimodality``), or once
    ``warmup_max_epochs`` are done whatever D is.
    """
    if epochs_done < cfg.train.warmup_epochs:
        return False
    return epochs_done >= cfg.train.warmup_max_epochs or loss_bimodality > cfg.split.bimodality


def split_start(cfg: RunConfig, epochs_done: int, loss_bimodality: float) -> int:
    """The epoch the split starts from, decided after ``epochs_done`` epochs from Ashman's D of the per-pair
    losses (Eq. 10); -1: not decided yet.

    Adaptive warm-up (Eq. 6d): ``epochs_done`` once :func:`warmup_over` says so. Gated (Eq. 6f): after
    exactly ``warmup_epochs``, ``epochs_done`` if the losses are bimodal (D > ``split.bimodality``), else
    :data:`NO_SPLIT`: one unimodal loss distribution is no evidence of noise, and a two-component mixture
    fitted to it would still flag a tail of clean pairs (docs/method.md §9.5).
    """
    mode = cfg.warmup_mode()
    if mode == "adaptive":
        return epochs_done if warmup_over(cfg, epochs_done, loss_bimodality) else -1
    if mode != "gated" or epochs_done < cfg.train.warmup_epochs:
        return -1
    return epochs_done if loss_bimodality > cfg.split.bimodality else NO_SPLIT


def train_one_epoch(
    s: Session, epoch: int, use_split: bool, flagged: float | None, progress: bool, peer: bool = False
) -> dict[str, float]:
    """One pass over the training pairs (``flagged``: the share of them the split flags, :func:`flagged_share`,
    None before the split); returns the mean of each loss term (one host transfer per epoch). ``peer``: the pass
    of Eq. 6n's second network, on the main network's split, in its own batch order."""
    cfg, ctx, device = epoch_config(s.cfg, epoch, flagged), s.ctx, s.device
    if peer:
        assert s.peer is not None
        model, optimizer, scheduler = s.peer.model, s.peer.optimizer, s.peer.scheduler
        clean_prob, repaired, order_seed = s.peer.clean_prob, None, [cfg.train.seed + PEER_SEED_OFFSET, epoch]
    else:
        model, optimizer, scheduler = s.model, s.optimizer, s.scheduler
        clean_prob, repaired, order_seed = s.state.clean_prob, s.state.repaired, [cfg.train.seed, epoch]
    if use_split:
        pair_image, weights = train_pairing(s.pairs.image, clean_prob, repaired)
    else:
        pair_image, weights = s.pairs.image, np.ones_like(clean_prob)
    terms_sum: dict[str, torch.Tensor] = {}
    model.train()
    # The same global order on every rank (seeded by epoch); each rank trains on its slice of a batch.
    order = np.random.default_rng(order_seed).permutation(len(s.pairs.caption))
    bs = cfg.train.batch_size
    batches = [order[i : i + bs] for i in range(0, s.steps_per_epoch * bs, bs)]
    desc = f"epoch {epoch + 1}/{cfg.train.epochs}" + (" (peer)" if peer else "")
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
    for idx in bar:
        local = ctx.local_rows(idx)
        pixels = model.preprocess(s.train_data.images[pair_image[local]])
        ids, mask = s.train_data.tokens.batch(s.pairs.caption[local], device)
        # The objective sees the whole global batch (towers' outputs gathered), so it takes all weights.
        w = torch.as_tensor(weights[idx], device=device)
        with autocast(device, cfg.train.amp), distributed.gather_tower_features(ctx, model):
            loss, terms = batch_objective(model, pixels, ids, mask, w, cfg, use_split)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch + 1}, step {s.state.step}: "
                f"{ {k: float(v) for k, v in terms.items()} }; lower train.lr or check data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(ctx, model)
        clip_gradients(model, cfg, use_split)
        optimizer.step()
        scheduler.step()
        if not peer:
            s.state.step += 1
        for k, v in terms.items():
            terms_sum[k] = terms_sum[k] + v if k in terms_sum else v
        if progress:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return {k: float(v) / len(batches) for k, v in terms_sum.items()}


def clip_gradients(model: torch.nn.Module, cfg: RunConfig, use_split: bool) -> None:
    """Gradient-norm clipping at ``train.grad_clip`` (0: none): one norm over every parameter, or where the heads
    read sg(h) (Eq. 2c) one for the towers and one for the rest, so that the heads' gradients do not shrink the
    towers' step (a detached warm-up is then InfoNCE's, docs/method.md §9.8)."""
    if cfg.train.grad_clip <= 0:
        return
    if not heads_detached(cfg, use_split):
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        return
    towers = [p for name, p in model.named_parameters() if name.startswith(TOWER_PREFIXES)]
    rest = [p for name, p in model.named_parameters() if not name.startswith(TOWER_PREFIXES)]
    for group in (towers, rest):
        torch.nn.utils.clip_grad_norm_(group, cfg.train.grad_clip)


def gate_losses(emb: Embeddings, pairs: NoisyPairs, table: dict[str, np.ndarray], cfg: RunConfig) -> np.ndarray:
    """Eq. 6's per-pair loss, whatever the mixture is fitted on: what the gated and adaptive warm-ups read
    (Ashman's D, Eq. 6d, 6f) and the shut gate's fallback (Eq. 6h). The pair distance of Eq. 6e separates
    less early in training (the bundled demo: D 1.92 on the distance after warm-up, 2.19 on the loss), so
    it would keep the gate shut on noisy data (docs/method.md §9.6)."""
    if cfg.split_score() == "loss":
        return table["loss"]
    img, txt = emb.space(cfg.selection_space())
    return per_pair_loss(img, txt, pairs, cfg.split.tau, cfg.train.batch_size, cfg.train.seed)


def starts_fallback(cfg: RunConfig, unfit: float) -> bool:
    """Where the gate stays shut, does ``train.shut_gate`` start the split anyway (Eq. 6g), given the
    warm-up's mean per-pair loss over its chance level (Eq. 6h)?"""
    return cfg.train.shut_gate == "complementary" and unfit > cfg.train.shut_gate_unfit


def score_and_split(s: Session, epoch: int) -> tuple[dict[str, np.ndarray] | None, np.ndarray, dict[str, float]]:
    """Encode the training pairs, fit the split on rank 0 (Eq. 6, 6c), write ``pair_scores.csv``, share ``w``.

    Every rank encodes a shard; rank 0's clean probabilities go to every rank, so all train the next
    epoch on the same weights. Returns rank 0's pair table (None elsewhere), the new ``w``, and what the
    warm-up gate read on rank 0 (NaN elsewhere): Ashman's D of the per-pair losses (Eq. 10) and their mean
    over chance (Eq. 6h), which decide an adaptive or gated warm-up and the shut gate's fallback.
    """
    emb = encode_sharded(s.model, s.train_data, s.cfg, s.device, s.ctx)
    prob = np.empty(len(s.pairs.caption), dtype=np.float32)
    table, gate = None, {"loss_bimodality": float("nan"), "loss_vs_chance": float("nan")}
    if s.ctx.is_main:
        # The first scoring pass has nothing to average with (the initial all-ones is not an estimate).
        table, prob = score_embeddings(emb, s.pairs, s.cfg, s.state.clean_prob if epoch > 0 else None)
        write_pair_scores(s.run.pair_scores, table, s.train_ds, s.pairs.is_clean if s.gt_known else None)
        losses = gate_losses(emb, s.pairs, table, s.cfg)
        gate = {"loss_bimodality": bimodality(losses, s.cfg.split),
                "loss_vs_chance": loss_vs_chance(losses, s.cfg.train.batch_size)}
    s.state.clean_prob = distributed.broadcast_array(s.ctx, prob)
    if s.cfg.warmup_mode() != "fixed" and s.state.split_from < 0 and not s.cfg.split.oracle:
        # Rank 0 decides (the start epoch, and whether a shut gate falls back); every rank applies it.
        decided = np.zeros(2, dtype=np.int64)
        if s.ctx.is_main:
            decided[0] = split_start(s.cfg, epoch + 1, gate["loss_bimodality"])
            decided[1] = starts_fallback(s.cfg, gate["loss_vs_chance"])
        start, fallback = distributed.broadcast_array(s.ctx, decided)
        s.state.split_from = int(start)
        if s.state.split_from == NO_SPLIT and fallback:
            s.state.split_from, s.state.split_fallback = epoch + 1, True
            space = s.cfg.selection_space()
            s.cfg = shut_gate_config(s.cfg, s.state)
            if s.cfg.selection_space() != space:
                table = refit_split(s, emb)
    if s.cfg.split.repair and split_active(s.cfg, epoch + 1, s.state.split_from):
        repair_pairs(s, emb)
    own = s.state.clean_prob
    if s.peer is not None:
        s.peer.clean_prob, s.state.clean_prob = own, peer_split(s)
    return table, own, gate


def peer_split(s: Session) -> np.ndarray:
    """Eq. 6n: the split the peer's own fit gives (Eq. 6 in the run's current selection space, after any Eq. 6i
    move), which the main network trains on next; the main network's fit trains the peer."""
    assert s.peer is not None
    emb = encode_split(s.peer.model, s.train_data.images, s.train_data.tokens, s.cfg.train.eval_batch_size, s.device,
                       s.cfg.train.amp)
    return score_embeddings(emb, s.pairs, s.cfg)[1]


def peer_record(s: Session, terms: dict[str, float]) -> dict[str, Any]:
    """The peer's epoch in the log: its loss terms, its validation rSum in the selection space, and where the noise is
    known how well its split, the one the main network trains on next, detects it."""
    assert s.peer is not None
    space = s.cfg.selection_space()
    emb = encode_split(s.peer.model, s.val_data.images, s.val_data.tokens, s.cfg.train.eval_batch_size, s.device,
                       s.cfg.train.amp)
    record: dict[str, Any] = {"peer_loss_terms": terms,
                              "peer_val_rsum": retrieval_metrics(emb, s.val_data, s.cfg, None)[space]["rsum"]}
    if s.gt_known:
        record["peer_detection_gmm"] = detection_metrics(s.state.clean_prob, s.pairs.is_clean)
    return record


def repair_pairs(s: Session, emb: Embeddings) -> None:
    """Eq. 6k on rank 0, shared with every rank: which flagged pairs the next epoch trains with another image."""
    repaired = np.full(len(s.pairs.caption), NOT_REPAIRED, dtype=np.int64)
    if s.ctx.is_main:
        img, txt = emb.space(s.cfg.selection_space())
        repaired = repair_images(img, txt, s.pairs.image, s.pairs.caption, s.state.clean_prob,
                                 flag_threshold(s.cfg), s.cfg.split.repair_quantile)
    s.state.repaired = distributed.broadcast_array(s.ctx, repaired)


def repair_record(s: Session) -> dict[str, Any]:
    """How many pairs Eq. 6k re-paired for the next epoch; where the noise is known, the share of them given their
    true image, and on synthetic data the share given an image their caption describes (same shared factors)."""
    moved = s.state.repaired != NOT_REPAIRED
    record: dict[str, Any] = {"repaired": int(moved.sum())}
    if not moved.any():
        return record
    captions, images = s.pairs.caption[moved], s.state.repaired[moved]
    if s.gt_known:
        record["repaired_correct"] = float(np.mean(images == np.asarray(s.train_ds.cap2img)[captions]))
    if s.train_keys is not None:
        image_key, caption_key = s.train_keys
        record["repaired_described"] = float(np.mean(image_key[images] == caption_key[captions]))
    return record


def refit_split(s: Session, emb: Embeddings) -> dict[str, np.ndarray] | None:
    """Eq. 6i: the fallback moved the split to another space; fit it there before its first epoch (with nothing
    to average in: the other space's posteriors are not an estimate of this one's), and record the space in the
    run's config.yaml (what evaluation and export read)."""
    prob = np.empty(len(s.pairs.caption), dtype=np.float32)
    table = None
    if s.ctx.is_main:
        table, prob = score_embeddings(emb, s.pairs, s.cfg)
        write_pair_scores(s.run.pair_scores, table, s.train_ds, s.pairs.is_clean if s.gt_known else None)
        atomic_write_text(s.run.config, dump_yaml(s.cfg))
    s.state.clean_prob = distributed.broadcast_array(s.ctx, prob)
    return table


def detection_record(s: Session, table: dict[str, np.ndarray], prob: np.ndarray) -> dict[str, Any]:
    """Noise-detection quality of this epoch's clean probability and of raw similarity (Section 5.3)."""
    sim = table["mii_sim"] if s.cfg.selection_space() == "mii" else table["full_sim"]
    return {
        "detection_gmm": detection_metrics(prob, s.pairs.is_clean),
        "detection_similarity_auroc": detection_metrics(unit_interval(sim), s.pairs.is_clean)["auroc"],
    }


def save_checkpoints(s: Session, score: float) -> None:
    """Rank 0: ``best/`` when validation improved, then ``last/`` (weights, optimiser, schedule, state)."""
    # Only rank 0 tracks the best score: it alone validates and writes best/ and last/.
    if score > s.state.best_score:
        s.state.best_score, s.state.best_epoch = score, s.state.epoch
        atomic_dir(s.run.best, lambda d: save_model(s.model, s.tokenizer, d))
    save_checkpoint(s.run.last, s.model, s.tokenizer, s.optimizer, s.scheduler, s.state, s.peer)


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
