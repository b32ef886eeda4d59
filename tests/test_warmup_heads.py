"""Eq. 2c (``train.warmup_heads: detached``): during DisNCL's warm-up the heads read sg(h), the towers train on
the full-space alignment alone and the two groups' gradients are clipped apart; after warm-up nothing changes.
``train.heads_detached`` (what Eq. 6j's fallback sets) keeps the heads on sg(h) with the split running too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from disncl.config import load_config
from disncl.losses.infonce import infonce
from disncl.models.checkpoint import build_model
from disncl.models.disncl import TOWER_PREFIXES, DisNCLModel
from disncl.models.tokenizer import tokenize
from disncl.train.loop import clip_gradients, epoch_config
from disncl.train.objective import batch_objective

CAPTIONS = ["a red square on grass", "two blue circles", "a green triangle by a tree", "one yellow star"]


def _model_and_batch() -> tuple[DisNCLModel, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model, tok = build_model(tiny_model_config(), CAPTIONS)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    return model, model.preprocess(images), tokenize(tok, CAPTIONS, model.cfg.max_text_len)


def _grads(warmup_heads: str, use_split: bool, *extra: str, heads_scale: float = 1.0,
           ) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and every parameter's gradient of one DisNCL batch (same model, batch and sampling noise), the heads'
    weights multiplied by ``heads_scale``; with the split on, half the pairs are flagged."""
    model, pixels, text = _model_and_batch()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("image_head.", "text_head.")):
                p.mul_(heads_scale)
    cfg = load_config(None, [f"train.warmup_heads={warmup_heads}", *extra])
    torch.manual_seed(1)
    w = torch.tensor([1.0, 0.0, 1.0, 0.2]) if use_split else torch.ones(4)
    loss, _ = batch_objective(model, pixels, text["input_ids"], text["attention_mask"], w, cfg, use_split)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _towers(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if n.startswith(TOWER_PREFIXES)}


def test_detached_warmup_trains_the_towers_on_the_full_space_alignment_alone() -> None:
    _, detached = _grads("detached", use_split=False)
    # With α = α_min = 0 during warm-up, Eq. 2b on the tower features is InfoNCE (Eq. 0) scaled by γ λ_full.
    model, pixels, text = _model_and_batch()
    cfg = load_config(None, [])
    h_v = model.encode_image(pixels).h
    h_t = model.encode_text(text["input_ids"], text["attention_mask"]).h
    (cfg.loss.gamma * cfg.loss.lambda_full * infonce(h_v, h_t, cfg.loss.tau)).backward()
    expected = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    towers = _towers(detached)
    assert towers and set(towers) == set(expected)
    for name, grad in towers.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-7)
    heads = [g for n, g in detached.items() if n.startswith("image_head.") or n.startswith("text_head.")]
    assert heads and all(float(g.abs().sum()) > 0 for g in heads)

    _, joint = _grads("joint", use_split=False)
    assert any(not torch.allclose(joint[n], g) for n, g in towers.items())


def test_detached_warmup_changes_nothing_once_the_split_runs() -> None:
    loss_d, detached = _grads("detached", use_split=True)
    loss_j, joint = _grads("joint", use_split=True)
    assert loss_d == pytest.approx(loss_j, rel=1e-6)
    assert set(detached) == set(joint)
    for name, grad in joint.items():
        torch.testing.assert_close(detached[name], grad)


def test_heads_detached_keeps_the_towers_gradient_free_of_the_heads_with_the_split_on() -> None:
    # With the heads on sg(h) the towers' gradient comes from the full-space terms alone, so it does not depend
    # on the heads' weights; with the joint path it does.
    def towers(heads_scale: float, *extra: str) -> dict[str, torch.Tensor]:
        return _towers(_grads("joint", True, *extra, "loss.flagged_loss=complementary", heads_scale=heads_scale)[1])

    detached = "train.heads_detached=true"
    for name, grad in towers(1.0, detached).items():
        torch.testing.assert_close(towers(0.5, detached)[name], grad)
    joint = towers(1.0)
    assert any(not torch.allclose(towers(0.5)[n], g) for n, g in joint.items())


