"""What the app does with bad input: every case through a real launched server, as a user or API client meets it.

The server serves the bundled demo model (``assets/bundle``) over a 12-image gallery whose image root
is a temporary folder, so the tests can place a symlink in it that points outside. Each test names
the input and asserts the message the user sees, or that nothing was served.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from conftest import http_status
from PIL import Image

gradio_client = pytest.importorskip("gradio_client", reason="the app tests need gradio_client (requirements.txt)")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # app.py lives at the repository root, outside the package

import app  # noqa: E402  (needs the repository root on the path)
import disncl.app as logic  # noqa: E402
from disncl.serve.bundle import Bundle  # noqa: E402
from disncl.serve.gallery import Gallery  # noqa: E402

ASSETS = REPO / "assets"
N_IMAGES = 12
K = 3


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    demo: gr.Blocks
    client: gradio_client.Client
    services: logic.Services
    outside: Path  # a file outside every allowed folder, linked from inside the gallery root


def _small_gallery(root: Path) -> Gallery:
    """The demo gallery's first images, copied under ``root``, with their captions and stored embeddings."""
    demo = Gallery.load(ASSETS / "gallery")
    paths = demo.image_paths[:N_IMAGES]
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo.root / rel, root / rel)
    owners = np.asarray(demo.caption_image)
    keep = owners < N_IMAGES
    return Gallery.from_embeddings(
        root, paths, {s: np.asarray(demo.embedding("image", s)[:N_IMAGES]) for s in logic.SPACES},
        [c for c, k in zip(demo.captions, keep, strict=True) if k],
        {s: np.asarray(demo.embedding("caption", s)[keep]) for s in logic.SPACES}, owners[keep],
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("limits")
    outside = base / "secret.txt"
    outside.write_text("not for the browser")
    gallery = _small_gallery(base / "root")
    (base / "root" / "leak.png").symlink_to(outside)
    demo_scores = Gallery.load(ASSETS / "gallery").load_pair_scores()
    services = logic.Services(bundle=Bundle.load(ASSETS / "bundle"), gallery=gallery, pair_scores=demo_scores)
    demo = app.build_app(services)
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield Served(url, demo.server_port, demo, gradio_client.Client(url, verbose=False), services, outside)
    finally:
        demo.close()


def _image_file(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.new(mode, size, "red" if mode == "RGB" else 200).save(path)
    return path


def _search_upload(served: Served, path: Path) -> object:
    return served.client.predict(gradio_client.handle_file(str(path)), -1, K, api_name="/search_image")


# ---------------------------------------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    "content", [b"hello, I am a text file", os.urandom(4096), b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["text-renamed-png", "random-bytes", "svg"],
)
def test_upload_that_is_not_an_image_gets_a_message(served: Served, tmp_path: Path, content: bytes) -> None:
    fake = tmp_path / "photo.png"
    fake.write_bytes(content)
    with pytest.raises(Exception, match=r"'photo\.png' is not an image this app reads: upload a PNG, JPEG"):
        _search_upload(served, fake)
    with pytest.raises(Exception, match="is not an image this app reads"):
        served.client.predict(
            gradio_client.handle_file(str(fake)), -1, "a red circle", K, api_name="/inspect_pair"
        )


def test_damaged_image_gets_a_message(served: Served, tmp_path: Path) -> None:
    good = served.services.gallery.image_path(0).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(Exception, match=r"cannot decode the uploaded image 'cut\.png' .*damaged or incomplete"):
        _search_upload(served, cut)


def test_pixel_bomb_is_refused_from_its_header_before_decoding(served: Served, tmp_path: Path) -> None:
    big = _image_file(tmp_path / "big.png", (8000, 6000), "L")  # 48 megapixels in a ~50 kB file
    assert big.stat().st_size < 100_000
    with pytest.raises(Exception, match=r"8000×6000 = 48\.0 megapixels; the limit is 40 megapixels"):
        _search_upload(served, big)
    # Its pixel data cut off: decoding would fail as "damaged", so the size message proves nothing was decoded.
    headless = tmp_path / "big_cut.png"
    headless.write_bytes(big.read_bytes()[:2000])
    with pytest.raises(Exception, match="48.0 megapixels"):
        _search_upload(served, headless)


def test_extreme_aspect_ratio_is_refused(served: Served, tmp_path: Path) -> None:
    # 40 kB of pixels that resizing to the model's square would turn into gigabytes.
    strip = _image_file(tmp_path / "strip.png", (40_000, 1))
    with pytest.raises(Exception, match=r"40000×1, longer than 20:1"):
        _search_upload(served, strip)


def test_images_the_checks_let_through_are_searched(served: Served, tmp_path: Path) -> None:
    # Transparent and greyscale uploads reach the model (converted the training way), not an error.
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (64, 48), (255, 0, 0, 90)).save(rgba)
    grey = _image_file(tmp_path / "grey.jpg", (50, 70), "L")
    for path in (rgba, grey):
        mii, full = _search_upload(served, path)
        assert len(mii["data"]) == len(full["data"]) == K


def test_upload_over_the_byte_limit_is_refused_by_the_server(served: Served, tmp_path: Path) -> None:
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as fh:  # sparse: costs no disk
        fh.truncate(logic.MAX_UPLOAD_BYTES + 1)
    # gradio_client reads the limit from the server's config and refuses before sending.
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        _search_upload(served, huge)
    # A client that sends anyway gets 413 from the upload route.
    import httpx

    with open(huge, "rb") as fh:
        response = httpx.post(f"{served.url}gradio_api/upload", files={"files": ("huge.png", fh)}, timeout=60)
    assert response.status_code == 413
    # And the logic layer refuses such a file on its own, for callers that bypass the upload route.
    with pytest.raises(logic.AppError, match=r"20\.0 MB; the limit is 20 MB"):
        logic.check_upload(huge)


