"""The built-in demo models: small Qwen3 checkpoints with RANDOM weights and Qwen's real tokenizer,
built once in the zkernels cache (`zkernels.paths.cache_dir`). `zkernels demo`, `index build|search`
without models, `zkernels serve` without models and the README's CPU examples all use these same two.
Their scores and embeddings mean nothing; they exist to run the machinery offline.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

DEMO_CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=2, head_dim=32)
DEMO_EMBEDDER_DIMENSIONS = (64, 32)  # learned projections the demo embedder ships (below hidden size 128)


@contextlib.contextmanager
def quiet_transformers():
    """transformers' own progress bars (writing and loading the tiny checkpoints) off: noise here."""
    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def demo_checkpoint(kind: str = "zerank") -> Path:
    """The cached demo reranker checkpoint folder (built on first use)."""
    from .paths import cache_dir
    from .random_checkpoints import make_tiny_checkpoint
    folder = cache_dir() / f"demo-{kind}-v1"
    if not (folder / "model.safetensors").is_file():
        print(f"building the demo checkpoint (random weights) in {folder}", file=sys.stderr, flush=True)
        with quiet_transformers():
            make_tiny_checkpoint(folder, format=kind, seed=1234, **DEMO_CONFIG)
    return folder


def demo_embedder_checkpoint() -> Path:
    """The cached demo embedder (random weights, zembed-1's prompts and suffix, learned projections to
    64 and 32 dimensions), built on first use next to the demo reranker."""
    import torch

    from .paths import cache_dir
    from .random_checkpoints import make_tiny_embedding_checkpoint
    folder = cache_dir() / "demo-embedder-v1"
    if not (folder / "model.safetensors").is_file():
        print(f"building the demo embedder (random weights) in {folder}", file=sys.stderr, flush=True)
        gen = torch.Generator().manual_seed(4321)
        sizes = (DEMO_CONFIG["hidden_size"],) + DEMO_EMBEDDER_DIMENSIONS
        projections = {d_out: torch.randn(d_in, d_out, generator=gen) / d_in ** 0.5
                       for d_in, d_out in zip(sizes, sizes[1:])}
        with quiet_transformers():
            make_tiny_embedding_checkpoint(folder, seed=4321, projections=projections, **DEMO_CONFIG)
    return folder
