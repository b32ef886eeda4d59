"""Load test of the app: concurrent gradio_client sessions doing mixed text and image searches, on loopback.

``python benchmarks/app_load.py [--sessions 16] [--duration 60] [--max-requests 20000] [--out DIR]``

1. Starts ``python app.py`` (the bundled demo by default) as a separate process on a free
   127.0.0.1 port, with its own Gradio upload folder, and waits until it answers.
2. Opens ``--sessions`` ``gradio_client`` sessions, one per thread. Each loops: with probability
   ``--image-share`` an image search (``/search_image``, uploading one of the gallery's image files),
   otherwise a text search (``/search_text`` with one of the gallery's captions), ``k`` from 1 to 10.
   The first ``--warmup`` seconds are not counted; then every request of the next ``--duration``
   seconds is timed, and any exception is recorded as an error. The run is bounded: no new request
   starts after the duration or after ``--max-requests``, and each request times out after
   ``--request-timeout`` seconds.
3. Samples the server process's resident memory (psutil when installed, else ``/proc/PID/status``)
   and CPU time every ``--sample-every`` seconds.
4. Writes ``DIR/app_load.json`` (every figure, every error message) and ``DIR/app_load.md`` (a
   summary table), atomically, and prints the markdown.

Result files are downloaded by no one (``download_files=False``): latency is the API call (queue
wait, encode, both searches, response), not the browser fetching thumbnails.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402  (the queue settings are reported with the results)
from disncl.io import atomic_write_json, atomic_write_text  # noqa: E402
from disncl.serve.gallery import Gallery  # noqa: E402

HOST = "127.0.0.1"  # loopback only: this script never exposes the app
STARTUP_TIMEOUT_S = 180.0
PAGE_SIZE = 4096


@dataclass(frozen=True)
class Request:
    """One timed API call: what, when (seconds from the start of the measured window), how long, how it ended."""

    kind: str
    session: int
    start_s: float
    latency_ms: float
    error: str | None


@dataclass(frozen=True)
class Sample:
    """The server process at one moment: resident memory and CPU seconds used so far."""

    t_s: float
    rss_mb: float
    cpu_s: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def read_process(pid: int) -> tuple[float, float]:
    """(resident MB, user+system CPU seconds) of a process."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/stat") as fh:
            # Fields after the parenthesised command name; utime and stime are the 14th and 15th overall.
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return rss_kb / 1024, (int(fields[11]) + int(fields[12])) / ticks
    proc = psutil.Process(pid)
    times = proc.cpu_times()
    return proc.memory_info().rss / 2**20, times.user + times.system


