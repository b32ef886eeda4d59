"""Synthetic image–caption benchmark with known shared and modality-exclusive factors.

Every image shows one or two coloured shapes. What a caption says (shape, colour, size and,
for two objects, their spatial relation) is the *shared* information. Each modality also
carries *exclusive* information the other never sees:

* image only: background colour, background texture, clutter blobs, position jitter, pixel noise;
* caption only: sentence template, filler phrase, synonyms, which object is mentioned first.

Because the shared factors take finitely many values, several images share a description,
so retrieval is many-to-many. The ``confound`` knob ties the training captions' filler
phrase to the image background, making exclusive information spuriously predictive across
modalities in the training split only.

On-disk layout written by :func:`generate` (the project's "folder + captions" format)::

    OUT/images/{split}/{index:06d}.png
    OUT/{split}.csv            header ``image,caption``; rows grouped by image, in image order
    OUT/factors_{split}.npz    ground-truth factors, read back by :func:`load_factors`
    OUT/synth.json             config, ``format_version`` and vocabularies; written last
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from disncl.io import atomic_write, atomic_write_json

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")

# Shared vocabulary. Index 0 of each synonym tuple is the canonical name used in shared keys.
SHAPE_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("circle", "disc"),
    ("square", "block"),
    ("triangle", "wedge"),
    ("cross", "plus"),
    ("diamond", "rhombus"),
)
SHAPES = tuple(syn[0] for syn in SHAPE_SYNONYMS)
COLOURS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta")
COLOUR_RGB: tuple[tuple[int, int, int], ...] = (
    (220, 30, 30),
    (240, 220, 20),
    (30, 180, 50),
    (20, 200, 220),
    (30, 60, 230),
    (210, 40, 200),
)
SIZE_SYNONYMS: tuple[tuple[str, ...], ...] = (("small", "little", "tiny"), ("large", "big", "huge"))
SIZES = tuple(syn[0] for syn in SIZE_SYNONYMS)
# Half-extent of an object as a fraction of the image side, per size class.
SIZE_EXTENT = (0.11, 0.19)

# Canonical relations between object 0 and object 1; object 0 is always the left / top one.
RELATIONS = ("left-of", "above")
# Phrases for "object 0 REL object 1" (forward) and "object 1 REL object 0" (inverse).
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left-of": ("to the left of", "left of"),
    "right-of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under"),
}
_FORWARD = ("left-of", "above")
_INVERSE = ("right-of", "below")

# Image-exclusive vocabulary. Names are internal labels, deliberately not English colour
# words, so none of them can ever occur as a caption word.
BACKGROUNDS: tuple[str, ...] = (
    "bg-slate",
    "bg-sand",
    "bg-olive",
    "bg-rose",
    "bg-teal",
    "bg-mauve",
    "bg-khaki",
    "bg-steel",
)
BACKGROUND_RGB: tuple[tuple[int, int, int], ...] = (
    (90, 100, 110),
    (150, 140, 115),
    (105, 110, 80),
    (140, 110, 115),
    (80, 115, 110),
    (115, 100, 130),
    (135, 130, 100),
    (100, 115, 135),
)
TEXTURES: tuple[str, ...] = ("plain", "stripes", "dots")

# Caption-exclusive vocabulary.
TEMPLATES: tuple[str, ...] = (
    "{scene} {filler}",
    "there is {scene} {filler}",
    "{filler} there is {scene}",
    "this image shows {scene} {filler}",
    "{filler} we see {scene}",
    "a photo of {scene} {filler}",
    "you can see {scene} {filler}",
)
FILLERS: tuple[str, ...] = (
    "in a simple picture",
    "as you might expect",
    "for what it is worth",
    "in this example",
    "at first glance",
    "as far as we know",
    "once again",
    "to be honest",
)

NOISE_SIGMA = 8.0
TEXTURE_CONTRAST = 14
CLUTTER_CONTRAST = 20
MAX_IMAGES_PER_SPLIT = 1_000_000  # file names have six digits

IMAGE_FACTOR_NAMES = (
    "background",
    "texture",
    "n_objects",
    "shape0",
    "colour0",
    "size0",
    "shape1",
    "colour1",
    "size1",
    "relation",
    "n_clutter",
)
CAPTION_FACTOR_NAMES = (
    "template",
    "filler",
    "image",
    "swapped",
    "shape_syn0",
    "shape_syn1",
    "size_syn0",
    "size_syn1",
    "relation_syn",
)


@dataclass(frozen=True)
class SynthConfig:
    """Sizes and knobs of a synthetic dataset; the same config always yields the same bytes."""

    n_train: int = 5000
    n_val: int = 500
    n_test: int = 1000
    captions_per_image: int = 5
    # Captions per *training* image; 0 means captions_per_image. Fewer captions per training image buy
    # more distinct images for the same number of pairs per epoch (the bench's standard preset uses 2).
    train_captions_per_image: int = 0
    image_size: int = 64
    two_object_prob: float = 0.7  # probability an image has two objects (else one)
    confound: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "n_test"):
            n = getattr(self, name)
            if not 0 <= n < MAX_IMAGES_PER_SPLIT:
                raise ValueError(f"{name} must be in [0, {MAX_IMAGES_PER_SPLIT}), got {n}")
        if self.captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {self.captions_per_image}")
        if self.train_captions_per_image < 0:
            raise ValueError(f"train_captions_per_image must be >= 0, got {self.train_captions_per_image}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        for name in ("two_object_prob", "confound"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def split_sizes(self) -> dict[str, int]:
        """Number of images per split, in generation order."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}

    def captions_for(self, split: str) -> int:
        """Captions per image of ``split``."""
        if split == "train" and self.train_captions_per_image:
            return self.train_captions_per_image
        return self.captions_per_image


