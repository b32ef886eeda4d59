"""Tests for disncl.losses (Eq. 0-9 in docs/method.md)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from disncl.losses.config import DisNCLLossConfig
from disncl.losses.disncl import (
    CLUB_PAIRS,
    DisNCLInputs,
    alpha_from_clean_prob,
    club_bound,
    cross_covariance_penalty,
    disncl_loss,
    gaussian_kl,
    gaussian_nll,
    hsic_penalty,
    reconstruction_loss,
    soft_targets,
)
from disncl.losses.infonce import infonce, per_pair_infonce, similarity, soft_infonce


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """Run this module in float64 (restored afterwards so other test modules are unaffected)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


Matrix = list[list[float]]


def _loop_soft_ce(sim: Matrix, tau: float, t1: Matrix, t2: Matrix) -> list[float]:
    """Per-pair 1/2 (CE row + CE column) with explicit loops and math."""
    b = len(sim)
    out = []
    for i in range(b):
        row = [sim[i][j] / tau for j in range(b)]
        col = [sim[j][i] / tau for j in range(b)]
        lse_r = math.log(sum(math.exp(v) for v in row))
        lse_c = math.log(sum(math.exp(v) for v in col))
        ce_r = -sum(t1[i][j] * (row[j] - lse_r) for j in range(b))
        ce_c = -sum(t2[i][j] * (col[j] - lse_c) for j in range(b))
        out.append(0.5 * (ce_r + ce_c))
    return out


def _eye(b: int) -> list[list[float]]:
    return [[1.0 if i == j else 0.0 for j in range(b)] for i in range(b)]


# ---------------------------------------------------------------- Eq. 0: similarity / InfoNCE


def test_similarity_is_cosine() -> None:
    a = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [5.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[0.0, 1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1 / math.sqrt(2), 1.0]])
    torch.testing.assert_close(similarity(a, b), expected)


def test_infonce_hand_2x2() -> None:
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    # S = I, tau = 1: each CE = -log(e / (e + 1)) = log(1 + 1/e)
    assert infonce(img, txt, tau=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_per_pair_infonce_matches_loops_3x3() -> None:
    sim = [[0.9, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.7, 0.3]]
    got = per_pair_infonce(torch.tensor(sim), tau=0.2)
    expected = _loop_soft_ce(sim, 0.2, _eye(3), _eye(3))
    torch.testing.assert_close(got, torch.tensor(expected))


def test_infonce_scale_invariant_and_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    base = infonce(img, txt, 0.07)
    torch.testing.assert_close(infonce(3.0 * img, 0.25 * txt, 0.07), base)
    torch.testing.assert_close(infonce(txt, img, 0.07), base)


def test_infonce_weights() -> None:
    g = torch.Generator().manual_seed(1)
    img, txt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    per = per_pair_infonce(similarity(img, txt), 0.1)
    torch.testing.assert_close(infonce(img, txt, 0.1, torch.ones(4)), infonce(img, txt, 0.1))
    w = torch.tensor([1.0, 0.0, 0.5, 0.0])
    torch.testing.assert_close(infonce(img, txt, 0.1, w), (per[0] + 0.5 * per[2]) / 4)
    with pytest.raises(ValueError):
        infonce(img, txt, 0.1, torch.ones(3))


# ---------------------------------------------------------------- Eq. 3-5: soft targets


def test_soft_infonce_matches_loops_3x3() -> None:
    sim = [[0.9, 0.1, -0.3], [0.2, 0.5, 0.4], [-0.1, 0.7, 0.3]]
    t1 = [[0.7, 0.2, 0.1], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]]
    t2 = [[0.5, 0.5, 0.0], [0.1, 0.8, 0.1], [0.0, 0.0, 1.0]]
    got = soft_infonce(torch.tensor(sim), 0.5, torch.tensor(t1), torch.tensor(t2))
    assert got.item() == pytest.approx(sum(_loop_soft_ce(sim, 0.5, t1, t2)) / 3)


def test_soft_infonce_alpha_zero_equals_infonce() -> None:
    g = torch.Generator().manual_seed(2)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    sim = similarity(img, txt)
    t1, t2 = soft_targets(sim, torch.zeros(5), 0.05)
    torch.testing.assert_close(soft_infonce(sim, 0.07, t1, t2), infonce(img, txt, 0.07))


