"""Rows/s of `zkernels.ray.rerank_dataset` with 1 and 2 actors, and of one in-process Reranker.predict
(the baseline) on the same rows, in one run.

    python benchmarks/bench_ray.py [--rows 1000] [--docs-per-query 50] [--cpus 2] [--out FILE]

Uses a tiny random-weight checkpoint (zkernels.random_checkpoints) and a local Ray with --cpus CPUs (one CPU per
actor). Ray's times are end to end (actor start and model load included), as a batch job sees them.
On a GPU machine pass --device cuda and --num-gpus 1 to give each actor a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_rows(n: int, docs_per_query: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"query": f"query {i // docs_per_query}: what does topic {i // docs_per_query} mean?",
             "document": f"document {i}: " + " ".join(f"w{int(x)}"
                                                        for x in rng.integers(0, 5000, rng.integers(20, 60)))}
            for i in range(n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000)
    ap.add_argument("--docs-per-query", type=int, default=50)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs for the actors of the local Ray (it gets one more)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--num-gpus", type=float, default=None)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args()

    import ray
    import torch

    from zkernels import Reranker
    from zkernels.random_checkpoints import make_tiny_checkpoint
    from zkernels.ray import rerank_dataset

    lines = [f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}",
             f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
             f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, ray {ray.__version__}",
             f"device: {args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}; model: tiny random Qwen3 "
             f"(hidden 64, 2 layers, Qwen vocabulary)",
             f"rows: {args.rows} (query, document) pairs, {args.docs_per_query} per query, documents 20-60 words"]
    print("\n".join(lines), flush=True)
    rows = make_rows(args.rows, args.docs_per_query)
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_checkpoint(Path(tmp) / "rerank")
        reranker = Reranker.from_pretrained(folder, device=args.device or "cpu")
        torch.set_num_threads(1)  # one actor's share: Ray gives each CPU actor OMP_NUM_THREADS=1
        reranker.predict([(r["query"], r["document"]) for r in rows[:50]])  # warm-up, as an actor's first batch
        start = time.perf_counter()
        direct = reranker.predict([(r["query"], r["document"]) for r in rows])
        elapsed = time.perf_counter() - start
        results = [f"baseline: Reranker.predict in this process ({torch.get_num_threads()} torch threads): "
                   f"{args.rows / elapsed:8.1f} rows/s ({elapsed:.1f} s)"]
        print(results[-1], flush=True)
        # One more logical CPU than the actors take: Ray Data's own tasks need one, and zkernels.ray refuses a
        # pool that would leave them none (the job would wait forever).
        ray.init(num_cpus=args.cpus + 1, include_dashboard=False, log_to_driver=False)
        for actors in (1, 2):
            # The same pipeline on one row per actor: what starting the pool (imports, model load) costs.
            start = time.perf_counter()
            rerank_dataset(ray.data.from_items(rows[:actors], override_num_blocks=actors), folder, concurrency=actors,
                           num_gpus=args.num_gpus, device=args.device, batch_size=1).take_all()
            startup = time.perf_counter() - start
            ds = ray.data.from_items(rows, override_num_blocks=8)
            start = time.perf_counter()
            out = rerank_dataset(ds, folder, concurrency=actors, num_gpus=args.num_gpus, device=args.device).take_all()
            elapsed = time.perf_counter() - start
            got = np.array([r["score"] for r in out], dtype=np.float32)
            ulps = int(np.max(np.abs(got.view(np.int32) - direct.view(np.int32))))
            results.append(f"ray, {actors} actor(s), 1 CPU each: {args.rows / elapsed:8.1f} rows/s end to end "
                           f"({elapsed:.1f} s); {args.rows / max(elapsed - startup, 1e-9):8.1f} rows/s without the "
                           f"{startup:.1f} s a 1-row run takes (pool start); max difference from baseline: {ulps} ulp")
            print(results[-1], flush=True)
        ray.shutdown()
    if args.out:
        Path(args.out).write_text("\n".join(lines + results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
