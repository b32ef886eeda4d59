"""The disncl web app: cross-modal search, a pair inspector, the noisy-pair explorer and a model card.

Run locally and open the printed URL in a browser::

    python app.py --bundle assets/bundle --gallery assets/gallery [--host 127.0.0.1] [--port 7860]

Every computation the page runs is also an API endpoint with a stable name ("/search_text", "/search_image",
"/inspect_pair", "/explorer", "/explain_pair", "/export_flagged", "/model_card", "/gallery_page"),
so ``gradio_client.Client(url).predict(..., api_name="/search_text")`` gives what the page shows.
This file holds layout and event wiring only; the computations live in :mod:`disncl.app`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

# Before gradio is imported: with analytics on, importing it looks up a remote host, and this app
# must start and run without network access.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
# Gradio's queue records every event for its /monitoring dashboard (10,000 deep) and, after each
# event, rebuilds a pandas summary of all of them: about 20 ms of CPU per request once full, and a
# few MB of memory. The dashboard is switched off in launch(), so keep one record and never summarise.
os.environ["GRADIO_ANALYTICS_MAX_EVENTS"] = "1"
os.environ["GRADIO_ANALYTICS_CACHE_FREQUENCY"] = str(2**62)

import gradio as gr  # noqa: E402  (must follow the environment setting above)
from gradio.components.gallery import GalleryData, GalleryImage  # noqa: E402
from gradio.components.plot import PlotData  # noqa: E402
from gradio.data_classes import ImageData  # noqa: E402
from gradio.processing_utils import encode_plot_to_base64  # noqa: E402
from gradio.route_utils import API_PREFIX, get_api_call_path, get_root_url  # noqa: E402
from gradio_client.utils import encode_file_path, get_mimetype, is_http_url_like  # noqa: E402

import disncl.app as logic  # noqa: E402
from disncl.serve import choose_providers  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
BROWSE_PER_PAGE = 40
DEFAULT_K = 8
# Queue and concurrency (README, "Load and limits"; measured by benchmarks/app_load.py).
# Encoder calls (the "encoder" concurrency group: search, inspect) run one at a time: an ONNX Runtime
# session already spreads one request over every core, so two concurrent encodes only split the cores
# and both finish later. The explorer's events touch no encoder (numpy over the pair-scores table),
# so several may run beside a search (the "tables" group). Events without a group (the page's small
# private helpers) get the default, also one at a time each.
ENCODER_CONCURRENCY = 1
TABLE_CONCURRENCY = 4
# Every browser tab or API client holds at most a few events in the queue, so 64 waiting events
# serve dozens of concurrent users (16 sessions measured with zero errors); beyond that a new request
# is refused at once with "queue full" instead of waiting minutes behind the others.
QUEUE_MAX_SIZE = 64
# Uploads and result files Gradio keeps in its cache are each used by one request: `python app.py`
# deletes those older than an hour, every hour, so a long-running app does not fill the disk.
CACHE_CLEANUP = (3600, 3600)

SOFT_MATCH_HELP = """
**Soft match score** = softmax over the candidate images of (MII similarity / τ) for the caption,
evaluated at this image: `exp(s(x, c)/τ) / Σ_j exp(s(x_j, c)/τ)`, with `s` the cosine similarity of
the modality-invariant (MII) codes and the candidates `x_j` the gallery's images plus this image
(counted once when it is itself a gallery image). It is the probability that this image is the
caption's match among those candidates. τ is the trained temperature from the model's manifest
(0.07 when it records none). **Exclusive contribution** = full similarity − MII similarity: how much
the modality-exclusive detail that MII leaves out (backgrounds, wording) moves the score.
"""

CSS = """
#explorer-table img { width: 40px; height: 40px; image-rendering: pixelated; }
.pixel img { width: 140px; height: 140px; object-fit: contain; image-rendering: pixelated; }
.hint { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
"""


@contextmanager
def shown_to_user() -> Iterator[None]:
    """Turn the logic layer's request errors into Gradio errors, which the page shows as a message."""
    try:
        yield
    except logic.AppError as exc:
        raise gr.Error(str(exc)) from exc


class CheckedImage(gr.Image):
    """An image input whose upload is checked (:func:`~disncl.app.check_upload`) before anything opens it.

    Gradio's own preprocessing opens every upload with PIL: a file that is not an image fails there
    with a bare "Error" the page cannot explain, and a data: URL is decoded in full before any size
    check. Here the file size and header are checked first and the user gets the reason.
    """

    # Drawn by the frontend's image component: Gradio names a template's Svelte file after its base class.
    is_template = True

    def preprocess(self, payload: ImageData | None) -> Any:
        if payload is not None:
            with shown_to_user():
                if payload.path is None:
                    raise logic.AppError(
                        "send the image as an uploaded file (gradio_client.handle_file), not as a data: URL"
                    )
                logic.check_upload(payload.path)
        return super().preprocess(payload)


def thumbnail_markdown(path: Path | None) -> str:
    """A gallery-root image as a markdown image served by Gradio's file route, or a dash."""
    if path is None:
        return "—"
    # Relative URL, so the app also works behind a proxy that mounts it under a sub-path.
    return f"![]({'gradio_api/file=' + quote(str(path.resolve()))})"


def _optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"headers": headers, "data": rows}


