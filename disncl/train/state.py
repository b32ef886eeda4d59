"""Training-state checkpoints: model + optimizer + schedule + RNG, as safetensors + JSON (no pickles).

A checkpoint is a directory (``last/`` or ``best/``) holding the model files of
:mod:`disncl.models.checkpoint` plus ``train_state.safetensors`` / ``train_state.json``. It is
written into a temporary sibling and swapped in by renames, so a kill at any moment leaves
either the previous complete checkpoint or the new one under the final name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from disncl.io import atomic_dir, atomic_write, atomic_write_json, find_complete_dir
from disncl.models.checkpoint import load_model, save_model

STATE_VERSION = 1

# split_from of a run whose gated warm-up found unimodal losses: later than any epoch.
NO_SPLIT = 1 << 30
# Where a checkpoint of a co-divided run (train.co_divide, Eq. 6n) keeps its second network.
PEER_DIR = "peer"


@dataclass
class TrainState:
    """What, beyond the weights, a resumed run needs to continue exactly."""

    epoch: int  # epochs completed
    step: int
    best_score: float
    best_epoch: int
    clean_prob: np.ndarray
    # First epoch (0-based) trained with the split; -1 while the warm-up lasts (train.warmup=adaptive or
    # gated); NO_SPLIT once the gated warm-up decided the run trains without it.
    split_from: int = -1
    # The gate stayed shut and train.shut_gate started the split anyway (Eq. 6g; see shut_gate_config).
    split_fallback: bool = False
    # Eq. 6k (split.repair): the image each pair trains with next instead of its own, -1 where it keeps its own;
    # None where nothing was re-paired.
    repaired: np.ndarray | None = None


@dataclass
class Peer:
    """Eq. 6n (``train.co_divide``): the second network, trained on the split the main network's fit gives, and
    fitting the split the main network trains on. It is checkpointed in ``last/`` but never selected or served."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    clean_prob: np.ndarray  # w from the main network's fit: what the peer trains on next


def _flatten_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, entries in opt_state["state"].items():
        meta["state"][str(pid)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][name] = "tensor"
            else:
                meta["state"][str(pid)][name] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entries in meta["state"].items():
        state[int(pid)] = {
            name: tensors[f"optim.{pid}.{name}"] if value == "tensor" else value for name, value in entries.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    peer: Peer | None = None,
) -> Path:
    """Write the checkpoint at ``directory`` atomically; a co-divided run's ``peer`` goes into its ``peer/``
    folder in the same swap, so a kill never leaves the two networks at different epochs."""
    def fill(tmp: Path) -> None:
        save_model(model, tokenizer, tmp)
        _write_state(tmp, optimizer, scheduler, state)
        if peer is not None:
            save_model(peer.model, tokenizer, tmp / PEER_DIR)
            _write_state(tmp / PEER_DIR, peer.optimizer, peer.scheduler, replace(state, clean_prob=peer.clean_prob))

    return atomic_dir(directory, fill)


def _write_state(
    tmp: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
) -> None:
    tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors["clean_prob"] = torch.from_numpy(np.ascontiguousarray(state.clean_prob, dtype=np.float32))
    if state.repaired is not None:
        tensors["repaired"] = torch.from_numpy(np.ascontiguousarray(state.repaired, dtype=np.int64))
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    atomic_write(tmp / "train_state.safetensors", lambda p: save_file(tensors, str(p)))
    atomic_write_json(
        tmp / "train_state.json",
        {
            "format_version": STATE_VERSION,
            "epoch": state.epoch,
            "step": state.step,
            "best_score": state.best_score,
            "best_epoch": state.best_epoch,
            "split_from": state.split_from,
            "split_fallback": state.split_fallback,
            "optimizer": optim_meta,
            "scheduler": scheduler.state_dict(),
        },
    )


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint at ``directory``, or the previous one if a swap was interrupted."""
    return find_complete_dir(directory, "train_state.json")


def load_checkpoint(
    directory: str | Path,
    optimizer_factory,
    scheduler_factory,
    device: torch.device,
):
    """Load model, tokenizer, optimizer, scheduler and :class:`TrainState`; restores the RNG state."""
    directory = Path(directory)
    model, tokenizer = load_model(directory, device=device)
    meta = json.loads((directory / "train_state.json").read_text(encoding="utf-8"))
    if meta.get("format_version", 0) > STATE_VERSION:
        raise ValueError(
            f"{directory}: training state format {meta['format_version']} is newer than this disncl "
            f"understands ({STATE_VERSION}); upgrade disncl to resume it"
        )
    tensors = load_file(str(directory / "train_state.safetensors"))
    optimizer = optimizer_factory(model)
    # The scheduler's constructor rewrites the learning rates; build it before restoring them.
    scheduler = scheduler_factory(optimizer)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    state = TrainState(
        epoch=meta["epoch"],
        step=meta["step"],
        best_score=meta["best_score"],
        best_epoch=meta["best_epoch"],
        clean_prob=tensors["clean_prob"].numpy().copy(),
        # Checkpoints written before adaptive warm-up existed used the fixed one.
        split_from=meta.get("split_from", -1),
        split_fallback=meta.get("split_fallback", False),
        repaired=tensors["repaired"].numpy().copy() if "repaired" in tensors else None,
    )
    return model, tokenizer, optimizer, scheduler, state


def load_peer(directory: str | Path, optimizer_factory, scheduler_factory, device: torch.device) -> Peer:
    """The second network of a co-divided run's checkpoint (Eq. 6n), after :func:`load_checkpoint` of the same
    ``directory`` (whose RNG state it leaves as that restored)."""
    folder = Path(directory) / PEER_DIR
    if not (folder / "train_state.json").is_file():
        raise FileNotFoundError(f"{directory} holds no {PEER_DIR}/ network: it was written without train.co_divide, "
                                "so it cannot be resumed with it; resume with the run's own config.yaml")
    rng = torch.get_rng_state()
    model, _, optimizer, scheduler, state = load_checkpoint(folder, optimizer_factory, scheduler_factory, device)
    torch.set_rng_state(rng)
    return Peer(model, optimizer, scheduler, state.clean_prob)
