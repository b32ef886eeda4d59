"""Multi-process training under ``torchrun``: process group, rank helpers and the collectives the loop needs.

``torchrun --nproc_per_node N -m disncl train ...`` starts N processes with ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` set; :func:`context_from_env` reads them and :func:`session` joins the processes into one
group (NCCL on CUDA, gloo on CPU).
Without those variables (or with ``WORLD_SIZE=1``) everything here is a no-op and training runs as a
single process, bit for bit as before.

How a step is split (Section 6.1 of docs/method.md): every rank takes its slice of each global batch
and runs the CLIP towers on it; :func:`gather_tower_features` then all-gathers the projected tower
features, so the heads (with their batch norm), the reparameterisation noise, the decoders, the CLUB
networks and the loss all see the whole global batch, identically on every rank. The loss is therefore
the single-process loss of that batch, not an average of per-rank losses with fewer negatives.
:func:`average_gradients` then makes every rank's gradient that of the global loss.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

# Non-zero ranks wait in a collective while rank 0 scores the training pairs, validates and writes
# checkpoints; on a large dataset that can take far longer than the default NCCL timeout.
COLLECTIVE_TIMEOUT = timedelta(hours=2)
# Gradients are all-reduced in flat buckets of at most this many elements (bounds the extra memory).
_BUCKET_ELEMENTS = 1 << 24


class DistributedConfigError(ValueError):
    """The torchrun environment or the config does not allow a multi-process run."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: its rank, the number of processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, validates and writes files."""
        return self.rank == 0

    def local_batch_size(self, global_batch_size: int) -> int:
        """Pairs this rank takes from each global batch; the global size must split evenly."""
        if global_batch_size % self.world:
            raise DistributedConfigError(
                f"train.batch_size={global_batch_size} (the global batch) does not split evenly over "
                f"{self.world} processes; set train.batch_size to a multiple of {self.world}"
            )
        return global_batch_size // self.world

    def local_rows(self, global_batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch (rank order = batch order, as the gather expects)."""
        n = self.local_batch_size(len(global_batch))
        return global_batch[self.rank * n : (self.rank + 1) * n]

    def shards(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """Row ranges ``[start, stop)`` of every rank when ``n`` rows are encoded in batches of ``batch_size``.

        The ranges are whole batches of the single-process pass, so each batch (and its padding) is
        exactly the one a single process would encode and the gathered embeddings are identical to it.
        """
        n_batches = -(-n // batch_size)
        cuts = [min(n, (r * n_batches // self.world) * batch_size) for r in range(self.world + 1)]
        return list(zip(cuts[:-1], cuts[1:], strict=True))


def context_from_env(device_name: str) -> DistContext:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by torchrun) and pick this process's device.

    ``device_name`` is ``train.device``: under torchrun ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
    """
    env = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    world = _env_int("WORLD_SIZE", env["WORLD_SIZE"], default=1)
    if world < 1:
        raise DistributedConfigError(f"WORLD_SIZE={world} must be at least 1")
    rank = _env_int("RANK", env["RANK"], default=0)
    local_rank = _env_int("LOCAL_RANK", env["LOCAL_RANK"], default=rank)
    if not 0 <= rank < world:
        raise DistributedConfigError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    if world > 1 and env["RANK"] is None:
        raise DistributedConfigError("WORLD_SIZE is set but RANK is not; start multi-process runs with torchrun")
    return DistContext(rank, world, local_rank, _device(device_name, world, local_rank))


def _env_int(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def resolve_device(name: str) -> torch.device:
    """The device a single process trains or evaluates on: ``auto`` picks CUDA when torch sees it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for CUDA but torch sees no CUDA device; use --device cpu")
    return device


def _device(name: str, world: int, local_rank: int) -> torch.device:
    if world == 1:
        return resolve_device(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise DistributedConfigError(
            f"train.device={name!r} under torchrun: each process uses cuda:LOCAL_RANK; set train.device to "
            "auto, cuda or cpu"
        )
    if not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda under torchrun but torch sees no CUDA device; use --device cpu")
    if local_rank >= torch.cuda.device_count():
        raise DistributedConfigError(
            f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
            "lower --nproc_per_node"
        )
    return torch.device("cuda", local_rank)


@contextmanager
def session(ctx: DistContext) -> Iterator[DistContext]:
    """Join the torchrun process group for the duration of a run (nothing to join for one process)."""
    if not ctx.enabled:
        yield ctx
        return
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world, timeout=COLLECTIVE_TIMEOUT)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_array(ctx: DistContext, array: np.ndarray) -> np.ndarray:
    """Rank 0's ``array``, on every rank; every rank passes an array of the same shape and dtype."""
    if not ctx.enabled:
        return array
    t = torch.from_numpy(np.ascontiguousarray(array)).to(ctx.device)
    dist.broadcast(t, src=0)
    return t.cpu().numpy()


def broadcast_module(ctx: DistContext, module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, so all ranks start from the same weights."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=0)


def all_gather_rows(ctx: DistContext, local: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Concatenate every rank's rows in rank order; ``sizes[r]`` is rank r's row count (known to all)."""
    if not ctx.enabled:
        return local
    if local.shape[0] != sizes[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} holds {local.shape[0]} rows but sizes says {sizes[ctx.rank]}")
    width = max(sizes)
    padded = torch.zeros((width, *local.shape[1:]), dtype=torch.from_numpy(local[:0]).dtype, device=ctx.device)
    padded[: local.shape[0]] = torch.from_numpy(np.ascontiguousarray(local)).to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)]).cpu().numpy()


class _GatherRows(torch.autograd.Function):
    """All-gather along the batch dimension, differentiable.

    Backward: this rank's rows receive the sum over ranks of each rank's gradient for them (a
    reduce-scatter written as all-reduce + slice, which every backend supports). With the identical
    loss on every rank that is ``world`` times the global loss's gradient, which
    :func:`average_gradients` divides back out.
    """

    @staticmethod
    def forward(fctx, x: Tensor, rank: int, world: int) -> Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        fctx.rank, fctx.rows = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(fctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[fctx.rank * fctx.rows : (fctx.rank + 1) * fctx.rows], None, None


def gather_rows_with_grad(ctx: DistContext, x: Tensor) -> Tensor:
    """``x`` of every rank stacked in rank order; gradients flow back to each rank's own rows."""
    return _GatherRows.apply(x, ctx.rank, ctx.world) if ctx.enabled else x


def gather_tower_features(ctx: DistContext, model: nn.Module) -> AbstractContextManager[None]:
    """Within this context the image and text towers of ``model`` return the whole global batch's
    projected features (gathered from all ranks) instead of this rank's slice.

    Implemented as forward hooks on the last module of each tower (CLIP's two projection layers, or
    the precomp region and GRU encoders), so the model and the objectives stay unaware of distribution.
    """
    if not ctx.enabled:
        return nullcontext()
    towers = getattr(model, "towers", None)
    if towers is not None:
        return _gather_hooks(ctx, [towers.image, towers.text])
    return _gather_hooks(ctx, [model.clip.visual_projection, model.clip.text_projection])


@contextmanager
def _gather_hooks(ctx: DistContext, modules: list[nn.Module]) -> Iterator[None]:
    handles = [m.register_forward_hook(lambda _m, _i, out: gather_rows_with_grad(ctx, out)) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def average_gradients(ctx: DistContext, model: nn.Module) -> None:
    """Replace every gradient by its mean over ranks (all-reduce in flat buckets).

    Every rank runs the same graph, so the same parameters have gradients on every rank.
    """
    if not ctx.enabled:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    bucket: list[Tensor] = []
    size = 0
    for g in grads:
        if bucket and size + g.numel() > _BUCKET_ELEMENTS:
            _reduce_bucket(bucket, ctx.world)
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel()
    if bucket:
        _reduce_bucket(bucket, ctx.world)


def _reduce_bucket(grads: list[Tensor], world: int) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
