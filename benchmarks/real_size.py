"""The whole product at real model size, offline: a ViT-B/32-configured CLIP from build to app latency.

``python benchmarks/real_size.py --vocab BPE_VOCAB [--work DIR] [--steps 3] [--gallery-images 200]``

``BPE_VOCAB`` is CLIP's ``bpe_simple_vocab_16e6.txt.gz`` or the ``open-clip-torch`` wheel holding it
(``pip download open-clip-torch --no-deps -d DIR``); nothing is downloaded and open_clip is never
imported. Stages, each timed (and its output sized):

1. **build**: a ``CLIPModel`` from the ViT-B/32 configuration with random weights, and the real
   49,408-token CLIP BPE tokenizer (``vocab.json``/``merges.txt`` derived from the BPE file as
   OpenAI's tokenizer does), saved with ``save_pretrained``;
2. **data**: a synthetic dataset at 224 px (``python -m disncl synth``);
3. **train**: ``--steps`` optimiser steps with ``--backbone`` (``python -m disncl train``);
4. **export**: float32, fused float32 (``--optimize fused``) and int8 bundles (``python -m disncl export``,
   int8 checked on validation);
5. **index**: a gallery of the test split (``python -m disncl index``);
6. **encode latency** at batch 1 and 16: PyTorch eager, ONNX float32, fused and int8;
7. **app latency**: ``/search_text`` with 1 and 10 results per space through ``gradio_client``.

Needs about 2 GB of disk and several minutes on a 2-core CPU: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from serve_latency import median_ms  # noqa: E402

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# ViT-B/32 (Radford et al. 2021): 224 px, patch 32, 768 wide x 12 layers; text 512 wide x 12 layers.
VIT_B_32 = {
    "vision_config": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 32,
    },
    "text_config": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
        "vocab_size": 49408,
        "max_position_embeddings": 77,
    },
    "projection_dim": 512,
}


def bpe_lines(source: Path) -> list[str]:
    """The lines of CLIP's BPE merges file, read from the ``.txt.gz`` itself or from a wheel holding it."""
    if source.suffix == ".whl" or zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(BPE_NAME)]
            if not names:
                raise FileNotFoundError(f"{source}: no {BPE_NAME} inside")
            raw = wheel.read(names[0])
    else:
        raw = source.read_bytes()
    return gzip.decompress(raw).decode("utf-8").split("\n")


