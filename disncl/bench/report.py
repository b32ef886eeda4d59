"""Turn a bench directory's results into markdown tables, verdicts and PNG plots.

Everything here reads ``result.json`` files (see worker.py) and writes files; no training happens.
Means are over seeds; "±" is the sample standard deviation over seeds (shown when there are ≥ 2).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from disncl.bench.presets import (  # noqa: E402
    ABLATION_LABELS,
    CLEAN_SHARE_ERRORS,
    CLEAN_SHARE_KNOWN,
    CLEAN_SHARE_OVER,
    CO_DIVIDE,
    CO_DIVIDE_LONG,
    CO_DIVIDE_SHARE_KNOWN,
    DETACHED_SHARE_KNOWN,
    LONG_SCHEDULE,
    LONG_SCHEDULE_EPOCHS,
    LOSS_SHARE_KNOWN,
    ORACLE,
    ORACLE_AFTER_WARMUP,
    Preset,
    RunSpec,
    reference_at,
    variant_base,
)
from disncl.bench.worker import CODES_FILE, IMAGE_FACTORS, TEXT_FACTORS  # noqa: E402
from disncl.io import atomic_write, atomic_write_text  # noqa: E402
from disncl.methods import METHOD_NAMES, METHODS  # noqa: E402

LABELS = {name: m.label for name, m in METHODS.items()}
# Extra runs that are not variants of a cell (the defaults elsewhere, and the perfect-detector references and the
# convergence check and co-divide, which have their own tables): the cells table leaves them out.
# The clean-share cap (Eq. 6o) and co-divide have sections of their own.
CLEAN_SHARE_RUNS = tuple(CLEAN_SHARE_ERRORS)
_CLEAN_SHARE_LABELS = {CLEAN_SHARE_KNOWN: "cap", CLEAN_SHARE_OVER: "cap 10 points high", CO_DIVIDE: "co-divide",
                       CO_DIVIDE_SHARE_KNOWN: "co-divide + cap", LOSS_SHARE_KNOWN: "cap, ranked by the loss",
                       DETACHED_SHARE_KNOWN: "cap, towers-only warm-up"}
NOT_VARIANTS = frozenset({"", ORACLE, ORACLE_AFTER_WARMUP, LONG_SCHEDULE, CO_DIVIDE, CO_DIVIDE_LONG,
                          *CLEAN_SHARE_RUNS})
COLOURS = {name: m.colour for name, m in METHODS.items()}
CODE_LABELS = {"h": "full feature", "z": "MII", "u": "MEI"}
# Convergence is read from the change in validation rSum over this many final epochs.
LAST_EPOCHS = 3
Result = dict[str, Any]


def _space(r: Result, space: str) -> str:
    """``best`` is the run's own selection space (MII for DisNCL unless ``select_on`` says otherwise, or the
    run moved it: Eq. 6i's fallback, recorded by its evaluation)."""
    if space != "best":
        return space
    if r["evaluation"].get("selection_space"):
        return r["evaluation"]["selection_space"]
    select_on = r["config"]["train"]["select_on"]
    if select_on != "auto":
        return select_on
    return "mii" if "mii" in r["evaluation"]["retrieval"] else "full"


def rsum(r: Result, space: str = "best") -> float:
    """Test rSum in ``space`` (``best``: the run's own space), NaN where the run has no such space."""
    retrieval = r["evaluation"]["retrieval"]
    space = _space(r, space)
    return float(retrieval[space]["rsum"]) if space in retrieval else float("nan")


def val_rsum(r: Result) -> float:
    """Best validation rSum over the epochs, in the run's selection space: what model selection and the
    choice of defaults (docs/method.md §9.4) look at."""
    space = _space(r, "best")
    values = [e["val_rsum"] for e in r["training"]["curve"]]
    return max(float(v[space] if isinstance(v, dict) else v) for v in values) if values else float("nan")


def recall1(r: Result, direction: str, space: str = "best") -> float:
    """Test R@1 of ``direction`` ("i2t" or "t2i") in ``space``."""
    return float(r["evaluation"]["retrieval"][_space(r, space)][f"{direction}_r1"])


def auroc(r: Result) -> float:
    return _detection(r, "auroc")


def clean_precision(r: Result) -> float:
    """The share of truly clean pairs among those the last epoch's split trusts."""
    return _detection(r, "clean_precision")


def clean_recall(r: Result) -> float:
    """The share of the truly clean pairs the last epoch's split trusts."""
    return _detection(r, "clean_recall")


def _detection(r: Result, key: str) -> float:
    detection = r["evaluation"].get("detection")
    return float(detection["gmm"].get(key, float("nan"))) if detection else float("nan")