def test_soft_targets_properties() -> None:
    g = torch.Generator().manual_seed(3)
    sim = torch.randn(6, 6, generator=g, requires_grad=True)
    alpha = torch.rand(6, generator=g)
    t1, t2 = soft_targets(sim, alpha, 0.05)
    assert not t1.requires_grad and not t2.requires_grad
    torch.testing.assert_close(t1.sum(1), torch.ones(6))
    torch.testing.assert_close(t2.sum(1), torch.ones(6))
    assert (t1 >= 0).all() and (t2 >= 0).all()
    e1, e2 = soft_targets(sim, torch.zeros(6), 0.05)
    torch.testing.assert_close(e1, torch.eye(6))
    torch.testing.assert_close(e2, torch.eye(6))
    f1, f2 = soft_targets(sim, torch.ones(6), 0.05)
    torch.testing.assert_close(f1, torch.softmax(sim.detach() / 0.05, 1))
    torch.testing.assert_close(f2, torch.softmax(sim.detach().T / 0.05, 1))


def test_soft_targets_hand_2x2() -> None:
    sim = torch.tensor([[1.0, 0.0], [0.5, 2.0]])
    t1, t2 = soft_targets(sim, torch.tensor([0.5, 0.0]), 1.0)
    p = math.exp(1) / (math.exp(1) + 1)
    torch.testing.assert_close(t1, torch.tensor([[0.5 + 0.5 * p, 0.5 * (1 - p)], [0.0, 1.0]]))
    q = math.exp(1) / (math.exp(1) + math.exp(0.5))  # column 0 of S: (1.0, 0.5)
    torch.testing.assert_close(t2, torch.tensor([[0.5 + 0.5 * q, 0.5 * (1 - q)], [0.0, 1.0]]))


def test_alpha_from_clean_prob() -> None:
    a = alpha_from_clean_prob(torch.tensor([1.0, 0.0, 0.5, 1.5, -1.0]), 0.1, 1.0)
    torch.testing.assert_close(a, torch.tensor([0.1, 1.0, 0.55, 0.1, 1.0]))


# ---------------------------------------------------------------- Eq. 2a, 7a: KL and reconstruction


