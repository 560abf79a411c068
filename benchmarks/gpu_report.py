"""Static GPU report: every Triton kernel the model runs, compiled ahead of time for A100, RTX 4090 and H100
on a machine without a GPU, plus the CUDA Hamming kernel through nvcc.

    python benchmarks/gpu_report.py                                   # the whole matrix (minutes)
    python benchmarks/gpu_report.py --kernels attention --targets 90 --dtypes bf16 --shapes qwen3-4b
    python benchmarks/gpu_report.py --no-hamming --name gpu-report-quick --out-dir /tmp/r

For each (kernel, model shape in benchmarks/shapes/, model dtype, target) it builds the arguments the kernel's
launcher passes for that shape, takes the configuration the code selects (the same function the launcher
calls), compiles with Triton's own argument specialization for that target, and records: registers, stack and
local bytes (cuobjdump), shared memory against the target's per-block limit, the tensor-core path of every
tl.dot (wgmma / mma / fma, from the TTGIR, confirmed in the PTX), an occupancy estimate from the target's
register and shared-memory limits, and a roofline time for W1 (1 query x 100 documents of 64-512 tokens, the
same workload as bench_scorer.py) from the kernel's FLOPs and bytes over one forward against the target's
published peaks. A case passes with 0 bytes of stack and local memory, shared memory within the block limit
and a tensor core on every dot where the kernel multiplies matrices in bf16/fp16. Writes a table to stdout
and <out-dir>/<name>.json and .txt; exits 1 when a case fails. Nothing is cached across runs (a fresh Triton
cache directory per run).

ADDING A KERNEL: append one KernelEntry to KERNELS (bottom of the registry section). An entry names the
kernel, says which model dtypes and targets run it and whether it multiplies matrices, and gives two
functions of (shape, dtype[, capability]):
  - launches(shape, dtype, capability) -> [Launch(label, jit_fn, args, kwargs)]: what the launcher passes
    (build the arguments with the model's layouts, on small CPU tensors: only dtypes, strides and the
    configuration matter; take the configuration from the function the launcher itself calls);
  - w1_work(shape, dtype) -> [(count, flops, bytes)]: the kernel's launches over one W1 forward.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root: run from a checkout without installing
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench_common import SHAPES_DIR, causal_pairs, make_workload  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ============================================================================================================
# Targets: limits from NVIDIA's CUDA C programming guide (compute capability tables) and published peaks
# (dense, no sparsity; tensor-core figures with fp32 accumulation, as the kernels accumulate).
# ============================================================================================================
@dataclass(frozen=True)
class Target:
    capability: int             # 80 = sm_80
    name: str
    sms: int
    regs_per_sm: int            # 32-bit registers
    max_threads_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int            # bytes, shared memory carve-out maximum
    smem_per_block: int         # bytes, the opt-in maximum a block may use
    tc_tflops: float            # bf16/fp16 tensor-core peak, fp32 accumulate
    fp32_tflops: float          # CUDA-core fp32 peak
    hbm_gbps: float             # memory bandwidth, GB/s
    tc_instr: str               # the tensor-core instruction expected of a bf16/fp16 dot


TARGETS = {
    80: Target(80, "A100 SXM4 80GB", 108, 65536, 2048, 32, 167936, 166912, 312.0, 19.5, 2039.0, "mma"),
    89: Target(89, "RTX 4090", 128, 65536, 1536, 24, 102400, 101376, 165.2, 82.6, 1008.0, "mma"),
    90: Target(90, "H100 SXM5", 132, 65536, 2048, 32, 233472, 232448, 989.4, 66.9, 3350.0, "wgmma"),
}
RESERVED_SMEM_PER_BLOCK = 1024  # the driver keeps 1 KB of shared memory per block on sm_80 and later


# ============================================================================================================
# Model shapes and the W1 forward they run
# ============================================================================================================
@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def load_shapes(names=None) -> dict[str, Shape]:
    files = sorted(SHAPES_DIR.glob("*.json"))
    shapes = {}
    for f in files:
        c = json.loads(f.read_text())
        shapes[f.stem] = Shape(f.stem, c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                               c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"])
    if names:
        missing = [n for n in names if n not in shapes]
        if missing:
            raise SystemExit(f"unknown shape(s) {missing}; shapes in {SHAPES_DIR}: {sorted(shapes)}")
        shapes = {n: shapes[n] for n in names}
    return shapes


@dataclass(frozen=True)
class W1:
    """W1 as the model packs it: the query prefix once, then each document (with the chat suffix) attending
    to it; one read row per document. The last layer computes queries and everything after only there."""
    prefix: int
    docs: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return self.prefix + sum(self.docs)

    @property
    def reads(self) -> int:
        return len(self.docs)


def w1_workload() -> W1:
    wl = make_workload("W1", 100, (64, 512), 30, seed=1)  # bench_scorer.py's W1
    return W1(len(wl.query), tuple(len(d) for d in wl.docs))


# ============================================================================================================
# The registry: one entry per Triton kernel the model runs
# ============================================================================================================
@dataclass
class Launch:
    label: str                  # e.g. "add_rms_norm": one kernel may launch in several forms
    fn: object                  # the @triton.jit function
    args: tuple                 # positional arguments, as the launcher passes them
    kwargs: dict                # constexprs and launch options (num_warps, num_stages), as the launcher passes them


@dataclass(frozen=True)
class KernelEntry:
    name: str
    launches: Callable[[Shape, torch.dtype, int], list[Launch]]
    w1_work: Callable[[Shape, torch.dtype, W1], list[tuple[int, float, float]]]  # (count, flops, bytes)
    matmul: bool = False        # multiplies matrices: a bf16/fp16 dot must use the tensor cores
    dtypes: tuple[str, ...] = ("bf16", "fp16", "fp32")
    targets: tuple[int, ...] = (80, 89, 90)


def _size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


# ---- attention ----------------------------------------------------------------------------------------------
def _attention_inputs(s: Shape, dtype: torch.dtype, rows: int = 4):
    """q and k contiguous (qk_norm_rope's outputs), v a view into the fused qkv projection, as model.py
    passes them."""
    D = s.head_dim
    q = torch.empty(rows, s.heads, D, dtype=dtype)
    k = torch.empty(rows, s.kv_heads, D, dtype=dtype)
    qkv = torch.empty(rows, (s.heads + 2 * s.kv_heads) * D, dtype=dtype)
    v = qkv[:, (s.heads + s.kv_heads) * D:].view(rows, s.kv_heads, D)
    cu = torch.tensor([0, 1, rows], dtype=torch.int32)
    starts = torch.zeros(2, dtype=torch.int32)
    lens = torch.tensor([0, 1], dtype=torch.int32)
    return q, k, v, cu, cu, starts, lens


def attention_launches(s: Shape, dtype: torch.dtype, capability: int) -> list[Launch]:
    from zkernels.kernels import attention as A
    from zkernels.kernels.attention_inputs import check_attention_inputs
    x = check_attention_inputs(*_attention_inputs(s, dtype))
    plan = A.plan_attention(x.cu_seqlens_q, x.q.shape[0], s.heads, s.kv_heads, s.head_dim, dtype=dtype,
                            capability=capability)
    _, args, kwargs = A.attention_launch(x.q, x.k, x.v, x.prefix_k, x.prefix_v, torch.empty_like(x.q), x.cu_seqlens_q,
                                         x.cu_seqlens_k, x.prefix_starts, x.prefix_lens, plan, s.head_dim ** -0.5)
    return [Launch("attention", A._attention_kernel, args, kwargs)]


def attention_w1(s: Shape, dtype: torch.dtype, w: W1) -> list[tuple[int, float, float]]:
    """Per layer: 4 * head_dim FLOPs per visible (query, key) pair and head; bytes: q, k, v read once and
    the output written once (the compulsory traffic: a lower bound)."""
    e, D, Hq, Hkv = _size(dtype), s.head_dim, s.heads, s.kv_heads
    pairs = causal_pairs(w.prefix, w.prefix) + sum(causal_pairs(d, d) + d * w.prefix for d in w.docs)
    kv_bytes = 2 * w.tokens * Hkv * D * e
    full = (4 * D * Hq * pairs, 2 * w.tokens * Hq * D * e + kv_bytes)
    last = (4 * D * Hq * sum(d + w.prefix for d in w.docs), 2 * w.reads * Hq * D * e + kv_bytes)
    return [(s.layers - 1, *full), (1, *last)]


# ---- RMSNorm and add + RMSNorm ------------------------------------------------------------------------------
def rms_norm_launches(s: Shape, dtype: torch.dtype, capability: int) -> list[Launch]:
    from zkernels.kernels import rms_norm as R
    H, rows = s.hidden, 4
    x, res, o, summed = (torch.empty(rows, H, dtype=dtype) for _ in range(4))
    w = torch.empty(H, dtype=dtype)
    block, warps = R.rms_norm_launch_config(H)
    launches = []
    for label, has_res in (("rms_norm", False), ("add_rms_norm", True)):
        r2, s2 = (res, summed) if has_res else (x, o)
        args = (x, r2, w, o, s2, x.stride(0), r2.stride(0), o.stride(0), s2.stride(0), H, 1e-6)
        launches.append(Launch(label, R._rms_norm_kernel, args,
                               dict(HAS_RESIDUAL=has_res, BLOCK=block, num_warps=warps)))
    return launches


def rms_norm_w1(s: Shape, dtype: torch.dtype, w: W1) -> list[tuple[int, float, float]]:
    """The first layer's input norm over T rows (no residual); add + norm: the other layers' input norms (T
    rows), every post-attention norm (T rows, R in the last layer) and the final norm (R rows). ~4 FLOPs an
    element; bytes: x (and residual) read, output (and sum) written, the weight once."""
    e, H, T, R = _size(dtype), s.hidden, w.tokens, w.reads

    def norm(rows, residual):
        return (4 * rows * H, (4 if residual else 2) * rows * H * e + H * e)

    return [(1, *norm(T, False)), (2 * s.layers - 2, *norm(T, True)), (2, *norm(R, True))]


# ---- QK-norm + RoPE -----------------------------------------------------------------------------------------
def qk_norm_rope_launches(s: Shape, dtype: torch.dtype, capability: int) -> list[Launch]:
    from zkernels.kernels import qk_norm_rope as Q
    D, rows = s.head_dim, 4
    qkv = torch.empty(rows, (s.heads + 2 * s.kv_heads) * D, dtype=dtype)  # q and k: views into qkv
    q = qkv[:, :s.heads * D].view(rows, s.heads, D)
    k = qkv[:, s.heads * D:(s.heads + s.kv_heads) * D].view(rows, s.kv_heads, D)
    qo, ko = torch.empty(q.shape, dtype=dtype), torch.empty(k.shape, dtype=dtype)
    qw = kw = torch.empty(D, dtype=dtype)
    cos = sin = torch.empty(64, D // 2, dtype=torch.float32)
    pos = torch.zeros(rows, dtype=torch.int64)
    bq, bk, warps = Q.qk_norm_rope_launch_config(s.heads, s.kv_heads, D)
    args = (q, k, qo, ko, qw, kw, cos, sin, pos, pos, rows, s.heads, s.kv_heads, q.stride(0), q.stride(1),
            k.stride(0), k.stride(1), cos.stride(0), 1e-6)
    kwargs = dict(HALF=D // 2, BLOCK_HQ=bq, BLOCK_HK=bk, QW_ROUND=True, KW_ROUND=True, num_warps=warps)
    return [Launch("qk_norm_rope", Q._qk_norm_rope_kernel, args, kwargs)]


def qk_norm_rope_w1(s: Shape, dtype: torch.dtype, w: W1) -> list[tuple[int, float, float]]:
    """Per layer: q rows (T, R in the last layer) and T k rows, each read and written once, plus the
    fp32 cos/sin rows; ~10 FLOPs an element."""
    e, D = _size(dtype), s.head_dim

    def work(q_rows):
        elems = (q_rows * s.heads + w.tokens * s.kv_heads) * D
        return (10 * elems, 2 * elems * e + (q_rows + w.tokens) * D * 4)

    return [(s.layers - 1, *work(w.tokens)), (1, *work(w.reads))]


# ---- SwiGLU -------------------------------------------------------------------------------------------------
def swiglu_launches(s: Shape, dtype: torch.dtype, capability: int) -> list[Launch]:
    from zkernels.kernels import swiglu as S
    I, rows = s.intermediate, 4
    gu, o = torch.empty(rows, 2 * I, dtype=dtype), torch.empty(rows, I, dtype=dtype)
    block, warps = S.swiglu_launch_config(I)
    return [Launch("swiglu", S._swiglu_kernel, (gu, o, gu.stride(0), o.stride(0), I),
                   dict(BLOCK=block, num_warps=warps))]


def swiglu_w1(s: Shape, dtype: torch.dtype, w: W1) -> list[tuple[int, float, float]]:
    """Per layer: rows T (R in the last layer) of gate|up read, one output row written; ~8 FLOPs an output."""
    e, I = _size(dtype), s.intermediate
    return [(s.layers - 1, 8 * w.tokens * I, 3 * w.tokens * I * e), (1, 8 * w.reads * I, 3 * w.reads * I * e)]


# ---- fp8 linear (quantize="fp8") ----------------------------------------------------------------------------
def _linear_shapes(s: Shape) -> list[tuple[str, int, int]]:
    """(name, out features N, in features K) of the model's fused linears."""
    D = s.head_dim
    return [("qkv", (s.heads + 2 * s.kv_heads) * D, s.hidden), ("o", s.hidden, s.heads * D),
            ("gate_up", 2 * s.intermediate, s.hidden), ("down", s.hidden, s.intermediate)]


def fp8_linear_launches(s: Shape, dtype: torch.dtype, capability: int) -> list[Launch]:
    from zkernels.kernels import fp8_linear as F
    rows, launches = 4, []
    for name, N, K in _linear_shapes(s):
        xq, wq = torch.empty(rows, K, dtype=torch.float8_e4m3fn), torch.empty(N, K, dtype=torch.float8_e4m3fn)
        xs, ws, out = torch.empty(rows), torch.empty(N), torch.empty(rows, N, dtype=dtype)
        args = (xq, wq, xs, ws, ws, out, rows, N, K, xq.stride(0), wq.stride(0), out.stride(0))
        launches.append(Launch(name, F._fp8_linear_kernel, args,
                               dict(HAS_BIAS=False, BLOCK_M=F.BLOCK_M, BLOCK_N=F.BLOCK_N, BLOCK_K=F.BLOCK_K,
                                    GROUP_M=F.GROUP_M, num_warps=F.NUM_WARPS, num_stages=F.NUM_STAGES)))
    return launches


def fp8_linear_w1(s: Shape, dtype: torch.dtype, w: W1) -> list[tuple[int, float, float]]:
    """Per layer, each linear: 2 N K FLOPs a row; bytes: e4m3 weights and activations read once, the output
    written in the model dtype. Rows: T (R in the last layer after attention: o, gate_up, down)."""
    e, work = _size(dtype), []
    for name, N, K in _linear_shapes(s):
        for count, rows in ((s.layers - 1, w.tokens), (1, w.tokens if name == "qkv" else w.reads)):
            work.append((count, 2 * rows * N * K, N * K + rows * K + rows * N * e))
    return work


KERNELS: list[KernelEntry] = [
    KernelEntry("attention", attention_launches, attention_w1, matmul=True),
    KernelEntry("rms_norm", rms_norm_launches, rms_norm_w1),
    KernelEntry("qk_norm_rope", qk_norm_rope_launches, qk_norm_rope_w1),
    KernelEntry("swiglu", swiglu_launches, swiglu_w1),
    # fp8 tensor cores start at sm_89; the out dtype is the model's (bf16/fp16)
    KernelEntry("fp8_linear", fp8_linear_launches, fp8_linear_w1, matmul=True, dtypes=("bf16", "fp16"),
                targets=(89, 90)),
]


# ============================================================================================================
# Compilation and what is read from it
# ============================================================================================================
def _nvidia_bin(tool: str) -> str:
    import triton.backends.nvidia as nv
    path = Path(nv.__file__).parent / "bin" / tool
    if not path.is_file():
        raise SystemExit(f"{tool} not found at {path}: this triton build does not ship the NVIDIA tools")
    return str(path)


def compile_launch(launch: Launch, capability: int):
    """triton.compile of exactly what the JIT would compile for these arguments on this target: the
    same binder (argument types, 16-divisibility and value-1 specialization), options and constexprs."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, options, bound, specialization, None)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def parse_resource_usage(text: str) -> dict:
    """cuobjdump --dump-resource-usage of a one-kernel cubin -> registers, stack, static shared, local."""
    m = _USAGE.search(text)
    if not m:
        raise ValueError(f"no resource line in cuobjdump's output: {text[-500:]!r}")
    return dict(zip(("registers", "stack_bytes", "static_shared_bytes", "local_bytes"), map(int, m.groups())))


def resource_usage(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_nvidia_bin("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True,
                             text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"cuobjdump failed: {out.stderr.strip()}")
    return parse_resource_usage(out.stdout)


_MMA_ALIAS = re.compile(r"^(#\w+) = #ttg\.nvidia_mma<\{versionMajor = (\d+)", re.M)
_DOT = re.compile(r"= (?:tt\.dot|ttng\.warp_group_dot) .*-> tensor<[^>]*?, (#\w+)>")


def dot_paths(ttgir: str) -> list[str]:
    """The unit each tl.dot runs on: 'wgmma' (Hopper warpgroup MMA), 'mma' (mma.sync) or 'fma' (CUDA cores),
    from the result layout of every dot in the TTGIR."""
    versions = dict(_MMA_ALIAS.findall(ttgir))
    paths = []
    for alias in _DOT.findall(ttgir):
        v = versions.get(alias)
        paths.append("wgmma" if v == "3" else "mma" if v == "2" else "fma")
    return paths


def tensor_core_instructions(ptx: str) -> dict:
    return dict(wgmma=len(re.findall(r"\bwgmma\.mma_async\b", ptx)), mma=len(re.findall(r"\bmma\.sync\b", ptx)))


def occupancy(t: Target, registers: int, num_warps: int, shared: int) -> dict:
    """Blocks per SM from the register file (allocated per warp in units of 256), shared memory (plus the
    1 KB the driver reserves per block), threads and the block limit; occupancy = resident warps / max."""
    per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_regs = (t.regs_per_sm // per_warp) // num_warps
    by_smem = t.smem_per_sm // (shared + RESERVED_SMEM_PER_BLOCK)
    by_threads = t.max_threads_per_sm // (32 * num_warps)
    blocks = min(by_regs, by_smem, by_threads, t.max_blocks_per_sm)
    limiter = min((by_regs, "registers"), (by_smem, "shared memory"), (by_threads, "threads"),
                  (t.max_blocks_per_sm, "blocks"))[1]
    return dict(blocks_per_sm=blocks, occupancy=round(blocks * num_warps * 32 / t.max_threads_per_sm, 3),
                occupancy_limiter=limiter)


def roofline_ms(t: Target, work: list[tuple[int, float, float]], tensor_cores: bool) -> float:
    """Each launch bound by the slower of its FLOPs at the peak and its bytes at the memory bandwidth."""
    peak = (t.tc_tflops if tensor_cores else t.fp32_tflops) * 1e12
    return 1e3 * sum(n * max(f / peak, b / (t.hbm_gbps * 1e9)) for n, f, b in work)


def verdict(row: dict, t: Target, expect_tensor_cores: bool) -> list[str]:
    """Why a compiled case fails (empty when it passes)."""
    problems = []
    if row["stack_bytes"] or row["local_bytes"]:
        problems.append(f"spills: {row['stack_bytes']} B stack, {row['local_bytes']} B local")
    if row["shared_bytes"] > t.smem_per_block:
        problems.append(f"shared memory {row['shared_bytes']} B > {t.smem_per_block} B per block")
    if expect_tensor_cores:
        if not row["dots"] or any(p != t.tc_instr for p in row["dots"]):
            problems.append(f"dots on {row['dots']}, expected {t.tc_instr} for every dot")
        elif not row["ptx_" + t.tc_instr]:
            problems.append(f"no {t.tc_instr} instruction in the PTX")
    if row["blocks_per_sm"] < 1:
        problems.append("does not fit on an SM")
    return problems


def compile_case(launch: Launch, t: Target, expect_tensor_cores: bool) -> dict:
    """Compiles one launch for one target and reads everything the report records from the result."""
    t0 = time.perf_counter()
    try:
        kern = compile_launch(launch, t.capability)
        usage = resource_usage(kern.asm["cubin"])
    except Exception as exc:  # a compile error is a finding, not a crash of the report
        return dict(error=f"{type(exc).__name__}: {str(exc).strip()[:400]}", ok=False, problems=["does not compile"],
                    compile_s=round(time.perf_counter() - t0, 2))
    row = dict(usage, compile_s=round(time.perf_counter() - t0, 2),
               shared_bytes=kern.metadata.shared + usage["static_shared_bytes"], shared_limit_bytes=t.smem_per_block,
               dots=dot_paths(kern.asm["ttgir"]),
               **{f"ptx_{k}": v for k, v in tensor_core_instructions(kern.asm["ptx"]).items()})
    row.update(occupancy(t, usage["registers"], launch.kwargs.get("num_warps", 4), row["shared_bytes"]))
    problems = verdict(row, t, expect_tensor_cores)
    return dict(row, ok=not problems, problems=problems)


def run_case(entry: KernelEntry, shape: Shape, dtype_name: str, t: Target, w1: W1, compiled: dict) -> list[dict]:
    """One row per launch form of the kernel for this shape, dtype and target. A compilation identical to one
    already made (another shape with the same configuration and argument specialization) is not repeated:
    its row says `same_as`."""
    dtype = DTYPES[dtype_name]
    expect_tc = entry.matmul and dtype != torch.float32
    roofline = round(roofline_ms(t, entry.w1_work(shape, dtype, w1), expect_tc), 4)
    rows = []
    for i, launch in enumerate(entry.launches(shape, dtype, t.capability)):
        key = (entry.name, launch.label, dtype_name, t.capability, _signature_key(launch))
        if key not in compiled:
            compiled[key] = (shape.name, compile_case(launch, t, expect_tc))
        first_shape, result = compiled[key]
        row = dict(kernel=entry.name, launch=launch.label, shape=shape.name, dtype=dtype_name,
                   target=f"sm_{t.capability}", gpu=t.name, config=dict(launch.kwargs), **result)
        if first_shape != shape.name:
            row.update(same_as=first_shape, compile_s=0.0)
        # The roofline is the kernel's work over the whole forward: on its first launch form only.
        row["roofline_w1_ms"] = roofline if i == 0 else None
        rows.append(row)
    return rows


def _signature_key(launch: Launch) -> str:
    """What the compilation depends on: the constexprs and options, argument types, 16-divisibility and
    value-1 specialization (as Triton's binder sees them)."""
    parts = [json.dumps(launch.kwargs, sort_keys=True, default=str)]
    for a in launch.args:
        if isinstance(a, torch.Tensor):
            parts.append(f"*{a.dtype}:{a.data_ptr() % 16 == 0}")
        elif isinstance(a, int):
            parts.append(f"i:{a == 1}:{a % 16 == 0}")
        else:
            parts.append(type(a).__name__)
    return ",".join(parts)


# ============================================================================================================
# The CUDA Hamming kernel through nvcc
# ============================================================================================================
_PTXAS_FN = re.compile(r"Function properties for (\S+)\n\s*(\d+) bytes stack frame, (\d+) bytes spill stores, "
                       r"(\d+) bytes spill loads")
_PTXAS_REGS = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'[\s\S]*?Used (\d+) registers")


def hamming_report(targets: list[Target], code_bytes: int = 128, n_codes: int = 10_000_000) -> list[dict]:
    """csrc/hamming_cuda.cu for each target with nvcc --resource-usage: one row per kernel instantiation
    (VEC = bytes per load). Roofline: one query over n_codes codes of code_bytes (read once)."""
    import sysconfig
    source = HERE.parent / "csrc" / "hamming_cuda.cu"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [dict(kernel="hamming_cuda", ok=None, problems=["nvcc not found: not compiled"])]
    import pybind11
    rows = []
    for t in targets:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [nvcc, "-cubin", "-std=c++17", "-O3", f"-arch=sm_{t.capability}", "--resource-usage",
                   "-I", pybind11.get_include(), "-I", sysconfig.get_paths()["include"], str(source),
                   "-o", str(Path(tmp) / "h.cubin")]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        text = out.stdout + out.stderr
        if out.returncode != 0:
            rows.append(dict(kernel="hamming_cuda", target=f"sm_{t.capability}", gpu=t.name, ok=False,
                             problems=["does not compile"], error=text[-800:]))
            continue
        props = {m[0]: tuple(map(int, m[1:])) for m in _PTXAS_FN.findall(text)}
        regs = {m[0]: int(m[2]) for m in _PTXAS_REGS.findall(text)}
        bytes_read = n_codes * code_bytes + n_codes * 4  # codes read, int32 distances written
        for name, (stack, spill_st, spill_ld) in sorted(props.items()):
            vec = re.search(r"kernelILi(\d+)E", name)
            row = dict(kernel="hamming_cuda", launch=f"VEC={vec.group(1) if vec else '?'}",
                       shape=f"{code_bytes}-byte codes", dtype="u8", target=f"sm_{t.capability}", gpu=t.name,
                       config=dict(threads=256, query_tile=8),
                       registers=regs.get(name), stack_bytes=stack, spill_store_bytes=spill_st,
                       spill_load_bytes=spill_ld, local_bytes=spill_st, shared_bytes=8 * code_bytes,
                       shared_limit_bytes=t.smem_per_block, compile_s=round(time.perf_counter() - t0, 2),
                       roofline_ms_10m_codes_nq1=round(1e3 * bytes_read / (t.hbm_gbps * 1e9), 3))
            row.update(occupancy(t, row["registers"] or 255, 8, row["shared_bytes"]))
            problems = []
            if stack or spill_st or spill_ld:
                problems.append(f"spills: {stack} B stack, {spill_st} B stores, {spill_ld} B loads")
            row.update(ok=not problems, problems=problems)
            rows.append(row)
    return rows


# ============================================================================================================
# Output
# ============================================================================================================
def _cfg_text(cfg: dict) -> str:
    short = dict(BLOCK_M="M", BLOCK_N="N", num_warps="w", num_stages="s", BLOCK="B", BLOCK_HQ="Hq", BLOCK_HK="Hk")
    return " ".join(f"{short[k]}{v}" for k, v in cfg.items() if k in short)


def table(rows: list[dict]) -> str:
    head = (f"{'kernel':<13} {'launch':<13} {'shape':<11} {'dtype':<5} {'target':<6} {'config':<22} {'regs':>4} "
            f"{'stack':>5} {'local':>5} {'smem KB':>8} {'limit':>6} {'dots':<12} {'occ':>5} {'W1 ms':>8}  verdict")
    lines = [head, "-" * len(head)]
    for r in rows:
        dots = ",".join(sorted(set(r.get("dots") or []))) or "-"
        smem = f"{r['shared_bytes'] / 1024:.1f}" if r.get("shared_bytes") is not None else "-"
        limit = f"{r['shared_limit_bytes'] // 1024}" if r.get("shared_limit_bytes") else "-"
        occ = f"{r['occupancy']:.2f}" if r.get("occupancy") is not None else "-"
        roof = r.get("roofline_w1_ms", r.get("roofline_ms_10m_codes_nq1"))
        roof = f"{roof:.3f}" if roof is not None else ""
        problems = "; ".join(r.get("problems", []))
        verdict_text = "ok" if r.get("ok") else f"FAIL: {problems}" if r.get("ok") is False else problems
        lines.append(f"{r['kernel']:<13} {r.get('launch', '-'):<13} {r.get('shape', '-'):<11} {r.get('dtype', '-'):<5} "
                     f"{r.get('target', '-'):<6} {_cfg_text(r.get('config', {})):<22} {r.get('registers') or '-':>4} "
                     f"{r.get('stack_bytes', '-'):>5} {r.get('local_bytes', '-'):>5} {smem:>8} {limit:>6} "
                     f"{dots:<12} {occ:>5} {roof:>8}  {verdict_text}")
    return "\n".join(lines)


def _tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return (out.stdout.strip().splitlines() or ["?"])[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernels", default=",".join(k.name for k in KERNELS), help="comma-separated registry names")
    ap.add_argument("--shapes", default="", help="comma-separated names in benchmarks/shapes/ (default: all)")
    ap.add_argument("--dtypes", default="bf16,fp16,fp32")
    ap.add_argument("--targets", default="80,89,90", help="compute capabilities: 80 (A100), 89 (RTX 4090), 90 (H100)")
    ap.add_argument("--no-hamming", action="store_true", help="skip the CUDA Hamming kernel (nvcc)")
    ap.add_argument("--name", default=None, help="results file stem (default gpu-report-<date>)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    # The compiler, not the interpreter: unset before the kernel modules are imported (lazily, by the
    # registry's launch builders), else @triton.jit gives interpreter functions that cannot be compiled.
    os.environ.pop("TRITON_INTERPRET", None)
    if any(m.startswith("zkernels.kernels.") for m in sys.modules):
        raise SystemExit("gpu_report: the kernel modules were imported before the report could unset "
                         "TRITON_INTERPRET; run it as its own process")
    by_name = {k.name: k for k in KERNELS}
    kernels = [by_name.get(n) or ap.error(f"unknown kernel {n!r}; known: {sorted(by_name)}")
               for n in args.kernels.split(",") if n]
    dtypes = [d for d in args.dtypes.split(",") if d]
    for d in dtypes:
        if d not in DTYPES:
            ap.error(f"unknown dtype {d!r}; choose from {sorted(DTYPES)}")
    targets = []
    for c in args.targets.split(","):
        if not c.strip().isdigit() or int(c) not in TARGETS:
            ap.error(f"unknown target {c!r}; choose from {sorted(TARGETS)}")
        targets.append(TARGETS[int(c)])
    shapes = load_shapes([s for s in args.shapes.split(",") if s])

    import triton
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    command = "python benchmarks/gpu_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    w1 = w1_workload()
    header = dict(command=command, date=date, host=platform.node(), triton=triton.__version__, torch=torch.__version__,
                  ptxas=_tool_version(_nvidia_bin("ptxas")), git_commit=_git_commit(),
                  fp_fusion=os.environ.get("TRITON_DEFAULT_FP_FUSION"),
                  w1=dict(prefix_tokens=w1.prefix, documents=w1.reads, tokens=w1.tokens,
                          note="bench_scorer.py's W1: 1 query x 100 documents of 64-512 tokens (+5 suffix tokens)"),
                  targets={f"sm_{t.capability}": dataclasses.asdict(t) for t in targets},
                  loadavg=os.getloadavg()[0])
    print(f"command: {command}\ndate: {date}  host: {header['host']}  triton {triton.__version__}  "
          f"ptxas: {header['ptxas']}  load average {header['loadavg']:.2f}")
    print(f"W1: {w1.reads} documents, {w1.tokens} packed tokens (prefix {w1.prefix}); shapes: {', '.join(shapes)}",
          flush=True)

    rows, compiled = [], {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-report-triton-cache-") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache  # a fresh cache: every case is compiled in this run
        for entry in kernels:
            for shape in shapes.values():
                for d in dtypes:
                    if d not in entry.dtypes:
                        continue
                    for t in targets:
                        if t.capability not in entry.targets:
                            continue
                        new = run_case(entry, shape, d, t, w1, compiled)
                        rows += new
                        for r in new:
                            state = "ok" if r.get("ok") else "FAIL " + "; ".join(r.get("problems", []))
                            same = f" [same as {r['same_as']}]" if "same_as" in r else ""
                            print(f"  {r['kernel']}/{r['launch']} {shape.name} {d} sm_{t.capability}: "
                                  f"{r.get('registers')} regs, {r.get('stack_bytes')} B stack "
                                  f"({r.get('compile_s', 0)} s){same} {state}", flush=True)
    if not args.no_hamming:
        rows += hamming_report(targets)
    text = table(rows)
    failed = [r for r in rows if r.get("ok") is False]
    summary = (f"{len(rows)} cases, {len(failed)} failing, {time.perf_counter() - t_start:.0f} s; "
               f"load average {os.getloadavg()[0]:.2f}")
    print("\n" + text + "\n\n" + summary)
    name = args.name or f"gpu-report-{date[:10]}"
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(dict(header, summary=summary, rows=rows), indent=1) + "\n")
    head = "\n".join(f"{k}: {v}" for k, v in header.items() if k != "targets")
    (out / f"{name}.txt").write_text(f"{head}\n\n{text}\n\n{summary}\n")
    print(f"wrote {out / name}.json and .txt")
    return 1 if failed else 0


def _git_commit() -> str | None:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE, timeout=20)
    return out.stdout.strip() or None


if __name__ == "__main__":
    sys.exit(main())
