"""The GPU benchmark's plumbing on the CPU: --smoke runs every stage on a tiny shape (attention through
the triton interpreter) and writes well-formed rows; without CUDA the real run exits cleanly."""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_scorer  # noqa: E402

REQUIRED = ("device", "date", "command", "workload", "model_shape", "impl", "median_ms", "p99_ms",
            "baseline_median_ms", "speedup", "achieved_tflops", "measured_matmul_tflops")


def test_bench_smoke(tmp_path):
    assert bench_scorer.main(["--smoke", "--out-dir", str(tmp_path), "--name", "smoke"]) == 0
    rows = json.loads((tmp_path / "smoke.json").read_text())
    for r in rows:
        if r["workload"] != "accuracy":
            assert all(k in r for k in REQUIRED), r
    by = {(r["workload"], r["impl"]): r for r in rows}
    for wl in ("W1", "W2_n1", "W2_n3"):
        zk, hf = by[(wl, "zkernels")], by[(wl, "transformers_sdpa")]
        assert zk["median_ms"] > 0 and zk["baseline_median_ms"] == hf["median_ms"]
        assert zk["achieved_tflops"] > 0 and zk["p99_ms"] >= zk["median_ms"]
    assert by[("W1_attention", "zkernels_attention")]["achieved_tflops"] > 0
    assert by[("accuracy", "zkernels")]["passed"] is True
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "smoke_w2.png").stat().st_size > 0
    except ImportError:
        pass


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
def test_bench_without_cuda_exits_cleanly(capsys):
    assert bench_scorer.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
