"""Reading a run's pair_scores.csv back for the noisy-pair explorer: flags, metrics, explain, exports."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from disncl.data.noise import NoiseIndex
from disncl.data.pairs import CaptionedImages
from disncl.serve.pair_scores import PairScores, PairScoresError
from disncl.train.scoring import write_pair_scores

# Four images with two captions each; captions 1, 2, 5 and 7 are paired with the wrong image.
CAP2IMG = np.array([0, 0, 1, 1, 2, 2, 3, 3])
PAIRED = np.array([0, 1, 0, 1, 2, 3, 3, 2])
CLEAN_PROB = np.array([0.9, 0.2, 0.6, 0.8, 0.4, 0.1, 0.95, 0.3], dtype=np.float32)
# At threshold 0.5 pairs 1, 4, 5, 7 are flagged: 3 of them truly noisy (1, 5, 7), pair 4 is clean and
# noisy pair 2 is missed, so precision = recall = 3/4. Scores 1 - p: noisy {.8, .4, .9, .7} against
# clean {.1, .2, .6, .05} win 4 + 3 + 4 + 4 = 15 of 16 comparisons, so AUROC = 15/16.


def _write(path: Path, with_truth: bool = True) -> Path:
    ds = CaptionedImages(
        root=Path("."),
        image_paths=[f"img{i}.png" for i in range(4)],
        captions=[f"caption {c}, with a comma" for c in range(8)],
        cap2img=CAP2IMG,
    )
    table = {
        "pair": np.arange(8),
        "caption_index": np.arange(8),
        "image_index": PAIRED,
        "clean_prob": CLEAN_PROB,
        "loss": np.linspace(0.5, 4.0, 8).astype(np.float32),
        "mii_sim": np.linspace(-0.2, 0.9, 8).astype(np.float32),
        "full_sim": np.linspace(0.1, 0.8, 8).astype(np.float32),
        "image_rank": np.array([1, 3, 2, 1, 1, 4, 1, 2]),
        "best_image": np.array([0, 0, 1, 1, 2, 2, 3, 3]),
        "best_caption_for_image": np.array([0, 3, 0, 3, 4, 7, 7, 4]),
    }
    return write_pair_scores(path, table, ds, PAIRED == CAP2IMG if with_truth else None)


@pytest.fixture
def scores(tmp_path: Path) -> PairScores:
    return PairScores.read(_write(tmp_path / "pair_scores.csv"))


def test_reads_the_training_format(scores: PairScores) -> None:
    assert len(scores) == 8
    assert np.array_equal(scores.image_index, PAIRED)
    assert np.allclose(scores.clean_prob, CLEAN_PROB, atol=1e-5)
    assert scores.caption[3] == "caption 3, with a comma"
    assert scores.image[5] == "img3.png"
    assert scores.truth_known.all()
    assert np.array_equal(scores.is_clean, PAIRED == CAP2IMG)


def test_flags_and_summary_match_a_hand_count(scores: PairScores) -> None:
    assert np.flatnonzero(scores.flagged(0.5)).tolist() == [1, 4, 5, 7]
    s = scores.summary(0.5)
    assert s["n_pairs"] == 8 and s["n_flagged"] == 4 and s["flagged_fraction"] == 0.5
    assert s["n_truth_known"] == 8 and s["n_noisy"] == 4
    assert s["noisy_precision"] == pytest.approx(3 / 4)
    assert s["noisy_recall"] == pytest.approx(3 / 4)
    assert s["auroc"] == pytest.approx(15 / 16)
    # A threshold flagging everything catches every noisy pair at precision 1/2.
    everything = scores.summary(1.0)
    assert everything["noisy_recall"] == 1.0 and everything["noisy_precision"] == 0.5


def test_a_count_rule_flags_exactly_n_in_the_flag_order(scores: PairScores) -> None:
    # Pairs 1, 4, 5 and 7 tie at clean probability 0; pairs 4 and 7 also tie in MII similarity.
    prob = scores.clean_prob.copy()
    prob[[1, 4, 5, 7]] = 0.0
    mii = scores.mii_sim.copy()
    mii[[4, 7]] = 0.1
    tied = dataclasses.replace(scores, clean_prob=prob, mii_sim=mii)
    # Eq. 12c by hand: the zeros by MII similarity (pair 1 at -0.04, then 4 and 7 at 0.1 by pair number,
    # then 5 at 0.49), then pair 2 (0.6), 3 (0.8), 0 (0.9), 6 (0.95).
    order = [1, 4, 7, 5, 2, 3, 0, 6]
    for n in range(9):
        assert np.flatnonzero(tied.flagged(0.5, n)).tolist() == sorted(order[:n]), n
        assert tied.summary(0.5, n)["n_flagged"] == n
    # Pair 1 noisy, 4 clean: the 2 least likely catch one noisy pair of four.
    two = tied.summary(0.0, 2)
    assert two["count"] == 2 and two["noisy_precision"] == 0.5 and two["noisy_recall"] == 0.25
    assert tied.summary(0.0)["n_flagged"] == 4 and tied.summary(0.0)["count"] == -1
    assert tied.explain(7, 0.0, 3)["flagged"] and not tied.explain(5, 0.0, 3)["flagged"]
    assert tied.nth_least_likely(5) == pytest.approx(0.6)
    hist = tied.histogram(bins=2, threshold=0.0, count=3)
    assert hist["flagged"].tolist() == [3, 0] and hist["kept"].tolist() == [1, 4]
    for bad in (-1, 9, 2.0, True):
        with pytest.raises(ValueError, match="count must be a whole number of pairs between 0 and 8"):
            tied.flagged(0.5, bad)


def test_summary_without_ground_truth_has_no_quality_metrics(tmp_path: Path) -> None:
    scores = PairScores.read(_write(tmp_path / "p.csv", with_truth=False))
    s = scores.summary(0.5)
    assert not scores.truth_known.any()
    assert s["n_flagged"] == 4 and s["n_truth_known"] == 0
    assert "auroc" not in s and "noisy_precision" not in s
    assert scores.explain(0)["is_clean"] is None


def test_histogram_splits_counts_by_flag(scores: PairScores) -> None:
    h = scores.histogram(bins=4, threshold=0.5)
    assert np.allclose(h["edges"], [0.0, 0.25, 0.5, 0.75, 1.0])
    assert h["flagged"].tolist() == [2, 2, 0, 0]
    assert h["kept"].tolist() == [0, 0, 1, 3]


def test_explain_names_the_best_matches(scores: PairScores) -> None:
    e = scores.explain(5)
    assert e["caption"] == "caption 5, with a comma" and e["image"] == "img3.png"
    assert e["image_index"] == 3 and e["image_rank"] == 4
    assert e["flagged"] is True and e["is_clean"] is False
    assert e["clean_prob"] == pytest.approx(0.1, abs=1e-5)
    assert e["best_image"] == {"index": 2, "path": "img2.png"}
    assert e["best_caption_for_image"] == {"index": 7, "text": "caption 7, with a comma"}
    with pytest.raises(KeyError, match="pair 99"):
        scores.explain(99)


def test_csv_export_reads_back(scores: PairScores, tmp_path: Path) -> None:
    flagged = scores.flagged(0.5)
    back = PairScores.read(scores.to_csv(tmp_path / "flagged.csv", flagged))
    assert back.pair.tolist() == [1, 4, 5, 7]
    for name in ("image_index", "clean_prob", "loss", "mii_sim", "image_rank", "best_caption_for_image", "is_clean"):
        assert np.array_equal(getattr(back, name), getattr(scores, name)[flagged]), name
    assert list(back.caption) == [scores.caption[r] for r in (1, 4, 5, 7)]


def test_noise_index_export_keeps_the_per_caption_convention(scores: PairScores, tmp_path: Path) -> None:
    index_path, flags_path = scores.to_noise_index(tmp_path / "noise.npy", scores.flagged(0.5))
    assert flags_path == tmp_path / "noise.flagged.npy"
    a = np.load(index_path)
    assert a.dtype == np.int64 and a.tolist() == PAIRED.tolist()
    flags = np.load(flags_path)
    assert flags.dtype == bool and np.flatnonzero(flags).tolist() == [1, 4, 5, 7]
    # The training loader reads it back as a per-caption index reproducing the same pairs.
    reloaded = NoiseIndex.load(index_path, n_images=4, n_captions=8)
    assert reloaded.kind == "caption" and np.array_equal(reloaded.index, PAIRED)


def test_noise_index_export_needs_the_full_table(scores: PairScores, tmp_path: Path) -> None:
    partial = PairScores.read(scores.to_csv(tmp_path / "flagged.csv", scores.flagged(0.5)))
    with pytest.raises(PairScoresError, match="every caption"):
        partial.to_noise_index(tmp_path / "noise.npy", partial.flagged(0.5))
    with pytest.raises(ValueError, match="one entry per row"):
        scores.to_csv(tmp_path / "x.csv", np.ones(3, dtype=bool))


def test_malformed_files_say_where(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1].replace("0.90000", "high", 1), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(PairScoresError, match=r"line 2: column 'clean_prob' is 'high'"):
        PairScores.read(bad)
    bad.write_text("pair,caption_index\n0,0\n", encoding="utf-8")
    with pytest.raises(PairScoresError, match="missing column"):
        PairScores.read(bad)
    with pytest.raises(FileNotFoundError, match="pair_scores.csv"):
        PairScores.read(tmp_path / "nope.csv")


def test_parquet_holds_the_same_table_and_searches_captions(tmp_path: Path) -> None:
    from disncl.serve.pair_scores import TextColumn

    scores = PairScores.read(_write(tmp_path / "pair_scores.csv"))
    back = PairScores.read(scores.to_parquet(tmp_path / "pair_scores.parquet"))
    for name in ("pair", "caption_index", "image_index", "clean_prob", "loss", "mii_sim", "full_sim", "image_rank",
                 "best_image", "best_caption_for_image", "is_clean", "truth_known"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scores, name), err_msg=name)
    assert list(back.caption) == list(scores.caption) and list(back.image) == list(scores.image)
    assert isinstance(back.caption, TextColumn) and back.caption[1] == scores.caption[1]
    np.testing.assert_array_equal(back.caption_contains("CAPTION 3,"), np.arange(8) == 3)
    assert back.caption_contains("with a comma").all() and not back.caption_contains("zebra").any()
    # A re-exported CSV of the Parquet table reads back equal too.
    again = PairScores.read(back.to_csv(tmp_path / "again.csv", np.ones(len(back), bool)))
    np.testing.assert_array_equal(again.clean_prob, scores.clean_prob)
    # Unknown truth survives as nulls.
    unknown = PairScores.read(PairScores.read(_write(tmp_path / "u.csv", with_truth=False)).to_parquet(
        tmp_path / "u.parquet"))
    assert not unknown.truth_known.any()


def test_the_fast_csv_reader_gives_what_the_line_parser_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "pair_scores.csv")
    fast = PairScores.read(path)
    monkeypatch.setattr(PairScores, "_read_csv_fast", classmethod(lambda cls, p: None))
    slow = PairScores.read(path)
    for name in ("pair", "image_index", "clean_prob", "loss", "full_sim", "best_image", "is_clean", "truth_known"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert list(fast.caption) == list(slow.caption) and list(fast.image) == list(slow.image)


def test_columns_are_held_compactly_and_shown_as_written(tmp_path: Path) -> None:
    """int32 indices and float32 scores (half of int64/float64 at 10 M pairs); explain() gives the values
    as the file prints them, and a score beyond float32's range is refused (the fast reader hands it to the
    line parser, which names the column)."""
    path = _write(tmp_path / "pair_scores.csv")
    scores = PairScores.read(path)
    assert scores.pair.dtype == np.int32 and scores.best_caption_for_image.dtype == np.int32
    assert scores.clean_prob.dtype == np.float32 and scores.loss.dtype == np.float32
    assert scores.explain(1)["clean_prob"] == 0.2 and scores.explain(7)["clean_prob"] == 0.3
    lines = path.read_text(encoding="utf-8").splitlines()
    loss = lines[0].split(",").index("loss")
    row = lines[1].split(",")
    row[loss] = "1e39"
    bad = tmp_path / "huge.csv"
    bad.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n", encoding="utf-8")
    with pytest.raises(PairScoresError, match="loss"):
        PairScores.read(bad)


def test_a_text_search_split_across_threads_finds_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slices a large column is searched in meet exactly: no row is lost or found twice at a boundary."""
    import pyarrow as pa

    import disncl.serve.pair_scores as module

    texts = [f"{'Dog' if i % 7 == 0 else 'cat'} number {i}" for i in range(1001)]
    column = module.TextColumn(pa.chunked_array([pa.array(texts[:500]), pa.array(texts[500:])]))
    whole = column.contains("dog")
    monkeypatch.setattr(module, "_PARALLEL_ROWS", 3)
    monkeypatch.setattr(module.os, "cpu_count", lambda: 4)
    np.testing.assert_array_equal(column.contains("dog"), whole)
    np.testing.assert_array_equal(whole, np.arange(1001) % 7 == 0)
