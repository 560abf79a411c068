"""benchmarks/bench_cpu.py --smoke: every stage on a tiny shape (ONNX Runtime / OpenVINO only where
installed), writing well-formed rows, so the CPU benchmark cannot rot between real runs."""

import json
import sys
from pathlib import Path

import pytest

from zkernels.kernels import cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_cpu  # noqa: E402


@pytest.mark.skipif(not cpu.available(), reason="zkernels._cpu_ops is not built")
def test_bench_cpu_smoke(tmp_path):
    assert bench_cpu.main(["--smoke", "--out-dir", str(tmp_path), "--name", "smoke"]) == 0
    rows = json.loads((tmp_path / "smoke.json").read_text())
    text = (tmp_path / "smoke.txt").read_text()
    assert "ISA amx_bf16=" in text and "yardstick float32" in text and "targets (this run" in text
    timed = {(r["workload"], r["impl"]): r for r in rows if "median_ms" in r}
    for wl in ("rerank_1x20", "embed_documents"):
        for impl in ("zkernels_float32", "zkernels_bfloat16", "transformers_float32", "transformers_bfloat16"):
            r = timed[(wl, impl)]
            assert r["median_ms"] > 0 and r["achieved_gflops"] > 0 and r["flops"] > 0, r
            assert 0 < r["fraction_of_matmul_rate"] and r["matmul_yardstick_gflops"] > 0
            assert r["cpu_ms"] > 0 and r["fraction_of_matmul_rate_cpu_clock"] > 0
        # zkernels counts only the work it does; a padded peer does at least as much
        assert timed[(wl, "zkernels_float32")]["flops"] <= timed[(wl, "transformers_float32")]["flops"]
    acc = {(r["workload"], r["impl"]): r for r in rows if "max_abs_err" in r}
    assert acc[("rerank_1x20", "zkernels_float32")]["max_abs_err"] < 1e-6
    assert acc[("embed_documents", "zkernels_float32")]["max_abs_err"] < 1e-5
    assert any(r["workload"] == "matmul" and r["onednn_packed_gflops"] for r in rows)
