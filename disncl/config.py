"""Typed configuration: one dataclass per concern, loaded from YAML and ``--set`` overrides.

Every training run saves its :class:`RunConfig` as ``config.yaml`` beside its checkpoints, so a
run directory alone says how it was made and can be resumed or evaluated.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from disncl.losses.disncl import DisNCLLossConfig
from disncl.losses.srem import SREMLossConfig
from disncl.models.config import ModelConfig
from disncl.train.noise_split import SplitConfig


@dataclass
class DataConfig:
    """Where the data is and how noise is injected into the training split.

    Either ``root`` (a folder with ``{split}.csv|tsv|jsonl``, e.g. the synthetic benchmark),
    ``karpathy_json`` + ``images_root`` (Flickr30K / MS-COCO), or ``shards``: WebDataset-style tar
    shards streamed without decoding the split into memory, a pattern where ``{split}`` stands for
    the split's name (``data/shards/{split}-*.tar``, ``data/shards/{split}-{00000..00009}.tar`` or a
    folder ``data/shards/{split}``; see :mod:`disncl.data.shards`). ``noise_file`` (an existing
    ``.npy`` index of either convention) overrides ``noise_kind``/``noise_rate``.

    ``precomp_root``: a SCAN "precomp" folder (``{split}_ims.npy`` region features +
    ``{split}_caps.txt``; see :mod:`disncl.data.precomp`), for ``model.arch: precomp``. Its
    validation split keeps only the first ``precomp_val_images`` images (1,000 as in NCR/SCAN;
    0 keeps all).
    """

    root: str = ""
    karpathy_json: str = ""
    images_root: str = ""
    shards: str = ""
    precomp_root: str = ""
    precomp_val_images: int = 1000
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    noise_kind: Literal["image", "caption"] = "image"
    noise_rate: float = 0.0
    noise_seed: int = 0
    noise_file: str = ""
    # Unusable rows and images are skipped and reported; strict refuses the data instead.
    strict: bool = False


@dataclass
class TrainConfig:
    """The optimisation loop: method, schedule, devices, output."""

    method: Literal["infonce", "disncl", "ncr", "srem"] = "disncl"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_warmup_steps: int = 100
    grad_clip: float = 1.0
    warmup_epochs: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_threads: int = 0
    eval_batch_size: int = 512
    select_on: Literal["auto", "mii", "full"] = "auto"
    out: str = "runs/default"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: DisNCLLossConfig = field(default_factory=DisNCLLossConfig)
    srem: SREMLossConfig = field(default_factory=SREMLossConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def trained_spaces(self) -> tuple[str, ...]:
        """Similarity spaces the method trains: only DisNCL trains its MII heads (infonce, ncr, srem: full)."""
        return ("mii", "full") if self.train.method == "disncl" else ("full",)

    def selection_space(self) -> Literal["mii", "full"]:
        """The similarity space used for model selection and the per-pair loss (full unless DisNCL)."""
        if self.train.select_on != "auto":
            return self.train.select_on
        return "mii" if self.train.method == "disncl" else "full"


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
    return cls(**kwargs)


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
