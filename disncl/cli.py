"""``disncl synth | train | eval | bench | export | index | audit | shards`` (also ``python -m disncl ...``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from disncl.config import ConfigError, load_config
from disncl.methods import METHOD_NAMES, METHODS


def _train(args: argparse.Namespace) -> int:
    from disncl.train.loop import train
    from disncl.train.run_dir import RunDir

    overrides = list(args.set or [])
    for flag, key in (("device", "train.device"), ("out", "train.out"), ("method", "train.method"),
                      ("epochs", "train.epochs"), ("noise_rate", "data.noise_rate"),
                      ("noise_kind", "data.noise_kind"), ("noise_file", "data.noise_file"),
                      ("data", "data.root"), ("backbone", "model.backbone"), ("seed", "train.seed")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.strict:
        overrides.append("data.strict=true")
    config_path = args.config
    if args.resume and config_path is None:
        out = next((o.split("=", 1)[1] for o in overrides if o.startswith("train.out=")), None)
        if out is None:
            raise ConfigError("--resume needs --out RUN_DIR (or --config) to know which run to continue")
        config_path = str(RunDir(out).config)
    if args.choose:
        from disncl.train.choose import choose, format_choice

        if args.resume or args.stop_after_epoch is not None:
            raise ConfigError("--choose resumes unfinished candidates by itself and trains each to the end; "
                              "drop --resume / --stop-after-epoch")
        print(format_choice(choose(config_path, overrides, args.choose, progress=not args.no_progress)))
        return 0
    cfg = load_config(config_path, overrides)
    run = train(cfg, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after_epoch)
    if os.environ.get("RANK", "0") == "0":  # under torchrun every process gets here; one line is enough
        print(f"run written to {run}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from disncl.train.evaluate import evaluate_run, format_table

    result = evaluate_run(args.run, args.checkpoint, args.split, args.device, not args.no_detection,
                          progress=not args.no_progress)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m disncl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("synth", help="generate the synthetic benchmark (see `synth --help`)", add_help=False)
    sub.add_parser("bench", help="run the methods side by side and write a report (see `bench --help`)",
                   add_help=False)
    sub.add_parser("index", help="encode images/captions with an exported bundle into a FAISS gallery "
                   "(see `index --help`)", add_help=False)
    sub.add_parser("export", help="export a run's checkpoint to an ONNX serving bundle (see `export --help`)",
                   add_help=False)
    sub.add_parser("audit", help="audit your own image-caption pairs in one command: train, export, index, report "
                   "(see `audit --help`)", add_help=False)
    sub.add_parser("shards", help="pack a dataset folder's split into WebDataset-style tar shards "
                   "(see `shards --help`)", add_help=False)

    t = sub.add_parser("train", help=f"train a model ({', '.join(m.label for m in METHODS.values())})",
                       description="Train a model. Under `torchrun --nproc_per_node N -m disncl train ...` the N "
                       "processes train together (DDP; train.batch_size is the global batch).")
    t.add_argument("--config", help="YAML config (e.g. configs/quick.yaml)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override any config value")
    t.add_argument("--data", help="dataset folder (data.root)")
    t.add_argument("--out", help="run directory (train.out)")
    t.add_argument("--method", choices=METHOD_NAMES)
    t.add_argument("--epochs", type=int)
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--noise-rate", type=float)
    t.add_argument("--noise-kind", choices=["image", "caption"])
    t.add_argument("--noise-file", help="existing noise index .npy (either convention)")
    t.add_argument("--backbone", help="local folder of a CLIP checkpoint (from_pretrained)")
    t.add_argument("--seed", type=int)
    t.add_argument("--strict", action="store_true",
                   help="fail on unusable rows or images (missing, corrupt, empty caption, ...) instead of "
                        "skipping them with a report")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--stop-after-epoch", type=int, metavar="N",
                   help="checkpoint and stop once N epochs are done (continue later with --resume)")
    t.add_argument("--choose", action="append", metavar="SECTION.KEY=V1,V2",
                   help="train one run per value (repeat for a grid) under --out and keep the one with the best "
                        "validation rSum; writes OUT/choice.json (re-run to finish interrupted candidates)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a run: recall (MII and full) and noise detection")
    e.add_argument("run", help="run directory")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--split", help="default: the config's test split")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-detection", action="store_true", help="skip scoring the training pairs")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "synth":
        from disncl.data.synth import main as synth_main

        return synth_main(argv[1:])
    if argv and argv[0] == "bench":
        from disncl.bench.cli import main as bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "index":
        from disncl.serve.index_cli import main as index_main

        return index_main(argv[1:])
    if argv and argv[0] == "export":
        from disncl.export.__main__ import main as export_main

        return export_main(argv[1:])
    if argv and argv[0] == "audit":
        from disncl.audit.cli import main as audit_main

        return audit_main(argv[1:])
    if argv and argv[0] == "shards":
        from disncl.data.shard_writer import main as shards_main

        return shards_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        if os.environ.get("DISNCL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
