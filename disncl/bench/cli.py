"""``python -m disncl bench --quick | --smoke | --full``: run a preset's grid and write its report."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from disncl.bench.presets import PRESETS
from disncl.bench.report import write_report
from disncl.bench.runner import load_results, run_preset


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m disncl bench", description=__doc__)
    which = p.add_mutually_exclusive_group()
    for name, preset in PRESETS.items():
        which.add_argument(f"--{name}", dest="preset", action="store_const", const=name,
                           help=f"{preset.description} ({len(preset.runs())} runs)")
    p.add_argument("--out", help="bench directory for data, runs and results (default: bench_runs/PRESET); "
                   "re-running the same command skips finished runs and resumes interrupted ones")
    p.add_argument("--jobs", type=int, help="runs at a time (default: the preset's; threads are split evenly)")
    p.add_argument("--data-seed", type=int, help="redraw the synthetic data with this generator seed (default: the "
                   "preset's, 0); with a second draw, the focus cell also runs on seed + 1")
    p.add_argument("--device", help="override train.device for every run (auto | cpu | cuda)")
    p.add_argument("--report", help="markdown report path (default: OUT/BENCHMARKS.md)")
    p.add_argument("--plots", help="folder for the PNG plots (default: OUT/plots)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from finished runs")
    p.add_argument("--list", action="store_true", help="print the preset's runs and exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(preset="quick")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    preset = PRESETS[args.preset]
    if args.jobs is not None and args.jobs < 1:
        _parser().error("--jobs must be >= 1")
    if args.data_seed is not None:
        if args.data_seed < 0:
            _parser().error("--data-seed must be >= 0")
        preset = preset.with_data_seed(args.data_seed)
    if args.list:
        for spec, groups in preset.runs().items():
            print(f"{spec.name}  [{', '.join(groups)}]")
        return 0
    out = Path(args.out or f"bench_runs/{preset.name}")
    # The command that computes what the report shows (a rebuild with --report-only reproduces nothing new).
    command = "python -m disncl bench " + shlex.join(a for a in argv if a != "--report-only")
    summary = None
    if args.report_only:
        last = out / "bench_run.json"
        summary = json.loads(last.read_text(encoding="utf-8")) if last.is_file() else None
    else:
        summary = run_preset(preset, out, args.jobs, args.device, progress=not args.no_progress, command=command)
        if summary["failed"]:
            print(f"{len(summary['failed'])} run(s) failed; see {out}/runs/NAME/error.txt — re-run to retry:",
                  file=sys.stderr)
            for name, error in summary["failed"].items():
                print(f"  {name}: {error}", file=sys.stderr)
    results = load_results(out, preset)
    if not results:
        print(f"no finished runs under {out}; run without --report-only first", file=sys.stderr)
        return 2
    if summary and summary.get("command"):
        command = summary["command"]
    report = write_report(preset, results, Path(args.report or out / "BENCHMARKS.md"),
                          Path(args.plots or out / "plots"), command, summary)
    print(f"report written to {report}")
    return 1 if summary and summary["failed"] and not args.report_only else 0
