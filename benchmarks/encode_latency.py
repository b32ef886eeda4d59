"""CPU encode latency of a run's checkpoint: PyTorch versus its exported ONNX bundle.

``python benchmarks/encode_latency.py --run RUN_DIR [--checkpoint best] [--batch-sizes 1 64] [--repeats 30]``

Both sides are timed end to end from what an application holds, uint8 images already at the
model's size and caption strings, to the three numpy embeddings: PyTorch through
``DisNCLModel.preprocess``/``tokenize`` and ``encode_*``, ONNX Runtime through
:class:`disncl.serve.Bundle` on the CPU provider. The bundle is exported to a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from disncl.export.build import export_bundle
from disncl.export.parity import default_inputs
from disncl.models.checkpoint import load_model
from disncl.models.tokenizer import tokenize
from disncl.serve import Bundle
from disncl.serve.providers import CPU

_WARMUP = 3


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(_WARMUP):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def benchmark(model_dir: Path, batch_sizes: list[int], repeats: int) -> list[dict[str, object]]:
    """Median milliseconds per call for each modality, batch size and runtime."""
    model, tokenizer = load_model(model_dir, device="cpu")
    cfg = model.cfg
    inputs = default_inputs(model_dir, tokenizer, cfg.max_text_len, cfg.image_size)
    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        export_bundle(model_dir, Path(tmp) / "bundle", progress=False)
        bundle = Bundle.load(Path(tmp) / "bundle", providers=[CPU])
        for b in batch_sizes:
            images = rng.integers(0, 256, size=(b, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
            captions = [inputs.captions[i % len(inputs.captions)] for i in range(b)]

            @torch.inference_mode()
            def torch_images(images: np.ndarray = images) -> object:
                enc = model.encode_image(model.preprocess(images))
                return enc.h.numpy(), enc.mii().numpy(), torch.nn.functional.normalize(enc.mu_u, dim=-1).numpy()

            @torch.inference_mode()
            def torch_texts(captions: list[str] = captions) -> object:
                tok = tokenize(tokenizer, captions, cfg.max_text_len)
                enc = model.encode_text(tok["input_ids"], tok["attention_mask"])
                return enc.h.numpy(), enc.mii().numpy(), torch.nn.functional.normalize(enc.mu_u, dim=-1).numpy()

            for modality, run_torch, run_onnx in (
                ("image", torch_images, lambda images=images, b=b: bundle.encode_images(images, batch_size=b)),
                ("text", torch_texts, lambda captions=captions, b=b: bundle.encode_texts(captions, batch_size=b)),
            ):
                rows.append({
                    "modality": modality,
                    "batch": b,
                    "torch_ms": _median_ms(run_torch, repeats),
                    "onnx_ms": _median_ms(run_onnx, repeats),
                })
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/encode_latency.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, type=Path, help="run directory (holds best/ and last/)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    rows = benchmark(args.run / args.checkpoint, args.batch_sizes, args.repeats)
    print(f"CPU threads: torch {torch.get_num_threads()}, machine {os.cpu_count()}; median of {args.repeats} runs")
    print("| modality | batch | PyTorch ms | ONNX Runtime ms | speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['modality']} | {r['batch']} | {r['torch_ms']:.2f} | {r['onnx_ms']:.2f} | "
              f"{r['torch_ms'] / r['onnx_ms']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