@dataclass(frozen=True)
class SplitFactors:
    """Ground truth of one split: shared keys and integer factors per image and per caption.

    ``image_factors`` arrays have one entry per image (see ``IMAGE_FACTOR_NAMES``; object-1
    fields and ``relation`` are -1 for one-object images). ``caption_factors`` arrays have
    one entry per caption (see ``CAPTION_FACTOR_NAMES``); ``image`` is the owner image index.
    Synonym ids refer to the image's objects, not to the order the caption mentions them.
    """

    image_shared_key: list[str]
    caption_shared_key: list[str]
    image_factors: dict[str, np.ndarray]
    caption_factors: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Object:
    shape: int
    colour: int
    size: int


@dataclass(frozen=True)
class _Scene:
    """What an image shows; ``objects[0]`` is left of / above ``objects[1]``."""

    objects: tuple[_Object, ...]
    relation: int  # index into RELATIONS, -1 for one object
    background: int
    texture: int


@dataclass(frozen=True)
class _CaptionChoice:
    """Caption-exclusive choices for one caption; per-object tuples follow image object order."""

    template: int
    filler: int
    swapped: int  # 1 when object 1 is mentioned first (inverse relation phrase); -1 for one object
    shape_syn: tuple[int, ...]
    size_syn: tuple[int, ...]
    relation_syn: int  # -1 for one object


def _split_code(split: str) -> int:
    # crc32 rather than hash(): Python salts str hashes per process.
    return zlib.crc32(split.encode("utf-8"))


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    # One generator per image and stream, so image i is the same whatever the split size,
    # and the pixels never depend on caption settings (captions_per_image, confound).
    return np.random.default_rng([seed, _split_code(split), index, stream])


def _sample_object(rng: np.random.Generator) -> _Object:
    return _Object(
        shape=int(rng.integers(len(SHAPES))),
        colour=int(rng.integers(len(COLOURS))),
        size=int(rng.integers(len(SIZES))),
    )


def _sample_scene(rng: np.random.Generator, two_object_prob: float) -> _Scene:
    background = int(rng.integers(len(BACKGROUNDS)))
    texture = int(rng.integers(len(TEXTURES)))
    first = _sample_object(rng)
    if rng.random() >= two_object_prob:
        return _Scene((first,), -1, background, texture)
    second = _sample_object(rng)
    # Distinct colour+shape keeps "the red circle" unambiguous when both are mentioned.
    while (second.shape, second.colour) == (first.shape, first.colour):
        second = _sample_object(rng)
    return _Scene((first, second), int(rng.integers(len(RELATIONS))), background, texture)


