"""A searchable gallery of images and captions: embeddings in both spaces plus a FAISS index for each.

A gallery holds image items (paths relative to an image root, optional ids) and caption items (text,
optional owner image), the L2-normalised embeddings of both in the modality-invariant space ("mii",
what retrieval uses) and the tower space ("full"), and four inner-product FAISS indexes
(``image_mii``, ``image_full``, ``caption_mii``, ``caption_full``). Searching the image indexes with a
caption embedding is text→image retrieval, and the other way round.

On disk (one folder, written atomically)::

    gallery.json           metadata: paths, ids, captions, owners, index kinds, dims, counts
    {modality}_{space}.npy float32 embeddings
    {modality}_{space}.faiss the FAISS index
    map_{space}.npy        2-D map coordinates of the images then the captions (:mod:`.projection`)
    pair_scores.parquet    optional: a training run's per-pair scores, for the noisy-pair explorer
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Protocol

import faiss
import numpy as np
from tqdm import tqdm

from disncl.io import atomic_dir, atomic_write_json, find_complete_dir

if TYPE_CHECKING:
    from disncl.serve.pair_scores import PairScores

FORMAT_VERSION = 1
META_FILE = "gallery.json"
# Galleries store the pair table as Parquet (read memory-mapped); older ones hold pair_scores.csv.
PAIR_SCORES_FILE = "pair_scores.parquet"
SPACES = ("mii", "full")
MODALITIES = ("image", "caption")
INDEX_KINDS = ("flat", "ivf", "hnsw", "ivfpq")
# IVF-PQ keeps this many candidates per wanted hit, re-scored exactly from the (memory-mapped) embeddings.
PQ_RERANK = 4
# FAISS's k-means warns below 39 training points per centroid: fewer gives poorly placed lists.
MIN_POINTS_PER_LIST = 39
HNSW_NEIGHBOURS = 32
DEFAULT_EF_SEARCH = 64
_ADD_CHUNK = 16384


class GalleryError(ValueError):
    """A gallery (in memory or on disk) is inconsistent; the message says what and, on disk, which file."""


class UnsafePathError(GalleryError):
    """An image path is absolute or climbs out of the gallery's image root."""


class EncoderOutput(Protocol):
    """What a bundle's encoder returns (``disncl.serve.bundle.Encodings``): L2-normalised float32 rows."""

    full: np.ndarray
    mii: np.ndarray


class Encoder(Protocol):
    """The part of ``disncl.serve.bundle.Bundle`` a gallery needs to embed its items."""

    def encode_images(self, images: Any, batch_size: int = ..., progress: bool = ...) -> EncoderOutput: ...

    def encode_texts(self, texts: list[str], batch_size: int = ..., progress: bool = ...) -> EncoderOutput: ...