def test_gaussian_kl_values() -> None:
    assert gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    mu, lv = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, math.log(2.0)]])
    assert gaussian_kl(mu, lv).item() == pytest.approx(0.5 * (6.0 - math.log(2.0)))
    g = torch.Generator().manual_seed(4)
    mu, lv = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ref = kl_divergence(Normal(mu, (0.5 * lv).exp()), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(gaussian_kl(mu, lv), ref)


def test_reconstruction_loss() -> None:
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    r = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    assert reconstruction_loss(h, r, "mse").item() == pytest.approx((2.0 + 4.0) / 2)
    assert reconstruction_loss(h, r, "cosine").item() == pytest.approx((1.0 + 0.0) / 2)
    assert reconstruction_loss(h, h, "mse").item() == 0.0
    with pytest.raises(ValueError):
        reconstruction_loss(h, r, "l1")


# ---------------------------------------------------------------- Eq. 8-9: CLUB, NLL, cross-covariance


def test_club_matches_double_loop() -> None:
    g = torch.Generator().manual_seed(5)
    mu, lv, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    dist = [Normal(mu[i], (0.5 * lv[i]).exp()) for i in range(4)]
    pos = sum(dist[i].log_prob(b[i]).sum() for i in range(4)) / 4
    neg = sum(dist[i].log_prob(b[j]).sum() for i in range(4) for j in range(4)) / 16
    assert club_bound(mu, lv, b).item() == pytest.approx((pos - neg).item())


def test_club_zero_when_uninformative_positive_when_predictive() -> None:
    g = torch.Generator().manual_seed(6)
    b = torch.randn(64, 5, generator=g)
    const = torch.full((64, 5), 0.3)
    assert abs(club_bound(const, torch.zeros(64, 5), b).item()) < 1e-12
    assert club_bound(b, torch.zeros(64, 5), b).item() > 1.0


def test_gaussian_nll_matches_normal_and_detaches_b() -> None:
    g = torch.Generator().manual_seed(7)
    mu = torch.randn(5, 3, generator=g, requires_grad=True)
    lv = torch.randn(5, 3, generator=g)
    b = torch.randn(5, 3, generator=g, requires_grad=True)
    nll = gaussian_nll(mu, lv, b)
    ref = -Normal(mu, (0.5 * lv).exp()).log_prob(b).sum(1).mean()
    torch.testing.assert_close(nll, ref)
    nll.backward()
    assert b.grad is None and mu.grad is not None


def test_cross_covariance_penalty() -> None:
    a = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    b = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    assert cross_covariance_penalty(a, b).item() == 0.0
    pair = torch.tensor([[1.0], [-1.0]])
    assert cross_covariance_penalty(pair, pair).item() == 4.0  # Cov = (1 + 1) / (2 - 1) = 2
    g = torch.Generator().manual_seed(8)
    x = torch.randn(32, 4, generator=g)
    assert cross_covariance_penalty(x, x).item() > 1.0


@pytest.mark.parametrize("scale", [1.0, 10.0, 200.0])
def test_gradients_finite_with_extreme_logvar(scale: float) -> None:
    g = torch.Generator().manual_seed(9)
    mu = torch.randn(8, 4, generator=g, requires_grad=True)
    lv = (scale * torch.randn(8, 4, generator=g)).requires_grad_()
    b = torch.randn(8, 4, generator=g, requires_grad=True)
    loss = gaussian_kl(mu, lv) + club_bound(mu, lv, b) + gaussian_nll(mu, lv, b)
    loss = loss + cross_covariance_penalty(mu, b) + infonce(mu, b, 0.07)
    loss.backward()
    assert torch.isfinite(loss)
    for t in (mu, lv, b):
        assert torch.isfinite(t.grad).all()


# ---------------------------------------------------------------- Eq. 1-8: full objective


def _inputs(seed: int = 0, b: int = 6, club: bool = True) -> DisNCLInputs:
    dz, du, e = 4, 3, 5
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_()

    x = DisNCLInputs(
        z_v=r(b, dz), z_t=r(b, dz), mu_zv=r(b, dz), logvar_zv=r(b, dz), mu_zt=r(b, dz), logvar_zt=r(b, dz),
        mu_uv=r(b, du), logvar_uv=r(b, du), mu_ut=r(b, du), logvar_ut=r(b, du), u_v=r(b, du), u_t=r(b, du),
        h_v=r(b, e), h_t=r(b, e), recon_v=r(b, e), recon_t=r(b, e),
        clean_prob=torch.rand(b, generator=g),
    )
    if club:
        targets = {"uv_zt": x.z_t, "ut_zv": x.z_v, "zv_uv": x.u_v, "zt_ut": x.u_t}
        x.club = {n: (r(*t.shape), r(*t.shape), t) for n, t in targets.items()}
    return x


@pytest.mark.parametrize("estimator", ["club", "xcov", "hsic"])
def test_total_recomposes_from_logs(estimator: str) -> None:
    cfg = DisNCLLossConfig(mi_estimator=estimator)
    x = _inputs(club=estimator == "club")
    total, logs = disncl_loss(x, cfg)
    assert logs["total"] == pytest.approx(total.item())
    l_s = logs["align"] + cfg.beta * logs["kl_mii"] + cfg.lambda_full * logs["align_full"]
    assert logs["L_S"] == pytest.approx(l_s)
    l_x = cfg.lambda_rec * logs["recon"] + cfg.lambda_mi * logs["mi"] + cfg.beta_mei * logs["kl_mei"]
    assert logs["L_X"] == pytest.approx(l_x)
    assert total.item() == pytest.approx(cfg.gamma * logs["L_S"] + (1 - cfg.gamma) * logs["L_X"])
    assert logs["mi"] == pytest.approx(sum(logs[f"mi_{n}"] for n in CLUB_PAIRS))
    total.backward()
    for f in dataclasses.fields(x):
        v = getattr(x, f.name)
        if isinstance(v, torch.Tensor) and v.grad is not None:
            assert torch.isfinite(v.grad).all()
    assert x.z_v.grad is not None and x.recon_v.grad is not None and x.logvar_ut.grad is not None


def test_defaults() -> None:
    cfg = DisNCLLossConfig()
    assert (cfg.tau, cfg.tau_target, cfg.gamma, cfg.beta, cfg.beta_mei) == (0.07, 0.05, 0.8, 1e-3, 1e-3)
    assert (cfg.lambda_rec, cfg.lambda_mi, cfg.alpha_min, cfg.alpha_max) == (1.0, 1.0, 0.0, 1.0)  # §9.8
    assert cfg.soft_targets and not cfg.weight_by_clean_prob and cfg.use_kl and cfg.use_mi and cfg.use_recon
    assert (cfg.recon, cfg.mi_estimator, cfg.lambda_full) == ("mse", "hsic", 1.0)  # §9.8
    # Chosen on validation (docs/method.md §9.4): Eq. 4b with the hard split at θ = 0.9, no batch gate.
    assert (cfg.target_exclude_self, cfg.alpha_hard_threshold, cfg.confident_quantile) == (True, 0.9, 0.0)


def test_xcov_ignores_club_and_uses_codes() -> None:
    x = _inputs(club=False)
    _, logs = disncl_loss(x, DisNCLLossConfig(mi_estimator="xcov"))
    unit = torch.nn.functional.normalize
    assert logs["mi_uv_zt"] == pytest.approx(cross_covariance_penalty(unit(x.u_v), unit(x.z_t)).item())
    assert logs["mi_zt_ut"] == pytest.approx(cross_covariance_penalty(unit(x.z_t), unit(x.u_t)).item())
    x.u_v.data.mul_(7.0)
    _, scaled = disncl_loss(x, DisNCLLossConfig(mi_estimator="xcov"))
    assert scaled["mi_uv_zt"] == pytest.approx(logs["mi_uv_zt"], rel=1e-5)
    with pytest.raises(KeyError):
        disncl_loss(x, DisNCLLossConfig(mi_estimator="club"))


def test_hsic_sees_the_non_linear_dependence_the_cross_covariance_misses() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 4, generator=g)
    independent = torch.randn(512, 4, generator=g)
    # |a| is a function of a, yet linearly uncorrelated with it (a is symmetric about 0).
    folded = a.abs()
    assert hsic_penalty(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert hsic_penalty(a, independent).item() < 0.05
    assert hsic_penalty(a, folded).item() > 5 * hsic_penalty(a, independent).item()
    # The cross-covariance sees |a| no more than an independent code: 1 % of what it sees of a itself.
    assert cross_covariance_penalty(a, folded).item() < 0.01 * cross_covariance_penalty(a, a).item()
    # Invariant to a common scale (the bandwidth follows the codes) and differentiable.
    assert hsic_penalty(3 * a, folded).item() == pytest.approx(hsic_penalty(a, folded).item(), rel=1e-4)
    a.requires_grad_(True)
    hsic_penalty(a, folded).backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 3 rows"):
        hsic_penalty(a[:2], folded[:2])


@pytest.mark.parametrize(
    ("change", "zeroed"),
    [
        ({"use_kl": False}, ("kl_mii", "kl_mei")),
        ({"use_mi": False}, ("mi",)),
        ({"use_recon": False}, ("recon",)),
    ],
)
def test_switching_terms_off_removes_them(change: dict, zeroed: tuple[str, ...]) -> None:
    x = _inputs()
    cfg = DisNCLLossConfig()
    full, on = disncl_loss(x, cfg)
    part, off = disncl_loss(x, dataclasses.replace(cfg, **change))
    for name in zeroed:
        assert off[name] == 0.0 and on[name] != 0.0
    weights = {"kl_mii": cfg.gamma * cfg.beta, "kl_mei": (1 - cfg.gamma) * cfg.beta_mei,
               "mi": (1 - cfg.gamma) * cfg.lambda_mi, "recon": (1 - cfg.gamma) * cfg.lambda_rec}
    removed = sum(weights[n] * on[n] for n in zeroed)
    assert full.item() - part.item() == pytest.approx(removed)
    assert off["align"] == pytest.approx(on["align"])


@pytest.mark.parametrize(("weight", "term"), [("beta", "kl_mii"), ("beta_mei", "kl_mei"),
                                              ("lambda_mi", "mi"), ("lambda_rec", "recon")])
def test_zero_weight_keeps_log_but_drops_term(weight: str, term: str) -> None:
    x = _inputs()
    cfg = DisNCLLossConfig()
    full, on = disncl_loss(x, cfg)
    part, off = disncl_loss(x, dataclasses.replace(cfg, **{weight: 0.0}))
    assert off[term] == pytest.approx(on[term])
    share = cfg.gamma if weight == "beta" else 1 - cfg.gamma
    assert full.item() - part.item() == pytest.approx(share * getattr(cfg, weight) * on[term])


def test_gamma_extremes() -> None:
    x = _inputs()
    t1, logs1 = disncl_loss(x, DisNCLLossConfig(gamma=1.0))
    assert t1.item() == pytest.approx(logs1["L_S"])
    t0, logs0 = disncl_loss(x, DisNCLLossConfig(gamma=0.0))
    assert t0.item() == pytest.approx(logs0["L_X"])


def test_hard_targets_and_clean_weighting() -> None:
    x = _inputs()
    hard = DisNCLLossConfig(soft_targets=False)
    _, logs = disncl_loss(x, hard)
    assert logs["align"] == pytest.approx(infonce(x.z_v, x.z_t, hard.tau).item())
    x.clean_prob = torch.ones(6)
    _, soft_clean = disncl_loss(x, DisNCLLossConfig(alpha_min=0.0))
    assert soft_clean["align"] == pytest.approx(logs["align"])
    _, weighted = disncl_loss(x, DisNCLLossConfig(weight_by_clean_prob=True))
    _, unweighted = disncl_loss(x, DisNCLLossConfig())
    assert weighted["align"] == pytest.approx(unweighted["align"])
    x.clean_prob = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    _, half = disncl_loss(x, dataclasses.replace(hard, weight_by_clean_prob=True))
    per = per_pair_infonce(similarity(x.z_v, x.z_t), hard.tau)
    assert half["align"] == pytest.approx(per[:3].sum().item() / 6)


def test_noisy_pairs_get_softer_targets() -> None:
    x = _inputs()
    x.clean_prob = torch.zeros(6)
    _, noisy = disncl_loss(x, DisNCLLossConfig())
    assert noisy["alpha_mean"] == pytest.approx(1.0)
    x.clean_prob = None
    _, warm = disncl_loss(x, DisNCLLossConfig())
    assert warm["alpha_mean"] == pytest.approx(0.0) and warm["clean_prob_mean"] == 1.0  # α_min = 0 (§9.8)
    _, tenth = disncl_loss(x, DisNCLLossConfig(alpha_min=0.1))
    assert tenth["alpha_mean"] == pytest.approx(0.1)


def test_float32_inputs() -> None:
    x = _inputs()
    for f in dataclasses.fields(x):
        v = getattr(x, f.name)
        if isinstance(v, torch.Tensor):
            setattr(x, f.name, v.detach().float().requires_grad_(v.requires_grad))
    x.club = {n: tuple(t.detach().float() for t in v) for n, v in x.club.items()}
    total, _ = disncl_loss(x, DisNCLLossConfig())
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert torch.isfinite(x.z_v.grad).all()


def test_negative_club_estimate_is_clamped_to_zero() -> None:
    """MI >= 0: a mis-fitted q giving a negative CLUB value must not reward the encoders (Eq. 8c)."""
    x = _inputs(club=True)
    b = x.club["uv_zt"][2]
    mirrored = 2 * b.detach().mean(0, keepdim=True) - b.detach()
    anti = (mirrored, torch.zeros_like(b), b)
    assert club_bound(*anti).item() < 0
    x.club["uv_zt"] = anti
    _, logs = disncl_loss(x, DisNCLLossConfig(mi_estimator="club"))
    assert logs["mi_uv_zt"] == 0.0


def test_soft_targets_can_leave_the_annotated_partner_out():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.3], [0.0, 0.4, 0.7]])
    t_i2t, t_t2i = soft_targets(sim, torch.tensor([1.0, 0.0, 0.5]), 0.1, exclude_self=True)
    # alpha = 1: all mass on the other items, none on the partner; alpha = 0: the identity row.
    assert t_i2t[0, 0] == 0.0 and torch.allclose(t_i2t[0, 1:], torch.softmax(sim[0, 1:] / 0.1, 0))
    assert torch.equal(t_i2t[1], torch.tensor([0.0, 1.0, 0.0]))
    assert t_i2t[2, 2] == pytest.approx(0.5) and t_t2i[2, 2] == pytest.approx(0.5)
    assert torch.allclose(t_i2t.sum(1), torch.ones(3)) and torch.allclose(t_t2i.sum(1), torch.ones(3))
    kept, _ = soft_targets(sim, torch.tensor([1.0, 0.0, 0.5]), 0.1)
    assert kept[0, 0] > 0.5  # without Eq. 4b the distrusted pair's own partner keeps most of the mass


