"""SCAN "precomp" features (issue #4 §3): the loader, the region/GRU towers, training, eval and checkpoints.

The files are generated here in the real format: ``{split}_ims.npy`` of (images, 36, 2048) region
features in which a few regions carry an object and a colour prototype, and ``{split}_caps.txt``
with five captions per image naming that object and colour, so a model can learn the match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from disncl.config import DataConfig, load_config
from disncl.data.dataset import load_split, resolve_noise
from disncl.data.formats import CaptionFileError
from disncl.data.noise import NoiseIndex
from disncl.data.precomp import PrecompError, PrecompSplit, RegionFeatures, load_precomp
from disncl.eval.splits import prepare_split
from disncl.models.checkpoint import build_model, load_model, save_model
from disncl.models.config import ModelConfig
from disncl.models.tokenizer import tokenize
from disncl.train.evaluate import evaluate_run
from disncl.train.loop import train

OBJECTS = ("dog", "cat", "car", "tree", "boat", "horse", "chair", "bird")
COLOURS = ("red", "blue", "green", "white")
TEMPLATES = ("a {c} {o}", "the {o} is {c}", "a photo of a {c} {o}", "{c} {o} in view", "there is a {o} that is {c}")
REGIONS, DIM = 36, 2048


def write_split(root: Path, split: str, n: int, seed: int, dtype: type = np.float32) -> None:
    """One precomp split: object prototype in regions 0-3, colour prototype in regions 4-5, noise elsewhere."""
    rng = np.random.default_rng(seed)
    obj_proto = np.random.default_rng(100).normal(size=(len(OBJECTS), DIM))
    col_proto = np.random.default_rng(101).normal(size=(len(COLOURS), DIM))
    obj, col = rng.integers(len(OBJECTS), size=n), rng.integers(len(COLOURS), size=n)
    feats = np.abs(rng.normal(size=(n, REGIONS, DIM))) * 0.2
    feats[:, :4] += obj_proto[obj][:, None]
    feats[:, 4:6] += col_proto[col][:, None]
    np.save(root / f"{split}_ims.npy", feats.astype(dtype))
    lines = [t.format(c=COLOURS[c], o=OBJECTS[o]) for o, c in zip(obj, col, strict=True) for t in TEMPLATES]
    (root / f"{split}_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: on the shared 2-core machine one DisNCL run took 2.6 s with one intra-op thread, 49 s with two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def precomp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train (stored as float16, as some releases do) / 10 dev / 10 test images, 5 captions each,
    and an NCR-style per-caption noise index (no sidecar) with 20 % of the captions shuffled."""
    root = tmp_path_factory.mktemp("f30k_precomp")
    write_split(root, "train", 40, 0, np.float16)
    write_split(root, "dev", 10, 1)
    write_split(root, "test", 10, 2)
    rng = np.random.default_rng(7)
    t2i = np.arange(200) // 5
    moved = rng.choice(200, size=40, replace=False)
    t2i[moved] = rng.permutation(t2i[moved])
    (root / "noise_index").mkdir()
    np.save(root / "noise_index" / "f30k_precomp_0.2.npy", t2i)
    return root


