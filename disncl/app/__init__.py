"""The app's presenter: what each tab computes, without Gradio, one module per tab.

``app.py`` lays out components and wires events to these functions, so every number the app shows
can be tested (and reproduced) by calling them on a loaded :class:`Services`. Nothing here imports
torch: the encoders are a torch-free :class:`~disncl.serve.bundle.Bundle`.

Similarity spaces: ``"mii"`` ranks by the modality-invariant codes (what DisNCL retrieves with) and
``"full"`` by the tower features (docs/method.md, Section 1).
"""

from disncl.app.duplicates import DUPLICATE_HEADERS, DUPLICATE_MODALITIES, near_duplicates
from disncl.app.embedding_map import MAP_COLOURS, MapView, embedding_map, nearest_pair
from disncl.app.explorer import (
    EXPLORER_HEADERS,
    EXPLORER_SHOW,
    EXPLORER_SORTS,
    FLAG_BY,
    check_row_limit,
    explain_pair,
    explorer_rows,
    explorer_summary,
    export_flagged,
    flag_rule_for,
    histogram_figure,
    summary_markdown,
)
from disncl.app.inspector import (
    inspect_pair,
    pair_markdown,
    soft_match_score,
)
from disncl.app.limits import (
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_UPLOAD_BYTES,
    ImageQuery,
    check_k,
    check_upload,
    image_query,
)
from disncl.app.model_card import (
    model_card,
)
from disncl.app.review import DECISIONS, REVIEW_HEADERS, REVIEW_QUEUE_ROWS, decide, export_review, review_rows
from disncl.app.search import (
    CAPTION_HIT_HEADERS,
    CAPTION_HIT_WIDTHS,
    IMAGE_HIT_HEADERS,
    IMAGE_HIT_WIDTHS,
    browse_page,
    caption_hit_rows,
    example_captions,
    image_gallery_items,
    image_hit_rows,
    page_count,
    search_image,
    search_text,
    vocabulary_notice,
)
from disncl.app.services import (
    SPACES,
    AppError,
    Services,
    manifest_tau,
)

__all__ = [
    "DECISIONS",
    "REVIEW_HEADERS",
    "REVIEW_QUEUE_ROWS",
    "decide",
    "export_review",
    "review_rows",
    "DUPLICATE_HEADERS",
    "DUPLICATE_MODALITIES",
    "near_duplicates",
    "MAP_COLOURS",
    "MapView",
    "embedding_map",
    "nearest_pair",
    "AppError",
    "CAPTION_HIT_HEADERS",
    "CAPTION_HIT_WIDTHS",
    "EXPLORER_HEADERS",
    "EXPLORER_SHOW",
    "EXPLORER_SORTS",
    "IMAGE_HIT_HEADERS",
    "IMAGE_HIT_WIDTHS",
    "ImageQuery",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MAX_UPLOAD_BYTES",
    "SPACES",
    "Services",
    "browse_page",
    "caption_hit_rows",
    "check_k",
    "check_row_limit",
    "check_upload",
    "explain_pair",
    "FLAG_BY",
    "explorer_rows",
    "explorer_summary",
    "flag_rule_for",
    "export_flagged",
    "histogram_figure",
    "image_gallery_items",
    "image_hit_rows",
    "image_query",
    "inspect_pair",
    "manifest_tau",
    "model_card",
    "page_count",
    "pair_markdown",
    "search_image",
    "search_text",
    "vocabulary_notice",
    "example_captions",
    "soft_match_score",
    "summary_markdown",
]
