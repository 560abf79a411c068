"""Fixtures of the serve tests (loaded by conftest.py as a plugin): the tiny served models, and the live
servers several modules share."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def served_models(tiny_checkpoint, qwen_tokenizer, tmp_path_factory):
    """(Reranker, Embedder) on tiny random checkpoints; the embedder has learned projections 64 -> 32 -> 16."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from zkernels import Embedder, Reranker
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint
    reranker = Reranker.from_pretrained(tiny_checkpoint("serve-reranker", seed=3), dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    folder = make_tiny_embedding_checkpoint(tmp_path_factory.mktemp("serve") / "embedder", seed=4,
                                            tokenizer=qwen_tokenizer,
                                            projections={32: torch.randn(64, 32, generator=gen) / 8,
                                                         16: torch.randn(32, 16, generator=gen) / 6})
    embedder = Embedder.from_pretrained(folder, dtype=torch.float32)
    return reranker, embedder


@pytest.fixture(scope="session")
def live_server(served_models):
    """Both models, default limits, tokenizer threads (so a gated forward does not hold tokenizing up).
    Tests that gate its forwards leave it as they found it; its metrics are cumulative: compare deltas."""
    from _serve_util import LiveServer, make_app
    with LiveServer(make_app(served_models)) as server:
        yield server
