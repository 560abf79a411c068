"""Tiny random Qwen3 checkpoints written to disk in Hugging Face's format, for tests, the demo and
benchmarks. The weights are random: scores mean nothing, only that they match the reference."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .qwen_vocab import QWEN_VOCAB_SIZE, build_qwen_tokenizer

TINY_DEFAULTS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rope_theta=1_000_000.0,
                     rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_tiny_checkpoint(folder: str | Path, format: str | None = "zerank", seed: int = 0,
                         init_std: float = 0.08, tokenizer=None, **config) -> Path:
    """Writes a random Qwen3ForCausalLM checkpoint with Qwen's real tokenizer to `folder`.

    init_std is larger than transformers' 0.02 so scores vary across documents and a wrong computation
    cannot hide behind near-constant outputs. format "zerank" adds the 1_LogitScore marker real zerank-2
    revisions ship; "qwen3-reranker" and None add nothing (pass format= when loading).
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    values = {**TINY_DEFAULTS, "vocab_size": QWEN_VOCAB_SIZE, **config}
    torch.manual_seed(seed)
    model_config = Qwen3Config(**values, initializer_range=init_std)
    model = Qwen3ForCausalLM(model_config).eval()
    with torch.no_grad():  # norms initialise to ones; perturb them so their weights are exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    (tokenizer or build_qwen_tokenizer()).save_pretrained(str(tmp))
    if format == "zerank":
        (tmp / "1_LogitScore").mkdir()
        (tmp / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": 9454}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