def build_app(services: logic.Services, cache_cleanup: tuple[int, int] | None = None) -> gr.Blocks:
    """The page: four tabs over one loaded bundle and gallery. Call :func:`launch` to serve it.

    ``cache_cleanup`` is Gradio's ``delete_cache`` (every so many seconds, delete the cached files this
    app created that are older than so many seconds, and all of them at shutdown). Off by default:
    Gradio's cache folder is shared and its file names are content hashes, so an app embedded beside
    others (tests, notebooks) would delete files they still serve.
    """
    gallery = services.gallery
    with gr.Blocks(title="disncl — noisy-correspondence-robust retrieval", delete_cache=cache_cleanup) as demo:
        gr.Markdown(
            "# disncl\nImage–text retrieval trained to stay accurate on noisy pairs (DisNCL). "
            f"Gallery: {gallery.n_images} images, {gallery.n_captions} captions."
        )
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                _search_tab(demo, services)
            with gr.Tab("Pair inspector", id="inspector"):
                _inspector_tab(services)
            with gr.Tab("Noisy-pair explorer", id="explorer"):
                _explorer_tab(demo, services)
            with gr.Tab("Model card", id="card"):
                card = gr.Markdown(elem_id="model-card")
        demo.load(
            lambda: logic.model_card(services.bundle.manifest, services.gallery),
            outputs=card,
            api_name="model_card",
            api_description="The model card: method, training data and noise, test recall (MII vs full).",
            concurrency_id="tables",
            concurrency_limit=TABLE_CONCURRENCY,
        )
    return demo


# ---------------------------------------------------------------------------------------------- shared parts


@dataclass(frozen=True)
class ImagePicker:
    """The query-image inputs: an upload box, the gallery index, and the event of picking a gallery image."""

    image: gr.Image
    index: gr.Number
    picked: Any  # the pick event's dependency, so a tab can chain its query on it

    @property
    def inputs(self) -> list[gr.components.Component]:
        return [self.image, self.index]


def _image_picker(services: logic.Services, label: str, prefix: str, page_api: str | None = None) -> ImagePicker:
    """An upload box plus a browsable page of gallery images; picking one fills both the box and the index.

    ``prefix`` names the elements (``{prefix}-index``); ``page_api`` names the page-turning endpoint
    (one picker publishes it, the others keep theirs private so the API lists it once).
    """
    n_pages = logic.page_count(services.gallery.n_images, BROWSE_PER_PAGE)
    with gr.Column():
        # image_mode=None: Gradio hands over the file as uploaded; disncl's loader converts it to RGB the
        # training way (transparency over white) after the upload checks, instead of Gradio decoding it first.
        image = CheckedImage(
            label=label, type="filepath", image_mode=None, sources=["upload", "clipboard"], height=220,
            elem_classes="pixel",
        )
        # -1, not empty: Gradio shows an empty number box as 0, which would silently pick gallery image 0.
        index = gr.Number(
            label="Gallery image # (-1: use the uploaded image)", value=-1, precision=0, minimum=-1,
            elem_id=f"{prefix}-index",
        )
        with gr.Accordion("…or pick an image from the gallery", open=False):
            # Gradio needs minimum < maximum even for a hidden one-page slider.
            page = gr.Slider(0, max(1, n_pages - 1), value=0, step=1, label="Page", visible=n_pages > 1)
            browse = ResultGallery(
                value=logic.browse_page(services, 0, BROWSE_PER_PAGE), columns=8, height=260,
                allow_preview=False, show_label=False,
            )

    def show_page(p: float, request: gr.Request) -> list[tuple[str, str]]:
        """One page of the gallery's images, for picking a query image."""
        return tile_urls(logic.browse_page(services, int(p), BROWSE_PER_PAGE), request)

    def pick(p: float, evt: gr.SelectData) -> tuple[str, int]:
        i = int(p) * BROWSE_PER_PAGE + int(evt.index)
        return str(services.gallery.image_path(i)), i

    page.release(
        show_page, page, browse, api_name=page_api, api_visibility="public" if page_api else "private",
        concurrency_id="tables", concurrency_limit=TABLE_CONCURRENCY,
    )
    def preview(i: float | None) -> Any:
        """Show a typed gallery index's image; leave the box alone for -1 (the upload is the query)."""
        if i is None or not 0 <= i < services.gallery.n_images:
            return gr.skip()
        return str(services.gallery.image_path(int(i)))

    picked = browse.select(pick, page, [image, index], api_visibility="private")
    index.change(preview, index, image, api_visibility="private", show_progress="hidden")
    # A new upload or a cleared box means the gallery image is no longer the query.
    image.upload(lambda: -1, outputs=index, api_visibility="private")
    image.clear(lambda: -1, outputs=index, api_visibility="private")
    return ImagePicker(image, index, picked)


def _caption_table(label: str, elem_id: str) -> gr.Dataframe:
    """A read-only table of caption hits (:data:`~disncl.app.CAPTION_HIT_HEADERS`)."""
    return gr.Dataframe(
        headers=logic.CAPTION_HIT_HEADERS, column_widths=logic.CAPTION_HIT_WIDTHS, label=label, interactive=False,
        wrap=True, elem_id=elem_id,
    )


def _picked_from(ids: list[int], evt: gr.SelectData) -> int:
    """The gallery index behind a clicked result tile or table row."""
    position = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    return int(ids[int(position)])


