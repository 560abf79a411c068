"""The CUDA kernel source must compile with nvcc (compile only: CI has no GPU)."""
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "hamming_cuda.cu"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_hamming_cuda_compiles(tmp_path):
    pybind11 = pytest.importorskip("pybind11")
    cmd = ["nvcc", "-c", "-std=c++17", "-O3", "-arch=sm_90", "-Xcompiler", "-fPIC",
           "-DTORCH_EXTENSION_NAME=zk_hamming_cuda",
           "-I", pybind11.get_include(), "-I", sysconfig.get_paths()["include"],
           str(SOURCE), "-o", str(tmp_path / "hamming_cuda.o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"nvcc failed:\n{res.stdout}\n{res.stderr}"
    assert (tmp_path / "hamming_cuda.o").stat().st_size > 0
