"""An audit's training settings, from the size of the data (every value can still be overridden with ``--set``).

The numbers follow what the standard benchmark validated (docs/method.md §9): a ResNet image tower
at 64 px when training from scratch, about 3,000 optimiser steps in all, the split starting after
30 % of the epochs. Frozen towers (``--backbone``) train only the heads, which are cheap per step,
so they get more epochs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditPlan:
    """The chosen schedule and why; :meth:`overrides` gives it as ``section.key=value`` strings."""

    n_pairs: int
    frozen: bool
    batch_size: int
    epochs: int
    warmup_epochs: int
    lr: float
    lr_warmup_steps: int

    def overrides(self) -> list[str]:
        out = [
            f"train.batch_size={self.batch_size}", f"train.epochs={self.epochs}",
            f"train.warmup_epochs={self.warmup_epochs}", f"train.lr={self.lr}",
            f"train.lr_warmup_steps={self.lr_warmup_steps}",
        ]
        if self.frozen:
            return [*out, "model.freeze_towers=true"]
        return [*out, "model.image_size=64", "model.vision_arch=resnet", *_SCRATCH_MODEL]


# The standard benchmark's towers (disncl/bench/presets.py), which learn shape and colour from scratch.
_SCRATCH_MODEL = (
    "model.conv_widths=[32,64,128]", "model.conv_depths=[1,1,1]", "model.conv_grid=2",
    "model.text_width=64", "model.text_layers=2", "model.text_heads=4",
    "model.embed_dim=64", "model.mii_dim=32", "model.mei_dim=32", "model.head_hidden=128",
)
_TARGET_STEPS = 3000


def plan_for(n_pairs: int, frozen: bool) -> AuditPlan:
    """Defaults for ``n_pairs`` training pairs: the largest batch of 16, 32, 64 or 128 that leaves at
    least 16 steps per epoch, enough epochs for about 3,000 steps within 5–30 (10–40 frozen), the
    split after 30 % of them."""
    if n_pairs < 2:
        raise ValueError(f"an audit needs at least 2 usable pairs, found {n_pairs}")
    batch = 16
    while batch < 128 and batch * 16 <= n_pairs:
        batch *= 2
    steps_per_epoch = max(1, n_pairs // batch)
    lo, hi = (10, 40) if frozen else (5, 30)
    epochs = max(lo, min(hi, round(_TARGET_STEPS / steps_per_epoch)))
    return AuditPlan(
        n_pairs=n_pairs, frozen=frozen, batch_size=min(batch, n_pairs), epochs=epochs,
        warmup_epochs=max(1, round(0.3 * epochs)), lr=0.002 if not frozen else 0.001,
        lr_warmup_steps=max(1, min(100, epochs * steps_per_epoch // 10)),
    )
