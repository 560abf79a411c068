"""The serving robustness targets, measured against live `zkernels serve` subprocesses (demo models, CPU):

1. head-of-line: a 2-document request sent 0.5 s into a 100 x 3,000-character request, with
   --timeout-s 3: its status and latency against the big request's time alone; for the shortest-first
   scheduler and for the round scheduler it replaced (`--scheduler rounds`);
2. a million-int body (`{"documents": [0, 0, ...]}`, 2 MB): its status and answer time, and the
   slowest /health answer while it is handled (polled every 20 ms);
3. --max-queue 2 and 20 requests sent at once during a long forward (a 100-document request in one
   8,192-token slice): how many got 503, and how fast;
4. 2,000 racing TEI /embed calls (over-long texts with truncate=true and =false, short texts) with
   --tokenize-threads 2: answers that differ from `Embedder.encode` or from the expected 413;
5. building a 1,000 x 2,560 float embedding answer: its time, and the longest the event loop went
   without running meanwhile (the old way, jsonable_encoder + json.dumps on the loop, against
   encoding.json_response);
6. the fixed cost of a forward: 60 documents of 2,000 characters in forwards of at most 512 ... 8,192
   tokens, with 1 and 2 torch threads (in this process);
7. a hostile rerank body: a 1,000,000-character query with 1,000 one-character documents (8 MiB
   legal; copied into every pair it would be 10^9 characters to tokenize): its status and answer time,
   the slowest /health meanwhile, and a 2-document request sent right after it;
8. stalled bodies: --max-queue 64 --timeout-s 2 and 64 clients that send their headers and the body's
   first byte, then nothing: a request during the stall (503, the queue is full), the stalled clients'
   answers, and how soon after the stall began a request is answered 200 again.
The servers run with --torch-threads (default 1, as bench_serve_mixed.py: see there).

    python benchmarks/check_serve_targets.py --out benchmarks/results/serve-targets-cpu-DATE.json
"""
import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import string
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import WORDS, SubprocessServer, machine  # noqa: E402

RERANK = "/v1/models/rerank"


def _serve(*flags):
    return SubprocessServer([sys.executable, "-m", "zkernels", "serve", "--log-level", "warning", *flags])


def _text(rng, n):
    """n characters of words: a quarter of them random letters, so a 3,000-character document is about
    700 tokens (the size the issue measured)."""
    text = ""
    while len(text) < n:
        word = rng.choice(WORDS) if rng.random() < 0.75 else "".join(rng.choices(string.ascii_lowercase, k=6))
        text += word + " "
    return text[:n]


def head_of_line(rng, scheduler):
    import httpx
    big = {"model": "m", "query": "what is a prefix cache", "documents": [_text(rng, 3000) for _ in range(100)]}
    small = {"model": "m", "query": "a small question", "documents": ["first document", "second document"]}
    with _serve("--scheduler", scheduler, "--timeout-s", "3600") as srv:
        httpx.post(srv.url + RERANK, json=small, timeout=60)
        t0 = time.perf_counter()
        r = httpx.post(srv.url + RERANK, json=big, timeout=600)
        alone = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        big_tokens = r.json()["total_tokens"]
    with _serve("--scheduler", scheduler, "--timeout-s", "3") as srv:
        httpx.post(srv.url + RERANK, json=small, timeout=60)
        out = {}

        def send_big():
            t = time.perf_counter()
            out["big"] = (httpx.post(srv.url + RERANK, json=big, timeout=600).status_code, time.perf_counter() - t)
        thread = threading.Thread(target=send_big)
        thread.start()
        time.sleep(0.5)
        t = time.perf_counter()
        r = httpx.post(srv.url + RERANK, json=small, timeout=600)
        small_s = time.perf_counter() - t
        thread.join()
    return {"scheduler": scheduler, "big_tokens": big_tokens, "big_alone_s": alone, "small_status": r.status_code,
            "small_s": small_s,
            "small_over_big_alone": small_s / alone, "big_status_with_timeout_3": out["big"][0],
            "big_answered_after_s": out["big"][1]}


@contextlib.contextmanager
def _health_polled(srv, timeout: float):
    """Polls srv's /health every 20 ms from a thread (with an httpx client of `timeout` seconds) while the
    block runs, the block starting 0.3 s after the polling; yields [the slowest answer's seconds]."""
    import httpx
    slowest, stop = [0.0], threading.Event()

    def poll():
        with httpx.Client(timeout=timeout) as http:
            while not stop.is_set():
                t = time.perf_counter()
                http.get(srv.url + "/health")
                slowest[0] = max(slowest[0], time.perf_counter() - t)
                time.sleep(0.02)
    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)
    try:
        yield slowest
    finally:
        stop.set()
        poller.join()


