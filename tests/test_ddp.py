"""``torchrun --nproc_per_node 2 -m disncl train`` on the CPU (gloo): the 2-process run, stopped after epoch 1
and resumed under torchrun, matches a 1-process run with the same global batch; bad set-ups fail clearly."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import tiny_overrides

from disncl.cli import main
from disncl.config import load_config
from disncl.train.distributed import DistContext
from disncl.train.loop import train

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

REPO = Path(__file__).resolve().parents[1]
# Global batch 32 (16 per process). Both epochs are warm-up (w = 1): the GMM split of an untrained tiny
# model sits on unimodal losses and would amplify float rounding into visible differences.
EXTRA = {"train.batch_size": 32, "train.num_threads": 1, "train.epochs": 2, "train.warmup_epochs": 2}
# One image moving in or out of the top K on the 12-image validation split changes i2t recall by 100/12.
ONE_FLIP = 100 / 12 + 1e-6


def _torchrun(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "disncl", "train", *args, "--no-progress"]
    return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_two_processes_resumed_under_torchrun_match_one_process(tiny_synth: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    first = _torchrun(*sum((["--set", o] for o in tiny_overrides(tiny_synth, two, **EXTRA)), []),
                      "--stop-after-epoch", "1")
    threads = torch.get_num_threads()
    try:  # the 1-process reference trains here meanwhile
        train(load_config(None, tiny_overrides(tiny_synth, one, **EXTRA)), progress=False)
    finally:
        torch.set_num_threads(threads)
    assert _finish(first).count("run written to") == 1, "only rank 0 reports"
    assert [r["epoch"] for r in _log(two)] == [1]
    _finish(_torchrun("--out", str(two), "--resume"))

    a, b = _log(one), _log(two)
    assert [r["epoch"] for r in b] == [1, 2], "rank 0 alone writes the log, once per epoch"
    for ra, rb in zip(a, b, strict=True):
        # The same loss on the same global batches; only float rounding of the gradient sum over ranks
        # differs (measured: <= 1.2e-5 relative on every term, 1e-7 on the large ones).
        assert rb["loss_terms"] == pytest.approx(ra["loss_terms"], rel=1e-4, abs=1e-6)
        for space in ra["val"]:  # measured: identical
            assert rb["val"][space]["rsum"] == pytest.approx(ra["val"][space]["rsum"], abs=ONE_FLIP)
        assert rb["detection_gmm"]["auroc"] == pytest.approx(ra["detection_gmm"]["auroc"], abs=0.01)

    with open(two / "pair_scores.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 48 * 5
    assert json.loads((two / "last" / "train_state.json").read_text())["epoch"] == 2
    assert not [p for p in two.rglob("*") if p.name.endswith((".tmp", ".old"))]


@pytest.mark.parametrize(
    ("env", "sets", "message"),
    [
        ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, ["train.batch_size=33"], "multiple of 2"),
        ({"WORLD_SIZE": "2", "RANK": "two"}, [], "RANK='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, [], "RANK=2 is outside 0..1"),
        ({"WORLD_SIZE": "2"}, [], "start multi-process runs with torchrun"),
        ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, ["train.device=cuda:1"], "cuda:LOCAL_RANK"),
    ],
)
def test_bad_multi_process_setups_fail_before_joining_a_group(
    tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    env: dict[str, str], sets: list[str], message: str,
) -> None:
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    overrides = tiny_overrides(tiny_synth, tmp_path / "run") + sets
    assert main(["train", *sum((["--set", o] for o in overrides), []), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("n", "batch", "world"), [(240, 64, 2), (130, 32, 3), (12, 64, 2), (0, 8, 2)])
def test_encoding_shards_are_whole_batches_covering_every_row(n: int, batch: int, world: int) -> None:
    shards = [DistContext(rank=r, world=world).shards(n, batch)[r] for r in range(world)]
    assert shards[0][0] == 0 and shards[-1][1] == n
    for (_, stop), (start, _) in zip(shards, shards[1:], strict=False):
        assert stop == start and (start % batch == 0 or start == n)
    assert sum(stop - start for start, stop in shards) == n