def overrides(root: Path, out: Path, **extra: object) -> list[str]:
    values: dict[str, object] = {
        "data.precomp_root": str(root),
        "data.val_split": "dev",
        "data.noise_file": str(root / "noise_index" / "f30k_precomp_0.2.npy"),
        "model.arch": "precomp",
        "model.embed_dim": 32,
        "model.word_dim": 16,
        "model.mii_dim": 16,
        "model.mei_dim": 16,
        "model.head_hidden": 32,
        "train.batch_size": 8,
        "train.lr": 0.005,
        "train.eval_batch_size": 64,
        "train.epochs": 2,
        "train.warmup_epochs": 1,
        "train.warmup": "fixed",  # as in conftest.tiny_overrides: one epoch cannot make the losses bimodal
        "train.lr_warmup_steps": 2,
        "train.device": "cpu",
        "train.num_threads": 1,
        "train.out": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def tiny_precomp_model(**cfg: object):
    base: dict[str, object] = dict(arch="precomp", region_dim=DIM, embed_dim=16, word_dim=8, mii_dim=8, mei_dim=8,
                                   head_hidden=16)
    base.update(cfg)
    torch.manual_seed(0)
    captions = [t.format(c=c, o=o) for o in OBJECTS for c in COLOURS for t in TEMPLATES]
    return build_model(ModelConfig(**base), captions)  # type: ignore[arg-type]


# --- loading -------------------------------------------------------------------------------------


def test_load_split_reads_the_precomp_layout(precomp: Path) -> None:
    cfg = load_config(None, overrides(precomp, precomp / "unused"))
    train_ds = load_split(cfg.data, "train")
    assert isinstance(train_ds, PrecompSplit)
    assert (train_ds.n_images, train_ds.n_captions, train_ds.captions_per_image) == (40, 200, 5)
    np.testing.assert_array_equal(train_ds.cap2img, np.arange(200) // 5)
    assert train_ds.captions == (precomp / "train_caps.txt").read_text().splitlines()
    assert train_ds.image_paths[3] == "train_ims.npy[3]"
    batch = train_ds.features[np.array([3, 0, 3])]
    stored = np.load(precomp / "train_ims.npy")
    assert batch.dtype == np.float32 and batch.shape == (3, REGIONS, DIM) and batch.flags.writeable
    np.testing.assert_array_equal(batch[0], stored[3].astype(np.float32))
    # The validation split keeps the first data.precomp_val_images images (NCR: 1,000 of dev).
    small = load_config(None, overrides(precomp, precomp / "unused", **{"data.precomp_val_images": 4}))
    dev = load_split(small.data, "dev")
    assert (dev.n_images, dev.n_captions, len(dev.features)) == (4, 20, 4)
    np.testing.assert_array_equal(dev.features[3], np.load(precomp / "dev_ims.npy")[3])
    assert load_split(small.data, "test").n_images == 10  # only the validation split is cut


def test_ncr_noise_index_file_pairs_captions_with_its_images(precomp: Path) -> None:
    train_ds = load_precomp(precomp, "train")
    noise = NoiseIndex.load(precomp / "noise_index" / "f30k_precomp_0.2.npy", train_ds.n_images, train_ds.n_captions)
    assert noise.kind == "caption"
    assert 0.15 < float(np.mean(noise.index != train_ds.cap2img)) <= 0.2


def test_coco_testall_folds_of_1000_images(tmp_path: Path) -> None:
    # Tiny regions keep the 2,000-image file small; the loader does not fix the feature size.
    feats = np.arange(2000, dtype=np.float16).reshape(2000, 1, 1) * np.ones((1, 2, 3), dtype=np.float16)
    np.save(tmp_path / "testall_ims.npy", feats)
    (tmp_path / "testall_caps.txt").write_text("".join(f"caption {i}\n" for i in range(10000)))
    fold1 = load_precomp(tmp_path, "testall@fold1")
    assert (fold1.n_images, fold1.n_captions) == (1000, 5000)
    assert fold1.captions[0] == "caption 5000" and fold1.image_paths[0] == "testall_ims.npy[1000]"
    assert fold1.features[0][0, 0] == 1000.0 and fold1.features[999][0, 0] == 1999.0
    np.testing.assert_array_equal(fold1.cap2img[:6], [0, 0, 0, 0, 0, 1])
    assert load_precomp(tmp_path, "testall").n_images == 2000
    with pytest.raises(PrecompError, match=r"fold 2 needs images 2000\.\.2999 .* 2 whole fold"):
        load_precomp(tmp_path, "testall@fold2")
    with pytest.raises(PrecompError, match="NAME@foldK"):
        load_precomp(tmp_path, "testall@1k")


def test_cc152k_tsv_with_one_caption_per_image(tmp_path: Path) -> None:
    np.save(tmp_path / "train_ims.npy", np.zeros((3, 36, 8), dtype=np.float32))
    rows = ["1001\ta man with a \"hat\"", "1002\tview of the city at night", "1003\tthe dog plays"]
    (tmp_path / "train_caps.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = load_precomp(tmp_path, "train")
    assert ds.captions_per_image == 1
    assert ds.image_paths == ["1001", "1002", "1003"]
    assert ds.captions[0] == 'a man with a "hat"'  # quotes kept: no CSV quote processing
    np.testing.assert_array_equal(ds.cap2img, [0, 1, 2])
    # One caption per image: an index file without a sidecar fits both conventions; data.noise_kind decides.
    np.save(tmp_path / "noise.npy", np.array([0, 2, 1]))
    for kind in ("caption", "image"):
        cfg = DataConfig(precomp_root=str(tmp_path), noise_file=str(tmp_path / "noise.npy"), noise_kind=kind)
        assert resolve_noise(cfg, ds).kind == kind
    (tmp_path / "train_caps.tsv").write_text("1001\ta caption\n1002 no tab here\n1003\tanother\n")
    with pytest.raises(CaptionFileError, match=r"train_caps.tsv, line 2: expected 'image id<TAB>caption'"):
        load_precomp(tmp_path, "train")


def test_bad_precomp_files_give_clear_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "train_ims.npy", np.zeros((4, 36, 8), dtype=np.float32))
    caps = tmp_path / "train_caps.txt"
    caps.write_text("".join(f"caption {i}\n" for i in range(21)))
    with pytest.raises(PrecompError, match=r"has 21 captions for the 4 images .* same number of captions"):
        load_precomp(tmp_path, "train")
    caps.write_text("".join(f"caption {i}\n" for i in range(20)) + "\n\n")  # trailing blank lines are fine
    assert load_precomp(tmp_path, "train").captions_per_image == 5
    caps.write_text("a\nb\n\nd\n")
    with pytest.raises(CaptionFileError, match="line 3: empty caption"):
        load_precomp(tmp_path, "train")
    caps.write_bytes(b"caf\xe9\nb\nc\nd\n")
    with pytest.raises(CaptionFileError, match="not UTF-8"):
        load_precomp(tmp_path, "train")

    caps.write_text("a\nb\nc\nd\n")
    np.save(tmp_path / "train_ims.npy", np.zeros((4, 2048), dtype=np.float32))  # pooled, not regions
    with pytest.raises(PrecompError, match=r"expected region features of shape \(n_images, regions, dim\)"):
        load_precomp(tmp_path, "train")
    np.save(tmp_path / "train_ims.npy", np.zeros((4, 36, 8), dtype=np.int32))
    with pytest.raises(PrecompError, match="float32 or float16"):
        load_precomp(tmp_path, "train")
    np.save(tmp_path / "train_ims.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(PrecompError, match="not a readable .npy array"):
        load_precomp(tmp_path, "train")
    (tmp_path / "train_ims.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(PrecompError, match="not a readable .npy array"):
        load_precomp(tmp_path, "train")

    with pytest.raises(FileNotFoundError, match=r"no region features for split 'dev'.*found in .*\['train'\]"):
        load_precomp(tmp_path, "dev")
    np.save(tmp_path / "dev_ims.npy", np.zeros((1, 36, 8), dtype=np.float32))
    with pytest.raises(FileNotFoundError, match=r"expected dev_caps.txt \(or dev_caps.tsv\)"):
        load_precomp(tmp_path, "dev")
    with pytest.raises(FileNotFoundError, match="data.precomp_root .* is not a folder"):
        load_precomp(tmp_path / "nope", "train")


# --- towers --------------------------------------------------------------------------------------


def test_precomp_model_encodes_and_rejects_wrong_features() -> None:
    model, tok = tiny_precomp_model()
    feats = np.random.default_rng(0).normal(size=(3, REGIONS, DIM)).astype(np.float32)
    out = model.encode_image(model.preprocess(feats))
    assert out.h.shape == (3, 16) and torch.allclose(out.h.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"shape \(N, regions, 2048\), got \(3, 36, 1024\).*model.region_dim"):
        model.preprocess(feats[..., :1024])
    with pytest.raises(ValueError, match="floating-point"):
        model.preprocess(np.zeros((1, REGIONS, DIM), dtype=np.uint8))
    with pytest.raises(ValueError, match="backbone"):
        build_model(ModelConfig(arch="precomp", backbone="/models/clip"), ["a dog"])


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_caption_feature_does_not_depend_on_padding(pool: str) -> None:
    """The GRU packs each caption to its length and pools over its own tokens only."""
    model, tok = tiny_precomp_model(pool=pool)
    model.eval()
    short = "a red dog"
    alone = tokenize(tok, [short], 32)
    batch = tokenize(tok, [short, "there is a boat that is white and a photo of a green bird"], 32)
    assert batch["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        h_alone = model.encode_text(alone["input_ids"], alone["attention_mask"]).h[0]
        h_batch = model.encode_text(batch["input_ids"], batch["attention_mask"]).h[0]
    torch.testing.assert_close(h_alone, h_batch, atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="autocast of the cuDNN GRU needs a CUDA device")
def test_precomp_towers_train_under_cuda_bf16_autocast() -> None:
    model, tok = tiny_precomp_model()
    model.cuda()
    enc = {k: v.cuda() for k, v in tokenize(tok, ["a red dog", "the cat is blue"], 16).items()}
    feats = model.preprocess(np.random.default_rng(1).normal(size=(2, REGIONS, DIM)).astype(np.float32))
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        text = model.encode_text(enc["input_ids"], enc["attention_mask"])
        image = model.encode_image(feats)
        loss = -(image.mii() * text.mii()).sum()
    loss.backward()
    grad = model.towers.text.gru.weight_ih_l0.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all()
    assert torch.isfinite(model.towers.image.proj.weight.grad).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    model, tok = tiny_precomp_model(gru_layers=2, pool="mean")
    model.eval()
    save_model(model, tok, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["clip_config"] is None and meta["model_config"]["arch"] == "precomp"
    loaded, loaded_tok = load_model(tmp_path / "m")
    assert loaded.cfg == model.cfg and loaded.clip is None
    feats = np.random.default_rng(2).normal(size=(2, REGIONS, DIM)).astype(np.float32)
    enc = tokenize(loaded_tok, ["a red dog", "the cat is blue"], 16)
    with torch.no_grad():
        for m in (model, loaded):
            m.eval()
        torch.testing.assert_close(loaded.encode_image(loaded.preprocess(feats)).mu_z,
                                   model.encode_image(model.preprocess(feats)).mu_z, rtol=0, atol=0)
        torch.testing.assert_close(loaded.encode_text(**enc).mu_z, model.encode_text(**enc).mu_z, rtol=0, atol=0)


# --- training, evaluation, export ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["disncl", "ncr"])
def test_train_and_eval_on_precomp_features(precomp: Path, tmp_path: Path, method: str) -> None:
    cfg = load_config(None, overrides(precomp, tmp_path / "run", **{"train.method": method}))
    run = train(cfg, progress=False)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["split_used"]
    space = cfg.selection_space()
    # Chance rSum on 10 images x 5 captions is about 280; the structured features are learnable.
    assert log[-1]["val"][space]["rsum"] > 360
    noise_file = precomp / "noise_index" / "f30k_precomp_0.2.npy"
    np.testing.assert_array_equal(np.load(run / "noise_index.npy"), np.load(noise_file))
    result = evaluate_run(run, progress=False)
    assert result["split"] == "test" and result["retrieval"][space]["rsum"] > 360
    assert result["detection"]["gmm"]["auroc"] > 0.5
    assert "train_ims.npy[" in (run / "pair_scores.csv").read_text().splitlines()[1]


def test_precomp_data_and_arch_must_match(precomp: Path, tmp_path: Path) -> None:
    cfg = load_config(None, overrides(precomp, tmp_path / "run", **{"model.arch": "clip"}))
    ds = load_split(cfg.data, "dev")
    model, tok = tiny_precomp_model()
    with pytest.raises(ValueError, match="model.arch=precomp and data.precomp_root go together"):
        prepare_split(ds, tok, cfg, progress=False)
    both = load_config(None, overrides(precomp, tmp_path / "run", **{"data.root": str(tmp_path)}))
    with pytest.raises(ValueError, match="unset data.root"):
        load_split(both.data, "train")


def test_export_refuses_a_precomp_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from disncl.export.__main__ import main as export_main

    model, tok = tiny_precomp_model()
    save_model(model, tok, tmp_path / "run" / "best")
    assert export_main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "bundle"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "model.arch='precomp'" in err and "cannot be exported" in err and "disncl eval" in err
    assert not (tmp_path / "bundle").exists()


def test_region_features_batches_are_float32_copies(tmp_path: Path) -> None:
    np.save(tmp_path / "x_ims.npy", np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4))
    feats = RegionFeatures.open(tmp_path / "x_ims.npy")
    assert (len(feats), feats.n_regions, feats.dim) == (2, 3, 4)
    one, both = feats[1], feats[0:2]
    assert one.dtype == np.float32 and one.shape == (3, 4) and both.shape == (2, 3, 4)
    both[1, 0, 0] = -1  # writable, and a copy: the memory-mapped file is never touched
    assert feats[1][0, 0] == 12 and torch.as_tensor(both).shape == (2, 3, 4)
    with pytest.raises(PrecompError, match="float32 or float16"):
        RegionFeatures(np.zeros((2, 3, 4), dtype=np.int64))


@pytest.mark.parametrize("preset", ["flickr30k_precomp_gpu", "coco_precomp_gpu"])
def test_precomp_presets_load(preset: str) -> None:
    cfg = load_config(Path(__file__).parent.parent / "configs" / f"{preset}.yaml")
    assert (cfg.model.arch, cfg.data.val_split, cfg.data.noise_kind) == ("precomp", "dev", "caption")
    assert cfg.data.precomp_root and not cfg.data.root and cfg.train.batch_size == 128
