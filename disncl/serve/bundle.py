"""A torch-free serving bundle: two ONNX graphs, a tokenizer file and a manifest.

A bundle directory (written by ``python -m disncl export``) holds ``image.onnx``, ``text.onnx``,
``tokenizer.json`` and ``manifest.json``; the manifest records the preprocessing constants, the
graphs' inputs and outputs, and a sha256 checksum of every other file. :meth:`Bundle.load` checks
all of it before creating any ONNX Runtime session, so a corrupt or mismatched bundle fails with
an error naming the file instead of returning wrong embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from .preprocess import ImageSource, fit_array, load_rgb, normalise, tokenize_texts, tokenizer_words, unknown_words
from .providers import choose_providers

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OUTPUTS = ("full", "mii", "mei")
IMAGE_INPUTS = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "attention_mask")
_REQUIRED_KEYS = ("format_version", "files", "graphs", "preprocessing", "embedding_dims")
# Nested fields a server reads, checked up front so a hand-edited or partial manifest fails at load
# with the field's name instead of a KeyError at the first request.
_REQUIRED_FIELDS = (
    "graphs.image.file", "graphs.text.file",
    "preprocessing.image.image_size", "preprocessing.image.mean", "preprocessing.image.std",
    "preprocessing.text.tokenizer", "preprocessing.text.max_text_len", "preprocessing.text.special_tokens",
    "embedding_dims.full", "embedding_dims.mii", "embedding_dims.mei",
)
# The files a bundle loads; each must carry a checksum, or a swapped file would go unnoticed.
_LOADED_FILES = ("graphs.image.file", "graphs.text.file", "preprocessing.text.tokenizer")
# Read size for checksums: large enough to be fast on big graphs, small enough to keep memory flat.
_HASH_CHUNK = 1 << 20
# ONNX Runtime warnings (e.g. about unused initialisers) are noise for a serving user; errors still show.
_ORT_LOG_ERRORS_ONLY = 3


class BundleError(ValueError):
    """A bundle cannot be used: missing or corrupt files, a newer format, or an inconsistent manifest."""


@dataclass
class Encodings:
    """L2-normalised float32 embeddings, one row per input.

    ``full`` is the tower feature (``N x E``), ``mii`` the modality-invariant code used for
    retrieval (``N x D_z``) and ``mei`` the modality-exclusive code (``N x D_u``).
    """

    full: np.ndarray
    mii: np.ndarray
    mei: np.ndarray

    def __len__(self) -> int:
        return len(self.full)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``manifest.json`` of a bundle, with its format version and required keys checked."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(
            f"{path}: not found; is {path.parent} a bundle written by `python -m disncl export`?"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc}); re-export the bundle") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format_version {version} is newer than this disncl reads ({FORMAT_VERSION}); "
            "upgrade disncl to serve it"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{path}: missing keys {missing}; re-export the bundle")
    wrong = [k for k in _REQUIRED_KEYS[1:] if not isinstance(manifest[k], dict)]
    if wrong:
        raise BundleError(f"{path}: {wrong} must be JSON objects; re-export the bundle")
    for dotted in _REQUIRED_FIELDS:
        _field(manifest, dotted, path)
    for name, digest in manifest["files"].items():
        _check_inside(name, path)
        if not isinstance(digest, str):
            raise BundleError(f"{path}: files[{name!r}] must be a sha256 hex string; re-export the bundle")
    for dotted in _LOADED_FILES:
        name = _field(manifest, dotted, path)
        if not isinstance(name, str) or name not in manifest["files"]:
            raise BundleError(
                f"{path}: {dotted} names {name!r}, which has no checksum under 'files'; re-export the bundle"
            )
    return manifest


def _field(manifest: dict[str, Any], dotted: str, path: Path) -> Any:
    """The value at a dotted key such as ``graphs.image.file``; :class:`BundleError` naming it if absent."""
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise BundleError(f"{path}: {dotted} is missing; re-export the bundle")
        value = value[part]
    return value


def _check_inside(name: str, manifest_path: Path) -> None:
    """A manifest must never make us read outside the bundle."""
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise BundleError(f"{manifest_path}: file entry {name!r} points outside the bundle; re-export the bundle")


def verify_checksums(directory: str | os.PathLike[str], files: dict[str, str]) -> None:
    """Raise :class:`BundleError` naming the first file that is missing or differs from its sha256."""
    root = Path(directory)
    for name, expected in sorted(files.items()):
        _check_inside(name, root / MANIFEST)
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing; re-copy or re-export the bundle")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: checksum mismatch (sha256 {actual}, manifest says {expected}); the file is corrupt "
                "or was modified: re-copy or re-export the bundle"
            )


class Bundle:
    """Encode images and captions with an exported DisNCL model through ONNX Runtime.

    Create with :meth:`load`. Both encoders return :class:`Encodings` whose rows match the
    PyTorch model's ``Encoded.h``, ``Encoded.mii()`` and normalised ``mu_u`` (see the manifest's
    ``parity`` record for the measured difference).
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        image_session: ort.InferenceSession,
        text_session: ort.InferenceSession,
        tokenizer: Tokenizer,
    ) -> None:
        self.path = path
        self._manifest = manifest
        self._image = image_session
        self._text = text_session
        self._tokenizer = tokenizer
        image_pre = manifest["preprocessing"]["image"]
        self._mean = tuple(image_pre["mean"])
        self._std = tuple(image_pre["std"])
        self._eos_id = manifest["preprocessing"]["text"]["special_tokens"].get("eos")
        self._unk_id, self._words = tokenizer_words(tokenizer)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], providers: Sequence[str] | None = None, verify: bool = True
    ) -> Bundle:
        """Open the bundle in ``path``.

        ``providers`` is the ONNX Runtime provider list (default :func:`choose_providers` ``("auto")``:
        CUDA when usable, else CPU). ``verify=False`` skips the checksums (they read every file).
        """
        root = Path(path)
        manifest = read_manifest(root)
        if verify:
            verify_checksums(root, manifest["files"])
        chosen = list(providers) if providers is not None else choose_providers("auto")
        graphs = manifest["graphs"]
        image = _session(root, graphs, "image", IMAGE_INPUTS, chosen)
        text = _session(root, graphs, "text", TEXT_INPUTS, chosen)
        tokenizer = _tokenizer(root, manifest)
        return cls(root, manifest, image, text, tokenizer)

    @property
    def manifest(self) -> dict[str, Any]:
        """The parsed manifest (treat as read-only)."""
        return self._manifest

    @property
    def image_size(self) -> int:
        """Side of the square RGB images the image graph takes."""
        return int(self._manifest["preprocessing"]["image"]["image_size"])

    @property
    def max_text_len(self) -> int:
        """Tokens per caption after truncation, BOS and EOS included."""
        return int(self._manifest["preprocessing"]["text"]["max_text_len"])

    @property
    def embedding_dims(self) -> dict[str, int]:
        """Widths of the ``full``, ``mii`` and ``mei`` embeddings."""
        return {k: int(self._manifest["embedding_dims"][k]) for k in OUTPUTS}

    @property
    def providers(self) -> list[str]:
        """Providers the sessions actually run on (ONNX Runtime may have dropped an unusable one)."""
        return list(self._image.get_providers())

    def encode_images(
        self, images: np.ndarray | Sequence[ImageSource], batch_size: int = 64, progress: bool = False
    ) -> Encodings:
        """Embed images: a uint8 ``(N, H, W, 3)`` RGB array, or a list of paths, file bytes or PIL images.

        Everything is brought to ``image_size`` by the training rule (shorter side, bicubic,
        centre crop); arrays already of that size are used as they are.
        """
        if isinstance(images, (str, bytes, os.PathLike, Image.Image)):
            raise TypeError("encode_images takes a batch: wrap a single image in a list, e.g. [image]")
        _check_batch_size(batch_size)
        if isinstance(images, np.ndarray):
            def load(lo: int, hi: int) -> np.ndarray:
                return fit_array(images[lo:hi], self.image_size)
        else:
            images = list(images)

            def load(lo: int, hi: int) -> np.ndarray:
                return np.stack([load_rgb(src, self.image_size) for src in images[lo:hi]])

        if len(images) == 0:
            raise ValueError("no images to encode")

        def run(lo: int, hi: int) -> list[np.ndarray]:
            pixels = normalise(load(lo, hi), self._mean, self._std)
            return self._image.run(list(OUTPUTS), {"pixel_values": pixels})

        return _encode_batches(len(images), batch_size, run, "encode images", progress)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: bool = False) -> Encodings:
        """Embed captions; longer ones are truncated to :attr:`max_text_len` tokens as in training."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of captions: wrap a single one in a list, e.g. [text]")
        texts = list(texts)
        if not texts:
            raise ValueError("no captions to encode")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"caption {i} is a {type(text).__name__}, not a str")
            if not text.strip():
                raise ValueError(f"caption {i} is empty; every caption needs at least one word")
        _check_batch_size(batch_size)

        def run(lo: int, hi: int) -> list[np.ndarray]:
            ids, mask = tokenize_texts(self._tokenizer, texts[lo:hi], self._eos_id)
            return self._text.run(list(OUTPUTS), {"input_ids": ids, "attention_mask": mask})

        return _encode_batches(len(texts), batch_size, run, "encode captions", progress)


    @property
    def vocabulary(self) -> list[str] | None:
        """The words the text tower knows, if its tokenizer is word-level; None if it spells any word."""
        return None if self._words is None else list(self._words)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` the tokenizer cannot represent (they all encode as one unknown token)."""
        return unknown_words(self._tokenizer, self._unk_id, text)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, batch_size):
        yield lo, min(lo + batch_size, n)