def million_ints():
    import httpx
    body = b'{"model": "m", "query": "q", "documents": [' + b"0," * 999_999 + b"0]}"
    with _serve() as srv, _health_polled(srv, 30) as slowest:
        t = time.perf_counter()
        r = httpx.post(srv.url + RERANK, content=body, headers={"content-type": "application/json"}, timeout=60)
        took = time.perf_counter() - t
        time.sleep(0.3)
    return {"status": r.status_code, "json": r.headers["content-type"].startswith("application/json"),
            "message": r.json()["error"]["message"], "answer_s": took, "slowest_health_s": slowest[0]}


def hostile_query():
    import httpx
    body = {"model": "m", "query": "the query goes on " * 55_556, "documents": ["x"] * 1000}
    small = {"model": "m", "query": "a small query", "documents": ["first document", "second document"]}
    with _serve() as srv, _health_polled(srv, 60) as slowest:
        t = time.perf_counter()
        r = httpx.post(srv.url + RERANK, json=body, timeout=120)
        took = time.perf_counter() - t
        t = time.perf_counter()
        after = httpx.post(srv.url + RERANK, json=small, timeout=120)
        after_s = time.perf_counter() - t
    return {"query_chars": len(body["query"]), "documents": len(body["documents"]), "status": r.status_code,
            "message": r.json()["error"]["message"] if r.status_code != 200 else None, "answer_s": took,
            "slowest_health_s": slowest[0], "small_after_status": after.status_code, "small_after_s": after_s}


def stalled_bodies(n=64, timeout_s=2.0):
    import socket

    import httpx
    small = {"model": "m", "query": "a small query", "documents": ["first document", "second document"]}
    with _serve("--max-queue", str(n), "--timeout-s", str(timeout_s)) as srv:
        host, port = srv.url.split("//")[1].split(":")
        socks = []
        t0 = time.perf_counter()
        for _ in range(n):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(b"POST /v1/models/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 5000\r\n\r\n{")
            socks.append(sock)
        time.sleep(0.3)
        during = httpx.post(srv.url + RERANK, json=small, timeout=30).status_code
        answered_at = None
        while time.perf_counter() - t0 < 10 * timeout_s:
            if httpx.post(srv.url + RERANK, json=small, timeout=30).status_code == 200:
                answered_at = time.perf_counter() - t0
                break
            time.sleep(0.05)
        answers = {}
        for sock in socks:
            try:
                first = sock.recv(64).split(b" ")[1].decode() or "closed"
            except (OSError, IndexError):
                first = "closed"
            answers[first] = answers.get(first, 0) + 1
            sock.close()
    return {"stalled": n, "timeout_s": timeout_s, "status_during_stall": during, "stalled_answers": answers,
            "first_200_after_s": answered_at}


def max_queue(rng):
    import httpx
    big = {"model": "m", "query": "a long forward", "documents": [_text(rng, 3000) for _ in range(100)]}
    small = {"model": "m", "query": "q", "documents": ["a", "b"]}
    with _serve("--max-queue", "2", "--request-tokens-per-forward", "8192", "--timeout-s", "3600") as srv:
        thread = threading.Thread(target=lambda: httpx.post(srv.url + RERANK, json=big, timeout=600))
        thread.start()
        time.sleep(1.0)  # the big request's first 8,192-token forward is running

        async def burst():
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=None)) as http:
                async def one():
                    t = time.perf_counter()
                    r = await http.post(srv.url + RERANK, json=small)
                    return r.status_code, time.perf_counter() - t
                return await asyncio.gather(*(one() for _ in range(20)))
        results = asyncio.run(burst())
        thread.join()
    refused = [s for code, s in results if code == 503]
    return {"sent": 20, "refused_503": len(refused), "refused_within_1s": sum(s <= 1.0 for s in refused),
            "slowest_refusal_s": max(refused, default=float("nan")),
            "statuses": sorted(code for code, _ in results)}


