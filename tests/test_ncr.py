"""NCR-style baseline (Eq. 13 in docs/method.md): clean-probability-weighted InfoNCE on the tower features."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_overrides

from disncl.config import load_config
from disncl.losses.infonce import infonce
from disncl.losses.srem import SREMLossConfig, srem_loss
from disncl.train.loop import train
from disncl.train.objective import batch_objective

LOG1PE_M1 = math.log(1 + math.e) - 1


class _Towers:
    """A stand-in model whose towers return fixed features (only ``.h`` is read)."""

    def __init__(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        self.img, self.txt = img, txt

    def encode_image(self, pixels: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(h=self.img)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(h=self.txt)


def _objective(
    method: str, model: _Towers, w: torch.Tensor, tau: float = 1.0, use_split: bool = True
) -> tuple[torch.Tensor, dict]:
    none = torch.empty(0)
    cfg = load_config(None, [f"train.method={method}", f"infonce.tau={tau}"])
    return batch_objective(model, none, none, none, w, cfg, use_split)


def test_ncr_hand_checked_weighted_mean() -> None:
    model = _Towers(torch.eye(2), torch.eye(2))
    loss, logs = _objective("ncr", model, torch.tensor([1.0, 0.5]))
    assert float(loss) == pytest.approx((1.0 + 0.5) * LOG1PE_M1 / 2, rel=1e-6)
    assert logs["clean_prob_mean"] == pytest.approx(0.75)
    # weights are not renormalised: w = 0 everywhere gives 0
    assert float(_objective("ncr", model, torch.zeros(2))[0]) == 0.0


def test_ncr_with_unit_weights_is_infonce_and_has_finite_gradients() -> None:
    torch.manual_seed(0)
    img = torch.randn(3, 5, requires_grad=True)
    txt = torch.randn(3, 5, requires_grad=True)
    loss, _ = _objective("ncr", _Towers(img, txt), torch.ones(3), tau=0.07)
    baseline, _ = _objective("infonce", _Towers(img, txt), torch.ones(3), 0.07)
    assert float(loss.detach()) == pytest.approx(float(baseline.detach()))
    w = torch.tensor([1.0, 0.0, 0.3])
    loss, _ = _objective("ncr", _Towers(img, txt), w, tau=0.07)
    assert float(loss.detach()) == pytest.approx(float(infonce(img, txt, 0.07, weights=w).detach()))
    loss.backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()


def test_batch_objective_dispatches_srem_and_rejects_unknown() -> None:
    torch.manual_seed(1)
    img, txt, w = torch.randn(4, 6), torch.randn(4, 6), torch.ones(4)
    loss, logs = _objective("srem", _Towers(img, txt), w)
    expected, _ = srem_loss(img, txt, w, SREMLossConfig())
    assert float(loss) == pytest.approx(float(expected)) and "selected_frac" in logs
    loss, logs = _objective("srem", _Towers(img, txt), w, use_split=False)  # warm-up: plain InfoNCE
    assert float(loss) == pytest.approx(float(infonce(img, txt, SREMLossConfig().tau))) and "warmup_infonce" in logs
    with pytest.raises(ValueError, match="is not one of"):
        _objective("sgd", _Towers(img, txt), w)


def test_config_for_ncr() -> None:
    cfg = load_config(None, ["train.method=ncr"])
    assert cfg.trained_spaces() == ("full",) and cfg.selection_space() == "full"


def test_train_ncr_end_to_end(tiny_synth: Path, tmp_path: Path) -> None:
    run = train(load_config(None, tiny_overrides(tiny_synth, tmp_path / "ncr", **{"train.method": "ncr"})),
                progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["split_used"] for r in log] == [False, True]
    assert log[0]["loss_terms"]["clean_prob_mean"] == 1.0
    assert log[1]["loss_terms"]["clean_prob_mean"] < 1.0
    for r in log:
        assert sorted(r["val"]) == ["full"]
        assert math.isfinite(r["val"]["full"]["rsum"]) and 0 <= r["val"]["full"]["rsum"] <= 600
