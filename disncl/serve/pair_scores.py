"""The per-training-pair scores a run writes (``RUN/pair_scores.csv``), read back for the noisy-pair explorer.

The file is written by :func:`disncl.train.scoring.write_pair_scores`: one row per training pair with
its clean probability, loss, similarities, the rank of its paired image and the best matches, plus the
image path, the caption text and the ground truth ``is_clean`` (empty when unknown). This module keeps
it as plain numpy columns (no pandas) and answers what the explorer asks: which pairs are flagged as
noisy at a threshold, how good that flag is where the truth is known, why one pair looks noisy, and
exports of the flagged pairs.

Two formats hold the same table. The CSV is what training writes and what exports give back; a
gallery stores it as Parquet (:meth:`PairScores.to_parquet`), read memory-mapped through pyarrow: the
numeric columns become numpy arrays and the text columns stay Arrow string arrays
(:class:`TextColumn`), so 10 million captions cost their bytes, not 10 million Python strings, and a
caption search runs in Arrow's compute kernels.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from disncl.data.noise import NoiseIndex
from disncl.eval.detection import detection_metrics
from disncl.io import atomic_write

INT_COLUMNS = ("pair", "caption_index", "image_index", "image_rank", "best_image", "best_caption_for_image")
FLOAT_COLUMNS = ("clean_prob", "loss", "mii_sim", "full_sim")
TEXT_COLUMNS = ("image", "caption")
NUMERIC_COLUMNS = (*INT_COLUMNS, *FLOAT_COLUMNS)
# The file's columns in order: training writes them (disncl.train.scoring imports this schema), exports
# keep the order so they read back like the original.
COLUMNS = (*INT_COLUMNS[:3], *FLOAT_COLUMNS, *INT_COLUMNS[3:], *TEXT_COLUMNS, "is_clean")

PARQUET_SUFFIX = ".parquet"
_TRUE = {"1", "true", "True"}
_FALSE = {"0", "false", "False"}


class PairScoresError(ValueError):
    """A pair-scores file is malformed; the message names the file and, where it can, the line."""


def release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the system: its allocator keeps them otherwise, so a server's
    resident memory would keep the high-water mark of every export and text search it ran."""
    pa.default_memory_pool().release_unused()


# Below this many rows per core a text search is not split across threads (the threads would cost more).
_PARALLEL_ROWS = 250_000