def stat(values: Iterable[float], digits: int = 1) -> str:
    """``mean ± std`` over seeds (``mean`` alone for one value, ``—`` for none or NaN)."""
    v = np.array([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def signed(values: list[float]) -> str:
    """:func:`stat` with an explicit sign on the mean (for differences)."""
    text = stat(values)
    return text if text == "—" or text.startswith("-") else "+" + text


# Results written before a RunSpec field existed read as that field's default.
_SPEC_DEFAULTS = {f.name: f.default for f in fields(RunSpec) if f.default is not MISSING}


def _select(results: list[Result], **spec: Any) -> list[Result]:
    return [r for r in results if all(r["spec"].get(k, _SPEC_DEFAULTS.get(k)) == v for k, v in spec.items())]


def _seen(kinds: list[str], per_draw: list[list[float]]) -> str:
    """What each draw's paired differences say: ``draw k: <kind> (<mean ± sd>, <n> seeds)``."""
    return "; ".join(f"draw {k + 1}: {kind} ({signed(d)}, {len(d)} seeds)"
                     for k, (kind, d) in enumerate(zip(kinds, per_draw, strict=True)) if d)


def _both_draws(where: str, kinds: list[str], seen: str) -> str:
    """A verdict line when every seed of every draw has one sign, else a "no verdict" line."""
    if kinds[0] in ("leads", "trails") and len(set(kinds)) == 1:
        word = "ahead" if kinds[0] == "leads" else "behind"
        return f"**Verdict** {where}: {word} on every seed of both data draws ({seen})."
    return f"No verdict {where}: {seen}."


def _draws_verdict(where: str, per_draw: list[list[float]]) -> str:
    """:func:`_both_draws` on each draw's paired differences, classified and summarised here."""
    kinds = [classify(d) for d in per_draw]
    return _both_draws(where, kinds, _seen(kinds, per_draw))


def _variant_name(ablation: str) -> str:
    """A variant's label as a noun phrase ("the MII bottleneck ... stronger"), for sentences and table cells."""
    return ABLATION_LABELS[ablation].removeprefix("variant: ")


def classify(diffs: list[float]) -> str:
    """``leads`` / ``trails`` when every paired difference has that sign, else ``mixed``."""
    if diffs and all(d > 0 for d in diffs):
        return "leads"
    if diffs and all(d < 0 for d in diffs):
        return "trails"
    return "mixed"


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if x == x]
    return float(np.mean(v)) if v else float("nan")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class _SeedRuns:
    """One cell's runs by (method, ablation) and seed, read at the seeds ``lead`` ran: the columns and paired
    differences of a table that compares several runs of one cell."""

    def __init__(self, runs: dict[tuple[str, str], dict[int, Result]], lead: tuple[str, str]) -> None:
        self.runs, self.seeds = runs, sorted(runs[lead])

    def column(self, key: tuple[str, str], of=rsum, digits: int = 1) -> str:
        return stat((of(self.runs[key][k]) for k in self.seeds if k in self.runs[key]), digits)

    def diff(self, a: tuple[str, str], b: tuple[str, str], of=rsum) -> str:
        """``of(b) − of(a)`` paired by seed."""
        return signed([of(self.runs[b][k]) - of(self.runs[a][k]) for k in self.seeds
                       if k in self.runs[a] and k in self.runs[b]])


class Report:
    """The tables, verdicts and plots of one bench directory."""

    def __init__(self, preset: Preset, results: list[Result]) -> None:
        self.preset = preset
        self.results = results
        self.methods = [m for m in METHOD_NAMES if m in preset.methods]

    def cell(self, method: str, kind: str, rate: float, ablation: str = "", confound: float = 0.0,
             draw: int | None = None) -> list[Result]:
        """Runs of one grid cell on data draw ``draw`` (default: the preset's first draw)."""
        return _select(self.results, method=method, noise_kind=kind, noise_rate=rate, ablation=ablation,
                       confound=confound, data_seed=self.preset.draws[0] if draw is None else draw)

    def focus(self, method: str, ablation: str = "", draw: int | None = None, confound: float = 0.0) -> list[Result]:
        return self.cell(method, "image", self.preset.focus_rate, ablation, confound=confound, draw=draw)

    # ------------------------------------------------------------------------------------ tables
    def grid_table(self, kind: str, metric: Callable[[Result], float], digits: int = 1,
                   rates: tuple[float, ...] | None = None) -> str:
        rates = self.preset.noise_rates if rates is None else rates
        rows = []
        for method in self.methods:
            for space in METHODS[method].spaces:
                label = LABELS[method] + (f" ({space.upper() if space == 'mii' else space})" if method == "disncl"
                                          else "")
                row = [label]
                for rate in rates:
                    row.append(stat((metric(r, space) for r in self.cell(method, kind, rate)), digits))
                rows.append(row)
        return _table(["method"] + [f"{rate:.0%} noise" for rate in rates], rows)

    def auroc_table(self, kind: str, rates: tuple[float, ...] | None = None) -> str:
        rates = [r for r in (self.preset.noise_rates if rates is None else rates) if r > 0]
        rows = [[LABELS[m]] + [stat((auroc(r) for r in self.cell(m, kind, rate)), 3) for rate in rates]
                for m in self.methods]
        return _table(["method"] + [f"{rate:.0%} noise" for rate in rates], rows)

    def detector_table(self, kind: str = "image") -> str:
        """Noise-detection AUROC of three detectors per noise rate: the learned clean probability, the
        full-space cosine and the MII cosine (last epoch's pair scores), plus InfoNCE's cosine, the
        CLIP-score filter of a model trained plainly on the same noisy pairs."""
        rates = [r for r in self.preset.noise_rates if r > 0]

        def cell(method: str, column: str, rate: float) -> str:
            values = [r["detectors"][column] for r in self.cell(method, kind, rate)
                      if column in (r.get("detectors") or {})]
            return stat(values, 3) if values else "–"

        rows = [[label] + [cell(method, column, rate) for rate in rates] for method, column, label in (
            ("disncl", "clean_prob", "DisNCL: learned clean probability (GMM split)"),
            ("disncl", "loss", "DisNCL: the score the split is fitted on (1 − cos in its selection space, Eq. 6e; "
                               "full where Eq. 6i moved it)"),
            ("disncl", "full_sim", "DisNCL: cosine, tower space"),
            ("disncl", "mii_sim", "DisNCL: cosine, MII space"),
            ("infonce", "full_sim", "InfoNCE: cosine (the CLIP-score filter)"),
            ("ncr", "clean_prob", "NCR-style: learned clean probability"),
            ("srem", "clean_prob", "SREM: learned clean probability"),
        ) if method in self.methods]
        return _table(["detector"] + [f"{rate:.0%} noise" for rate in rates], rows)

    def focus_table(self) -> str:
        rows = []
        for method in self.methods:
            rs = self.focus(method)
            rows.append([
                LABELS[method], str(len(rs)), stat(rsum(r) for r in rs), stat(rsum(r, "full") for r in rs),
                stat(recall1(r, "i2t") for r in rs), stat(recall1(r, "t2i") for r in rs),
                stat((auroc(r) for r in rs), 3),
                stat(r["training"]["train_seconds_per_epoch"] for r in rs),
                stat(r["training"]["epoch_seconds"] for r in rs),
                stat((r["peak_rss_mb"] for r in rs), 0),
            ])
        return _table(["method", "seeds", "rSum (own space)", "rSum (full)", "R@1 i→t", "R@1 t→i", "noise AUROC",
                       "train s/epoch", "s/epoch incl. scoring+val", "peak RSS MB"], rows)

    def ablation_table(self) -> str:
        rows = []
        for ablation in ("", *self.preset.ablations, *self.preset.variants):
            rs = self.focus("disncl", ablation)
            label = "DisNCL (all terms)" if not ablation else ABLATION_LABELS[ablation]
            base = variant_base("disncl", ablation)
            delta = signed(self.paired("disncl", base, "disncl", ablation, space="best")) if ablation else ""
            rows.append([label, ", ".join(str(r["spec"]["seed"]) for r in rs), stat(val_rsum(r) for r in rs),
                         stat(rsum(r, "mii") for r in rs), stat(rsum(r, "full") for r in rs),
                         stat((auroc(r) for r in rs), 3), delta, f"`{base}`" if base else "all terms"])
        return _table(["DisNCL variant", "seeds", "best val rSum (selection)", "test rSum MII", "test rSum full",
                       "noise AUROC", "Δ test rSum vs reference, same seeds", "reference"], rows)

    def cells_table(self) -> str:
        """Each variant run outside the focus cell (``extra_runs``) against its reference run of the same cell (the
        default, or the variant's ``VARIANT_BASE``), by seed."""
        keys = dict.fromkeys((s.method, s.noise_kind, s.noise_rate, s.confound, s.data_seed, s.ablation)
                             for s in self.preset.extra_runs_resolved() if s.ablation not in NOT_VARIANTS)
        rows = []
        for method, kind, rate, rho, draw, ablation in keys:
            fallback_off = bool(self.cell(method, kind, rate, "no_fallback", rho, draw=draw))
            reference = reference_at(method, ablation, fallback_off)
            base = {r["spec"]["seed"]: r for r in self.cell(method, kind, rate, reference, rho, draw=draw)}
            other = {r["spec"]["seed"]: r for r in self.cell(method, kind, rate, ablation, rho, draw=draw)}
            seeds = sorted(base.keys() & other.keys())
            if not seeds:
                continue
            draw_no = self.preset.draws.index(draw) + 1 if draw in self.preset.draws else draw
            rows.append([
                LABELS[method], f"{rate:.0%} per {kind}{f', ρ = {rho:g}' if rho else ''}, draw {draw_no}", ablation,
                reference or "default",
                ", ".join(map(str, seeds)),
                stat(val_rsum(base[k]) for k in seeds), stat(val_rsum(other[k]) for k in seeds),
                stat(rsum(base[k]) for k in seeds), stat(rsum(other[k]) for k in seeds),
                signed([rsum(other[k]) - rsum(base[k]) for k in seeds]),
            ])
        return _table(["method", "cell", "variant", "reference", "seeds", "best val rSum, reference", "… variant",
                       "test rSum, reference", "… variant", "Δ test (variant − reference)"], rows)

    def co_divide_cells(self) -> list[tuple[float, int, str, str]]:
        """The cells that hold DisNCL runs with co-divide (Eq. 6n): (per-image noise rate, draw, the plain runs'
        ablation, the co-divided runs'), at the preset's epochs and at the convergence check's."""
        pairs = {CO_DIVIDE: "", CO_DIVIDE_LONG: LONG_SCHEDULE}
        return sorted({(s.noise_rate, s.data_seed, pairs[s.ablation], s.ablation)
                       for s in self.preset.extra_runs_resolved()
                       if s.method == "disncl" and s.ablation in pairs and s.noise_kind == "image"
                       and self.cell("disncl", "image", s.noise_rate, s.ablation, draw=s.data_seed)},
                      key=lambda c: (c[2], c[0], c[1]))

    def co_divide_table(self) -> str:
        """Per cell: each method with and without co-divide (Eq. 6n), test rSum and noise AUROC at the seeds DisNCL
        ran it at, and the paired differences that say whether it helps DisNCL and whether DisNCL still leads once
        NCR-style divides for itself as NCR does."""
        rows = []
        for rate, draw, plain, co in self.co_divide_cells():
            ours, ours_co, ncr, ncr_co, srem = ("disncl", plain), ("disncl", co), ("ncr", plain), ("ncr", co), \
                ("srem", plain)
            cell = _SeedRuns({key: {r["spec"]["seed"]: r for r in self.cell(key[0], "image", rate, key[1], draw=draw)}
                              for key in (ours, ours_co, ncr, ncr_co, srem)}, ours_co)
            draw_no = self.preset.draws.index(draw) + 1 if draw in self.preset.draws else draw
            epochs = LONG_SCHEDULE_EPOCHS if plain == LONG_SCHEDULE else self.preset.epochs
            rows.append([
                f"{rate:.0%}, draw {draw_no}, {epochs} epochs", ", ".join(map(str, cell.seeds)),
                *(cell.column(key) for key in (ncr, ncr_co, srem, ours, ours_co)),
                cell.diff(ours, ours_co, val_rsum), cell.diff(ours, ours_co), cell.diff(ncr, ncr_co),
                cell.diff(ncr_co, ours_co), cell.diff(srem, ours_co),
                f"{cell.column(ours, auroc, 3)} → {cell.column(ours_co, auroc, 3)}",
                f"{cell.column(ncr, auroc, 3)} → {cell.column(ncr_co, auroc, 3)}",
            ])
        return _table(["cell", "seeds", "NCR-style", "NCR-style + co-divide", "SREM", "DisNCL", "DisNCL + co-divide",
                       "Δ best val, DisNCL: co-divide − own split", "Δ test, DisNCL: co-divide − own split",
                       "Δ test, NCR-style: co-divide − own split", "DisNCL + co − NCR-style + co",
                       "DisNCL + co − SREM", "noise AUROC, DisNCL → + co", "noise AUROC, NCR-style → + co"], rows)

    def clean_share_cells(self) -> list[tuple[float, int]]:
        """The (per-image noise rate, draw) cells that hold DisNCL runs with the clean-share cap (Eq. 6o)."""
        return sorted({(s.noise_rate, s.data_seed) for s in self.preset.extra_runs_resolved()
                       if s.method == "disncl" and s.ablation in CLEAN_SHARE_RUNS
                       and self.cell("disncl", "image", s.noise_rate, s.ablation, draw=s.data_seed)})

    def clean_share_table(self) -> str:
        """Per cell, one row a run kind: DisNCL's own split, capped at the cell's clean share (Eq. 6o), capped ten
        points too high, with co-divide and with both, and the baselines with and without the cap; test rSum, the
        differences paired by seed against the split the row changes and against DisNCL with the same split
        machinery, and what the last epoch's split trusts (clean precision and recall)."""
        own, cap = ("disncl", ""), ("disncl", CLEAN_SHARE_KNOWN)
        co, co_cap = ("disncl", CO_DIVIDE), ("disncl", CO_DIVIDE_SHARE_KNOWN)
        detached_cap = ("disncl", DETACHED_SHARE_KNOWN)
        # (row, the run it changes one thing of, DisNCL with the same split machinery)
        kinds = [(own, None, None), (cap, own, None), (("disncl", CLEAN_SHARE_OVER), own, None),
                 (("disncl", LOSS_SHARE_KNOWN), cap, None), (detached_cap, cap, None),
                 (co, own, None), (co_cap, co, None)]
        kinds += [row for m in ("srem", "ncr")
                  for row in (((m, ""), None, own), ((m, CLEAN_SHARE_KNOWN), (m, ""), cap))]
        rows = []
        for rate, draw in self.clean_share_cells():
            runs = {key: {r["spec"]["seed"]: r for r in self.cell(key[0], "image", rate, key[1], draw=draw)}
                    for key, _, _ in kinds}
            # Read at the seeds of the first capped run kind the cell holds (the cap itself where it ran).
            cell = _SeedRuns(runs, next(k for k, base, _ in kinds if base and k[1] in CLEAN_SHARE_RUNS and runs[k]))
            draw_no = self.preset.draws.index(draw) + 1 if draw in self.preset.draws else draw
            for key, base, ours in kinds:
                if not runs[key]:
                    continue
                label = LABELS[key[0]] + (f" + {_CLEAN_SHARE_LABELS[key[1]]}" if key[1] else "")
                rows.append([
                    f"{rate:.0%}, draw {draw_no}", label, ", ".join(str(k) for k in cell.seeds if k in runs[key]),
                    cell.column(key),
                    cell.diff(base, key, val_rsum) if base else "", cell.diff(base, key) if base else "",
                    cell.diff(key, ours) if ours else "",
                    cell.diff(key, detached_cap) if ours and runs[detached_cap] else "",
                    f"{cell.column(key, clean_precision, 2)} / {cell.column(key, clean_recall, 2)}",
                ])
        return _table(["cell", "run", "seeds", "test rSum", "Δ best val, against the run it changes",
                       "Δ test, against the run it changes", "DisNCL (same split) − this, test",
                       "DisNCL + cap, towers-only warm-up − this, test",
                       "clean precision / recall of the last split"], rows)

    def clean_rsum(self) -> float:
        """DisNCL's mean test rSum on clean data: what the perfect-detector shares are of."""
        return _mean(rsum(r) for r in self.cell("disncl", "image", 0.0))

    def oracle_rates(self) -> list[float]:
        """The per-image noise rates that hold DisNCL runs with the perfect detector (``oracle_split``)."""
        return [rate for rate in self.preset.noise_rates if rate > 0 and self.cell("disncl", "image", rate, ORACLE)]

    def oracle_table(self) -> str:
        """Per noise rate: DisNCL against the same method with a perfect detector (the ground truth as its clean
        probability, from the first epoch, and after the warm-up), each also as a share of DisNCL's clean rSum;
        NCR-style with the perfect detector beside it."""
        clean = self.clean_rsum()

        def share(values: dict[int, float]) -> list[str]:
            return [stat(values.values()), f"{_mean(values.values()) / clean:.0%}" if values else "—"]

        rows = []
        for rate in self.oracle_rates():
            # The grid's seeds, also at the focus cell (which has more): the references run at those.
            ours = {r["spec"]["seed"]: rsum(r) for r in self.cell("disncl", "image", rate)
                    if r["spec"]["seed"] in self.preset.seeds}
            row = [f"{rate:.0%}", *share(ours)]
            for ablation in (ORACLE, ORACLE_AFTER_WARMUP):
                theirs = {r["spec"]["seed"]: rsum(r) for r in self.cell("disncl", "image", rate, ablation)}
                row += [*share(theirs), signed([ours[k] - theirs[k] for k in sorted(ours.keys() & theirs.keys())])]
            rows.append(row + share({r["spec"]["seed"]: rsum(r) for r in self.cell("ncr", "image", rate, ORACLE)}))
        return _table(["per-image noise", "DisNCL", "% of its clean", "perfect detector, from epoch 1",
                       "% of clean", "DisNCL − it (paired)", "perfect detector after warm-up", "% of clean",
                       "DisNCL − it (paired)", "NCR-style, perfect detector", "% of clean"], rows)

    def paired(self, base: str, base_ablation: str, other: str, other_ablation: str = "",
               space: str = "best", draw: int | None = None, other_space: str | None = None,
               confound: float = 0.0) -> list[float]:
        """rSum(other) − rSum(base) at the focus cell of ``draw`` (with confound ρ = ``confound``), one value per
        seed both have run."""
        a = {r["spec"]["seed"]: rsum(r, space) for r in self.focus(base, base_ablation, draw, confound)}
        b = {r["spec"]["seed"]: rsum(r, other_space or space)
             for r in self.focus(other, other_ablation, draw, confound)}
        return [b[seed] - a[seed] for seed in sorted(a.keys() & b.keys())]

    def rate_diffs(self, kind: str, rate: float, method: str, draw: int, ablation: str = "") -> list[float]:
        """DisNCL (own space) minus ``method`` at a grid cell on ``draw``, paired by seed; ``ablation`` the variant
        both ran (the convergence check's longer schedule)."""
        ours = {r["spec"]["seed"]: rsum(r) for r in self.cell("disncl", kind, rate, ablation, draw=draw)}
        theirs = {r["spec"]["seed"]: rsum(r) for r in self.cell(method, kind, rate, ablation, draw=draw)}
        return [ours[s] - theirs[s] for s in sorted(ours.keys() & theirs.keys())]

    def schedule_rates(self) -> list[float]:
        """The per-image noise rates the convergence check (``LONG_SCHEDULE``) runs at."""
        return sorted({s.noise_rate for s in self.preset.extra_runs_resolved() if s.ablation == LONG_SCHEDULE})

    def schedule_table(self) -> str:
        """Per method, rate and draw: the preset's schedule against the longer one, by seed — the selected epoch,
        the change over the last epochs and test rSum."""
        rows = []
        for rate in self.schedule_rates():
            for k, draw in enumerate(self.preset.draws):
                for method in self.methods:
                    short = {r["spec"]["seed"]: r for r in self.cell(method, "image", rate, draw=draw)}
                    long = {r["spec"]["seed"]: r for r in self.cell(method, "image", rate, LONG_SCHEDULE, draw=draw)}
                    seeds = sorted(short.keys() & long.keys())
                    if not seeds:
                        continue
                    curves = [[_val_curve(runs[s]) for s in seeds] for runs in (short, long)]
                    rows.append([
                        LABELS[method], f"{rate:.0%}, draw {k + 1}", ", ".join(map(str, seeds)),
                        *(stat(float(np.argmax(c) + 1) for c in cs) for cs in curves),
                        *(signed([float(c[-1] - c[-1 - LAST_EPOCHS]) for c in cs]) for cs in curves),
                        stat(rsum(short[s]) for s in seeds), stat(rsum(long[s]) for s in seeds),
                        signed([rsum(long[s]) - rsum(short[s]) for s in seeds]),
                    ])
        n, m = LONG_SCHEDULE_EPOCHS, self.preset.epochs
        return _table(["method", "per-image noise, draw", "seeds", f"selected epoch (of {m})",
                       f"selected epoch (of {n})", f"val change over the last {LAST_EPOCHS} epochs, {m} epochs",
                       f"… {n} epochs", f"test rSum, {m} epochs", f"… {n} epochs", f"Δ test ({n} − {m})"], rows)

    def schedule_diffs_table(self) -> str:
        """DisNCL minus each baseline with the longer schedule, paired by seed, per rate and draw, and whether the
        sign holds on both draws."""
        rows = []
        baselines = [m for m in self.methods if m != "disncl" and METHODS[m].uses_split]
        for rate in (r for r in self.schedule_rates() if r > 0):
            row = [f"{rate:.0%} per image"]
            for method in baselines:
                per_draw = [self.rate_diffs("image", rate, method, d, LONG_SCHEDULE) for d in self.preset.draws]
                kinds = [classify(d) if len(d) >= 2 else "" for d in per_draw]
                row += [f"{signed(d)} ({kind})" if d else "—" for d, kind in zip(per_draw, kinds, strict=True)]
                agreed = kinds[0] in ("leads", "trails") and len(set(kinds)) == 1
                row.append("—" if not all(kinds) else kinds[0] if agreed else "no verdict")
            rows.append(row)
        header = ["cell"]
        for method in baselines:
            header += [f"DisNCL − {LABELS[method]}, draw {k + 1}" for k in range(len(self.preset.draws))]
            header.append("verdict")
        return _table(header, rows)

    def _rate_cells(self) -> list[tuple[str, float]]:
        cells = [("image", rate) for rate in self.preset.noise_rates if rate > 0]
        return cells + [("caption", rate) for rate in self.preset.caption_rates]

    def rate_table(self) -> str:
        """DisNCL (own space) minus each baseline, paired by seed, at every noisy cell of the grid, on each draw
        the cell was run on."""
        rows = []
        for kind, rate in self._rate_cells():
            for k, draw in enumerate(self.preset.draws):
                if k and not self.cell("disncl", kind, rate, draw=draw):
                    continue
                row = [f"{rate:.0%} per {kind}" + (f", draw {k + 1}" if k else "")]
                for method in self.methods:
                    if method == "disncl":
                        continue
                    diffs = self.rate_diffs(kind, rate, method, draw)
                    row.append(f"{signed(diffs)} ({classify(diffs) if len(diffs) >= 2 else 'one seed'})" if diffs
                               else "—")
                rows.append(row)
        return _table(["cell"] + [f"DisNCL − {LABELS[m]}" for m in self.methods if m != "disncl"], rows)

    def comparisons(self) -> list[tuple[str, tuple[str, str, str], tuple[str, str, str]]]:
        """The claims the bench checks: (label, base run, other run), each run as (method, ablation, space)."""
        out = []
        for variant in ("", *self.preset.variants):
            name = "DisNCL" if not variant else f"DisNCL '{variant}'"
            out += [(f"{name} (MII) vs {LABELS[m]}", (m, "", "best"), ("disncl", variant, "best"))
                    for m in self.methods if m != "disncl"]
            out.append((f"{name}: MII vs full features", ("disncl", variant, "full"), ("disncl", variant, "mii")))
            if variant:
                out.append((f"{name} vs DisNCL default (MII)", ("disncl", "", "best"), ("disncl", variant, "best")))
        return out

    def paired_table(self) -> str:
        """Paired per-seed differences at the focus cell, on every data draw, and whether the sign holds."""
        rows = []
        for label, (bm, ba, bs), (om, oa, os_) in self.comparisons():
            row, kinds = [label], []
            for draw in self.preset.draws:
                diffs = self.paired(bm, ba, om, oa, space=bs, draw=draw, other_space=os_)
                kinds.append(classify(diffs) if len(diffs) >= 2 else "")
                row += [", ".join(f"{d:+.1f}" for d in diffs) or "—", signed(diffs), kinds[-1]]
            if len(self.preset.draws) > 1:
                complete = all(len(self.paired(bm, ba, om, oa, space=bs, draw=d, other_space=os_))
                               == len(self.preset.focus_seeds) for d in self.preset.draws)
                agreed = kinds[0] in ("leads", "trails") and len(set(kinds)) == 1
                row.append(kinds[0] if agreed and complete else "pending" if agreed else "no verdict")
            rows.append(row)
        header = ["comparison (other − base)"]
        for k, draw in enumerate(self.preset.draws):
            tag = f"draw {k + 1} (data seed {draw})"
            header += [f"{tag}: per seed", f"{tag}: mean ± sd", f"{tag}: sign"]
        if len(self.preset.draws) > 1:
            header.append("verdict (holds on both draws)")
        return _table(header, rows)

    def convergence_table(self) -> str:
        """Per method at 0 % and the focus rate: selected epoch, final validation rSum, drift over the last epochs."""
        rows = []
        for rate in sorted({0.0, self.preset.focus_rate} & set(self.preset.noise_rates)):
            for method in self.methods:
                curves = [_val_curve(r) for r in self.cell(method, "image", rate)]
                curves = [c for c in curves if len(c) > LAST_EPOCHS]
                if not curves:
                    continue
                rows.append([
                    f"{LABELS[method]}, {rate:.0%} noise", str(len(curves)), str(len(curves[0])),
                    stat(float(np.argmax(c) + 1) for c in curves),
                    stat(float(max(c)) for c in curves), stat(float(c[-1]) for c in curves),
                    signed([float(c[-1] - c[-1 - LAST_EPOCHS]) for c in curves]),
                ])
        return _table(["method, cell", "runs", "epochs", "selected (best val) epoch", "best val rSum",
                       "last-epoch val rSum", f"change over the last {LAST_EPOCHS} epochs"], rows)

    def ceiling_line(self) -> str:
        """Clean InfoNCE test rSum beside the exact-match ceiling of the test split."""
        rs = self.cell("infonce", "image", 0.0)
        ceilings = [r["ceiling"]["rsum"] for r in rs if r.get("ceiling")]
        if not rs or not ceilings:
            return ""
        shape = stat((_probe(r, "img_h", "shape_single") for r in rs), 2)
        chance = stat((_probe(r, "img_h", "shape_single", "chance") for r in rs), 2)
        return (f"Clean InfoNCE reaches test rSum {stat(rsum(r) for r in rs)} against the test split's exact-match "
                f"ceiling of {ceilings[0]:.1f} (a model that matches every description perfectly but ranks images "
                "with identical descriptions at random; docs/method.md Eq. 11c). Its image features give the shape "
                f"of one-object test images to a linear probe at {shape} (chance {chance}).")

    def confound_table(self) -> str:
        rows = []
        for method in Preset.disncl_first(self.preset.confound_methods):
            for space in METHODS[method].spaces:
                row = [LABELS[method] + (f" ({space})" if len(METHODS[method].spaces) > 1 else "")]
                for rho in self.preset.confounds:
                    rs = [r for r in self.cell(method, "image", self.preset.focus_rate, confound=rho)
                          if r["spec"]["seed"] == 0]
                    row.append(f"{stat(rsum(r, space) for r in rs)} / {stat((auroc(r) for r in rs), 3)}")
                rows.append(row)
        return _table(["method"] + [f"ρ = {rho:g} (rSum / AUROC)" for rho in self.preset.confounds], rows)

    def mii_minus_full(self, rho: float, draw: int, ablation: str = "") -> list[float]:
        """DisNCL's MII minus full-feature test rSum at confound ``rho`` on ``draw``, one per run, seeds in order
        (the defaults, or the variant ``ablation``)."""
        runs = sorted(self.focus("disncl", ablation, draw, rho), key=lambda r: r["spec"]["seed"])
        return [rsum(r, "mii") - rsum(r, "full") for r in runs]

    def confound_pairs_table(self) -> str:
        """DisNCL's MII minus full-feature test rSum at each confound ρ, one difference per run (the same model
        read in two spaces), on every draw, over whatever seeds the preset ran at that ρ."""
        rows = []
        for rho in self.preset.confounds:
            row = [f"ρ = {rho:g}"]
            for draw in self.preset.draws:
                diffs = self.mii_minus_full(rho, draw)
                row += [", ".join(f"{d:+.1f}" for d in diffs) or "—", signed(diffs),
                        classify(diffs) if len(diffs) >= 2 else "one seed" if diffs else "—"]
            rows.append(row)
        header = ["confound"]
        for k, draw in enumerate(self.preset.draws):
            header += [f"draw {k + 1} (data seed {draw}): MII − full per seed", "mean ± sd", "sign"]
        return _table(header, rows)

    def confound_probe_table(self) -> str:
        """Where the tied exclusive factors go as the confound strengthens: linear-probe accuracy of the image
        background and the caption filler from DisNCL's MII, MEI and full features, beside MII − full test rSum,
        per ρ and draw over every DisNCL run of the focus rate at that ρ (the defaults, then each of the preset's
        ``confound_variants``)."""
        rows = []
        for ablation in ("", *self.preset.confound_variants):
            for rho in self.preset.confounds:
                for k, draw in enumerate(self.preset.draws):
                    rs = self.focus("disncl", ablation, draw, rho)
                    if not rs:
                        continue
                    row = [_variant_name(ablation) if ablation else "defaults", f"ρ = {rho:g}", f"{k + 1}",
                           str(len(rs))]
                    for modality, factor in (("img", "background"), ("txt", "filler")):
                        row += [stat((_probe(r, f"{modality}_{code}", factor) for r in rs), 2) for code in "zuh"]
                    row.append(signed(self.mii_minus_full(rho, draw, ablation)))
                    rows.append(row)
        runs = self.cell("disncl", "image", self.preset.focus_rate, confound=self.preset.confounds[0])

        def chance(code: str, factor: str) -> str:
            return stat((_probe(r, code, factor, "chance") for r in runs), 2)

        header = ["DisNCL", "confound", "draw", "runs",
                  f"image background from MII (chance {chance('img_z', 'background')})", "… from MEI", "… from full",
                  f"caption filler from MII (chance {chance('txt_z', 'filler')})", "… from MEI", "… from full",
                  "MII − full test rSum"]
        return _table(header, rows)

    def validation_choice_table(self) -> str:
        """Each of the preset's ``confound_variants`` against the defaults, chosen per cell (ρ, draw) by the mean best
        validation rSum over the seeds both ran (the benchmark's validation split has no confound, so it rewards no
        shortcut): the choice, its paired test difference from the defaults, and whether it is the one test
        prefers. Cells with fewer than two paired seeds are left out."""
        rows = []
        for ablation in self.preset.confound_variants:
            for rho in self.preset.confounds:
                for k, draw in enumerate(self.preset.draws):
                    base = {r["spec"]["seed"]: r for r in self.focus("disncl", "", draw, rho)}
                    other = {r["spec"]["seed"]: r for r in self.focus("disncl", ablation, draw, rho)}
                    seeds = sorted(base.keys() & other.keys())
                    if len(seeds) < 2:
                        continue
                    val = [_mean(val_rsum(runs[s]) for s in seeds) for runs in (base, other)]
                    test = [_mean(rsum(runs[s]) for s in seeds) for runs in (base, other)]
                    chose_variant = val[1] > val[0]
                    diffs = [rsum(other[s]) - rsum(base[s]) if chose_variant else 0.0 for s in seeds]
                    rows.append([_variant_name(ablation), f"ρ = {rho:g}", f"{k + 1}", str(len(seeds)),
                                 f"{val[0]:.1f}", f"{val[1]:.1f}", "variant" if chose_variant else "defaults",
                                 f"{test[0]:.1f}", f"{test[1]:.1f}", signed(diffs),
                                 "yes" if chose_variant == (test[1] > test[0]) else "no"])
        return _table(["variant", "confound", "draw", "seeds", "mean best val rSum, defaults", "… variant",
                       "chosen on validation", "test rSum, defaults", "… variant", "chosen − defaults, test (paired)",
                       "test prefers the choice"], rows)

    def probe_table(self) -> str:
        rs = self.focus("disncl")
        base = self.focus("infonce")
        rows = []
        for modality, name, groups in (("img", "image", IMAGE_FACTORS), ("txt", "caption", TEXT_FACTORS)):
            factors = [*groups["shared"], *groups["exclusive"]]
            for code in ("z", "u", "h"):
                row = [f"{name} {CODE_LABELS[code]} (DisNCL)"]
                for factor in factors:
                    row.append(stat((_probe(r, f"{modality}_{code}", factor) for r in rs), 2))
                rows.append(row)
            if base:
                rows.append([f"{name} full feature (InfoNCE)"] + [
                    stat((_probe(r, f"{modality}_h", f) for r in base), 2) for f in factors])
            if rs:
                rows.append([f"{name}: chance (majority class)"] + [
                    stat((_probe(r, f"{modality}_z", f, "chance") for r in rs), 2) for f in factors])
        header = ["code → factor (accuracy)", "shared: shape (one-object images)", "shared: shape of the first object",
                  "shared: colour", "exclusive 1", "exclusive 2"]
        return _table(header, rows)

    def mi_table(self) -> str:
        """Per DisNCL variant: I(MII; MEI) with its floor, and what MII and MEI codes reveal of two factors."""
        rows = []
        for ablation in ("", *self.preset.ablations, *self.preset.variants):
            rs = self.focus("disncl", ablation)
            if not rs:
                continue

            def acc(modality: str, code: str, factor: str, rs=rs) -> str:
                return stat((r["probes"][f"{modality}_{code}"][factor]["accuracy"] for r in rs), 2)

            rows.append([
                "DisNCL (all terms)" if not ablation else ABLATION_LABELS[ablation],
                ", ".join(str(r["spec"]["seed"]) for r in rs),
                _mi_cell(rs, "img"),
                _mi_cell(rs, "txt"),
                f"{acc('img', 'z', 'background')} / {acc('img', 'u', 'background')}",
                f"{acc('img', 'z', 'colour0')} / {acc('img', 'u', 'colour0')}",
                f"{acc('txt', 'z', 'template')} / {acc('txt', 'u', 'template')}",
            ])
        return _table(["DisNCL variant", "seeds", "I(MII; MEI) image, nats (shuffled floor)", "caption (floor)",
                       "image background: MII / MEI", "image colour: MII / MEI", "caption template: MII / MEI"],
                      rows)

    # ----------------------------------------------------------------------------------- verdicts
    def verdicts(self) -> list[str]:
        """Claims checked against this run's numbers, stated whichever way they come out."""
        out = []
        f = self.preset.focus_rate
        draws = self.preset.draws
        confirm = self.preset.confirm_variants
        confirmed = set(self.preset.variants if confirm is None else confirm)
        for label, (bm, ba, bs), (om, oa, os_) in self.comparisons():
            per_draw = [self.paired(bm, ba, om, oa, space=bs, draw=d, other_space=os_) for d in draws]
            if len(per_draw[0]) < 2:
                continue
            kinds = [classify(d) for d in per_draw]
            seen = _seen(kinds, per_draw)
            if len(draws) == 1:
                word = {"leads": "ahead on every seed", "trails": "behind on every seed",
                        "mixed": "sign changes with the seed"}[kinds[0]]
                out.append(f"At {f:.0%} per-image noise, {label}: {word} ({seen}; one data draw, so a hint, not a "
                           "verdict).")
            elif oa and oa not in confirmed:
                out.append(f"Draw 1 only at {f:.0%} per-image noise, {label}: {seen} (a variant validation did not "
                           "choose; not re-run on the second draw).")
            elif any(len(d) < len(self.preset.focus_seeds) for d in per_draw):
                out.append(f"Pending at {f:.0%} per-image noise, {label}: {seen} (a verdict needs all "
                           f"{len(self.preset.focus_seeds)} seeds on both draws).")
            else:
                out.append(_both_draws(f"at {f:.0%} per-image noise, {label}", kinds, seen))
        # Where the confound sweep has every focus seed on both draws: MII against full at that ρ (for the
        # defaults ρ = 0 is the focus cell's comparison above), and each confound variant against the defaults.
        for ablation in ("", *self.preset.confound_variants):
            name = f"DisNCL with {_variant_name(ablation)}" if ablation else "DisNCL"
            for rho in self.preset.confounds:
                where = f"at {f:.0%} per-image noise and confound ρ = {rho:g}"
                checks = [("MII vs full features", [self.mii_minus_full(rho, d, ablation) for d in draws])]
                if ablation:
                    checks.append(("against the defaults", [self.paired("disncl", "", "disncl", ablation, "mii", d,
                                                                         confound=rho) for d in draws]))
                for what, per_draw in checks:
                    if (not rho and not ablation) or len(draws) < 2 or any(
                            len(d) < len(self.preset.focus_seeds) for d in per_draw):
                        continue
                    out.append(_draws_verdict(f"{where}, {name}: {what}", per_draw))
        # The grid's other noisy cells where they ran on both draws (at least two seeds each).
        for kind, rate in self._rate_cells():
            if (kind, rate) == ("image", f) or len(draws) < 2:
                continue
            for method in (m for m in self.methods if m != "disncl"):
                per_draw = [self.rate_diffs(kind, rate, method, d) for d in draws]
                if any(len(d) < 2 for d in per_draw):
                    continue
                out.append(_draws_verdict(f"at {rate:.0%} per-{kind} noise, DisNCL vs {LABELS[method]}", per_draw))
        for rate in (r for r in self.schedule_rates() if r > 0):
            for method in (m for m in self.methods if m != "disncl" and METHODS[m].uses_split):
                per_draw = [self.rate_diffs("image", rate, method, d, LONG_SCHEDULE) for d in draws]
                if len(draws) < 2 or any(len(d) < 2 for d in per_draw):
                    continue
                out.append(_draws_verdict(f"at {rate:.0%} per-image noise with {LONG_SCHEDULE_EPOCHS} epochs, DisNCL "
                                          f"vs {LABELS[method]}", per_draw))
        # MII against full at convergence: the focus cell's comparison again, once every focus seed of both draws ran
        # the longer schedule (is the 10-epoch tie a budget's?).
        long_mii = [self.mii_minus_full(0.0, d, LONG_SCHEDULE) for d in draws]
        if len(draws) > 1 and all(len(d) == len(self.preset.focus_seeds) for d in long_mii):
            out.append(_draws_verdict(f"at {f:.0%} per-image noise with {LONG_SCHEDULE_EPOCHS} epochs, DisNCL: MII "
                                      "vs full features", long_mii))
        for rate in self.preset.noise_rates:
            cells = {m: _mean(rsum(r) for r in self.cell(m, "image", rate)) for m in self.methods}
            if all(v == v for v in cells.values()):
                winner = max(cells, key=cells.get)
                out.append(f"{rate:.0%} noise: highest rSum {LABELS[winner]} ({cells[winner]:.1f}); " + ", ".join(
                    f"{LABELS[m]} {v:.1f}" for m, v in cells.items() if m != winner) + ".")
        clean = self.clean_rsum()
        for rate in self.oracle_rates():
            ours = _mean(rsum(r) for r in self.cell("disncl", "image", rate))
            perfect = _mean(rsum(r) for r in self.cell("disncl", "image", rate, ORACLE))
            out.append(f"{rate:.0%} noise: DisNCL {ours:.1f} is {ours / clean:.0%} of its clean rSum ({clean:.1f}); "
                       f"with a perfect detector from the first epoch it reaches {perfect:.1f} "
                       f"({perfect / clean:.0%}).")
        long_clean = _mean(rsum(r) for r in self.cell("disncl", "image", 0.0, LONG_SCHEDULE))
        for rate in (r for r in self.schedule_rates() if r > 0 and long_clean == long_clean):
            ours = _mean(rsum(r) for d in draws for r in self.cell("disncl", "image", rate, LONG_SCHEDULE, draw=d))
            if ours != ours:
                continue
            n = LONG_SCHEDULE_EPOCHS
            out.append(f"{rate:.0%} noise with {n} epochs: DisNCL {ours:.1f} (both draws) is "
                       f"{ours / long_clean:.0%} of its clean rSum at {n} epochs ({long_clean:.1f}).")
        for ablation in (*self.preset.ablations, *self.preset.variants):
            base = variant_base("disncl", ablation)
            diffs = self.paired("disncl", base, "disncl", ablation)
            if diffs:
                kind = "Variant" if ablation in self.preset.variants else "Ablation"
                label = ABLATION_LABELS[ablation].removeprefix("variant: ")
                against = f"'{base}'" if base else "all terms"
                out.append(f"{kind} '{label}': rSum {signed(diffs)} vs {against} at the same seed(s) ({len(diffs)}).")
        rs = self.focus("disncl")
        if rs and "img_u" in rs[0]["probes"]:
            for modality, excl in (("img", "background"), ("txt", "template")):
                z = _mean(r["probes"][f"{modality}_z"][excl]["accuracy"] for r in rs)
                u = _mean(r["probes"][f"{modality}_u"][excl]["accuracy"] for r in rs)
                zs = _mean(r["probes"][f"{modality}_z"]["colour0"]["accuracy"] for r in rs)
                us = _mean(r["probes"][f"{modality}_u"]["colour0"]["accuracy"] for r in rs)
                out.append(f"Disentanglement ({'image' if modality == 'img' else 'caption'}): exclusive factor "
                           f"'{excl}' from MII {z:.2f} vs from MEI {u:.2f}; shared factor 'colour' from MII {zs:.2f} "
                           f"vs from MEI {us:.2f} (disentangled would be: MEI ≫ MII on the first, MII ≫ MEI on the "
                           "second).")
        return out

    # -------------------------------------------------------------------------------------- plots
    def plots(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        written = [self._plot_vs_noise(folder / "rsum_vs_noise.png", "rSum", lambda r, s: rsum(r, s)),
                   self._plot_recall1(folder / "r1_vs_noise.png"),
                   self._plot_vs_noise(folder / "auroc_vs_noise.png", "noise-detection AUROC (GMM)",
                                       lambda r, s: auroc(r), spaces_for_disncl=("mii",), skip_zero=True),
                   self._plot_cost(folder / "cost.png"),
                   self._plot_curves(folder / "val_curves.png")]
        if self.schedule_rates():
            written.append(self._plot_schedules(folder / "long_schedule.png"))
        tsne = self._plot_tsne(folder / "tsne_mii_mei.png")
        return written + ([tsne] if tsne else [])

    def _plot_vs_noise(self, path: Path, ylabel: str, metric, spaces_for_disncl=("mii", "full"),
                       skip_zero: bool = False) -> Path:
        fig, axes = plt.subplots(1, len(self.preset.noise_kinds), figsize=(5.5 * len(self.preset.noise_kinds), 4),
                                 squeeze=False)
        for ax, kind in zip(axes[0], self.preset.noise_kinds, strict=True):
            rates = [r for r in self.preset.noise_rates if r > 0 or not skip_zero]
            for method in self.methods:
                for space in (spaces_for_disncl if method == "disncl" else ("full",)):
                    ys = [_mean(metric(r, space) for r in self.cell(method, kind, rate)) for rate in rates]
                    label = LABELS[method] + (f" ({space})" if method == "disncl" and len(spaces_for_disncl) > 1
                                              else "")
                    ax.plot(rates, ys, marker="o", color=COLOURS[method], ls="--" if space == "full" and
                            method == "disncl" else "-", label=label)
            ax.set(xlabel=f"noise rate ({kind} convention)", ylabel=ylabel, title=f"{ylabel} vs noise ({kind})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return _save(fig, path)

    def _plot_recall1(self, path: Path) -> Path:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        rates = self.preset.noise_rates
        for ax, direction in zip(axes, ("i2t", "t2i"), strict=True):
            for method in self.methods:
                for space in METHODS[method].spaces:
                    ys = [_mean(recall1(r, direction, space) for r in self.cell(method, "image", rate))
                          for rate in rates]
                    ax.plot(rates, ys, marker="o", color=COLOURS[method],
                            ls="--" if method == "disncl" and space == "full" else "-",
                            label=LABELS[method] + (f" ({space})" if method == "disncl" else ""))
            ax.set(xlabel="noise rate (image convention)", ylabel="R@1 (%)",
                   title="image → text R@1" if direction == "i2t" else "text → image R@1")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return _save(fig, path)

    def _plot_curves(self, path: Path) -> Path:
        """Validation rSum per epoch (mean over seeds) at 0 % noise and at the focus rate: does training converge?"""
        rates = sorted({0.0, self.preset.focus_rate} & set(self.preset.noise_rates))
        fig, axes = plt.subplots(1, len(rates), figsize=(5.5 * len(rates), 4), squeeze=False)
        for ax, rate in zip(axes[0], rates, strict=True):
            for method in self.methods:
                curves = [_val_curve(r) for r in self.cell(method, "image", rate)]
                if not curves:
                    continue
                n = min(len(c) for c in curves)
                mean = np.mean([c[:n] for c in curves], axis=0)
                ax.plot(np.arange(1, n + 1), mean, marker=".", color=COLOURS[method],
                        label=f"{LABELS[method]} ({len(curves)} seeds)")
            ax.set(xlabel="epoch", ylabel="validation rSum (selection space)", title=f"{rate:.0%} per-image noise")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        return _save(fig, path)

    def _plot_schedules(self, path: Path) -> Path:
        """Validation rSum per epoch (mean over the seeds of both draws) with the preset's schedule (dashed) and
        the convergence check's longer one (solid), per rate it runs at."""
        rates = self.schedule_rates()
        cols = min(3, len(rates))
        rows = -(-len(rates) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False)
        for ax in axes.flat[len(rates):]:
            ax.set_visible(False)
        for ax, rate in zip(axes.flat, rates, strict=False):
            for method in self.methods:
                # The preset's runs of the seeds the longer schedule ran, so both curves average the same runs.
                paired = {(d, r["spec"]["seed"]) for d in self.preset.draws
                          for r in self.cell(method, "image", rate, LONG_SCHEDULE, draw=d)}
                for ablation, ls in (("", "--"), (LONG_SCHEDULE, "-")):
                    curves = [_val_curve(r) for d in self.preset.draws
                              for r in self.cell(method, "image", rate, ablation, draw=d)
                              if (d, r["spec"]["seed"]) in paired]
                    if not curves:
                        continue
                    n = min(len(c) for c in curves)
                    ax.plot(np.arange(1, n + 1), np.mean([c[:n] for c in curves], axis=0), ls=ls,
                            color=COLOURS[method], label=f"{LABELS[method]}, {n} epochs ({len(curves)} runs)")
            ax.set(xlabel="epoch", ylabel="validation rSum (selection space)", title=f"{rate:.0%} per-image noise")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        return _save(fig, path)

    def _plot_cost(self, path: Path) -> Path:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        names = [LABELS[m] for m in self.methods]
        secs = [_mean(r["training"]["train_seconds_per_epoch"] for r in self.focus(m)) for m in self.methods]
        mem = [_mean(r["peak_rss_mb"] for r in self.focus(m)) for m in self.methods]
        axes[0].bar(names, secs, color=[COLOURS[m] for m in self.methods])
        axes[0].set(ylabel="seconds", title="training time per epoch")
        axes[1].bar(names, mem, color=[COLOURS[m] for m in self.methods])
        axes[1].set(ylabel="MB", title="peak resident memory (whole process)")
        return _save(fig, path)

    def _plot_tsne(self, path: Path) -> Path | None:
        from sklearn.manifold import TSNE

        rs = [r for r in self.focus("disncl") if r["spec"]["seed"] == self.preset.focus_seeds[0]]
        if not rs or not (Path(rs[0]["run_dir"]) / CODES_FILE).is_file():
            return None
        with np.load(Path(rs[0]["run_dir"]) / CODES_FILE) as codes:
            data = {k: codes[k] for k in codes.files}
        fig, axes = plt.subplots(2, 2, figsize=(9, 8))
        for row, (code, title) in enumerate((("img_z", "image MII"), ("img_u", "image MEI"))):
            xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(data[code])
            for col, (factor, kind) in enumerate((("label_colour0", "shared: colour"),
                                                  ("label_background", "exclusive: background"))):
                ax = axes[row, col]
                ax.scatter(xy[:, 0], xy[:, 1], c=data[factor], cmap="tab10", s=8)
                ax.set(title=f"{title}, coloured by {kind}", xticks=[], yticks=[])
        fig.suptitle("t-SNE of DisNCL codes on the test images")
        return _save(fig, path)


def _probe(r: Result, code: str, factor: str, field: str = "accuracy") -> float:
    """A probe's accuracy (or chance level); NaN for a factor the run's probes did not cover."""
    return float(r["probes"].get(code, {}).get(factor, {}).get(field, float("nan")))


def _val_curve(r: Result) -> np.ndarray:
    """Validation rSum per epoch in the run's selection space."""
    space = _space(r, "best")
    return np.array([c["val_rsum"][space] for c in r["training"]["curve"]], dtype=float)


def _mi_cell(rs: list[Result], modality: str) -> str:
    mi = stat((r["mi"][modality]["mi"] for r in rs), 2)
    return f"{mi} ({stat((r['mi'][modality]['mi_shuffled'] for r in rs), 2)})"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def write_report(preset: Preset, results: list[Result], report: Path, plots: Path, command: str,
                 run_summary: dict[str, Any] | None) -> Path:
    """Write the markdown report (and its plots) for ``results``; returns the report path."""
    rep = Report(preset, results)
    images = rep.plots(plots)
    rel = {p.name: os.path.relpath(p, report.parent) for p in images}
    versions = results[0]["versions"] if results else {}
    groups: dict[str, int] = defaultdict(int)
    for r in results:
        for g in r["groups"]:
            groups[g] += 1
    lines = [
        f"# Benchmark: preset `{preset.name}`",
        "",
        f"Generated by `{command}`. {preset.description[:1].upper() + preset.description[1:]}.",
        "",
        f"Synthetic benchmark (`python -m disncl synth`, generator seed {preset.data.seed}"
        + (f"; the focus cell also on seed {preset.draws[1]}" if len(preset.draws) > 1 else "") + "): "
        f"{preset.data.n_train} training images × {preset.data.train_captions or 5} captions, {preset.data.n_val} "
        "validation and "
        f"{preset.data.n_test} clean test images, {preset.data.image_size}×{preset.data.image_size} px. "
        "Every run uses the same data, model size and schedule; the seed sets both the model initialisation and "
        "the noise draw. Test numbers come from the best-validation checkpoint. rSum is the sum of R@1/5/10 both "
        "ways (max 600); noise AUROC is how well the per-epoch GMM clean probability ranks the true clean pairs.",
        "",
        f"Runs: {len(results)} of the preset's {len(preset.runs())} finished "
        f"({', '.join(f'{g}: {n}' for g, n in groups.items())})"
        + ("; re-running the command finishes the rest." if len(results) < len(preset.runs()) else "."),
    ]
    total = sum(r["wall_seconds"] for r in results)
    lines.append(f"Compute: the runs' wall times add up to {total / 60:.1f} min (a run's time excludes starting "
                 "Python and generating the data).")
    if run_summary:
        lines.append(f"The last `bench` invocation took {run_summary['seconds'] / 60:.1f} min, "
                     f"{run_summary['jobs']} runs at a time with {run_summary['threads_per_job']} thread(s) each "
                     f"({run_summary['ran_now']} of {run_summary['runs']} runs computed by it; failures: "
                     f"{len(run_summary['failed'])}).")
    lines += ["", "## Verdicts", ""]
    if len(preset.draws) > 1:
        lines += [f"A claim is a verdict only when its paired per-seed differences have the same sign on every seed "
                  f"of both data draws (generator seeds {' and '.join(map(str, preset.draws))}); the rest are "
                  "stated as what they are.", ""]
    lines += [f"- {v}" for v in rep.verdicts()]
    lines += ["", f"## Paired differences at {preset.focus_rate:.0%} per-image noise (same seed, same noise draw)", "",
              "rSum of the second named run minus the first, seed by seed; ± is the sd over seeds of the paired "
              "difference.", "", rep.paired_table(), ""]
    lines += ["## Test rSum vs noise rate", ""]
    if rep.ceiling_line():
        lines += [rep.ceiling_line(), ""]
    for kind in preset.noise_kinds:
        lines += [f"{kind} convention (per-{kind} noise):", "", rep.grid_table(kind, rsum), ""]
    extra = tuple(r for r in preset.caption_rates if "caption" not in preset.noise_kinds)
    if extra:
        lines += ["caption convention (per-caption noise):", "", rep.grid_table("caption", rsum, rates=extra), ""]
    lines += ["DisNCL minus each baseline, paired by seed, per cell (the grid's seeds; on the second data draw too "
              "where the preset runs the cell there):", "",
              rep.rate_table(), ""]
    lines += [f"![rSum vs noise]({rel['rsum_vs_noise.png']})", "", f"![R@1 vs noise]({rel['r1_vs_noise.png']})", ""]
    if rep.oracle_rates():
        lines += ["## What a perfect detector reaches (`split.oracle`, docs/method.md §9.9)", "",
                  "The same methods with the ground truth as their clean probability (a reference, not a method: "
                  "every truly mismatched pair flagged, every clean one trusted), from the first epoch and after the "
                  "defaults' 3 warm-up epochs on every pair; test rSum, the grid's seeds, one data draw. The gap to "
                  "the perfect detector is what better detection and a cheaper warm-up can still win; the gap from "
                  "there to clean data is the cost of having fewer correct pairs.", "", rep.oracle_table(), ""]
    lines += ["## Noise-detection AUROC (GMM clean probability vs ground truth)", ""]
    for kind in preset.noise_kinds:
        lines += [f"{kind} convention:", "", rep.auroc_table(kind), ""]
    if extra:
        lines += ["caption convention:", "", rep.auroc_table("caption", extra), ""]
    lines += [f"![AUROC vs noise]({rel['auroc_vs_noise.png']})", ""]
    lines += ["Noise detectors side by side (`python -m disncl audit` reports the same on your data): the learned "
              "clean probability, the score it is fitted on (the pair's distance 1 − cos, Eq. 6e, for every method "
              "with a split since docs/method.md §9.6; Eq. 6's per-pair loss before), and plain cosine similarity "
              "in the tower space and in the MII space, all from the last epoch's `pair_scores.csv` (per-image "
              "noise; the grid's seeds, plus the focus seeds at the focus rate; – where the run's pair scores were "
              "not kept). With Eq. 6's loss the clean probability trailed the pair's own cosine because the loss's "
              "negatives are one random batch (§5.3, Eq. 12b); fitted on the distance, it matches the cosine.",
              "", rep.detector_table(), ""]
    lines += ["## Convergence", "", "Validation rSum per epoch; the checkpoint kept is the best validation epoch.", "",
              rep.convergence_table(), "", f"![validation curves]({rel['val_curves.png']})", ""]
    if rep.schedule_rates():
        lines += [f"## The convergence check: {LONG_SCHEDULE_EPOCHS} epochs (docs/method.md §9.14)", "",
                  f"Every method with a split, today's defaults, trained {LONG_SCHEDULE_EPOCHS} epochs instead of "
                  f"{preset.epochs} "
                  "(the cosine schedule stretched with them, the split's warm-up still 3 epochs) on both data "
                  "draws: do the noisy runs flatten out, and do the verdicts stand when they do? Against the "
                  f"{preset.epochs}-epoch runs of the same seed and noise draw:", "", rep.schedule_table(), "",
                  f"DisNCL minus each baseline at {LONG_SCHEDULE_EPOCHS} epochs, paired by seed (InfoNCE, which "
                  "peaks in its first epochs and then fits the noise, is left out):", "",
                  rep.schedule_diffs_table(), "", f"![longer schedule]({rel['long_schedule.png']})", ""]
    lines += [f"## {preset.focus_rate:.0%} per-image noise over seeds {list(preset.focus_seeds)}: accuracy and cost",
              "", rep.focus_table(), "", f"![cost]({rel['cost.png']})", ""]
    if preset.ablations:
        lines += [f"## DisNCL ablations and variants ({preset.focus_rate:.0%} per-image noise)", "",
                  rep.ablation_table(), ""]
    if any(spec.ablation not in NOT_VARIANTS for spec in preset.extra_runs):
        lines += ["## Variants at other cells", "",
                  "A variant run outside the focus cell against its reference run of the same cell and seed (same "
                  "noise draw): the default, or for a variant tried on the §9.5 loss split, `loss_split`; "
                  "defaults are chosen on the validation columns.", "", rep.cells_table(), ""]
    if rep.co_divide_cells():
        lines += ["## Two networks that divide for each other (co-divide, Eq. 6n, docs/method.md §9.15)", "",
                  "Each method as it ships (one network judging its own pairs) and with a second network whose split "
                  "it trains on (`train.co_divide`, NCR's co-divide; twice the training time); "
                  "test rSum and the differences paired by seed, on validation for the choice. The noise AUROC is "
                  "the run's own network's fit, at the last epoch.", "", rep.co_divide_table(), ""]
    if rep.clean_share_cells():
        lines += ["## A known clean share (Eq. 6o, docs/method.md §9.16)", "",
                  "The split capped at the cell's clean share, 1 − noise rate (`split.clean_share`: at most that "
                  "share of the pairs is trusted, those nearest their partners), as a user who knows the noise rate "
                  "would set it; with a share ten points too high; on co-divide's splits (Eq. 6n); and the "
                  "baselines with the same cap. Test rSum and the differences paired by seed: against the run the "
                  "row changes one thing of (validation for the choice), and for a baseline, DisNCL with the same "
                  "split machinery minus it, and DisNCL with the cap after a towers-only warm-up (Eq. 2c) minus it. "
                  "Clean precision and recall are the last epoch's split's (the noise AUROC of a capped split ties "
                  "every pair beyond the cap).",
                  "", rep.clean_share_table(), ""]
    if preset.confound_methods and len(preset.confounds) > 1:
        lines += ["## The exclusive-information confound ρ", "",
                  "ρ: probability that a training caption's filler phrase is tied to its image's background "
                  f"(independent at test time); {preset.focus_rate:.0%} per-image noise, seed 0.", "",
                  rep.confound_table(), "",
                  "MII minus full features, DisNCL's test rSum read in both spaces, per run at each ρ and draw "
                  "(seeds in order; the sweep's seed 0, and more seeds where the preset adds them):", "",
                  rep.confound_pairs_table(), "",
                  "Where the tied background goes (docs/method.md §9.12): linear probes (as in the next section) "
                  "for the image background and the caption filler phrase, the two factors the confound ties in "
                  "training, from DisNCL's codes at each ρ and draw:", "", rep.confound_probe_table(), ""]
        if preset.confound_variants:
            lines += ["Choosing between the defaults and each variant per cell on validation (docs/method.md §9.13): "
                      "the one with the higher mean best validation rSum over the cell's seeds. The validation "
                      "split, like the test split, has no tie between background and wording, so it rewards no "
                      "shortcut; on your data that needs a validation split free of it too.", "",
                      rep.validation_choice_table(), ""]
    lines += ["## Disentanglement, measured", "",
              "Linear probes (logistic regression, half the test items to fit, half to score) from each code to "
              "the benchmark's known factors. Shared factors (object shape, colour) are in both modalities; "
              "exclusive ones are image-only (background, texture) or caption-only (template, filler). Mean over "
              "the DisNCL focus seeds.", "", rep.probe_table(), "",
              "Image exclusive columns: background, texture; caption exclusive columns: template, filler.", "",
              "Mutual information between MII and MEI codes (joint-Gaussian estimate on 8 principal components "
              "each; docs/method.md §8) and probe accuracies per DisNCL variant (a disentangled split reads the "
              "exclusive factors from MEI, not MII, and the shared ones from MII, not MEI):", "", rep.mi_table(),
              ""]
    if "tsne_mii_mei.png" in rel:
        lines += [f"![t-SNE]({rel['tsne_mii_mei.png']})", ""]
    lines += ["## Reproduce", "", "```", command, "```", "",
              "Configuration shared by every run (plus per run: method, noise kind/rate/seed, ablation switch):", "",
              "```", *preset.base, "```", "", "Package versions:", "",
              _table(["package", "version"], [[k, v] for k, v in versions.items()]), ""]
    atomic_write_text(report, "\n".join(lines))
    return report
