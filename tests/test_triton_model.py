"""The whole model with the Triton backend (CPU: under TRITON_INTERPRET=1) against the torch backend."""
import os

import numpy as np
import pytest
import torch

from zkernels import Reranker

pytest.importorskip("triton")
if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2, hidden_size=64)
PAIRS = [("first query", "a document"), ("first query", "  leading spaces"), ("first query", ""),
         ("first query", "a longer document " * 6), ("second query 🐱", "x"), ("second query 🐱", "日本語")]


@pytest.mark.parametrize("fmt", ["zerank", "qwen3-reranker"])
def test_triton_backend_equals_torch_backend_float32(tiny_checkpoint, fmt):
    folder = tiny_checkpoint("triton-model", **CFG)  # format= picks the recipe
    ref = Reranker.from_pretrained(folder, format=fmt, device=DEVICE, backend="torch").predict(PAIRS)
    tri = Reranker.from_pretrained(folder, format=fmt, device=DEVICE, backend="triton")
    assert tri.engine.backend == "triton"
    out = tri.predict(PAIRS)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=1e-6)
    if fmt == "zerank":  # packing without the shared prefix does not depend on the format (and costs 2x here)
        np.testing.assert_allclose(tri.predict(PAIRS, use_prefix_cache=False), ref, rtol=2e-5, atol=1e-6)


def test_triton_backend_equals_torch_backend_float16(tiny_checkpoint):
    folder = tiny_checkpoint("triton-model", **CFG)
    ref = Reranker.from_pretrained(folder, device=DEVICE, dtype=torch.float32, backend="torch").predict(PAIRS)
    out = Reranker.from_pretrained(folder, device=DEVICE, dtype=torch.float16, backend="triton").predict(PAIRS)
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-3)  # fp16 weights and activations


def test_backend_choice(tiny_checkpoint, monkeypatch):
    from zkernels.kernels import cpu, resolve_backend
    assert resolve_backend(None, "cpu") == ("cpu" if cpu.available() else "torch")  # the C++ kernels when built
    monkeypatch.setenv("ZKERNELS_BACKEND", "triton")
    assert resolve_backend(None, "cpu") == "triton"
    assert resolve_backend("torch", "cpu") == "torch"  # the argument wins over the variable
    monkeypatch.setenv("ZKERNELS_BACKEND", "cuda-magic")
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        resolve_backend(None, "cpu")
