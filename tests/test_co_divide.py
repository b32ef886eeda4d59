"""Eq. 6n (train.co_divide): two networks, each trained on the split the other's fit gives, checkpointed together."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from safetensors.torch import load_file

from disncl.cli import main
from disncl.config import ConfigError, load_config
from disncl.data.dataset import load_split
from disncl.data.noise import NoiseIndex, make_noisy_pairs
from disncl.eval.encode import encode_split
from disncl.eval.splits import prepare_split
from disncl.models.checkpoint import load_model
from disncl.train.loop import score_embeddings, train
from disncl.train.state import PEER_DIR, load_peer

CO_DIVIDE = {"train.co_divide": "true", "train.epochs": 3}


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _clean_prob(checkpoint: Path) -> np.ndarray:
    return load_file(str(checkpoint / "train_state.safetensors"))["clean_prob"].numpy()


def _own_split(run: Path, network: Path) -> np.ndarray:
    """The split ``network``'s own fit gives on the run's training pairs (Eq. 6, in the run's selection space)."""
    cfg = load_config(run / "config.yaml")
    train_ds = load_split(cfg.data, cfg.data.train_split)
    noise = NoiseIndex.load(run / "noise_index.npy", train_ds.n_images, train_ds.n_captions)
    model, tokenizer = load_model(network, device=torch.device("cpu"))
    data = prepare_split(train_ds, tokenizer, cfg, progress=False)
    emb = encode_split(model, data.images, data.tokens, cfg.train.eval_batch_size, torch.device("cpu"), False)
    return score_embeddings(emb, make_noisy_pairs(train_ds, noise), cfg)[1]


def test_each_network_trains_on_the_split_the_other_fits(tiny_synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "co"
    train(load_config(None, tiny_overrides(tiny_synth, run, **CO_DIVIDE)), progress=False)
    last = run / "last"
    # What the main network trains on next is the peer's own fit, and the other way round.
    np.testing.assert_allclose(_clean_prob(last), _own_split(run, last / PEER_DIR), atol=1e-5)
    np.testing.assert_allclose(_clean_prob(last / PEER_DIR), _own_split(run, last), atol=1e-5)
    assert not np.allclose(_clean_prob(last), _clean_prob(last / PEER_DIR))
    # The peer is a network of its own, never selected or served.
    main_w, peer_w = load_file(str(last / "model.safetensors")), load_file(str(last / PEER_DIR / "model.safetensors"))
    assert any(not torch.equal(main_w[k], peer_w[k]) for k in main_w)
    assert not (run / "best" / PEER_DIR).exists()
    log = _log(run)
    assert [r["split_used"] for r in log] == [False, True, True]
    for r in log:
        assert 0 <= r["peer_val_rsum"] <= 600
        assert 0 <= r["peer_detection_gmm"]["auroc"] <= 1
        assert r["peer_loss_terms"] != r["loss_terms"]


def test_the_main_network_pairs_by_seed_with_a_run_without_co_divide(tiny_synth: Path, tmp_path: Path) -> None:
    """The peer's own initialisation, order and sampling stream leave the main network's warm-up, every epoch of
    it, what it is without the peer."""
    plain, co = tmp_path / "plain", tmp_path / "co"
    warmup = {"train.epochs": 4, "train.warmup_epochs": 3}
    train(load_config(None, tiny_overrides(tiny_synth, plain, **warmup)), progress=False, stop_after=3)
    train(load_config(None, tiny_overrides(tiny_synth, co, **CO_DIVIDE | warmup)), progress=False, stop_after=3)
    a, b = load_file(str(plain / "last" / "model.safetensors")), load_file(str(co / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val"] for r in _log(plain)] == [r["val"] for r in _log(co)]


def test_a_co_divided_run_resumes_exactly(tiny_synth: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(load_config(None, tiny_overrides(tiny_synth, straight, **CO_DIVIDE)), progress=False)
    train(load_config(None, tiny_overrides(tiny_synth, resumed, **CO_DIVIDE)), progress=False, stop_after=2)
    assert main(["train", "--resume", "--out", str(resumed), "--no-progress"]) == 0
    for folder in ("last", f"last/{PEER_DIR}"):
        a = load_file(str(straight / folder / "model.safetensors"))
        b = load_file(str(resumed / folder / "model.safetensors"))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), folder
    for ra, rb in zip(_log(straight), _log(resumed), strict=True):
        assert ra["val"] == rb["val"] and ra["peer_val_rsum"] == rb["peer_val_rsum"]


def test_resuming_a_run_without_the_peer_under_co_divide_says_why(tiny_synth: Path, tmp_path: Path) -> None:
    run = tmp_path / "plain"
    train(load_config(None, tiny_overrides(tiny_synth, run)), progress=False, stop_after=1)
    with pytest.raises(FileNotFoundError, match="written without train.co_divide"):
        load_peer(run / "last", None, None, torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match="written without train.co_divide"):
        train(load_config(None, tiny_overrides(tiny_synth, run, **CO_DIVIDE)), resume=True, progress=False)


@pytest.mark.parametrize(("override", "message"), [
    ("train.method=infonce", "trains without one"),
    ("split.oracle=true", "split.oracle"),
    ("split.ema=0.5", "split.ema"),
    ("split.repair=true", "split.repair"),
    ("model.freeze_towers=true", "model.freeze_towers"),
])
def test_co_divide_refuses_what_it_cannot_be_combined_with(override: str, message: str) -> None:
    load_config(None, ["train.co_divide=true"])
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["train.co_divide=true", override])
