"""EngineOptions: one type for how a model runs, its defaults in one place, given once."""
import dataclasses

import pytest
import torch

from zkernels import EngineOptions, Reranker
from zkernels.options import DEFAULT_TOKENS_PER_BATCH, merge_options


def test_defaults_and_validation():
    o = EngineOptions()
    assert (o.device, o.dtype, o.backend, o.max_tokens_per_batch) == (None, None, None, None)
    assert o.resolved_device == "cpu" and EngineOptions(device="cuda:1").resolved_device == "cuda:1"
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
    # None is "not given"; a field the options leave unset takes the argument; equal settings agree
    assert merge_options(o, dtype=None, max_tokens_per_batch=None) is o
    assert merge_options(o, device="cpu", dtype=torch.bfloat16, max_tokens_per_batch=512) == o.replace(device="cpu")
    with pytest.raises(ValueError, match="max_tokens_per_batch=64 contradicts options="):
        merge_options(o, max_tokens_per_batch=64)
    with pytest.raises(TypeError, match="options must be a zkernels.EngineOptions"):
        merge_options({"device": "cpu"})


@pytest.mark.parametrize("given, options", [
    ({"device": "cpu"}, EngineOptions(device="cuda")),  # the default value, given explicitly, still counts
    ({"device": torch.device("cpu")}, EngineOptions(device="cuda:1")),
    ({"dtype": torch.float32}, EngineOptions(dtype="bfloat16")),
    ({"backend": "torch"}, EngineOptions(backend="cpu")),
    ({"show_progress": False}, EngineOptions(show_progress=True)),
])
def test_an_explicit_argument_that_contradicts_the_options_is_an_error_naming_both(given, options):
    (name, value), = given.items()
    with pytest.raises(ValueError, match=rf"^{name}={value!r} contradicts options={options!r}".replace("(", r"\(")
                       .replace(")", r"\)")):
        merge_options(options, **given)


def test_options_reach_the_engine(tiny_checkpoint):
    folder = tiny_checkpoint("zr")
    r = Reranker.from_pretrained(folder, options=EngineOptions(max_tokens_per_batch=333, backend="torch"))
    assert r.engine.max_tokens_per_batch == 333 and r.engine.backend == "torch"
    assert r.engine.options.max_tokens_per_batch == 333
    assert Reranker.from_pretrained(folder, max_tokens_per_batch=77).engine.max_tokens_per_batch == 77
    assert Reranker.from_pretrained(folder).engine.max_tokens_per_batch == DEFAULT_TOKENS_PER_BATCH["cpu"]
    with pytest.raises(ValueError, match="contradicts"):
        Reranker.from_pretrained(folder, max_tokens_per_batch=5, options=EngineOptions(max_tokens_per_batch=6))
    # device="cpu" beside options on cuda is refused before anything loads (no silent cuda, no cpu either)
    with pytest.raises(ValueError, match=r"device='cpu' contradicts options=EngineOptions\(device='cuda'"):
        Reranker.from_pretrained(folder, device="cpu", options=EngineOptions(device="cuda"))