def _object_key(obj: _Object) -> str:
    return f"{COLOURS[obj.colour]} {SIZES[obj.size]} {SHAPES[obj.shape]}"


def _scene_key(objects: tuple[_Object, ...], relation: int) -> str:
    """Canonical shared key, e.g. ``"red small circle | left-of | blue large square"``."""
    if len(objects) == 1:
        return _object_key(objects[0])
    return f"{_object_key(objects[0])} | {RELATIONS[relation]} | {_object_key(objects[1])}"


def _sample_caption(rng: np.random.Generator, scene: _Scene, tie_prob: float) -> _CaptionChoice:
    n_obj = len(scene.objects)
    # Every draw happens whatever the branch, so changing confound only changes tied fillers.
    template = int(rng.integers(len(TEMPLATES)))
    free_filler = int(rng.integers(len(FILLERS)))
    tied = rng.random() < tie_prob
    swapped = int(rng.integers(2))
    relation_syn = int(rng.integers(2))
    shape_syn = tuple(int(rng.integers(len(SHAPE_SYNONYMS[o.shape]))) for o in scene.objects)
    size_syn = tuple(int(rng.integers(len(SIZE_SYNONYMS[o.size]))) for o in scene.objects)
    return _CaptionChoice(
        template=template,
        filler=scene.background % len(FILLERS) if tied else free_filler,
        swapped=swapped if n_obj == 2 else -1,
        shape_syn=shape_syn,
        size_syn=size_syn,
        relation_syn=relation_syn if n_obj == 2 else -1,
    )


def _object_phrase(obj: _Object, shape_syn: int, size_syn: int) -> str:
    # Colour sits right before the shape noun so colour and shape bind unambiguously.
    size_word = SIZE_SYNONYMS[obj.size][size_syn]
    return f"a {size_word} {COLOURS[obj.colour]} {SHAPE_SYNONYMS[obj.shape][shape_syn]}"


def _render_caption(scene: _Scene, choice: _CaptionChoice) -> str:
    """The caption text for ``scene`` under the caption-exclusive ``choice``."""
    phrases = [
        _object_phrase(obj, choice.shape_syn[k], choice.size_syn[k]) for k, obj in enumerate(scene.objects)
    ]
    if len(phrases) == 1:
        text = phrases[0]
    else:
        direction = _INVERSE if choice.swapped else _FORWARD
        relation = RELATION_PHRASES[direction[scene.relation]][choice.relation_syn]
        first, second = (phrases[1], phrases[0]) if choice.swapped else (phrases[0], phrases[1])
        text = f"{first} {relation} {second}"
    return TEMPLATES[choice.template].format(scene=text, filler=FILLERS[choice.filler])


def _alternation(words: Iterable[str]) -> str:
    # Longest first, so a regex alternation never stops at a shorter prefix.
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_SIZE_OF = {w: k for k, syn in enumerate(SIZE_SYNONYMS) for w in syn}
_SHAPE_OF = {w: k for k, syn in enumerate(SHAPE_SYNONYMS) for w in syn}
_COLOUR_OF = {w: k for k, w in enumerate(COLOURS)}
_OBJECT_RE = re.compile(
    rf"\ba ({_alternation(_SIZE_OF)}) ({_alternation(_COLOUR_OF)}) ({_alternation(_SHAPE_OF)})\b"
)
# phrase -> (canonical relation index, True when the caption names object 1 first)
_RELATION_OF = {
    phrase: (RELATIONS.index(canon), name in _INVERSE)
    for name, canon in zip(_FORWARD + _INVERSE, RELATIONS + RELATIONS, strict=True)
    for phrase in RELATION_PHRASES[name]
}


