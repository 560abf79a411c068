# Run from the repository root: PYTHONPATH=. python benchmarks/parity_figures.py
"""Max relative score error of zkernels vs the reference recipes through transformers' Qwen3ForCausalLM,
per tiny config and format (the parity suite's configs and pairs), float32 CPU."""
import sys
import tempfile

import torch

sys.path.insert(0, "tests")
from test_reranker_parity import CONFIGS, PAIRS

from zkernels import Reranker
from zkernels.qwen_vocab import build_qwen_tokenizer
from zkernels.random_checkpoints import make_tiny_checkpoint
from zkernels.reference import load_reference_model, qwen3_reranker_reference, zerank_reference

tmp = tempfile.mkdtemp()
tok = build_qwen_tokenizer(f"{tmp}/tok")
worst = 0.0
for name, cfg in CONFIGS.items():
    for fmt in ("zerank", "qwen3-reranker"):
        folder = make_tiny_checkpoint(f"{tmp}/{name}-{fmt}", format=fmt, tokenizer=tok, **cfg)
        r = Reranker.from_pretrained(folder, format=fmt)
        ours = torch.tensor(r.predict(PAIRS), dtype=torch.float64)
        m = load_reference_model(folder)
        ref = (zerank_reference if fmt == "zerank" else qwen3_reranker_reference)(m, r.tokenizer, PAIRS).double()
        rel = ((ours - ref).abs() / ref.abs()).max().item()
        worst = max(worst, rel)
        print(f"{name:22s} {fmt:15s} n={len(PAIRS)}  max rel err {rel:.2e}  "
              f"score range {ref.min():.4f}..{ref.max():.4f}")
print(f"worst {worst:.2e}")
