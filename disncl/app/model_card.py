"""The Model card tab: model, data, noise, test recall MII vs full, ONNX parity, from the bundle manifest."""

from __future__ import annotations

from typing import Any

from disncl.app.services import SPACE_NAMES, SPACES, manifest_tau
from disncl.serve.gallery import Gallery


def _recall_rows(retrieval: dict[str, Any]) -> list[str]:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
    rows = ["| space | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for space in SPACES:
        if space in retrieval:
            values = " | ".join(f"{retrieval[space].get(k, float('nan')):.1f}" for k in keys)
            rows.append(f"| {SPACE_NAMES[space]} | {values} |")
    return rows


def model_card(manifest: dict[str, Any], gallery: Gallery | None = None) -> str:
    """Markdown: what model, trained how and on what noise, its test recall (MII vs full), the gallery."""
    training = manifest.get("training") or {}
    model_cfg = manifest.get("model_config") or {}
    dims = manifest.get("embedding_dims") or {}
    method = training.get("method") or "unknown (the bundle records no training run)"
    lines = ["## Model card", "", f"**Method:** {method}"]
    if training:
        noise = training.get("noise_file") or (
            f"{training.get('noise_kind')}-level, rate {training.get('noise_rate')}"
            if training.get("noise_rate") else "none (clean pairs)"
        )
        data = training.get("data_root") or training.get("karpathy_json") or "unknown"
        lines += [
            f"**Trained on:** `{data}` for {training.get('epochs')} epochs, checkpoint `{training.get('checkpoint')}`",
            f"**Training noise:** {noise}",
        ]
    lines += [
        f"**Architecture:** image size {model_cfg.get('image_size', '?')}, "
        f"embedding widths full {dims.get('full', '?')}, MII {dims.get('mii', '?')}, MEI {dims.get('mei', '?')}; "
        "backbone " + (f"`{model_cfg['backbone']}`" if model_cfg.get("backbone") else "a CLIP trained from scratch"),
        f"**Soft-match temperature τ:** {manifest_tau(manifest):g}",
        f"**Exported:** {manifest.get('created', '?')}",
    ]
    lines += ["", *_evaluation_lines(manifest.get("evaluation"))]
    worst = _worst_parity(manifest.get("parity") or {})
    if worst is not None:
        lines += ["", f"ONNX Runtime matches PyTorch to {worst:.1e} (largest absolute difference of any output)."]
    lines += ["", *_variant_lines(manifest.get("variant") or {"name": "float32"})]
    if gallery is not None:
        lines += [
            "",
            f"**Gallery:** {gallery.n_images} images and {gallery.n_captions} captions, "
            f"{gallery.kind} index, pair scores {'attached' if gallery.pair_scores_path else 'not attached'}.",
        ]
    return "\n".join(_paragraphs(lines))


def _variant_lines(variant: dict[str, Any]) -> list[str]:
    """Which graphs are served (float32, fused, int8) and, for int8, how far its retrieval moved."""
    line = f"**Graphs served:** {variant.get('name', 'float32')}"
    check = variant.get("check")
    if check:
        drop = max(d for space in ("mii", "full") for d in check[space]["drop"].values())
        cosine = min(c for space in ("mii", "full") for c in check[space]["mean_cosine"].values())
        line += (f" — against float32 on {check.get('split', 'validation data')}: largest recall drop "
                 f"{drop:.2f} points, smallest mean embedding cosine {cosine:.4f}")
    return [line + "."]


def _worst_parity(parity: dict[str, Any]) -> float | None:
    """The largest ONNX-vs-PyTorch difference recorded by the export's parity check, if any."""
    diffs = parity.get("max_abs_diff")
    if not isinstance(diffs, dict):
        return None
    values = [v for per_output in diffs.values() if isinstance(per_output, dict) for v in per_output.values()]
    return max(values) if values else None


def _paragraphs(lines: list[str]) -> list[str]:
    """Markdown lines, with bold "key:" lines ended by a hard break so they render one per line."""
    return [line + "  " if line.startswith("**") else line for line in lines]


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["**Test recall:** not recorded (run `python -m disncl eval RUN` before exporting)."]
    result = evaluation.get("result") or {}
    lines = [f"### Test recall on split `{result.get('split', '?')}` (checkpoint `{result.get('checkpoint', '?')}`)"]
    if not evaluation.get("up_to_date", True):
        lines.append("*The checkpoint changed after this evaluation: the numbers may be stale.*")
    lines += _recall_rows(result.get("retrieval") or {})
    detection = (result.get("detection") or {}).get("gmm")
    if detection:
        lines += ["", f"Noise detection on the training pairs: AUROC {detection.get('auroc', float('nan')):.3f}, "
                      f"noisy precision {detection.get('noisy_precision', float('nan')):.3f}, "
                      f"noisy recall {detection.get('noisy_recall', float('nan')):.3f}."]
    return lines
