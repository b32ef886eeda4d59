"""The explorer at scale: a gallery with 1 M and 10 M training pairs, from index to export.

``python benchmarks/pairs_scale.py [--pairs 1000000 10000000] [--images 20000] [--captions 100000] [--calls 10]``

For each pair count, on the bundled demo's bundle (its embedding widths; the gallery's embeddings are
random unit vectors, which cost what real ones do):

1. **table**: a ``pair_scores.csv`` of that many rows, written with pyarrow (its size is reported);
2. **index**: a gallery of ``--images`` images (one small PNG hard-linked under every name) and
   ``--captions`` captions with the table attached, in a fresh process (as ``disncl index`` would,
   minus encoding): wall time and peak RSS;
3. **app start**: ``python app.py --bundle assets/bundle --gallery G`` until the page answers, and the
   server's RSS then and after the calls below;
4. **explorer** through ``gradio_client`` (``download_files=False``): filter and sort settings, 100 rows,
   ``--calls`` each, p50; with the client's own floor (an echo-free endpoint, ``/model_card``);
5. **flagged export** (``/export_flagged`` at threshold 0.5): wall time.

Writes ``benchmarks/results/pairs_scale.md``. 10 M pairs need about 3 GB of disk and 10 minutes here.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from app_load import HOST, free_port, read_process, wait_until_up  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "pairs_scale.md"
_WORDS = np.array("a the red blue green small large dog cat man woman runs sits on near beach street park "
                  "two three with under over left right of photo picture".split())
EXPLORER_CALLS = {
    "all, by clean probability": (0.5, "all", "clean probability", False, ""),
    "flagged, by MII similarity, descending": (0.5, "flagged", "MII similarity", True, ""),
    "caption contains 'dog', by clean probability": (0.5, "all", "clean probability", False, "dog"),
    "kept, by full − MII": (0.3, "kept", "full − MII", True, ""),
}


def write_table(path: Path, n: int, n_images: int, n_captions: int, seed: int = 0) -> None:
    """A pair-scores CSV of ``n`` rows in the training format (pyarrow's writer: seconds, not minutes)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from disncl.serve.pair_scores import COLUMNS

    rng = np.random.default_rng(seed)
    texts = pa.array([" ".join(rng.choice(_WORDS, size=rng.integers(6, 14))) for _ in range(n_captions)])
    paths = pa.array([f"images/{i:06d}.png" for i in range(n_images)])
    noisy = rng.random(n) < 0.4
    prob = np.where(noisy, rng.beta(1, 8, n), rng.beta(8, 1, n))
    columns = {
        "pair": np.arange(n), "caption_index": np.arange(n), "image_index": rng.integers(0, n_images, n),
        "clean_prob": prob.round(5), "loss": rng.gamma(2.0, 1.5, n).round(5),
        "mii_sim": rng.uniform(-0.2, 0.9, n).round(5), "full_sim": rng.uniform(-0.1, 0.9, n).round(5),
        "image_rank": rng.integers(1, n_images, n), "best_image": rng.integers(0, n_images, n),
        "best_caption_for_image": rng.integers(0, n, n),
    }
    table = {name: pa.array(v) for name, v in columns.items()}
    table["image"] = paths.take(pa.array(columns["image_index"]))
    table["caption"] = texts.take(pa.array(rng.integers(0, n_captions, n)))
    table["is_clean"] = pa.array(np.where(noisy, "0", "1"))
    pacsv.write_csv(pa.table({name: table[name] for name in COLUMNS}), path)


_INDEX = """
import resource, sys, time
import numpy as np
from disncl.serve.bundle import Bundle
from disncl.serve.gallery import Gallery
root, out, table, n_images, n_captions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dims = Bundle.load("assets/bundle").embedding_dims
rng = np.random.default_rng(1)
def unit(n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
t0 = time.perf_counter()
images = {s: unit(n_images, dims[s]) for s in ("mii", "full")}
captions = {s: unit(n_captions, dims[s]) for s in ("mii", "full")}
g = Gallery.from_embeddings(root, [f"images/{i:06d}.png" for i in range(n_images)], images,
                            [f"caption {i}" for i in range(n_captions)], captions, np.arange(n_captions) % n_images)
g.save(out, pair_scores=table)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(n: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    from gradio_client import Client
    from PIL import Image

    root = work / "root"
    (root / "images").mkdir(parents=True, exist_ok=True)
    proto = root / "proto.png"
    Image.new("RGB", (32, 32), (90, 140, 60)).save(proto)
    for i in range(args.images):
        target = root / "images" / f"{i:06d}.png"
        if not target.exists():
            target.hardlink_to(proto)
    table = work / f"pairs_{n}.csv"
    t0 = time.perf_counter()
    write_table(table, n, args.images, args.captions)
    out: dict[str, float] = {"table_s": time.perf_counter() - t0, "csv_mb": table.stat().st_size / 2**20}
    gallery = work / f"gallery_{n}"
    done = subprocess.run([sys.executable, "-c", _INDEX, str(root), str(gallery), str(table), str(args.images),
                           str(args.captions)], cwd=REPO, check=True, capture_output=True, text=True)
    out["index_s"], out["index_peak_mb"] = (float(v) for v in done.stdout.split())
    out["parquet_mb"] = (gallery / "pair_scores.parquet").stat().st_size / 2**20

    port = free_port()
    log = work / "server.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        server = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--bundle", str(REPO / "assets/bundle"),
                                   "--gallery", str(gallery), "--host", HOST, "--port", str(port), "--providers",
                                   "cpu"], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}/"
        wait_until_up(url, server, log)
        out["start_s"] = time.perf_counter() - t0
        out["start_rss_mb"] = read_process(server.pid)[0]
        client = Client(url, verbose=False, download_files=False)
        out["floor_ms"] = _p50(lambda: client.predict(api_name="/model_card"), args.calls)
        for label, call in EXPLORER_CALLS.items():
            out[f"explorer: {label}"] = _p50(lambda call=call: client.predict(*call, 100, api_name="/explorer"),
                                             args.calls)
        t0 = time.perf_counter()
        client.predict(0.5, api_name="/export_flagged")
        out["export_s"] = time.perf_counter() - t0
        # The count rule (docs/method.md Eq. 12c): its first call selects the 30 % by partition, later calls
        # reuse that mask.
        t0 = time.perf_counter()
        threshold, count = client.predict("percent", 30, api_name="/flag_threshold")
        count_call = (threshold, "flagged", "clean probability", False, "", 100, count)
        client.predict(*count_call, api_name="/explorer")
        out["count_first_ms"] = 1000 * (time.perf_counter() - t0)
        out["count_ms"] = _p50(lambda: client.predict(*count_call, api_name="/explorer"), args.calls)
        t0 = time.perf_counter()
        client.predict(threshold, count, api_name="/export_flagged")
        out["count_export_s"] = time.perf_counter() - t0
        out["rss_after_mb"] = read_process(server.pid)[0]
    finally:
        server.terminate()
        server.wait(timeout=30)
    return out


def _p50(fn, calls: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def markdown(results: dict[int, dict[str, float]], args: argparse.Namespace) -> str:
    sizes = list(results)
    head = "| measure | " + " | ".join(f"{n:,} pairs" for n in sizes) + " |"
    lines = ["# The explorer at scale", "",
             f"`python benchmarks/pairs_scale.py --pairs {' '.join(map(str, sizes))}` (gallery of {args.images:,} "
             f"images and {args.captions:,} captions; {args.calls} calls per figure; 2-core CPU).", "",
             head, "|---|" + "---|" * len(sizes)]
    rows = [("pair_scores.csv size, MB", "csv_mb", 0), ("gallery's pair_scores.parquet, MB", "parquet_mb", 0),
            ("index (gallery + table), s", "index_s", 1), ("index peak RSS, MB", "index_peak_mb", 0),
            ("app start, s", "start_s", 1), ("server RSS at start, MB", "start_rss_mb", 0),
            ("server RSS after the calls, MB", "rss_after_mb", 0),
            ("gradio_client floor (/model_card), p50 ms", "floor_ms", 0)]
    rows += [(f"{label}, p50 ms", f"explorer: {label}", 0) for label in EXPLORER_CALLS]
    rows += [("flagged export (threshold 0.5), s", "export_s", 1),
             ("flag the 30 % least likely: /flag_threshold + first /explorer, ms", "count_first_ms", 0),
             ("flagged under that count rule, by clean probability, p50 ms", "count_ms", 0),
             ("flagged export (count rule, 30 %), s", "count_export_s", 1)]
    for label, key, digits in rows:
        lines.append(f"| {label} | " + " | ".join(f"{results[n][key]:.{digits}f}" for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--captions", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        results = {}
        for n in args.pairs:
            results[n] = measure(n, args, Path(tmp))
            print(n, results[n], flush=True)
    text = markdown(results, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
