"""WebDataset-style tar shards: packing, indexing, on-demand decoding, bad samples, training from shards."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_overrides
from PIL import Image

from disncl.cli import main
from disncl.config import DataConfig, load_config
from disncl.data.dataset import load_split
from disncl.data.images import ImageArray, load_image
from disncl.data.shards import ShardedCaptions, ShardError, ShardImages, expand_braces, index_shards, resolve_shards
from disncl.data.validate import DataError
from disncl.train.evaluate import evaluate_run
from disncl.train.loop import train


@pytest.fixture(scope="module")
def shard_dir(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_synth's three splits packed 10 images per shard with the real CLI (train: 48 images, 5 shards)."""
    out = tmp_path_factory.mktemp("shards")
    for split in ("train", "val", "test"):
        argv = ["shards", "--from", str(tiny_synth), "--split", split, "--out", str(out), "--per-shard", "10"]
        assert main([*argv, "--no-progress"]) == 0
    return out


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_shards_read_back_the_folder_split_pixel_for_pixel(tiny_synth: Path, shard_dir: Path) -> None:
    folder = load_split(DataConfig(root=str(tiny_synth)), "train")
    sharded = load_split(DataConfig(shards=str(shard_dir / "{split}-*.tar")), "train")
    assert isinstance(sharded, ShardedCaptions)
    assert sorted(p.name for p in shard_dir.glob("train-*.tar")) == [f"train-0000{i}.tar" for i in range(5)]
    assert sharded.captions == folder.captions
    np.testing.assert_array_equal(sharded.cap2img, folder.cap2img)
    assert sharded.image_paths[11] == "train-00001.tar/000011.png"
    assert sharded.report.ok and sharded.report.images_read == 48 and sharded.report.captions_read == 240

    expected = ImageArray.from_dataset(folder, 32, progress=False).pixels
    images = ShardImages(sharded.locations, 32)
    assert len(images) == 48 and images.size == 32
    np.testing.assert_array_equal(images[np.arange(48)], expected)
    np.testing.assert_array_equal(images[7], expected[7])
    np.testing.assert_array_equal(images[-1], expected[-1])
    np.testing.assert_array_equal(images[9:13], expected[9:13])
    batch = np.array([30, 2, 30, 47, 0, 2])  # a noisy batch names some images twice
    np.testing.assert_array_equal(images[batch], expected[batch])
    assert images[np.array([], dtype=np.int64)].shape == (0, 32, 32, 3)
    with pytest.raises(IndexError, match="out of range"):
        images[48]
    with pytest.raises(IndexError, match=r"\[-48, 48\)"):
        images[np.array([1, 48])]

    # The trainer thread and the evaluation encoder may read at once: each gets the right pixels.
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, images[np.arange(k, 48, 2)]))
               for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(results[0], expected[0::2])
    np.testing.assert_array_equal(results[1], expected[1::2])
    with pytest.raises(ShardError, match="lives inside a tar shard"):
        sharded.image_path(0)


def test_brace_glob_and_folder_patterns_name_the_same_shards(shard_dir: Path, tmp_path: Path) -> None:
    assert expand_braces("d/{split}-{00000..00002}.tar") == [f"d/{{split}}-0000{i}.tar" for i in range(3)]
    assert expand_braces("{a,b}/{8..10}") == ["a/8", "a/9", "a/10", "b/8", "b/9", "b/10"]
    expected = [shard_dir / f"train-0000{i}.tar" for i in range(5)]
    assert resolve_shards(str(shard_dir / "train-{00000..00004}.tar")) == expected
    assert resolve_shards(str(shard_dir / "train-*.tar")) == expected
    folder = tmp_path / "train"
    folder.mkdir()
    for p in expected:
        (folder / p.name).write_bytes(p.read_bytes())
    assert [p.name for p in resolve_shards(str(folder))] == [p.name for p in expected]

    with pytest.raises(ShardError, match=r"no file at .*train-00005\.tar, .*train-00007\.tar and 1 more"):
        resolve_shards(str(shard_dir / "train-{00002..00008}.tar"))
    with pytest.raises(ShardError, match="no file at .*nothing-\\*"):
        resolve_shards(str(shard_dir / "nothing-*.tar"))
    with pytest.raises(ShardError, match="holds no .tar files"):
        resolve_shards(str(tmp_path / "train" / ".."))


