"""SREM baseline (Eq. 14-19 in docs/method.md): hand-checked values, stability, selection, training."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_overrides

from disncl.config import load_config
from disncl.losses.infonce import infonce
from disncl.losses.srem import (
    SREMLossConfig,
    complementary_loss,
    energy,
    log1m_softmax,
    relative_weights,
    select_clean,
    srem_loss,
    swapped_entropy_weights,
)
from disncl.train.loop import train

LOG1PE_M1 = math.log(1 + math.e) - 1  # -log(e / (1 + e)): CE of S = I at tau = 1, and -log(1 - 1/(1 + e))


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def test_energy_hand_checked() -> None:
    sim = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
    row0 = math.log(math.e + math.exp(0.5))
    col0 = math.log(math.e + 1.0)
    assert float(energy(sim, 1.0)[0]) == pytest.approx(-0.5 * (row0 + col0), rel=1e-6)
    # tau scales the energy: E = -tau * lse(S / tau)
    assert float(energy(torch.eye(2), 0.5)[1]) == pytest.approx(-0.5 * math.log(math.exp(2) + 1), rel=1e-6)


def test_swapped_entropy_weights_use_the_other_direction() -> None:
    p = [math.e / (1 + math.e), 1 / (1 + math.e)]
    a_i2t, a_t2i = swapped_entropy_weights(torch.eye(2), 1.0)
    expected = 1 - _entropy(p) / math.log(2)
    assert a_i2t.tolist() == pytest.approx([expected] * 2, rel=1e-5)
    assert a_t2i.tolist() == pytest.approx([expected] * 2, rel=1e-5)

    # image 0 is confident about caption 0 (row 0 peaked) but caption 0 matches every image equally
    # (column 0 uniform): the image->text term of pair 0 gets the column's weight, i.e. 0.
    sim = torch.tensor([[1.0, -1.0, -1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    a_i2t, a_t2i = swapped_entropy_weights(sim, 1.0)
    row0 = torch.softmax(sim[0], dim=0).tolist()
    assert float(a_i2t[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(a_t2i[0]) == pytest.approx(1 - _entropy(row0) / math.log(3), rel=1e-5)


def _rcl(sim: torch.Tensor, tau_c: float) -> torch.Tensor:
    """RCL's complementary contrastive loss written naively: sum_{j != i} -log(1 - p_ij), both ways."""
    eye = torch.eye(sim.shape[0], dtype=torch.bool)

    def one(s: torch.Tensor) -> torch.Tensor:
        return (-torch.log(1 - torch.softmax(s / tau_c, dim=1))).masked_fill(eye, 0).sum(dim=1)

    return 0.5 * (one(sim) + one(sim.T))


def test_complementary_hand_checked_and_equal_to_rcl_without_bias() -> None:
    assert complementary_loss(torch.eye(2), 1.0).tolist() == pytest.approx([LOG1PE_M1] * 2, rel=1e-6)
    torch.manual_seed(0)
    sim = similarity_of(torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64))
    assert torch.allclose(complementary_loss(sim, 0.05, bias=0.0), _rcl(sim, 0.05), rtol=1e-9)


def similarity_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def test_complementary_bias_down_weights_the_most_similar_negative() -> None:
    # B = 2: the only negative is the most similar one; bias = 1 ignores it entirely.
    assert complementary_loss(torch.eye(2), 1.0, bias=1.0).tolist() == pytest.approx([0.0, 0.0], abs=1e-7)
    sim = torch.tensor([[1.0, 0.8, 0.0], [0.2, 1.0, 0.1], [0.3, 0.4, 1.0]])
    bias, tau_c = 0.5, 1.0
    p = torch.softmax(sim / tau_c, dim=1)
    # row 0: negatives 1 (the most similar, weight 1 - bias) and 2 (weight 1 - bias * exp((0 - 0.8) / tau_c))
    row0 = (1 - bias) * -math.log(1 - p[0, 1]) + (1 - bias * math.exp(-0.8)) * -math.log(1 - p[0, 2])
    q = torch.softmax(sim.T / tau_c, dim=1)  # column 0: negatives 1 (0.2) and 2 (0.3, the most similar)
    col0 = (1 - bias * math.exp(-0.1)) * -math.log(1 - q[0, 1]) + (1 - bias) * -math.log(1 - q[0, 2])
    assert float(complementary_loss(sim, tau_c, bias)[0]) == pytest.approx(0.5 * (row0 + col0), rel=1e-5)
    assert (complementary_loss(sim, tau_c, bias) < complementary_loss(sim, tau_c, 0.0)).all()


