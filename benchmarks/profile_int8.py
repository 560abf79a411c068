"""Where the CPU forward spends its time, by part: linears (and, for int8, the activation quantizer and the
per-row output scaling inside them), norms, QK-norm/RoPE, attention, SwiGLU, the rest. bench_cpu.py's model
(Qwen3-0.6B's width, --layers layers, random weights) and its rerank workloads; zkernels bf16 against int8
(float32 elsewhere, and bf16 elsewhere; fused, and layer by layer as `_unfused`), one thread and two.

    python benchmarks/profile_int8.py [--layers 4] [--reps 3] [--threads 1,2] [--workloads rerank_1x20,rerank_1x50]
                                      [--impls bfloat16,int8bf16_unfused,int8bf16,int8_unfused,int8]

Each part is timed by wrapping the callables the forward calls (wall clock, perf_counter), so the parts add
up to the forward's time up to the wrappers' own cost (microseconds a call). Prints the command, CPU, ISA,
shapes and load average.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402


class PartTimer:
    """Accumulates wall-clock seconds per part name; `wrap(name, fn)` times every call of fn."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.calls = collections.Counter()
        self.stack: list[str] = []

    def wrap(self, name, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            self.stack.append(name)
            try:
                return fn(*a, **k)
            finally:
                self.stack.pop()
                dt = time.perf_counter() - t0
                self.seconds[name] += dt
                self.calls[name] += 1
                if self.stack:  # a part inside another: its time is not the outer part's own
                    self.seconds[self.stack[-1]] -= dt
        return timed


OP_NAMES = ("rms_norm", "add_rms_norm", "qk_norm_rope", "swiglu", "attention", "rms_norm_quantize",
            "swiglu_quantize")


def instrument(reranker, timer: PartTimer):
    """Wraps the forward's ops, the linear entry points and the int8 layer's inner steps; returns the undo."""
    import zkernels.kernels.linear_int8 as l8
    import zkernels.model as model

    ops = reranker.engine.forward.ops
    saved = [(ops, n, getattr(ops, n)) for n in OP_NAMES if hasattr(ops, n)]
    saved += [(model, "linear", model.linear), (l8, "quantize_rows", l8.quantize_rows),
              (l8, "scale_rows", l8.scale_rows)]
    saved += [(model, n, getattr(model, n)) for n in ("quantize_rows", "scale_rows") if hasattr(model, n)]
    saved += [(l8.QuantizedLinear, n, getattr(l8.QuantizedLinear, n)) for n in ("matmul_quantized", "matmul_unscaled")]
    labels = {"quantize_rows": "int8 quantize pass", "scale_rows": "int8 scale pass",
              "matmul_quantized": "int8 matmul", "matmul_unscaled": "int8 matmul"}
    for obj, n, fn in saved:
        setattr(obj, n, timer.wrap(labels.get(n, n), fn))

    def restore():
        for obj, n, fn in saved:
            setattr(obj, n, fn)
    return restore


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--workloads", default="rerank_1x20,rerank_1x50")
    ap.add_argument("--impls", default="bfloat16,int8bf16_unfused,int8bf16,int8_unfused,int8",
                    help="bfloat16, int8 (float32 elsewhere), int8bf16 (bf16 elsewhere); _unfused: the layer-by-layer "
                         "int8 path")
    args = ap.parse_args(argv)
    import bench_cpu

    from zkernels.qwen_vocab import build_qwen_tokenizer

    print("profile_int8: python " + " ".join([sys.argv[0]] + sys.argv[1:] if argv is None else argv))
    mach = bench_cpu.machine()
    print(f"CPU {mach['cpu_model']} ({mach['cpu_count']} logical CPUs); ISA "
          + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in mach["isa_flags"].items()))
    print(f"torch {mach['torch']}; zkernels CPU variant {mach['zkernels_cpu_isa']}; load average {os.getloadavg()}")
    cfg = bench_cpu.load_shape(args.layers, False)
    print(f"model: hidden {cfg['hidden_size']}, intermediate {cfg['intermediate_size']}, {cfg['num_hidden_layers']} "
          f"layers, {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads, head_dim {cfg['head_dim']}")
    wanted = args.workloads.split(",")
    workloads = [w for w in bench_cpu.make_workloads(build_qwen_tokenizer(), False) if w.name in wanted]
    hf16 = bench_cpu.build_hf(cfg, torch.bfloat16)
    impls = {"bfloat16": (torch.bfloat16, None), "int8": (torch.float32, "int8"),
             "int8bf16": (torch.bfloat16, "int8")}
    runners = {}
    for name in args.impls.split(","):
        # "<impl>_unfused": the same model through the layer-by-layer path (quantize and scale passes inside
        # every QuantizedLinear call), for the fused forward's baseline in the same run
        run, reranker = bench_cpu.zk_runner(hf16, cfg, *impls[name.removesuffix("_unfused")])
        if name.endswith("_unfused"):
            reranker.engine.forward.fused_int8 = False
        runners[name] = (run, reranker)
    threads0 = torch.get_num_threads()
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for wl in workloads:
            print(f"\n[{wl.name}] {len(wl.prompts)} prompts, {wl.n_tokens} tokens, {threads} thread(s), "
                  f"load {os.getloadavg()[0]:.2f}")
            for name, (run, reranker) in runners.items():
                run(wl)  # warm-up
                timer = PartTimer()
                restore = instrument(reranker, timer)
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    run(wl)
                total = (time.perf_counter() - t0) / args.reps
                restore()
                parts = {k: v / args.reps for k, v in timer.seconds.items()}
                rest = total - sum(parts.values())
                line = "  ".join(f"{k} {1e3 * v:7.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]))
                print(f"  {name:16s} total {1e3 * total:7.1f} ms: {line}  other {1e3 * rest:6.1f}")
    torch.set_num_threads(threads0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
