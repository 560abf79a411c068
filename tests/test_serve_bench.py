"""benchmarks/bench_serve.py and bench_serve_mixed.py --smoke: the servers driven briefly, well-formed rows."""
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_serve  # noqa: E402
import bench_serve_mixed  # noqa: E402


def test_bench_serve_smoke(tmp_path, tiny_checkpoint):
    out = tmp_path / "serve.json"
    assert bench_serve.main(["--smoke", "--duration-s", "0.5", "--reranker", str(tiny_checkpoint("bench-serve")),
                             "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/bench_serve.py --smoke") and result["machine"]["cpu_count"]
    rows = {(r["server"], r["clients"]): r for r in result["rows"]}
    assert set(rows) == {(s, n) for s in ("batching", "baseline") for n in (1, 4)}
    for r in rows.values():
        assert r["requests"] > 0 and r["errors"] == 0 and r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert rows[("batching", 4)]["ratio_vs_baseline"] > 0
    assert "ratio" in out.with_suffix(".txt").read_text()


def test_bench_serve_mixed_smoke(tmp_path, tiny_checkpoint):
    out = tmp_path / "mixed.json"
    assert bench_serve_mixed.main(["--smoke", "--loads", "0.8", "--reranker", str(tiny_checkpoint("bench-serve")),
                                   "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python benchmarks/bench_serve_mixed.py --smoke")
    assert set(result["unloaded"]) == {"rounds", "shortest-first"}
    assert set(result["saturated"]) == {"rounds", "shortest-first", "shortest-first/64"}  # the slice sweep too
    rows = {(r["scheduler"], r["request_tokens_per_forward"]): r for r in result["open_loop"] + result["slices"]}
    assert set(rows) == {("rounds", None), ("shortest-first", None), ("shortest-first", 64)}
    for r in rows.values():
        assert r["answered"] == r["sent"] > 0 and r["errors"] == 0 and r["small_p50_ms"] <= r["small_p99_ms"]
    assert "p99/alone" in out.with_suffix(".txt").read_text()
