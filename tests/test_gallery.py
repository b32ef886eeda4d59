"""Gallery search against brute force, approximate indexes, the on-disk format and path safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from disncl.serve.gallery import Gallery, GalleryError, UnsafePathError
from disncl.serve.index_cli import collect_items, find_images
from disncl.serve.pair_scores import PairScores

DIMS = {"mii": 16, "full": 24}
N_IMAGES, N_CAPTIONS = 300, 500


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _random_embeddings(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {space: _unit(rng.standard_normal((n, dim))) for space, dim in DIMS.items()}


def _clustered(rng: np.random.Generator, n: int, dim: int, n_clusters: int) -> np.ndarray:
    """Unit vectors in tight clusters: the structure real embeddings have and IVF/HNSW rely on."""
    centres = _unit(rng.standard_normal((n_clusters, dim)))
    return _unit(centres[rng.integers(n_clusters, size=n)] + 0.15 * rng.standard_normal((n, dim)))


@pytest.fixture
def gallery(tmp_path: Path) -> Gallery:
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    return Gallery.from_embeddings(
        root=tmp_path / "images",
        image_paths=[f"img{i:03d}.png" for i in range(N_IMAGES)],
        image_emb=_random_embeddings(rng, N_IMAGES),
        captions=[f"caption {c}" for c in range(N_CAPTIONS)],
        caption_emb=_random_embeddings(rng, N_CAPTIONS),
        caption_image=rng.integers(N_IMAGES, size=N_CAPTIONS),
        image_ids=[f"id-{i}" for i in range(N_IMAGES)],
    )


def _queries(space: str, n: int = 20) -> np.ndarray:
    return _unit(np.random.default_rng(1).standard_normal((n, DIMS[space])))


@pytest.mark.parametrize("modality", ["image", "caption"])
@pytest.mark.parametrize("space", ["mii", "full"])
def test_flat_search_equals_brute_force(gallery: Gallery, modality: str, space: str) -> None:
    q = _queries(space)
    search = gallery.search_images if modality == "image" else gallery.search_captions
    scores, ids = search(q, space, k=10)
    sims = q @ gallery.embedding(modality, space).T
    expected = np.argsort(-sims, axis=1)[:, :10]
    assert ids.shape == scores.shape == (20, 10)
    assert np.array_equal(ids, expected)
    assert np.allclose(scores, np.take_along_axis(sims, expected, axis=1), atol=1e-5)


def test_single_query_and_k_clipping(gallery: Gallery) -> None:
    q = _queries("mii")[0]
    scores, ids = gallery.search_images(q, "mii", k=5)
    assert ids.shape == (1, 5)
    _, all_ids = gallery.search_images(q, "mii", k=10_000)
    assert all_ids.shape == (1, N_IMAGES) and sorted(all_ids[0].tolist()) == list(range(N_IMAGES))
    with pytest.raises(ValueError, match="positive integer"):
        gallery.search_images(q, "mii", k=0)


def test_wrong_query_dimension_names_both_and_the_space(gallery: Gallery) -> None:
    with pytest.raises(ValueError, match=r"dimension 7 but the 'mii' space of this gallery has dimension 16"):
        gallery.search_captions(np.ones((3, 7), np.float32), "mii")
    with pytest.raises(ValueError, match="unknown space 'mei'"):
        gallery.search_images(np.ones(16, np.float32), "mei")


def test_ivf_finds_the_true_top1_on_clustered_data() -> None:
    rng = np.random.default_rng(2)
    n, dim, nlist = 4000, 32, 32
    x = _clustered(rng, n, dim, n_clusters=50)
    emb = {"mii": x, "full": x}
    g = Gallery.from_embeddings(".", [f"{i}.png" for i in range(n)], emb, [], None, kind="ivf", nlist=nlist,
                                nprobe=nlist // 4)
    assert g.index_kinds["image_mii"] == "ivf"
    q = _unit(x[rng.choice(n, 200, replace=False)] + 0.1 * rng.standard_normal((200, dim)))
    _, ids = g.search_images(q, "mii", k=1)
    truth = np.argmax(q @ x.T, axis=1)
    assert np.mean(ids[:, 0] == truth) >= 0.9


def test_hnsw_finds_the_true_top1_on_clustered_data() -> None:
    rng = np.random.default_rng(3)
    n, dim = 25_000, 16
    x = _clustered(rng, n, dim, n_clusters=100)
    g = Gallery.from_embeddings(".", [f"{i}.png" for i in range(n)], {"mii": x, "full": x}, [], None, kind="hnsw")
    assert g.index_kinds["image_mii"] == "hnsw"
    q = _unit(x[rng.choice(n, 200, replace=False)] + 0.1 * rng.standard_normal((200, dim)))
    _, ids = g.search_images(q, "mii", k=1)
    assert np.mean(ids[:, 0] == np.argmax(q @ x.T, axis=1)) >= 0.9


def test_small_galleries_fall_back_to_flat_with_a_note(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    g = Gallery.from_embeddings(tmp_path, ["a.png", "b.png"], _random_embeddings(rng, 2), ["x"],
                                _random_embeddings(rng, 1), kind="ivf")
    assert g.kind == "ivf" and set(g.index_kinds.values()) == {"flat"}
    assert len(g.notes) == 4 and "too few for an ivf index" in g.notes[0]


def test_save_load_round_trip_gives_identical_results(gallery: Gallery, tmp_path: Path) -> None:
    out = gallery.save(tmp_path / "gallery")
    loaded = Gallery.load(out)
    assert loaded.root.resolve() == gallery.root.resolve()
    assert json.loads((out / "gallery.json").read_text())["root"] == "../images"
    assert loaded.image_paths == gallery.image_paths and loaded.captions == gallery.captions
    assert loaded.image_ids == gallery.image_ids
    assert np.array_equal(loaded.caption_image, gallery.caption_image)
    for modality in ("image", "caption"):
        for space in ("mii", "full"):
            q = _queries(space)
            before = (gallery.search_images if modality == "image" else gallery.search_captions)(q, space, 7)
            after = (loaded.search_images if modality == "image" else loaded.search_captions)(q, space, 7)
            assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])


def test_ivf_round_trip_keeps_nprobe(tmp_path: Path) -> None:
    x = _clustered(np.random.default_rng(5), 2000, 16, n_clusters=20)
    g = Gallery.from_embeddings(tmp_path, [f"{i}.png" for i in range(2000)], {"mii": x, "full": x}, [], None,
                                kind="ivf", nlist=16, nprobe=3)
    loaded = Gallery.load(g.save(tmp_path / "g"))
    assert loaded.indexes["image_mii"].nprobe == 3
    q = x[:50]
    assert np.array_equal(g.search_images(q, "mii", 5)[1], loaded.search_images(q, "mii", 5)[1])


def test_corrupt_or_missing_files_are_named(gallery: Gallery, tmp_path: Path) -> None:
    out = gallery.save(tmp_path / "gallery")
    index_file = out / "caption_full.faiss"
    index_file.write_bytes(index_file.read_bytes()[:100])
    with pytest.raises(GalleryError, match="caption_full.faiss: corrupt or unreadable FAISS index"):
        Gallery.load(out)
    index_file.unlink()
    with pytest.raises(GalleryError, match="gallery file missing: .*caption_full.faiss"):
        Gallery.load(out)
    out = gallery.save(tmp_path / "gallery")
    np.save(out / "image_mii.npy", np.zeros((3, 16), np.float32))
    with pytest.raises(GalleryError, match=r"image_mii.npy: found float32 \(3, 16\), expected float32 \(300, 16\)"):
        Gallery.load(out)
    with pytest.raises(FileNotFoundError, match="no gallery in"):
        Gallery.load(tmp_path / "elsewhere")


def test_paths_escaping_the_root_are_rejected(gallery: Gallery, tmp_path: Path) -> None:
    emb = _random_embeddings(np.random.default_rng(6), 1)
    for bad in ("../secret.png", "a/../../secret.png", "/etc/passwd"):
        with pytest.raises(UnsafePathError):
            Gallery.from_embeddings(tmp_path, [bad], emb, [], None)
    assert gallery.image_path(3) == gallery.root / "img003.png"
    gallery.image_paths[3] = "../../etc/passwd"
    with pytest.raises(UnsafePathError, match="climbs out"):
        gallery.image_path(3)
    # A hand-edited gallery.json is checked on load too.
    gallery.image_paths[3] = "img003.png"
    out = gallery.save(tmp_path / "gallery")
    meta = json.loads((out / "gallery.json").read_text())
    meta["paths"][0] = "../../x.png"
    (out / "gallery.json").write_text(json.dumps(meta))
    with pytest.raises(GalleryError, match=r"gallery.json: image path '../../x.png' climbs out"):
        Gallery.load(out)


def test_save_refuses_to_replace_a_folder_that_is_not_a_gallery(gallery: Gallery, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("months of work")
    with pytest.raises(FileExistsError, match="not empty and holds no gallery.json"):
        gallery.save(precious)
    assert (precious / "thesis.tex").is_file()
    with pytest.raises(FileExistsError, match="image root"):
        gallery.save(gallery.root)


def test_attached_pair_scores_travel_with_the_gallery(gallery: Gallery, tmp_path: Path) -> None:
    csv_path = tmp_path / "run_pair_scores.csv"
    csv_path.write_text(
        "pair,caption_index,image_index,clean_prob,loss,mii_sim,full_sim,image_rank,best_image,"
        "best_caption_for_image,image,caption,is_clean\n0,0,0,0.25000,1.0,0.5,0.4,2,1,0,img000.png,a cat,0\n",
        encoding="utf-8",
    )
    first = Gallery.load(gallery.save(tmp_path / "g1", pair_scores=csv_path))
    # Saving a loaded gallery again carries the attached file along.
    second = Gallery.load(first.save(tmp_path / "g2"))
    scores = second.load_pair_scores()
    assert isinstance(scores, PairScores) and list(scores.caption) == ["a cat"]
    assert second.pair_scores_path == tmp_path / "g2" / "pair_scores.parquet"  # stored as Parquet
    assert gallery.load_pair_scores() is None


class _MeanColourEncoder:
    """A tiny real encoder for exercising Gallery.build: an image's mean RGB, a caption's letter counts."""

    def __init__(self) -> None:
        self.image_batches: list[int] = []

    def encode_images(self, images: list[Path], batch_size: int = 64, progress: bool = False) -> _Encoded:
        rows = []
        for s in range(0, len(images), batch_size):
            batch = images[s : s + batch_size]
            self.image_batches.append(len(batch))
            rows += [np.asarray(Image.open(p).convert("RGB"), np.float32).mean((0, 1)) + 1.0 for p in batch]
        return _Encoded(_unit(np.stack(rows)))

    def encode_texts(self, texts: list[str], batch_size: int = 256, progress: bool = False) -> _Encoded:
        return _Encoded(_unit(np.array([[t.count("r") + 1, t.count("g") + 1, t.count("b") + 1] for t in texts])))


class _Encoded:
    def __init__(self, x: np.ndarray) -> None:
        self.full = self.mii = self.mei = x


def test_build_encodes_in_batches_and_checks_files_first(tmp_path: Path) -> None:
    colours = {"red.png": (250, 5, 5), "green.png": (5, 250, 5), "sub/blue.png": (5, 5, 250)}
    for name, rgb in colours.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), rgb).save(tmp_path / name)
    encoder = _MeanColourEncoder()
    g = Gallery.build(encoder, tmp_path, list(colours), ["bbbbb", "rrrrr"], np.array([2, 0]), batch_size=2,
                      progress=False)
    assert encoder.image_batches == [2, 1]
    _, ids = g.search_images(g.embedding("caption", "mii"), "mii", k=1)
    assert ids[:, 0].tolist() == [2, 0]
    with pytest.raises(FileNotFoundError, match="1 of 2 images not found"):
        Gallery.build(encoder, tmp_path, ["red.png", "missing.png"], [], progress=False)


def test_index_items_from_a_folder_and_a_captions_file(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "sub/c.webp", ".hidden/d.png", "._e.png", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert find_images(tmp_path) == ["a.JPG", "b.png", "sub/c.webp"]
    captions = tmp_path / "caps.csv"
    captions.write_text("image,caption\nsub/c.webp,a c\nb.png,a b\nsub/c.webp,another c\n", encoding="utf-8")
    items = collect_items(tmp_path, captions)
    assert items.image_paths == ["sub/c.webp", "b.png", "a.JPG"]
    assert items.caption_image.tolist() == [0, 1, 0] and items.captions == ["a c", "a b", "another c"]
    with pytest.raises(ValueError, match="nothing to index"):
        collect_items(None, None)


def test_index_cli_builds_a_gallery_with_a_real_bundle(tiny_synth: Path, tmp_path: Path) -> None:
    """End to end through ONNX: an untrained tiny model is exported and the synthetic test split indexed."""
    from disncl.data.formats import load_captions_file
    from disncl.export import export_bundle
    from disncl.models.checkpoint import build_model, save_model
    from disncl.models.config import ModelConfig
    from disncl.serve.bundle import Bundle
    from disncl.serve.index_cli import main

    cfg = ModelConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, text_width=32,
                      text_layers=1, text_heads=2, embed_dim=32, mii_dim=16, mei_dim=16, head_hidden=32)
    ds = load_captions_file(tiny_synth / "test.csv")
    model, tokenizer = build_model(cfg, ds.captions)
    export_bundle(save_model(model.eval(), tokenizer, tmp_path / "model"), tmp_path / "bundle", progress=False)
    scores_csv = tmp_path / "pair_scores.csv"
    scores_csv.write_text(
        "pair,caption_index,image_index,clean_prob,loss,mii_sim,full_sim,image_rank,best_image,"
        "best_caption_for_image,image,caption,is_clean\n0,0,0,0.25000,1.0,0.5,0.4,2,1,0,a.png,a cat,\n",
        encoding="utf-8",
    )
    argv = ["--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "gallery"),
            "--captions", str(tiny_synth / "test.csv"), "--pair-scores", str(scores_csv), "--no-progress"]
    assert main(argv) == 0

    g = Gallery.load(tmp_path / "gallery")
    assert g.image_paths == ds.image_paths and g.captions == ds.captions
    assert np.array_equal(g.caption_image, ds.cap2img) and g.root.resolve() == tiny_synth.resolve()
    bundle = Bundle.load(tmp_path / "bundle", providers=["CPUExecutionProvider"])
    images = bundle.encode_images([g.image_path(i) for i in range(g.n_images)])
    texts = bundle.encode_texts(g.captions)
    assert np.allclose(g.embedding("image", "mii"), images.mii, atol=1e-5)
    assert np.allclose(g.embedding("caption", "full"), texts.full, atol=1e-5)
    _, ids = g.search_images(texts.mii, "mii", k=3)
    assert np.array_equal(ids, np.argsort(-(texts.mii @ images.mii.T), axis=1)[:, :3])
    assert list(g.load_pair_scores().caption) == ["a cat"]


def test_ivfpq_compresses_rescoring_exactly_and_loads_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    n, dim = 1200, 16
    x = _clustered(rng, n, dim, n_clusters=30)
    flat = Gallery.from_embeddings(tmp_path, [f"{i}.png" for i in range(n)], {"mii": x, "full": x}, [], None)
    pq = Gallery.from_embeddings(tmp_path, [f"{i}.png" for i in range(n)], {"mii": x, "full": x}, [], None,
                                 kind="ivfpq", nlist=8, nprobe=4)
    assert pq.index_kinds["image_mii"] == "ivfpq" and pq.indexes["image_mii"].pq.M == 4  # one byte per 4 dims
    q = _unit(x[rng.choice(n, 100, replace=False)] + 0.1 * rng.standard_normal((100, dim)))
    scores, ids = pq.search_images(q, "mii", k=10)
    _, truth = flat.search_images(q, "mii", k=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth, strict=True)]) >= 0.8
    # Scores are exact inner products (re-scored from the embeddings), in descending order.
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", q, x[ids]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    out = pq.save(tmp_path / "g")
    loaded = Gallery.load(out)
    assert np.array_equal(loaded.search_images(q, "mii", 10)[1], ids)
    assert loaded.indexes["image_mii"].code_size == dim // 4 == 4  # bytes per vector, 64 as float32