def test_split_heads_detaches_the_heads_only_once_the_split_runs() -> None:
    # Eq. 2d: the warm-up keeps the joint path; with the split on, the towers' gradient is free of the heads,
    # as with train.heads_detached.
    def towers(use_split: bool, heads_scale: float, *extra: str) -> dict[str, torch.Tensor]:
        return _towers(_grads("joint", use_split, *extra, heads_scale=heads_scale)[1])

    split = "train.split_heads=detached"
    for name, grad in towers(True, 1.0, split).items():
        torch.testing.assert_close(towers(True, 0.5, split)[name], grad)
        torch.testing.assert_close(towers(True, 1.0, "train.heads_detached=true")[name], grad)
    warmup = towers(False, 1.0, split)
    for name, grad in towers(False, 1.0).items():
        torch.testing.assert_close(warmup[name], grad)
    assert any(not torch.allclose(towers(False, 0.5, split)[n], g) for n, g in warmup.items())


def test_heads_grad_scale_interpolates_the_towers_gradient_between_no_share_and_the_joint_path() -> None:
    # Eq. 2e: the forward pass is unchanged, and the towers' gradient is linear in the heads' share.
    runs = [_grads("joint", True, f"train.heads_grad_scale={k}") for k in (0.0, 0.5, 1.0)]
    losses, grads = [loss for loss, _ in runs], [g for _, g in runs]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) == pytest.approx(losses[2], rel=1e-6)
    none, half, joint = (_towers(g) for g in grads)
    torch.testing.assert_close(_towers(_grads("joint", True)[1]), joint)
    assert any(not torch.allclose(none[n], g) for n, g in joint.items())
    for name, grad in half.items():
        torch.testing.assert_close(grad, 0.5 * (none[name] + joint[name]), rtol=1e-3, atol=1e-5)


def test_heads_grad_scale_outside_the_unit_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="heads_grad_scale"):
        load_config(None, ["train.heads_grad_scale=1.5"])


def test_detached_warmup_clips_towers_and_heads_apart() -> None:
    def norms(warmup_heads: str, use_split: bool, heads_detached: bool = False) -> tuple[float, float]:
        model, pixels, text = _model_and_batch()
        cfg = load_config(None, [f"train.warmup_heads={warmup_heads}", "train.grad_clip=0.01",
                                 f"train.heads_detached={heads_detached}"])
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        clip_gradients(model, cfg, use_split)
        group = [p.grad for n, p in model.named_parameters() if n.startswith(TOWER_PREFIXES)]
        rest = [p.grad for n, p in model.named_parameters() if not n.startswith(TOWER_PREFIXES)]
        return tuple(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in gs]))) for gs in (group, rest))

    towers, rest = norms("detached", use_split=False)
    assert towers == pytest.approx(0.01, rel=1e-4) and rest == pytest.approx(0.01, rel=1e-4)
    # One norm over every parameter: together they are clipped to 0.01, so each group is below it.
    towers, rest = norms("detached", use_split=True, heads_detached=True)
    assert towers == pytest.approx(0.01, rel=1e-4) and rest == pytest.approx(0.01, rel=1e-4)
    for warmup_heads, use_split in (("joint", False), ("detached", True)):
        towers, rest = norms(warmup_heads, use_split)
        assert towers**2 + rest**2 == pytest.approx(0.01**2, rel=1e-4)
        assert towers < 0.01 and rest < 0.01


def test_warmup_heads_rejects_unknown_modes() -> None:
    with pytest.raises(ValueError, match="warmup_heads"):
        load_config(None, ["train.warmup_heads=frozen"])


def test_heads_detached_from_detaches_the_heads_from_that_epoch_on() -> None:
    # Eq. 2f: epochs are 1-based in the config, 0-based in the trainer; 0 never detaches.
    cfg = load_config(None, ["train.heads_detached_from=3"])
    assert [epoch_config(cfg, e).train.heads_detached for e in range(4)] == [False, False, True, True]
    assert epoch_config(cfg, 2).train.heads_detached_from == 3
    never = load_config(None, [])
    assert all(epoch_config(never, e) is never for e in range(4))
    with pytest.raises(ValueError, match="heads_detached_from"):
        load_config(None, ["train.heads_detached_from=-1"])