def test_bad_samples_are_skipped_and_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An img2dataset-style shard (KEY.txt captions, metadata KEY.json) with every kind of bad sample."""
    rng = np.random.default_rng(0)
    pics = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(5)]
    jpeg = _encode(pics[0], "JPEG")
    meta = json.dumps({"url": "http://x", "caption": "metadata caption", "status": "success"}).encode()
    shard = _write_tar(tmp_path / "train-00000.tar", [
        ("a/000.jpg", jpeg), ("a/000.txt", b"a red square\n"), ("a/000.json", meta), ("a/000.cls", b"3"),
        ("001.png", _encode(pics[1], "PNG")), ("001.json", json.dumps({"captions": ["one", " two "]}).encode()),
        ("002.jpg", _encode(pics[2], "JPEG")), ("002.json", meta),
        ("003.jpg", b"\xff\xd8 not a jpeg at all"), ("003.txt", b"corrupt image"),
        ("004.jpg", jpeg[: len(jpeg) // 2]), ("004.txt", b"truncated image"),
        ("005.jpg", jpeg),
        ("006.txt", b"caption without an image"),
        ("007.jpg", jpeg), ("007.txt", b"  \n"),
        ("008.jpg", jpeg), ("008.json", b"{not json"),
        ("009.jpg", jpeg), ("009.txt", "caf\xe9".encode("latin-1")),
        ("010.png", _encode(pics[3], "PNG")), ("010.webp", _encode(pics[4], "WEBP")), ("010.txt", b"two images"),
    ])
    ds = load_split(DataConfig(shards=str(tmp_path / "{split}-00000.tar")), "train", report_dir=tmp_path)

    assert ds.captions == ["a red square", "one", "two", "metadata caption", "two images"]
    np.testing.assert_array_equal(ds.cap2img, [0, 1, 1, 2, 3])
    assert ds.image_paths == ["train-00000.tar/a/000.jpg", "train-00000.tar/001.png", "train-00000.tar/002.jpg",
                              "train-00000.tar/010.png"]
    report = ds.report
    assert report.counts == {"empty_caption": 1, "not_utf8": 1, "malformed_row": 1, "missing_image": 1,
                             "undecodable_image": 2, "no_captions": 1, "duplicate_image": 1}
    assert (report.images_read, report.images_kept, report.captions_kept) == (11, 4, 5)
    assert any("003" in e and "cannot decode" in e for e in report.examples["undecodable_image"])
    assert "010.png, not 010.webp" in report.examples["duplicate_image"][0]
    err = capsys.readouterr().err
    assert "kept 4 of 11 images" in err and "image undecodable or truncated" in err and "006" in err
    saved = json.loads((tmp_path / "data_report_train.json").read_text())
    assert saved["skipped"]["undecodable_image"] == 2 and saved["images"] == {"read": 11, "kept": 4}

    # The kept images decode exactly as the same bytes do from a file.
    (tmp_path / "001.png").write_bytes(_encode(pics[1], "PNG"))
    (tmp_path / "000.jpg").write_bytes(jpeg)
    images = ShardImages(ds.locations, 24)
    np.testing.assert_array_equal(images[1], load_image(tmp_path / "001.png", 24))
    np.testing.assert_array_equal(images[0], load_image(tmp_path / "000.jpg", 24))

    with pytest.raises(DataError, match="Strict mode.*data.strict=false"):
        load_split(DataConfig(shards=str(shard.parent / "{split}-00000.tar"), strict=True), "train")


def test_a_shard_cut_short_keeps_its_whole_samples(shard_dir: Path, tmp_path: Path) -> None:
    src = shard_dir / "train-00000.tar"
    with tarfile.open(src) as tf:
        last_image = [m for m in tf.getmembers() if m.name.endswith(".png")][-1]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(src.read_bytes()[: last_image.offset_data + last_image.size // 2])
    ds = index_shards([cut])
    assert ds.n_images == 9 and ds.image_paths[-1] == "cut.tar/000008.png"
    assert ds.report.counts == {"undecodable_image": 1}
    assert "000009.png is cut off: the shard is truncated" in ds.report.examples["undecodable_image"][0]


def test_unusable_shards_and_settings_are_refused_with_a_clear_message(shard_dir: Path, tmp_path: Path) -> None:
    gz = tmp_path / "gz.tar"
    gz.write_bytes(gzip.compress((shard_dir / "train-00000.tar").read_bytes()))
    with pytest.raises(ShardError, match="gzip-compressed.*decompress it"):
        index_shards([gz])
    junk = tmp_path / "junk.tar"
    junk.write_text("not a tar file\n" * 50)
    with pytest.raises(ShardError, match="junk.tar is not a tar file"):
        index_shards([junk])
    empty = _write_tar(tmp_path / "empty.tar", [])
    with pytest.raises(ShardError, match=r"no usable sample.*0 samples read.*the shards are empty"):
        index_shards([empty])
    useless = _write_tar(tmp_path / "useless.tar", [("x.jpg", b"junk"), ("x.txt", b"c"), ("y.txt", b"c")])
    with pytest.raises(ShardError, match=r"(?s)no usable sample.*2 samples read.*x: cannot decode.*y: no image member"):
        index_shards([useless])

    with pytest.raises(ShardError, match=r"must contain \{split\}"):
        load_split(DataConfig(shards=str(shard_dir / "train-*.tar")), "train")
    with pytest.raises(ShardError, match="set exactly one source"):
        load_split(DataConfig(shards=str(shard_dir / "{split}-*.tar"), root=str(shard_dir)), "train")


def test_shard_images_hold_no_pixels(tmp_path: Path) -> None:
    """Reading every batch allocates about one batch, not the split; the object itself pickles to bytes per image."""
    n, size, batch = 512, 64, 16
    rng = np.random.default_rng(1)
    members = []
    for i in range(n):
        members += [(f"{i:04d}.png", _encode(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "PNG")),
                    (f"{i:04d}.txt", f"caption {i}".encode())]
    ds = index_shards([_write_tar(tmp_path / "big.tar", members)])
    full = ImageArray.nbytes_estimate(n, size)  # 6.3 MB as an in-memory ImageArray; one batch is 197 kB
    images = ShardImages(ds.locations, size)
    assert len(pickle.dumps(images)) < full / 100

    tracemalloc.start()
    try:
        total = 0
        for start in range(0, n, batch):
            total += int(images[np.arange(start, start + batch)].sum() > 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        images.close()
    assert total == n // batch
    assert peak < full / 4, f"peak {peak} bytes while streaming vs {full} for the whole split"
    assert len(pickle.loads(pickle.dumps(images))[np.arange(3)]) == 3


def _val_recall(run: Path) -> list[dict]:
    """Per epoch, the recall keys both runs report (the folder run adds semantic recall from synth factors)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{space: {k: v for k, v in rec.items() if not k.startswith("semantic")} for space, rec in r["val"].items()}
            for r in records]


