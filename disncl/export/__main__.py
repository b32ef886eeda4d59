"""``python -m disncl export --run RUN_DIR [--checkpoint best|last] --out BUNDLE_DIR [--opset N]
[--optimize fused] [--quantize int8]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from disncl.models.checkpoint import CheckpointError

from .build import DEFAULT_TOLERANCE, export_bundle
from .onnx import DEFAULT_OPSET, MIN_OPSET
from .parity import ParityError
from .variants import OPTIMIZE_CHOICES, QUANTIZE_CHOICES, VariantCheckError, VariantSpec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m disncl export",
        description="Export a trained run's checkpoint to an ONNX serving bundle, checked against PyTorch.",
    )
    p.add_argument("--run", required=True, type=Path, help="run directory (holds best/ and last/)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write (replaced if it is a bundle)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET} or newer (default {DEFAULT_OPSET})")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max abs difference allowed between ONNX Runtime and PyTorch (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--optimize", choices=OPTIMIZE_CHOICES, default="none",
                   help="fused: ONNX Runtime's transformer graph fusion (float32, same parity check)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                   help="int8: dynamic int8 quantisation, checked by retrieval on the run's validation split")
    p.add_argument("--max-recall-drop", type=float, default=VariantSpec.max_recall_drop,
                   help="int8: largest allowed recall@1/5/10 drop, in points, against float32 (default 1)")
    p.add_argument("--min-cosine", type=float, default=VariantSpec.min_cosine,
                   help="int8: smallest allowed mean cosine between int8 and float32 embeddings (default 0.99)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.run.is_dir():
        print(f"error: run directory {args.run} does not exist", file=sys.stderr)
        return 2
    try:
        manifest = export_bundle(
            args.run / args.checkpoint, args.out, tolerance=args.tolerance, opset=args.opset,
            progress=not args.no_progress,
            variant=VariantSpec(args.optimize, args.quantize, args.max_recall_drop, args.min_cosine),
        )
    except (CheckpointError, ParityError, VariantCheckError, FileExistsError, ValueError, RuntimeError) as err:
        if os.environ.get("DISNCL_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    worst = max(v for d in manifest["parity"]["max_abs_diff"].values() for v in d.values())
    dims = manifest["embedding_dims"]
    print(f"bundle written to {args.out}: embeddings full {dims['full']}, mii {dims['mii']}, mei {dims['mei']}; "
          f"parity max abs diff {worst:.2e} (tolerance {args.tolerance:g}) on {manifest['parity']['inputs']}")
    check = manifest["variant"].get("check")
    if check:
        drop = max(d for space in ("mii", "full") for d in check[space]["drop"].values())
        cosine = min(c for space in ("mii", "full") for c in check[space]["mean_cosine"].values())
        print(f"graphs: {manifest['variant']['name']}; against float32 on {check['split']}: largest recall drop "
              f"{drop:.2f} points, smallest mean cosine {cosine:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
