"""The whole model on the cpu backend (the default on CPU devices): scores against the torch backend
(the reference forward) and transformers' own Qwen3, in float32 (1e-6) and bfloat16 (no further from
the float32 result than transformers' bf16 on the same weights); batch invariance; the embedder."""

import copy
import random

import numpy as np
import pytest
import torch

from zkernels import Embedder, Reranker
from zkernels.kernels import cpu, resolve_backend
from zkernels.model import linear
from zkernels.reference import zerank_reference

pytestmark = pytest.mark.skipif(not cpu.available(), reason="zkernels._cpu_ops is not built")

CONFIGS = {  # GQA 1 / 2 / 4 / 8, head_dim 64 / 128 / 32
    "gqa1-hd64": dict(num_attention_heads=4, num_key_value_heads=4, head_dim=64, num_hidden_layers=2),
    "gqa2-hd128": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=128, num_hidden_layers=2),
    "gqa4-hd32": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, num_hidden_layers=3),
    "gqa8-hd64": dict(num_attention_heads=16, num_key_value_heads=2, head_dim=64, num_hidden_layers=2, hidden_size=128),
}
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital and most populous city of France.",
    "",
    "x",
    "Ünïcödé — 東京 🐱",
    "Lyon is a city in France. " * 20,
    "\n\nleading newlines\nand more",
]
PAIRS = [(QUERY, d) for d in DOCS] + [("another query", "Berlin is the capital of Germany."), ("🐱", "cats")]


def test_cpu_is_the_default_backend_on_cpu():
    assert resolve_backend(None, "cpu") == "cpu"
    assert resolve_backend("torch", "cpu") == "torch"
    with pytest.raises(RuntimeError, match="backend 'cpu' runs on CPU devices only"):
        resolve_backend("cpu", "cuda")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_float32_scores_match_torch_backend_and_transformers(tiny_checkpoint, reference_model, name):
    folder = tiny_checkpoint(name, **CONFIGS[name])
    ours = Reranker.from_pretrained(folder)
    assert ours.engine.backend == "cpu"
    torch_backend = Reranker.from_pretrained(folder, backend="torch")
    got, reference = ours.predict(PAIRS), torch_backend.predict(PAIRS)
    ref = zerank_reference(reference_model(folder), ours.tokenizer, PAIRS).numpy()
    assert ref.max() - ref.min() > 1e-3  # the scores discriminate, or this could not catch an error
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_bfloat16_error_no_worse_than_transformers_bf16(tiny_checkpoint, reference_model):
    """Against the float32 forward of the same (bf16-representable) weights: mean and max score error,
    with 25% slack (both are bf16 rounding noise of the same size; see docs/cpu.md)."""
    folder = tiny_checkpoint("gqa2-hd128", **CONFIGS["gqa2-hd128"])
    hf16 = (
        type(reference_model(folder))
        .from_pretrained(str(folder), dtype=torch.bfloat16, attn_implementation="sdpa")
        .eval()
    )
    hf32 = copy.deepcopy(hf16).float()  # fp32 on exactly the bf16 weights
    ours = Reranker.from_pretrained(folder, dtype=torch.bfloat16)
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "city", "river", "France", "capital", "."]
    pairs = [(QUERY, " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))) for _ in range(40)]
    ref = zerank_reference(hf32, ours.tokenizer, pairs)
    theirs = (zerank_reference(hf16, ours.tokenizer, pairs) - ref).abs()
    mine = (torch.as_tensor(ours.predict(pairs)) - ref).abs()
    assert mine.mean() <= 1.25 * theirs.mean() and mine.max() <= 1.25 * theirs.max(), (mine.mean(), theirs.mean())


def test_float32_batch_invariance_on_the_cpu_backend(tiny_checkpoint):
    """A prompt's score is bit-identical whatever shares its batch (the server relies on it)."""
    folder = tiny_checkpoint("gqa4-hd32", **CONFIGS["gqa4-hd32"])
    r = Reranker.from_pretrained(folder, backend="cpu")
    mine = [(QUERY, d) for d in DOCS]
    alone = r.predict(mine)
    rng = random.Random(1)
    for budget in (8192, 48, 300):
        others = [
            (rng.choice(["q1", "second query", "🐱"]), "word " * rng.randint(0, 40)) for _ in range(rng.randint(3, 30))
        ]
        mixed = others + mine
        rng.shuffle(mixed)
        r.engine.max_tokens_per_batch = budget
        scores = r.predict(mixed)
        np.testing.assert_array_equal(np.array([scores[mixed.index(p)] for p in mine], dtype=np.float32), alone)


def test_packed_linear_rows_do_not_depend_on_the_row_count():
    for dtype in (torch.float32, torch.bfloat16):
        if not cpu.packing_available(dtype):
            continue
        torch.manual_seed(0)
        w, x = torch.randn(96, 64).to(dtype), torch.randn(300, 64).to(dtype)
        packed = cpu.PackedLinear(w)
        full = linear(x, packed)
        torch.testing.assert_close(full.float(), torch.nn.functional.linear(x, w).float(), rtol=1e-5, atol=1e-4)
        for n in list(range(1, 40)) + [100, 299]:
            assert torch.equal(linear(x[:n], packed), full[:n]), (dtype, n)
        assert torch.equal(packed.dense(), w)


def test_float16_model_falls_back_to_torch_ops(tiny_checkpoint):
    folder = tiny_checkpoint("gqa2-hd128", **CONFIGS["gqa2-hd128"])
    a = Reranker.from_pretrained(folder, dtype=torch.float16, backend="cpu").predict(PAIRS)
    b = Reranker.from_pretrained(folder, dtype=torch.float16, backend="torch").predict(PAIRS)
    np.testing.assert_array_equal(a, b)


def test_embedder_on_the_cpu_backend(tmp_path, qwen_tokenizer):
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint

    folder = make_tiny_embedding_checkpoint(
        tmp_path / "emb",
        tokenizer=qwen_tokenizer,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    )
    ours, reference = Embedder.from_pretrained(folder), Embedder.from_pretrained(folder, backend="torch")
    assert ours.engine.backend == "cpu"
    texts = ["a short text", "Paris is the capital of France. " * 10, "🐱"]
    for encode in ("encode_query", "encode_document"):
        np.testing.assert_allclose(getattr(ours, encode)(texts), getattr(reference, encode)(texts), rtol=0, atol=1e-6)
    alone = ours.encode_document(texts[:1])
    np.testing.assert_array_equal(ours.encode_document(texts[::-1] + ["more", "text here"])[2:3], alone)
