"""Hamming top-k benchmark: zkernels BinaryIndex vs FAISS IndexBinaryFlat on the same machine and run.

    PYTHONPATH=. python benchmarks/bench_hamming.py [--n 1000000] [--bits 1024] [--out PATH]

CPU: N codes x num_bits, nq in {1, 10, 100, 1000}, k = 10; reports median ms, queries/s, GB/s of codes
scanned, and the memory read bandwidth measured in the same run. GPU section (only when CUDA is
available): N = 10M, nq = 1 against the device's measured copy bandwidth, nq = 1000 against a plain
torch implementation (timed on a slice of the codes and scaled to N: its cost is linear in N, and over all
10M x 128-byte codes at nq = 1000 it would move terabytes). Rows are written as JSON to
benchmarks/results/, the file rewritten after every row so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import threading
import time
from functools import partial

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zkernels import BinaryIndex  # noqa: E402
from zkernels.binary import _cpu  # noqa: E402

REPEATS = {1: 30, 10: 15, 100: 5, 1000: 3}


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def measured_read_gbps(threads, nbytes=1 << 30):
    """Memory read bandwidth: numpy sum over a 1 GiB uint64 array (1 thread) and the same split over
    `threads` threads (numpy releases the GIL in reductions); the larger figure is returned too."""
    a = np.ones(nbytes // 8, dtype=np.uint64)
    one = nbytes / median_ms(lambda: a.sum(), 5) / 1e6
    parts = np.array_split(a, threads)

    def par():
        ts = [threading.Thread(target=p.sum) for p in parts]
        [t.start() for t in ts]
        [t.join() for t in ts]

    many = nbytes / median_ms(par, 5) / 1e6
    return one, many


def _writer(kind, args, stamp):
    """Rewrites the results file with every row measured so far (called after each row)."""
    default = ROOT / "benchmarks" / "results" / f"hamming-{kind}-{stamp[:10]}.json"
    chosen = args.out if kind == "cpu" else args.gpu_out
    out = pathlib.Path(chosen) if chosen else default

    def write(rows):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
        return out
    return write


def run_cpu(args, stamp, command, write=lambda rows: None):
    import faiss

    threads = _cpu.default_threads()
    rng = np.random.default_rng(0)
    width = args.bits // 8
    print(f"generating {args.n:,} x {args.bits}-bit codes ...", flush=True)
    db = rng.integers(0, 256, (args.n, width), dtype=np.uint8)
    one, many = measured_read_gbps(threads)
    device = f"{cpu_name()}, {os.cpu_count()} cores ({threads} used), isa={_cpu.best_isa()}"
    print(f"command: {command}\ndevice: {device}\ndate: {stamp}")
    print(f"measured read bandwidth: {one:.1f} GB/s (1 thread), {many:.1f} GB/s ({threads} threads)")
    ours = BinaryIndex(args.bits, num_threads=threads)
    ours.add(db)
    ref = faiss.IndexBinaryFlat(args.bits)
    ref.add(db)
    scanned_gb = db.nbytes / 1e9
    rows = []
    print(f"{'nq':>5} {'faiss ms':>10} {'ours ms':>9} {'speedup':>8} {'ours q/s':>10} {'ours GB/s':>10}")
    for nq in args.nq:
        q = rng.integers(0, 256, (nq, width), dtype=np.uint8)
        fd, _ = ref.search(q, args.k)
        d, _ = ours.search(q, args.k)
        if not np.array_equal(fd, d):
            raise SystemExit(f"distance mismatch against FAISS at nq={nq}")
        reps = REPEATS.get(nq, 3)
        # FAISS's OpenMP threads behave badly on a busy 2-core machine (nq=1 can take 10x longer
        # with 2 threads than with 1), so the baseline is the faster of FAISS with 1 and all threads.
        faiss_ms = {}
        for t in sorted({1, threads}):
            faiss.omp_set_num_threads(t)
            faiss_ms[t] = median_ms(partial(ref.search, q, args.k), reps)
        faiss.omp_set_num_threads(threads)
        base = min(faiss_ms.values())
        mine = median_ms(partial(ours.search, q, args.k), reps)
        gbps = scanned_gb / (mine / 1e3)  # code bytes scanned per second (each byte once per call)
        print(f"{nq:>5} {base:>10.2f} {mine:>9.2f} {base / mine:>7.2f}x {nq / mine * 1e3:>10.0f} {gbps:>10.1f}",
              flush=True)
        rows.append(dict(device=device, date=stamp, command=command, n=args.n, num_bits=args.bits, nq=nq,
                         k=args.k, impl="zkernels.BinaryIndex", threads=threads, repeats=reps,
                         median_ms=round(mine, 3), queries_per_s=round(nq / mine * 1e3, 1),
                         baseline="faiss.IndexBinaryFlat " + faiss.__version__,
                         baseline_median_ms=round(base, 3), speedup=round(base / mine, 2),
                         baseline_ms_by_threads={str(t): round(v, 3) for t, v in faiss_ms.items()},
                         gbps=round(gbps, 2), baseline_gbps=round(scanned_gb / (base / 1e3), 2),
                         # code bytes compared per second (each database byte counts once per query)
                         compared_gbps=round(nq * gbps, 1),
                         measured_read_gbps=round(many, 2), measured_read_gbps_1thread=round(one, 2),
                         # other jobs on a shared machine skew both sides; record how busy it was
                         loadavg_1min=round(os.getloadavg()[0], 2)))
        write(rows)
    return rows


PLAIN_TORCH_BYTES = 4 << 30  # code bytes x queries the plain-torch baseline is timed on (then scaled)


def run_gpu(args, stamp, command, write=lambda rows: None):
    import torch
    from bench_common import time_cuda_events  # beside this file

    from zkernels.binary import cuda, torch_search
    from zkernels.binary.torch_store import TorchStore

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    n, width, k = args.gpu_n, args.bits // 8, args.k
    codes = torch.randint(0, 256, (n, width), dtype=torch.uint8, device=dev)
    buf = torch.empty(1 << 31, dtype=torch.uint8, device=dev)

    def cuda_ms(fn, reps):
        return statistics.median(time_cuda_events(fn, warmup=1, reps=reps))

    copy_ms = cuda_ms(buf.clone, 10)
    copy_gbps = 2 * buf.numel() / (copy_ms / 1e3) / 1e9  # read + write
    del buf
    # Codes made on the device, not copied from the host: wrap them in a device store directly
    # (it keeps its own id-ordered copy; the original is dropped).
    store = TorchStore(width, codes, torch.arange(n, device=dev))
    codes = store.codes
    index = BinaryIndex._from_store(args.bits, store, next_id=n)
    print(f"GPU: {name}; device copy bandwidth {copy_gbps:.0f} GB/s (read+write)")
    rows = []
    for nq in (1, 1000):
        q = torch.randint(0, 256, (nq, width), dtype=torch.uint8, device=dev)
        kern = cuda_ms(partial(cuda.distances, q[: min(nq, 8)], codes), 10)
        full = cuda_ms(partial(index.search, q, k), 5 if nq == 1 else 2)
        # Plain torch on a slice of rows, scaled to all n: each row costs the same (xor, byte table, sum).
        part = min(n, max(1, PLAIN_TORCH_BYTES // (width * nq)))
        plain_part = cuda_ms(partial(torch_search.search, store.codes[:part], store.ids[:part], q, k, args.bits),
                             2 if nq == 1 else 1)
        plain = plain_part * n / part
        gbps = codes.numel() / (full / 1e3) / 1e9
        kern_gbps = codes.numel() / (kern / 1e3) / 1e9
        print(f"nq={nq}: search {full:.2f} ms ({gbps:.0f} GB/s, {gbps / copy_gbps:.0%} of copy bw); distance kernel "
              f"{kern_gbps:.0f} GB/s; plain torch {plain:.1f} ms ({plain / full:.1f}x slower)")
        rows.append(dict(device=name, date=stamp, command=command, n=n, num_bits=args.bits, nq=nq, k=k,
                         impl="zkernels.BinaryIndex(cuda)", median_ms=round(full, 3), gbps=round(gbps, 1),
                         kernel_gbps=round(kern_gbps, 1), baseline="plain torch (xor + byte LUT)",
                         baseline_median_ms=round(plain, 3), speedup=round(plain / full, 2),
                         baseline_timed_rows=part, baseline_note=f"timed on {part:,} of {n:,} rows, scaled by n",
                         measured_read_gbps=round(copy_gbps, 1), queries_per_s=round(nq / full * 1e3, 1)))
        write(rows)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--bits", type=int, default=1024)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nq", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--gpu-n", type=int, default=10_000_000)
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU-vs-FAISS section (e.g. where faiss is absent)")
    p.add_argument("--out", default=None, help="CPU rows' JSON (default results/hamming-cpu-<date>.json)")
    p.add_argument("--gpu-out", default=None, help="GPU rows' JSON (default results/hamming-gpu-<date>.json)")
    args = p.parse_args()
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = "PYTHONPATH=. python benchmarks/bench_hamming.py " + " ".join(sys.argv[1:])
    written = []
    for kind in ("cpu", "gpu"):
        write = _writer(kind, args, stamp)

        def write_and_note(rows, write=write):
            path = write(rows)
            if path not in written:
                written.append(path)
        if kind == "cpu" and not args.no_cpu:
            run_cpu(args, stamp, command, write_and_note)
        if kind == "gpu" and not args.no_gpu:
            try:
                import torch
            except ImportError:
                print("GPU section skipped: torch not installed")
                continue
            if torch.cuda.is_available():
                run_gpu(args, stamp, command, write_and_note)
            else:
                print("GPU section skipped: no CUDA device")
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
