"""Same-run A/B timing of two builds of zkernels._hamming (before/after a change to csrc/).

    python benchmarks/ab_hamming_builds.py OLD_hamming.so NEW_hamming.so   (REPS=9 by default)

Each configuration (code width x ISA x nq x threads, k = 10) runs alternately with the old and the
new build, median of REPS, so load from other processes on a shared machine hits both sides alike;
the two builds must return identical results. Copy the old .so aside before rebuilding."""
import importlib.util
import os
import statistics
import sys
import time

import numpy as np

old_path, new_path = sys.argv[1], sys.argv[2]
def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
def load(name, path):
    spec = importlib.util.spec_from_file_location(name + "._hamming", path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
old, new = load("old", old_path), load("new", new_path)
R = int(os.environ.get("REPS", 9))
rng = np.random.default_rng(0)
print(f"command: python {' '.join(sys.argv)}\ndevice: {cpu_name()}, {os.cpu_count()} cores\nloadavg before: {os.getloadavg()}\nisa available:", [i for i in ("scalar","avx2","avx512") if new.cpu_has(i)])
print(f"{'nbytes':>6} {'isa':>7} {'nq':>4} {'thr':>3} {'old ms':>9} {'new ms':>9} {'new/old':>8}")
for nbytes, n in ((128, 1_000_000), (100, 300_000), (40, 300_000)):
    db = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    for isa in ("scalar", "avx2", "avx512"):
        if not new.cpu_has(isa) or (isa == "scalar" and n > 300_000):
            continue
        for nq, thr in ((1, 1), (10, 1), (10, 2)):
            q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
            a = old.search(db, ids, q, 10, thr, isa); b = new.search(db, ids, q, 10, thr, isa)
            assert all((x == y).all() for x, y in zip(a, b)), "old and new builds disagree"
            to, tn = [], []
            for _ in range(R):
                for mod, ts in ((old, to), (new, tn)):
                    t = time.perf_counter(); mod.search(db, ids, q, 10, thr, isa); ts.append(time.perf_counter() - t)
            mo, mn = statistics.median(to) * 1e3, statistics.median(tn) * 1e3
            print(f"{nbytes:>6} {isa:>7} {nq:>4} {thr:>3} {mo:>9.2f} {mn:>9.2f} {mn/mo:>8.2f}", flush=True)
print(f"loadavg after: {os.getloadavg()}")