class ResultGallery(gr.Gallery):
    """``gr.Gallery`` for result tiles: (path or URL, caption) pairs, described as they are.

    Gradio's own ``Gallery.postprocess`` starts a new thread pool on every call to look at each item
    (arrays and PIL images need saving; paths only need a name and a MIME type), which costs about
    1 ms per tile on a 2-core machine. A template of the Gallery (``is_template``: the same frontend
    component) that builds the same payload inline. An item given as an absolute URL (:func:`tile_urls`)
    is passed on as that URL: Gradio then neither checks nor copies the file per response (about
    0.6 ms a tile, the rest of what 10 results cost over 1); its file route checks it when fetched.
    """

    is_template = True

    def postprocess(self, value: list[tuple[str, str]] | None) -> GalleryData:
        return GalleryData(root=[_tile(src, caption) for src, caption in value or []])


def _tile(src: str, caption: str) -> GalleryImage:
    if not is_http_url_like(src):
        return GalleryImage(image=ImageData(path=src, orig_name=Path(src).name, mime_type=get_mimetype(src)),
                            caption=caption)
    name = Path(src.rsplit("/", 1)[-1]).name
    # gradio_client fetches a file by its server path, which a URL is not, unless it is marked a stream:
    # then by its URL. The browser's Gallery shows an image by its URL either way.
    return GalleryImage(image=ImageData(path=src, url=src, orig_name=name, mime_type=get_mimetype(name),
                                        is_stream=True), caption=caption)


def tile_urls(items: list[tuple[str, str]], request: gr.Request | None) -> list[tuple[str, str]]:
    """(path, caption) tiles as (URL of Gradio's file route, caption), the URL Gradio itself would give them.

    Outside a served request (no ``request``) the paths stay, and Gradio resolves them as usual.
    """
    inner = getattr(request, "request", None) if request is not None else None
    if inner is None:
        return items
    root = get_root_url(request=inner, route_path=get_api_call_path(request=inner),
                        root_path=inner.app.get_blocks().root_path)
    return [(f"{root}{API_PREFIX}/file={encode_file_path(str(Path(path).resolve()))}", caption)
            for path, caption in items]


# ---------------------------------------------------------------------------------------------- search tab


def _search_handlers(services: logic.Services) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The Search tab's two API endpoints, bound to ``services`` (their docstrings are the API docs)."""
    gallery = services.gallery

    def search_text(text: str, k: float, request: gr.Request) -> tuple[Any, ...]:
        """Text → image search: the gallery images closest to a caption under MII and full-feature similarity.

        Parameters:
            text: the caption to search with.
            k: results per space (1-100).
        Returns:
            the MII ranking and the full-feature ranking as image galleries (each image by URL), a table
            of both, and a notice naming the query's words the model does not know ("" when none).
        """
        with shown_to_user():
            hits = logic.search_text(services, text, k)
        return (
            logic.vocabulary_notice(services, text),
            tile_urls(logic.image_gallery_items(services, hits["mii"]), request),
            tile_urls(logic.image_gallery_items(services, hits["full"]), request),
            _table(logic.IMAGE_HIT_HEADERS, logic.image_hit_rows(services, hits)),
            [h.index for h in hits["mii"]],
            [h.index for h in hits["full"]],
        )

    def search_image(upload: str | None, gallery_index: float | None, k: float) -> tuple[Any, ...]:
        """Image → text search: the gallery captions closest to an image under MII and full-feature similarity.

        Parameters:
            upload: an image file (ignored when gallery_index is given).
            gallery_index: a gallery image's index; -1 (or empty) to use the upload.
            k: results per space (1-100).
        Returns:
            the MII ranking and the full-feature ranking of captions, as tables.
        """
        with shown_to_user():
            q = logic.image_query(upload, gallery_index, gallery.n_images)
            hits = logic.search_image(services, q, k)
            return (
                _table(logic.CAPTION_HIT_HEADERS, logic.caption_hit_rows(services, hits["mii"], q)),
                _table(logic.CAPTION_HIT_HEADERS, logic.caption_hit_rows(services, hits["full"], q)),
                [h.index for h in hits["mii"]],
                [h.index for h in hits["full"]],
            )

    return search_text, search_image


@dataclass(frozen=True)
class TextQuery:
    """The text → image part of the Search tab: query, results per space, button, notice, results."""

    query: gr.Textbox
    k: gr.Slider
    go: gr.Button
    notice: gr.Markdown
    examples: gr.Examples | None
    mii_images: gr.Gallery
    full_images: gr.Gallery
    table: gr.Dataframe


def _text_query(gallery: Any) -> TextQuery:
    gr.Markdown("### Text → image", elem_classes="hint")
    examples = logic.example_captions(gallery)
    with gr.Row(equal_height=True):
        query = gr.Textbox(
            label="Caption", placeholder="e.g. a small red circle above a blue square", scale=5, elem_id="search-query",
            max_length=logic.MAX_QUERY_CHARS, value=examples[0] if examples else "",
        )
        k = gr.Slider(1, logic.MAX_K, value=DEFAULT_K, step=1, label="Results per space", scale=2)
        go = gr.Button("Search images", variant="primary", scale=1, elem_id="search-text-button")
    notice = gr.Markdown(elem_id="query-notice")
    offered = gr.Examples(
        [[c] for c in examples], inputs=[query], label="Example captions from the gallery",
        elem_id="example-captions", api_visibility="private",
    ) if examples else None
    with gr.Row():
        mii_images = ResultGallery(
            label="Ranked by MII similarity", columns=4, height=330, allow_preview=False, elem_id="mii-results"
        )
        full_images = ResultGallery(
            label="Ranked by full-feature similarity", columns=4, height=330, allow_preview=False,
            elem_id="full-results",
        )
    with gr.Accordion("Scores and ranks in both spaces", open=False):
        table = gr.Dataframe(
            headers=logic.IMAGE_HIT_HEADERS, interactive=False, wrap=True, column_widths=logic.IMAGE_HIT_WIDTHS
        )
    gr.Markdown("Click a result image to search for its captions.", elem_classes="hint")
    return TextQuery(query, k, go, notice, offered, mii_images, full_images, table)


