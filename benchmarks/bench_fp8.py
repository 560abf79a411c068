"""The fp8 linear (zkernels/kernels/fp8_linear.py) against bf16 at a model's linear shapes, on a GPU.

For each linear of one layer (fused q|k|v, o, fused gate|up, down) and each row count: bf16 F.linear (the
baseline, measured in the same run), the fp8 layer (per-token quantization + kernel) and the kernel alone,
as median milliseconds over CUDA-event timings; the relative error of fp8 and of bf16 against a float32
product; and whether a row's fp8 result is the same alone as in the full batch. Prints the command, the
device, the shapes, then one line per (linear, rows) and a JSON summary line.

    python3 benchmarks/bench_fp8.py [--shapes qwen3-4b] [--rows 128,1024,4096]
    python3 benchmarks/bench_fp8.py --dry-run     # CPU, TRITON_INTERPRET=1, tiny shapes: the script's check
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="qwen3-4b", help="a benchmarks/shapes/*.json name (default: qwen3-4b)")
    p.add_argument("--rows", default="128,1024,4096", help="row (token) counts, comma-separated")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU under TRITON_INTERPRET=1")
    args = p.parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    from zkernels.kernels.fp8_linear import Fp8Linear, check_fp8_device, fp8_matmul, quantize_rows_fp8

    print("command:", " ".join([sys.executable, *sys.argv]))
    if args.dry_run:
        device, dtype, rows = "cpu", torch.float32, [3, 20]
        dims = dict(hidden_size=64, intermediate_size=96, num_attention_heads=2, num_key_value_heads=1, head_dim=32)
        print("device: cpu (dry run, Triton interpreter)")
    else:
        device, dtype, rows = "cuda", torch.bfloat16, [int(r) for r in args.rows.split(",")]
        check_fp8_device(device)
        dims = json.loads((ROOT / "benchmarks" / "shapes" / f"{args.shapes}.json").read_text())
        print(f"device: {torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
              f"torch {torch.__version__}")
    H, I = dims["hidden_size"], dims["intermediate_size"]
    q_width = dims["num_attention_heads"] * dims["head_dim"]
    kv_width = dims["num_key_value_heads"] * dims["head_dim"]
    linears = {"qkv": (q_width + 2 * kv_width, H), "o": (H, q_width), "gate_up": (2 * I, H), "down": (H, I)}
    listed = ", ".join(f"{k} [{n}, {k_}]" for k, (n, k_) in linears.items())
    print(f"shapes ({'tiny' if args.dry_run else args.shapes}): {listed}; rows {rows}; baseline: {dtype} F.linear")

    def timed(op, *op_args, **op_kwargs):
        def fn():
            return op(*op_args, **op_kwargs)
        fn()
        if device == "cpu":
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        from bench_common import time_cuda_events
        times = time_cuda_events(fn, warmup=0, reps=args.repeats)  # warmed up by the call above
        return sorted(times)[len(times) // 2]

    results, totals = [], {}
    g = torch.Generator(device=device).manual_seed(0)
    for name, (N, K) in linears.items():
        w = torch.randn(N, K, device=device, generator=g) * 0.02
        layer, w_lo = Fp8Linear.from_float(w), w.to(dtype)
        for M in rows:
            x = torch.randn(M, K, device=device, generator=g).to(dtype)
            xq, xs = quantize_rows_fp8(x)
            ref = x.float() @ w.T
            y8 = layer(x)
            y_lo = torch.nn.functional.linear(x, w_lo)
            err8 = float((y8.float() - ref).norm() / ref.norm())
            err_lo = float((y_lo.float() - ref).norm() / ref.norm())
            half = max(1, M // 2)
            invariant = bool(torch.equal(layer(x[:half]), y8[:half]))
            t_lo = timed(torch.nn.functional.linear, x, w_lo)
            t8 = timed(layer, x)
            t_kernel = timed(fp8_matmul, xq, xs, layer.qweight, layer.scale, out_dtype=dtype)
            row = dict(linear=name, rows=M, n=N, k=K, baseline_ms=t_lo, fp8_ms=t8, fp8_kernel_ms=t_kernel,
                       speedup=t_lo / t8, kernel_speedup=t_lo / t_kernel, rel_err_fp8=err8, rel_err_baseline=err_lo,
                       batch_invariant=invariant)
            results.append(row)
            totals.setdefault(M, [0.0, 0.0])
            totals[M][0] += t_lo
            totals[M][1] += t8
            print(f"{name:8s} M={M:5d} [{N}x{K}]  {dtype} {t_lo:8.3f} ms  fp8 {t8:8.3f} ms ({t_lo / t8:4.2f}x; kernel "
                  f"{t_kernel:8.3f} ms, {t_lo / t_kernel:4.2f}x)  rel err fp8 {err8:.2e} vs {err_lo:.2e}  "
                  f"batch-invariant {invariant}")
    for M, (t_lo, t8) in totals.items():
        print(f"all four linears, M={M}: {dtype} {t_lo:.3f} ms, fp8 {t8:.3f} ms: {t_lo / t8:.2f}x")
    print("json:", json.dumps({"rows": results}))
    ok = all(r["batch_invariant"] for r in results) and all(r["rel_err_fp8"] < 0.1 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
