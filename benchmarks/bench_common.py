"""Shared pieces of the GPU benchmarks: workloads, timing, FLOP accounting, result rows, the plot."""
from __future__ import annotations

import json
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

SHAPES_DIR = Path(__file__).resolve().parent / "shapes"
# Chat-template tail every zerank prompt ends with: <|im_end|> \n <|im_start|> assistant \n
SUFFIX_IDS = [151645, 198, 151644, 77091, 198]
YES_ID = 9454  # zerank's score token ("Yes")


# ------------------------------------------------------------------------------------------ shapes
def load_shape(name: str) -> dict:
    """A model config dict from benchmarks/shapes/<name>.json (e.g. "qwen3-4b")."""
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"unknown model shape {name!r}: no {path}")
    return json.loads(path.read_text())


TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, vocab_size=151936, max_position_embeddings=4096,
                  rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=True, model_type="qwen3")


# --------------------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    name: str
    query: list[int]        # shared prompt prefix (system turn holding the query)
    docs: list[list[int]]   # per document: document tokens + chat-template suffix

    @property
    def prompts(self) -> list[list[int]]:
        return [self.query + d for d in self.docs]


def _random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(1000, 150000) for _ in range(n)]  # ordinary (non-special) token ids


def make_workload(name: str, n_docs: int, doc_len_range: tuple[int, int], query_len: int = 30,
                  seed: int = 0) -> Workload:
    rng = random.Random(seed)
    query = [151644, 8948, 198] + _random_ids(rng, query_len - 3)  # <|im_start|>system\n + query
    docs = [_random_ids(rng, rng.randint(*doc_len_range)) + SUFFIX_IDS for _ in range(n_docs)]
    return Workload(name, query, docs)


# ------------------------------------------------------------------------------------------ timing
def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_wall(fn, device, warmup: int = 2, reps: int | None = None, budget_s: float = 8.0,
              min_reps: int = 5, max_reps: int = 100) -> list[float]:
    """Milliseconds per call, wall clock between device syncs (counts host work, as a caller sees it).
    Without reps: as many as fit in budget_s, between min_reps and max_reps."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    t_end = time.perf_counter() + budget_s
    while True:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
        n = len(times)
        if (reps is not None and n >= reps) or n >= max_reps or (reps is None and n >= min_reps
                                                                 and time.perf_counter() > t_end):
            return times


def time_cuda_events(fn, warmup: int = 3, reps: int = 20) -> list[float]:
    """Milliseconds per call on the GPU timeline (kernels only; for single-op measurements)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def median(times):
    return statistics.median(times)


def p99(times):
    s = sorted(times)
    return s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]


def measure_matmul_tflops(device, n: int = 8192, reps: int = 20) -> float:
    """bf16 n^3 matmul rate on this device, the yardstick for achieved TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    if str(device).startswith("cuda"):
        ms = median(time_cuda_events(lambda: a @ b, warmup=5, reps=reps))
    else:
        ms = median(time_wall(lambda: a @ b, device, warmup=1, reps=3))
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


# ------------------------------------------------------------------------------------ FLOP counts
def linear_params_per_token(cfg: dict) -> dict:
    """Matmul weights one token meets in one layer, split by where the last layer still computes."""
    H, I, D = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    return dict(q=H * hq * D, kv=2 * H * hkv * D, o=hq * D * H, mlp=3 * H * I)


def causal_pairs(n_q: int, n_k: int) -> int:
    """Visible (query, key) pairs, bottom-right causal: query j sees keys 0 .. n_k - n_q + j."""
    return sum(n_k - n_q + j + 1 for j in range(n_q))


def forward_flops(cfg: dict, seqs, lm_head_rows: int, last_layer_read_only: bool) -> float:
    """FLOPs of a Qwen3 forward over `seqs` = [(n_tokens, n_prefix_keys, is_read)]: 2 per multiply-add
    in the linear layers, 4 * head_dim * heads per visible (query, key) pair in attention.

    last_layer_read_only: the last layer computes queries, attention output, o-proj and MLP only at
    the last token of each read sequence (zkernels); False: every layer computes every row
    (transformers)."""
    p = linear_params_per_token(cfg)
    L, D, hq = cfg["num_hidden_layers"], cfg["head_dim"], cfg["num_attention_heads"]
    tokens = sum(n for n, _, _ in seqs)
    pairs = sum(causal_pairs(n, n) + n * pre for n, pre, _ in seqs)
    full_layer = 2 * tokens * sum(p.values()) + 4 * D * hq * pairs
    if not last_layer_read_only:
        layers = L * full_layer
    else:
        read = [(n, pre) for n, pre, is_read in seqs if is_read and n > 0]
        last = 2 * tokens * p["kv"] + 2 * len(read) * (p["q"] + p["o"] + p["mlp"]) \
            + 4 * D * hq * sum(n + pre for n, pre in read)
        layers = (L - 1) * full_layer + last
    return layers + 2 * lm_head_rows * cfg["hidden_size"] * cfg["vocab_size"]


# ------------------------------------------------------------------------------------ result rows
def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def plot_w2(rows: list[dict], path: Path) -> Path | None:
    """Latency (median, p99 dashed) against documents per request, one line per shape and impl."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    series = {}
    for r in rows:
        if r["workload"].startswith("W2") and r.get("median_ms") is not None:
            series.setdefault((r["model_shape"], r["impl"]), []).append((r["n_docs"], r["median_ms"], r["p99_ms"]))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (shape, impl), pts in sorted(series.items()):
        pts.sort()
        xs = [x for x, _, _ in pts]
        line, = ax.plot(xs, [m for _, m, _ in pts], marker="o", label=f"{shape} {impl} (median)")
        ax.plot(xs, [p for _, _, p in pts], linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted({x for pts in series.values() for x, _, _ in pts}))
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("documents per request (~256 tokens each, 1 query)")
    ax.set_ylabel("latency, ms (dashed: p99)")
    ax.set_title(f"W2 latency by payload — {rows[0]['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