def parse_caption(caption: str) -> str:
    """Recover the canonical shared key a caption describes; ``ValueError`` if it cannot."""
    matches = list(_OBJECT_RE.finditer(caption))
    objects = [
        _Object(shape=_SHAPE_OF[m.group(3)], colour=_COLOUR_OF[m.group(2)], size=_SIZE_OF[m.group(1)])
        for m in matches
    ]
    if len(objects) == 1:
        return _scene_key((objects[0],), -1)
    if len(objects) != 2:
        raise ValueError(f"expected one or two object phrases in {caption!r}")
    between = caption[matches[0].end() : matches[1].start()].strip()
    if between not in _RELATION_OF:
        raise ValueError(f"unknown relation phrase {between!r} in {caption!r}")
    relation, inverse = _RELATION_OF[between]
    ordered = (objects[1], objects[0]) if inverse else (objects[0], objects[1])
    return _scene_key(ordered, relation)


def _shift(rgb: tuple[int, int, int], delta: np.ndarray) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + d, 0, 255)) for c, d in zip(rgb, delta, strict=True))
    return (r, g, b)


def _draw_texture(
    draw: ImageDraw.ImageDraw, texture: int, base: tuple[int, int, int], size: int, rng: np.random.Generator
) -> None:
    sign = 1 if rng.random() < 0.5 else -1
    ink = _shift(base, np.full(3, sign * TEXTURE_CONTRAST))
    period = max(4, size // 8)
    phase = int(rng.integers(period))
    if TEXTURES[texture] == "stripes":
        width = max(1, size // 32)
        vertical = rng.random() < 0.5
        for p in range(phase - period, size, period):
            box = (p, 0, p + width - 1, size) if vertical else (0, p, size, p + width - 1)
            draw.rectangle(box, fill=ink)
    elif TEXTURES[texture] == "dots":
        r = max(1.0, size / 64)
        for y in range(phase - period, size + period, period):
            for x in range(phase - period, size + period, period):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=ink)


def _draw_clutter(
    draw: ImageDraw.ImageDraw, base: tuple[int, int, int], size: int, rng: np.random.Generator
) -> int:
    n = int(rng.integers(2, 6))
    for _ in range(n):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.04 * size, 0.12 * size, 2)
        ink = _shift(base, rng.integers(-CLUTTER_CONTRAST, CLUTTER_CONTRAST + 1, 3))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=ink)
    return n


def _object_centres(n_objects: int, relation: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Centres as fractions of the image side; jitter small enough that objects never touch."""
    if n_objects == 1:
        x, y = 0.5 + rng.uniform(-0.08, 0.08, 2)
        return [(float(x), float(y))]
    along = (0.26 + rng.uniform(-0.04, 0.04), 0.74 + rng.uniform(-0.04, 0.04))
    across = 0.5 + rng.uniform(-0.08, 0.08, 2)
    if RELATIONS[relation] == "left-of":
        return [(float(along[k]), float(across[k])) for k in range(2)]
    return [(float(across[k]), float(along[k])) for k in range(2)]


def _draw_object(draw: ImageDraw.ImageDraw, obj: _Object, cx: float, cy: float, r: float) -> None:
    ink = COLOUR_RGB[obj.colour]
    name = SHAPES[obj.shape]
    if name == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=ink)
    elif name == "square":
        h = 0.85 * r  # a full-extent square would look much bigger than the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=ink)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=ink)
    elif name == "cross":
        w = 0.4 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=ink)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=ink)
    else:
        draw.polygon([(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)], fill=ink)


def _draw_image(scene: _Scene, size: int, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Render ``scene`` at ``size``×``size``; returns the image and its number of clutter blobs."""
    base = BACKGROUND_RGB[scene.background]
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    _draw_texture(draw, scene.texture, base, size, rng)
    n_clutter = _draw_clutter(draw, base, size, rng)
    centres = _object_centres(len(scene.objects), scene.relation, rng)
    for obj, (cx, cy) in zip(scene.objects, centres, strict=True):
        _draw_object(draw, obj, cx * size, cy * size, SIZE_EXTENT[obj.size] * size)
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, NOISE_SIGMA, (size, size, 3))
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), n_clutter


