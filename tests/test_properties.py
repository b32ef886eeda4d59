"""Property-based tests (hypothesis) of the caption loaders, the tokenizer path and the noise-index code."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from disncl.data.formats import CaptionFileError, load_captions_file, read_captions_file, read_karpathy
from disncl.data.noise import NoiseIndex, NoiseIndexError, inject, make_noisy_pairs
from disncl.data.pairs import CaptionedImages
from disncl.data.validate import DataError, validate_split
from disncl.models.tokenizer import tokenize, train_word_tokenizer

# Modest budgets: the suite runs on a shared 2-core CPU. No deadline, for the same reason.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Captions with the characters that break naive CSV handling, plus any other (non-surrogate) text.
_TRICKY = st.sampled_from([",", '"', "'", "\n", "\r\n", "\r", "\t", ";", " ", "é", "日本", "🙂", "\x00", "\u2028"])
CAPTIONS = st.lists(st.one_of(_TRICKY, st.text(max_size=8)), min_size=1, max_size=6).map("".join)
IMAGE_NAMES = st.from_regex(r"[a-z0-9 ,'\"é_-]{1,6}\.png", fullmatch=True)


@contextmanager
def _tmpdir() -> Iterator[Path]:
    # Not tmp_path: a function-scoped fixture would be shared by every example hypothesis runs.
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _from_pairs(root: Path, pairs: list[tuple[str, str]]) -> CaptionedImages:
    index: dict[str, int] = {}
    cap2img = np.array([index.setdefault(image, len(index)) for image, _ in pairs], dtype=np.int64)
    return CaptionedImages(root, list(index), [caption for _, caption in pairs], cap2img)


# --- loaders -----------------------------------------------------------------------------------


@FAST
@given(st.lists(st.tuples(IMAGE_NAMES, CAPTIONS.filter(lambda c: c.strip())), min_size=1, max_size=8))
def test_caption_csv_round_trip(pairs: list[tuple[str, str]]) -> None:
    from disncl.data.formats import write_captions_csv

    with _tmpdir() as tmp:
        ds = _from_pairs(tmp, pairs)
        back = load_captions_file(write_captions_csv(tmp / "caps.csv", ds))
    # The loader strips fields and spells image paths canonically; nothing else changes.
    assert back.captions == [c.strip() for c in ds.captions]
    assert back.image_paths == [p.strip() for p in ds.image_paths]
    assert back.cap2img.tolist() == ds.cap2img.tolist()


_HEADERS = st.sampled_from([b"", b"image,caption\n", b"image\tcaption\n", b"\xef\xbb\xbfimage,caption,split\n"])


# Rows of text pieces joined by commas or tabs, each row UTF-8 or Latin-1: near-valid files, not only noise.
_ROW = st.tuples(st.lists(st.one_of(IMAGE_NAMES, CAPTIONS), min_size=1, max_size=3),
                 st.sampled_from([",", "\t"]), st.sampled_from(["utf-8", "latin-1"]))
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.lists(_ROW, max_size=6).map(lambda rows: b"".join(
        (sep.join(fields) + "\n").encode(enc, errors="replace") for fields, sep, enc in rows)),
)


@FAST
@given(suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]), head=_HEADERS, body=_BODIES)
@example(suffix=".jsonl", head=b"", body=b'{"image": "a", "caption": ' + b"1" * 5000 + b"}\n")
@example(suffix=".jsonl", head=b"", body=b"[" * 50_000 + b"\n")
@example(suffix=".csv", head=b"image,caption\n", body=b'a.png,"unclosed\n' + b"x" * 140_000)
def test_loaders_raise_only_documented_errors(suffix: str, head: bytes, body: bytes) -> None:
    with _tmpdir() as tmp:
        path = tmp / f"train{suffix}"
        path.write_bytes(head + body)
        try:
            ds, problems = read_captions_file(path)
        except CaptionFileError:
            return
        # Every row of the file is either kept or reported as skipped (a repeated row is kept and noted).
        assert ds.n_captions + sum(p.reason != "duplicate_row" for p in problems) == ds.source_counts[1]
        for p in problems:
            assert str(path) in str(p)
        # No image file exists, so everything is dropped: the documented outcome is a DataError.
        with pytest.raises(DataError):
            validate_split(ds, problems)
        if any(p.reason != "duplicate_row" for p in problems):
            with pytest.raises(CaptionFileError):
                load_captions_file(path)


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2))
# "caf\udce9" is what a Latin-1 "é" inside a JSON string reads as: a lone surrogate.
_RAW = st.one_of(CAPTIONS, CAPTIONS, st.just("  "), st.just("caf\udce9"), _JUNK)
_ENTRY = st.one_of(
    st.fixed_dictionaries(
        {
            "filename": st.one_of(st.sampled_from(["a.jpg", "b.jpg"]), IMAGE_NAMES, st.just("  "), _JUNK),
            "split": st.sampled_from(["train", "train", "restval", "test", 7]),
            "sentences": st.one_of(st.lists(st.fixed_dictionaries({"raw": _RAW}), min_size=1, max_size=4), _JUNK),
        },
        optional={"filepath": st.one_of(st.sampled_from(["", "val2014", "a/../b"]), _JUNK)},
    ),
    _JUNK,
)
_IMAGES = st.lists(_ENTRY, min_size=1, max_size=6).map(lambda images: json.dumps({"images": images}).encode())
_KARPATHY = st.one_of(_IMAGES, _IMAGES, st.binary(max_size=200), _JUNK.map(lambda obj: json.dumps(obj).encode()))


@FAST
@given(_KARPATHY)
def test_karpathy_reader_raises_only_documented_errors(data: bytes) -> None:
    with _tmpdir() as tmp:
        (tmp / "k.json").write_bytes(data)
        try:
            ds, problems = read_karpathy(tmp / "k.json", tmp, "train")
        except CaptionFileError:
            return
        assert all(str(tmp / "k.json") in str(p) for p in problems)
        with pytest.raises(DataError):
            validate_split(ds, problems)


# --- tokenizer ---------------------------------------------------------------------------------

_TOKENIZER = train_word_tokenizer(["a red square left of a blue circle", "the cat sat on the mat", "café naïve 日本"])


@FAST
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4), st.integers(min_value=2, max_value=12))
def test_tokenizer_any_text_gives_bounded_ids_with_bos_and_eos(texts: list[str], max_len: int) -> None:
    enc = tokenize(_TOKENIZER, texts, max_len)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape[0] == len(texts) and ids.shape[1] <= max_len
    assert ids.min() >= 0 and ids.max() < len(_TOKENIZER)
    for row, row_mask in zip(ids.tolist(), mask.tolist(), strict=True):
        used = [t for t, m in zip(row, row_mask, strict=True) if m]
        assert used[0] == _TOKENIZER.bos_token_id
        assert used[-1] == _TOKENIZER.eos_token_id


# --- noise indices -----------------------------------------------------------------------------


@st.composite
def _datasets(draw: st.DrawFn) -> CaptionedImages:
    n_images = draw(st.integers(min_value=1, max_value=30))
    per_image = draw(st.lists(st.integers(min_value=1, max_value=4), min_size=n_images, max_size=n_images))
    cap2img = np.repeat(np.arange(n_images), per_image)
    return CaptionedImages(Path("."), [f"{i}.png" for i in range(n_images)], [f"c{c}" for c in range(len(cap2img))],
                           cap2img)


@FAST
@given(_datasets(), st.sampled_from(["image", "caption"]), st.floats(min_value=0, max_value=1), st.integers(0, 2**32))
def test_noise_inject_round_trip_rate_and_clean_pairs(ds: CaptionedImages, kind: str, rate: float, seed: int) -> None:
    n = ds.n_images if kind == "image" else ds.n_captions
    k = int(round(rate * n))
    if kind == "image" and k == 1:
        with pytest.raises(ValueError, match="selects a single image"):
            inject(ds, kind, rate, seed)
        return
    noise = inject(ds, kind, rate, seed)
    pairs = make_noisy_pairs(ds, noise)
    if kind == "image":
        moved = noise.index != np.arange(ds.n_images)
        assert moved.sum() == k  # the rate is honoured exactly
        # Every caption of an image that stayed put keeps its image; every caption of a moved one is noisy.
        assert (pairs.is_clean == ~moved[ds.cap2img]).all()
    else:
        assert (~pairs.is_clean).sum() <= k
        # Shuffling within the chosen captions keeps how often each image is used.
        assert np.bincount(pairs.image, minlength=ds.n_images).tolist() == np.bincount(ds.cap2img).tolist()
    assert (pairs.is_clean == (pairs.image == ds.cap2img)).all()
    with _tmpdir() as tmp:
        back = NoiseIndex.load(noise.save(tmp / "noise.npy"), ds.n_images, ds.n_captions)
    assert (back.kind, back.rate, back.seed) == (kind, rate, seed)
    assert back.index.tolist() == noise.index.tolist()


_ARRAYS = hnp.arrays(
    dtype=st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(), hnp.boolean_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=12),
)


@FAST
@given(_ARRAYS, st.integers(min_value=1, max_value=12), st.integers(min_value=1, max_value=12),
       st.sampled_from([None, "image", "caption"]))
@example(np.arange(5), 5, 5, None)
@example(np.array([4, 3, 2, 1, 0], dtype=np.uint8), 5, 9, None)
def test_any_array_is_a_valid_noise_index_or_a_noise_index_error(
    array: np.ndarray, n_images: int, n_captions: int, kind: str | None
) -> None:
    with _tmpdir() as tmp:
        np.save(tmp / "noise.npy", array)
        try:
            noise = NoiseIndex.load(tmp / "noise.npy", n_images, n_captions, kind)
        except NoiseIndexError:
            return
    # Valid: integers in range, one per caption or a permutation of the images.
    assert noise.index.dtype == np.int64 and noise.index.ndim == 1
    assert ((noise.index >= 0) & (noise.index < n_images)).all()
    if noise.kind == "image":
        assert sorted(noise.index.tolist()) == list(range(n_images))
    else:
        assert len(noise.index) == n_captions


@settings(deadline=None)  # the first example imports the app's presenter
@given(
    values=st.lists(st.integers(0, 5), min_size=1, max_size=60),
    limit=st.integers(1, 70),
)
def test_first_in_order_is_the_head_of_the_full_sort(values: list[int], limit: int) -> None:
    """The explorer's partial sort gives exactly what sorting everything and cutting would (ties included)."""
    from disncl.app.explorer import first_in_order

    v = np.asarray(values, dtype=np.float64)
    pair = np.random.default_rng(len(values)).permutation(len(v))
    np.testing.assert_array_equal(first_in_order(v, pair, limit), np.lexsort((pair, v))[:limit])