def _image_query(services: logic.Services) -> tuple[ImagePicker, gr.Button, gr.Dataframe, gr.Dataframe]:
    gr.Markdown("### Image → text", elem_classes="hint")
    with gr.Row():
        with gr.Column(scale=2):
            picker = _image_picker(services, "Query image", "search", page_api="gallery_page")
            go_image = gr.Button("Find captions", variant="primary", elem_id="search-image-button")
        with gr.Column(scale=3):
            mii_captions = _caption_table("Ranked by MII similarity", "mii-captions")
            full_captions = _caption_table("Ranked by full-feature similarity", "full-captions")
            gr.Markdown("Click a caption to search for its images.", elem_classes="hint")
    return picker, go_image, mii_captions, full_captions


def _search_tab(demo: gr.Blocks, services: logic.Services) -> None:
    gallery = services.gallery
    tq = _text_query(gallery)
    query, k, mii_images, full_images = tq.query, tq.k, tq.mii_images, tq.full_images
    picker, go_image, mii_captions, full_captions = _image_query(services)

    ids = {name: gr.State([]) for name in ("mii_images", "full_images", "mii_captions", "full_captions")}
    search_text, search_image = _search_handlers(services)
    text_outputs = [tq.notice, mii_images, full_images, tq.table, ids["mii_images"], ids["full_images"]]
    image_inputs = [*picker.inputs, k]
    image_outputs = [mii_captions, full_captions, ids["mii_captions"], ids["full_captions"]]
    encoder = {"concurrency_id": "encoder", "concurrency_limit": ENCODER_CONCURRENCY}
    gr.on([tq.go.click, query.submit], search_text, [query, k], text_outputs, api_name="search_text", **encoder)
    go_image.click(search_image, image_inputs, image_outputs, api_name="search_image", **encoder)
    picker.picked.then(search_image, image_inputs, image_outputs, api_visibility="private", **encoder)
    if tq.examples is not None:
        tq.examples.load_input_event.then(search_text, [query, k], text_outputs, api_visibility="private", **encoder)
        # The tab opens with the first example answered, so there is something to see before anyone types.
        demo.load(search_text, [query, k], text_outputs, api_visibility="private", **encoder)

    def image_result(ids_shown: list[int], evt: gr.SelectData) -> tuple[str, int]:
        i = _picked_from(ids_shown, evt)
        return str(gallery.image_path(i)), i

    def caption_result(ids_shown: list[int], evt: gr.SelectData) -> str:
        return gallery.captions[_picked_from(ids_shown, evt)]

    for tiles, shown in ((mii_images, ids["mii_images"]), (full_images, ids["full_images"])):
        tiles.select(image_result, shown, picker.inputs, api_visibility="private").then(
            search_image, image_inputs, image_outputs, api_visibility="private", **encoder
        )
    for table, shown in ((mii_captions, ids["mii_captions"]), (full_captions, ids["full_captions"])):
        table.select(caption_result, shown, query, api_visibility="private").then(
            search_text, [query, k], text_outputs, api_visibility="private", **encoder
        )


# ---------------------------------------------------------------------------------------------- inspector tab


def _inspector_tab(services: logic.Services) -> None:
    gallery = services.gallery
    gr.Markdown(SOFT_MATCH_HELP, elem_classes="hint")
    with gr.Row():
        with gr.Column(scale=2):
            picker = _image_picker(services, "Image", "inspect")
            caption = gr.Textbox(
                label="Caption", placeholder="any caption, e.g. one of the gallery's", elem_id="inspect-caption",
                max_length=logic.MAX_QUERY_CHARS,
            )
            k = gr.Slider(1, logic.MAX_K, value=5, step=1, label="Best partners to list")
            go = gr.Button("Inspect pair", variant="primary", elem_id="inspect-button")
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_id="inspect-summary")
            with gr.Accordion("Values as JSON", open=False):
                values = gr.JSON(show_label=False)
            best_captions = _caption_table("The image's best-matching captions (MII)", "inspect-captions")
            best_images = ResultGallery(
                label="The caption's best images (MII)", columns=5, height=200, allow_preview=False,
                elem_id="inspect-images",
            )

    def inspect_pair(
        upload: str | None, gallery_index: float | None, text: str, k: float, request: gr.Request
    ) -> tuple[Any, ...]:
        """Inspect any (image, caption) pair: soft match score, MII and full similarity, exclusive contribution.

        Parameters:
            upload: an image file (ignored when gallery_index is given).
            gallery_index: a gallery image's index; -1 (or empty) to use the upload.
            text: the caption.
            k: how many best partners of each to list (1-100).
        Returns:
            a summary, the values as JSON, the image's best captions and the caption's best images.
        """
        with shown_to_user():
            q = logic.image_query(upload, gallery_index, gallery.n_images)
            report = logic.inspect_pair(services, q, text, k)
        return (
            logic.pair_markdown(report, q),
            report.values(),
            _table(logic.CAPTION_HIT_HEADERS, logic.caption_hit_rows(services, report.image_to_captions, q)),
            tile_urls(logic.image_gallery_items(services, report.caption_to_images), request),
        )

    gr.on(
        [go.click, caption.submit], inspect_pair, [*picker.inputs, caption, k],
        [summary, values, best_captions, best_images], api_name="inspect_pair",
        concurrency_id="encoder", concurrency_limit=ENCODER_CONCURRENCY,
    )