def _random_split_inputs(clean_prob: torch.Tensor, seed: int, d: int = 6) -> DisNCLInputs:
    """Random codes for ``len(clean_prob)`` pairs with unit variances, no CLUB terms, the split's ``clean_prob``."""
    torch.manual_seed(seed)
    b = len(clean_prob)
    codes = {k: torch.randn(b, d) for k in ("z_v", "z_t", "mu_zv", "mu_zt", "mu_uv", "mu_ut", "u_v", "u_t")}
    zeros = torch.zeros(b, d)
    h = torch.nn.functional.normalize(torch.randn(b, d), dim=-1)
    return DisNCLInputs(**codes, logvar_zv=zeros, logvar_zt=zeros, logvar_uv=zeros, logvar_ut=zeros, h_v=h, h_t=h,
                        recon_v=h, recon_t=h, club={}, clean_prob=clean_prob)


def test_a_hard_alpha_threshold_gives_flagged_pairs_full_target_softness():
    from dataclasses import replace

    from disncl.losses.config import DisNCLLossConfig

    x = _random_split_inputs(torch.tensor([0.9, 0.6, 0.4, 0.1]), seed=0)
    cfg = DisNCLLossConfig(mi_estimator="xcov", alpha_min=0.1, alpha_max=1.0, alpha_hard_threshold=0.0)
    _, soft = disncl_loss(x, cfg)
    _, hard = disncl_loss(x, replace(cfg, alpha_hard_threshold=0.5))
    assert float(soft["alpha_mean"]) == pytest.approx(0.1 + 0.9 * (0.1 + 0.4 + 0.6 + 0.9) / 4)
    assert float(hard["alpha_mean"]) == pytest.approx((0.1 + 0.1 + 1.0 + 1.0) / 4)


