"""`zkernels serve` under mixed load: the shortest-first scheduler against the round scheduler it
replaced, in one run, on the same arrivals.

Open-loop Poisson arrivals (a request is sent at its time whether or not earlier ones were answered) of
a mix of rerank requests: 85% small (2-10 documents of 10-40 words), 15% big (60 documents of 2,000
characters), all to `POST /v1/models/rerank` of a `zkernels serve` subprocess on the demo reranker.
Both servers get the same seeded arrival times and bodies. Steps:

1. unloaded: small (6 passes of 30, the servers taking turns) and big requests one at a time, per
   scheduler: the p50 a small request gets alone,
   and the service times the capacity is computed from: capacity = 1 / (0.85 t_small + 0.15 t_big);
2. saturated throughput: N closed-loop clients sending the same fixed list of requests of the mix back
   to back until all are answered (the most the server does): every server does the same work, and
   throughput is that work over the time it took. (Clients that stop at a deadline would end with
   different work done: a scheduler that lets small requests through sooner starts more of the list by
   then, big ones included, and its drain is longer.) The list holds about --saturate-s seconds of
   work at the unloaded capacity;
3. open loop at 50% and 80% of the round scheduler's saturated throughput: p50/p99 latency per size
   class (from the scheduled send time), throughput;
4. the slice-size trade-off: shortest-first with --request-tokens-per-forward 512 / 2048 / 8192 (the
   default is 1,024 on CPU), saturated and at 80%.
All servers run side by side for the whole run, idle but for the one being measured; steps 2-4 alternate
between them in blocks (--blocks, in rotating order, the same arrivals for each server within a block)
and pool the blocks, so that the machine's background load, which varies on a shared machine, is spread
over all of them alike.

The round scheduler is the alternative policy kept selectable (the hidden `zkernels serve --scheduler rounds`):
requests taken in arrival order up to one forward's budget, each round run to its end before anything
new is looked at. Everything else (parsing, admission, tokenizing) is the same code in both servers, so
the comparison isolates the scheduling policy.

    python benchmarks/bench_serve_mixed.py --out benchmarks/results/serve-mixed-cpu-DATE.json
    python benchmarks/bench_serve_mixed.py --smoke          # seconds: plumbing only (the tests run it)
"""
import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import ROOT, WORDS, SubprocessServer, ThreadServer, machine  # noqa: E402

SMALL_SHARE = 0.85
UNLOADED_ROUNDS = 6


# ---------------------------------------------------------------------------------------------- load
def _words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _chars(rng, n):
    text = ""
    while len(text) < n:
        text += rng.choice(WORDS) + " "
    return text[:n]


def small_request(rng, shape):
    n_docs = rng.randint(*shape["small_docs"])
    return {"model": "zerank-2", "query": _words(rng, rng.randint(4, 12)),
            "documents": [_words(rng, rng.randint(*shape["small_words"])) for _ in range(n_docs)]}


def big_request(rng, shape):
    return {"model": "zerank-2", "query": _words(rng, rng.randint(4, 12)),
            "documents": [_chars(rng, shape["big_chars"]) for _ in range(shape["big_docs"])]}


def make_mix(n, shape, seed):
    """[(class, body)]: small with probability SMALL_SHARE, else big."""
    rng = random.Random(seed)
    return [("small", small_request(rng, shape)) if rng.random() < SMALL_SHARE else ("big", big_request(rng, shape))
            for _ in range(n)]


