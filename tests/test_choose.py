"""``train --choose``: one run per candidate value, the one with the best validation rSum chosen, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from disncl.cli import main
from disncl.config import ConfigError
from disncl.train.choose import candidate_overrides, parse_choices


def test_choices_parse_into_a_grid_of_overrides() -> None:
    choices = parse_choices(["loss.beta=0.001, 0.1", "train.seed=0,1"])
    assert choices == [("loss.beta", ["0.001", "0.1"]), ("train.seed", ["0", "1"])]
    assert candidate_overrides(choices) == [["loss.beta=0.001", "train.seed=0"], ["loss.beta=0.001", "train.seed=1"],
                                            ["loss.beta=0.1", "train.seed=0"], ["loss.beta=0.1", "train.seed=1"]]


@pytest.mark.parametrize(("spec", "message"), [
    ("loss.beta", "expected SECTION.KEY=VALUE1,VALUE2"),
    ("beta=0.1,1", "expected SECTION.KEY=VALUE1,VALUE2"),
    ("loss.beta=0.1,", "expected SECTION.KEY=VALUE1,VALUE2"),
    ("loss.beta=0.1", "at least two values"),
])
def test_a_malformed_choice_is_refused_with_the_expected_form(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_choices([spec])


def test_choose_trains_each_candidate_keeps_the_best_on_validation_and_skips_finished_ones(
    tiny_synth: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "choice"
    argv = ["train", *sum((["--set", o] for o in tiny_overrides(tiny_synth, out, **{"train.epochs": 1})), []),
            "--choose", "loss.beta=0.001,1.0", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    choice = json.loads((out / "choice.json").read_text())
    runs = {tuple(c["overrides"]): c for c in choice["candidates"]}
    assert set(runs) == {("loss.beta=0.001",), ("loss.beta=1.0",)}
    for c in runs.values():
        assert (Path(c["run"]) / "best" / "model.safetensors").is_file()
        log = [json.loads(line) for line in (Path(c["run"]) / "log.jsonl").read_text().splitlines()]
        assert c["best_val_rsum"] == max(r["val"][c["selection_space"]]["rsum"] for r in log)
    assert choice["chosen"]["best_val_rsum"] == max(c["best_val_rsum"] for c in runs.values())
    assert f"chosen on validation: {choice['chosen']['overrides'][0]}" in printed
    # Each candidate trained with its own value.
    assert "beta: 1.0" in (Path(runs[("loss.beta=1.0",)]["run"]) / "config.yaml").read_text()
    # Re-running finds both candidates finished and trains nothing again.
    stamps = {c["run"]: (Path(c["run"]) / "log.jsonl").stat().st_mtime_ns for c in runs.values()}
    assert main(argv) == 0
    assert {r: (Path(r) / "log.jsonl").stat().st_mtime_ns for r in stamps} == stamps
    assert main([*argv, "--resume"]) == 2
    assert "--choose resumes unfinished candidates by itself" in capsys.readouterr().err