def safe_relative_path(path: str) -> str:
    """``path`` normalised, if it is a relative path that stays under its root; else UnsafePathError.

    The check is lexical: symlinks inside the root are the gallery owner's choice and are followed.
    """
    if not path or "\x00" in path:
        raise UnsafePathError(f"image path {path!r} is empty or contains a NUL byte")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).drive:
        raise UnsafePathError(f"image path {path!r} is absolute; gallery image paths must be relative to the root")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"image path {path!r} climbs out of the gallery's image root via '..'")
    if norm == ".":
        raise UnsafePathError(f"image path {path!r} names the image root itself, not an image file")
    return norm


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: about 4·sqrt(n)."""
    return max(1, round(4 * math.sqrt(n)))


class Gallery:
    """Image and caption items with their embeddings and FAISS indexes.

    Make one with :meth:`from_embeddings`, :meth:`build` (encodes with a bundle) or :meth:`load`.
    Scores are inner products, i.e. cosine similarities for the unit-norm embeddings a bundle returns;
    pass queries from the same bundle and space.
    """

    def __init__(
        self,
        root: Path,
        image_paths: list[str],
        image_ids: list[str] | None,
        captions: list[str],
        caption_image: np.ndarray | None,
        embeddings: dict[str, np.ndarray],
        indexes: dict[str, faiss.Index],
        kind: str,
        index_kinds: dict[str, str],
        notes: list[str] | None = None,
        pair_scores_path: Path | None = None,
        maps: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Assemble a gallery from parts that already fit together (checked); prefer the constructors."""
        self.root = Path(root)
        self.image_paths = [safe_relative_path(p) for p in image_paths]
        self.image_ids = None if image_ids is None else [str(i) for i in image_ids]
        self.captions = list(captions)
        self.caption_image = None if caption_image is None else np.asarray(caption_image, dtype=np.int64)
        self.embeddings = embeddings
        self.indexes = indexes
        self.kind = kind
        self.index_kinds = index_kinds
        self.notes = list(notes or [])
        self.pair_scores_path = pair_scores_path
        self._maps = dict(maps or {})
        self._check()

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    @property
    def dims(self) -> dict[str, int]:
        """Embedding width of each space (shared by both modalities)."""
        return {space: int(self.embeddings[f"image_{space}"].shape[1]) for space in SPACES}

    def embedding(self, modality: str, space: str) -> np.ndarray:
        """The (count, dim) float32 embeddings of ``modality`` ("image"/"caption") in ``space``."""
        return self.embeddings[_key(modality, space)]

    def map_coordinates(self, space: str) -> np.ndarray:
        """``(n_images + n_captions, 2)`` map coordinates in ``space`` (images first), computed when the
        gallery is saved; a gallery saved before maps existed computes them once, here."""
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
        if space not in self._maps:
            from disncl.serve.projection import project_2d

            self._maps[space] = project_2d(self.embedding("image", space), self.embedding("caption", space))
        return self._maps[space]

    def image_path(self, i: int) -> Path:
        """Where image ``i`` lives: its relative path under the root, re-checked to stay inside it."""
        if not 0 <= i < self.n_images:
            raise IndexError(f"image index {i} out of range; this gallery has {self.n_images} images")
        return self.root / safe_relative_path(self.image_paths[i])

    def image_id(self, i: int) -> str:
        """Image ``i``'s id if the gallery has ids, else its relative path."""
        return self.image_paths[i] if self.image_ids is None else self.image_ids[i]

    def search_images(self, query: np.ndarray, space: str = "mii", k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` images closest to each query row in ``space``: (scores, indices), both (Q, k).

        ``query`` is (Q, D) or (D,). ``k`` is clipped to the number of images. Approximate indexes may
        find fewer than ``k`` hits for a query; missing slots have index -1 and score -inf.
        """
        return self._search("image", query, space, k)

    def search_captions(self, query: np.ndarray, space: str = "mii", k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` captions closest to each query row in ``space``; as :meth:`search_images`."""
        return self._search("caption", query, space, k)

    def load_pair_scores(self) -> PairScores | None:
        """The attached training pair scores, or None if the gallery has none."""
        if self.pair_scores_path is None:
            return None
        from disncl.serve.pair_scores import PairScores

        return PairScores.read(self.pair_scores_path)

    @classmethod
    def from_embeddings(
        cls,
        root: str | os.PathLike[str],
        image_paths: Sequence[str],
        image_emb: dict[str, np.ndarray] | None,
        captions: Sequence[str],
        caption_emb: dict[str, np.ndarray] | None,
        caption_image: np.ndarray | None = None,
        kind: str = "flat",
        image_ids: Sequence[str] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
        ef_search: int = DEFAULT_EF_SEARCH,
        progress: bool = False,
    ) -> Gallery:
        """Index precomputed embeddings.

        ``image_emb`` / ``caption_emb`` map each space ("mii", "full") to a (count, dim) array; either may
        be None when it has no items (its width is taken from the other). ``kind`` is "flat" (exact),
        "ivf" (``nlist`` lists, default about 4·sqrt(n), ``nprobe`` searched, default nlist/16, at most nlist) or
        "hnsw" (``ef_search`` candidates per search) or "ivfpq" (ivf's lists holding product-quantised
        codes, one byte per 4 dimensions: a 64-dim float32 row in 16 bytes instead of 256, for galleries
        beyond RAM; its candidates are re-scored exactly from the embeddings, see :meth:`_search`). An
        ivf, ivfpq or hnsw index over fewer than 39·nlist vectors (the default nlist for hnsw) is built flat
        instead, with a line in :attr:`notes` saying so. IVF indexes load memory-mapped (:meth:`load`).
        """
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; use one of {', '.join(INDEX_KINDS)}")
        for name, value in (("nlist", nlist), ("nprobe", nprobe), ("ef_search", ef_search)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        image_paths = [safe_relative_path(p) for p in image_paths]
        captions = list(captions)
        _check_items(len(image_paths), image_ids, len(captions), caption_image)
        embeddings = _embedding_arrays(
            {"image": (image_emb, len(image_paths)), "caption": (caption_emb, len(captions))}
        )
        indexes: dict[str, faiss.Index] = {}
        index_kinds: dict[str, str] = {}
        notes: list[str] = []
        for key, x in embeddings.items():
            index, built, note = _build_index(x, kind, nlist, nprobe, ef_search, key, progress)
            indexes[key], index_kinds[key] = index, built
            if note:
                notes.append(note)
        return cls(
            root=Path(root),
            image_paths=image_paths,
            image_ids=None if image_ids is None else list(image_ids),
            captions=captions,
            caption_image=caption_image,
            embeddings=embeddings,
            indexes=indexes,
            kind=kind,
            index_kinds=index_kinds,
            notes=notes,
        )

    @classmethod
    def build(
        cls,
        bundle: Encoder,
        images_root: str | os.PathLike[str],
        image_paths: Sequence[str],
        captions: Sequence[str],
        caption_image: np.ndarray | None = None,
        kind: str = "flat",
        batch_size: int = 64,
        progress: bool = True,
        image_ids: Sequence[str] | None = None,
        text_batch_size: int = 256,
        nlist: int | None = None,
        nprobe: int | None = None,
        ef_search: int = DEFAULT_EF_SEARCH,
    ) -> Gallery:
        """Encode the images (``batch_size`` at a time) and captions with ``bundle``, then index them.

        Every image file is checked before encoding starts, so a missing file fails in seconds, not
        after hours of encoding.
        """
        root = Path(images_root)
        rel_paths = [safe_relative_path(p) for p in image_paths]
        _check_items(len(rel_paths), image_ids, len(captions), caption_image)
        missing = [p for p in rel_paths if not (root / p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(rel_paths)} images not found under {root}, e.g. {', '.join(missing[:3])}"
            )
        image_emb = caption_emb = None
        if rel_paths:
            encoded = bundle.encode_images([root / p for p in rel_paths], batch_size=batch_size, progress=progress)
            image_emb = {"mii": encoded.mii, "full": encoded.full}
        if len(captions):
            encoded = bundle.encode_texts(list(captions), batch_size=text_batch_size, progress=progress)
            caption_emb = {"mii": encoded.mii, "full": encoded.full}
        return cls.from_embeddings(
            root, rel_paths, image_emb, captions, caption_emb, caption_image, kind, image_ids,
            nlist=nlist, nprobe=nprobe, ef_search=ef_search, progress=progress,
        )

    def save(self, directory: str | os.PathLike[str], pair_scores: str | os.PathLike[str] | None = None) -> Path:
        """Write the gallery to ``directory`` atomically, replacing an earlier gallery there.

        ``pair_scores`` (a run's ``pair_scores.csv``, or a ``.parquet``) is stored beside it as Parquet;
        without it, a pair-scores file already attached to this gallery is carried over. Refuses to
        replace a non-empty folder that is not a gallery, or one that holds the image root.
        """
        directory = Path(directory)
        source = Path(pair_scores) if pair_scores is not None else self.pair_scores_path
        if source is not None and not source.is_file():
            raise FileNotFoundError(f"pair-scores file not found: {source}")
        _check_replaceable(directory, self.root)
        from disncl.serve.pair_scores import PairScores

        # Read (and so checked) before anything is written; stored as Parquet whatever it came as.
        scores = PairScores.read(source) if source is not None else None
        meta = self._metadata(directory, source is not None)

        def fill(tmp: Path) -> None:
            for key, x in self.embeddings.items():
                np.save(tmp / f"{key}.npy", np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
                faiss.write_index(self.indexes[key], str(tmp / f"{key}.faiss"))
            for space in SPACES:
                np.save(tmp / f"map_{space}.npy", self.map_coordinates(space), allow_pickle=False)
            if source is not None:
                scores.to_parquet(tmp / PAIR_SCORES_FILE)
            # Written last: a folder holding gallery.json is complete.
            atomic_write_json(tmp / META_FILE, meta)

        return atomic_dir(directory, fill)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], mmap: bool = True) -> Gallery:
        """Read a gallery written by :meth:`save`, checking every file against ``gallery.json``.

        With ``mmap`` the embeddings are memory-mapped read-only rather than read into memory.
        """
        directory = Path(directory)
        found = find_complete_dir(directory, META_FILE)
        if found is None:
            raise FileNotFoundError(
                f"no gallery in {directory} ({META_FILE} missing); build one with "
                f"`python -m disncl index --bundle BUNDLE --out {directory} --images DIR`"
            )
        meta = _read_metadata(found / META_FILE)
        counts = {"image": len(meta["paths"]), "caption": len(meta["captions"])}
        embeddings: dict[str, np.ndarray] = {}
        indexes: dict[str, faiss.Index] = {}
        for modality in MODALITIES:
            for space in SPACES:
                key = _key(modality, space)
                shape = (counts[modality], meta["dims"][space])
                embeddings[key] = _read_embeddings(found / f"{key}.npy", shape, mmap)
                indexes[key] = _read_index(found / f"{key}.faiss", shape,
                                           mmap=meta["index_kinds"].get(key) in ("ivf", "ivfpq"))
        maps = {}
        if meta.get("maps"):
            n_items = counts["image"] + counts["caption"]
            for space in SPACES:
                maps[space] = _read_embeddings(found / f"map_{space}.npy", (n_items, 2), mmap)
        pair_scores = None
        if meta.get("pair_scores"):
            name = str(meta["pair_scores"])
            if Path(name).name != name:
                raise GalleryError(f"{found / META_FILE}: pair_scores must be a file name in the gallery, got {name!r}")
            pair_scores = found / name
            if not pair_scores.is_file():
                raise GalleryError(f"{found / META_FILE} lists {meta['pair_scores']} but {pair_scores} is missing")
        try:
            return cls(
                root=_resolve_root(found, meta),
                image_paths=meta["paths"],
                image_ids=meta.get("ids"),
                captions=meta["captions"],
                caption_image=None if meta.get("caption_image") is None else np.asarray(meta["caption_image"]),
                embeddings=embeddings,
                indexes=indexes,
                kind=meta["kind"],
                index_kinds=meta["index_kinds"],
                notes=meta.get("notes"),
                pair_scores_path=pair_scores,
                maps=maps,
            )
        except GalleryError as err:
            raise type(err)(f"{found / META_FILE}: {err}") from err

    def _search(self, modality: str, query: np.ndarray, space: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        key = _key(modality, space)
        q = np.asarray(query)
        if q.ndim == 1:
            q = q[None, :]
        dim = self.dims[space]
        if q.ndim != 2:
            raise ValueError(f"query must be one vector (D,) or a batch (Q, D), got shape {np.shape(query)}")
        if q.shape[1] != dim:
            raise ValueError(
                f"query has dimension {q.shape[1]} but the {space!r} space of this gallery has dimension {dim}; "
                f"encode the query with the gallery's bundle and pass its .{space} rows"
            )
        if not np.issubdtype(q.dtype, np.number) or not np.all(np.isfinite(q)):
            raise ValueError("query must hold finite numbers (found NaN, inf or a non-numeric dtype)")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        k = min(int(k), len(self.embeddings[key]))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        if self.index_kinds[key] == "ivfpq":
            # Product-quantised scores are approximate: keep more candidates, re-score them exactly.
            _, candidates = self.indexes[key].search(q32, min(PQ_RERANK * k, len(self.embeddings[key])))
            return _rerank(self.embeddings[key], q32, candidates, k)
        scores, ids = self.indexes[key].search(q32, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _check(self) -> None:
        """Every count, width and index agrees with every other; GalleryError otherwise."""
        if self.kind not in INDEX_KINDS:
            raise GalleryError(f"unknown index kind {self.kind!r}; use one of {', '.join(INDEX_KINDS)}")
        _check_items(self.n_images, self.image_ids, self.n_captions, self.caption_image)
        counts = {"image": self.n_images, "caption": self.n_captions}
        expected = {_key(m, s) for m in MODALITIES for s in SPACES}
        if set(self.embeddings) != expected or set(self.indexes) != expected or set(self.index_kinds) != expected:
            raise GalleryError(f"a gallery needs embeddings, an index and an index kind for each of {sorted(expected)}")
        for modality in MODALITIES:
            for space in SPACES:
                key = _key(modality, space)
                x, index = self.embeddings[key], self.indexes[key]
                dim = self.embeddings[f"image_{space}"].shape[1]
                if x.shape != (counts[modality], dim):
                    raise GalleryError(f"{key} embeddings have shape {x.shape}, expected ({counts[modality]}, {dim})")
                if index.ntotal != counts[modality] or index.d != dim:
                    raise GalleryError(
                        f"{key} index holds {index.ntotal} vectors of dimension {index.d}, "
                        f"expected {counts[modality]} of dimension {dim}"
                    )
                if self.index_kinds[key] not in INDEX_KINDS:
                    raise GalleryError(f"{key} has unknown index kind {self.index_kinds[key]!r}")

    def _metadata(self, directory: Path, has_pair_scores: bool) -> dict[str, Any]:
        root_abs = os.path.abspath(self.root)
        try:
            root = os.path.relpath(root_abs, os.path.abspath(directory))
        except ValueError:  # no relative path between Windows drives
            root = root_abs
        return {
            "format_version": FORMAT_VERSION,
            # Relative to the gallery so a project moved as a whole keeps working; the absolute path
            # is the fallback for a gallery folder moved on its own.
            "root": root,
            "root_absolute": root_abs,
            "paths": self.image_paths,
            "ids": self.image_ids,
            "captions": self.captions,
            "caption_image": None if self.caption_image is None else self.caption_image.tolist(),
            "kind": self.kind,
            "index_kinds": self.index_kinds,
            "dims": self.dims,
            "counts": {"image": self.n_images, "caption": self.n_captions},
            "notes": self.notes,
            "pair_scores": PAIR_SCORES_FILE if has_pair_scores else None,
            "maps": True,
        }


def _key(modality: str, space: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; use one of {', '.join(SPACES)}")
    return f"{modality}_{space}"


def _check_items(
    n_images: int, image_ids: Sequence[str] | None, n_captions: int, caption_image: np.ndarray | None
) -> None:
    """Ids and caption owners fit the item counts; checked before any slow encoding or indexing."""
    if image_ids is not None and len(image_ids) != n_images:
        raise GalleryError(f"{len(image_ids)} image ids for {n_images} images")
    if caption_image is not None:
        owners = np.asarray(caption_image)
        if owners.shape != (n_captions,) or (n_captions and not np.issubdtype(owners.dtype, np.integer)):
            raise GalleryError(
                f"caption_image must hold one image index per caption ({n_captions}), "
                f"found {owners.dtype} {owners.shape}"
            )
        if len(owners) and (owners.min() < 0 or owners.max() >= n_images):
            raise GalleryError(f"caption_image must hold image indices 0..{n_images - 1}")


def _embedding_arrays(given: dict[str, tuple[dict[str, np.ndarray] | None, int]]) -> dict[str, np.ndarray]:
    """Checked float32 arrays per ``{modality}_{space}``; a modality without items may pass None."""
    dims: dict[str, int] = {}
    for modality, (emb, count) in given.items():
        if emb is None:
            if count:
                raise GalleryError(f"{count} {modality} items but no {modality} embeddings")
            continue
        if set(emb) != set(SPACES):
            raise GalleryError(f"{modality} embeddings need exactly the spaces {SPACES}, got {sorted(emb)}")
        for space in SPACES:
            x = np.asarray(emb[space])
            if x.ndim != 2 or len(x) != count:
                raise GalleryError(f"{modality} {space} embeddings have shape {x.shape}, expected ({count}, dim)")
            if dims.setdefault(space, x.shape[1]) != x.shape[1]:
                raise GalleryError(
                    f"{space} embeddings are {dims[space]}-wide for one modality and {x.shape[1]}-wide for the "
                    "other; images and captions must come from the same bundle"
                )
    if set(dims) != set(SPACES):
        raise GalleryError("a gallery needs at least one image or caption")
    out: dict[str, np.ndarray] = {}
    for modality, (emb, _) in given.items():
        for space in SPACES:
            x = np.zeros((0, dims[space])) if emb is None else emb[space]
            x = np.ascontiguousarray(x, dtype=np.float32)
            if not np.all(np.isfinite(x)):
                raise GalleryError(f"{modality} {space} embeddings contain NaN or inf")
            out[_key(modality, space)] = x
    return out


def _build_index(
    x: np.ndarray, kind: str, nlist: int | None, nprobe: int | None, ef_search: int, label: str, progress: bool
) -> tuple[faiss.Index, str, str | None]:
    """An inner-product index of ``kind`` over ``x``, the kind actually built, and a note on any fallback."""
    n, dim = x.shape
    # HNSW needs no training, but below the IVF size an exact scan is about as fast and never misses.
    lists = nlist if kind in ("ivf", "ivfpq") and nlist is not None else default_nlist(n)
    note = None
    if kind != "flat" and n < MIN_POINTS_PER_LIST * lists:
        # An empty modality (a gallery without captions, say) needs no note: there is nothing to search.
        note = None if n == 0 else (
            f"{label}: {n} vectors are too few for an {kind} index (needs {MIN_POINTS_PER_LIST}·nlist = "
            f"{MIN_POINTS_PER_LIST * lists} with nlist {lists}); built an exact flat index instead"
        )
        kind = "flat"
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        # Clipped: image and caption indexes get different default nlists from one nprobe option.
        probes = math.ceil(lists / 16) if nprobe is None else min(nprobe, lists)
        index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", probes)
    elif kind == "ivfpq":
        probes = math.ceil(lists / 16) if nprobe is None else min(nprobe, lists)
        index = faiss.index_factory(dim, f"IVF{lists},PQ{_pq_codes(dim)}", faiss.METRIC_INNER_PRODUCT)
        # index_factory turns on polysemous training (codes ordered for Hamming pre-filtering), which
        # searches here never use and which makes training ten times slower.
        index.do_polysemous_training = False
        index.train(x)
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", probes)
    else:
        index = faiss.index_factory(dim, f"HNSW{HNSW_NEIGHBOURS}", faiss.METRIC_INNER_PRODUCT)
        faiss.ParameterSpace().set_index_parameter(index, "efSearch", ef_search)
    starts = range(0, n, _ADD_CHUNK)
    # Flat adds are a copy; graph and list inserts are the slow part worth a progress bar.
    for s in tqdm(starts, desc=f"indexing {label}", unit="chunk", disable=not progress or kind == "flat"):
        index.add(x[s : s + _ADD_CHUNK])
    return index, kind, note


def _pq_codes(dim: int) -> int:
    """Sub-quantisers of an IVF-PQ index: one 8-bit code per 4 dimensions (the largest divisor of ``dim``
    not above ``dim / 4``, so the code splits the vector evenly)."""
    return max(m for m in range(1, max(1, dim // 4) + 1) if dim % m == 0)


def _rerank(x: np.ndarray, q: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's candidates by exact inner product with their rows of ``x``."""
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    for row, (query, cand) in enumerate(zip(q, candidates, strict=True)):
        cand = cand[cand >= 0]
        exact = np.asarray(x[np.sort(cand)]) @ query
        order = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(order)], ids[row, : len(order)] = exact[order], np.sort(cand)[order]
    return scores, ids


def _check_replaceable(directory: Path, root: Path) -> None:
    """Refuse to let the atomic swap in :meth:`Gallery.save` delete anything that is not a gallery."""
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a folder; choose another gallery folder")
        if not (directory / META_FILE).is_file() and any(directory.iterdir()):
            raise FileExistsError(
                f"refusing to replace {directory}: it is not empty and holds no {META_FILE}; "
                "choose a new or empty folder"
            )
    target, images = Path(os.path.abspath(directory)), Path(os.path.abspath(root))
    if images == target or target in images.parents:
        raise FileExistsError(
            f"the image root {root} lies inside the gallery folder {directory}, which saving replaces; "
            "put the gallery somewhere else"
        )


def _read_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GalleryError(f"{path}: not valid JSON ({err}); rebuild the gallery") from err
    if not isinstance(meta, dict):
        raise GalleryError(f"{path}: expected a JSON object; rebuild the gallery")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise GalleryError(
            f"{path}: format_version {version!r}, this disncl reads version {FORMAT_VERSION}; rebuild the gallery"
        )
    required = ("root", "paths", "captions", "kind", "index_kinds", "dims", "counts")
    missing = [name for name in required if name not in meta]
    if missing:
        raise GalleryError(f"{path}: missing field(s) {', '.join(missing)}; rebuild the gallery")
    for name in ("paths", "captions"):
        if not isinstance(meta[name], list) or not all(isinstance(v, str) for v in meta[name]):
            raise GalleryError(f"{path}: {name!r} must be a list of strings; rebuild the gallery")
    dims = meta["dims"]
    if not isinstance(dims, dict) or not all(isinstance(dims.get(s), int) and dims[s] > 0 for s in SPACES):
        raise GalleryError(f"{path}: 'dims' must give a positive width for each of {SPACES}, found {dims!r}")
    counts = {"image": len(meta["paths"]), "caption": len(meta["captions"])}
    if meta["counts"] != counts:
        raise GalleryError(f"{path}: 'counts' says {meta['counts']} but the file lists {counts}")
    return meta


def _read_embeddings(path: Path, shape: tuple[int, int], mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise GalleryError(f"gallery file missing: {path}; rebuild the gallery")
    try:
        x = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise GalleryError(f"{path}: unreadable embeddings ({err}); rebuild the gallery") from err
    if x.dtype != np.float32 or x.shape != shape:
        raise GalleryError(f"{path}: found {x.dtype} {x.shape}, expected float32 {shape}; rebuild the gallery")
    return x


def _read_index(path: Path, shape: tuple[int, int], mmap: bool = False) -> faiss.Index:
    """Read and check an index; ``mmap`` leaves an IVF index's inverted lists on disk, paged in on demand."""
    if not path.is_file():
        raise GalleryError(f"gallery file missing: {path}; rebuild the gallery")
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "read error"
        raise GalleryError(f"{path}: corrupt or unreadable FAISS index ({reason}); rebuild the gallery") from err
    if (index.ntotal, index.d) != shape:
        raise GalleryError(
            f"{path}: index holds {index.ntotal} vectors of dimension {index.d}, expected {shape[0]} of "
            f"dimension {shape[1]}; rebuild the gallery"
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise GalleryError(f"{path}: index does not use inner product; rebuild the gallery")
    return index


def _resolve_root(directory: Path, meta: dict[str, Any]) -> Path:
    """The image root: relative to the gallery if that exists, else the absolute path saved beside it."""
    relative = directory / meta["root"]
    absolute = meta.get("root_absolute")
    if relative.is_dir() or not absolute:
        return relative
    return Path(absolute) if Path(absolute).is_dir() else relative
