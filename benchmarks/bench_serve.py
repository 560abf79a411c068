"""`zkernels serve` under load: the batching server against a per-request baseline, in one run.

Both servers answer ZeroEntropy's `POST /v1/models/rerank` on loopback with the same model. The baseline
calls `Reranker.predict` once per request, one request at a time (a lock: concurrent predicts on the
same CPU cores only fight over them), which is the naive server the issue compares with. N concurrent
clients (1, 4, 16, 64) each send realistic rerank requests (1 query x 10-100 documents of 20-120 words)
back to back for a bounded time (the batching server gets a long --timeout-s: the baseline has
none, and a 504 would count against the batching server only); the script prints requests/s,
documents/s and p50/p90/p99 latency for both, and the batching/baseline throughput ratio.

    python benchmarks/bench_serve.py                        # demo model (random weights), CPU
    python benchmarks/bench_serve.py --reranker PATH --device cuda
    python benchmarks/bench_serve.py --smoke                # seconds: plumbing only (the tests run it)

Servers run as subprocesses (the real `zkernels serve` command) so the load generator does not share
their interpreter; --smoke runs them in-process threads to stay fast.
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
WORDS = ("cache prefix query document token batch packed attention model score rank relevance vector index "
         "search embed latency throughput server request client queue forward kernel memory device layer "
         "the a of and to in is for on with as by that this it from at be are was").split()


# ---------------------------------------------------------------------------------------------- load
def make_requests(n: int, docs_range: tuple[int, int], words_range: tuple[int, int], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    sentence = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"model": "zerank-2", "query": sentence(rng.randint(4, 12)),
             "documents": [sentence(rng.randint(*words_range)) for _ in range(rng.randint(*docs_range))]}
            for _ in range(n)]


async def drive(url: str, n_clients: int, duration_s: float, requests: list[dict]) -> dict:
    """n_clients loops, each sending the next request as soon as its last one is answered."""
    import httpx
    latencies, docs, errors = [], [], 0
    stop_at = time.perf_counter() + duration_s
    counter = iter(range(10 ** 9))

    async def client(http):
        nonlocal errors
        while time.perf_counter() < stop_at:
            body = requests[next(counter) % len(requests)]
            t0 = time.perf_counter()
            r = await http.post(url + "/v1/models/rerank", json=body)
            if r.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
            docs.append(len(body["documents"]))

    limits = httpx.Limits(max_connections=n_clients, max_keepalive_connections=n_clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await http.post(url + "/v1/models/rerank", json=requests[0])  # connection and first-call warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(n_clients)))
        elapsed = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 if lat else float("nan")  # noqa: E731
    return {"clients": n_clients, "seconds": elapsed, "requests": len(lat), "errors": errors,
            "requests_per_s": len(lat) / elapsed, "docs_per_s": sum(docs) / elapsed,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "mean_ms": statistics.fmean(lat) * 1e3 if lat else float("nan")}


# ------------------------------------------------------------------------------------------- servers
def baseline_app(reranker):
    """predict() once per request, one request at a time: no cross-request batching."""
    from fastapi import FastAPI

    from zkernels.serve.schemas import ZeRerankRequest

    app, lock = FastAPI(), threading.Lock()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/models/rerank")
    def rerank(body: ZeRerankRequest):  # a plain def: FastAPI runs it in its thread pool
        t0 = time.perf_counter()
        with lock:
            scores = reranker.predict([(body.query, d) for d in body.documents])
        order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:body.top_n]
        return {"results": [{"index": i, "relevance_score": float(scores[i])} for i in order],
                "e2e_latency": time.perf_counter() - t0, "inference_latency": time.perf_counter() - t0,
                "total_bytes": 0, "total_tokens": 0, "actual_latency_mode": "fast"}
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc=None, timeout_s: float = 300) -> None:
    import httpx
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server at {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {url} did not become healthy in {timeout_s} s")


class SubprocessServer:
    """A server process: `argv` run in `root` (the checkout whose zkernels it imports; default this one)."""

    def __init__(self, argv: list[str], root: Path = ROOT):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(argv + ["--port", str(self.port)], env=env, cwd=str(root))

    def __enter__(self):
        _wait_healthy(self.url, self.proc)
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class ThreadServer:
    def __init__(self, app):
        import uvicorn
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("in-process server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        _wait_healthy(self.url)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(60)


# ---------------------------------------------------------------------------------------------- main
def machine() -> dict:
    import torch
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reranker", default=None, help="checkpoint (default: the built-in demo reranker)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--clients", default="1,4,16,64", help="concurrency levels, comma separated")
    p.add_argument("--duration-s", type=float, default=10.0, help="seconds of load per level and server")
    p.add_argument("--docs", default="10,100", help="documents per request: min,max")
    p.add_argument("--words", default="20,120", help="words per document: min,max")
    p.add_argument("--smoke", action="store_true", help="seconds-long plumbing check (in-process servers)")
    p.add_argument("--out", default=None, help="write the results JSON here (and .txt next to it)")
    p.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)  # the baseline subprocess
    p.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _load_reranker(args):
    import torch  # noqa: F401

    from zkernels import Reranker
    from zkernels.demo_models import demo_checkpoint
    return Reranker.from_pretrained(args.reranker or demo_checkpoint(), device=args.device, dtype=args.dtype)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.baseline_server:
        import uvicorn
        uvicorn.run(baseline_app(_load_reranker(args)), host="127.0.0.1", port=args.port, log_level="warning")
        return 0
    if args.smoke:
        args.clients, args.duration_s, args.docs, args.words = "1,4", min(args.duration_s, 1.0), "2,6", "5,20"
    levels = [int(x) for x in args.clients.split(",")]
    docs_range = tuple(int(x) for x in args.docs.split(","))
    words_range = tuple(int(x) for x in args.words.split(","))
    requests = make_requests(256, docs_range, words_range)
    command = "python benchmarks/bench_serve.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from zkernels.demo_models import demo_checkpoint
    model = str(args.reranker or demo_checkpoint())

    if args.smoke:
        from zkernels.serve import ServeLimits, create_app
        from zkernels.serve.models import ServedReranker
        reranker = _load_reranker(args)
        servers = {"batching": lambda: ThreadServer(create_app(ServedReranker(reranker, "bench"),
                                                               limits=ServeLimits(timeout_s=3600))),
                   "baseline": lambda: ThreadServer(baseline_app(reranker))}
    else:
        common = ["--device", args.device] + (["--dtype", args.dtype] if args.dtype else [])
        servers = {"batching": lambda: SubprocessServer([sys.executable, "-m", "zkernels", "serve", "--reranker", model,
                                                         "--log-level", "warning", "--timeout-s", "3600", *common]),
                   "baseline": lambda: SubprocessServer([sys.executable, __file__, "--baseline-server",
                                                         "--reranker", model, *common])}
    rows = []
    for name, make in servers.items():
        with make() as server:
            for n in levels:
                row = {"server": name, **asyncio.run(drive(server.url, n, args.duration_s, requests))}
                rows.append(row)
                print(f"  {name:9s} clients={n:3d}  {row['requests_per_s']:8.2f} req/s  {row['docs_per_s']:9.1f} docs/s"
                      f"  p50 {row['p50_ms']:8.1f}  p90 {row['p90_ms']:8.1f}  p99 {row['p99_ms']:8.1f} ms"
                      f"  errors {row['errors']}", flush=True)
    by = {(r["server"], r["clients"]): r for r in rows}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [f"command: {command}", f"date: {now}", f"machine: {json.dumps(machine())}",
             f"model: {model} on {args.device}",
             f"load: clients {levels}, {args.duration_s:g} s each, requests of 1 query x "
             f"{docs_range[0]}-{docs_range[1]} docs of {words_range[0]}-{words_range[1]} words",
             "", f"{'clients':>7} | {'batching req/s':>14} {'docs/s':>8} {'p50':>7} {'p90':>7} {'p99 ms':>7} | "
                 f"{'baseline req/s':>14} {'docs/s':>8} {'p50':>7} {'p90':>7} {'p99 ms':>7} | ratio"]
    for n in levels:
        b, s = by[("batching", n)], by[("baseline", n)]
        ratio = b["requests_per_s"] / s["requests_per_s"] if s["requests_per_s"] else float("nan")
        b["ratio_vs_baseline"] = ratio
        lines.append(f"{n:7d} | {b['requests_per_s']:14.2f} {b['docs_per_s']:8.1f} {b['p50_ms']:7.1f} "
                     f"{b['p90_ms']:7.1f} {b['p99_ms']:7.1f} | {s['requests_per_s']:14.2f} {s['docs_per_s']:8.1f} "
                     f"{s['p50_ms']:7.1f} "
                     f"{s['p90_ms']:7.1f} {s['p99_ms']:7.1f} | {ratio:5.2f}x")
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": command, "machine": machine(), "model": model, "rows": rows}, indent=1))
        out.with_suffix(".txt").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
