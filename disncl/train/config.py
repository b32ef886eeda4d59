"""The ``train`` and ``split`` sections of a run's configuration (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from disncl.methods import METHOD_NAMES


@dataclass
class TrainConfig:
    """The optimisation loop: method (a name from :data:`disncl.methods.METHODS`), schedule, devices, output."""

    method: str = "disncl"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_warmup_steps: int = 100
    grad_clip: float = 1.0
    warmup_epochs: int = 2
    # "fixed": the split starts after warmup_epochs. "adaptive": it starts after at least warmup_epochs,
    # at the first epoch whose per-pair losses are bimodal (Ashman's D > split.bimodality, Eq. 10),
    # and after warmup_max_epochs at the latest. "gated": after warmup_epochs if the losses are then
    # bimodal, else never (Eq. 6f: data that look clean train without it). "auto": the method's own
    # (disncl.methods: gated for DisNCL, fixed for the baselines; docs/method.md Sections 2.5 and 9.5).
    warmup: Literal["auto", "fixed", "adaptive", "gated"] = "auto"
    warmup_max_epochs: int = 6
    # What a gated warm-up does when the gate stays shut (Eq. 6g): "no_split" trains on without the split
    # (Eq. 6f); "complementary" starts it anyway, the flagged pairs on SREM's complementary loss
    # (loss.flagged_loss), which pushes a pair from its partner, boundedly, and never towards a guess.
    # Default since docs/method.md §9.8 (with shut_gate_unfit 0.5 and shut_gate_space full; bench variant
    # ``no_fallback`` keeps the gate's "never").
    shut_gate: Literal["no_split", "complementary"] = "complementary"
    # Eq. 6h: the "complementary" fallback starts only where the pairs are not being fit, i.e. the mean
    # per-pair loss (Eq. 6) after warm-up is above this share of its chance level log B (clean data sits
    # near 0.2, 80 % noise near 1, docs/method.md §9.8); 0: wherever the gate stays shut (Eq. 6g alone).
    shut_gate_unfit: float = 0.5
    # Eq. 6i: where that fallback starts, the space its split is fitted in and the model is selected on from
    # then: "selection" keeps the method's own (select_on); "full" moves both to the towers' features, which
    # learn faster than the MII codes while most pairs are wrong (docs/method.md §9.8). The switch is written
    # to the run's config.yaml, so evaluation, export and a resume read the space the run was selected on.
    shut_gate_space: Literal["selection", "full"] = "full"
    # Eq. 6j: where that fallback starts, "detached" feeds the heads sg(h) from then on (heads_detached), so the
    # towers train for the full space the fallback selects in, unslowed by the MII branch. Default since
    # docs/method.md §9.8 (bench variant ``joint_heads`` keeps "joint"); where the fallback does not start it
    # changes nothing.
    shut_gate_heads: Literal["joint", "detached"] = "detached"
    # Eq. 2c: the gradient path during warm-up. "joint": every term trains the towers. "detached": the heads
    # read sg(h), so the towers train on the full-space alignment (Eq. 2b) alone, and the towers' and the
    # other modules' gradients are clipped each on their own norm: the towers' warm-up is then InfoNCE's
    # (docs/method.md §9.8: the MII branch slows the towers while most pairs are wrong).
    warmup_heads: Literal["joint", "detached"] = "joint"
    # Eq. 2d, the complement: "detached" feeds the heads sg(h) in every epoch that uses the split, after a joint
    # warm-up (docs/method.md §9.10: with a perfect detector the MII branch's gradient costs the towers).
    split_heads: Literal["joint", "detached"] = "joint"
    # Eq. 2c for the whole run: the heads read sg(h) in every epoch, so the towers train on the full-space terms
    # alone. Set by Eq. 6j's fallback (shut_gate_heads), or by hand.
    heads_detached: bool = False
    # Eq. 2e: where the path is joint, the share of the heads' gradient that reaches the towers (1: all of it,
    # 0: none, as detached but without the per-group clipping or the reconstruction target's stop-gradient).
    heads_grad_scale: float = 1.0
    # Eq. 2f: from this (1-based) epoch on the heads read sg(h), as with heads_detached; 0: never. The late epochs,
    # when the trusted set has settled, then fit it as NCR-style does (docs/method.md §9.10).
    heads_detached_from: int = 0
    # Eq. 6n, NCR's co-divide: a second network, built from another initialisation, trains beside the main one; each
    # epoch each network's split (Eq. 6) decides the other's clean probabilities, so neither trains on the pairs
    # its own fit has memorised as clean. Twice the cost of a run; only the main network is selected and served.
    # Off by default (bench variant ``co_divide``, docs/method.md §9.15).
    co_divide: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0
    eval_batch_size: int = 512
    select_on: Literal["auto", "mii", "full"] = "auto"
    out: str = "runs/default"
    # Where model.freeze_towers keeps the towers' cached features (disncl.train.feature_cache);
    # empty: RUN/feature_cache. Runs that share a backbone and data may share one folder.
    feature_cache: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"method {self.method!r} is not one of {list(METHOD_NAMES)}")
        if self.heads_detached_from < 0:
            raise ValueError(f"train.heads_detached_from must be 0 (never) or an epoch >= 1, got "
                             f"{self.heads_detached_from}")
        if not 0.0 <= self.heads_grad_scale <= 1.0:
            raise ValueError(f"train.heads_grad_scale must lie in [0, 1], got {self.heads_grad_scale}")


@dataclass(frozen=True)
class SplitConfig:
    """Gaussian-mixture settings of the split, NCR's values (Eq. 6 and Section 3 of docs/method.md)."""

    n_components: int = 2
    max_iter: int = 10
    tol: float = 1e-2
    reg_covar: float = 5e-4
    threshold: float = 0.5
    seed: int = 0
    # Temperature of the per-pair InfoNCE loss the mixture is fitted on (Eq. 6, step 1), for every method.
    tau: float = 0.07
    # Ashman's D above which the per-pair losses count as bimodal (adaptive warm-up, Eq. 10).
    bimodality: float = 2.0
    # Weight of the previous epoch's clean probability in its running average (Eq. 6c); 0 = no smoothing.
    ema: float = 0.0
    # What the mixture is fitted on: "loss", the per-pair InfoNCE over fixed random batches (Eq. 6), or
    # "cosine", the pair's own distance 1 − cos in the selection space (Eq. 6e), which no batch
    # composition perturbs (docs/method.md §5.3). "auto": the method's own (disncl.methods: cosine for
    # the methods that train with the split, loss for InfoNCE; docs/method.md §9.6).
    score: Literal["auto", "loss", "cosine"] = "auto"
    # A benchmark reference, not a method: the clean probability is the ground truth (1 for a truly clean pair,
    # 0 for an injected mismatch), a perfect detector; the split starts after train.warmup_epochs without a
    # gate (0: from the first epoch; docs/method.md §9.9). Needs injected noise, whose truth the trainer knows.
    oracle: bool = False
    # Eq. 6k: each epoch that trains with the split, a flagged pair's caption is re-paired with the flagged image
    # it matches best where that match is mutual and as close as the trusted pairs' ``repair_quantile`` distance
    # (disncl.train.repair); the next epoch trains it with that image as a trusted pair. Off by default (bench
    # variant ``repair_flagged``, docs/method.md §9.13).
    repair: bool = False
    repair_quantile: float = 0.5
    # Eq. 6l: the clean probability refitted to never rise with the loss (isotonic regression); off by default
    # (bench variant ``monotone_converged`` with a converged mixture, docs/method.md §9.13).
    monotone: bool = False
    # Eq. 6m: a method with two spaces (DisNCL's MII and full) trusts a pair only as far as the mixtures of both
    # do, w = min(w_selection, w_other); off by default (bench variant ``agree_split``, docs/method.md §9.13).
    agree: bool = False
    # Eq. 6o: the share of the training pairs a user knows (or estimates, e.g. by labelling a sample) to be clean;
    # the split then trusts at most that share, the pairs of lowest score, w_k = 0 for the rest. 1.0 = no cap, the
    # mixture alone (the default; bench variants ``clean_share_known``/``clean_share_over``, docs/method.md §9.16).
    clean_share: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.clean_share <= 1.0:
            raise ValueError(f"split.clean_share must lie in (0, 1] (the share of clean training pairs; 1 = no cap), "
                             f"got {self.clean_share}")
        if not 0.0 < self.repair_quantile <= 1.0:
            raise ValueError(f"split.repair_quantile must lie in (0, 1], got {self.repair_quantile}")
