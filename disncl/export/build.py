"""Build a serving bundle from a trained model directory: graphs, tokenizer, parity check, manifest.

The bundle is assembled in a temporary sibling folder and swapped in with
:func:`disncl.io.atomic_dir` only after the parity check passed, so the output path holds either
the previous bundle or a complete, verified new one, never a failed export.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from disncl.io import atomic_dir, atomic_write_json, find_complete_dir
from disncl.models.checkpoint import META_FILE, CheckpointError, load_model
from disncl.models.disncl import DisNCLModel
from disncl.serve.bundle import FORMAT_VERSION, MANIFEST, Bundle, read_manifest
from disncl.serve.providers import CPU

from . import manifest as sections
from .onnx import DEFAULT_OPSET, check_opset, export_graphs, graph_specs
from .parity import ParityInputs, check_parity, default_inputs, validation_split
from .tokenizer import check_token_parity, write_tokenizer
from .variants import VariantSpec, fuse_graph, quantize_graph, retrieval_check

DEFAULT_TOLERANCE = 1e-4
_STEPS = ("load model", "image graph", "text graph", "tokenizer", "parity", "manifest")


def export_bundle(
    model_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    parity_inputs: ParityInputs | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int = DEFAULT_OPSET,
    progress: bool = True,
    variant: VariantSpec | None = None,
) -> dict[str, Any]:
    """Export the model saved in ``model_dir`` to a serving bundle in ``out_dir``; returns the manifest.

    ``variant`` asks for faster graphs (:mod:`disncl.export.variants`): ``fused`` must pass the same
    parity check; ``int8`` must pass the retrieval check on the run's validation split, against the
    float32 graphs (a :class:`~disncl.export.variants.VariantCheckError` otherwise).

    ``parity_inputs`` default to the training run's validation data (when ``model_dir`` is a
    run's ``best/`` or ``last/`` and the data is reachable), else seeded random images and
    vocabulary captions. Raises :class:`~export.parity.ParityError` when ONNX Runtime and PyTorch
    differ by more than ``tolerance`` on any output, ``RuntimeError`` when the exporter fails,
    ``ValueError`` for unusable arguments; on any failure ``out_dir`` is left untouched.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_destination(out_dir)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance!r}")
    check_opset(opset)
    spec = variant or VariantSpec()
    source = find_complete_dir(model_dir, META_FILE)
    if source is None:
        raise CheckpointError(f"{model_dir}: no {META_FILE}; is it a model directory written by training?")
    bar = tqdm(total=len(_STEPS), desc="export", unit="step", disable=not progress)
    try:
        bar.set_postfix_str(_STEPS[0])
        model, tokenizer = load_model(source, device="cpu")
        if model.cfg.arch != "clip":
            raise ValueError(
                f"{source}: model.arch={model.cfg.arch!r} (region features + GRU) cannot be exported: the serving "
                "bundle and the app encode raw images, and precomp features come from a separate Faster R-CNN "
                "pipeline. Evaluate this run with `python -m disncl eval RUN` instead."
            )
        if parity_inputs is not None:
            parity_inputs.check(model.cfg.image_size)
        bar.update()
        manifest: dict[str, Any] = {}

        def fill(tmp: Path) -> None:
            try:
                manifest.update(_build(model, tokenizer, model_dir, tmp, parity_inputs, tolerance, opset, spec, bar))
            except BaseException:
                # atomic_dir leaves its temporary folder on failure; a half-built bundle is never useful.
                shutil.rmtree(tmp, ignore_errors=True)
                raise

        atomic_dir(out_dir, fill)
    finally:
        bar.close()
    return manifest


