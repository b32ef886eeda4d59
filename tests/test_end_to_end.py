"""synth → train a few steps → checkpoint → resume → eval, through the real CLI code paths."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides

from disncl.cli import main
from disncl.config import load_config
from disncl.train.evaluate import evaluate_run
from disncl.train.loop import train


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["disncl", "infonce"])
def test_train_writes_checkpoints_scores_and_log(tiny_synth: Path, tmp_path: Path, method: str) -> None:
    run = tmp_path / method
    assert main(["train", *sum((["--set", o] for o in tiny_overrides(tiny_synth, run)), []),
                 "--method", method, "--no-progress"]) == 0
    log = _log(run)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[0]["split_used"] is False
    assert log[1]["split_used"] is (method == "disncl")
    assert log[0]["flagged_share"] is None
    assert (log[1]["flagged_share"] is None) is (method != "disncl")
    if method == "disncl":
        assert 0.0 <= log[1]["flagged_share"] <= 1.0
    for r in log:
        assert sorted(r["val"]) == (["full", "mii"] if method == "disncl" else ["full"])
        for space in r["val"]:
            assert 0 <= r["val"][space]["rsum"] <= 600
            assert "semantic_rsum" in r["val"][space]
        assert 0 <= r["detection_gmm"]["auroc"] <= 1
    for d in ("last", "best"):
        assert (run / d / "model.safetensors").is_file()
    assert (run / "noise_index.npy").is_file()
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.pt"))

    with open(run / "pair_scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 48 * 5
    noise = np.load(run / "noise_index.npy")
    moved = {i for i, a in enumerate(noise) if a != i}
    assert len(moved) == 24
    for r in rows:
        assert 0.0 <= float(r["clean_prob"]) <= 1.0
        assert int(r["image_rank"]) >= 1
        owner = int(r["caption_index"]) // 5
        assert int(r["is_clean"]) == int(owner not in moved)


def test_resume_continues_exactly(tiny_synth: Path, tmp_path: Path) -> None:
    """Training 2 epochs straight equals training 1 epoch, stopping, and resuming to 2."""
    straight = tmp_path / "straight"
    train(load_config(None, tiny_overrides(tiny_synth, straight)), progress=False)

    split = tmp_path / "split"
    train(load_config(None, tiny_overrides(tiny_synth, split)), progress=False, stop_after=1)
    assert [r["epoch"] for r in _log(split)] == [1]
    with pytest.raises(FileExistsError):
        train(load_config(None, tiny_overrides(tiny_synth, split)), progress=False)
    assert main(["train", "--resume", "--out", str(split), "--no-progress"]) == 0

    a, b = _log(straight), _log(split)
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        assert ra["val"] == rb["val"]
        assert ra["loss_terms"] == pytest.approx(rb["loss_terms"], rel=1e-6)
    assert (straight / "pair_scores.csv").read_bytes() == (split / "pair_scores.csv").read_bytes()


def test_gated_warmup_decides_once_after_warmup_whether_the_run_uses_the_split(
    tiny_synth: Path, tmp_path: Path
) -> None:
    from disncl.train.loop import split_active, split_start
    from disncl.train.noise_split import bimodality
    from disncl.train.state import NO_SPLIT

    cfg = load_config(None, ["train.warmup=gated", "train.warmup_epochs=2"])
    bimodal = bimodality(np.r_[np.zeros(50), np.ones(50)] + np.random.default_rng(0).normal(0, 0.01, 100))
    flat = bimodality(np.random.default_rng(1).normal(0, 1, 100))
    assert split_start(cfg, 1, bimodal) == -1  # not before warmup_epochs
    assert split_start(cfg, 2, bimodal) == 2 and split_start(cfg, 2, flat) == NO_SPLIT
    assert not any(split_active(cfg, e, NO_SPLIT) for e in range(100))
    fixed = load_config(None, ["train.warmup=fixed", "train.warmup_epochs=2"])
    assert split_start(fixed, 2, bimodal) == -1  # the fixed warm-up decides nothing

    # The tiny benchmark without noise has unimodal losses after its warm-up epoch (D ≈ 1.0), so the gate
    # keeps the split off, and a run resumed after the decision keeps it.
    extra = {"train.warmup": "gated", "train.warmup_epochs": 1, "train.epochs": 3, "data.noise_rate": 0.0,
             "train.shut_gate": "no_split"}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(load_config(None, tiny_overrides(tiny_synth, straight, **extra)), progress=False)
    log = _log(straight)
    assert log[0]["loss_bimodality"] <= 2.0
    assert [r["split_used"] for r in log] == [False, False, False]
    train(load_config(None, tiny_overrides(tiny_synth, resumed, **extra)), progress=False, stop_after=2)
    assert main(["train", "--resume", "--out", str(resumed), "--no-progress"]) == 0
    assert [r["split_used"] for r in _log(resumed)] == [r["split_used"] for r in log]


def _fallback_against_fixed(tiny_synth: Path, tmp_path: Path, space: str, **fixed_extra: object) -> tuple[dict, dict]:
    """On clean data (the gate stays shut), train the shut gate's fallback (Eq. 6g alone, in ``space``), the
    fixed warm-up run with the complementary loss it should equal, and the fallback resumed after epoch 2;
    assert that all three train alike. Returns the fallback's overrides and the runs' directories."""
    base = {"train.warmup_epochs": 1, "train.epochs": 3, "data.noise_rate": 0.0}
    # The joint gradient path after the fallback starts, as the fixed warm-up run trains (Eq. 6j off).
    gated = {**base, "train.warmup": "gated", "train.shut_gate": "complementary", "train.shut_gate_unfit": 0,
             "train.shut_gate_space": space, "train.shut_gate_heads": "joint"}
    fixed = {**base, "train.warmup": "fixed", "loss.flagged_loss": "complementary", **fixed_extra}
    runs = {name: tmp_path / name for name in ("gated", "fixed", "resumed")}
    train(load_config(None, tiny_overrides(tiny_synth, runs["gated"], **gated)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, runs["fixed"], **fixed)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, runs["resumed"], **gated)), progress=False, stop_after=2)
    assert main(["train", "--resume", "--out", str(runs["resumed"]), "--no-progress"]) == 0
    logs = {name: _log(run) for name, run in runs.items()}
    assert logs["gated"][0]["loss_bimodality"] <= 2.0  # the gate is shut on clean data
    assert [r["split_used"] for r in logs["gated"]] == [False, True, True]
    for other in ("fixed", "resumed"):
        assert [r["val"] for r in logs[other]] == [r["val"] for r in logs["gated"]], other
    return gated, runs


def test_a_shut_gate_can_start_the_split_on_the_complementary_loss_and_a_resume_keeps_it(
    tiny_synth: Path, tmp_path: Path
) -> None:
    """Eq. 6g: where the gate stays shut, train.shut_gate=complementary starts the split anyway with the
    flagged pairs on the complementary loss: the very run a fixed warm-up with that loss makes."""
    gated, runs = _fallback_against_fixed(tiny_synth, tmp_path, "selection")
    logs = _log(runs["gated"])
    # The flagged pairs' loss changed what was learnt: a shut gate without the fallback trains otherwise.
    plain = tmp_path / "plain"
    train(load_config(None, tiny_overrides(tiny_synth, plain, **{**gated, "train.shut_gate": "no_split"})),
          progress=False)
    assert _log(plain)[-1]["val"] != logs[-1]["val"]
    # Eq. 6h: where the warm-up fits the pairs better than train.shut_gate_unfit asks, the fallback stays off.
    fit = tmp_path / "fit"
    unfit = logs[0]["loss_vs_chance"]
    train(load_config(None, tiny_overrides(tiny_synth, fit, **{**gated, "train.shut_gate_unfit": unfit + 0.01})),
          progress=False)
    assert [r["split_used"] for r in _log(fit)] == [False] * 3
    assert [r["val"] for r in _log(fit)] == [r["val"] for r in _log(plain)]


def test_a_fallback_in_the_full_space_trains_as_a_full_space_split_and_is_evaluated_there(
    tiny_synth: Path, tmp_path: Path
) -> None:
    """Eq. 6i: train.shut_gate_space=full moves the fallback's split and model selection to the full space
    when it starts. Its split is fitted on the same embeddings as a fixed warm-up's full-space split, so the
    run trains exactly as that one; config.yaml, evaluation and a resume then read the full space."""
    gated, runs = _fallback_against_fixed(tiny_synth, tmp_path, "full", **{"train.select_on": "full"})
    assert load_config(runs["gated"] / "config.yaml").train.select_on == "full"
    assert evaluate_run(runs["gated"], progress=False)["selection_space"] == "full"
    # Without the fallback nothing moves: the run keeps the method's own space.
    plain = tmp_path / "plain"
    train(load_config(None, tiny_overrides(tiny_synth, plain, **{**gated, "train.shut_gate": "no_split"})),
          progress=False)
    assert load_config(plain / "config.yaml").train.select_on == "auto"
    assert evaluate_run(plain, progress=False)["selection_space"] == "mii"


def test_a_fallback_with_detached_heads_trains_its_towers_apart_from_then_and_a_resume_keeps_it(
    tiny_synth: Path, tmp_path: Path
) -> None:
    """Eq. 6j (the default): train.shut_gate_heads=detached puts the heads on sg(h) when the fallback starts:
    the warm-up is the plain fallback's, the epochs after it are not, config.yaml records it, and a resume after
    the fallback started trains on exactly as the uninterrupted run."""
    gated = {"train.warmup_epochs": 1, "train.epochs": 3, "data.noise_rate": 0.0, "train.warmup": "gated",
             "train.shut_gate": "complementary", "train.shut_gate_unfit": 0, "train.shut_gate_space": "full",
             "train.shut_gate_heads": "joint"}
    runs = {name: tmp_path / name for name in ("plain", "detached", "resumed")}
    detached = {**gated, "train.shut_gate_heads": "detached"}
    train(load_config(None, tiny_overrides(tiny_synth, runs["plain"], **gated)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, runs["detached"], **detached)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, runs["resumed"], **detached)), progress=False, stop_after=2)
    assert main(["train", "--resume", "--out", str(runs["resumed"]), "--no-progress"]) == 0
    logs = {name: _log(run) for name, run in runs.items()}
    assert [r["split_used"] for r in logs["detached"]] == [False, True, True]
    assert logs["detached"][0]["val"] == logs["plain"][0]["val"]
    assert logs["detached"][1]["val"] != logs["plain"][1]["val"]
    assert [r["val"] for r in logs["resumed"]] == [r["val"] for r in logs["detached"]]
    assert load_config(runs["detached"] / "config.yaml").train.heads_detached
    assert not load_config(runs["plain"] / "config.yaml").train.heads_detached


def test_resume_without_checkpoint_fails_clearly(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "config file" in capsys.readouterr().err


def test_eval_reports_recall_and_detection(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    train(load_config(None, tiny_overrides(tiny_synth, run, **{"train.epochs": 1})), progress=False)
    result = evaluate_run(run, "best", progress=False)
    for space in ("mii", "full"):
        rec = result["retrieval"][space]
        assert rec["rsum"] == pytest.approx(sum(rec[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10",
                                                                   "t2i_r1", "t2i_r5", "t2i_r10")))
        assert rec["semantic_rsum"] >= rec["rsum"] - 1e-9
    assert 0 <= result["detection"]["gmm"]["auroc"] <= 1
    assert (run / "eval_test_best.json").is_file()
    assert main(["eval", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| mii |" in out and "| full |" in out and "noise detection" in out


def test_adaptive_warmup_starts_the_split_once_losses_are_bimodal_and_survives_a_resume(
    tiny_synth: Path, tmp_path: Path
) -> None:
    from disncl.train.loop import split_active, warmup_over
    from disncl.train.noise_split import bimodality

    cfg = load_config(None, ["train.warmup=adaptive", "train.warmup_epochs=1", "train.warmup_max_epochs=3"])
    bimodal = bimodality(np.r_[np.zeros(50), np.ones(50)] + np.random.default_rng(0).normal(0, 0.01, 100))
    flat = bimodality(np.random.default_rng(1).normal(0, 1, 100))
    assert not warmup_over(cfg, 0, bimodal)  # never before warmup_epochs
    assert warmup_over(cfg, 1, bimodal) and not warmup_over(cfg, 1, flat)
    assert warmup_over(cfg, 3, flat)  # the cap
    assert [split_active(cfg, e, split_from=2) for e in range(4)] == [False, False, True, True]
    assert not split_active(cfg, 5, split_from=-1)
    assert not split_active(load_config(None, ["train.method=infonce"]), 5, split_from=0)

    extra = {"train.warmup": "adaptive", "train.warmup_epochs": 1, "train.warmup_max_epochs": 2, "train.epochs": 3}
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(load_config(None, tiny_overrides(tiny_synth, straight, **extra)), progress=False)
    log = _log(straight)
    started = [r["split_used"] for r in log]
    # The split starts after epoch 1 (bimodal) or 2 (the cap) and, once started, stays on.
    assert started in ([False, True, True], [False, False, True])
    assert all(r["loss_bimodality"] >= 0 for r in log)
    assert started == [e >= 1 and (log[0]["loss_bimodality"] > 2.0 or e >= 2) for e in range(3)]
    train(load_config(None, tiny_overrides(tiny_synth, split, **extra)), progress=False, stop_after=2)
    assert main(["train", "--resume", "--out", str(split), "--no-progress"]) == 0
    assert [r["split_used"] for r in _log(split)] == started
    assert (straight / "pair_scores.csv").read_bytes() == (split / "pair_scores.csv").read_bytes()