def test_training_from_shards_matches_training_from_the_folder(tiny_synth: Path, shard_dir: Path,
                                                               tmp_path: Path) -> None:
    folder_run, shard_run = tmp_path / "folder", tmp_path / "shards"
    # One epoch of 3 steps keeps the test fast; the rest of the loop is the same code whatever the image source.
    quick = {"train.epochs": 1, "train.batch_size": 80}
    train(load_config(None, tiny_overrides(tiny_synth, folder_run, **quick)), progress=False)
    from_shards = {**quick, "data.root": "", "data.shards": str(shard_dir / "{split}-*.tar")}
    train(load_config(None, tiny_overrides(tiny_synth, shard_run, **from_shards)), progress=False)

    np.testing.assert_array_equal(np.load(shard_run / "noise_index.npy"), np.load(folder_run / "noise_index.npy"))
    # Same pairs, same pixels, same seed: the same model, so validation recall is identical, not merely close.
    assert _val_recall(shard_run) == _val_recall(folder_run)
    assert _val_recall(shard_run)[-1]["full"]["rsum"] > 0

    result = evaluate_run(shard_run, "best", None, "cpu", detection=False, progress=False)
    assert result["split"] == "test" and 0 < result["retrieval"]["full"]["rsum"] <= 600


def test_the_writer_refuses_to_mix_with_old_shards(tiny_synth: Path, shard_dir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["shards", "--from", str(tiny_synth), "--split", "val", "--no-progress"]
    assert main([*argv, "--out", str(shard_dir), "--per-shard", "10"]) == 2
    assert "already holds 2 'val' shard(s)" in capsys.readouterr().err
    # Same input, same bytes: shards carry no timestamps or owners.
    assert main([*argv, "--out", str(tmp_path), "--per-shard", "10"]) == 0
    assert (tmp_path / "val-00001.tar").read_bytes() == (shard_dir / "val-00001.tar").read_bytes()
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "x"), "--per-shard", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
