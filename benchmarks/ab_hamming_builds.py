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

ISAS = ("scalar", "avx2", "avx512")


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name + "._hamming", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_ms(module, args) -> float:
    start = time.perf_counter()
    module.search(*args)
    return (time.perf_counter() - start) * 1e3


def main(old_path: str, new_path: str) -> None:
    old, new = load("old", old_path), load("new", new_path)
    reps = int(os.environ.get("REPS", 9))
    rng = np.random.default_rng(0)
    print(f"command: python {' '.join(sys.argv)}\ndevice: {cpu_name()}, {os.cpu_count()} cores\n"
          f"loadavg before: {os.getloadavg()}\nisa available:", [i for i in ISAS if new.cpu_has(i)])
    print(f"{'nbytes':>6} {'isa':>7} {'nq':>4} {'thr':>3} {'old ms':>9} {'new ms':>9} {'new/old':>8}")
    for nbytes, n in ((128, 1_000_000), (100, 300_000), (40, 300_000)):
        db = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
        ids = np.arange(n, dtype=np.int64)
        for isa in ISAS:
            if not new.cpu_has(isa) or (isa == "scalar" and n > 300_000):
                continue
            for nq, threads in ((1, 1), (10, 1), (10, 2)):
                q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
                args = (db, ids, q, 10, threads, isa)
                a, b = old.search(*args), new.search(*args)
                assert all((x == y).all() for x, y in zip(a, b)), "old and new builds disagree"
                times = {old: [], new: []}
                for _ in range(reps):  # alternate, so other load hits both builds alike
                    for module in (old, new):
                        times[module].append(time_ms(module, args))
                mo, mn = statistics.median(times[old]), statistics.median(times[new])
                print(f"{nbytes:>6} {isa:>7} {nq:>4} {threads:>3} {mo:>9.2f} {mn:>9.2f} {mn / mo:>8.2f}", flush=True)
    print(f"loadavg after: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
