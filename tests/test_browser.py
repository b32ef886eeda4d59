"""The app in a real browser: headless Chromium loads the page, runs searches and saves screenshots.

Chromium is driven over the DevTools protocol (a websocket on a local port) by the small driver
below, so no browser download or automation framework is needed: Debian's ``chromium`` package is
enough. Without Chromium the test is skipped, except in CI (``CI`` set), where it fails so a missing
install step cannot hide.

The page serves the tiny model the app tests build, or ``DISNCL_APP_ASSETS/{bundle,gallery}`` when
that is set. Screenshots (one PNG per tab) go to a temporary folder, or to ``DISNCL_SCREENSHOTS``;
``DISNCL_APP_ASSETS=assets DISNCL_SCREENSHOTS=docs/screenshots`` refreshes the documentation's ones
with the shipped demo.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

websockets_sync = pytest.importorskip("websockets.sync.client", reason="the browser test needs websockets")
from test_app import Assets, app, build_assets, logic  # noqa: E402  (the app tests' assets, built once)

# Gradio 6's queue calls pandas options that pandas 3 deprecates; noise from the library, not this app.
pytestmark = [
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 900)
# Offline and quiet: no update checks, sync, crash reports or field trials reaching for the network.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)
TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium page, driven with DevTools-protocol commands over a websocket."""

    def __init__(self, executable: str) -> None:
        self._profile = tempfile.mkdtemp(prefix="disncl-chromium-")
        self._process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        self._closing = ExitStack()
        try:
            port = self._devtools_port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [t for t in json.load(response) if t["type"] == "page"]
            self._socket = self._closing.enter_context(
                websockets_sync.connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
            )
        except BaseException:
            self.close()
            raise
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _devtools_port(self) -> int:
        """The port Chromium chose; it writes it to DevToolsActivePort in the profile once listening."""
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._process.returncode} before opening DevTools")
            text = marker.read_text() if marker.is_file() else ""
            if text.strip():
                return int(text.splitlines()[0])
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port within a minute")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result, skipping the events that arrive in between."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=TIMEOUT_S))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = TIMEOUT_S) -> Any:
        """Poll a JavaScript expression until it is truthy; fail naming ``what`` did not happen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def open(self, url: str) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                  mobile=False)
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", "the page to load")

    def wait_idle(self) -> None:
        """Wait until no Gradio component shows a loading indicator (its status tracker is hidden when idle)."""
        busy = ("[...document.querySelectorAll('[data-testid=status-tracker]')]"
                ".filter(e => !e.classList.contains('hide'))"
                ".map(e => ((e.closest('[id]') || {}).id || '?') + ': ' + e.innerText.replace(/\\s+/g, ' '))")
        try:
            self.wait_for(f"{busy}.length === 0", "every pending event to finish")
        except AssertionError as err:
            raise AssertionError(f"{err}; still loading: {self.evaluate(busy)}") from None

    def screenshot(self, path: Path) -> Path:
        """Save the whole page (not just the window) as a PNG, once the app is idle."""
        self.wait_idle()
        height = int(self.evaluate("Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)"))
        self.send("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=min(max(height, WINDOW[1]), 4000),
                  deviceScaleFactor=1, mobile=False)
        # The taller viewport re-lays out virtualised tables; let that settle before capturing.
        time.sleep(0.5)
        self.wait_idle()
        data = self.send("Page.captureScreenshot", format="png")["data"]
        self.send("Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=WINDOW[1], deviceScaleFactor=1,
                  mobile=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._closing.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


# Page helpers: Gradio renders each component inside an element carrying its elem_id.
def _js(value: str) -> str:
    return json.dumps(value)


def type_into(browser: Browser, elem_id: str, text: str) -> None:
    """Fill a Gradio text or number box the way typing does (Svelte listens for input events)."""
    field = f"document.querySelector('#{elem_id} textarea, #{elem_id} input')"
    browser.wait_for(f"!!{field}", f"the field #{elem_id}")
    browser.evaluate(
        f"(() => {{ const el = {field}; el.value = {_js(text)};"
        " el.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )


def click(browser: Browser, selector: str) -> None:
    """Click an element with a real mouse press at its centre, once it exists (Gradio renders
    components progressively, and some of them, like table cells, react to pointer events only)."""
    # Its centre, once the app is idle, the element exists and nothing covers it: a click during a
    # pending event lands on its loading overlay, and a table re-rendered by it forgets the click.
    browser.wait_idle()
    x, y = browser.wait_for(
        f"(() => {{ const el = document.querySelector({_js(selector)}); if (!el) return null;"
        " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
        " const x = r.x + r.width / 2, y = r.y + r.height / 2; const top = document.elementFromPoint(x, y);"
        " return top && (el === top || el.contains(top)) ? [x, y] : null; })()",
        f"the element {selector} to be clickable",
    )
    for kind in ("mousePressed", "mouseReleased"):
        browser.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)


def open_tab(browser: Browser, label: str) -> None:
    browser.evaluate(
        f"[...document.querySelectorAll('[role=tab]')].find(t => t.textContent.trim() === {_js(label)}).click()"
    )


def images_loaded(elem_id: str, at_least: int = 1) -> str:
    """A JS test: the component shows at least ``at_least`` images and all of them have loaded."""
    return (
        f"(() => {{ const imgs = [...document.querySelectorAll('#{elem_id} img')];"
        f" return imgs.length >= {at_least} && imgs.every(i => i.complete && i.naturalWidth > 0); }})()"
    )


def text_of(elem_id: str) -> str:
    """A JS expression for the element's text ('' while it is absent), parenthesised so that it composes:
    ``text_of(x) + ".includes(...)"`` must call ``includes`` on the text, not on the fallback ''."""
    return f"((document.querySelector('#{elem_id}') || {{}}).innerText || '')"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must install it (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); the browser test needs it")
    driver = Browser(executable)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="session")
def assets(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Assets:
    # The same folder as the app tests' fixture, so build_assets' cache serves both.
    return build_assets(tiny_synth, tmp_path_factory.getbasetemp() / "app-assets")


@pytest.fixture(scope="module")
def page_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, logic.Services]]:
    shipped = os.environ.get("DISNCL_APP_ASSETS")
    if shipped:
        bundle, gallery = Path(shipped) / "bundle", Path(shipped) / "gallery"
    else:
        built: Assets = request.getfixturevalue("assets")
        bundle, gallery = built.bundle, built.gallery
    services = logic.Services.load(bundle, gallery)
    demo = app.build_app(services)
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url, services
    finally:
        demo.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return Path(os.environ.get("DISNCL_SCREENSHOTS") or tmp_path)


def test_page_runs_searches_in_every_tab(browser: Browser, page_url: tuple[str, logic.Services], shots: Path) -> None:
    url, services = page_url
    gallery = services.gallery
    browser.open(url)
    browser.wait_for("!!document.querySelector('#search-query')", "the Gradio app to render")
    # The tab opens with an example query answered, and offers example captions to click.
    browser.wait_for(images_loaded("mii-results"), "the example query answered when the page opens")
    browser.wait_for(f"{text_of('example-captions')}.length > 0", "the example captions")

    # A word the model does not know is named, not silently searched.
    type_into(browser, "search-query", "a zebra circle")
    click(browser, "#search-text-button")
    browser.wait_for(f"{text_of('query-notice')}.includes('zebra')", "the unknown-word notice")

    # Text → image, then a click on the best MII result re-queries image → text.
    caption = gallery.captions[0]
    type_into(browser, "search-query", caption)
    click(browser, "#search-text-button")
    browser.wait_for(images_loaded("mii-results"), "the text → image results")
    browser.wait_for(images_loaded("full-results"), "the full-feature results")
    click(browser, "#mii-results button:has(img)")
    top_image = logic.search_text(services, caption, 8)["mii"][0].index
    top_caption = logic.search_image(services, logic.ImageQuery(gallery_index=top_image), 1)["mii"][0].index
    expected = gallery.captions[top_caption]
    browser.wait_for(f"{text_of('mii-captions')}.includes({_js(expected)})", "the image → text results of the click")
    assert browser.screenshot(shots / "search.png").stat().st_size > 10_000

    open_tab(browser, "Pair inspector")
    type_into(browser, "inspect-index", "0")
    type_into(browser, "inspect-caption", gallery.captions[0])
    click(browser, "#inspect-button")
    browser.wait_for(f"{text_of('inspect-summary')}.includes('soft match score')", "the pair inspector's values")
    browser.wait_for(images_loaded("inspect-images"), "the caption's best images")
    browser.screenshot(shots / "pair_inspector.png")

    open_tab(browser, "Noisy-pair explorer")
    browser.wait_for(f"{text_of('explorer-counts')}.includes('training pairs flagged')", "the explorer's counts")
    browser.wait_for(images_loaded("explorer-table", at_least=5), "the explorer's thumbnails")
    # Gradio's table draws body rows as a virtual list of divs.
    click(browser, "#explorer-table .virtual-row .body-cell:nth-child(3)")
    browser.wait_for(f"{text_of('explorer-why')}.includes('Pair ')", "the why-flagged explanation")
    click(browser, "#export-button")
    browser.wait_for(f"{text_of('export-csv')}.includes('.csv')", "the flagged-pairs CSV download")
    browser.screenshot(shots / "noisy_pair_explorer.png")

    open_tab(browser, "Model card")
    browser.wait_for(f"{text_of('model-card')}.includes('Method')", "the model card")
    browser.screenshot(shots / "model_card.png")


@pytest.fixture(scope="module")
def audit_page_url(page_url: tuple[str, logic.Services], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The page's bundle over a gallery of its training split, as `disncl audit` builds it: the explorer's
    pairs are then gallery items, so the embedding map can link its points to them."""
    from disncl.serve.gallery import Gallery
    from disncl.serve.index_cli import collect_items

    _, services = page_url
    scores = services.pair_scores
    items = collect_items(None, services.gallery.root / "train.csv")
    gallery = Gallery.build(services.bundle, items.root, items.image_paths, items.captions, items.caption_image,
                            progress=False)
    assert scores is not None and scores.caption[0] in items.captions
    out = gallery.save(tmp_path_factory.mktemp("audit") / "gallery", pair_scores=services.gallery.pair_scores_path)
    audit = logic.Services(bundle=services.bundle, gallery=Gallery.load(out), pair_scores=scores)
    demo = app.build_app(audit)
    _, url, _ = app.launch(demo, audit, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        demo.close()


def open_accordion(browser: Browser, label_start: str) -> None:
    browser.evaluate(
        f"[...document.querySelectorAll('button')].find(b => b.textContent.trim().startsWith({_js(label_start)}))"
        ".click()"
    )


def test_auditor_features_in_the_browser(
    browser: Browser, audit_page_url: str, page_url: tuple[str, logic.Services], shots: Path
) -> None:
    browser.open(audit_page_url)
    browser.wait_for("!!document.querySelector('#search-query')", "the Gradio app to render")
    open_tab(browser, "Noisy-pair explorer")
    before = browser.wait_for(f"{text_of('explorer-counts')}.includes('training pairs flagged') && "
                              f"{text_of('explorer-counts')}", "the explorer's counts")
    # Flag the 10 % least likely pairs, DataComp-style: exactly that many, ties or not.
    type_into(browser, "flag-amount", "10")
    click(browser, "#flag-button")
    counts = browser.wait_for(f"{text_of('explorer-counts')}.includes('count rule') && {text_of('explorer-counts')}",
                              "the counts under the count rule")
    assert counts != before
    found = re.search(r"([\d,]+) of .* the ([\d,]+) least likely clean", counts)
    assert found and found[1] == found[2], counts
    open_accordion(browser, "Review queue")
    browser.wait_for(images_loaded("review-queue", at_least=2), "the review queue with its thumbnails")
    # The queue follows the count rule: scrolled to its end, its last row is the N-th pair of the flag order
    # (or the queue's last row, where more are flagged than it shows).
    scores = page_url[1].pair_scores
    shown = min(int(found[1].replace(",", "")), logic.REVIEW_QUEUE_ROWS)
    last = int(scores.pair[np.lexsort((scores.pair, scores.mii_sim, scores.clean_prob))[shown - 1]])
    browser.wait_for(
        "(() => { const v = document.querySelector('#review-queue .virtual-table-viewport');"
        " v.scrollTop = v.scrollHeight; const rows = [...document.querySelectorAll('#review-queue .virtual-row')];"
        " return rows.length && rows[rows.length - 1].querySelector('.body-cell').innerText.trim()"
        f" === '{last}'; }})()",
        f"the review queue to end at pair {last}, the last of the {shown} it shows ({found[1]} flagged)",
    )
    # Moving the threshold by hand returns to the probability rule.
    type_into(browser, "explorer-threshold", "0.5")
    browser.wait_for(f"{text_of('explorer-counts')}.includes('at clean probability ≤ 0.50')",
                     "the counts back on the threshold rule")
    click(browser, "#flag-button")  # and back to the count rule, for the screenshot
    browser.wait_for(f"{text_of('explorer-counts')}.includes('count rule')", "the counts under the count rule")
    open_accordion(browser, "Near-duplicates")
    click(browser, "#duplicates-button")
    browser.wait_for(f"{text_of('duplicates-summary')}.includes('pairs at full-space cosine')", "near-duplicates")
    open_accordion(browser, "Embedding map")
    click(browser, "#map-button")
    browser.wait_for(images_loaded("embedding-map"), "the embedding map")
    browser.wait_for(f"{text_of('map-summary')}.includes('are training pairs')", "the map's summary")
    click(browser, "#embedding-map img")
    browser.wait_for(f"{text_of('explorer-why')}.includes('Pair ')", "the clicked point's why-flagged")
    browser.screenshot(shots / "explorer_audit.png")