def test_log1m_softmax_stays_finite_when_saturated() -> None:
    logits = torch.tensor([[0.0, 1000.0], [1000.0, 0.0]], requires_grad=True)
    out = log1m_softmax(logits)
    assert out[0, 1].item() == pytest.approx(-1000.0)
    assert out[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    out.sum().backward()
    assert torch.isfinite(logits.grad).all()
    x = torch.randn(4, 4)
    assert torch.allclose(log1m_softmax(x), torch.log(1 - torch.softmax(x, dim=1)), atol=1e-6)


def test_selection_picks_the_obviously_clean_pairs() -> None:
    img = torch.eye(6)
    txt = torch.eye(6)[[0, 1, 2, 3, 5, 4]]  # pairs 4 and 5 have swapped captions
    sim = similarity_of(img, txt)
    cfg = SREMLossConfig()
    assert select_clean(sim, torch.ones(6), cfg).tolist() == [True] * 4 + [False] * 2
    w = torch.tensor([0.1, 1, 1, 1, 1, 1])
    assert select_clean(sim, w, cfg).tolist() == [False] + [True] * 3 + [False] * 2
    # quantile 0: the batch test is off and only w decides
    assert select_clean(sim, w, SREMLossConfig(quantile=0.0)).tolist() == [False] + [True] * 5


def test_selection_uses_energy() -> None:
    # equal diagonal similarity (the similarity test passes for all); pair 0's image and caption have the
    # weakest evidence in the batch (every other similarity -1), so the highest energy: not selected.
    sim = torch.zeros(4, 4)
    sim.fill_diagonal_(0.5)
    sim[0, 1:] = sim[1:, 0] = -1.0
    e = energy(sim, 0.07)
    assert int(e.argmax()) == 0
    assert select_clean(sim, torch.ones(4), SREMLossConfig()).tolist() == [False, True, True, True]


def test_relative_weights() -> None:
    a = torch.tensor([0.1, 0.3, 0.5])
    assert relative_weights(a, torch.tensor([1.0, 1.0, 0.0])).tolist() == pytest.approx([0.5, 1.5, 2.5], rel=1e-4)
    assert relative_weights(torch.zeros(3), torch.ones(3)).tolist() == pytest.approx([1.0] * 3)
    assert torch.isfinite(relative_weights(a, torch.zeros(3))).all()


def test_srem_loss_hand_checked() -> None:
    img = txt = torch.eye(2)
    cfg = SREMLossConfig(tau=1.0, tau_c=1.0, quantile=0.0, bias=0.0, lambda_c=2.0)
    total, logs = srem_loss(img, txt, torch.ones(2), cfg)
    assert float(total) == pytest.approx(LOG1PE_M1, rel=1e-5)  # equal weights: a~ = 1
    assert logs["selected_frac"] == 1.0 and logs["complementary"] == 0.0
    assert logs["swap_weight_mean"] == pytest.approx(1 - _entropy([math.e / (1 + math.e), 1 / (1 + math.e)])
                                                     / math.log(2), rel=1e-5)
    total, logs = srem_loss(img, txt, torch.tensor([1.0, 0.0]), cfg)
    assert float(total) == pytest.approx(0.5 * LOG1PE_M1 + 2.0 * 0.5 * LOG1PE_M1, rel=1e-5)
    assert logs["selected_frac"] == 0.5


def test_srem_loss_weights_each_direction_by_the_other() -> None:
    torch.manual_seed(3)
    img, txt = torch.randn(5, 8), torch.randn(5, 8)
    cfg = SREMLossConfig(quantile=0.0, tau=0.5)
    sim = similarity_of(img, txt)
    a_i2t, a_t2i = swapped_entropy_weights(sim, 0.5)
    idx = torch.arange(5)
    ce_i2t = F.cross_entropy(sim / 0.5, idx, reduction="none")
    ce_t2i = F.cross_entropy(sim.T / 0.5, idx, reduction="none")
    expected = 0.5 * (a_i2t / a_i2t.mean() * ce_i2t + a_t2i / a_t2i.mean() * ce_t2i).mean()
    assert float(srem_loss(img, txt, torch.ones(5), cfg)[0]) == pytest.approx(float(expected), rel=1e-4)


def test_srem_without_swapped_weights_and_filter_is_infonce() -> None:
    torch.manual_seed(1)
    img, txt = torch.randn(6, 8), torch.randn(6, 8)
    total, _ = srem_loss(img, txt, torch.ones(6), SREMLossConfig(quantile=0.0, swapped_weights=False))
    assert float(total) == pytest.approx(float(infonce(img, txt, 0.07)), rel=1e-6)


def test_srem_gradients_are_finite() -> None:
    torch.manual_seed(2)
    img = torch.randn(8, 16, requires_grad=True)
    txt = torch.randn(8, 16)
    txt[3] = img[5].detach() * 3  # a caption that belongs to another image: saturated complementary term
    txt.requires_grad_(True)
    w = torch.tensor([1, 1, 0, 1, 0.2, 1, 1, 0.9])
    total, logs = srem_loss(img, txt, w, SREMLossConfig())
    total.backward()
    assert torch.isfinite(total) and all(math.isfinite(v) for v in logs.values())
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    assert img.grad.abs().sum() > 0


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError):
        energy(torch.ones(1, 1), 0.1)
    with pytest.raises(ValueError):
        select_clean(torch.eye(3), torch.ones(2), SREMLossConfig())
    with pytest.raises(ValueError):
        complementary_loss(torch.eye(3), 0.05, bias=1.5)


def test_config_reads_srem_section() -> None:
    cfg = load_config(None, ["train.method=srem", "srem.tau_c=0.1", "srem.bias=0"])
    assert cfg.srem == SREMLossConfig(tau_c=0.1, bias=0.0)
    assert cfg.trained_spaces() == ("full",) and cfg.selection_space() == "full"


def test_train_srem_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    run = train(load_config(None, tiny_overrides(tiny_synth, tmp_path / "srem", **{"train.method": "srem"})),
                progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["split_used"] for r in log] == [False, True]
    assert "warmup_infonce" in log[0]["loss_terms"] and 0 <= log[1]["loss_terms"]["selected_frac"] <= 1
    for r in log:
        assert sorted(r["val"]) == ["full"]
        assert math.isfinite(r["val"]["full"]["rsum"]) and 0 <= r["val"]["full"]["rsum"] <= 600
        assert all(math.isfinite(v) for v in r["loss_terms"].values())