def saturation_list(mix, n, block):
    """n requests of the mix with exactly its share of big ones (rounded), in the mix's order: block b takes
    its own part of the mix, the same for every server. (n requests drawn as they come would hold the
    share only on average, and with 15% big ones of ~60x the work, one big one more or less moves the
    throughput by several percent.)"""
    smalls = [r for r in mix if r[0] == "small"]
    bigs = [r for r in mix if r[0] == "big"]
    n_big = round(n * (1 - SMALL_SHARE))
    out, taken = [], 0
    for i in range(n):
        if taken < n_big and taken < (i + 1) * (1 - SMALL_SHARE):  # a big one wherever the share is behind
            out.append(bigs[(block * n_big + taken) % len(bigs)])
            taken += 1
        else:
            out.append(smalls[(block * (n - n_big) + i - taken) % len(smalls)])
    return out


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def one_at_a_time(url, bodies):
    import httpx
    out = []
    async with httpx.AsyncClient(timeout=600) as http:
        await http.post(url + "/v1/models/rerank", json=bodies[0])  # connection warm-up
        for body in bodies:
            t0 = time.perf_counter()
            r = await http.post(url + "/v1/models/rerank", json=body)
            r.raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


async def closed_loop(url, requests, clients):
    """clients loops sending `requests` ([(kind, body)], each once, in order) back to back until all are
    answered; requests and documents per second."""
    import httpx
    done, docs, errors = [], 0, 0
    todo = iter(requests)

    async def client(http):
        nonlocal docs, errors
        for kind, body in todo:
            r = await http.post(url + "/v1/models/rerank", json=body)
            if r.status_code != 200:
                errors += 1
                continue
            done.append(kind)
            docs += len(body["documents"])
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"clients": clients, "seconds": elapsed, "requests": len(done), "errors": errors,
            "requests_per_s": len(done) / elapsed, "docs_per_s": docs / elapsed,
            "big_requests": done.count("big")}


async def open_loop(url, mix, rate, duration_s, seed):
    """Poisson arrivals at `rate` requests/s for duration_s; latency from each request's scheduled time."""
    import httpx
    rng = random.Random(seed)
    times, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t > duration_s:
            break
        times.append(t)
    lat = {"small": [], "big": []}
    # Where a request's time went, as the server reports it in its answer: e2e_latency (route entered to
    # answer built) and inference_latency (handed to the device scheduler to done: waiting and steps).
    server_lat = {"small": [], "big": []}
    inference = {"small": [], "big": []}
    errors = 0

    async def send(http, at, kind, body, start):
        nonlocal errors
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        try:
            r = await http.post(url + "/v1/models/rerank", json=body)
        except httpx.TransportError:  # a connection the server closed: an error of that server, not the run's end
            errors += 1
            return
        if r.status_code != 200:
            errors += 1
            return
        lat[kind].append(time.perf_counter() - (start + at))
        answer = r.json()
        server_lat[kind].append(answer.get("e2e_latency", float("nan")))
        inference[kind].append(answer.get("inference_latency", float("nan")))
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(send(http, at, *mix[i % len(mix)], start) for i, at in enumerate(times)))
        elapsed = time.perf_counter() - start
    n = len(lat["small"]) + len(lat["big"])
    return {"rate": rate, "sent": len(times), "answered": n, "errors": errors, "seconds": elapsed,
            "throughput_per_s": n / elapsed, "latencies": lat, "server_latencies": server_lat,
            "inference_latencies": inference}


# ------------------------------------------------------------------------------------------- servers
SERVER_COUNTERS = {"forwards": "zkernels_forwards_total", "tokens": "zkernels_tokens_total",
                   "forward_steps": 'zkernels_scheduler_steps_total{kind="forward"',
                   "forward_s": 'zkernels_scheduler_step_seconds_total{kind="forward"',
                   "tokenize_steps": 'zkernels_scheduler_steps_total{kind="tokenize"',
                   "tokenize_s": 'zkernels_scheduler_step_seconds_total{kind="tokenize"'}


def server_counters(url) -> dict:
    """The server's own counters (/metrics, all models): forwards, tokens, and the device thread's steps and
    seconds per kind (0 where the server does not count them)."""
    import httpx
    text = httpx.get(url + "/metrics", timeout=60).text
    out = dict.fromkeys(SERVER_COUNTERS, 0.0)
    for line in text.splitlines():
        for key, prefix in SERVER_COUNTERS.items():
            if line.startswith(prefix) and (line[len(prefix)] in " {," if len(line) > len(prefix) else False):
                out[key] += float(line.rsplit(" ", 1)[1])
    return out


