"""A run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends exactly where an
uninterrupted run with the same seed ends (CPU, one thread: equality, no tolerance)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from disncl.cli import main
from disncl.config import load_config
from disncl.train.loop import train
from disncl.train.state import find_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Batches of 8 make an epoch ~30 steps (0.3-1 s, by machine). The kill comes after epoch 1's checkpoint and
# must land before the run ends: three epochs leave two to land in, however fast the machine (with two, a
# fast one sometimes finished epoch 2 first).
EXTRA = {"train.batch_size": 8, "train.num_threads": 1, "train.epochs": 3}
KILL_DELAY_S = 0.3


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    """train.num_threads=1 calls torch.set_num_threads in this process; give later tests their threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _sets(data: Path, out: Path) -> list[str]:
    return sum((["--set", o] for o in tiny_overrides(data, out, **EXTRA)), [])


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _kill_when_checkpoint_lands(proc: subprocess.Popen, run: Path, timeout_s: float = 300.0) -> None:
    """SIGKILL ``proc`` shortly after its epoch-1 checkpoint lands, i.e. while it trains a later epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "last" / "train_state.json").is_file():
            time.sleep(KILL_DELAY_S)
            proc.send_signal(signal.SIGKILL)
            return
        time.sleep(0.005)


def _assert_complete_files(run: Path) -> None:
    """Every file under a final name is whole: it parses or loads."""
    for d in ("last", "best"):
        for f in (run / d).rglob("*"):
            if f.suffix == ".safetensors":
                load_file(str(f))
            elif f.suffix == ".json":
                json.loads(f.read_text())
    _log(run)
    with open(run / "pair_scores.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 48 * 5
    np.load(run / "noise_index.npy")
    load_config(run / "config.yaml")


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tiny_synth: Path, tmp_path: Path) -> None:
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "disncl", "train", *_sets(tiny_synth, killed), "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watcher = threading.Thread(target=_kill_when_checkpoint_lands, args=(proc, killed))
    watcher.start()
    # The uninterrupted reference trains here meanwhile.
    train(load_config(None, tiny_overrides(tiny_synth, straight, **EXTRA)), progress=False)
    watcher.join()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed (exit {proc.returncode}): {err.decode()}"

    # Killed inside epoch 2 or 3: the epochs before it are checkpointed and logged. An epoch is logged just
    # before its checkpoint is written, so a kill in between leaves it logged but not checkpointed; the
    # resume then drops that log line (truncate_log) and trains the epoch again.
    done = [r["epoch"] for r in _log(killed)]
    assert done in ([1], [1, 2]), f"the kill landed after the last epoch finished ({done}); raise the epoch length"
    checkpointed = json.loads((find_checkpoint(killed / "last") / "train_state.json").read_text())["epoch"]
    assert 1 <= checkpointed <= len(done) <= checkpointed + 1
    _assert_complete_files(killed)

    assert main(["train", "--resume", "--out", str(killed), "--no-progress"]) == 0
    a, b = _log(straight), _log(killed)
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        assert ra["val"] == rb["val"]
        assert ra["loss_terms"] == rb["loss_terms"]
        assert ra["detection_gmm"] == rb["detection_gmm"]
    assert (straight / "pair_scores.csv").read_bytes() == (killed / "pair_scores.csv").read_bytes()
    for d in ("last", "best"):
        _assert_same_weights(straight / d, killed / d)
    assert not [p for p in killed.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_resume_repairs_what_a_kill_during_a_write_leaves(tiny_synth: Path, tmp_path: Path) -> None:
    """The on-disk state of a kill between atomic_dir's two renames, plus temporary files of
    interrupted atomic writes: resume puts the complete checkpoint back under its name and clears the rest."""
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_synth, run, **{**EXTRA, "train.batch_size": 32, "train.epochs": 2})
    train(load_config(None, overrides), progress=False, stop_after=1)
    (run / "last").rename(run / "last.old")  # killed after `last -> last.old`, before `last.tmp -> last`
    (run / "last.tmp").mkdir()
    (run / "last.tmp" / "model.safetensors").write_bytes(b"half a file")
    (run / ".pair_scores.csv.x1y2.tmp").write_text("pair,clean_prob\n0,0.")
    (run / ".log.jsonl.a9b8.tmp").write_text('{"epoch": 2, "st')

    # Resuming with nothing left to train (stop after epoch 1) shows the repair on its own.
    assert main(["train", "--resume", "--out", str(run), "--stop-after-epoch", "1", "--no-progress"]) == 0
    assert (run / "last" / "train_state.json").is_file()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".old")) == []

    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert [r["epoch"] for r in _log(run)] == [1, 2]
    assert json.loads((run / "last" / "train_state.json").read_text())["epoch"] == 2
