"""Contrastive alignment losses: the CLIP/InfoNCE baseline (Eq. 0) and its soft-target form (Eq. 3).

All functions are pure: tensors in, tensors out. Equation numbers refer to docs/method.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity matrix H_ij = <a_i, b_j> / (||a_i|| ||b_j||) (Eq. 0 in docs/method.md).

    Args:
        a: (N, D) embeddings.
        b: (M, D) embeddings.

    Returns:
        (N, M) matrix of cosine similarities; both inputs are L2-normalised here.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"similarity expects (N, D) and (M, D), got {tuple(a.shape)}, {tuple(b.shape)}")
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def _check_square(sim: Tensor) -> None:
    """Raise ValueError unless sim is a square (B, B) matrix S of Eq. 0 / Eq. 3 in docs/method.md."""
    if sim.dim() != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"expected a square (B, B) similarity matrix, got {tuple(sim.shape)}")


def _reduce(per_pair: Tensor, weights: Tensor | None) -> Tensor:
    """Batch reduction of per-pair losses (Eq. 3b in docs/method.md).

    mean_i l_i without weights; sum_i w_i l_i / B with weights (w treated as a constant).
    """
    if weights is None:
        return per_pair.mean()
    if weights.shape != per_pair.shape:
        raise ValueError(f"weights must have shape {tuple(per_pair.shape)}, got {tuple(weights.shape)}")
    return (weights.detach().to(per_pair.dtype) * per_pair).sum() / per_pair.shape[0]


def per_pair_infonce(sim: Tensor, tau: float) -> Tensor:
    """Per-pair symmetric InfoNCE with one-hot targets (Eq. 0 and Eq. 6 in docs/method.md).

    l_i = 1/2 * [ -log softmax_j(S_ij / tau)[i]  -  log softmax_j(S_ji / tau)[i] ],
    i.e. half the sum of the cross-entropy of row i (image -> text) and of column i (text -> image).

    Args:
        sim: (B, B) similarity matrix, S_ij = sim(image i, caption j).
        tau: softmax temperature (> 0).

    Returns:
        (B,) per-pair losses.
    """
    _check_square(sim)
    logits = sim / tau
    idx = torch.arange(sim.shape[0], device=sim.device)
    loss_i2t = F.cross_entropy(logits, idx, reduction="none")
    loss_t2i = F.cross_entropy(logits.T, idx, reduction="none")
    return 0.5 * (loss_i2t + loss_t2i)


def infonce(img: Tensor, txt: Tensor, tau: float, weights: Tensor | None = None) -> Tensor:
    """Symmetric CLIP/InfoNCE loss (Eq. 0 in docs/method.md).

    L = 1/2 * [ mean_i CE(e_i, softmax_j(H_ij / tau)) + mean_i CE(e_i, softmax_j(H_ji / tau)) ],
    H_ij = cos(img_i, txt_j). With per-pair weights w the batch mean becomes sum_i w_i l_i / B (Eq. 3b).

    Args:
        img: (B, D) image embeddings (normalised inside).
        txt: (B, D) text embeddings (normalised inside); row i is paired with img row i.
        tau: softmax temperature (> 0).
        weights: optional (B,) per-pair weights, treated as constants.

    Returns:
        Scalar loss.
    """
    return _reduce(per_pair_infonce(similarity(img, txt), tau), weights)


def soft_infonce(
    sim: Tensor, tau: float, t_i2t: Tensor, t_t2i: Tensor, weights: Tensor | None = None
) -> Tensor:
    """Symmetric InfoNCE against soft matching targets (Eq. 3 in docs/method.md).

    L_align = 1/2 * [ mean_i CE(T^{i2t}_i, softmax_j(S_ij / tau))
                    + mean_i CE(T^{t2i}_i, softmax_j(S_ji / tau)) ],
    CE(t, p) = -sum_j t_j log p_j. With per-pair weights w the mean becomes sum_i w_i l_i / B (Eq. 3b).

    Args:
        sim: (B, B) similarity matrix S (image rows, caption columns).
        tau: softmax temperature (> 0).
        t_i2t: (B, B) targets; row i is a distribution over captions j for image i.
        t_t2i: (B, B) targets; row i is a distribution over images j for caption i.
        weights: optional (B,) per-pair weights, treated as constants.

    Returns:
        Scalar loss. With one-hot targets it equals the InfoNCE loss on the same sim.
    """
    _check_square(sim)
    if t_i2t.shape != sim.shape or t_t2i.shape != sim.shape:
        raise ValueError(
            f"targets must match sim shape {tuple(sim.shape)}, got {tuple(t_i2t.shape)}, {tuple(t_t2i.shape)}"
        )
    logits = sim / tau
    loss_i2t = -(t_i2t * F.log_softmax(logits, dim=1)).sum(dim=1)
    loss_t2i = -(t_t2i * F.log_softmax(logits.T, dim=1)).sum(dim=1)
    return _reduce(0.5 * (loss_i2t + loss_t2i), weights)
