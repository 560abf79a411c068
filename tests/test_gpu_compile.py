"""The Triton kernels compiled ahead of time for A100 (sm_80), RTX 4090 (sm_89) and H100 (sm_90) on a machine
without a GPU (benchmarks/gpu_report.py, reduced matrix): what the launchers select for the Qwen3-4B shape
must compile with no register spills, within shared memory, and with the attention's dots on the tensor
cores. Needs only triton (its bundled ptxas and cuobjdump); every compile is fresh (the report uses a new
Triton cache directory per run), so a regression cannot hide behind a cached binary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "gpu_report.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_report  # noqa: E402  (pure helpers only: the compiles run in subprocesses, without the interpreter)

pytest.importorskip("triton")

# Two report runs side by side (one per core): the attention in bf16 on every target, and every kernel in
# float32 (the attention's exact, CUDA-core configuration, which spilled worst) on sm_90.
RUNS = {
    "bf16": ["--kernels", "attention", "--dtypes", "bf16", "--targets", "80,89,90"],
    "fp32": ["--kernels", "attention,rms_norm,qk_norm_rope,swiglu", "--dtypes", "fp32", "--targets", "90"],
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-report")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = {name: subprocess.Popen([sys.executable, str(REPORT), *args, "--shapes", "qwen3-4b", "--no-hamming",
                                     "--out-dir", str(out), "--name", name], env=env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name, args in RUNS.items()}
    rows = {}
    for name, proc in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"gpu_report.py {' '.join(RUNS[name])} failed:\n{log[-6000:]}"
        rows[name] = json.loads((out / f"{name}.json").read_text())["rows"]
    return rows


def test_attention_bf16_compiles_clean_on_every_target(report, monkeypatch):
    rows = report["bf16"]
    assert sorted(r["target"] for r in rows) == ["sm_80", "sm_89", "sm_90"]
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the GPU configurations, not the interpreter's
    from zkernels.kernels.attention import attention_config
    for r in rows:
        t = gpu_report.TARGETS[int(r["target"][3:])]
        assert r["ok"], r
        assert r["registers"] > 0 and r["stack_bytes"] == 0 and r["local_bytes"] == 0, r
        assert 0 < r["shared_bytes"] <= t.smem_per_block, r
        # both dots (unmasked and masked key tiles: four in all) on the target's tensor-core instruction
        assert r["dots"] == [t.tc_instr] * 4 and r[f"ptx_{t.tc_instr}"] > 0, r
        # what was compiled is what the launcher selects for this target
        cfg = attention_config(128, 4, torch.bfloat16, t.capability)
        c = r["config"]
        assert (c["BLOCK_M"], c["BLOCK_N"], c["num_warps"], c["num_stages"], c["TOKENS"]) == \
            (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages, cfg.tokens)
        assert c["KV_ALIGNED"] is True  # the model's K/V layouts are 16-byte aligned
        assert r["occupancy"] > 0 and r["roofline_w1_ms"] > 0


def test_every_kernel_compiles_clean_in_float32(report):
    rows = report["fp32"]
    assert sorted(r["launch"] for r in rows) == ["add_rms_norm", "attention", "qk_norm_rope", "rms_norm", "swiglu"]
    for r in rows:
        assert r["ok"], r
        assert r["stack_bytes"] == 0 and r["local_bytes"] == 0 and r["shared_bytes"] <= 232448, r
    attention = next(r for r in rows if r["kernel"] == "attention")
    assert set(attention["dots"]) == {"fma"}  # ieee float32 products: CUDA cores by design


# The checks themselves, on canned compiler output: each kind of defect is caught.
SPILLING = "Resource usage:\n Function _attention_kernel:\n  REG:255 STACK:88 SHARED:1024 LOCAL:0 CONSTANT[0]:1044"
TTGIR = (
    "#mma = #ttg.nvidia_mma<{versionMajor = 3, versionMinor = 0, warpsPerCTA = [8, 1], instrShape = [16, 64, 16]}>\n"
    "#mma1 = #ttg.nvidia_mma<{versionMajor = 2, versionMinor = 0, warpsPerCTA = [4, 2], instrShape = [16, 8]}>\n"
    "  %s = ttng.warp_group_dot %q, %k, %c : !ttg.memdesc<128x128xbf16> * !ttg.memdesc<128x64xbf16> "
    "-> tensor<128x64xf32, #mma>\n"
    "  %t = tt.dot %a, %b, %c, inputPrecision = tf32 : tensor<64x64xbf16, #x> * tensor<64x128xbf16, #y> "
    "-> tensor<64x128xf32, #mma1>\n"
    "  %u = tt.dot %a, %b, %c, inputPrecision = ieee : tensor<16x16xf32, #x> * tensor<16x16xf32, #y> "
    "-> tensor<16x16xf32, #blocked>\n")


def test_the_checks_catch_spills_shared_memory_and_a_lost_tensor_core_path():
    usage = gpu_report.parse_resource_usage(SPILLING)
    assert usage == dict(registers=255, stack_bytes=88, static_shared_bytes=1024, local_bytes=0)
    assert gpu_report.dot_paths(TTGIR) == ["wgmma", "mma", "fma"]
    h100, rtx4090 = gpu_report.TARGETS[90], gpu_report.TARGETS[89]
    clean = dict(registers=200, stack_bytes=0, local_bytes=0, shared_bytes=98304, dots=["wgmma"] * 4,
                 ptx_wgmma=24, ptx_mma=0, blocks_per_sm=1)
    assert gpu_report.verdict(clean, h100, expect_tensor_cores=True) == []
    assert "spills" in gpu_report.verdict(dict(clean, stack_bytes=88), h100, True)[0]
    assert "shared memory" in gpu_report.verdict(dict(clean, shared_bytes=102400), rtx4090, False)[0]
    assert "expected wgmma" in gpu_report.verdict(dict(clean, dots=["wgmma", "fma"]), h100, True)[0]
    assert "no wgmma instruction" in gpu_report.verdict(dict(clean, ptx_wgmma=0), h100, True)[0]
    assert gpu_report.verdict(dict(clean, dots=["fma"] * 4), h100, expect_tensor_cores=False) == []


def test_occupancy_follows_the_register_and_shared_memory_limits():
    h100 = gpu_report.TARGETS[90]
    # 255 registers x 256 threads: one block of 8 warps per SM (of 64 warps)
    assert gpu_report.occupancy(h100, 255, 8, 65536) == dict(blocks_per_sm=1, occupancy=0.125,
                                                              occupancy_limiter="registers")
    # 32 registers, 4 warps, 100 KB of shared memory: two blocks fit in 228 KB
    occ = gpu_report.occupancy(h100, 32, 4, 100 * 1024)
    assert occ["blocks_per_sm"] == 2 and occ["occupancy_limiter"] == "shared memory"
