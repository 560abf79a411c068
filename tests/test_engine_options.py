"""EngineOptions: one type for how a model runs, its defaults in one place, given once."""
import dataclasses

import pytest
import torch

from zkernels import EngineOptions, Reranker
from zkernels.options import DEFAULT_TOKENS_PER_BATCH, merge_options


def test_defaults_and_validation():
    o = EngineOptions()
    assert (o.device, o.dtype, o.backend, o.max_tokens_per_batch) == ("cpu", None, None, None)
    assert o.tokens_per_batch == DEFAULT_TOKENS_PER_BATCH["cpu"]
    assert EngineOptions(device="cuda:1").tokens_per_batch == DEFAULT_TOKENS_PER_BATCH["cuda"]
    assert EngineOptions(device=torch.device("cpu")).device == "cpu"
    assert EngineOptions(max_tokens_per_batch=100).tokens_per_batch == 100
    for bad in (0, -3, 1.5, True, "100"):
        with pytest.raises(ValueError, match="max_tokens_per_batch must be a positive int"):
            EngineOptions(max_tokens_per_batch=bad)
    with pytest.raises(ValueError, match="is not a torch device"):
        EngineOptions(device="gpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.device = "cuda"


def test_merge_refuses_contradictions():
    o = EngineOptions(max_tokens_per_batch=512, dtype="bfloat16")
    assert merge_options(None, device="cpu", max_tokens_per_batch=64).tokens_per_batch == 64
    assert merge_options(o, device="cpu", dtype=None, max_tokens_per_batch=512) is o
    with pytest.raises(ValueError, match="max_tokens_per_batch=64 contradicts options="):
        merge_options(o, max_tokens_per_batch=64)
    with pytest.raises(TypeError, match="options must be a zkernels.EngineOptions"):
        merge_options({"device": "cpu"})


def test_options_reach_the_engine(tiny_checkpoint):
    folder = tiny_checkpoint("zr")
    r = Reranker.from_pretrained(folder, options=EngineOptions(max_tokens_per_batch=333, backend="torch"))
    assert r.engine.max_tokens_per_batch == 333 and r.engine.backend == "torch"
    assert r.engine.options.max_tokens_per_batch == 333
    assert Reranker.from_pretrained(folder, max_tokens_per_batch=77).engine.max_tokens_per_batch == 77
    assert Reranker.from_pretrained(folder).engine.max_tokens_per_batch == DEFAULT_TOKENS_PER_BATCH["cpu"]
    with pytest.raises(ValueError, match="contradicts"):
        Reranker.from_pretrained(folder, max_tokens_per_batch=5, options=EngineOptions(max_tokens_per_batch=6))