def test_the_confidence_gate_flags_a_split_clean_pair_that_fails_the_batch_test():
    from dataclasses import replace

    from disncl.losses.config import DisNCLLossConfig
    from disncl.losses.srem import batch_confident

    b, d = 4, 6
    base = torch.eye(b, d)
    z_t = base.clone()
    z_t[3] = base[0]  # pair 3's caption matches image 0: low S_33, high energy
    zeros = torch.zeros(b, d)
    h = torch.nn.functional.normalize(torch.randn(b, d, generator=torch.Generator().manual_seed(0)), dim=-1)
    x = DisNCLInputs(z_v=base, z_t=z_t, mu_zv=base, mu_zt=z_t, mu_uv=base, mu_ut=z_t, u_v=base, u_t=z_t,
                     logvar_zv=zeros, logvar_zt=zeros, logvar_uv=zeros, logvar_ut=zeros, h_v=h, h_t=h,
                     recon_v=h, recon_t=h, club={}, clean_prob=torch.ones(b))
    gate = batch_confident(torch.nn.functional.normalize(base, dim=-1) @ torch.nn.functional.normalize(z_t, dim=-1).T,
                           0.07, 0.5)
    assert not gate[3] and gate.sum() >= 2
    cfg = DisNCLLossConfig(mi_estimator="xcov", alpha_min=0.1, alpha_max=1.0, alpha_hard_threshold=0.9)
    _, open_ = disncl_loss(x, cfg)
    _, gated = disncl_loss(x, replace(cfg, confident_quantile=0.5))
    assert float(open_["alpha_mean"]) == pytest.approx(0.1)
    n_flagged = int((~gate).sum())
    assert float(gated["alpha_mean"]) == pytest.approx((0.1 * (b - n_flagged) + 1.0 * n_flagged) / b)
    _, warmup = disncl_loss(replace(x, clean_prob=None), replace(cfg, confident_quantile=0.5))
    assert float(warmup["alpha_mean"]) == pytest.approx(0.1)  # no gate before the split starts