def _encode_batches(
    n: int, batch_size: int, run: Callable[[int, int], list[np.ndarray]], desc: str, progress: bool
) -> Encodings:
    parts: list[list[np.ndarray]] = [[] for _ in OUTPUTS]
    total = -(-n // batch_size)
    for lo, hi in tqdm(_batches(n, batch_size), total=total, desc=desc, disable=not progress, leave=False):
        for store, out in zip(parts, run(lo, hi), strict=True):
            store.append(out)
    full, mii, mei = (np.concatenate(p).astype(np.float32, copy=False) for p in parts)
    return Encodings(full=full, mii=mii, mei=mei)


def _session(
    root: Path, graphs: dict[str, Any], kind: str, inputs: tuple[str, ...], providers: list[str]
) -> ort.InferenceSession:
    """An inference session for one graph, checked to have the inputs and outputs the bundle uses."""
    try:
        path = root / graphs[kind]["file"]
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{root / MANIFEST}: graphs.{kind}.file is missing; re-export the bundle") from exc
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_LOG_ERRORS_ONLY
    try:
        session = ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise BundleError(f"{path}: ONNX Runtime cannot load it ({exc}); re-export the bundle") from exc
    found_in = tuple(i.name for i in session.get_inputs())
    found_out = {o.name for o in session.get_outputs()}
    if found_in != inputs or not set(OUTPUTS) <= found_out:
        raise BundleError(
            f"{path}: graph takes {list(found_in)} and returns {sorted(found_out)}; expected inputs "
            f"{list(inputs)} and outputs {list(OUTPUTS)}"
        )
    return session


def _tokenizer(root: Path, manifest: dict[str, Any]) -> Tokenizer:
    """The bundle's tokenizer, checked to carry the truncation and padding the model was trained with."""
    text = manifest["preprocessing"]["text"]
    path = root / text["tokenizer"]
    try:
        tokenizer = Tokenizer.from_file(os.fspath(path))
    except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
        raise BundleError(f"{path}: cannot load the tokenizer ({exc}); re-export the bundle") from exc
    truncation = tokenizer.truncation
    if not truncation or truncation["max_length"] != text["max_text_len"] or tokenizer.padding is None:
        raise BundleError(
            f"{path}: tokenizer must truncate to max_text_len={text['max_text_len']} and pad; "
            "re-export the bundle"
        )
    return tokenizer
