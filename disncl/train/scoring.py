"""Per-training-pair scores: the per-pair loss the GMM split is fitted on (Eq. 6), similarities,
ranks and best matches, written each epoch to ``pair_scores.csv`` for the app's noisy-pair explorer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from disncl.data.noise import NoisyPairs
from disncl.data.pairs import CaptionedImages
from disncl.eval.encode import Embeddings
from disncl.io import atomic_write
from disncl.losses.infonce import per_pair_infonce
from disncl.serve.pair_scores import COLUMNS, NUMERIC_COLUMNS, TEXT_COLUMNS


def per_pair_loss(
    img: np.ndarray, txt: np.ndarray, pairs: NoisyPairs, tau: float, batch_size: int, seed: int
) -> np.ndarray:
    """Per-pair symmetric InfoNCE over fixed random batches of training pairs (Eq. 6).

    The batches are drawn with their own seed, so the loss of a pair does not depend on the
    epoch's training order and a resumed run reproduces it exactly.
    """
    n = len(pairs.caption)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        sim = torch.from_numpy(img[pairs.image[idx]] @ txt[pairs.caption[idx]].T)
        out[idx] = per_pair_infonce(sim, tau).numpy()
    return out


def pair_distance(img: np.ndarray, txt: np.ndarray, pairs: NoisyPairs) -> np.ndarray:
    """``1 − cos(img[image_k], txt[caption_k])`` per training pair (Eq. 6e): unit-norm rows, so the dot
    product is the cosine; what ``split.score=cosine`` fits the mixture on instead of Eq. 6's loss."""
    return (1.0 - np.einsum("ij,ij->i", img[pairs.image], txt[pairs.caption])).astype(np.float32)


def _rank_and_best(query: np.ndarray, gallery: np.ndarray, target: np.ndarray, chunk: int = 2048):
    """For each query row: 1-based rank of ``target[q]`` in the gallery, and the best gallery index."""
    rank = np.empty(len(query), dtype=np.int64)
    best = np.empty(len(query), dtype=np.int64)
    for s in range(0, len(query), chunk):
        sim = query[s : s + chunk] @ gallery.T
        own = sim[np.arange(len(sim)), target[s : s + chunk]]
        rank[s : s + chunk] = (sim > own[:, None]).sum(1) + 1
        best[s : s + chunk] = sim.argmax(1)
    return rank, best


def pair_table(
    emb: Embeddings, pairs: NoisyPairs, loss: np.ndarray, clean_prob: np.ndarray, space: str
) -> dict[str, np.ndarray]:
    """Everything the explorer shows about a training pair, as columns; ranks and best matches
    are taken in ``space`` (the run's selection space)."""
    mii_sim = np.einsum("ij,ij->i", emb.img_mii[pairs.image], emb.txt_mii[pairs.caption])
    full_sim = np.einsum("ij,ij->i", emb.img_full[pairs.image], emb.txt_full[pairs.caption])
    img, txt = emb.space(space)
    image_rank, best_image = _rank_and_best(txt[pairs.caption], img, pairs.image)
    _, best_caption_of_image = _rank_and_best(img, txt, np.zeros(len(img), dtype=np.int64))
    return {
        "pair": np.arange(len(pairs.caption)),
        "caption_index": pairs.caption,
        "image_index": pairs.image,
        "clean_prob": clean_prob.astype(np.float32),
        "loss": loss.astype(np.float32),
        "mii_sim": mii_sim.astype(np.float32),
        "full_sim": full_sim.astype(np.float32),
        "image_rank": image_rank,
        "best_image": best_image,
        "best_caption_for_image": best_caption_of_image[pairs.image],
    }


def write_pair_scores(
    path: str | Path, table: dict[str, np.ndarray], ds: CaptionedImages, is_clean: np.ndarray | None
) -> Path:
    """Write the table as CSV (atomically) with the caption text and image path joined in.

    The columns and their order are the reader's (:data:`disncl.serve.pair_scores.COLUMNS`).
    """
    cols = [c for c in COLUMNS if c in NUMERIC_COLUMNS]
    if set(table) != set(cols):
        raise ValueError(f"pair table columns {sorted(table)} differ from the pair-scores schema {sorted(cols)}")
    header = list(COLUMNS)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for k in range(len(table["pair"])):
                row = [_fmt(table[c][k]) for c in cols]
                gt = "" if is_clean is None else int(is_clean[k])
                text = {"image": ds.image_paths[table["image_index"][k]],
                        "caption": ds.captions[table["caption_index"][k]]}
                w.writerow([*row, *(text[c] for c in TEXT_COLUMNS), gt])

    return atomic_write(path, write)


def _fmt(v: np.generic) -> str | int:
    return f"{float(v):.5f}" if isinstance(v, np.floating) else int(v)