def byte_alphabet() -> list[str]:
    """GPT-2's reversible byte→unicode map in its own order: printable bytes (as themselves) first, then
    the other bytes mapped to 256, 257, … in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(rest))]


def write_clip_tokenizer_files(lines: list[str], out: Path) -> None:
    """``vocab.json`` and ``merges.txt`` of CLIP's tokenizer: 256 bytes, their ``</w>`` forms, 48,894 merges,
    then the two special tokens, 49,408 entries in all (the order OpenAI's ``SimpleTokenizer`` builds)."""
    merges = [line.split() for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = byte_alphabet()
    vocab = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")


def build_backbone(vocab_source: Path, out: Path) -> dict[str, object]:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

    write_clip_tokenizer_files(bpe_lines(vocab_source), out / "tok")
    tokenizer = CLIPTokenizerFast(vocab=str(out / "tok" / "vocab.json"), merges=str(out / "tok" / "merges.txt"))
    model = CLIPModel(CLIPConfig(**VIT_B_32))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor().save_pretrained(out)
    shutil.rmtree(out / "tok")
    return {"parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "tokens": len(tokenizer)}


def run(cmd: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "disncl", *cmd], check=True, cwd=REPO)


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def encode_latency(run_dir: Path, bundles: dict[str, Path], repeats: int) -> list[dict[str, object]]:
    import torch

    from disncl.models.checkpoint import load_model
    from disncl.models.tokenizer import tokenize
    from disncl.serve import Bundle
    from disncl.serve.providers import CPU

    model, tokenizer = load_model(run_dir / "best", device="cpu")
    cfg = model.cfg
    loaded = {name: Bundle.load(path, providers=[CPU]) for name, path in bundles.items()}
    rng = np.random.default_rng(0)
    rows = []
    for b in (1, 16):
        images = rng.integers(0, 256, size=(b, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
        captions = ["a small red circle above a big blue square"] * b

        @torch.inference_mode()
        def torch_image(images: np.ndarray = images) -> object:
            return model.encode_image(model.preprocess(images)).h

        @torch.inference_mode()
        def torch_text(captions: list[str] = captions) -> object:
            tok = tokenize(tokenizer, captions, cfg.max_text_len)
            return model.encode_text(tok["input_ids"], tok["attention_mask"]).h

        for modality, eager in (("image", torch_image), ("text", torch_text)):
            row: dict[str, object] = {"modality": modality, "batch": b, "pytorch_ms": median_ms(eager, repeats)}
            for name, bundle in loaded.items():
                if modality == "image":
                    row[f"{name}_ms"] = median_ms(
                        lambda bundle=bundle, images=images: bundle.encode_images(images), repeats
                    )
                else:
                    row[f"{name}_ms"] = median_ms(
                        lambda bundle=bundle, captions=captions: bundle.encode_texts(captions), repeats
                    )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", required=True, type=Path, help=f"{BPE_NAME} or the open-clip-torch wheel holding it")
    p.add_argument("--work", type=Path, default=Path("bench_runs/real_size"), help="working folder (about 2 GB)")
    p.add_argument("--steps", type=int, default=3, help="training steps with --backbone")
    p.add_argument("--gallery-images", type=int, default=200, help="test images in the gallery")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per latency figure")
    p.add_argument("--calls", type=int, default=20, help="app calls per results-per-space setting")
    p.add_argument("--val-images", type=int, default=200, help="validation images (the int8 retrieval check)")
    p.add_argument(
        "--max-recall-drop",
        type=float,
        default=1.0,
        help="the int8 check's allowed recall drop; a random-weight model retrieves near chance, so "
        "its ranks swap under int8 noise: raise it to time int8 anyway (the table shows the drops)",
    )
    args = p.parse_args(argv)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stages: list[tuple[str, float, str]] = []

    def stage(name: str, fn: Callable[[], object], output: Path | None = None) -> object:
        t0 = time.perf_counter()
        result = fn()
        stages.append((name, time.perf_counter() - t0, f"{size_mb(output)} MB" if output else ""))
        print(f"{name}: {stages[-1][1]:.1f} s {stages[-1][2]}", flush=True)
        return result

    clip_dir, data, run_dir = work / "clip_vit_b32", work / "data", work / "run"
    info = stage(
        "build ViT-B/32 CLIP + BPE tokenizer, save_pretrained", lambda: build_backbone(args.vocab, clip_dir), clip_dir
    )
    batch = 16
    n_train = args.steps * batch
    stage(
        "synthetic data (224 px)",
        lambda: run(
            [
                "synth",
                "--out",
                str(data),
                "--n-train",
                str(n_train),
                "--train-captions-per-image",
                "1",
                "--n-val",
                str(args.val_images),
                "--n-test",
                str(args.gallery_images),
                "--image-size",
                "224",
                "--no-progress",
            ]
        ),
        data,
    )
    stage(
        f"train {args.steps} steps, batch {batch}, --backbone",
        lambda: run(
            [
                "train",
                "--data",
                str(data),
                "--backbone",
                str(clip_dir),
                "--out",
                str(run_dir),
                "--no-progress",
                "--set",
                "train.epochs=1",
                "--set",
                "train.warmup_epochs=1",
                "--set",
                f"train.batch_size={batch}",
                "--set",
                "train.device=cpu",
                "--set",
                "train.lr_warmup_steps=1",
                "--set",
                "model.max_text_len=32",
            ]
        ),
        run_dir / "best",
    )
    bundles = {"onnx_float32": work / "bundle_float32", "onnx_fused": work / "bundle_fused",
               "onnx_int8": work / "bundle_int8"}
    stage(
        "export float32 (parity 1e-4)",
        lambda: run(["export", "--run", str(run_dir), "--out", str(bundles["onnx_float32"]), "--no-progress"]),
        bundles["onnx_float32"],
    )
    stage(
        "export float32, transformer graph fusion (parity 1e-4)",
        lambda: run(["export", "--run", str(run_dir), "--out", str(bundles["onnx_fused"]), "--optimize", "fused",
                     "--no-progress"]),
        bundles["onnx_fused"],
    )
    stage(
        "export int8 (retrieval check)",
        lambda: run(
            [
                "export",
                "--run",
                str(run_dir),
                "--out",
                str(bundles["onnx_int8"]),
                "--quantize",
                "int8",
                "--max-recall-drop",
                str(args.max_recall_drop),
                "--no-progress",
            ]
        ),
        bundles["onnx_int8"],
    )
    gallery = work / "gallery"
    stage(
        f"index {args.gallery_images} images (int8 bundle)",
        lambda: run(
            [
                "index",
                "--bundle",
                str(bundles["onnx_int8"]),
                "--captions",
                str(data / "test.csv"),
                "--out",
                str(gallery),
                "--no-progress",
            ]
        ),
        gallery,
    )
    latency = encode_latency(run_dir, bundles, args.repeats)

    from serve_latency import bench_app

    ways = bench_app(bundles["onnx_int8"], gallery, args.calls)
    manifest = json.loads((bundles["onnx_int8"] / "manifest.json").read_text())
    check = manifest["variant"]["check"]

    print(
        f"\nViT-B/32 CLIP, random weights: {info['parameters_M']} M parameters, {info['tokens']} BPE tokens; "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| stage | time s | output |\n|---|---|---|")
    for name, seconds, out in stages:
        print(f"| {name} | {seconds:.1f} | {out} |")
    print("\n| encoder | batch | PyTorch eager ms | ONNX float32 ms | ONNX fused ms | ONNX int8 ms | "
          "fused speed-up vs eager | int8 speed-up vs eager |")
    print("|---|---|---|---|---|---|---|---|")
    for r in latency:
        print(
            f"| {r['modality']} | {r['batch']} | {r['pytorch_ms']:.1f} | {r['onnx_float32_ms']:.1f} | "
            f"{r['onnx_fused_ms']:.1f} | {r['onnx_int8_ms']:.1f} | {r['pytorch_ms'] / r['onnx_fused_ms']:.2f}× | "
            f"{r['pytorch_ms'] / r['onnx_int8_ms']:.2f}× |"
        )
    print("\n| int8 vs float32 on validation | MII | full |\n|---|---|---|")
    print(
        f"| largest recall@1/5/10 drop, points | {max(check['mii']['drop'].values()):.2f} | "
        f"{max(check['full']['drop'].values()):.2f} |"
    )
    print(
        f"| smallest mean cosine | {min(check['mii']['mean_cosine'].values()):.4f} | "
        f"{min(check['full']['mean_cosine'].values()):.4f} |"
    )
    print("\n| app /search_text (int8 bundle) | p50 k=1 ms | p50 k=10 ms | ratio |\n|---|---|---|---|")
    for name, by_k in ways.items():
        print(f"| {name} | {by_k[1][0]:.1f} | {by_k[10][0]:.1f} | {by_k[10][0] / by_k[1][0]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
