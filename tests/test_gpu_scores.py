"""GPU: zkernels' bf16 scores (Triton backend) are no further from a float32 reference than
transformers' own bf16 scores are, on the same checkpoint. Run with `pytest -m gpu`."""
import numpy as np
import pytest
import torch

from zkernels import Reranker
from zkernels.reference import load_reference_model, zerank_reference

pytestmark = pytest.mark.gpu

# Realistic head_dim (128), GQA 2, enough depth for bf16 error to accumulate.
CFG = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=8, num_attention_heads=16,
           num_key_value_heads=8, head_dim=128)


def _pairs():
    rng = np.random.default_rng(0)
    words = "the of cat dog Paris capital city river bread 🐱 日本 model score query".split()
    return [("which city is the capital of France?", " ".join(rng.choice(words, size=int(n))))
            for n in rng.integers(1, 400, size=48)]


def test_bf16_scores_no_further_from_fp32_than_transformers_bf16(tiny_checkpoint):
    folder = tiny_checkpoint("gpu-bf16", init_std=0.02, **CFG)
    pairs = _pairs()
    tok = Reranker.from_pretrained(folder, device="cuda", dtype=torch.float32, backend="torch").tokenizer
    ref32 = zerank_reference(load_reference_model(folder, torch.float32, "cuda"), tok, pairs).double()
    hf16 = zerank_reference(load_reference_model(folder, torch.bfloat16, "cuda"), tok, pairs).double()
    zk = torch.tensor(Reranker.from_pretrained(folder, device="cuda", dtype=torch.bfloat16).predict(pairs)).double()
    err_hf, err_zk = (hf16 - ref32).abs().max().item(), (zk - ref32).abs().max().item()
    print(f"max |score - fp32 reference|: transformers bf16 {err_hf:.3e}, zkernels bf16 {err_zk:.3e}")
    assert err_zk <= err_hf * 1.1 + 1e-4


def test_triton_fp32_on_gpu_matches_transformers_fp32(tiny_checkpoint):
    folder = tiny_checkpoint("gpu-bf16", init_std=0.02, **CFG)
    pairs = _pairs()
    r = Reranker.from_pretrained(folder, device="cuda", dtype=torch.float32, backend="triton")
    ref = zerank_reference(load_reference_model(folder, torch.float32, "cuda"), r.tokenizer, pairs)
    # TF32 is off by default for matmuls in torch; the remaining difference is summation order.
    np.testing.assert_allclose(r.predict(pairs), ref.numpy(), rtol=1e-4, atol=1e-5)
