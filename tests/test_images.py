"""Image decoding to fixed-size RGB uint8 arrays, and the in-memory ImageArray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from disncl.data.images import ImageArray, ImageDecodeError, load_image
from disncl.data.pairs import CaptionedImages

SIZE = 16


def _save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def _gradient(width: int, height: int) -> np.ndarray:
    """An RGB image whose colour encodes position, so crops are checkable."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    return np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """One small file per colour mode / format the decoder must handle."""
    rgb = Image.fromarray(_gradient(40, 30))
    grey16 = Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    assert grey16.mode == "I;16"
    return {
        "rgb_png": _save(rgb, tmp_path / "rgb.png"),
        "rgb_jpeg": _save(rgb, tmp_path / "rgb.jpg", quality=95),
        "l_png": _save(rgb.convert("L"), tmp_path / "l.png"),
        "l_jpeg": _save(rgb.convert("L"), tmp_path / "l.jpg"),
        "la_png": _save(rgb.convert("LA"), tmp_path / "la.png"),
        "rgba_png": _save(rgb.convert("RGBA"), tmp_path / "rgba.png"),
        "p_png": _save(rgb.convert("P"), tmp_path / "p.png"),
        "p_transparent_gif": _save(rgb.convert("P"), tmp_path / "p.gif", transparency=0),
        "cmyk_jpeg": _save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg"),
        "i16_png": _save(grey16, tmp_path / "i16.png"),
        "bw_png": _save(rgb.convert("1"), tmp_path / "bw.png"),
    }


def test_every_mode_decodes_to_rgb_uint8(tmp_path: Path) -> None:
    for name, path in _inputs(tmp_path).items():
        pixels = load_image(path, SIZE)
        assert pixels.shape == (SIZE, SIZE, 3), name
        assert pixels.dtype == np.uint8, name


def test_alpha_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    path = _save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "clear.png")
    assert (load_image(path, 8) == 255).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey = np.full((20, 20), 32768, dtype=np.uint16)
    path = _save(Image.fromarray(grey), tmp_path / "mid.png")
    pixels = load_image(path, 8)
    assert np.all(np.abs(pixels.astype(int) - 128) <= 1)


def test_non_square_is_resized_on_short_side_then_centre_cropped(tmp_path: Path) -> None:
    # Wide image: left third red, middle third green, right third blue; the crop keeps the middle.
    wide = np.zeros((32, 96, 3), dtype=np.uint8)
    wide[:, :32, 0] = 255
    wide[:, 32:64, 1] = 255
    wide[:, 64:, 2] = 255
    pixels = load_image(_save(Image.fromarray(wide), tmp_path / "wide.png"), SIZE)
    assert pixels.shape == (SIZE, SIZE, 3)
    assert (pixels[:, 2:-2, 1] == 255).all()
    assert (pixels[:, 2:-2, [0, 2]] == 0).all()

    tall = np.zeros((96, 32, 3), dtype=np.uint8)
    tall[32:64] = 255
    pixels = load_image(_save(Image.fromarray(tall), tmp_path / "tall.png"), SIZE)
    assert (pixels[2:-2] == 255).all()


def test_same_size_image_is_unchanged(tmp_path: Path) -> None:
    exact = _gradient(SIZE, SIZE)
    assert np.array_equal(load_image(_save(Image.fromarray(exact), tmp_path / "x.png"), SIZE), exact)


def test_large_jpeg_uses_reduced_decoding_but_keeps_geometry(tmp_path: Path) -> None:
    path = _save(Image.fromarray(_gradient(640, 480)), tmp_path / "big.jpg", quality=95)
    pixels = load_image(path, 64)
    assert pixels.shape == (64, 64, 3)
    # The gradient's centre crop spans the middle three quarters of x and all of y.
    assert abs(int(pixels[32, 0, 0]) - 32) <= 8
    assert abs(int(pixels[32, -1, 0]) - 223) <= 8
    assert pixels[0, 32, 1] <= 8 and pixels[-1, 32, 1] >= 247


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file_raises_with_path(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = _save(noise, tmp_path / f"cut{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, SIZE)
    assert str(path) in str(info.value)
    assert info.value.paths == [str(path)]


def test_corrupt_and_missing_files_raise_with_path(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image")
    with pytest.raises(ImageDecodeError, match=r"corrupt.png: UnidentifiedImageError"):
        load_image(corrupt, SIZE)
    with pytest.raises(ImageDecodeError, match=r"missing.png: file not found"):
        load_image(tmp_path / "missing.png", SIZE)
    assert issubclass(ImageDecodeError, ValueError)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_size(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="image size must be a positive integer"):
        load_image(tmp_path / "x.png", bad)  # type: ignore[arg-type]


def _dataset(tmp_path: Path, n: int) -> CaptionedImages:
    names = []
    for i in range(n):
        colour = np.full((10 + i, 12, 3), i * 20, dtype=np.uint8)
        Image.fromarray(colour).save(tmp_path / f"{i}.png")
        names.append(f"{i}.png")
    return CaptionedImages(
        root=tmp_path,
        image_paths=names,
        captions=[f"cap {i}" for i in range(n)],
        cap2img=np.arange(n, dtype=np.int64),
    )


def test_image_array_from_dataset_and_indexing(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 7)
    images = ImageArray.from_dataset(ds, 8, progress=False, num_threads=3)
    assert len(images) == 7
    assert images.size == 8
    assert images.pixels.shape == (7, 8, 8, 3)
    assert images[3].shape == (8, 8, 3)
    assert (images[3] == 60).all()
    batch = images[np.array([6, 0, 6])]
    assert batch.shape == (3, 8, 8, 3)
    assert [int(img[0, 0, 0]) for img in batch] == [120, 0, 120]
    assert ImageArray.nbytes_estimate(7, 8) == images.pixels.nbytes


def test_image_array_reports_every_bad_file(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 4)
    (tmp_path / "1.png").write_bytes(b"garbage")
    (tmp_path / "3.png").unlink()
    with pytest.raises(ImageDecodeError, match="2 of 4 images could not be decoded") as info:
        ImageArray.from_dataset(ds, 8, progress=False)
    assert info.value.paths == [str(tmp_path / "1.png"), str(tmp_path / "3.png")]


def test_image_array_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    ds = _dataset(tmp_path, 3)
    cache_dir = tmp_path / "cache"
    first = ImageArray.from_dataset(ds, 8, progress=False, cache_dir=cache_dir)
    (cache_file,) = cache_dir.glob("*.npy")
    assert np.array_equal(np.load(cache_file), first.pixels)

    # A cache hit does not touch the images: corrupt the cached copy to see it is what comes back.
    np.save(cache_file, np.zeros_like(first.pixels))
    assert (ImageArray.from_dataset(ds, 8, progress=False, cache_dir=cache_dir).pixels == 0).all()

    # Rewriting an image changes its size/mtime stamp, so the cache is rebuilt under a new name.
    Image.fromarray(np.full((10, 12, 3), 250, dtype=np.uint8)).save(tmp_path / "0.png", compress_level=0)
    rebuilt = ImageArray.from_dataset(ds, 8, progress=False, cache_dir=cache_dir)
    assert (rebuilt[0] == 250).all()
    assert len(list(cache_dir.glob("*.npy"))) == 2
    assert ImageArray.from_dataset(ds, 4, progress=False, cache_dir=cache_dir).pixels.shape == (3, 4, 4, 3)


def test_image_array_rejects_bad_arrays_and_threads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, size, size, 3\)"):
        ImageArray(np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="num_threads must be a positive integer"):
        ImageArray.from_dataset(_dataset(tmp_path, 1), 8, progress=False, num_threads=0)
