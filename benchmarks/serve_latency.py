"""Serving latency: gallery search (FAISS vs numpy) and end-to-end text queries through the app API.

``python benchmarks/serve_latency.py [--bundle assets/bundle] [--gallery assets/gallery] [--calls 60] [--app-only]``

1. Search on the bundled gallery: one encoded caption against the image index, FAISS flat
   inner product (``Gallery.search_images``) versus a numpy matmul + argsort, top 10.
2. A 100,000 × 256 random unit-vector gallery: FAISS ``IndexFlatIP`` versus numpy, one query and
   1,000 queries, top 10 (both exact, results checked equal).
3. The real app, launched on a free loopback port, queried at ``/search_text`` ``--calls`` times
   with 1 and with 10 results per space: median and p95 wall time per call (encode + both
   searches + result rendering + HTTP) and the ratio of the medians, through Gradio's REST route
   and through ``gradio_client`` (see :func:`bench_app`).
Medians over repeats; prints a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from disncl.serve import Bundle  # noqa: E402
from disncl.serve.gallery import Gallery  # noqa: E402


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    return statistics.median(_timed(fn, repeats, warmup))


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q @ x.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(s, part, 1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(part, order, 1)


def bench_bundled(bundle_dir: Path, gallery_dir: Path) -> list[tuple[str, float, float]]:
    bundle, gallery = Bundle.load(bundle_dir), Gallery.load(gallery_dir)
    q = bundle.encode_texts([gallery.captions[0]]).mii
    x = gallery.embedding("image", "mii")
    assert (gallery.search_images(q, "mii", 10)[1] == numpy_topk(x, q, 10)).all()
    return [(
        f"bundled gallery ({gallery.n_images} images, MII dim {x.shape[1]}), 1 query",
        median_ms(lambda: gallery.search_images(q, "mii", 10), 200),
        median_ms(lambda: numpy_topk(x, q, 10), 200),
    )]


def bench_random(n: int = 100_000, d: int = 256) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(d)
    index.add(x)
    rows = []
    for nq, reps in ((1, 50), (1000, 5)):
        q = x[rng.choice(n, nq, replace=False)] + 0.01 * rng.standard_normal((nq, d)).astype(np.float32)
        assert (index.search(q, 10)[1] == numpy_topk(x, q, 10)).mean() > 0.999
        rows.append((f"random {n:,} × {d}, {nq} quer{'y' if nq == 1 else 'ies'}",
                     median_ms(lambda q=q: index.search(q, 10), reps, 1),
                     median_ms(lambda q=q: numpy_topk(x, q, 10), reps, 1)))
    return rows


def _timed(fn: Callable[[], object], calls: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _p50_p95(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), sorted(times)[int(0.95 * (len(times) - 1))]


def bench_app(
    bundle_dir: Path, gallery_dir: Path, calls: int, ks: tuple[int, ...] = (1, 10)
) -> dict[str, dict[int, tuple[float, float]]]:
    """p50 and p95 ms of ``/search_text`` per results-per-space ``k``, three ways of calling it.

    - ``rest``: Gradio's REST route (``POST /gradio_api/call/search_text``, then its event stream) with
      httpx, as any HTTP client or script does; the answer carries image URLs, nothing is downloaded.
    - ``client``: ``gradio_client.Client(..., download_files=False)``: the same, plus the client's own
      overhead (``floor`` below is that overhead alone).
    - ``client_downloads``: gradio_client's default, which downloads every result image.
    - ``floor``: gradio_client calling an endpoint that only echoes its input (k is ignored).
    """
    import gradio as gr
    import httpx
    from gradio_client import Client

    import app

    services = app.logic.Services.load(bundle_dir, gallery_dir)
    demo = app.build_app(services)
    with demo:
        echo_in, echo_out = gr.Number(visible=False), gr.Number(visible=False)
        echo_in.change(lambda x: x, echo_in, echo_out, api_name="echo_for_benchmark")
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    queries = services.gallery.captions
    out: dict[str, dict[int, tuple[float, float]]] = {}
    try:
        http = httpx.Client(base_url=url, timeout=30)

        def rest(query: str, k: int) -> None:
            event = http.post("/gradio_api/call/search_text", json={"data": [query, k]})
            stream = http.get(f"/gradio_api/call/search_text/{event.json()['event_id']}")
            if "event: complete" not in stream.text:
                raise RuntimeError(f"search_text failed: {stream.text[:300]}")

        fast = Client(url, verbose=False, download_files=False)
        slow = Client(url, verbose=False)
        callers: dict[str, Callable[[str, int], object]] = {
            "rest": rest,
            "client": lambda query, k: fast.predict(query, k, api_name="/search_text"),
            "client_downloads": lambda query, k: slow.predict(query, k, api_name="/search_text"),
        }
        for name, call in callers.items():
            out[name] = {}
            for k in ks:
                cycle = itertools.cycle(queries)
                out[name][k] = _p50_p95(_timed(lambda call=call, k=k, cycle=cycle: call(next(cycle), k), calls))
        floor = _p50_p95(_timed(lambda: fast.predict(1, api_name="/echo_for_benchmark"), calls))
        out["floor"] = {k: floor for k in ks}
    finally:
        demo.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=Path("assets/bundle"))
    p.add_argument("--gallery", type=Path, default=Path("assets/gallery"))
    p.add_argument("--calls", type=int, default=60)
    p.add_argument("--app-only", action="store_true", help="only the end-to-end app calls")
    args = p.parse_args(argv)
    print(f"faiss {faiss.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs\n")
    if not args.app_only:
        print("| search, top 10 | FAISS ms | numpy ms |\n|---|---|---|")
        for name, f_ms, n_ms in bench_bundled(args.bundle, args.gallery) + bench_random():
            print(f"| {name} | {f_ms:.3f} | {n_ms:.3f} |")
    ways = bench_app(args.bundle, args.gallery, args.calls)
    labels = {"rest": "REST route (httpx), image URLs", "client": "gradio_client, download_files=False",
              "client_downloads": "gradio_client default (downloads every image)",
              "floor": "gradio_client, an echo endpoint (its overhead alone)"}
    print(f"\napp /search_text end to end, {args.calls} calls per cell\n")
    print("| caller | p50 k=1 ms | p95 k=1 ms | p50 k=10 ms | p95 k=10 ms | ratio p50 k=10 / k=1 |")
    print("|---|---|---|---|---|---|")
    for name, by_k in ways.items():
        (m1, q1), (m10, q10) = by_k[1], by_k[10]
        print(f"| {labels[name]} | {m1:.1f} | {q1:.1f} | {m10:.1f} | {q10:.1f} | {m10 / m1:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