def _image_factor_row(scene: _Scene, n_clutter: int) -> dict[str, int]:
    second = scene.objects[1] if len(scene.objects) == 2 else _Object(-1, -1, -1)
    first = scene.objects[0]
    return {
        "background": scene.background,
        "texture": scene.texture,
        "n_objects": len(scene.objects),
        "shape0": first.shape,
        "colour0": first.colour,
        "size0": first.size,
        "shape1": second.shape,
        "colour1": second.colour,
        "size1": second.size,
        "relation": scene.relation,
        "n_clutter": n_clutter,
    }


def _caption_factor_row(choice: _CaptionChoice, image: int) -> dict[str, int]:
    def pick(values: tuple[int, ...], k: int) -> int:
        return values[k] if k < len(values) else -1

    return {
        "template": choice.template,
        "filler": choice.filler,
        "image": image,
        "swapped": choice.swapped,
        "shape_syn0": pick(choice.shape_syn, 0),
        "shape_syn1": pick(choice.shape_syn, 1),
        "size_syn0": pick(choice.size_syn, 0),
        "size_syn1": pick(choice.size_syn, 1),
        "relation_syn": choice.relation_syn,
    }


def _columns(rows: list[dict[str, int]], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {name: np.array([row[name] for row in rows], dtype=np.int64) for name in names}


def _generate_split(
    out: Path, split: str, n_images: int, cfg: SynthConfig, progress: bool
) -> tuple[list[tuple[str, str]], dict[str, np.ndarray]]:
    """Write the split's PNGs; return its CSV rows and factor arrays (not yet written)."""
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    tie_prob = cfg.confound if split == "train" else 0.0
    csv_rows: list[tuple[str, str]] = []
    image_rows: list[dict[str, int]] = []
    caption_rows: list[dict[str, int]] = []
    image_keys: list[str] = []
    caption_keys: list[str] = []
    for i in tqdm(range(n_images), desc=f"synth {split}", unit="img", disable=not progress):
        image_rng = _rng(cfg.seed, split, i, 0)
        scene = _sample_scene(image_rng, cfg.two_object_prob)
        img, n_clutter = _draw_image(scene, cfg.image_size, image_rng)
        name = f"{i:06d}.png"
        img.save(image_dir / name, format="PNG", compress_level=1)
        key = _scene_key(scene.objects, scene.relation)
        image_rows.append(_image_factor_row(scene, n_clutter))
        image_keys.append(key)
        caption_rng = _rng(cfg.seed, split, i, 1)
        for _ in range(cfg.captions_for(split)):
            choice = _sample_caption(caption_rng, scene, tie_prob)
            csv_rows.append((f"images/{split}/{name}", _render_caption(scene, choice)))
            caption_rows.append(_caption_factor_row(choice, i))
            caption_keys.append(key)
    _remove_stale_images(image_dir, n_images)
    arrays = {f"img_{k}": v for k, v in _columns(image_rows, IMAGE_FACTOR_NAMES).items()}
    arrays |= {f"cap_{k}": v for k, v in _columns(caption_rows, CAPTION_FACTOR_NAMES).items()}
    arrays["image_shared_key"] = np.array(image_keys, dtype=np.str_)
    arrays["caption_shared_key"] = np.array(caption_keys, dtype=np.str_)
    return csv_rows, arrays


def _remove_stale_images(image_dir: Path, n_images: int) -> None:
    # A previous, larger run into the same folder must not leave unreferenced images behind.
    for path in image_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        if int(path.stem) >= n_images:
            path.unlink()


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("image", "caption"))
            writer.writerows(rows)

    atomic_write(path, write)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps zip members with the current time; fixed timestamps keep the file
    # byte-identical across runs with the same seed.
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = BytesIO()
                np.lib.format.write_array(buf, arrays[name], allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, buf.getvalue())

    atomic_write(path, write)