def server_summary(rows: list[dict]) -> dict:
    """Blocks' server counters summed, with tokens per forward and the device thread's busy share."""
    total = {k: sum(r["server"][k] for r in rows) for k in SERVER_COUNTERS}
    seconds = sum(r["seconds"] for r in rows)
    total["tokens_per_forward"] = total["tokens"] / total["forwards"] if total["forwards"] else float("nan")
    total["busy_share"] = (total["forward_s"] + total["tokenize_s"]) / seconds if total["forward_steps"] else None
    return total


def server(args, model, scheduler, slice_tokens=None):
    extra = ["--request-tokens-per-forward", str(slice_tokens)] if slice_tokens else []
    if args.smoke:
        import torch

        from zkernels import Reranker
        from zkernels.serve import ServeLimits, create_app
        from zkernels.serve.models import ServedReranker
        reranker = Reranker.from_pretrained(model, dtype=torch.float32)
        limits = ServeLimits(timeout_s=3600, request_tokens_per_forward=slice_tokens)
        return ThreadServer(create_app(ServedReranker(reranker, "bench"), limits=limits, scheduler=scheduler))
    python = args.server_python or sys.executable
    root = Path(args.server_checkout).resolve() if args.server_checkout else ROOT
    return SubprocessServer([python, "-m", "zkernels", "serve", "--reranker", model, "--log-level", "warning",
                             "--timeout-s", "3600", "--scheduler", scheduler, "--device", "cpu", *extra], root)


