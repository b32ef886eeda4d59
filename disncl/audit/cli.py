"""``python -m disncl audit --data DIR [--backbone CLIP_DIR] [--out AUDIT] [--serve]``.

One command for what otherwise takes five (prepare, train, export, index, app): it finds the pairs
(:mod:`.sources`), picks a schedule from their number (:mod:`.plan`), trains DisNCL (frozen
pretrained towers with ``--backbone``), exports the ONNX bundle, builds the gallery with the pair
scores attached, writes ``audit_report.md`` and prints the command that serves it all.

``AUDIT`` holds ``run/`` (the training run), ``bundle/``, ``gallery/``, the report and
``audit.json`` (the stages done). Re-running the same command continues where it stopped: training
resumes from its last checkpoint, finished stages are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from disncl.config import ConfigError, RunConfig, load_config
from disncl.io import atomic_write_json
from disncl.serve.gallery import INDEX_KINDS

STAGES = ("validate", "train", "export", "index", "report")
STATE_FILE = "audit.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m disncl audit",
        description="Audit a folder of image-caption pairs in one command: validate, train DisNCL (frozen "
        "pretrained towers with --backbone), export the ONNX bundle, build the gallery with every pair's "
        "scores, write AUDIT/audit_report.md and print the command that opens the app on it. Re-running "
        "continues where it stopped.",
    )
    p.add_argument("--data", required=True, type=Path,
                   help="folder of images plus a captions table (CSV/TSV/JSONL), a Karpathy JSON, or tar shards")
    p.add_argument("--images", type=Path, help="folder the table's image paths are relative to (default: its folder)")
    p.add_argument("--backbone", type=Path,
                   help="local CLIP checkpoint folder (from_pretrained); its towers stay frozen unless --finetune")
    p.add_argument("--finetune", action="store_true", help="with --backbone: train the towers too (slow on a CPU)")
    p.add_argument("--out", type=Path, help="audit folder (default: audits/<data folder name>)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override any config value of the training run (first run only)")
    p.add_argument("--noise-rate", type=float, default=0.0,
                   help="inject this much synthetic noise (a demo with known truth; default 0: audit the data as is)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--index", default="flat", choices=INDEX_KINDS, help="gallery index (default flat)")
    p.add_argument("--serve", action="store_true", help="open the app on the result when done")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--no-progress", action="store_true")
    return p


class Audit:
    """The stages of one audit folder, each skipped when its output is already complete."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out or Path("audits") / args.data.resolve().name
        self.run_dir = self.out / "run"
        self.bundle = self.out / "bundle"
        self.gallery = self.out / "gallery"
        self.progress = not args.no_progress
        self.state: dict[str, Any] = self._read_state()
        self.cfg: RunConfig | None = None

    def _read_state(self) -> dict[str, Any]:
        path = self.out / STATE_FILE
        if not path.is_file():
            return {"stages": {}}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable ({err}); delete it to start the audit's bookkeeping afresh") from err

    def _done(self, stage: str, **info: Any) -> None:
        self.state["stages"][stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        atomic_write_json(self.out / STATE_FILE, self.state)

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(STAGES), desc="audit", unit="stage", disable=not self.progress)
        try:
            for stage in STAGES:
                bar.set_postfix_str(stage)
                t0 = time.perf_counter()
                note = getattr(self, f"stage_{stage}")()
                bar.update()
                if note:
                    tqdm.write(f"[{stage}] {note} ({time.perf_counter() - t0:.0f} s)")
        finally:
            bar.close()
        return self.out

    def stage_validate(self) -> str:
        from disncl.audit.plan import plan_for
        from disncl.audit.sources import resolve_source
        from disncl.data.dataset import load_split
        from disncl.train.run_dir import RunDir

        saved = RunDir(self.run_dir).config
        if saved.is_file():
            # A run already started: its own config, so the re-run continues the same training.
            self.cfg = load_config(str(saved), [])
            return ""
        source = resolve_source(self.args.data, self.args.images, self.out / "data")
        base = [f"{k}={v}" for k, v in source.data.items()]
        probe = load_config(None, base)
        n_pairs = len(load_split(probe.data, probe.data.train_split, self.out).captions)
        frozen = self.args.backbone is not None and not self.args.finetune
        plan = plan_for(n_pairs, frozen)
        overrides = [*base, *plan.overrides(), f"train.out={self.run_dir}", f"train.device={self.args.device}",
                     "train.method=disncl"]
        if self.args.backbone is not None:
            overrides.append(f"model.backbone={self.args.backbone}")
        if self.args.noise_rate:
            overrides += [f"data.noise_rate={self.args.noise_rate}", "data.noise_kind=image"]
        self.cfg = load_config(None, [*overrides, *self.args.set])
        described = describe_training(self.cfg, n_pairs)
        self._done("validate", source=source.description, plan=described, n_pairs=n_pairs)
        return f"{source.description}; {described}"

    def stage_train(self) -> str:
        from disncl.train.loop import train
        from disncl.train.run_dir import RunDir
        from disncl.train.state import find_checkpoint

        assert self.cfg is not None
        ckpt = find_checkpoint(RunDir(self.run_dir).last)
        epochs_done = json.loads((ckpt / "train_state.json").read_text())["epoch"] if ckpt else 0
        if epochs_done >= self.cfg.train.epochs:
            return ""
        train(self.cfg, resume=ckpt is not None, progress=self.progress)
        self._done("train", epochs=self.cfg.train.epochs)
        return f"trained {self.cfg.train.epochs} epochs" + (f" (resumed after {epochs_done})" if epochs_done else "")

    def stage_export(self) -> str:
        from disncl.export.build import export_bundle
        from disncl.train.run_dir import RunDir

        if "export" in self.state["stages"] and (self.bundle / "manifest.json").is_file():
            return ""
        manifest = export_bundle(RunDir(self.run_dir).best, self.bundle, progress=self.progress)
        parity = manifest.get("parity", {})
        self._done("export", parity_passed=parity.get("passed"), parity_tolerance=parity.get("tolerance"))
        return f"bundle written to {self.bundle}"

    def stage_index(self) -> str:
        from disncl.data.dataset import load_split
        from disncl.serve.bundle import Bundle
        from disncl.serve.gallery import META_FILE, Gallery
        from disncl.train.run_dir import RunDir

        assert self.cfg is not None
        if "index" in self.state["stages"] and (self.gallery / META_FILE).is_file():
            return ""
        if self.cfg.data.shards:
            return "no gallery: the images are inside tar shards; unpack them to browse them in the app"
        ds = load_split(self.cfg.data, self.cfg.data.train_split)
        gallery = Gallery.build(Bundle.load(self.bundle), ds.root, ds.image_paths, ds.captions, ds.cap2img,
                                kind=self.args.index, progress=self.progress)
        gallery.save(self.gallery, pair_scores=RunDir(self.run_dir).pair_scores)
        self._done("index", images=gallery.n_images, captions=gallery.n_captions)
        return f"gallery written to {self.gallery}: {gallery.n_images} images, {gallery.n_captions} captions"

    def stage_report(self) -> str:
        from disncl.audit.report import write_report
        from disncl.train.run_dir import RunDir

        path = write_report(self.out, RunDir(self.run_dir), self.state)
        self._done("report", path=str(path))
        return f"report written to {path}"

    def app_command(self) -> list[str]:
        return [sys.executable, str(_app_script()), "--bundle", str(self.bundle), "--gallery", str(self.gallery),
                "--port", str(self.args.port)]


def describe_training(cfg: RunConfig, n_pairs: int) -> str:
    towers = ("frozen pretrained towers, heads only" if cfg.model.freeze_towers
              else "pretrained towers fine-tuned" if cfg.model.backbone else "towers trained from scratch")
    return (f"{n_pairs} pairs, {towers}: {cfg.train.epochs} epochs of batch {cfg.train.batch_size} "
            f"(split after {cfg.train.warmup_epochs}), lr {cfg.train.lr}")


def _app_script() -> Path:
    return Path(__file__).resolve().parents[2] / "app.py"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        audit = Audit(args)
        out = audit.run()
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        if os.environ.get("DISNCL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = f"python app.py --bundle {audit.bundle} --gallery {audit.gallery}"
    print(f"audit written to {out} (report: {out / 'audit_report.md'})\nopen it in the app:\n  {command}")
    if args.serve:
        if not _app_script().is_file():
            print("error: --serve needs app.py from the disncl repository checkout; run the command above there",
                  file=sys.stderr)
            return 2
        return subprocess.call(audit.app_command())
    return 0
