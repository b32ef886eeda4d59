"""Export a DisNCL model's two encoders as ONNX graphs with dynamic batch (and caption length).

Each graph returns the three L2-normalised embeddings a serving app needs: ``full`` (the tower
feature ``h``), ``mii`` (the MII posterior mean) and ``mei`` (the MEI posterior mean). The text
graph pools at each row's first EOS exactly as :func:`disncl.models.towers.text_features` does,
because the wrapper calls the model's own ``encode_text``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from disncl.models.disncl import DisNCLModel, Encoded
from disncl.serve.bundle import IMAGE_INPUTS, OUTPUTS, TEXT_INPUTS

DEFAULT_OPSET = 20
# The dynamo exporter emits opset 18 and converts upwards reliably; downwards conversion may silently fail.
MIN_OPSET = 18
IMAGE_FILE, TEXT_FILE = "image.onnx", "text.onnx"
# Protobuf cannot hold a single message over 2 GiB; bigger graphs keep their weights in a side file.
_INLINE_LIMIT_BYTES = 1 << 30
# Example sizes for tracing: neither 0 nor 1, which torch.export would specialise on.
_EXAMPLE_BATCH, _EXAMPLE_TEXT_LEN = 2, 3


def _outputs(enc: Encoded) -> tuple[Tensor, Tensor, Tensor]:
    return enc.h, enc.mii(), F.normalize(enc.mu_u, dim=-1)


class ImageEncoder(nn.Module):
    """``pixel_values`` (N, 3, S, S) float32 to ``(full, mii, mei)``."""

    def __init__(self, model: DisNCLModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _outputs(self.model.encode_image(pixel_values))


class TextEncoder(nn.Module):
    """``input_ids``, ``attention_mask`` (N, L) int64 to ``(full, mii, mei)``."""

    def __init__(self, model: DisNCLModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _outputs(self.model.encode_text(input_ids, attention_mask))


def _io_spec(names: tuple[str, ...], dtype: str, shape: list[str | int]) -> list[dict[str, Any]]:
    return [{"name": n, "dtype": dtype, "shape": shape} for n in names]


def graph_specs(model: DisNCLModel) -> dict[str, dict[str, Any]]:
    """The manifest's description of both graphs: file, inputs and outputs with dtypes and shapes."""
    cfg = model.cfg
    dims = {"full": cfg.embed_dim, "mii": cfg.mii_dim, "mei": cfg.mei_dim}
    outputs = [{"name": n, "dtype": "float32", "shape": ["batch", dims[n]]} for n in OUTPUTS]
    size = cfg.image_size
    return {
        "image": {
            "file": IMAGE_FILE,
            "inputs": _io_spec(IMAGE_INPUTS, "float32", ["batch", 3, size, size]),
            "outputs": outputs,
        },
        "text": {
            "file": TEXT_FILE,
            "inputs": _io_spec(TEXT_INPUTS, "int64", ["batch", "sequence"]),
            "outputs": outputs,
            "max_sequence": cfg.max_text_len,
        },
    }


def check_opset(opset: int) -> None:
    """Raise ``ValueError`` for an opset the exporter cannot produce."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset {opset!r} is not supported: the exporter needs {MIN_OPSET} or newer")


def export_graphs(model: DisNCLModel, out_dir: Path, opset: int = DEFAULT_OPSET) -> None:
    """Write ``image.onnx`` and ``text.onnx`` for ``model`` (on the CPU, in eval mode) into ``out_dir``."""
    check_opset(opset)
    model = model.to("cpu").eval()
    cfg = model.cfg
    batch = torch.export.Dim("batch", min=1)
    pixels = torch.zeros(_EXAMPLE_BATCH, 3, cfg.image_size, cfg.image_size)
    _export(ImageEncoder(model), (pixels,), IMAGE_INPUTS, {"pixel_values": {0: batch}}, out_dir / IMAGE_FILE, opset)

    sequence = torch.export.Dim("sequence", min=1, max=cfg.max_text_len)
    # Any in-vocabulary ids do for tracing; the EOS pooling is traced as tensor ops, not baked in.
    ids = torch.ones(_EXAMPLE_BATCH, _EXAMPLE_TEXT_LEN, dtype=torch.long)
    mask = torch.ones_like(ids)
    text_shapes = {name: {0: batch, 1: sequence} for name in TEXT_INPUTS}
    _export(TextEncoder(model), (ids, mask), TEXT_INPUTS, text_shapes, out_dir / TEXT_FILE, opset)


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    input_names: tuple[str, ...],
    dynamic_shapes: dict[str, dict[int, Any]],
    path: Path,
    opset: int,
) -> None:
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    module.eval()
    chatter = io.StringIO()
    try:
        with torch.no_grad(), _quiet(chatter):
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                input_names=list(input_names),
                output_names=list(OUTPUTS),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean the same thing here
        raise RuntimeError(f"ONNX export of {path.name} failed: {exc}\n{chatter.getvalue()}") from exc
    # The exporter keeps its own opset when converting to the requested one fails, and only logs it.
    produced = program.model.opset_imports.get("")
    if produced != opset:
        raise RuntimeError(
            f"ONNX export of {path.name} produced opset {produced}, not the requested {opset}; "
            f"choose opset {produced} or newer\n{chatter.getvalue()}"
        )
    program.save(os.fspath(path), external_data=weight_bytes > _INLINE_LIMIT_BYTES)


@contextlib.contextmanager
def _quiet(sink: io.StringIO) -> Iterator[None]:
    """Divert the exporter's progress lines, warnings and log records into ``sink``.

    They are only useful when the export fails (they are then part of the error); on success the
    parity check, not the exporter's warnings, decides whether the graph is right.
    """
    # torch's loggers ("torch", "torch.onnx", ...) carry their own stderr handlers, so swap those.
    loggers = [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.split(".")[0] == "torch" and isinstance(logger, logging.Logger) and logger.handlers
    ]
    saved = [logger.handlers for logger in loggers]
    for logger in loggers:
        logger.handlers = [logging.StreamHandler(sink)]
    try:
        with contextlib.redirect_stdout(sink), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                sink.writelines(f"{w.category.__name__}: {w.message}\n" for w in caught)
    finally:
        for logger, handlers in zip(loggers, saved, strict=True):
            logger.handlers = handlers