# ---------------------------------------------------------------------------------------------- explorer tab


def _explorer_detail() -> tuple[gr.components.Component, ...]:
    """The explorer's lower half: one pair's "why flagged" with its images, and the export buttons."""
    gr.Markdown("### Why flagged?", elem_classes="hint")
    with gr.Row():
        with gr.Column(scale=3):
            pair = gr.Number(label="Pair # (click a row)", precision=0, minimum=0, elem_id="explorer-pair")
            why = gr.Markdown(elem_id="explorer-why")
        own_image = gr.Image(label="Its image", interactive=False, height=180, scale=1, elem_classes="pixel")
        best_image = gr.Image(
            label="Best image for the caption", interactive=False, height=180, scale=1, elem_classes="pixel"
        )
    gr.Markdown("### Export", elem_classes="hint")
    with gr.Row():
        export = gr.Button("Export the flagged pairs", scale=1, elem_id="export-button")
        csv_file = gr.File(label="Flagged pairs (CSV)", scale=2, elem_id="export-csv")
        noise_files = gr.File(label="Noise index (.npy + .json) and per-caption flags (.npy)", file_count="multiple",
                              scale=2)
    return pair, why, own_image, best_image, export, csv_file, noise_files


def _explorer_handlers(services: logic.Services) -> tuple[Callable[..., Any], ...]:
    """The explorer tab's API endpoints (explorer, explain_pair, export_flagged), bound to ``services``."""

    @functools.lru_cache(maxsize=64)
    def histogram(t: float, n: float | None) -> PlotData:
        """The histogram under a flag rule, drawn and encoded once: encoding the figure is what gr.Plot would
        do on every call (about 0.2 s here), while only the rule changes the picture."""
        figure = logic.histogram_figure(services, t, count=n)
        return PlotData(type="matplotlib", plot=encode_plot_to_base64(figure, "webp"))

    def explorer(t: float, show_: str, sort: str, desc: bool, text: str, rows: float,
                 n: float | None = None) -> tuple[Any, ...]:
        """The noisy-pair explorer under a flag rule: counts and detection quality, histogram, table of pairs.

        Parameters:
            t: flag pairs whose clean probability is at most this (0-1).
            show_: "all", "flagged" or "kept".
            sort: column to sort by (see the Sort by menu).
            desc: sort descending.
            text: keep captions containing this text (empty keeps all).
            rows: at most this many rows.
            n: flag exactly the n least likely pairs instead (the count rule set by /flag_threshold; empty:
                the threshold decides).
        Returns:
            the counts as text, the summary as JSON (precision, recall, AUROC where ground truth exists),
            the histogram and the table.
        """
        with shown_to_user():
            summary = logic.explorer_summary(services, t, n)
            data = logic.explorer_rows(services, t, show_, sort, desc, text, rows, thumbnail_markdown, count=n)
            figure = histogram(t, n)
        return (
            logic.summary_markdown(summary),
            summary,
            figure,
            _table(logic.EXPLORER_HEADERS, data),
            [row[0] for row in data],
        )

    def explain_pair(p: float | None, t: float, n: float | None = None) -> tuple[Any, ...]:
        """Why a training pair is flagged: its scores, the caption its image prefers, the best image for its caption.

        Parameters:
            p: the pair number (the table's first column).
            t: the flagging threshold.
            n: flag exactly the n least likely pairs instead (the count rule set by /flag_threshold; empty:
                the threshold decides).
        Returns:
            the explanation, the pair's image and the best image for its caption.
        """
        with shown_to_user():
            if p is None:
                raise logic.AppError("no pair: click a row of the table or type a pair number")
            found = logic.explain_pair(services, p, t, n)
        return found.markdown, _optional_str(found.image), _optional_str(found.best_image)

    def export_flagged(t: float, n: float | None = None) -> tuple[str, list[str]]:
        """Export the flagged pairs as CSV, and the pairing as a noise index with per-caption flags.

        Parameters:
            t: flag pairs whose clean probability is at most this (0-1).
            n: flag exactly the n least likely pairs instead (the count rule set by /flag_threshold; empty:
                the threshold decides).
        Returns:
            the CSV file and the noise-index files (.npy, .json sidecar, .flagged.npy).
        """
        with shown_to_user():
            csv_path, index_paths = logic.export_flagged(services, t, n)
        return str(csv_path), [str(p) for p in index_paths]

    return explorer, explain_pair, export_flagged


EXPLORER_INTRO = (
    "Every training pair with the clean probability the model assigned it (the posterior of the clean "
    "mode of a two-component mixture on each pair's distance or loss, docs/method.md Eq. 6, 6e). Pairs at or "
    "below the threshold, or the N least likely by count, are **flagged** as probably mismatched. Click a row "
    "to see why."
)