def vocabularies() -> dict[str, object]:
    """Everything needed to decode factor ids, as stored under ``"vocab"`` in ``synth.json``."""
    return {
        "shapes": list(SHAPES),
        "shape_synonyms": [list(s) for s in SHAPE_SYNONYMS],
        "colours": list(COLOURS),
        "colour_rgb": [list(c) for c in COLOUR_RGB],
        "sizes": list(SIZES),
        "size_synonyms": [list(s) for s in SIZE_SYNONYMS],
        "relations": list(RELATIONS),
        "relation_phrases": {k: list(v) for k, v in RELATION_PHRASES.items()},
        "backgrounds": list(BACKGROUNDS),
        "background_rgb": [list(c) for c in BACKGROUND_RGB],
        "textures": list(TEXTURES),
        "templates": list(TEMPLATES),
        "fillers": list(FILLERS),
    }


def generate(out_dir: str | Path, cfg: SynthConfig, progress: bool = True) -> Path:
    """Write the dataset for ``cfg`` under ``out_dir`` and return that folder.

    ``synth.json`` is removed first and written last, so its presence marks a complete
    dataset even if an earlier run into the same folder was interrupted.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.json").unlink(missing_ok=True)
    for split, n_images in cfg.split_sizes().items():
        rows, arrays = _generate_split(out, split, n_images, cfg, progress)
        _write_npz(out / f"factors_{split}.npz", arrays)
        _write_csv(out / f"{split}.csv", rows)
    atomic_write_json(
        out / "synth.json", {**asdict(cfg), "format_version": FORMAT_VERSION, "vocab": vocabularies()}
    )
    return out


def load_config(root: str | Path) -> SynthConfig:
    """The :class:`SynthConfig` recorded in ``root/synth.json``."""
    meta = json.loads((Path(root) / "synth.json").read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported synth format_version {meta.get('format_version')!r}")
    # Datasets written before a field existed were generated with its default.
    return SynthConfig(**{f.name: meta[f.name] for f in fields(SynthConfig) if f.name in meta})


def load_factors(root: str | Path, split: str) -> SplitFactors:
    """Read the ground-truth factors of ``split`` written by :func:`generate`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with np.load(Path(root) / f"factors_{split}.npz", allow_pickle=False) as data:
        return SplitFactors(
            image_shared_key=[str(k) for k in data["image_shared_key"]],
            caption_shared_key=[str(k) for k in data["caption_shared_key"]],
            image_factors={k: data[f"img_{k}"] for k in IMAGE_FACTOR_NAMES},
            caption_factors={k: data[f"cap_{k}"] for k in CAPTION_FACTOR_NAMES},
        )


def _parser() -> argparse.ArgumentParser:
    defaults = SynthConfig()
    p = argparse.ArgumentParser(prog="disncl synth", description="Generate the synthetic benchmark.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=defaults.n_train)
    p.add_argument("--n-val", type=int, default=defaults.n_val)
    p.add_argument("--n-test", type=int, default=defaults.n_test)
    p.add_argument("--captions-per-image", type=int, default=defaults.captions_per_image)
    p.add_argument("--train-captions-per-image", type=int, default=defaults.train_captions_per_image,
                   help="captions per training image (default 0: the same as --captions-per-image)")
    p.add_argument("--image-size", type=int, default=defaults.image_size)
    p.add_argument("--two-object-prob", type=float, default=defaults.two_object_prob)
    p.add_argument(
        "--confound",
        type=float,
        default=defaults.confound,
        help="probability a train caption's filler is tied to its image background",
    )
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m disncl synth``)."""
    args = _parser().parse_args(argv)
    try:
        cfg = SynthConfig(
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            captions_per_image=args.captions_per_image,
            train_captions_per_image=args.train_captions_per_image,
            image_size=args.image_size,
            two_object_prob=args.two_object_prob,
            confound=args.confound,
            seed=args.seed,
        )
    except ValueError as exc:
        _parser().error(str(exc))
    start = time.perf_counter()
    out = generate(args.out, cfg, progress=not args.no_progress)
    n_images = sum(cfg.split_sizes().values())
    n_captions = sum(n * cfg.captions_for(split) for split, n in cfg.split_sizes().items())
    print(
        f"wrote {n_images} images, {n_captions} captions to {out} "
        f"in {time.perf_counter() - start:.1f}s"
    )
    return 0
