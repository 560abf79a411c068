"""The int8 parts of bench_cpu.py: the int8 linear against bf16 at the Qwen3-4B linear shapes, OpenVINO's
int8 (nncf weight compression + its runtime's dynamic activation quantization), and what a quantized load
holds (weight bytes, peak memory while loading)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def shape_4b() -> dict:
    return json.loads((HERE / "shapes" / "qwen3-4b.json").read_text())


def linear_shapes(cfg: dict) -> dict:
    """One layer's four linears as (out, in)."""
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    qw, kvw = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    return {"qkv": (qw + 2 * kvw, H), "o": (H, qw), "gate_up": (2 * I, H), "down": (H, I)}


def int8_linear_rates(rows: int, cfg: dict, rate, log, threads_list=(1, None)) -> list[dict]:
    """The four linears of `cfg` at `rows` rows: bf16 prepacked (oneDNN) against int8 with per-token
    quantization (the layer as the model runs it) and int8 alone (rows already quantized); one thread, then
    torch's thread count. rate(fn, flops) -> (GFLOP/s wall, GFLOP/s CPU clock)."""
    from zkernels.kernels.linear import PackedLinear, packing_available
    from zkernels.kernels.linear_int8 import QuantizedLinear, quantize_rows

    out = []
    threads0 = torch.get_num_threads()
    for threads in threads_list:
        torch.set_num_threads(threads or threads0)
        total = {"bf16": 0.0, "int8": 0.0, "int8_matmul_only": 0.0}
        for name, (n, k) in linear_shapes(cfg).items():
            g = torch.Generator().manual_seed(0)
            w = torch.randn(n, k, generator=g) * 0.02
            x = torch.randn(rows, k, generator=g)
            flops = 2 * rows * n * k
            layer = QuantizedLinear.from_float(w)
            q, s = quantize_rows(x)
            r8, _ = rate(functools.partial(layer, x), flops)
            r8m, _ = rate(functools.partial(layer.matmul_quantized, q, s), flops)
            rb = None
            if packing_available(torch.bfloat16):
                packed, xb = PackedLinear(w.bfloat16()), x.bfloat16()
                rb, _ = rate(functools.partial(packed, xb), flops)
                total["bf16"] += flops / rb / 1e6
            total["int8"] += flops / r8 / 1e6
            total["int8_matmul_only"] += flops / r8m / 1e6
            out.append(dict(workload="linear_4b", impl="int8_linear", shape=name, m=rows, k=k, n=n,
                            threads=torch.get_num_threads(), bf16_packed_gflops=rb, int8_gflops=r8,
                            int8_matmul_only_gflops=r8m))
            log(f"  linear {name:8s} [{rows}x{k}]x[{k}x{n}]^T, {torch.get_num_threads()} thread(s): bf16 packed "
                f"{rb or 0:7.1f}  int8 {r8:7.1f} (matmul alone {r8m:7.1f}) GFLOP/s")
        row = dict(workload="linear_4b", impl="int8_linear_total", m=rows, threads=torch.get_num_threads(),
                   bf16_ms=total["bf16"], int8_ms=total["int8"], int8_matmul_only_ms=total["int8_matmul_only"],
                   speedup=total["bf16"] / total["int8"] if total["bf16"] else None,
                   speedup_matmul_only=total["bf16"] / total["int8_matmul_only"] if total["bf16"] else None)
        out.append(row)
        log(f"  the four linears at {rows} rows, {torch.get_num_threads()} thread(s): bf16 {total['bf16']:.2f} ms, "
            f"int8 {total['int8']:.2f} ms ({row['speedup'] or 0:.2f}x; matmul alone {total['int8_matmul_only']:.2f} "
            f"ms, {row['speedup_matmul_only'] or 0:.2f}x)")
    torch.set_num_threads(threads0)
    return out