def _explorer_tab(demo: gr.Blocks, services: logic.Services) -> None:
    if services.pair_scores is None:
        gr.Markdown(
            "This gallery has no training pair scores attached, so there is nothing to explore. Rebuild it with "
            "`python -m disncl index ... --pair-scores RUN/pair_scores.csv`."
        )
        return
    gr.Markdown(EXPLORER_INTRO, elem_classes="hint")
    with gr.Row():
        threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.0001, label="Flag pairs with clean probability ≤", scale=3,
                              elem_id="explorer-threshold")
        show = gr.Radio(list(logic.EXPLORER_SHOW), value="all", label="Show", scale=2)
    light = {"concurrency_id": "tables", "concurrency_limit": TABLE_CONCURRENCY}
    flag = [threshold, _flag_by_count(services, threshold, light)]
    with gr.Row():
        sort_by = gr.Dropdown(list(logic.EXPLORER_SORTS), value="clean probability", label="Sort by", scale=2)
        descending = gr.Checkbox(value=False, label="Descending", scale=1)
        contains = gr.Textbox(
            label="Caption contains", placeholder="filter by words", scale=2, max_length=logic.MAX_QUERY_CHARS
        )
        limit = gr.Slider(10, 1000, value=100, step=10, label="Rows", scale=2)
    with gr.Row():
        with gr.Column(scale=2):
            counts = gr.Markdown(elem_id="explorer-counts")
            with gr.Accordion("Counts and detection quality as JSON", open=False):
                metrics = gr.JSON(show_label=False)
        histogram = gr.Plot(show_label=False, scale=3)
    table = gr.Dataframe(
        headers=logic.EXPLORER_HEADERS, datatype=["number", "markdown", "str", *["number"] * 5, "str", "str"],
        interactive=False, wrap=True, elem_id="explorer-table", max_height=520,
        column_widths=["6%", "7%", "35%", "7%", "7%", "7%", "7%", "7%", "7%", "10%"],
    )
    pair, why, own_image, best_image, export, csv_file, noise_files = _explorer_detail()
    shown_pairs = gr.State([])

    explorer, explain_pair, export_flagged = _explorer_handlers(services)

    def row_pair(pairs: list[int], evt: gr.SelectData) -> int:
        return _picked_from(pairs, evt)

    inputs = [threshold, show, sort_by, descending, contains, limit, flag[1]]
    outputs = [counts, metrics, histogram, table, shown_pairs]
    gr.on(
        [threshold.change, flag[1].change, show.change, sort_by.change, descending.change, contains.submit,
         limit.release],
        explorer, inputs, outputs, api_name="explorer", trigger_mode="always_last", show_progress="hidden", **light,
    )
    gr.on(
        [pair.submit], explain_pair, [pair, *flag], [why, own_image, best_image], api_name="explain_pair", **light
    )
    table.select(row_pair, shown_pairs, pair, api_visibility="private").then(
        explain_pair, [pair, *flag], [why, own_image, best_image], api_visibility="private", **light
    )
    export.click(export_flagged, flag, [csv_file, noise_files], api_name="export_flagged", **light)

    # Fill the tab when the page opens, at the default settings.
    demo.load(explorer, inputs, outputs, api_visibility="private", **light)
    _review_section(demo, services, flag, light)
    _duplicates_section(services, light)
    _map_section(services, flag, pair, [why, own_image, best_image], explain_pair, light)


def _flag_by_count(services: logic.Services, threshold: gr.Slider, light: dict[str, Any]) -> gr.Number:
    """Flag exactly the N (or x %) least likely pairs, as DataComp-style filters do; returns the hidden count
    that every flagging endpoint reads beside the threshold (empty: the threshold decides)."""
    with gr.Row(equal_height=True):
        flag_by = gr.Radio(["count", "percent"], value="percent", label="…or flag the least likely pairs by",
                           scale=2)
        flag_amount = gr.Number(value=30, label="how many (count) or what share (percent)", minimum=0, scale=2,
                                elem_id="flag-amount")
        set_threshold = gr.Button("Flag them", scale=1, elem_id="flag-button")
    count = gr.Number(value=None, precision=0, visible=False, elem_id="flag-count")

    def flag_threshold(by: str, amount: float) -> tuple[float, int | None]:
        """The flag rule that flags exactly the least likely pairs by count or by percentage.

        Parameters:
            by: "count" (the N least likely pairs) or "percent" (the x % least likely).
            amount: N or x.
        Returns:
            the threshold (the clean probability of the N-th pair, for the slider) and N; pass both to
            /explorer, /explain_pair, /export_flagged, /review_queue, /export_review and /embedding_map.
            Ties in clean probability are broken by MII similarity, then pair number (docs/method.md Eq. 12c).
        """
        with shown_to_user():
            return logic.flag_rule_for(services, by, amount)

    set_threshold.click(flag_threshold, [flag_by, flag_amount], [threshold, count], api_name="flag_threshold",
                        **light)
    # Moving the slider by hand returns to the threshold rule.
    threshold.input(lambda: None, None, count, api_visibility="private", queue=False)
    return count


