"""The embedding map: projected once when a gallery is saved, drawn and picked through the app's API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_app import Assets, app, build_assets, gradio_client, logic

from disncl.app.embedding_map import AXES_RECT, MapView, caption_pair_rows
from disncl.serve import projection
from disncl.serve.bundle import Bundle
from disncl.serve.gallery import Gallery
from disncl.serve.index_cli import collect_items

pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


@pytest.fixture(scope="session")
def assets(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Assets:
    # The same folder as the app tests' fixture, so build_assets' cache serves both.
    return build_assets(tiny_synth, tmp_path_factory.getbasetemp() / "app-assets")


@pytest.fixture(scope="module")
def train_gallery(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery over the training split, as an audit builds it: its captions are the training pairs."""
    items = collect_items(None, assets.data / "train.csv")
    gallery = Gallery.build(Bundle.load(assets.bundle), items.root, items.image_paths, items.captions,
                            items.caption_image, progress=False)
    return gallery.save(tmp_path_factory.mktemp("g") / "gallery", pair_scores=assets.run / "pair_scores.csv")


@pytest.fixture(scope="module")
def served_train(assets: Assets, train_gallery: Path) -> Iterator[tuple[gradio_client.Client, logic.Services]]:
    services = logic.Services.load(assets.bundle, train_gallery)
    demo = app.build_app(services)
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(url, verbose=False), services
    finally:
        demo.close()


def test_the_map_is_saved_with_the_gallery_and_equals_the_projection(train_gallery: Path) -> None:
    gallery = Gallery.load(train_gallery)
    for space in ("mii", "full"):
        saved = np.load(train_gallery / f"map_{space}.npy")
        expected = projection.project_2d(gallery.embedding("image", space), gallery.embedding("caption", space))
        np.testing.assert_allclose(saved, expected, atol=1e-5)
        np.testing.assert_array_equal(gallery.map_coordinates(space), saved)


def test_a_gallery_saved_before_maps_computes_them_once(train_gallery: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(train_gallery, old)
    meta = json.loads((old / "gallery.json").read_text())
    meta.pop("maps")
    (old / "gallery.json").write_text(json.dumps(meta))
    for f in old.glob("map_*.npy"):
        f.unlink()
    np.testing.assert_allclose(Gallery.load(old).map_coordinates("mii"), np.load(train_gallery / "map_mii.npy"),
                               atol=1e-5)


def test_projection_is_pca_fitted_on_a_sample_of_a_large_gallery(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    # Two clouds far apart along one direction: the first map axis separates them.
    images = rng.normal(size=(300, 8)) + np.r_[6.0, np.zeros(7)]
    captions = rng.normal(size=(500, 8)) - np.r_[6.0, np.zeros(7)]
    full = projection.project_2d(images, captions)
    assert full.shape == (800, 2) and full.dtype == np.float32
    side = np.sign(full[0, 0])
    assert (np.sign(full[:300, 0]) == side).all() and (np.sign(full[300:, 0]) == -side).all()
    monkeypatch.setattr(projection, "FIT_ROWS", 100)
    sampled = projection.project_2d(images, captions)
    assert np.corrcoef(np.abs(sampled[:, 0]), np.abs(full[:, 0]))[0, 1] > 0.99
    np.testing.assert_array_equal(sampled, projection.project_2d(images, captions))  # seeded
    assert not projection.project_2d(images[:1], captions[:1]).any()  # too few rows: zeros


def test_a_click_converts_back_to_map_coordinates() -> None:
    view = MapView(image=np.zeros((500, 700, 3), np.uint8), summary="", xlim=(-2.0, 2.0), ylim=(0.0, 1.0))
    left, bottom, width, height = AXES_RECT
    # The axes' bottom-left corner is (xlim[0], ylim[0]); its top-right is (xlim[1], ylim[1]).
    assert view.to_map(left * 700, (1 - bottom) * 500) == pytest.approx((-2.0, 0.0))
    assert view.to_map((left + width) * 700, (1 - bottom - height) * 500) == pytest.approx((2.0, 1.0))


def test_map_endpoints_draw_and_pick_the_nearest_pair(served_train) -> None:
    client, services = served_train
    rows = caption_pair_rows(services)
    assert (rows >= 0).all()  # every caption of a training-split gallery is a training pair
    image, summary = client.predict("mii", "flag", 0.5, api_name="/embedding_map")
    assert Image.open(image).size == (700, 500)
    assert f"{services.gallery.n_captions} captions are training pairs" in summary
    # Under a count rule the flag colours follow the count: none flagged (red only in the legend), then all.
    every = len(services.pair_scores)
    drawn = [client.predict("mii", "flag", 0.5, n, api_name="/embedding_map")[0] for n in (0, every)]
    red = [int((np.asarray(Image.open(path))[..., :3] == (0xE4, 0x57, 0x56)).all(-1).sum()) for path in drawn]
    assert red[1] > red[0] + 1000, red
    xy = services.gallery.map_coordinates("mii")[services.gallery.n_images :]
    for c in (0, 7, len(xy) - 1):
        pair = client.predict("mii", float(xy[c, 0]), float(xy[c, 1]), api_name="/map_pick")
        picked = int(np.flatnonzero(services.pair_scores.pair == pair)[0])
        # The pick is the caption at that point, or one drawn on the very same spot.
        c_picked = int(np.flatnonzero(rows == picked)[0])
        np.testing.assert_allclose(xy[c_picked], xy[c], atol=1e-6)


def test_a_gallery_of_other_captions_draws_the_space_and_cannot_pick(assets: Assets) -> None:
    services = logic.Services.load(assets.bundle, assets.gallery)  # the test split; pairs are from train
    view = logic.embedding_map(services, "full", "clean probability", 0.5)
    assert "not the training pairs" in view.summary and view.image.shape == (500, 700, 3)
    with pytest.raises(logic.AppError, match="no gallery caption is a training pair"):
        logic.nearest_pair(services, "full", 0.0, 0.0)
    with pytest.raises(logic.AppError, match="space must be one of"):
        logic.embedding_map(services, "mei", "flag", 0.5)