def _check_destination(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a bundle: atomic_dir deletes whatever was there."""
    if out_dir.is_file():
        raise FileExistsError(f"{out_dir} is a file; choose a directory for the bundle")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise FileExistsError(
            f"{out_dir} exists and is not a bundle (no {MANIFEST}); choose another output directory or empty it"
        )


def _build(
    model: DisNCLModel,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: Path,
    out: Path,
    parity_inputs: ParityInputs | None,
    tolerance: float,
    opset: int,
    spec: VariantSpec,
    bar: tqdm,
) -> dict[str, Any]:
    cfg = model.cfg
    bar.set_postfix_str(f"{_STEPS[1]} + {_STEPS[2]}")
    export_graphs(model, out, opset)
    bar.update(2)

    bar.set_postfix_str(_STEPS[3])
    serving = write_tokenizer(tokenizer, cfg.max_text_len, out)
    inputs = parity_inputs or default_inputs(model_dir, tokenizer, cfg.max_text_len, cfg.image_size)
    tokens = check_token_parity(tokenizer, serving, inputs.captions, cfg.max_text_len)
    bar.update()

    bar.set_postfix_str(_STEPS[4])
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **sections.model_section(model),
        "versions": sections.versions(opset),
        "graphs": graph_specs(model),
        "embedding_dims": {"full": cfg.embed_dim, "mii": cfg.mii_dim, "mei": cfg.mei_dim},
        "preprocessing": sections.preprocessing(model, tokenizer),
        "source_model_dir": os.fspath(model_dir),
        "training": sections.training_section(model_dir),
        "evaluation": sections.evaluation_section(model_dir),
        "variant": {"name": "float32"},
    }

    def parity() -> dict[str, Any]:
        manifest["files"] = sections.checksums(out)
        # Written before the check too, because the check loads the bundle exactly as a server would.
        atomic_write_json(out / MANIFEST, manifest)
        return {**check_parity(model, tokenizer, Bundle.load(out, providers=[CPU]), inputs, tolerance),
                "tokenizer": tokens}

    manifest["parity"] = parity()
    if spec.optimize == "fused":
        for graph in manifest["graphs"].values():
            fuse_graph(out / graph["file"])
        manifest["parity"] = parity()
        manifest["variant"] = {"name": "fused", "optimize": "onnxruntime.transformers optimize_model (clip)"}
    if spec.quantize == "int8":
        manifest["variant"] = _quantize(out, manifest, model_dir, spec)
    bar.update()

    bar.set_postfix_str(_STEPS[5])
    atomic_write_json(out / MANIFEST, manifest)
    Bundle.load(out, providers=[CPU])
    bar.update()
    # What a reader of the file sees (JSON has lists, not tuples).
    return read_manifest(out)


def _quantize(out: Path, manifest: dict[str, Any], model_dir: Path, spec: VariantSpec) -> dict[str, Any]:
    """Quantise ``out``'s graphs to int8 and check retrieval against the float32 graphs kept beside them."""
    split = validation_split(model_dir)
    if split is None:
        raise ValueError(
            f"{model_dir}: --quantize int8 is checked on the training run's validation split, which is not "
            "reachable from this model directory (run config.yaml and its data); export without --quantize"
        )
    reference = out.parent / f".{out.name}.float32"
    shutil.rmtree(reference, ignore_errors=True)
    shutil.copytree(out, reference)
    try:
        for graph in manifest["graphs"].values():
            quantize_graph(out / graph["file"])
        manifest["files"] = sections.checksums(out)
        atomic_write_json(out / MANIFEST, manifest)
        images, captions, cap2img, source = split
        check = retrieval_check(Bundle.load(reference, providers=[CPU]), Bundle.load(out, providers=[CPU]),
                                images, captions, cap2img, spec)
    finally:
        shutil.rmtree(reference, ignore_errors=True)
    return {
        "name": spec.name,
        "optimize": manifest["variant"].get("optimize"),
        "quantize": "onnxruntime.quantization quantize_dynamic, int8 weights (QInt8), dynamic activations",
        "check": {**check, "split": source},
        "float32_parity": "passed before quantisation (see parity)",
    }
