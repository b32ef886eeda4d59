"""Schedule a preset's runs: generate its data once, run each job in a worker process, collect results.

Resumable: a run whose ``result.json`` exists is not run again, and a run that was interrupted
resumes from its last checkpoint, so re-issuing the same command after a kill finishes the grid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from disncl.bench.presets import Preset, RunSpec
from disncl.bench.worker import RESULT_FILE
from disncl.data.synth import SynthConfig, generate
from disncl.io import atomic_write_json, atomic_write_text

ERROR_FILE = "error.txt"
JOB_FILE = "job.json"


def data_root(out: Path, confound: float, seed: int = 0) -> Path:
    """Where the bench keeps the synthetic dataset generated with confound ρ and generator ``seed``."""
    return out / "data" / (f"rho{confound:g}" + (f"_d{seed}" if seed else ""))


def prepare_data(preset: Preset, out: Path, progress: bool) -> None:
    """Generate each synthetic dataset of the preset once (a complete one has ``synth.json``)."""
    for spec in preset.data_specs():
        root = data_root(out, spec.confound, spec.seed)
        if (root / "synth.json").is_file():
            continue
        cfg = SynthConfig(n_train=spec.n_train, n_val=spec.n_val, n_test=spec.n_test,
                          image_size=spec.image_size, confound=spec.confound, seed=spec.seed,
                          train_captions_per_image=spec.train_captions)
        generate(root, cfg, progress=progress)


def _job(preset: Preset, spec: RunSpec, groups: list[str], out: Path, threads: int, device: str | None) -> dict:
    overrides = spec.overrides(preset, str(data_root(out, spec.confound, spec.data_seed)))
    overrides.append(f"train.num_threads={threads}")
    if device:
        overrides.append(f"train.device={device}")
    return {
        "name": spec.name,
        "spec": asdict(spec),
        "groups": groups,
        "overrides": overrides,
        "run_dir": str(out / "runs" / spec.name),
    }


def _run_one(job: dict[str, Any], threads: int) -> tuple[str, float, str | None]:
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / JOB_FILE
    atomic_write_json(job_file, job)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "disncl.bench.worker", str(job_file)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-40:])
        atomic_write_text(run_dir / ERROR_FILE, tail + "\n")
        return job["name"], seconds, tail.splitlines()[-1] if tail else f"exit code {proc.returncode}"
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    return job["name"], seconds, None


def run_preset(
    preset: Preset, out: Path, jobs: int | None = None, device: str | None = None, progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Run every pending job of ``preset`` under ``out``; the summary (also ``out/bench_run.json``) says
    how many ran, which failed, how long it took, and the ``command`` that asked for it."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepare_data(preset, out, progress)
    jobs = jobs or preset.jobs
    threads = max(1, (os.cpu_count() or 1) // jobs)
    all_jobs = [_job(preset, spec, groups, out, threads, device) for spec, groups in preset.runs().items()]
    pending = [j for j in all_jobs if not (Path(j["run_dir"]) / RESULT_FILE).is_file()]
    failed: dict[str, str] = {}
    bar = tqdm(total=len(all_jobs), initial=len(all_jobs) - len(pending), desc=f"bench {preset.name}",
               unit="run", disable=not progress)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_run_one, job, threads) for job in pending]
        for future in as_completed(futures):
            name, seconds, error = future.result()
            if error:
                failed[name] = error
                tqdm.write(f"FAILED {name} after {seconds:.0f}s: {error}")
            bar.update(1)
            bar.set_postfix_str(f"{name} {seconds:.0f}s")
    bar.close()
    summary = {
        "preset": preset.name,
        "command": command,
        "jobs": jobs,
        "threads_per_job": threads,
        "runs": len(all_jobs),
        "ran_now": len(pending),
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(out / "bench_run.json", summary)
    return summary


def load_results(out: Path, preset: Preset | None = None) -> list[dict[str, Any]]:
    """Every finished run's ``result.json`` under ``out/runs``, sorted by name.

    With ``preset``, only that preset's runs, each with the report groups the preset gives it (presets that
    share a bench directory, e.g. ``standard`` and ``standard-variants``, group a run differently).
    ``run_dir`` is set to where the result is now: results travel (committed, copied) without their runs.
    """
    groups = {spec.name: g for spec, g in preset.runs().items()} if preset else None
    results = []
    for path in sorted((out / "runs").glob(f"*/{RESULT_FILE}")):
        if groups is not None and path.parent.name not in groups:
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        result["run_dir"] = str(path.parent)
        if groups is not None:
            result["groups"] = groups[path.parent.name]
        results.append(result)
    return results
