"""Serving latency: gallery search (FAISS vs numpy) and end-to-end text queries through the app API.

``python benchmarks/serve_latency.py [--bundle assets/bundle] [--gallery assets/gallery] [--calls 60] [--app-only]``

1. Search on the bundled gallery: one encoded caption against the image index, FAISS flat
   inner product (``Gallery.search_images``) versus a numpy matmul + argsort, top 10.
2. A 100,000 × 256 random unit-vector gallery: FAISS ``IndexFlatIP`` versus numpy, one query and
   1,000 queries, top 10 (both exact, results checked equal).
3. The real app, launched on a free loopback port, queried with ``gradio_client`` at
   ``/search_text`` ``--calls`` times with 1 and with 10 results per space: median and p95 wall
   time per call (encode + both searches + result rendering + HTTP) and the ratio of the medians.
Medians over repeats; prints a markdown table.
"""

from __future__ import annotations

import argparse
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
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


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


def bench_app(
    bundle_dir: Path, gallery_dir: Path, calls: int, ks: tuple[int, ...] = (1, 10)
) -> dict[int, tuple[float, float]]:
    """Median and p95 ms of ``/search_text`` per results-per-space ``k``, calls interleaved across ``k``."""
    from gradio_client import Client

    import app

    services = app.logic.Services.load(bundle_dir, gallery_dir)
    demo = app.build_app(services)
    _, url, _ = app.launch(demo, services, port=None, prevent_thread_lock=True, quiet=True)
    times: dict[int, list[float]] = {k: [] for k in ks}
    try:
        client = Client(url, verbose=False)
        queries = services.gallery.captions
        for i in range(calls + 3):
            for k in ks:
                t0 = time.perf_counter()
                client.predict(queries[i % len(queries)], k, api_name="/search_text")
                if i >= 3:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    finally:
        demo.close()
    return {k: (statistics.median(t), sorted(t)[int(0.95 * (len(t) - 1))]) for k, t in times.items()}


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
    by_k = bench_app(args.bundle, args.gallery, args.calls)
    print(f"\napp /search_text end to end, {args.calls} calls each (interleaved)\n")
    print("| results per space | images returned | p50 ms | p95 ms |\n|---|---|---|---|")
    for k, (med, p95) in by_k.items():
        print(f"| {k} | {2 * k} | {med:.1f} | {p95:.1f} |")
    print(f"\nratio p50(k=10) / p50(k=1): {by_k[10][0] / by_k[1][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