def _review_section(
    demo: gr.Blocks, services: logic.Services, flag: list[gr.components.Component], light: dict[str, Any]
) -> None:
    """Flagged pairs with suggested re-matches, decided one by one, exported as a corrected captions file."""
    with gr.Accordion("Review queue: flagged pairs with a suggested re-match", open=False):
        gr.Markdown(
            f"Up to {logic.REVIEW_QUEUE_ROWS} flagged pairs, least likely clean first. Click a row (or type "
            "a pair number), then accept the suggested caption for its image, keep the pair as it is, or drop it. "
            "Flagged pairs left undecided are dropped on export.", elem_classes="hint",
        )
        queue = gr.Dataframe(headers=logic.REVIEW_HEADERS, datatype=["number", "markdown", "str", "number", "str",
                                                                    "markdown", "str"],
                             interactive=False, wrap=True, max_height=420, elem_id="review-queue",
                             column_widths=["6%", "9%", "28%", "7%", "28%", "9%", "13%"])
        with gr.Row(equal_height=True):
            pair = gr.Number(label="Pair #", precision=0, minimum=0, scale=1, elem_id="review-pair")
            decision = gr.Radio([*logic.DECISIONS, "undecided"], value="accept", label="Decision", scale=2)
            record = gr.Button("Record", scale=1, elem_id="review-record")
            export = gr.Button("Export the review", scale=1, elem_id="review-export")
        with gr.Row():
            decisions = gr.JSON(value={}, label="Decisions so far", scale=1)
            files = gr.File(label="Corrected captions, keep and drop lists", file_count="multiple", scale=2,
                            elem_id="review-files")
    shown = gr.State([])

    review_queue, review_decide, export_review = _review_handlers(services)

    # Hidden progress: an update that finishes while the accordion is closed can leave the queue's loading
    # indicator frozen on screen once it opens (seen in the browser test); always_last: the count button
    # changes both inputs at once, and the queue must follow the last of them.
    refresh = {"fn": review_queue, "inputs": [flag[0], decisions, flag[1]], "outputs": [queue, shown],
               "show_progress": "hidden", **light}
    gr.on([flag[0].change, flag[1].change], api_name="review_queue", trigger_mode="always_last", **refresh)
    def row_pair(ids: list[int], evt: gr.SelectData) -> int:
        return _picked_from(ids, evt)

    queue.select(row_pair, shown, pair, api_visibility="private")
    record.click(review_decide, [decisions, pair, decision], decisions, api_name="review_decide", **light).then(
        api_visibility="private", **refresh)
    export.click(export_review, [flag[0], decisions, flag[1]], files, api_name="export_review", **light)
    demo.load(api_visibility="private", **refresh)


def _review_handlers(services: logic.Services) -> tuple[Callable[..., Any], ...]:
    """The review queue's API endpoints (review_queue, review_decide, export_review), bound to ``services``."""

    def review_queue(t: float, decided: dict[str, str] | None,
                     n: float | None = None) -> tuple[dict[str, Any], list[int]]:
        """The review queue under a flag rule: flagged pairs, least likely first, with suggested re-matches.

        Parameters:
            t: flag pairs whose clean probability is at most this (0-1).
            decided: the decisions so far, {pair: "accept" | "keep" | "drop"}.
            n: flag exactly the n least likely pairs instead (the count rule set by /flag_threshold; empty:
                the threshold decides).
        Returns:
            the queue as a table (at most REVIEW_QUEUE_ROWS = 100 rows).
        """
        with shown_to_user():
            rows = logic.review_rows(services, t, decided, logic.REVIEW_QUEUE_ROWS, thumbnail_markdown, count=n)
        return _table(logic.REVIEW_HEADERS, rows), [row[0] for row in rows]

    def review_decide(decided: dict[str, str] | None, p: float | None, d: str) -> dict[str, str]:
        """Record one decision. Parameters: decided: the decisions so far; p: the pair; d: accept, keep,
        drop or undecided. Returns: the updated decisions."""
        with shown_to_user():
            if p is None:
                raise logic.AppError("no pair: click a row of the queue or type a pair number")
            return logic.decide(services, decided, p, d)

    def export_review(t: float, decided: dict[str, str] | None, n: float | None = None) -> list[str]:
        """Export the review: the corrected captions file (image,caption) and the keep and drop lists.

        Parameters:
            t: the flagging threshold.
            decided: the decisions, {pair: "accept" | "keep" | "drop"}; flagged pairs left out are dropped.
            n: flag exactly the n least likely pairs instead (the count rule set by /flag_threshold; empty:
                the threshold decides).
        Returns:
            the three files.
        """
        with shown_to_user():
            return [str(f) for f in logic.export_review(services, t, decided, n)]

    return review_queue, review_decide, export_review


def _duplicates_section(services: logic.Services, light: dict[str, Any]) -> None:
    with gr.Accordion("Near-duplicates in the gallery (duplicated captions inflate many-to-many \"noise\")",
                      open=False):
        with gr.Row(equal_height=True):
            modality = gr.Radio(list(logic.DUPLICATE_MODALITIES), value="caption", label="Items", scale=1)
            cosine = gr.Slider(0.5, 1.0, value=0.98, step=0.001, label="Full-space cosine ≥", scale=2)
            find = gr.Button("Find near-duplicates", scale=1, elem_id="duplicates-button")
        found = gr.Markdown(elem_id="duplicates-summary")
        table = gr.Dataframe(headers=logic.DUPLICATE_HEADERS, datatype=["number", "number", "number", "markdown",
                                                                         "markdown", "str"],
                             interactive=False, wrap=True, max_height=400, elem_id="duplicates-table")

    def near_duplicates(items: str, t: float) -> tuple[str, dict[str, Any]]:
        """Near-duplicate gallery images or captions: pairs whose full-space cosine is at least a threshold.

        Parameters:
            items: "caption" or "image".
            t: the cosine threshold (0.5-1).
        Returns:
            a summary line and a table of the most similar pairs (at most 100 rows).
        """
        with shown_to_user():
            summary, rows = logic.near_duplicates(services, items, t, 100, thumbnail_markdown)
        return summary, _table(logic.DUPLICATE_HEADERS, rows)

    find.click(near_duplicates, [modality, cosine], [found, table], api_name="near_duplicates", **light)