def tokenizer_race():
    import httpx
    import torch

    from zkernels import Embedder
    from zkernels.demo_models import demo_embedder_checkpoint
    embedder = Embedder.from_pretrained(demo_embedder_checkpoint(), dtype=torch.float32)
    long_texts = [f"{k} " + "long text " * 300 for k in range(3)]   # over max_seq_length 512
    short_texts = [f"{k} short text" for k in range(3)]
    expected = {t: embedder.encode([t]).tolist() for t in long_texts + short_texts}
    calls = [(long_texts[k % 3], True) if k % 3 == 0 else (long_texts[k % 3], False) if k % 3 == 1
             else (short_texts[k % 3], False) for k in range(2000)]
    with _serve("--tokenize-threads", "2", "--timeout-s", "3600") as srv:
        async def run():
            wrong, gate = 0, asyncio.Semaphore(32)
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=32)) as http:
                async def one(text, truncate):
                    nonlocal wrong
                    async with gate:
                        r = await http.post(srv.url + "/embed",
                                            json={"inputs": [text], "truncate": truncate, "normalize": False})
                    if truncate or text in short_texts:
                        wrong += r.status_code != 200 or r.json() != expected[text]
                    else:
                        wrong += r.status_code != 413
                await asyncio.gather(*(one(t, c) for t, c in calls))
            return wrong
        wrong = asyncio.run(run())
    return {"calls": len(calls), "wrong": wrong}


def big_answer():
    import numpy as np
    from fastapi.encoders import jsonable_encoder

    from zkernels.serve.encoding import Rows, json_response
    rows = np.random.default_rng(0).standard_normal((1000, 2560)).astype(np.float32)

    async def measure(build):
        gaps, last, done = [0.0], [time.perf_counter()], asyncio.Event()

        async def ticker():  # the gap between two of its turns is how long the loop ran nothing else
            while True:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps[0] = max(gaps[0], now - last[0])
                last[0] = now
                if done.is_set():
                    return
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        t = time.perf_counter()
        size = await build()
        took = time.perf_counter() - t
        done.set()
        await tick
        return {"seconds": took, "longest_loop_stall_s": gaps[0], "mb": size / 1e6}

    async def old():
        body = {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [float(x) for x in r]}
                                           for i, r in enumerate(rows)]}
        return len(json.dumps(jsonable_encoder(body), separators=(",", ":")).encode())

    async def new():
        data = Rows(rows, "float", lambda i, e: {"object": "embedding", "index": i, "embedding": e})
        return len((await json_response({"object": "list", "data": data})).body)
    return {"old_on_loop": asyncio.run(measure(old)), "new": asyncio.run(measure(new))}


def forward_cost():
    """The fixed cost of a forward, which the slice size trades against: a big request's 60 documents of
    2,000 characters run in forwards of at most N tokens, with 1 and 2 torch threads (median of 3)."""
    import statistics

    import torch

    from zkernels import Reranker
    from zkernels.demo_models import demo_checkpoint
    reranker = Reranker.from_pretrained(demo_checkpoint(), dtype=torch.float32)
    rng = random.Random(2)
    docs = ["".join(rng.choice(WORDS) + " " for _ in range(400))[:2000] for _ in range(60)]
    enc = reranker.encode_pairs([("what is a prefix cache", d) for d in docs])
    out, threads0 = [], torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for budget in (512, 1024, 2048, 8192):
                plan = reranker.engine.plan(enc.ids, enc.groups, max_tokens=budget)
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    for batch in plan.batches:
                        reranker.engine.run_batches([batch])
                    times.append(time.perf_counter() - t)
                out.append({"threads": threads, "tokens_per_forward": budget, "forwards": len(plan.batches),
                            "seconds": statistics.median(times), "load_average": machine().get("load_average")})
    finally:
        torch.set_num_threads(threads0)
    return {"tokens": sum(map(len, enc.ids)), "rows": out}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--only", default=None, help="comma-separated steps to run (default: all)")
    p.add_argument("--torch-threads", type=int, default=1, help="the servers' OMP_NUM_THREADS; 0: torch's default")
    args = p.parse_args(argv)
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # inherited by the server subprocesses
    rng = random.Random(0)
    command = "python benchmarks/check_serve_targets.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine_before": machine()}
    steps = [("head_of_line", lambda: [head_of_line(random.Random(1), s) for s in ("shortest-first", "rounds")]),
             ("million_ints", million_ints), ("max_queue", lambda: max_queue(rng)),
             ("tokenizer_race", tokenizer_race), ("big_answer", big_answer), ("forward_cost", forward_cost),
             ("hostile_query", hostile_query), ("stalled_bodies", stalled_bodies)]
    if args.only:
        steps = [(name, step) for name, step in steps if name in args.only.split(",")]
    for name, step in steps:
        result[name] = step()
        print(f"{name}: {json.dumps(result[name])}  (load {machine().get('load_average')})", flush=True)
    result["machine_after"] = machine()
    report = json.dumps(result, indent=1)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