def int8_square_rate(n: int, rate) -> tuple[float, float]:
    """The int8 matmul rate (GOP/s, quantization included) on n^3: the int8 rows' yardstick."""
    from zkernels.kernels.linear_int8 import QuantizedLinear
    g = torch.Generator().manual_seed(0)
    layer, x = QuantizedLinear.from_float(torch.randn(n, n, generator=g)), torch.randn(n, n, generator=g)
    return rate(functools.partial(layer, x), 2 * n ** 3)


def ov_int8_runner(export, threads: int):
    """OpenVINO on the same ONNX export with nncf.compress_weights (int8, per output channel, symmetric)
    and the CPU plugin's dynamic quantization of activations (group size 32, its default for int8 weights)."""
    import nncf
    import openvino as ov
    from bench_cpu import ov_scores  # noqa: PLC0415 (bench_cpu imports this module lazily)

    core = ov.Core()
    model = core.read_model(str(export.path))
    model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads,
                                                 "DYNAMIC_QUANTIZATION_GROUP_SIZE": 32})
    group = compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
    req = compiled.create_infer_request()

    run = ov_scores(req, export)
    return run, (f"openvino {ov.__version__} CPU + nncf {nncf.__version__} compress_weights INT8_SYM, dynamic "
                 f"activation quantization group size {group}, bf16 elsewhere, {threads} threads")


def weight_bytes_from_config(cfg: dict, quantize: str, dtype_bytes: int = 2, score_rows: int = 1) -> int:
    """A loaded model's weight bytes computed from its shape (as zkernels.quantization.weight_bytes counts
    them): embedding table and norms in `dtype_bytes` (bf16: 2), the four linears per layer in 2 bytes
    (bf16) or 1 byte plus a float32 scale per output channel (int8); tied embeddings, `score_rows` score rows
    (zerank: 1; qwen3-reranker: 2), float32 when quantized."""
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    shapes = linear_shapes(cfg).values()
    linears = sum(n * k for n, k in shapes)
    per_layer = linears + 4 * sum(n for n, _ in shapes) if quantize == "int8" else 2 * linears
    norms = (2 * H + 2 * cfg["head_dim"]) * dtype_bytes
    rows = score_rows * H * (4 if quantize == "int8" else dtype_bytes)
    return cfg["vocab_size"] * H * 2 + L * (per_layer + norms) + H * dtype_bytes + rows


_LOAD_SCRIPT = r"""
import json, sys, torch
from pathlib import Path
from zkernels import Reranker

def vm(key):  # kB, from /proc/self/status
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])

torch.set_num_threads(1)
kw = json.loads(sys.argv[2])
before = vm("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set, to the current one
r = Reranker.from_pretrained(sys.argv[1], format="zerank", **kw)
print(json.dumps({"peak_kib": vm("VmHWM"), "before_load_kib": before, "after_load_kib": vm("VmRSS"),
                  "weight_bytes": r.weight_bytes}))
"""


def load_memory(hf_bf16, folder: Path, log) -> list[dict]:
    """Saves the benchmark model as a bf16 checkpoint, then loads it in fresh processes (bf16; int8 with
    float32 elsewhere; int8 with bf16 elsewhere) and reports each load's weight bytes and peak resident
    memory (VmHWM after a reset just before the load, less the resident memory before it; Linux)."""
    hf_bf16.save_pretrained(str(folder))
    rows = []
    for name, kw in (("bfloat16", {"dtype": "bfloat16"}), ("int8 (float32 elsewhere)", {"quantize": "int8"}),
                     ("int8 (bf16 elsewhere)", {"quantize": "int8", "dtype": "bfloat16"})):
        env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
        proc = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(folder), json.dumps(kw)], capture_output=True,
                              text=True, env=env, timeout=600)
        if proc.returncode:
            log(f"  load {name}: FAILED {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        delta = (r["peak_kib"] - r["before_load_kib"]) * 1024
        rows.append(dict(workload="load_memory", impl=name, weight_bytes=r["weight_bytes"], load_peak_bytes=delta))
        log(f"  load of a bf16 checkpoint as {name:26s}: weights {r['weight_bytes'] / 2**20:8.1f} MiB, peak memory "
            f"while loading {delta / 2**20:8.1f} MiB above the process before the load")
    return rows