def test_flagged_pairs_can_train_on_the_complementary_loss_instead_of_a_rematch():
    from dataclasses import replace

    from disncl.losses.config import DisNCLLossConfig
    from disncl.losses.infonce import similarity, soft_infonce
    from disncl.losses.srem import complementary_loss

    b = 5
    w = torch.tensor([0.99, 0.95, 0.5, 0.2, 0.0])  # the last three are flagged at θ = 0.9
    x = _random_split_inputs(w, seed=1)
    cfg = DisNCLLossConfig(lambda_full=0.0, flagged_loss="complementary")
    _, logs = disncl_loss(x, cfg)
    sim = similarity(x.z_v, x.z_t)
    flagged = (w <= 0.9).float()
    alpha = cfg.alpha_min + (cfg.alpha_max - cfg.alpha_min) * flagged
    t_i2t, t_t2i = soft_targets(sim, alpha, cfg.tau_target, True)
    expected = (soft_infonce(sim, cfg.tau, t_i2t, t_t2i, 1.0 - flagged)
                + (flagged * complementary_loss(sim, cfg.complementary_tau, cfg.complementary_bias)).sum() / b)
    assert float(logs["align"]) == pytest.approx(float(expected), rel=1e-6)
    _, rematch = disncl_loss(x, replace(cfg, flagged_loss="rematch"))
    assert float(rematch["align"]) != pytest.approx(float(expected))
    _, warmup = disncl_loss(replace(x, clean_prob=None), cfg)  # no split yet: nothing is flagged
    _, warmup_rematch = disncl_loss(replace(x, clean_prob=None), replace(cfg, flagged_loss="rematch"))
    assert float(warmup["align"]) == pytest.approx(float(warmup_rematch["align"]))


