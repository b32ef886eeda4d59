from __future__ import annotations

from pathlib import Path

import pytest

from disncl.config import ConfigError, RunConfig, dump_yaml, load_config


def test_defaults_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 3\nloss:\n  gamma: 0.5\n")
    cfg = load_config(f, ["train.epochs=7", "data.noise_rate=0.2", "loss.soft_targets=false"])
    assert cfg.train.epochs == 7
    assert cfg.loss.gamma == 0.5
    assert cfg.data.noise_rate == 0.2
    assert cfg.loss.soft_targets is False
    assert cfg.model.embed_dim == RunConfig().model.embed_dim


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.method=infonce", "model.image_mean=[0.1, 0.2, 0.3]"])
    f = tmp_path / "saved.yaml"
    f.write_text(dump_yaml(cfg))
    assert load_config(f) == cfg
    assert cfg.model.image_mean == (0.1, 0.2, 0.3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "unknown key(s) ['epoch']"),
        ("train.epochs=three", "expected an integer"),
        ("train.method=sgd", "not one of"),
        ("nosection.x=1", "unknown key(s) ['nosection']"),
        ("train.epochs", "section.key=value"),
        ("split.tol=1e", "expected a number"),
        ("split.tol=small", "expected a number"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        load_config(None, [override])


def test_numbers_in_scientific_notation_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-5 as text, 1.0e-5 as a number: both mean the number.
    assert load_config(None, ["split.tol=1e-5"]).split.tol == 1e-5
    assert load_config(None, ["train.lr=2E-3", "split.reg_covar=5.0e-4"]).train.lr == 2e-3
    path = tmp_path / "c.yaml"
    path.write_text("split:\n  tol: 1e-5\n")
    assert load_config(path).split.tol == 1e-5


def test_selection_space_follows_method() -> None:
    assert load_config(None, ["train.method=disncl"]).selection_space() == "mii"
    assert load_config(None, ["train.method=infonce"]).selection_space() == "full"
    assert load_config(None, ["train.method=infonce", "train.select_on=mii"]).selection_space() == "mii"


def test_trained_spaces_follow_method() -> None:
    assert load_config(None, ["train.method=disncl"]).trained_spaces() == ("mii", "full")
    assert load_config(None, ["train.method=infonce"]).trained_spaces() == ("full",)


def test_override_values_that_are_not_yaml_are_taken_as_written():
    assert load_config(None, ["data.shards=data/{split}-*.tar"]).data.shards == "data/{split}-*.tar"
    assert load_config(None, ["data.shards='{split}.tar'"]).data.shards == "{split}.tar"
    with pytest.raises(ConfigError, match="quote the value"):
        load_config(None, ["data.shards={split}"])


def test_the_warm_up_is_each_methods_own_unless_set():
    from disncl.methods import METHOD_NAMES

    modes = {m: load_config(None, [f"train.method={m}"]).warmup_mode() for m in METHOD_NAMES}
    assert modes == {"infonce": "fixed", "ncr": "fixed", "srem": "fixed", "disncl": "gated"}
    assert load_config(None, ["train.method=ncr", "train.warmup=gated"]).warmup_mode() == "gated"
    assert load_config(None, ["train.method=disncl", "train.warmup=fixed"]).warmup_mode() == "fixed"


def test_the_split_score_is_each_methods_own_unless_set():
    from disncl.methods import METHOD_NAMES

    scores = {m: load_config(None, [f"train.method={m}"]).split_score() for m in METHOD_NAMES}
    assert scores == {"infonce": "loss", "ncr": "cosine", "srem": "cosine", "disncl": "cosine"}
    assert load_config(None, ["train.method=srem", "split.score=loss"]).split_score() == "loss"
    assert load_config(None, ["train.method=disncl", "split.score=loss"]).split_score() == "loss"
