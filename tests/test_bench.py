"""The benchmark: presets expand to valid configs, probes/MI measure what they claim, and
``python -m disncl bench --smoke`` runs end to end (data, runs, report, plots, resume)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from disncl.bench.presets import ABLATIONS, LONG_SCHEDULE, PRESETS, VARIANTS, RunSpec
from disncl.bench.report import signed, stat
from disncl.cli import main
from disncl.config import load_config
from disncl.eval.probes import gaussian_mi, mi_with_baseline, probe_accuracy


def test_quick_preset_covers_the_issue_grid():
    preset = PRESETS["quick"]
    runs = preset.runs()
    specs = list(runs)
    assert len({s.name for s in specs}) == len(specs), "run names must be unique (they are folder names)"
    grid = [s for s, g in runs.items() if "grid" in g]
    assert {(s.method, s.noise_rate) for s in grid} == {
        (m, r) for m in ("infonce", "ncr", "srem", "disncl") for r in (0.0, 0.2, 0.4, 0.6)}
    seeds = {s.method: set() for s in specs}
    for s, g in runs.items():
        if "seeds" in g:
            seeds[s.method].add(s.seed)
    assert all(len(v) >= 3 for v in seeds.values()), "variance needs >= 3 seeds per method at the focus cell"
    assert {s.ablation for s, g in runs.items() if "ablation" in g} == set(ABLATIONS) - VARIANTS
    assert sorted(s.seed for s, g in runs.items() if "variant" in g) == [0, 1, 2]
    # The DisNCL focus run at seed 0 serves the grid, the seeds and the confound groups: run once.
    shared = RunSpec("disncl", "image", 0.4, 0)
    assert set(runs[shared]) >= {"grid", "seeds", "confound"}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_run_of_every_preset_is_a_valid_config(name):
    preset = PRESETS[name]
    for spec in preset.runs():
        cfg = load_config(None, spec.overrides(preset, "data/x"))
        assert cfg.train.method == spec.method
        assert cfg.data.noise_rate == spec.noise_rate and cfg.data.noise_seed == spec.seed == cfg.train.seed
        if spec.ablation == "no_soft_targets":
            assert cfg.loss.soft_targets is False
        if spec.ablation == "full_similarity":
            assert cfg.selection_space() == "full"


def test_variants_keep_the_settings_they_were_measured_on_and_compare_with_their_reference():
    from disncl.bench.presets import reference_at, variant_base

    preset = PRESETS["standard-variants"]

    def config(ablation: str, method: str = "disncl"):
        spec = RunSpec(method, "image", 0.4, 0, ablation=ablation)
        return load_config(None, spec.overrides(preset, "data/x"))

    def loss(ablation: str, method: str = "disncl"):
        return config(ablation, method).loss

    assert loss("").mi_estimator == "hsic"  # §9.8
    assert loss("xcov_mi").mi_estimator == "xcov"
    # §9.12's bottleneck variants run on today's defaults with one setting changed (checked below); the
    # older variants keep the settings of their time.
    bottleneck = {"beta_tenfold": 0.01, "beta_thirtyfold": 0.03, "beta_hundredfold": 0.1, "beta_thousandfold": 1.0}
    # §9.13's split variants too: today's defaults with the split's settings changed (checked below).
    split_variants = {"repair_flagged": {"repair": True}, "repair_strict": {"repair": True, "repair_quantile": 0.1},
                      "monotone_converged": {"max_iter": 200, "tol": 1e-5, "monotone": True},
                      "agree_split": {"agree": True}, "clean_share_known": {"clean_share": 0.6},
                      "clean_share_over": {"clean_share": 0.7}}
    older = VARIANTS - set(bottleneck) - {"mii_half", LONG_SCHEDULE, "oracle_long", "co_divide",
                                                   "co_divide_long", "co_divide_share_known",
                                                   "loss_share_known", "detached_share_known"} - set(split_variants)
    assert config("oracle_long") == replace(config("oracle_split"), train=replace(
        config("oracle_split").train, epochs=2 * preset.epochs))
    # §9.14's convergence check: today's defaults with twice the epochs, for every method.
    for method in ("disncl", "ncr", "srem", "infonce"):
        assert config(LONG_SCHEDULE, method) == replace(config("", method), train=replace(
            config("", method).train, epochs=2 * preset.epochs)), method
        assert variant_base(method, LONG_SCHEDULE) == ""
    # §9.15's co-divide: today's defaults with the second network, for the methods that run it.
    for method in ("disncl", "ncr"):
        assert config("co_divide", method) == replace(config("", method), train=replace(
            config("", method).train, co_divide=True)), method
        assert variant_base(method, "co_divide") == ""
        assert config("co_divide_long", method) == replace(config(LONG_SCHEDULE, method), train=replace(
            config(LONG_SCHEDULE, method).train, co_divide=True)), method
        assert variant_base(method, "co_divide_long") == LONG_SCHEDULE
    # §9.16's cap on co-divide's splits: co-divide with the cell's clean share, compared with co-divide.
    assert config("co_divide_share_known") == replace(config("co_divide"), split=replace(
        config("co_divide").split, clean_share=0.6))
    assert variant_base("disncl", "co_divide_share_known") == "co_divide"
    # ... and the cap ranked by Eq. 6's loss, compared with the cap on the pair distance.
    assert config("loss_share_known") == replace(config("clean_share_known"), split=replace(
        config("clean_share_known").split, score="loss"))
    assert variant_base("disncl", "loss_share_known") == "clean_share_known"
    assert config("detached_share_known") == replace(config("clean_share_known"), train=replace(
        config("clean_share_known").train, warmup_heads="detached"))
    assert variant_base("disncl", "detached_share_known") == "clean_share_known"
    fallback_variants = {"unfit_split", "unfit_confident", "unfit_split_full", "unfit_full_strict", "no_fallback"}
    # Today's defaults with a switch changed.
    on_defaults = {"detached_warmup", "joint_heads", "converged_mixture", "oracle_split", "oracle_after_warmup",
                   "oracle_complementary", "oracle_no_exclusivity", "oracle_no_kl", "oracle_heads_detached",
                   "oracle_dropped", "oracle_dropped_detached", "heads_detached", "split_heads_detached",
                   "warmup_two", "warmup_one", "strict_split", "heads_half", "heads_quarter", "late_detach",
                   "detach_from_six", "weighted_split", "rematch_flagged", "oracle_rematch"}
    # Those of them that change a loss term (§9.9-9.10); the rest change the trainer only.
    loss_changed = {"oracle_complementary", "oracle_no_exclusivity", "oracle_no_kl", "oracle_dropped",
                    "oracle_dropped_detached", "strict_split", "weighted_split"}
    # Eq. 3c is the default (§9.11); every variant measured before it keeps the re-match of its time, the two
    # perfect-detector references of the standard preset run on today's defaults.
    on_todays = {"oracle_split", "oracle_after_warmup"}
    assert loss("").weight_by_clean_prob_below == 0.5
    for ablation in older - on_todays:
        assert loss(ablation).weight_by_clean_prob_below == 0.0, ablation
    for ablation in on_todays:
        assert loss(ablation) == loss(""), ablation
    for ablation, beta in bottleneck.items():
        assert loss(ablation) == replace(loss(""), beta=beta), ablation
        assert variant_base("disncl", ablation) == ""
    assert config("mii_half").model == replace(config("").model, mii_dim=16)
    for ablation, changed in split_variants.items():
        assert config(ablation) == replace(config(""), split=replace(config("").split, **changed)), ablation
        assert variant_base("disncl", ablation) == ""
    assert loss("mii_half") == loss("")
    assert replace(loss("rematch_flagged"), weight_by_clean_prob_below=0.5) == loss("")
    since_hsic = {"unfit_complementary", "alpha_min_tenth"} | fallback_variants | on_defaults  # tried on HSIC
    assert {loss(a).mi_estimator for a in since_hsic} == {"hsic"}
    # Every variant tried before HSIC was adopted still runs on the penalty it was measured with, and every
    # variant before α_min = 0 on the α_min of its time (0.1 until §9.8).
    for ablation in older - {"xcov_mi", "unfit_split_xcov"} - since_hsic:
        assert loss(ablation).mi_estimator in ("xcov", "club"), ablation
    assert loss("unfit_split_xcov").mi_estimator == "xcov"
    assert loss("").alpha_min == 0.0
    assert {loss(a).alpha_min for a in older - fallback_variants - on_defaults - {"unfit_split_xcov"}} == {0.1}
    assert {loss(a).alpha_min for a in fallback_variants | on_defaults | {"unfit_split_xcov"}} == {0.0}
    # The shut gate's fallback in the full space is the default (Eq. 6g-6i); every variant measured before it
    # keeps the gate's "never", and the fallback variants the space they were measured in.
    train = config("").train
    assert (train.shut_gate, train.shut_gate_unfit, train.shut_gate_space) == ("complementary", 0.5, "full")
    fallback_kept = {"shut_complementary", "unfit_complementary", "unfit_split_xcov"}
    fallback_kept |= fallback_variants - {"no_fallback"}
    for ablation in older - fallback_kept - on_defaults:
        assert config(ablation).train.shut_gate == "no_split", ablation
    for ablation in on_defaults - loss_changed - on_todays:
        assert config(ablation).loss == loss("rematch_flagged"), ablation
    for ablation in loss_changed:
        assert config(ablation).loss != loss("rematch_flagged"), ablation
    assert replace(config("detached_warmup").train, warmup_heads="joint", shut_gate_heads="detached") == train
    # Eq. 6j is the default; every variant that can start the fallback keeps the joint path it was measured with.
    assert train.shut_gate_heads == "detached" and config("joint_heads").train.shut_gate_heads == "joint"
    for ablation in fallback_kept | {"detached_warmup"}:
        assert config(ablation).train.shut_gate_heads == "joint", ablation
    for ablation in fallback_kept:
        assert config(ablation).train.shut_gate == "complementary", ablation
        assert config(ablation).train.shut_gate_space == "selection", ablation
    assert config("shut_complementary").train.shut_gate_unfit == 0.0
    assert variant_base("disncl", "loss_split") == "xcov_mi" and variant_base("ncr", "loss_split") == ""
    assert variant_base("disncl", "xcov_mi") == "alpha_min_tenth"
    assert variant_base("disncl", "alpha_min_tenth") == variant_base("disncl", "weighted_split") == "rematch_flagged"
    assert variant_base("disncl", "oracle_dropped") == "oracle_rematch"
    assert variant_base("disncl", "rematch_flagged") == variant_base("disncl", "v1_default") == ""
    assert variant_base("ncr", "xcov_mi") == variant_base("ncr", "unfit_complementary") == ""
    assert variant_base("disncl", "fixed_warmup") == variant_base("ncr", "fixed_warmup") == "loss_split"
    assert variant_base("disncl", "unfit_split") == "no_fallback"
    # Where the defaults' fallback starts (a cell with a no_fallback run), a variant measured without it
    # compares with no_fallback; elsewhere the two are the same run, and it compares with the defaults.
    assert reference_at("disncl", "alpha_min_tenth", True) == "no_fallback"
    assert reference_at("disncl", "alpha_min_tenth", False) == "rematch_flagged"
    assert reference_at("disncl", "no_fallback", True) == "rematch_flagged"
    assert reference_at("disncl", "converged_mixture", True) == "rematch_flagged"
    assert reference_at("disncl", "xcov_mi", True) == "alpha_min_tenth"
    # And one measured with the fallback's joint gradient path compares there with joint_heads.
    assert reference_at("disncl", "detached_warmup", True) == "joint_heads"
    assert reference_at("disncl", "detached_warmup", False) == reference_at("disncl", "joint_heads", True)
    assert reference_at("disncl", "joint_heads", True) == "rematch_flagged"
    references = {variant_base(s.method, s.ablation) for s in preset.runs() if s.ablation in VARIANTS}
    assert {s.ablation for s in preset.runs()} >= references


def test_probe_finds_a_linearly_coded_factor_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=600)
    coded = np.eye(4)[labels] * 3 + rng.normal(size=(600, 4))
    coded = np.hstack([coded, rng.normal(size=(600, 8))])
    present = probe_accuracy(coded, labels)
    absent = probe_accuracy(rng.normal(size=(600, 12)), labels)
    assert present["accuracy"] > 0.9
    assert abs(absent["accuracy"] - 0.25) < 0.08 and absent["chance"] < 0.35
    assert present["n_held_out"] == 300 and present["n_classes"] == 4


def test_probe_drops_rows_where_the_factor_does_not_exist():
    codes = np.arange(20, dtype=float)[:, None]
    labels = np.array([-1] * 10 + [0, 1] * 5)
    assert probe_accuracy(codes, labels)["n_held_out"] == 5
    with pytest.raises(ValueError, match="N == len"):
        probe_accuracy(codes, labels[:-1])


def test_gaussian_mi_matches_the_closed_form():
    rng = np.random.default_rng(1)
    n, rho = 20000, 0.8
    a = rng.normal(size=(n, 1))
    b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=(n, 1))
    assert gaussian_mi(a, b, components=1) == pytest.approx(-0.5 * np.log(1 - rho**2), abs=0.02)
    floor = mi_with_baseline(rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16)))
    assert floor["mi"] < 0.05 and floor["mi_shuffled"] < 0.05


def test_stat_formats_mean_and_seed_spread():
    assert stat([1.0, 3.0]) == "2.0 ± 1.4"
    assert stat([2.0]) == "2.0"
    assert stat([]) == "—" and stat([float("nan")]) == "—"
    assert signed([18.7]) == "+18.7" and signed([-1.4]) == "-1.4" and signed([]) == "—"


def test_bench_smoke_end_to_end_and_resume(tmp_path: Path, capsys):
    out = tmp_path / "bench"
    report = tmp_path / "BENCH.md"
    assert main(["bench", "--smoke", "--out", str(out), "--report", str(report), "--plots",
                 str(tmp_path / "plots"), "--no-progress"]) == 0
    text = report.read_text(encoding="utf-8")
    for section in ("## Verdicts", "## Test rSum vs noise rate", "## Noise-detection AUROC", "## DisNCL ablations",
                    "## Disentanglement, measured", "## Reproduce", "torch"):
        assert section in text
    for png in ("rsum_vs_noise.png", "r1_vs_noise.png", "auroc_vs_noise.png", "cost.png", "tsne_mii_mei.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"plots/{png}" in text
    results = sorted(out.glob("runs/*/result.json"))
    assert len(results) == len(PRESETS["smoke"].runs())
    r = json.loads(next(p for p in results if p.parent.name.startswith("disncl_image0.4")).read_text())
    assert set(r["evaluation"]["retrieval"]) == {"mii", "full"}
    assert 0.0 <= r["evaluation"]["detection"]["gmm"]["auroc"] <= 1.0
    assert r["peak_rss_mb"] > 50 and r["training"]["epochs"] == 2
    assert {"img_z", "img_u", "img_h", "txt_z", "txt_u", "txt_h"} <= set(r["probes"])

    # Re-running skips every finished run; the report is rebuilt from the same results.
    mtimes = {p: p.stat().st_mtime_ns for p in results}
    assert main(["bench", "--smoke", "--out", str(out), "--report", str(report), "--no-progress"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    summary = json.loads((out / "bench_run.json").read_text())
    assert summary["ran_now"] == 0 and summary["failed"] == {}


def _result(method: str, seed: int, rsum_value: float, ablation: str = "", data_seed: int | None = None,
            full: float | None = None) -> dict:
    spaces = ("mii", "full") if method == "disncl" else ("full",)
    spec = {"method": method, "noise_kind": "image", "noise_rate": 0.4, "seed": seed, "confound": 0.0,
            "ablation": ablation}
    if data_seed is not None:  # results written before data draws existed have no data_seed
        spec["data_seed"] = data_seed
    retrieval = {s: {"rsum": rsum_value, "i2t_r1": 0.0, "t2i_r1": 0.0} for s in spaces}
    if full is not None:
        retrieval["full"]["rsum"] = full
    return {
        "spec": spec,
        "config": {"train": {"select_on": "auto"}},
        "probes": {},
        "evaluation": {"retrieval": retrieval, "detection": None},
    }


def test_verdicts_compare_methods_seed_by_seed():
    from dataclasses import replace

    from disncl.bench.report import Report

    preset = replace(PRESETS["quick"], methods=("ncr", "srem", "disncl"), noise_rates=(0.4,), ablations=(),
                     variants=("v1_default",))
    results = [
        # DisNCL beats NCR on every seed although its mean is within NCR's seed spread.
        *(_result("ncr", s, v) for s, v in ((0, 100.0), (1, 200.0), (2, 300.0))),
        *(_result("disncl", s, v) for s, v in ((0, 101.0), (1, 201.0), (2, 301.0))),
        # SREM: the sign changes with the seed.
        *(_result("srem", s, v) for s, v in ((0, 90.0), (1, 210.0), (2, 290.0))),
        # The variant trails NCR on every seed.
        *(_result("disncl", s, v, "v1_default") for s, v in ((0, 99.0), (1, 150.0), (2, 250.0))),
    ]
    report = Report(preset, results)
    verdicts = "\n".join(report.verdicts())
    assert ("DisNCL (MII) vs NCR-style: ahead on every seed (draw 1: leads (+1.0 ± 0.0, 3 seeds); one data draw, "
            "so a hint, not a verdict)") in verdicts
    assert "DisNCL (MII) vs SREM: sign changes with the seed" in verdicts
    assert "DisNCL 'v1_default' (MII) vs NCR-style: behind on every seed" in verdicts
    assert "Variant 'the defaults before §9.4" in verdicts
    assert "rSum -34.7 ± 28.3 vs all terms at the same seed(s) (3)" in verdicts
    assert "**Verdict**" not in verdicts
    table = report.paired_table()
    assert "| DisNCL (MII) vs NCR-style | +1.0, +1.0, +1.0 | +1.0 ± 0.0 | leads |" in table


def test_a_verdict_needs_the_same_sign_on_both_data_draws():
    from dataclasses import replace

    from disncl.bench.report import Report

    preset = replace(PRESETS["standard"], methods=("ncr", "disncl"), noise_rates=(0.4,), ablations=(), variants=(),
                     focus_seeds=(0, 1))
    assert preset.draws == (0, 1)
    results = [
        # Draw 1 (data seed 0, written before data_seed existed) and draw 2 agree: DisNCL leads NCR.
        _result("ncr", 0, 100.0), _result("ncr", 1, 120.0),
        _result("disncl", 0, 110.0, full=120.0), _result("disncl", 1, 125.0, full=121.0),
        _result("ncr", 0, 90.0, data_seed=1), _result("ncr", 1, 95.0, data_seed=1),
        _result("disncl", 0, 99.0, data_seed=1, full=100.0), _result("disncl", 1, 97.0, data_seed=1, full=98.0),
    ]
    report = Report(preset, results)
    verdicts = "\n".join(report.verdicts())
    assert ("**Verdict** at 40% per-image noise, DisNCL (MII) vs NCR-style: ahead on every seed of both data draws "
            "(draw 1: leads (+7.5 ± 3.5, 2 seeds); draw 2: leads (+5.5 ± 4.9, 2 seeds))") in verdicts
    # MII minus full: -10, +4 on draw 1 (mixed), -1, -1 on draw 2 (trails): no verdict.
    assert "No verdict at 40% per-image noise, DisNCL: MII vs full features: draw 1: mixed" in verdicts
    table = report.paired_table()
    row = "| DisNCL (MII) vs NCR-style | +10.0, +5.0 | +7.5 ± 3.5 | leads | +9.0, +2.0 | +5.5 ± 4.9 | leads | leads |"
    assert row in table
    assert "| no verdict |" in table
    # With a seed of draw 2 missing, agreeing signs are pending, not a verdict.
    partial = "\n".join(Report(preset, results[:-1]).verdicts())
    assert "Pending at 40% per-image noise, DisNCL (MII) vs NCR-style" in partial and "**Verdict**" not in partial


def test_the_confound_pairs_give_mii_minus_full_per_run_on_each_draw():
    from dataclasses import replace

    from disncl.bench.report import Report

    preset = replace(PRESETS["standard"], methods=("disncl",), confounds=(0.0, 0.5), ablations=(), variants=())

    def at(rho: float, r: dict) -> dict:
        r["spec"]["confound"] = rho
        return r

    results = [
        at(0.5, _result("disncl", 0, 300.0, data_seed=0, full=290.0)),
        at(0.5, _result("disncl", 1, 310.0, data_seed=0, full=298.0)),
        at(0.5, _result("disncl", 0, 280.0, data_seed=1, full=285.0)),
        at(0.0, _result("disncl", 0, 350.0, data_seed=0, full=350.0)),
    ]
    table = Report(preset, results).confound_pairs_table()
    assert "| ρ = 0.5 | +10.0, +12.0 | +11.0 ± 1.4 | leads | -5.0 | -5.0 | one seed |" in table
    assert "| ρ = 0 | +0.0 | +0.0 | one seed | — | — | — |" in table
    # A verdict at a ρ needs every focus seed on both draws; with them, the same sign on both is one.
    assert not any("confound ρ" in v for v in Report(preset, results).verdicts())
    short = replace(preset, focus_seeds=(0, 1))
    results.append(at(0.5, _result("disncl", 1, 281.0, data_seed=1, full=290.0)))
    assert any(v.startswith("No verdict at 40% per-image noise and confound ρ = 0.5") for v in
               Report(short, results).verdicts())
    results[2] = at(0.5, _result("disncl", 0, 300.0, data_seed=1, full=285.0))
    results[-1] = at(0.5, _result("disncl", 1, 299.0, data_seed=1, full=290.0))
    assert any(v.startswith("**Verdict** at 40% per-image noise and confound ρ = 0.5, DisNCL: MII vs full features: "
                            "ahead on every seed of both data draws") for v in Report(short, results).verdicts())


def test_a_confound_variant_is_read_against_the_defaults_and_in_both_spaces_at_each_rho():
    from dataclasses import replace

    from disncl.bench.report import Report

    preset = replace(PRESETS["standard"], methods=("disncl",), confounds=(0.0, 0.7), ablations=(), variants=(),
                     focus_seeds=(0, 1), confound_variants=("beta_hundredfold",))

    def run(seed: int, draw: int, rho: float, mii: float, full: float, ablation: str = "", background: float = 0.5):
        r = _result("disncl", seed, mii, ablation=ablation, data_seed=draw, full=full)
        r["spec"]["confound"] = rho
        r["probes"] = {f"{m}_{c}": {f: {"accuracy": background if c == "z" else 0.9, "chance": 0.12}
                                    for f in ("background", "filler", "colour0", "shape0", "shape_single", "texture",
                                              "template")} for m in ("img", "txt") for c in "zuh"}
        r["training"] = {"curve": [{"val_rsum": {"mii": mii, "full": full}}]}
        return r

    results = [run(seed, draw, 0.7, 250.0 + seed, 250.0) for seed in (0, 1) for draw in (0, 1)]
    results += [run(seed, draw, 0.7, 310.0, 290.0 + draw, "beta_hundredfold", 0.6) for seed in (0, 1)
                for draw in (0, 1)]
    results.append(run(0, 0, 0.0, 400.0, 400.0))
    report = Report(preset, results)
    assert report.paired("disncl", "", "disncl", "beta_hundredfold", "mii", 1, confound=0.7) == [60.0, 59.0]
    verdicts = "\n".join(report.verdicts())
    label = "DisNCL with the MII bottleneck a hundred times stronger (Eq. 2, β = 0.1)"
    assert (f"**Verdict** at 40% per-image noise and confound ρ = 0.7, {label}: against the defaults: ahead on "
            "every seed of both data draws") in verdicts
    assert f"ρ = 0.7, {label}: MII vs full features: ahead" in verdicts
    # Without every focus seed on both draws there is no line for the variant at ρ = 0.
    assert f"ρ = 0, {label}" not in verdicts
    table = report.confound_probe_table()
    assert "| defaults | ρ = 0.7 | 1 | 2 | 0.50 ± 0.00 | 0.90 ± 0.00 | 0.90 ± 0.00 |" in table
    assert ("| the MII bottleneck a hundred times stronger (Eq. 2, β = 0.1) | ρ = 0.7 | 2 | 2 | 0.60 ± 0.00 |"
            in table)
    assert "| defaults | ρ = 0 | 1 | 1 | 0.50 |" in table and "chance 0.12" in table
    # Chosen per cell on validation: the variant at ρ = 0.7 (higher validation on both draws), where test agrees.
    choice = report.validation_choice_table()
    assert (f"| {label.removeprefix('DisNCL with ')} | ρ = 0.7 | 2 | 2 | 250.5 | 310.0 | variant | 250.5 | 310.0 | "
            "+59.5 ± 0.7 | yes |") in choice
    # One seed at ρ = 0 is no choice.
    assert "ρ = 0 |" not in choice
    results += [run(seed, 0, 0.0, 380.0 + seed, 380.0, "beta_hundredfold") for seed in (0, 1)]
    results.append(run(1, 0, 0.0, 402.0, 400.0))
    choice = Report(preset, results).validation_choice_table()
    assert "| ρ = 0 | 1 | 2 | 401.0 | 380.5 | defaults | 401.0 | 380.5 | +0.0 ± 0.0 | yes |" in choice


def test_the_perfect_detector_table_gives_each_run_against_its_own_clean_rsum():
    from dataclasses import replace

    from disncl.bench.presets import ORACLE, ORACLE_AFTER_WARMUP
    from disncl.bench.report import Report

    preset = replace(PRESETS["standard"], methods=("ncr", "disncl"), noise_rates=(0.0, 0.6), ablations=(),
                     variants=())

    def at(rate: float, r: dict) -> dict:
        r["spec"]["noise_rate"] = rate
        return r

    results = [
        at(0.0, _result("disncl", 0, 400.0)), at(0.0, _result("disncl", 1, 400.0)),
        at(0.6, _result("disncl", 0, 300.0)), at(0.6, _result("disncl", 1, 260.0)),
        at(0.6, _result("disncl", 0, 360.0, ORACLE)), at(0.6, _result("disncl", 1, 340.0, ORACLE)),
        at(0.6, _result("disncl", 0, 320.0, ORACLE_AFTER_WARMUP)),
        at(0.6, _result("ncr", 0, 350.0, ORACLE)), at(0.6, _result("ncr", 1, 330.0, ORACLE)),
    ]
    report = Report(preset, results)
    assert report.oracle_rates() == [0.6]
    row = ("| 60% | 280.0 ± 28.3 | 70% | 350.0 ± 14.1 | 88% | -70.0 ± 14.1 | 320.0 | 80% | -20.0 | 340.0 ± 14.1 | "
           "85% |")
    assert row in report.oracle_table()
    assert ("60% noise: DisNCL 280.0 is 70% of its clean rSum (400.0); with a perfect detector from the first epoch "
            "it reaches 350.0 (88%).") in report.verdicts()
    # The references are not variants: the cells table has its header and no row.
    assert report.cells_table().count("\n") == 1


def test_standard_preset_runs_the_focus_cell_first_and_on_a_second_draw():
    preset = PRESETS["standard"]
    runs = preset.runs()
    first = list(runs)[: len(preset.methods) * len(preset.focus_seeds)]
    assert {(s.noise_rate, s.data_seed) for s in first} == {(0.4, 0)}
    draw2 = [s for s, g in runs.items() if "seeds@draw2" in g]
    assert {(s.method, s.seed) for s in draw2} == {(m, k) for m in preset.methods for k in range(5)}
    assert all(s.data_seed == 1 and s.name.endswith(f"_d1_s{s.seed}") for s in draw2)
    assert {(s.noise_kind, s.noise_rate) for s, g in runs.items() if "grid" in g} == {
        *(("image", r) for r in (0.0, 0.2, 0.4, 0.6, 0.8)), ("caption", 0.4)}
    assert {s.confound for s in runs} == {0.0, 0.5, 0.7, 0.9}
    assert {s.method for s in runs if s.confound} == {"disncl"}  # MII vs full: one DisNCL run, two spaces
    assert {s.ablation for s, g in runs.items() if g == ["variant"]} == {"v1_default", "rematch_flagged"}
    # --data-seed moves both draws.
    moved = preset.with_data_seed(7)
    assert moved.draws == (7, 8) and {s.data_seed for s in moved.runs()} == {7, 8}
    # Draw 2 has ρ = 0.5 and 0.7 too: MII against full there, and §9.12's bottleneck, are checked on both draws.
    assert {(d.seed, d.confound) for d in moved.data_specs()} == {(7, 0.0), (7, 0.5), (7, 0.7), (7, 0.9), (8, 0.0),
                                                                   (8, 0.5), (8, 0.7)}
    confounded = {(s.ablation, s.confound, s.data_seed) for s in preset.runs() if s.ablation == "beta_hundredfold"}
    assert confounded == {("beta_hundredfold", rho, draw) for rho in (0.0, 0.5, 0.7) for draw in (0, 1)}
    assert preset.confound_variants == ("beta_hundredfold",)
    # Every (draw, confound) some run trains on has its dataset: the variants' confound sweep on draw 2 too.
    variants = PRESETS["standard-variants"]
    needed = {(s.data_seed, s.confound) for s in variants.runs()}
    assert needed == {(d.seed, d.confound) for d in variants.data_specs()} and (1, 0.9) in needed


def test_a_preset_reads_only_its_own_runs_from_a_shared_bench_directory(tmp_path):
    from disncl.bench.runner import load_results

    standard, variants = PRESETS["standard"], PRESETS["standard-variants"]
    assert set(standard.runs()) < set(variants.runs())  # one directory serves both
    extra = next(s for s in variants.runs() if s not in standard.runs())
    shared = RunSpec("disncl", "image", 0.4, 0)
    for spec in (extra, shared):
        run = tmp_path / "runs" / spec.name
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"name": spec.name, "groups": ["stale"]}))
    assert [r["name"] for r in load_results(tmp_path, standard)] == [shared.name]
    assert load_results(tmp_path, standard)[0]["groups"] == standard.runs()[shared]
    assert {r["name"] for r in load_results(tmp_path, variants)} == {extra.name, shared.name}
    assert [r["groups"] for r in load_results(tmp_path) if r["name"] == shared.name] == [["stale"]]


def test_a_grid_rate_run_on_both_draws_gets_a_per_draw_row_and_a_verdict_line():
    from dataclasses import replace

    from disncl.bench.report import Report

    preset = replace(PRESETS["standard"], methods=("srem", "disncl"), noise_rates=(0.4, 0.6), ablations=(),
                     variants=(), caption_rates=(), confounds=(0.0,))

    def at(rate: float, r: dict) -> dict:
        r["spec"]["noise_rate"] = rate
        return r

    results = [at(0.6, _result(m, s, v + s, data_seed=d)) for d in (0, 1) for s in (0, 1)
               for m, v in (("srem", 270.0), ("disncl", 330.0 - 70.0 * (d and s)))]
    report = Report(preset, results)
    table = report.rate_table()
    assert "| 60% per image | +60.0 ± 0.0 (leads) |" in table
    assert "| 60% per image, draw 2 | +25.0 ± 49.5 (mixed) |" in table
    verdicts = "\n".join(report.verdicts())
    assert ("No verdict at 60% per-image noise, DisNCL vs SREM: draw 1: leads (+60.0 ± 0.0, 2 seeds); draw 2: mixed "
            "(+25.0 ± 49.5, 2 seeds).") in verdicts
    results = [r for r in results if r["spec"]["data_seed"] == 0]
    assert "60% per image, draw 2" not in Report(preset, results).rate_table()
    assert "at 60% per-image noise, DisNCL vs SREM" not in "\n".join(Report(preset, results).verdicts())


def test_the_convergence_check_pairs_each_method_with_its_own_short_run_and_gives_long_schedule_verdicts(tmp_path):
    from dataclasses import replace

    from disncl.bench.report import Report

    long_runs = tuple(RunSpec(m, "image", 0.2, s, ablation=LONG_SCHEDULE, data_seed=d)
                      for m in ("srem", "disncl") for s in (0, 1) for d in (0, 1))
    preset = replace(PRESETS["standard"], methods=("infonce", "srem", "disncl"), noise_rates=(0.2,), ablations=(),
                     variants=(), caption_rates=(), confounds=(0.0,), extra_runs=long_runs)

    def run(method: str, seed: int, draw: int, value: float, curve: list[float], ablation: str = "") -> dict:
        r = _result(method, seed, value, ablation, data_seed=draw)
        r["spec"]["noise_rate"] = 0.2
        space = "mii" if method == "disncl" else "full"
        r["training"] = {"curve": [{"val_rsum": {space: v, "full": v}} for v in curve]}
        return r

    short, long = [10.0, 20.0, 30.0, 40.0, 50.0], [10.0, 30.0, 45.0, 50.0, 50.0, 49.0, 50.0]
    results = [run(m, s, d, v + s, short) for d in (0, 1) for s in (0, 1) for m, v in (("srem", 300.0),
                                                                                        ("disncl", 290.0))]
    # With the longer schedule DisNCL leads SREM on every seed of both draws (by 5, then 5 and 15).
    results += [run(m, s, d, v + s + 10.0 * (m == "disncl" and d and s), long, LONG_SCHEDULE)
                for d in (0, 1) for s in (0, 1) for m, v in (("srem", 300.0), ("disncl", 305.0))]
    report = Report(preset, results)
    assert report.schedule_rates() == [0.2]
    table = report.schedule_table()
    # Selected epoch 5 of 5 and 4 of 7; the change over the last 3 epochs +30 short, 0 long; test 290.5 → 305.5.
    assert "| DisNCL | 20%, draw 1 | 0, 1 | 5.0 ± 0.0 | 4.0 ± 0.0 | +30.0 ± 0.0 | +0.0 ± 0.0 |" in table
    assert "| 290.5 ± 0.7 | 305.5 ± 0.7 | +15.0 ± 0.0 |" in table
    assert "InfoNCE" not in table
    diffs = report.schedule_diffs_table()
    assert "| 20% per image | +5.0 ± 0.0 (leads) | +10.0 ± 7.1 (leads) | leads |" in diffs
    verdicts = "\n".join(report.verdicts())
    assert ("**Verdict** at 20% per-image noise with 20 epochs, DisNCL vs SREM: ahead on every seed of both data draws "
            "(draw 1: leads (+5.0 ± 0.0, 2 seeds); draw 2: leads (+10.0 ± 7.1, 2 seeds)).") in verdicts
    # At 10 epochs the same seeds trail (-10 on every seed of both draws).
    assert "**Verdict** at 20% per-image noise, DisNCL vs SREM: behind on every seed of both data draws" in verdicts
    # The long runs are not also variants in the cells table.
    assert "long_schedule" not in report.cells_table()


def test_mii_against_full_at_convergence_is_a_verdict_only_with_every_focus_seed_of_both_draws():
    from dataclasses import replace

    from disncl.bench.report import Report

    long_runs = tuple(RunSpec("disncl", "image", 0.4, s, ablation=LONG_SCHEDULE, data_seed=d)
                      for s in (0, 1, 2) for d in (0, 1))
    preset = replace(PRESETS["standard"], methods=("srem", "disncl"), noise_rates=(0.4,), ablations=(), variants=(),
                     caption_rates=(), confounds=(0.0,), focus_seeds=(0, 1, 2), extra_runs=long_runs)
    # MII ahead of full by 2, 3, 4 on draw 1; on draw 2 by 1 and 2, then behind by 1.
    gaps = {0: (2.0, 3.0, 4.0), 1: (1.0, 2.0, -1.0)}
    results = [_result("disncl", s, 400.0 + gaps[d][s], LONG_SCHEDULE, data_seed=d, full=400.0)
               for d in (0, 1) for s in (0, 1, 2)]
    where = "at 40% per-image noise with 20 epochs, DisNCL: MII vs full features"
    verdicts = "\n".join(Report(preset, results).verdicts())
    assert (f"No verdict {where}: draw 1: leads (+3.0 ± 1.0, 3 seeds); draw 2: mixed (+0.7 ± 1.5, 3 "
            "seeds).") in verdicts
    results[-1]["evaluation"]["retrieval"]["mii"]["rsum"] = 403.0
    verdicts = "\n".join(Report(preset, results).verdicts())
    assert f"**Verdict** {where}: ahead on every seed of both data draws" in verdicts
    # A focus seed missing on one draw: no line, since a verdict needs every seed.
    assert where not in "\n".join(Report(preset, results[:-1]).verdicts())


def _result_at_80(method: str, seed: int, value: float, ablation: str = "", val: float = 100.0, auc: float = 0.8,
                  precision: float = 0.4, recall: float = 0.9) -> dict:
    """A result at 80 % per-image noise on draw 1: test rSum ``value + seed``, best validation ``val + seed``."""
    r = _result(method, seed, value + seed, ablation, data_seed=0)
    r["spec"]["noise_rate"] = 0.8
    r["training"] = {"curve": [{"val_rsum": {"mii": val + seed, "full": val + seed}}]}
    r["evaluation"]["detection"] = {"gmm": {"auroc": auc, "clean_precision": precision, "clean_recall": recall}}
    return r


def test_the_clean_share_table_pairs_the_cap_with_the_split_it_caps():
    from disncl.bench.presets import (
        CLEAN_SHARE_KNOWN,
        CLEAN_SHARE_OVER,
        CO_DIVIDE,
        CO_DIVIDE_SHARE_KNOWN,
        DETACHED_SHARE_KNOWN,
    )
    from disncl.bench.report import CLEAN_SHARE_RUNS, Report

    extra = tuple(RunSpec("disncl", "image", 0.8, s, ablation=a) for s in (0, 1)
                  for a in (CLEAN_SHARE_KNOWN, CLEAN_SHARE_OVER, CO_DIVIDE, CO_DIVIDE_SHARE_KNOWN))
    preset = replace(PRESETS["standard"], methods=("ncr", "srem", "disncl"), noise_rates=(0.8,), ablations=(),
                     variants=(), caption_rates=(), confounds=(0.0,), extra_runs=extra)
    run = _result_at_80
    results = [run("srem", s, 65.0) for s in (0, 1)] + [run("disncl", s, 55.0) for s in (0, 1)]
    # The cap: +20 test, +30 validation, precision 0.4 -> 0.6 at recall 0.6; ten points high: +5. Co-divide +10, and
    # the cap on it +15 more (validation -10 against co-divide's).
    results += [run("disncl", s, 75.0, CLEAN_SHARE_KNOWN, val=130.0, precision=0.6, recall=0.6) for s in (0, 1)]
    results += [run("disncl", s, 60.0, CLEAN_SHARE_OVER) for s in (0, 1)]
    results += [run("disncl", s, 65.0, CO_DIVIDE, val=120.0) for s in (0, 1)]
    results += [run("disncl", s, 80.0, CO_DIVIDE_SHARE_KNOWN, val=110.0, precision=0.7, recall=0.7)
                for s in (0, 1)]
    results += [run("srem", s, 70.0, CLEAN_SHARE_KNOWN) for s in (0, 1)]
    report = Report(preset, results)
    assert report.clean_share_cells() == [(0.8, 0)]
    table = report.clean_share_table()
    assert "| 80%, draw 1 | DisNCL | 0, 1 | 55.5 ± 0.7 |  |  |  |  | 0.40 ± 0.00 / 0.90 ± 0.00 |" in table
    assert ("| 80%, draw 1 | DisNCL + cap | 0, 1 | 75.5 ± 0.7 | +30.0 ± 0.0 | +20.0 ± 0.0 |  |  | "
            "0.60 ± 0.00 / 0.60 ± 0.00 |") in table
    assert "| DisNCL + cap 10 points high | 0, 1 | 60.5 ± 0.7 | +0.0 ± 0.0 | +5.0 ± 0.0 |" in table
    assert ("| DisNCL + co-divide + cap | 0, 1 | 80.5 ± 0.7 | -10.0 ± 0.0 | +15.0 ± 0.0 |  |  | "
            "0.70 ± 0.00 / 0.70 ± 0.00 |") in table
    # The baselines against DisNCL with the same split: SREM's own against DisNCL's own, SREM + cap against DisNCL +
    # cap; NCR-style ran neither, so it has no row.
    assert "| SREM | 0, 1 | 65.5 ± 0.7 |  |  | -10.0 ± 0.0 |  |" in table
    assert "| SREM + cap | 0, 1 | 70.5 ± 0.7 | +0.0 ± 0.0 | +5.0 ± 0.0 | +5.0 ± 0.0 |  |" in table
    # With the towers-only warm-up's capped runs, every baseline row also reads against them.
    results += [run("disncl", s, 90.0, DETACHED_SHARE_KNOWN) for s in (0, 1)]
    table = Report(preset, results).clean_share_table()
    assert "| DisNCL + cap, towers-only warm-up | 0, 1 | 90.5 ± 0.7 | -30.0 ± 0.0 | +15.0 ± 0.0 |  |  |" in table
    assert "| SREM + cap | 0, 1 | 70.5 ± 0.7 | +0.0 ± 0.0 | +5.0 ± 0.0 | +5.0 ± 0.0 | +20.0 ± 0.0 |" in table
    assert "NCR" not in table
    # Its own section, not variant rows of the cells table.
    assert CLEAN_SHARE_KNOWN not in report.cells_table()
    # Without the capped runs there is no section.
    assert Report(preset, [r for r in results if r["spec"]["ablation"] not in CLEAN_SHARE_RUNS]).clean_share_cells() \
        == []


def test_the_co_divide_table_pairs_each_method_with_its_own_split_and_the_methods_with_co_divide():
    from disncl.bench.presets import CO_DIVIDE, CO_DIVIDE_LONG
    from disncl.bench.report import Report

    extra = (*(RunSpec(m, "image", 0.8, s, ablation=CO_DIVIDE) for m in ("ncr", "disncl") for s in (0, 1)),
             *(RunSpec("disncl", "image", 0.8, s, ablation=CO_DIVIDE_LONG) for s in (0, 1)))
    preset = replace(PRESETS["standard"], methods=("ncr", "srem", "disncl"), noise_rates=(0.8,), ablations=(),
                     variants=(), caption_rates=(), confounds=(0.0,), extra_runs=extra)

    run = _result_at_80
    results = [run("ncr", s, 50.0) for s in (0, 1)] + [run("srem", s, 65.0) for s in (0, 1)]
    results += [run("disncl", s, 55.0) for s in (0, 1)]
    # Co-divide lifts DisNCL by 25 (validation by 50) and NCR-style by 10; DisNCL + co leads NCR-style + co by 20.
    results += [run("disncl", s, 80.0, CO_DIVIDE, val=150.0, auc=0.93) for s in (0, 1)]
    results += [run("ncr", s, 60.0, CO_DIVIDE, auc=0.9) for s in (0, 1)]
    report = Report(preset, results)
    assert report.co_divide_cells() == [(0.8, 0, "", CO_DIVIDE)]
    table = report.co_divide_table()
    assert ("| 80%, draw 1, 10 epochs | 0, 1 | 50.5 ± 0.7 | 60.5 ± 0.7 | 65.5 ± 0.7 | 55.5 ± 0.7 | 80.5 ± 0.7 | "
            "+50.0 ± 0.0 | +25.0 ± 0.0 | +10.0 ± 0.0 | +20.0 ± 0.0 | +15.0 ± 0.0 | 0.800 ± 0.000 → 0.930 ± 0.000 | "
            "0.800 ± 0.000 → 0.900 ± 0.000 |") in table
    # The 20-epoch co-divided runs pair with the convergence check's runs; without NCR-style's there, dashes.
    results += [run("disncl", s, 60.0, LONG_SCHEDULE) for s in (0, 1)]
    results += [run("disncl", 0, 90.0, CO_DIVIDE_LONG)]
    report = Report(preset, results)
    assert report.co_divide_cells() == [(0.8, 0, "", CO_DIVIDE), (0.8, 0, LONG_SCHEDULE, CO_DIVIDE_LONG)]
    assert "| 80%, draw 1, 20 epochs | 0 | — | — | — | 60.0 | 90.0 | +0.0 | +30.0 | — | — | — |" in \
        report.co_divide_table()
    # Neither is also a variant row of the cells table.
    assert CO_DIVIDE not in report.cells_table()
