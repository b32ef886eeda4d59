"""Typed configuration: one dataclass per concern, loaded from YAML and ``--set`` overrides.

Each section's dataclass lives beside what it configures (``disncl/data/config.py``,
``disncl/models/config.py``, ``disncl/losses/config.py``, ``disncl/train/config.py``); this module
joins them and reads YAML. None of them imports torch, so serving code can read a run's config.
Every training run saves its :class:`RunConfig` as ``config.yaml`` beside its checkpoints, so a
run directory alone says how it was made and can be resumed or evaluated.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from disncl.data.config import DataConfig
from disncl.losses.config import DisNCLLossConfig, InfoNCELossConfig, SREMLossConfig
from disncl.methods import get_method
from disncl.models.config import ModelConfig
from disncl.train.config import SplitConfig, TrainConfig

_SCIENTIFIC = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: DisNCLLossConfig = field(default_factory=DisNCLLossConfig)
    infonce: InfoNCELossConfig = field(default_factory=InfoNCELossConfig)
    srem: SREMLossConfig = field(default_factory=SREMLossConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.co_divide:
            self._check_co_divide()
        if self.split.oracle and self.split.clean_share < 1.0:
            raise ValueError("split.clean_share caps the mixture's split, and split.oracle replaces it by the ground "
                             "truth; leave clean_share at 1 with the oracle")

    def _check_co_divide(self) -> None:
        """What Eq. 6n's two networks cannot be combined with, each said before a run starts."""
        if not get_method(self.train.method).uses_split:
            raise ValueError(f"train.co_divide exchanges the networks' splits, and method {self.train.method!r} "
                             "trains without one; choose a method with a split or leave co_divide off")
        clashes = {
            "split.oracle": (self.split.oracle, "the ground-truth split leaves nothing to divide"),
            "split.ema": (self.split.ema > 0, "each network's running average would mix in the other's split"),
            "split.repair": (self.split.repair, "the networks would re-pair the pairs differently"),
            "model.freeze_towers": (self.model.freeze_towers, "frozen towers leave the two networks one set of "
                                                              "features, so their splits would not differ"),
        }
        for key, (on, why) in clashes.items():
            if on:
                raise ValueError(f"train.co_divide cannot be combined with {key}: {why}; switch one of them off")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def trained_spaces(self) -> tuple[str, ...]:
        """Similarity spaces the method trains (its registry record's ``spaces``)."""
        return get_method(self.train.method).spaces

    def selection_space(self) -> Literal["mii", "full"]:
        """The space for model selection and the split's per-pair loss: the method's own unless ``select_on``."""
        if self.train.select_on != "auto":
            return self.train.select_on
        return get_method(self.train.method).selection_space

    def warmup_mode(self) -> Literal["fixed", "adaptive", "gated"]:
        """How the split's warm-up ends (Eq. 6d/6f): ``train.warmup``, or the method's own for ``auto``."""
        if self.train.warmup != "auto":
            return self.train.warmup
        return get_method(self.train.method).warmup

    def split_score(self) -> Literal["loss", "cosine"]:
        """What the split's mixture is fitted on (Eq. 6 or 6e): ``split.score``, or the method's own for ``auto``."""
        if self.split.score != "auto":
            return self.split.score
        return get_method(self.train.method).split_score


class ConfigError(ValueError):
    """A configuration file or override that does not fit the schema."""


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, or fail naming the key."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last: ConfigError | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as err:
                last = err
        raise last or ConfigError(f"{where}: cannot read {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, where) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        # YAML 1.1 reads 1e-5 (no dot) as text; a number written that way is still meant as one.
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected text, got {value!r}; quote the value (e.g. key='{{split}}.tar')")
        return "" if value is None else str(value)
    return value


def build(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) mapping, checking names and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(known)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:  # a section's own check (__post_init__)
        raise ConfigError(f"{where}: {exc}") from exc


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``"train.epochs=3"`` → ``{"train": {"epochs": 3}}`` (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        # Paths and patterns such as "{split}-*.tar" are not YAML; take them as written.
        value = raw
    node: dict[str, Any] = {}
    cur = node
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional), apply ``section.key=value`` overrides, validate."""
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        values = loaded
    for ov in overrides or []:
        values = merge(values, parse_override(ov))
    return build(RunConfig, values)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