class TextColumn:
    """A column of strings held as one Arrow array: indexing gives a ``str``, :meth:`contains` searches it."""

    def __init__(self, values: pa.Array | pa.ChunkedArray | list[str]) -> None:
        # A chunked array stays as it is (indexing finds the chunk): combining would copy every string.
        self._array = pa.array(values, type=pa.large_string()) if isinstance(values, list) else values

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, i: int) -> str:
        return self._array[int(i)].as_py()

    def __iter__(self):
        for chunk in range(0, len(self._array), 65_536):
            yield from self._array.slice(chunk, 65_536).to_pylist()

    def contains(self, needle: str) -> np.ndarray:
        """Rows whose text contains ``needle``, ignoring case, as a bool array.

        Arrow's kernel runs on one core; large columns are searched in zero-copy slices, one per core, on
        threads (the kernel releases the GIL), each slice writing its part of the result.
        """
        n = len(self._array)
        out = np.zeros(n, dtype=bool)
        parts = min(os.cpu_count() or 1, max(1, n // _PARALLEL_ROWS))
        bounds = np.linspace(0, n, parts + 1).astype(int)

        def search(k: int) -> None:
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            found = pc.match_substring(self._array.slice(lo, hi - lo), needle, ignore_case=True)
            out[lo:hi] = found.fill_null(False).to_numpy(zero_copy_only=False)

        if parts == 1:
            search(0)
        else:
            with ThreadPoolExecutor(parts) as pool:
                list(pool.map(search, range(parts)))
        release_arrow_memory()
        return out

    @property
    def arrow(self) -> pa.Array | pa.ChunkedArray:
        return self._array


@dataclass(frozen=True, eq=False)
class PairScores:
    """The columns of a pair-scores table; row ``r`` describes training pair ``pair[r]``.

    ``is_clean[r]`` is the ground truth where ``truth_known[r]`` (synthetic noise), else False.
    """

    pair: np.ndarray
    caption_index: np.ndarray
    image_index: np.ndarray
    clean_prob: np.ndarray
    loss: np.ndarray
    mii_sim: np.ndarray
    full_sim: np.ndarray
    image_rank: np.ndarray
    best_image: np.ndarray
    best_caption_for_image: np.ndarray
    image: TextColumn
    caption: TextColumn
    is_clean: np.ndarray
    truth_known: np.ndarray

    def __len__(self) -> int:
        return len(self.pair)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> PairScores:
        """Parse a ``pair_scores.csv`` (or a ``.parquet`` from :meth:`to_parquet`); extra columns are
        ignored, missing ones are an error."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pair-scores file not found: {path} (training writes RUN/pair_scores.csv)")
        if path.suffix == PARQUET_SUFFIX:
            return cls._read_parquet(path)
        fast = cls._read_csv_fast(path)
        if fast is not None:
            return fast
        # The line-by-line parser below is slower, but names the line and column of any problem.
        try:
            # utf-8-sig: a file re-saved from a spreadsheet starts with a byte-order mark.
            with open(path, encoding="utf-8-sig", newline="") as fh:
                raw, lines = _read_columns(path, csv.reader(fh))
        except UnicodeDecodeError as err:
            raise PairScoresError(f"{path}: not UTF-8 text ({err.reason})") from err
        except csv.Error as err:
            raise PairScoresError(f"{path}: malformed CSV: {err}") from err
        columns: dict[str, Any] = {name: _parse_numbers(path, lines, name, raw[name], int) for name in INT_COLUMNS}
        columns.update({name: _parse_numbers(path, lines, name, raw[name], float) for name in FLOAT_COLUMNS})
        columns.update({name: TextColumn(raw[name]) for name in TEXT_COLUMNS})
        columns["is_clean"], columns["truth_known"] = _parse_truth(path, lines, raw["is_clean"])
        return cls._checked(path, columns, lambda r: f"line {lines[r]}")

    @classmethod
    def _read_csv_fast(cls, path: Path) -> PairScores | None:
        """pyarrow's (multi-threaded) CSV reader for a well-formed table, as training writes it; None for
        anything it cannot take as it is, which the line-by-line parser then diagnoses."""
        types = {name: pa.int64() for name in INT_COLUMNS} | {name: pa.float32() for name in FLOAT_COLUMNS}
        types |= {name: pa.large_string() for name in (*TEXT_COLUMNS, "is_clean")}
        options = pacsv.ConvertOptions(column_types=types, include_columns=list(COLUMNS), strings_can_be_null=False,
                                       quoted_strings_can_be_null=False)
        try:
            table = pacsv.read_csv(path, convert_options=options)
        except (pa.ArrowException, OSError):
            return None
        truth = pc.utf8_trim_whitespace(table["is_clean"])
        known = pc.is_in(truth, value_set=pa.array(sorted(_TRUE | _FALSE), pa.large_string()))
        if not pc.all(pc.or_(known, pc.equal(truth, ""))).as_py():
            return None
        clean = pc.is_in(truth, value_set=pa.array(sorted(_TRUE), pa.large_string()))
        try:
            columns = _arrow_columns(path, table)
        except PairScoresError:
            return None
        columns["truth_known"] = np.asarray(known.to_numpy(zero_copy_only=False), dtype=bool)
        columns["is_clean"] = np.asarray(clean.to_numpy(zero_copy_only=False), dtype=bool)
        return cls._checked(path, columns, lambda r: f"line {r + 2}")

    @classmethod
    def _read_parquet(cls, path: Path) -> PairScores:
        try:
            table = pq.read_table(path, columns=list(COLUMNS), memory_map=True)
        except (pa.ArrowInvalid, OSError, KeyError) as err:
            raise PairScoresError(f"{path}: not a pair-scores Parquet file ({err}); rebuild the gallery") from err
        columns = _arrow_columns(path, table)
        truth = table["is_clean"]
        columns["truth_known"] = ~np.asarray(truth.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        columns["is_clean"] = np.asarray(truth.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        del table, truth
        # Arrow's allocator keeps freed buffers (the decoded numeric columns, now numpy) for reuse.
        pa.default_memory_pool().release_unused()
        return cls._checked(path, columns, lambda r: f"row {r}")

    @classmethod
    def _checked(cls, path: Path, columns: dict[str, Any], where: Callable[[int], str]) -> PairScores:
        """The table, once every clean probability is in [0, 1]; ``where(r)`` names row ``r`` in messages."""
        prob = columns["clean_prob"]
        outside = np.flatnonzero((prob < 0.0) | (prob > 1.0))
        if len(outside):
            r = int(outside[0])
            raise PairScoresError(
                f"{path}, {where(r)}: clean_prob {prob[r]} is outside [0, 1]; is this a pair-scores file?"
            )
        return cls(**columns)

    @cached_property
    def exclusive(self) -> np.ndarray:
        """full_sim − mii_sim per row: what the exclusive information adds (the explorer sorts by it)."""
        return self.full_sim - self.mii_sim

    def flagged(self, threshold: float = 0.5, count: int | None = None) -> np.ndarray:
        """Rows flagged as noisy: ``clean_prob <= threshold`` (the complement of NCR's clean rule), or, with
        ``count``, exactly the ``count`` first rows of the flag order (:meth:`first_in_flag_order`); ``count``
        then replaces the threshold."""
        self._check_rule(threshold, count)
        if count is None:
            return self.clean_prob <= threshold
        if self._count_mask[0] != count:
            self._count_mask[:] = [count, self.first_in_flag_order(count)]
        return self._count_mask[1]

    @cached_property
    def _count_mask(self) -> list[Any]:
        """The last count rule's mask, ``[count, mask]``: the explorer, its summary, histogram and table all
        ask for the same one in a row, and one mask of 10 million rows is 10 MB."""
        return [None, None]

    def first_in_flag_order(self, count: int) -> np.ndarray:
        """A bool mask of the ``count`` least likely clean rows in the flag order (Eq. 12c): clean
        probability ascending, ties broken by MII similarity ascending, then by pair number.

        A total order, so a count rule flags exactly ``count`` rows even where the mixture's posterior has
        underflowed to exactly 0 for many pairs; within such a tie the MII cosine is the score the default
        split is fitted on (Eq. 6e), so the order continues the posterior's. Found by partition in linear
        time (a full sort of 10 million rows costs seconds), ties by partition again.
        """
        _check_count(count, len(self))
        mask = np.zeros(len(self), dtype=bool)
        if count == 0:
            return mask
        prob = self.clean_prob
        last = np.partition(prob, count - 1)[count - 1]
        mask[prob < last] = True
        tied = np.flatnonzero(prob == last)
        need = count - int(mask.sum())
        if need < len(tied):
            sim = self.mii_sim[tied]
            cut = np.partition(sim, need - 1)[need - 1]
            mask[tied[sim < cut]] = True
            rest = tied[sim == cut]
            rest = rest[np.argsort(self.pair[rest], kind="stable")]
            mask[rest[: need - int((sim < cut).sum())]] = True
        else:
            mask[tied] = True
        return mask

    def in_flag_order(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` sorted by the flag order of Eq. 12c (what :meth:`first_in_flag_order` selects from),
        sorting only those rows."""
        return rows[np.lexsort((self.pair[rows], self.mii_sim[rows], self.clean_prob[rows]))]

    def _check_rule(self, threshold: float, count: int | None) -> None:
        _check_threshold(threshold)
        if count is not None:
            _check_count(count, len(self))

    def nth_least_likely(self, count: int) -> float:
        """The clean probability of the ``count``-th row of the flag order (the threshold a slider shows for a
        count rule; Eq. 12c sorts by clean probability first, so it is the ``count``-th smallest)."""
        _check_count(count, len(self))
        if count == 0:
            raise ValueError("count must be at least 1 to name the count-th row")
        return plain_float(np.partition(self.clean_prob, count - 1)[count - 1])

    @cached_property
    def _per_threshold(self) -> dict[tuple[str, float, int | None, int], Any]:
        """Summaries and histograms already computed, by flag rule: the explorer asks again for the same
        rule whenever the user changes only the sort, filter or page (each costs a pass over every row)."""
        return {}

    def _cached(self, kind: str, threshold: float, count: int | None, bins: int, compute: Callable[[], Any]) -> Any:
        key = (kind, float(threshold), count, bins)
        if key not in self._per_threshold:
            if len(self._per_threshold) > 64:
                self._per_threshold.clear()
            self._per_threshold[key] = compute()
        return self._per_threshold[key]

    def summary(self, threshold: float = 0.5, count: int | None = None) -> dict[str, float | int]:
        """Counts and flagged fraction; where the truth is known, the quality of the noisy flag (a copy of
        the one computed for this rule; see :meth:`_summary`)."""
        self._check_rule(threshold, count)
        return dict(self._cached("summary", threshold, count, 0, lambda: self._summary(threshold, count)))

    def _summary(self, threshold: float, count: int | None) -> dict[str, float | int]:
        """Counts and flagged fraction; where the truth is known, the quality of the noisy flag.

        The quality keys (``auroc``, ``noisy_precision``, ``noisy_recall``, … as in
        :func:`disncl.eval.detection.detection_metrics`, noisy = positive class, score = 1 − clean_prob)
        are computed on the rows with known truth and are present only when there are such rows;
        undefined ratios are NaN.
        """
        flag = self.flagged(threshold, count)
        out: dict[str, float | int] = {
            "threshold": float(threshold),
            "count": -1 if count is None else int(count),
            "n_pairs": len(self),
            "n_flagged": int(flag.sum()),
            "flagged_fraction": float(flag.mean()) if len(self) else float("nan"),
            "n_truth_known": int(self.truth_known.sum()),
        }
        known = self.truth_known
        if known.any():
            out["n_noisy"] = int((~self.is_clean[known]).sum())
            metrics = detection_metrics(self.clean_prob[known], self.is_clean[known], threshold, self._auroc,
                                        flag=flag[known])
            # The flagged fraction above covers every row, not just the ones with known truth.
            metrics.pop("flagged_fraction")
            out.update(metrics)
        return out

    @cached_property
    def _auroc(self) -> float:
        """The clean probability's AUROC on the rows with known truth, computed once (it sorts every row)."""
        known = self.truth_known
        return detection_metrics(self.clean_prob[known], self.is_clean[known])["auroc"]

    def histogram(self, bins: int = 20, threshold: float = 0.5, count: int | None = None) -> dict[str, np.ndarray]:
        """:meth:`_histogram`, computed once per flag rule and bin count."""
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        self._check_rule(threshold, count)
        cached = self._cached("histogram", threshold, count, bins, lambda: self._histogram(bins, threshold, count))
        return {k: v.copy() for k, v in cached.items()}

    def _histogram(self, bins: int, threshold: float, count: int | None = None) -> dict[str, np.ndarray]:
        """Histogram of ``clean_prob`` over [0, 1], split into flagged and kept rows.

        Returns ``edges`` (``bins + 1`` floats) and int64 ``flagged`` / ``kept`` counts per bin; a bin
        that straddles the threshold (or, with ``count``, holds a tie it splits) holds rows of both.
        """
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        flag = self.flagged(threshold, count)
        edges = np.linspace(0.0, 1.0, bins + 1)
        flagged, _ = np.histogram(self.clean_prob[flag], bins=edges)
        kept, _ = np.histogram(self.clean_prob[~flag], bins=edges)
        return {"edges": edges, "flagged": flagged.astype(np.int64), "kept": kept.astype(np.int64)}

    def explain(self, pair: int, threshold: float = 0.5, count: int | None = None) -> dict[str, Any]:
        """Everything known about training pair ``pair`` as plain Python values (JSON-ready); ``flagged``
        under the rule of :meth:`flagged`.

        ``best_image`` and ``best_caption_for_image`` carry the index and, when that image or caption
        appears somewhere in this table, its path or text (else None).
        """
        self._check_rule(threshold, count)
        rows = np.flatnonzero(self.pair == pair)
        if len(rows) == 0:
            lo, hi = (int(self.pair.min()), int(self.pair.max())) if len(self) else (0, -1)
            raise KeyError(f"pair {pair} is not in this table (pairs run from {lo} to {hi})")
        r = int(rows[0])
        best_image = int(self.best_image[r])
        best_caption = int(self.best_caption_for_image[r])
        return {
            "pair": int(self.pair[r]),
            "caption_index": int(self.caption_index[r]),
            "caption": self.caption[r],
            "image_index": int(self.image_index[r]),
            "image": self.image[r],
            "clean_prob": plain_float(self.clean_prob[r]),
            # One row's flag: the threshold compares one value; a count rule's mask is cached by flagged().
            "flagged": bool(self.clean_prob[r] <= threshold if count is None else self.flagged(threshold, count)[r]),
            "loss": plain_float(self.loss[r]),
            "mii_sim": plain_float(self.mii_sim[r]),
            "full_sim": plain_float(self.full_sim[r]),
            "image_rank": int(self.image_rank[r]),
            "is_clean": bool(self.is_clean[r]) if self.truth_known[r] else None,
            "best_image": {"index": best_image, "path": _lookup(self.image_index, self.image, best_image)},
            "best_caption_for_image": {
                "index": best_caption,
                "text": _lookup(self.caption_index, self.caption, best_caption),
            },
        }

    def to_parquet(self, path: str | os.PathLike[str]) -> Path:
        """Write the whole table as Parquet (atomically): :meth:`read` gives it back column for column."""
        arrays = {name: pa.array(getattr(self, name)) for name in NUMERIC_COLUMNS}
        arrays.update({name: getattr(self, name).arrow for name in TEXT_COLUMNS})
        arrays["is_clean"] = pa.array(self.is_clean, mask=~self.truth_known)
        table = pa.table({name: arrays[name] for name in COLUMNS})
        return atomic_write(path, lambda tmp: pq.write_table(table, tmp))

    def caption_contains(self, needle: str) -> np.ndarray:
        """Rows whose caption contains ``needle``, ignoring case."""
        return self.caption.contains(needle)

    def to_csv(self, path: str | os.PathLike[str], mask: np.ndarray) -> Path:
        """Write the rows selected by ``mask`` (e.g. ``flagged(t)``) in the training format, atomically.

        The result reads back with :meth:`read`; written by pyarrow's CSV writer (floats as the shortest
        text that parses back to the same value, text quoted where it needs to be).
        """
        out = atomic_write(path, partial(pacsv.write_csv, self._selected_table(mask)))
        release_arrow_memory()  # the selected table is gone once the write returns
        return out

    def _selected_table(self, mask: np.ndarray) -> pa.Table:
        """The rows selected by ``mask`` as an Arrow table with the training format's columns."""
        rows = np.flatnonzero(self._check_mask(mask))
        take = pa.array(rows)
        columns = {name: pa.array(getattr(self, name)[rows]) for name in NUMERIC_COLUMNS}
        columns.update({name: getattr(self, name).arrow.take(take) for name in TEXT_COLUMNS})
        truth = np.where(self.truth_known[rows], np.where(self.is_clean[rows], "1", "0"), "")
        columns["is_clean"] = pa.array(truth, pa.large_string())
        return pa.table({name: columns[name] for name in COLUMNS})

    def to_noise_index(self, path: str | os.PathLike[str], mask: np.ndarray) -> tuple[Path, Path]:
        """Export the pairing as a per-caption noise index plus a flag per caption, atomically.

        ``path`` (``.npy``) gets an int64 array ``a`` with one entry per caption: ``a[c]`` is the image
        caption ``c`` was paired with in training (the NCR convention of :mod:`disncl.data.noise`, with
        a ``.json`` sidecar saying so), so ``data.noise_file`` reproduces the same training pairs.
        ``<stem>.flagged.npy`` beside it is a bool array with ``flagged[c]`` = ``mask`` of caption
        ``c``'s row, e.g. to drop or relabel the flagged pairs. Needs the full table: every caption
        0..n-1 exactly once. Returns both paths.
        """
        path = Path(path)
        if path.suffix != ".npy":
            raise ValueError(f"{path}: name the noise index file .npy (the flags go to <name>.flagged.npy)")
        mask = self._check_mask(mask)
        n = len(self)
        if not np.array_equal(np.sort(self.caption_index), np.arange(n)):
            raise PairScoresError(
                f"a per-caption noise index needs every caption 0..{n - 1} exactly once, but this table's "
                "caption_index column has gaps or repeats; export from the full pair_scores.csv, not a filtered one"
            )
        index = np.empty(n, dtype=np.int64)
        index[self.caption_index] = self.image_index
        flags = np.empty(n, dtype=bool)
        flags[self.caption_index] = mask
        NoiseIndex(kind="caption", index=index, rate=None, seed=None).save(path)
        flagged_path = path.with_suffix(".flagged.npy")
        atomic_write(flagged_path, lambda tmp: _save_npy(tmp, flags))
        return path, flagged_path

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(self),):
            raise ValueError(
                f"mask must be a bool array with one entry per row ({len(self)}), found {mask.dtype} {mask.shape}"
            )
        return mask



def plain_float(value: np.floating) -> float:
    """A float32 score as the Python float it prints as (0.3, not 0.30000001192092896), for JSON and display."""
    return float(str(value))


def compact(values: np.ndarray, name: str) -> np.ndarray:
    """A numeric column in the narrowest type that holds it exactly enough: int32 indices (int64 beyond
    2**31 rows), float32 scores (what training computes them in). At 10 M pairs this halves the table's
    resident size (about 400 MB less than int64 and float64)."""
    if name in FLOAT_COLUMNS:
        return values.astype(np.float32, copy=False)
    values = values.astype(np.int64, copy=False)
    fits = not len(values) or (values.min() >= np.iinfo(np.int32).min and values.max() <= np.iinfo(np.int32).max)
    return values.astype(np.int32 if fits else np.int64, copy=False)


def _arrow_columns(path: Path, table: pa.Table) -> dict[str, Any]:
    """The numeric columns of an Arrow table as compact numpy arrays (:func:`compact`) and its text as
    TextColumns."""
    columns: dict[str, Any] = {}
    for name in NUMERIC_COLUMNS:
        values = table[name]
        if values.null_count:
            raise PairScoresError(f"{path}: column {name!r} has empty values")
        columns[name] = compact(values.to_numpy(), name)
        # After the cast, so that a value beyond float32's range is caught too.
        if name in FLOAT_COLUMNS and not np.isfinite(columns[name]).all():
            raise PairScoresError(f"{path}: column {name!r} holds NaN, infinite or out-of-range values")
    columns.update({name: TextColumn(table[name]) for name in TEXT_COLUMNS})
    return columns


def _read_columns(path: Path, reader: Any) -> tuple[dict[str, list[str]], list[int]]:
    """The required columns of a CSV as lists of strings, and the line each row ends on (for messages)."""
    header = [name.strip() for name in next(reader, [])]
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise PairScoresError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}. "
            "Expected the pair_scores.csv a training run writes."
        )
    where = {name: header.index(name) for name in COLUMNS}
    raw: dict[str, list[str]] = {name: [] for name in COLUMNS}
    lines: list[int] = []
    for values in reader:
        if len(values) != len(header):
            raise PairScoresError(
                f"{path}, line {reader.line_num}: {len(values)} fields but the header has {len(header)}"
            )
        for name, i in where.items():
            raw[name].append(values[i])
        lines.append(reader.line_num)
    return raw, lines