def start_server(args: argparse.Namespace, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``python app.py`` on loopback, its uploads in ``workdir``, its output in ``workdir/server.log``."""
    env = {**os.environ, "GRADIO_TEMP_DIR": str(workdir / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [
        sys.executable, str(REPO / "app.py"), "--bundle", str(args.bundle), "--gallery", str(args.gallery),
        "--host", HOST, "--port", str(port), "--providers", "cpu",
    ]
    log = open(workdir / "server.log", "wb")  # noqa: SIM115  (closed by the child's exit; owned by it)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


class LoadRun:
    """The sessions, the shared request budget and the memory sampler of one run."""

    def __init__(self, args: argparse.Namespace, url: str, pid: int, gallery: Gallery) -> None:
        self.args = args
        self.url = url
        self.pid = pid
        self.captions = gallery.captions
        self.images = [str(gallery.image_path(i)) for i in range(gallery.n_images)]
        self.requests: list[Request] = []
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.started = 0
        self.t0 = 0.0  # start of the measured window (monotonic), set by run()
        self.stop = threading.Event()

    def _take_ticket(self) -> bool:
        with self.lock:
            if self.started >= self.args.max_requests:
                return False
            self.started += 1
            return True

    def session(self, index: int, client: Client, ready: threading.Barrier) -> None:
        rng = random.Random(self.args.seed * 1000 + index)
        ready.wait()
        while not self.stop.is_set() and time.monotonic() < self.t0 + self.args.duration:
            kind = "image" if rng.random() < self.args.image_share else "text"
            k = rng.randint(1, 10)
            begin = time.monotonic()
            measured = begin >= self.t0
            if measured and not self._take_ticket():
                return
            error = None
            try:
                if kind == "image":
                    client.predict(handle_file(rng.choice(self.images)), -1, k, api_name="/search_image")
                else:
                    client.predict(rng.choice(self.captions), k, api_name="/search_text")
            except Exception as exc:  # every failure is a result to report, whatever its type
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
            if measured:
                request = Request(kind, index, begin - self.t0, (time.monotonic() - begin) * 1e3, error)
                with self.lock:
                    self.requests.append(request)

    def sampler(self) -> None:
        while not self.stop.is_set():
            rss, cpu = read_process(self.pid)
            self.samples.append(Sample(time.monotonic() - self.t0, rss, cpu))
            self.stop.wait(self.args.sample_every)

    def run(self) -> float:
        """Run warm-up and measured window; returns the measured window's wall time in seconds."""
        kwargs = {"timeout": self.args.request_timeout}
        clients = [
            Client(self.url, verbose=False, download_files=False, analytics_enabled=False, httpx_kwargs=kwargs)
            for _ in range(self.args.sessions)
        ]
        ready = threading.Barrier(self.args.sessions + 1)
        threads = [
            threading.Thread(target=self.session, args=(i, c, ready), daemon=True) for i, c in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        self.t0 = time.monotonic() + self.args.warmup
        ready.wait()
        # Memory sampling starts with the warm-up (negative times), so the report shows the first allocations.
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        hard_stop = self.t0 + self.args.duration + self.args.request_timeout + 30
        for thread in threads:
            thread.join(max(0.0, hard_stop - time.monotonic()))
        end = time.monotonic()
        self.stop.set()
        sampler.join()
        stuck = sum(t.is_alive() for t in threads)
        if stuck:
            print(f"warning: {stuck} sessions still inside a request at the hard stop", file=sys.stderr)
        return max(end - self.t0, 1e-9)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def latency_stats(requests: list[Request]) -> dict[str, Any]:
    ok = [r.latency_ms for r in requests if r.error is None]
    return {
        "requests": len(requests),
        "errors": sum(r.error is not None for r in requests),
        "p50_ms": percentile(ok, 50),
        "p95_ms": percentile(ok, 95),
        "p99_ms": percentile(ok, 99),
        "max_ms": max(ok) if ok else None,
        "mean_ms": statistics.fmean(ok) if ok else None,
    }


def memory_stats(samples: list[Sample], duration: float) -> dict[str, Any]:
    """RSS at the start, middle and end of the measured window, its growth, and the fitted trend."""
    window = [s for s in samples if 0 <= s.t_s <= duration + 1]
    if len(window) < 2:
        return {"samples": len(window)}

    def at(t: float) -> Sample:
        return min(window, key=lambda s: abs(s.t_s - t))

    start, middle, end = at(0.0), at(duration / 2), window[-1]
    slope = statistics.linear_regression([s.t_s for s in window], [s.rss_mb for s in window]).slope
    return {
        "samples": len(window),
        "rss_before_warmup_mb": samples[0].rss_mb,
        "rss_start_mb": start.rss_mb,
        "rss_middle_mb": middle.rss_mb,
        "rss_end_mb": end.rss_mb,
        "rss_max_mb": max(s.rss_mb for s in window),
        "growth_mb": end.rss_mb - start.rss_mb,
        "growth_second_half_mb": end.rss_mb - middle.rss_mb,
        "trend_mb_per_min": slope * 60,
        "server_cpu_s": end.cpu_s - start.cpu_s,
    }


def summarise(args: argparse.Namespace, run: LoadRun, wall_s: float) -> dict[str, Any]:
    requests = sorted(run.requests, key=lambda r: r.start_s)
    completed = [r for r in requests if r.error is None]
    memory = memory_stats(run.samples, wall_s)
    cpu = memory.get("server_cpu_s")
    return {
        "settings": {
            "sessions": args.sessions, "duration_s": args.duration, "warmup_s": args.warmup,
            "max_requests": args.max_requests, "image_share": args.image_share, "seed": args.seed,
            "bundle": str(args.bundle), "gallery": str(args.gallery),
            "app": {
                "encoder_concurrency": app.ENCODER_CONCURRENCY, "table_concurrency": app.TABLE_CONCURRENCY,
                "queue_max_size": app.QUEUE_MAX_SIZE,
            },
        },
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": list(os.getloadavg())},
        "measured_s": wall_s,
        "throughput_rps": len(completed) / wall_s,
        "server_cpu_ms_per_request": None if cpu is None or not completed else 1e3 * cpu / len(completed),
        "all": latency_stats(requests),
        "text": latency_stats([r for r in requests if r.kind == "text"]),
        "image": latency_stats([r for r in requests if r.kind == "image"]),
        "error_messages": dict(Counter(r.error for r in requests if r.error).most_common()),
        "memory": memory,
        "memory_samples": [asdict(s) for s in run.samples],
        "requests": [asdict(r) for r in requests],
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    s, mem = result["settings"], result["memory"]
    lines = [
        f"## App load test: {s['sessions']} sessions, {s['duration_s']:g} s "
        f"({s['image_share']:.0%} image searches by upload, the rest text searches)",
        "",
        f"Queue: encoder concurrency {s['app']['encoder_concurrency']}, tables {s['app']['table_concurrency']}, "
        f"max queue {s['app']['queue_max_size']}. Machine: {result['machine']['cpus']} CPUs, load average at the "
        f"end {result['machine']['load_average_at_end'][0]:.1f}.",
        "",
        "| requests | errors | p50 ms | p95 ms | p99 ms | max ms | requests/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("all", "text", "image"):
        st = result[name]
        rate = result["throughput_rps"] if name == "all" else (st["requests"] - st["errors"]) / result["measured_s"]
        lines.append(
            f"| {name}: {st['requests']} | {st['errors']} | {_fmt(st['p50_ms'])} | {_fmt(st['p95_ms'])} | "
            f"{_fmt(st['p99_ms'])} | {_fmt(st['max_ms'])} | {rate:.1f} |"
        )
    lines += [
        "",
        f"Server memory (RSS): {_fmt(mem.get('rss_before_warmup_mb'))} MB before warm-up; "
        f"{_fmt(mem.get('rss_start_mb'))} MB at the start of the measured window, "
        f"{_fmt(mem.get('rss_middle_mb'))} MB in the middle, {_fmt(mem.get('rss_end_mb'))} MB at the end "
        f"(growth {_fmt(mem.get('growth_mb'), 1)} MB, second half {_fmt(mem.get('growth_second_half_mb'), 1)} MB, "
        f"fitted trend {_fmt(mem.get('trend_mb_per_min'), 2)} MB/min, max {_fmt(mem.get('rss_max_mb'))} MB). "
        f"Server CPU {_fmt(result['server_cpu_ms_per_request'], 1)} ms per request.",
    ]
    if result["error_messages"]:
        lines += ["", "Errors:", *(f"- {n}× {m}" for m, n in result["error_messages"].items())]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", type=Path, default=REPO / "assets" / "bundle")
    p.add_argument("--gallery", type=Path, default=REPO / "assets" / "gallery")
    p.add_argument("--sessions", type=int, default=16, help="concurrent gradio_client sessions (default 16)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before measuring (default 5)")
    p.add_argument("--max-requests", type=int, default=20_000, help="stop starting requests after this many")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds before one request counts as failed")
    p.add_argument("--image-share", type=float, default=0.5, help="fraction of image searches (default 0.5)")
    p.add_argument("--sample-every", type=float, default=1.0, help="seconds between memory samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="folder for the JSON and markdown")
    return p


def check_args(args: argparse.Namespace) -> None:
    problems = []
    if not 1 <= args.sessions <= 256:
        problems.append(f"--sessions must be 1..256, got {args.sessions}")
    if not 0 < args.duration <= 3600:
        problems.append(f"--duration must be in (0, 3600] seconds, got {args.duration}")
    if args.warmup < 0 or args.max_requests < 1 or args.request_timeout <= 0 or args.sample_every <= 0:
        problems.append("--warmup must be >= 0 and --max-requests, --request-timeout, --sample-every positive")
    if not 0 <= args.image_share <= 1:
        problems.append(f"--image-share must be between 0 and 1, got {args.image_share}")
    if problems:
        raise SystemExit("error: " + "; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    gallery = Gallery.load(args.gallery)
    port = free_port()
    url = f"http://{HOST}:{port}/"
    with tempfile.TemporaryDirectory(prefix="disncl-load-") as tmp:
        workdir = Path(tmp)
        server = start_server(args, port, workdir)
        try:
            wait_until_up(url, server, workdir / "server.log")
            run = LoadRun(args, url, server.pid, gallery)
            wall_s = run.run()
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    result = summarise(args, run, wall_s)
    report = markdown(result)
    atomic_write_json(args.out / "app_load.json", result)
    atomic_write_text(args.out / "app_load.md", report)
    print(report)
    print(f"written: {args.out / 'app_load.json'}, {args.out / 'app_load.md'}")
    return 1 if result["all"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
