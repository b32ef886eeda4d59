"""``train --choose KEY=V1,V2``: train one run per candidate setting and keep the one validation prefers.

docs/method.md §9.13: where no single value serves every dataset (the MII bottleneck β with and without a
background-to-wording shortcut), the benchmark chooses per dataset on validation; this is the same protocol for
your data. Each candidate trains into its own folder under ``train.out``; a finished candidate is not trained
again and an interrupted one resumes, so the command can be re-run until every candidate is done. The choice is
the highest best validation rSum in each run's selection space (what its ``best/`` checkpoint was kept on), and
it is written to ``train.out/choice.json``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from disncl.config import ConfigError, load_config
from disncl.io import atomic_write_json
from disncl.train.run_dir import RunDir
from disncl.train.state import find_checkpoint

CHOICE_FILE = "choice.json"


def parse_choices(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["loss.beta=0.001,0.1", ...]`` as ``[("loss.beta", ["0.001", "0.1"]), ...]``; a clear error otherwise."""
    out: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        candidates = [v.strip() for v in values.split(",")]
        if not sep or not key.strip() or "." not in key or any(not v for v in candidates):
            raise ConfigError(f"--choose {spec!r}: expected SECTION.KEY=VALUE1,VALUE2 (e.g. loss.beta=0.001,0.1)")
        if len(candidates) < 2:
            raise ConfigError(f"--choose {spec!r}: give at least two values to choose between, comma-separated")
        if key.strip() in (k for k, _ in out):
            raise ConfigError(f"--choose names {key.strip()!r} twice; list all its values in one --choose")
        out.append((key.strip(), candidates))
    return out


def candidate_overrides(choices: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination of the chosen values, as ``section.key=value`` overrides."""
    return [[f"{key}={value}" for key, value in zip((k for k, _ in choices), combo, strict=True)]
            for combo in itertools.product(*(values for _, values in choices))]


def candidate_name(overrides: list[str]) -> str:
    """A folder name for one candidate: its overrides, with characters a path should not hold replaced."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "_", ",".join(overrides))


def _train_state(run: Path) -> dict[str, Any] | None:
    """The training state of the run's last complete checkpoint, or None where it has none yet."""
    ckpt = find_checkpoint(RunDir(run).last)
    return None if ckpt is None else json.loads((ckpt / "train_state.json").read_text(encoding="utf-8"))


def best_validation(run: Path) -> tuple[float, int]:
    """The best validation rSum a run kept its ``best/`` checkpoint on, and that epoch."""
    state = _train_state(run)
    if state is None:
        raise FileNotFoundError(f"{run}: no complete checkpoint; train it first")
    return float(state["best_score"]), int(state["best_epoch"])


def choose(config_path: str | None, overrides: list[str], specs: list[str], progress: bool = True) -> dict[str, Any]:
    """Train (or finish) every candidate of ``specs`` on the configuration ``config_path`` + ``overrides``, then
    write and return the choice: each candidate's folder, best validation rSum and epoch, and the chosen one."""
    from disncl.train.loop import train

    choices = parse_choices(specs)
    base = load_config(config_path, overrides)
    root = Path(base.train.out)
    rows = []
    for extra in candidate_overrides(choices):
        cfg = load_config(config_path, [*overrides, *extra])
        cfg = replace(cfg, train=replace(cfg.train, out=str(root / candidate_name(extra))))
        state = _train_state(Path(cfg.train.out))
        if state is None or state["epoch"] < cfg.train.epochs:
            train(cfg, resume=state is not None, progress=progress)
        score, epoch = best_validation(Path(cfg.train.out))
        rows.append({"overrides": extra, "run": cfg.train.out, "best_val_rsum": score, "best_epoch": epoch,
                     "selection_space": cfg.selection_space()})
    chosen = max(rows, key=lambda r: r["best_val_rsum"])
    result = {"choose": [f"{k}={','.join(v)}" for k, v in choices], "candidates": rows, "chosen": chosen}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / CHOICE_FILE, result)
    return result


def format_choice(result: dict[str, Any]) -> str:
    """The candidates as a table, the chosen one marked."""
    lines = ["candidate                                 best val rSum  epoch  run"]
    for row in result["candidates"]:
        mark = "*" if row["run"] == result["chosen"]["run"] else " "
        lines.append(f"{mark} {' '.join(row['overrides']):<40} {row['best_val_rsum']:>13.1f}  {row['best_epoch']:>5}  "
                     f"{row['run']}")
    lines.append(f"chosen on validation: {' '.join(result['chosen']['overrides'])} ({result['chosen']['run']})")
    return "\n".join(lines)