def test_partner_on_top_needs_the_partner_first_in_both_directions():
    from disncl.losses.disncl import partner_on_top

    sim = torch.tensor([[0.9, 0.1, 0.2],   # pair 0: first in its row and its column
                        [0.3, 0.5, 0.6],   # pair 1: caption 2 outranks it in its row
                        [0.1, 0.8, 0.7]])  # pair 2: first in its row, image 1 outranks it in its column
    assert partner_on_top(sim).tolist() == [1.0, 0.0, 0.0]


def test_outranked_mode_rematches_only_flagged_pairs_whose_partner_the_model_outranks():
    from dataclasses import replace

    from disncl.losses.config import DisNCLLossConfig
    from disncl.losses.disncl import partner_on_top
    from disncl.losses.infonce import similarity, soft_infonce

    w = torch.tensor([0.99, 0.95, 0.5, 0.2, 0.0, 0.1])  # the last four are flagged at θ = 0.9
    x = _random_split_inputs(w, seed=7)
    z_t = x.z_t.clone()
    z_t[2] = x.z_v[2]  # cos 1: flagged pair 2's partner is first in both directions
    x = replace(x, z_t=z_t)
    sim = similarity(x.z_v, x.z_t)
    top = partner_on_top(sim)
    flagged = (w <= 0.9).float()
    assert 0 < float((flagged * top).sum()) < float(flagged.sum())  # the inputs exercise both flagged cases
    cfg = DisNCLLossConfig(lambda_full=0.0, flagged_loss="outranked")
    _, logs = disncl_loss(x, cfg)
    t_i2t, t_t2i = soft_targets(sim, cfg.alpha_min + (cfg.alpha_max - cfg.alpha_min) * flagged, cfg.tau_target, True)
    expected = soft_infonce(sim, cfg.tau, t_i2t, t_t2i, 1.0 - flagged * top)
    assert float(logs["align"]) == pytest.approx(float(expected), rel=1e-6)
    _, rematch = disncl_loss(x, replace(cfg, flagged_loss="rematch"))
    assert float(rematch["align"]) == pytest.approx(float(soft_infonce(sim, cfg.tau, t_i2t, t_t2i)), rel=1e-6)
    with pytest.raises(ValueError, match="flagged_loss"):
        disncl_loss(x, replace(cfg, flagged_loss="drop"))
