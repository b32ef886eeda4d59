"""Faster CPU graphs for a bundle: ONNX Runtime's transformer fusion and dynamic int8 quantisation.

Both start from the float32 graphs that passed the 1e-4 parity check against PyTorch.

- ``fused`` (float32): :func:`onnxruntime.transformers.optimizer.optimize_model` rewrites the
  attention, LayerNorm and GELU subgraphs into ONNX Runtime's fused kernels. It is float32 math in
  another order, so it must pass the same parity check as the plain export.
- ``int8``: :func:`onnxruntime.quantization.quantize_dynamic` stores MatMul/Gemm weights as int8 and
  quantises activations per call. That cannot pass a 1e-4 parity, so it is checked where users feel
  it (:func:`retrieval_check`): on the training run's validation split, recall@1/5/10 in both
  directions and both spaces must stay within ``max_recall_drop`` points of the float32 graphs, and
  the mean cosine between the two graphs' embeddings must be at least ``min_cosine``.

The fused graph is float32 and fusion comes first, so ``int8`` quantises the fused graph when both
are asked for. ONNX Runtime does the graph work; this module only chooses, checks and records.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disncl.eval.retrieval import recall_at_k

OPTIMIZE_CHOICES = ("none", "fused")
QUANTIZE_CHOICES = ("none", "int8")
SPACES = ("mii", "full")
RECALL_KS = (1, 5, 10)


class VariantCheckError(RuntimeError):
    """A quantised bundle retrieves differently from its float32 graphs beyond the allowed drop."""


@dataclass(frozen=True)
class VariantSpec:
    """Which faster graphs to build, and the retrieval-level tolerance of a quantised one."""

    optimize: str = "none"
    quantize: str = "none"
    max_recall_drop: float = 1.0
    min_cosine: float = 0.99

    def __post_init__(self) -> None:
        if self.optimize not in OPTIMIZE_CHOICES:
            raise ValueError(f"optimize must be one of {OPTIMIZE_CHOICES}, got {self.optimize!r}")
        if self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {self.quantize!r}")
        if not self.max_recall_drop >= 0 or not 0 <= self.min_cosine <= 1:
            raise ValueError("max_recall_drop must be >= 0 and min_cosine in [0, 1]")

    @property
    def name(self) -> str:
        """``float32``, ``fused``, ``int8`` or ``fused+int8``: what the manifest and model card call it."""
        parts = [p for p, on in (("fused", self.optimize == "fused"), ("int8", self.quantize == "int8")) if on]
        return "+".join(parts) or "float32"


def fuse_graph(path: Path) -> None:
    """Replace the ONNX graph at ``path`` by ONNX Runtime's fused version (float32, same inputs/outputs).

    Head count and width are read from the graph (0 = detect); a ResNet tower has no attention to fuse
    and keeps its convolutions, with ONNX Runtime's generic rewrites only.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(os.fspath(path), model_type="clip", num_heads=0, hidden_size=0, opt_level=0,
                           use_gpu=False)
    _replace(path, lambda tmp: model.save_model_to_file(os.fspath(tmp)))


def quantize_graph(path: Path) -> None:
    """Replace the ONNX graph at ``path`` by its dynamic int8 quantisation.

    Only MatMul is quantised: the towers' layers, where the time goes. The heads (Gemm after pooling)
    and convolutions stay float32, because the MII head is small and amplifies error: on a tiny model,
    int8 heads moved the mean MII cosine to 0.986 while the full features stayed at 0.9999.
    The exporter's stored shape annotations are dropped first; the quantiser re-infers them.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(os.fspath(path))
    del model.graph.value_info[:]

    def write(tmp: Path) -> None:
        onnx.save(model, os.fspath(tmp))
        quantize_dynamic(os.fspath(tmp), os.fspath(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])

    _replace(path, write)


def _replace(path: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _recalls(img: np.ndarray, txt: np.ndarray, cap2img: np.ndarray) -> dict[str, float]:
    """Recall@K (percent) of image→text and text→image (Eq. 11) for unit embeddings; no rsum."""
    out = recall_at_k(img @ txt.T, np.arange(len(img)), cap2img, RECALL_KS)
    out.pop("rsum")
    return out


def retrieval_check(
    reference: Any, candidate: Any, images: Sequence[str | os.PathLike[str]], captions: Sequence[str],
    cap2img: np.ndarray, spec: VariantSpec,
) -> dict[str, Any]:
    """Compare two bundles' retrieval on one split; raise :class:`VariantCheckError` beyond the spec.

    ``reference`` and ``candidate`` are :class:`disncl.serve.Bundle` s (float32 and faster graphs),
    ``cap2img[j]`` the image index of caption ``j``. Returns recalls, drops and cosines per space.
    """
    if len(images) == 0 or len(captions) == 0 or len(cap2img) != len(captions):
        raise ValueError("the retrieval check needs images, captions and one image index per caption")
    ref_img, ref_txt = reference.encode_images(list(images)), reference.encode_texts(list(captions))
    new_img, new_txt = candidate.encode_images(list(images)), candidate.encode_texts(list(captions))
    report: dict[str, Any] = {"n_images": len(images), "n_captions": len(captions),
                              "max_recall_drop": spec.max_recall_drop, "min_cosine": spec.min_cosine}
    failures = []
    for space in SPACES:
        before = _recalls(getattr(ref_img, space), getattr(ref_txt, space), cap2img)
        after = _recalls(getattr(new_img, space), getattr(new_txt, space), cap2img)
        drops = {k: before[k] - after[k] for k in before}
        cosine = {
            "image": float(np.mean(np.sum(getattr(ref_img, space) * getattr(new_img, space), axis=1))),
            "text": float(np.mean(np.sum(getattr(ref_txt, space) * getattr(new_txt, space), axis=1))),
        }
        report[space] = {"float32": before, "variant": after, "drop": drops, "mean_cosine": cosine}
        failures += [f"{space} {k} drops {d:.2f} points" for k, d in drops.items() if not d <= spec.max_recall_drop]
        failures += [f"{space} {m} mean cosine {c:.4f}" for m, c in cosine.items() if not c >= spec.min_cosine]
    if failures:
        raise VariantCheckError(
            f"the {spec.name} graphs retrieve differently from float32 on {len(images)} validation images: "
            f"{'; '.join(failures)} (allowed: recall drop <= {spec.max_recall_drop:g} points, mean cosine >= "
            f"{spec.min_cosine:g}); the bundle was not written. Export without --quantize, or check the model."
        )
    report["passed"] = True
    return report