def _map_section(
    services: logic.Services, flag: list[gr.components.Component], pair: gr.Number,
    detail: list[gr.components.Component],
    explain_pair: Callable[..., Any], light: dict[str, Any],
) -> None:
    """The embedding map; clicking a point shows the nearest training pair's "why flagged" above."""
    with gr.Accordion("Embedding map (images and captions, projected once when the gallery was built)", open=False):
        with gr.Row(equal_height=True):
            space = gr.Radio(list(logic.SPACES), value="mii", label="Space", scale=1)
            colour = gr.Radio(list(logic.MAP_COLOURS), value="clean probability", label="Colour captions by", scale=2)
            draw = gr.Button("Draw the map", scale=1, elem_id="map-button")
        summary = gr.Markdown(elem_id="map-summary")
        picture = gr.Image(show_label=False, interactive=False, elem_id="embedding-map", format="png")
    view = gr.State(None)

    def embedding_map(space_: str, colour_by: str, t: float,
                      n: float | None = None) -> tuple[Any, str, logic.MapView]:
        """The 2-D map of the gallery's images and captions in a space, captions coloured by their pair's score.

        Parameters:
            space_: "mii" or "full".
            colour_by: "clean probability" or "flag".
            t: the flagging threshold (for "flag").
            n: for "flag", the n least likely pairs instead (the count rule of /flag_threshold; empty: t).
        Returns:
            the map image and a summary line.
        """
        with shown_to_user():
            drawn = logic.embedding_map(services, space_, colour_by, t, n)
        return drawn.image, drawn.summary, drawn

    def map_pick(space_: str, x: float, y: float) -> int:
        """The training pair whose caption is nearest a point of the map (in the map's axis coordinates).

        Parameters:
            space_: "mii" or "full".
            x: the map's horizontal coordinate.
            y: the map's vertical coordinate.
        Returns:
            the pair number (then ask /explain_pair why it is flagged).
        """
        with shown_to_user():
            return logic.nearest_pair(services, space_, x, y)

    def clicked(space_: str, drawn: logic.MapView | None, evt: gr.SelectData) -> int:
        if drawn is None:
            raise gr.Error("draw the map first")
        x, y = drawn.to_map(*evt.index)
        return map_pick(space_, x, y)

    draw.click(embedding_map, [space, colour, *flag], [picture, summary, view], api_name="embedding_map",
               **light)
    gr.api(map_pick, api_name="map_pick", **light)
    picture.select(clicked, [space, view], pair, api_visibility="private").then(
        explain_pair, [pair, *flag], detail, api_visibility="private", **light
    )


# ---------------------------------------------------------------------------------------------- launch


def launch(
    demo: gr.Blocks,
    services: logic.Services,
    host: str = DEFAULT_HOST,
    port: int | None = DEFAULT_PORT,
    **kwargs: Any,
) -> tuple[Any, str, str | None]:
    """Queue and serve the app; returns Gradio's (app, local URL, share URL).

    Binds to ``host``, this machine only (127.0.0.1) unless the caller names another interface.
    Only the gallery's image root is served besides Gradio's own upload/output cache, and uploads
    over :data:`~disncl.app.MAX_UPLOAD_BYTES` are refused by the upload route itself.
    """
    demo.queue(default_concurrency_limit=ENCODER_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    root = str(services.gallery.root.resolve())
    # Results by URL: files under a static path are served in place by Gradio's file route (which
    # resolves symlinks and checks the allow-list) instead of being hashed and copied into its cache
    # on every response, which cost ~34 ms per result image.
    gr.set_static_paths([root])
    return demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=logic.MAX_UPLOAD_BYTES,
        enable_monitoring=False,
        allowed_paths=[root],
        footer_links=["api"],
        theme=gr.themes.Soft(),
        css=CSS,
        **kwargs,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve the disncl search and noisy-pair explorer app locally.")
    p.add_argument("--bundle", type=Path, default=Path("assets/bundle"), help="exported model bundle folder")
    p.add_argument(
        "--gallery", type=Path, default=Path("assets/gallery"), help="gallery folder (python -m disncl index)"
    )
    p.add_argument(
        "--host", default=DEFAULT_HOST,
        help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the app to the network)",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7860)")
    p.add_argument("--providers", choices=["auto", "cpu", "cuda"], default="auto", help="ONNX Runtime device")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        services = logic.Services.load(args.bundle, args.gallery, providers=choose_providers(args.providers))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(services, cache_cleanup=CACHE_CLEANUP)
    # Gradio's own banner suggests share=True, which this app deliberately does not offer.
    _, url, _ = launch(demo, services, host=args.host, port=args.port, quiet=True, prevent_thread_lock=True)
    print(f"disncl app: open {url} in a browser (Ctrl+C stops it)", flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