def _call(served: Served, api: str, data: list) -> str:
    """A raw API call as any HTTP client can make it; returns the event stream's text."""
    body = json.dumps({"data": data}).encode()
    request = urllib.request.Request(
        f"{served.url}gradio_api/call/{api}", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        event = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{served.url}gradio_api/call/{api}/{event}", timeout=60) as response:
        return response.read().decode()


def test_data_url_images_are_refused_before_gradio_decodes_them(served: Served) -> None:
    png = served.services.gallery.image_path(0).read_bytes()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    stream = _call(served, "search_image", [{"url": data_url, "meta": {"_type": "gradio.FileData"}}, -1, K])
    assert "event: error" in stream and "not as a data: URL" in stream


def test_server_files_cannot_be_passed_as_uploads(served: Served) -> None:
    # Gradio's own guard: only files uploaded through its upload route, or under a static path (the
    # gallery root, whose images are public anyway and can be picked by index), reach an event as input.
    for path in ("/etc/passwd", str(served.outside), str(served.services.bundle.path / "manifest.json")):
        stream = _call(served, "search_image", [{"path": path, "meta": {"_type": "gradio.FileData"}}, -1, K])
        assert "event: error" in stream and "complete" not in stream, path
    gallery_file = str(served.services.gallery.image_path(0))
    stream = _call(served, "search_image", [{"path": gallery_file, "meta": {"_type": "gradio.FileData"}}, -1, K])
    assert "event: complete" in stream


# ---------------------------------------------------------------------------------------------- text


@pytest.mark.parametrize("query", ["", "   ", "\n\t"], ids=["empty", "spaces", "whitespace"])
def test_empty_query_gets_a_message(served: Served, query: str) -> None:
    with pytest.raises(Exception, match="no caption: type one"):
        served.client.predict(query, K, api_name="/search_text")
    with pytest.raises(Exception, match="no caption: type one"):
        served.client.predict(None, 0, query, K, api_name="/inspect_pair")


def test_very_long_query_is_refused_with_its_length(served: Served) -> None:
    with pytest.raises(Exception, match=r"the caption is 100,000 characters long; the limit is 1,000: shorten it"):
        served.client.predict("red circle " * 9091, K, api_name="/search_text")
    with pytest.raises(Exception, match="the caption is 100,000 characters long"):
        served.client.predict(None, 0, "x" * 100_000, K, api_name="/inspect_pair")
    with pytest.raises(Exception, match="the filter text is 100,000 characters long"):
        served.client.predict(0.5, "all", "pair", False, "x" * 100_000, 10, api_name="/explorer")
    # At the limit the query is answered.
    at_limit = ("a red circle " * 100)[: logic.MAX_QUERY_CHARS]
    _notice, mii, _full, _table = served.client.predict(at_limit, K, api_name="/search_text")
    assert len(mii) == K


def test_non_finite_numbers_get_a_message() -> None:
    for bad in (float("inf"), float("nan")):
        with pytest.raises(logic.AppError, match="number of results"):
            logic.check_k(bad, 10)
        with pytest.raises(logic.AppError, match="number of rows"):
            logic.check_row_limit(bad)


# ---------------------------------------------------------------------------------------------- files served


def test_no_file_is_served_from_outside_the_gallery_root(served: Served) -> None:
    root = served.services.gallery.root.resolve()
    file_url = f"{served.url}gradio_api/file="
    assert http_status(file_url + str(served.services.gallery.image_path(0).resolve())) == 200
    for path in (
        root / "leak.png",  # a symlink inside the root to a file outside
        f"{root}/../secret.txt",  # climbing out with ..
        f"{root}/%2e%2e/secret.txt",  # the same, URL-encoded
        served.outside,
        REPO / "assets" / "bundle" / "manifest.json",
    ):
        assert http_status(file_url + str(path)) in (403, 404), path


# ---------------------------------------------------------------------------------------------- binding


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port``, from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address if len(address) == width else "?")
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket tables")
def test_app_listens_on_loopback_only_by_default(served: Served) -> None:
    assert app.build_parser().parse_args([]).host == "127.0.0.1"
    assert served.url.startswith("http://127.0.0.1:")
    assert _listening_addresses(served.port) == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_queue_keeps_no_growing_event_record(served: Served) -> None:
    # Gradio otherwise keeps 10,000 events for its monitoring dashboard and summarises all of them with
    # pandas after every request (about 20 ms CPU each once full); the app switches the dashboard off.
    for caption in served.services.gallery.captions[:3]:
        served.client.predict(caption, K, api_name="/search_text")
    assert len(served.demo._queue.event_analytics) <= 1
    assert served.demo._queue.cached_event_analytics_summary == {"functions": {}}  # never computed
    assert http_status(f"{served.url}monitoring/summary") == 403


def test_unusable_bundle_is_a_one_line_error_at_startup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = Path(shutil.copytree(ASSETS / "bundle", tmp_path / "bundle"))
    with open(bundle / "image.onnx", "ab") as fh:
        fh.write(b"\0")
    assert app.main(["--bundle", str(bundle), "--gallery", str(ASSETS / "gallery")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image.onnx: checksum mismatch" in err and "Traceback" not in err