def server_code(args) -> dict:
    """Which zkernels the server processes run: its folder and git commit (an A/B against another checkout)."""
    import subprocess
    python = args.server_python or sys.executable
    root = Path(args.server_checkout).resolve() if args.server_checkout else ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    folder = subprocess.run([python, "-c", "import zkernels, os; print(os.path.dirname(zkernels.__file__))"],
                            env=env, cwd=str(root), capture_output=True, text=True, check=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"python": python, "zkernels": folder, "commit": commit}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reranker", default=None, help="checkpoint (default: the built-in demo reranker)")
    p.add_argument("--duration-s", type=float, default=60.0, help="seconds of open-loop arrivals per block")
    p.add_argument("--saturate-s", type=float, default=30.0, help="seconds of closed-loop load per block")
    p.add_argument("--blocks", type=int, default=3, help="blocks per measurement, alternating between servers")
    p.add_argument("--clients", type=int, default=6, help="closed-loop clients for the saturated throughput")
    p.add_argument("--loads", default="0.5,0.8", help="open-loop rates as fractions of the round scheduler's "
                                                          "capacity; empty: saturated throughput only")
    p.add_argument("--slices", default="512,2048,8192", help="--request-tokens-per-forward values to sweep at the "
                                                             "highest load (shortest-first); empty: none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=1,
                   help="intra-op threads of the servers' torch (OMP_NUM_THREADS); 0: torch's default. On this "
                        "project's shared 2-core machines two threads stall on each other whenever another "
                        "process holds a core, by 10x and more, and the measurement measures that")
    p.add_argument("--server-python", default=None, help="the interpreter the server processes run (default: this "
                                                           "one); with --server-checkout, to measure another commit")
    p.add_argument("--server-checkout", default=None, help="the checkout whose zkernels the server processes import "
                                                             "(default: this one)")
    p.add_argument("--smoke", action="store_true", help="seconds-long plumbing check (in-process servers)")
    p.add_argument("--out", default=None, help="write the results JSON here (and .txt next to it)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = {"small_docs": (2, 10), "small_words": (10, 40), "big_docs": 60, "big_chars": 2000}
    if args.smoke:
        shape = {"small_docs": (2, 4), "small_words": (3, 8), "big_docs": 6, "big_chars": 200}
        args.duration_s, args.saturate_s, args.clients, args.slices, args.blocks = 0.5, 0.3, 2, "64", 1
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # inherited by the server subprocesses
    from zkernels.demo_models import demo_checkpoint
    model = str(args.reranker or demo_checkpoint())
    command = "python benchmarks/bench_serve_mixed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rng = random.Random(args.seed + 1)
    smalls = [small_request(rng, shape) for _ in range(30 if not args.smoke else 4)]
    bigs = [big_request(rng, shape) for _ in range(4 if not args.smoke else 2)]
    mix = make_mix(400, shape, args.seed)
    loads = [float(x) for x in args.loads.split(",") if x]
    slices = [int(x) for x in args.slices.split(",") if x]
    result = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "model": model, "shape": shape, "small_share": SMALL_SHARE,
              "blocks": args.blocks, "server_torch_threads": args.torch_threads or "default", "unloaded": {},
              "saturated": {}, "open_loop": [], "slices": []}
    if not args.smoke:
        result["server_code"] = server_code(args)

    def log(msg):
        print(msg, flush=True)
    # Every server runs for the whole benchmark; each measurement alternates between them in blocks (the
    # order rotating from block to block), so a change in the machine's background load hits all alike.
    configs = {"rounds": ("rounds", None), "shortest-first": ("shortest-first", None)}
    configs.update({f"shortest-first/{n}": ("shortest-first", n) for n in slices})
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(server(args, model, *config)) for name, config in configs.items()}

        def blocks(names, run):
            """run(url, block) for each name, args.blocks times, in rotating order: {name: [results]}"""
            out = {name: [] for name in names}
            for b in range(args.blocks):
                for name in names[b % len(names):] + names[:b % len(names)]:
                    before = server_counters(servers[name].url)
                    row = run(servers[name].url, b)
                    after = server_counters(servers[name].url)
                    row["server"] = {k: after[k] - before[k] for k in after}
                    out[name].append(row)
            return out
        main_two = ["rounds", "shortest-first"]
        # Unloaded: UNLOADED_ROUNDS rounds of the small requests (then the big ones), the servers taking
        # turns, so that a blip of the machine's load during one pass does not set a server's p50 alone
        # (30 small requests take ~0.4 s: one pass alone moved the p50 by 40% between two runs).
        times = {name: {"small": [], "big": []} for name in main_two}
        for r in range(1 if args.smoke else UNLOADED_ROUNDS):
            for name in main_two[r % 2:] + main_two[:r % 2]:
                times[name]["small"] += asyncio.run(one_at_a_time(servers[name].url, smalls))
        for name in main_two:
            times[name]["big"] = asyncio.run(one_at_a_time(servers[name].url, bigs))
        for name in main_two:
            small_t, big_t = times[name]["small"], times[name]["big"]
            t_small, t_big = statistics.median(small_t), statistics.median(big_t)
            capacity = 1 / (SMALL_SHARE * t_small + (1 - SMALL_SHARE) * t_big)
            result["unloaded"][name] = {"small_p50_ms": t_small * 1e3, "big_p50_ms": t_big * 1e3,
                                        "capacity_per_s": capacity}
            log(f"{name}: unloaded small p50 {t_small * 1e3:.1f} ms, big p50 {t_big * 1e3:.0f} ms, "
                f"capacity {capacity:.2f} req/s  (load {machine().get('load_average')})")
        every = list(configs)
        fastest = max(u["capacity_per_s"] for u in result["unloaded"].values())
        n_saturate = max(args.clients, round(args.saturate_s * fastest))
        result["saturated_requests_per_block"], result["clients"] = n_saturate, args.clients

        def saturate(url, b):
            return asyncio.run(closed_loop(url, saturation_list(mix, n_saturate, b), args.clients))
        sat = blocks(every, saturate)
        for name in every:
            result["saturated"][name] = merge_closed(sat[name])
            log(f"{name}: saturated {result['saturated'][name]['requests_per_s']:.2f} req/s per block "
                f"{[round(r['requests_per_s'], 2) for r in sat[name]]}")
        # The capacity the open-loop rates are fractions of: the round scheduler's saturated throughput
        # (median block), the most requests of this mix per second it completes.
        capacity = statistics.median(r["requests_per_s"] for r in sat["rounds"])
        result["capacity_per_s"] = capacity
        for load in loads:
            names = main_two + ([f"shortest-first/{n}" for n in slices] if load == max(loads) else [])
            rate = load * capacity
            runs = blocks(names, lambda url, b, rate=rate: asyncio.run(
                open_loop(url, mix, rate, args.duration_s, args.seed + 7 + b)))
            for name in names:
                row = {"scheduler": configs[name][0], "request_tokens_per_forward": configs[name][1], "load": load,
                       **merge_open(runs[name])}
                (result["slices"] if configs[name][1] else result["open_loop"]).append(row)
                log(f"{name} at {load:.0%}: small p50 {row['small_p50_ms']:.0f} p99 {row['small_p99_ms']:.0f} ms, "
                    f"big p50 {row['big_p50_ms']:.0f} p99 {row['big_p99_ms']:.0f} ms, "
                    f"{row['throughput_per_s']:.3f} req/s  (load {machine().get('load_average')})")
    result["machine_after"] = machine()
    report = render(result)
    print("\n" + report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        out.with_suffix(".txt").write_text(report + "\n")
    return 0


def merge_closed(rows: list[dict]) -> dict:
    seconds = sum(r["seconds"] for r in rows)
    return {"blocks": rows, "seconds": seconds, "server": server_summary(rows),
            "requests": sum(r["requests"] for r in rows),
            "errors": sum(r["errors"] for r in rows), "requests_per_s": sum(r["requests"] for r in rows) / seconds,
            "docs_per_s": sum(r["docs_per_s"] * r["seconds"] for r in rows) / seconds}


def merge_open(rows: list[dict]) -> dict:
    """Blocks pooled: latencies together, throughput over all blocks' time."""
    lat = {k: [x for r in rows for x in r["latencies"][k]] for k in ("small", "big")}
    seconds = sum(r["seconds"] for r in rows)
    out = {"rate": rows[0]["rate"], "sent": sum(r["sent"] for r in rows), "errors": sum(r["errors"] for r in rows),
           "answered": len(lat["small"]) + len(lat["big"]), "seconds": seconds,
           "throughput_per_s": (len(lat["small"]) + len(lat["big"])) / seconds,
           "throughput_per_block": [r["throughput_per_s"] for r in rows], "server": server_summary(rows)}
    for kind in ("small", "big"):
        for what in ("server", "inference"):
            xs = [x for r in rows for x in r[f"{what}_latencies"][kind]]
            out[f"{kind}_{what}_p50_ms"], out[f"{kind}_{what}_p99_ms"] = _pct(xs, 0.50) * 1e3, _pct(xs, 0.99) * 1e3
        out[f"{kind}_n"] = len(lat[kind])
        out[f"{kind}_p50_ms"] = _pct(lat[kind], 0.50) * 1e3
        out[f"{kind}_p99_ms"] = _pct(lat[kind], 0.99) * 1e3
        out[f"{kind}_max_ms"] = max(lat[kind], default=float("nan")) * 1e3
    return out


def render(result) -> str:
    un, sat = result["unloaded"], result["saturated"]
    lines = [f"command: {result['command']}", f"date: {result['date']}", f"machine: {json.dumps(result['machine'])}",
             *([f"server code: {json.dumps(result['server_code'])}"] if "server_code" in result else []),
             f"model: {result['model']}, server torch threads: {result['server_torch_threads']}, "
             f"{result['blocks']} alternating blocks per cell",
             f"mix: {SMALL_SHARE:.0%} small ({result['shape']['small_docs']} docs of "
             f"{result['shape']['small_words']} words), {1 - SMALL_SHARE:.0%} big ({result['shape']['big_docs']} docs "
             f"of {result['shape']['big_chars']} chars)", "",
             f"{'scheduler':>20} | {'small alone p50':>15} {'big alone p50':>13} {'capacity':>9} | "
             f"{'saturated req/s':>15} {'docs/s':>7} {'ratio':>7}"]
    for name in sat:
        alone = (f"{un[name]['small_p50_ms']:12.1f} ms {un[name]['big_p50_ms']:10.0f} ms "
                 f"{un[name]['capacity_per_s']:7.2f}/s" if name in un else f"{'':>37}")
        lines.append(f"{name:>20} | {alone} | {sat[name]['requests_per_s']:15.2f} {sat[name]['docs_per_s']:7.0f} "
                     f"{sat[name]['requests_per_s'] / sat['rounds']['requests_per_s']:6.2f}x")
    if "saturated_requests_per_block" in result:
        lines.append(f"saturated: the same {result['saturated_requests_per_block']} requests per block for every "
                     f"server, {result['clients']} closed-loop clients, until all are answered")
    base = un["shortest-first"]["small_p50_ms"]
    lines += ["", f"open loop (Poisson), rates as fractions of the round scheduler's saturated throughput "
                  f"({result['capacity_per_s']:.2f} req/s); latency from the scheduled send time; p99/alone: "
                  f"against shortest-first's small p50 alone",
              f"{'scheduler':>15} {'load':>5} {'slice':>6} | {'small p50':>9} {'p99 ms':>8} {'p99/alone':>9} | "
              f"{'big p50':>8} {'p99 ms':>8} | {'req/s':>6} {'n':>4} {'errors':>6}"]
    for row in result["open_loop"] + result["slices"]:
        lines.append(f"{row['scheduler']:>15} {row['load']:5.0%} {row['request_tokens_per_forward'] or '-'!s:>6} | "
                     f"{row['small_p50_ms']:9.0f} {row['small_p99_ms']:8.0f} {row['small_p99_ms'] / base:8.1f}x | "
                     f"{row['big_p50_ms']:8.0f} {row['big_p99_ms']:8.0f} | {row['throughput_per_s']:6.3f} "
                     f"{row['answered']:4d} {row['errors']:6d}")
    lines += ["", "small requests' time as the server saw it (its answer's e2e_latency: route entered to answer built; "
                  "inference_latency: handed to the scheduler to done), against the client's",
              f"{'scheduler':>15} {'load':>5} {'slice':>6} | {'client p50':>10} {'p99 ms':>7} | {'server p50':>10} "
              f"{'p99 ms':>7} | {'inference p50':>13} {'p99 ms':>7}"]
    for row in result["open_loop"] + result["slices"]:
        lines.append(f"{row['scheduler']:>15} {row['load']:5.0%} {row['request_tokens_per_forward'] or '-'!s:>6} | "
                     f"{row['small_p50_ms']:10.0f} {row['small_p99_ms']:7.0f} | {row['small_server_p50_ms']:10.1f} "
                     f"{row['small_server_p99_ms']:7.1f} | {row['small_inference_p50_ms']:13.1f} "
                     f"{row['small_inference_p99_ms']:7.1f}")
    lines += ["", "the device thread (the server's /metrics over each cell's blocks; busy: its steps' seconds over the "
                  "cell's seconds; '-': not counted by that server)",
              f"{'cell':>28} | {'forwards':>8} {'tokens/fwd':>10} {'forward s':>9} | {'tok. steps':>10} "
              f"{'tok. s':>7} | {'busy':>5}"]
    cells = [(f"{name} saturated", row["server"]) for name, row in sat.items()]
    cells += [(f"{row['scheduler']} {row['load']:.0%} {row['request_tokens_per_forward'] or ''}".strip(), row["server"])
              for row in result["open_loop"] + result["slices"]]
    for name, srv in cells:
        counted = srv["busy_share"] is not None
        lines.append(f"{name:>28} | {srv['forwards']:8.0f} {srv['tokens_per_forward']:10.0f} "
                     + (f"{srv['forward_s']:9.1f} | {srv['tokenize_steps']:10.0f} {srv['tokenize_s']:7.1f} | "
                        f"{srv['busy_share']:5.0%}" if counted else f"{'-':>9} | {'-':>10} {'-':>7} | {'-':>5}"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
