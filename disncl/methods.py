"""The training methods: one record each, and the only place that lists them.

The CLI's choices, config validation, the trainer, the bench grids and its report all read
:data:`METHODS`. Adding a method means adding its record here and its loss (``disncl/losses/``)
plus an objective (``disncl/train/objective.py``) that the record names. This module imports
neither torch nor numpy, so configuration and serving code can read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Space = Literal["mii", "full"]


@dataclass(frozen=True)
class Method:
    """What the rest of the package needs to know about a method.

    ``objective`` is ``"module:function"``, resolved on first use so that reading the registry costs
    no torch import; the function has the signature of
    :func:`disncl.train.objective.infonce_objective`. ``spaces`` are the similarity spaces the method
    trains (the first is its selection space: model selection and the per-pair loss of the split).
    ``config_section`` names the :class:`~disncl.config.RunConfig` section holding its
    hyperparameters. ``uses_split`` says whether it reads the trainer's clean probability after
    warm-up; ``warmup`` is the warm-up ``train.warmup: auto`` gives it and ``split_score`` what
    ``split.score: auto`` fits its split on, each method's chosen on its own validation runs
    (docs/method.md §9.5-9.6; InfoNCE, which trains without the split, keeps Eq. 6's loss for the
    clean probability its pair scores report).
    """

    name: str
    label: str
    objective: str
    uses_split: bool
    spaces: tuple[Space, ...]
    config_section: str
    colour: str
    warmup: Literal["fixed", "gated"] = "fixed"
    split_score: Literal["loss", "cosine"] = "loss"

    @property
    def selection_space(self) -> Space:
        return self.spaces[0]

    def objective_fn(self) -> Callable[..., Any]:
        module, function = self.objective.split(":")
        return getattr(importlib.import_module(module), function)


_OBJECTIVES = "disncl.train.objective"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("infonce", "InfoNCE", f"{_OBJECTIVES}:infonce_objective", uses_split=False, spaces=("full",),
               config_section="infonce", colour="tab:gray"),
        Method("ncr", "NCR-style", f"{_OBJECTIVES}:ncr_objective", uses_split=True, spaces=("full",),
               config_section="infonce", colour="tab:blue", split_score="cosine"),
        Method("srem", "SREM", f"{_OBJECTIVES}:srem_objective", uses_split=True, spaces=("full",),
               config_section="srem", colour="tab:green", split_score="cosine"),
        Method("disncl", "DisNCL", f"{_OBJECTIVES}:disncl_objective", uses_split=True, spaces=("mii", "full"),
               config_section="loss", colour="tab:red", warmup="gated", split_score="cosine"),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> Method:
    """The record of ``name``; a ``ValueError`` that lists the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}") from None