def _parse_numbers(path: Path, lines: list[int], name: str, values: list[str], kind: type) -> np.ndarray:
    """A numeric column as integers (``kind`` int) or finite floats (``kind`` float), :func:`compact`."""
    parsed = []
    for line, v in zip(lines, values, strict=True):
        try:
            number = kind(v)
        except ValueError:
            number = None
        if number is None or (kind is float and not np.isfinite(number)):
            expected = "an integer" if kind is int else "a finite number"
            raise PairScoresError(f"{path}, line {line}: column {name!r} is {v!r}; expected {expected}")
        if kind is float and abs(number) > float(np.finfo(np.float32).max):
            raise PairScoresError(f"{path}, line {line}: column {name!r} is {v!r}, beyond float32's range")
        parsed.append(number)
    return compact(np.asarray(parsed, dtype=np.int64 if kind is int else np.float64), name)


def _parse_truth(path: Path, lines: list[int], values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``is_clean`` as (truth, known): empty means unknown, 0/1 (or false/true) are the ground truth."""
    truth = np.zeros(len(values), dtype=bool)
    known = np.zeros(len(values), dtype=bool)
    for r, (line, v) in enumerate(zip(lines, values, strict=True)):
        v = v.strip()
        if v in _TRUE:
            truth[r] = known[r] = True
        elif v in _FALSE:
            known[r] = True
        elif v:
            raise PairScoresError(f"{path}, line {line}: is_clean is {v!r}; expected 1, 0 or empty (unknown)")
    return truth, known


def _lookup(keys: np.ndarray, texts: TextColumn, key: int) -> str | None:
    """The text of the first row whose ``keys`` entry equals ``key``, or None if no row has it."""
    hits = np.flatnonzero(keys == key)
    return texts[int(hits[0])] if len(hits) else None


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a clean probability in [0, 1], got {threshold!r}")


def _check_count(count: int, n: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 0 <= count <= n:
        raise ValueError(f"count must be a whole number of pairs between 0 and {n}, got {count!r}")


def _save_npy(tmp: Path, array: np.ndarray) -> None:
    # A file handle, because np.save appends ".npy" to path names that lack it.
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
