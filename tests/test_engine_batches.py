"""ScoringEngine.iter_batches: the batch iterator the reranker, embedder, server and Ray adapter share.

Its contract: every caller index exactly once, rows in caller order through gather_rows, duplicates
computed once, lazy, and (CPU float32) a prompt's row independent of whatever else shares its batch.
"""
import random

import numpy as np
import pytest
import torch

from zkernels import Reranker
from zkernels.model import linear
from zkernels.scoring import gather_rows, pad_rows

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2)


def _pairs(seed, n=30, queries=("first query?", "second, different query", "  third  ")):
    rng = random.Random(seed)
    words = ["alpha", "beta", " gamma", "\ndelta", "  epsilon", "ζήτα", "🐱", "x", ""]
    return [(rng.choice(queries), "".join(rng.choice(words) for _ in range(rng.randint(0, 30))))
            for _ in range(n)]


@pytest.fixture(scope="module", params=["zerank", "qwen3-reranker"])
def reranker(tiny_checkpoint, request):
    return Reranker.from_pretrained(tiny_checkpoint("engine", **CFG), format=request.param)  # format= picks the recipe


def test_every_index_once_and_duplicates_computed_once(reranker):
    pairs = _pairs(0)
    pairs = pairs + pairs[:7]  # duplicates
    enc = reranker.encode_pairs(pairs)
    reranker.engine.max_tokens_per_batch = 64  # several batches
    calls = []
    forward = reranker.engine.forward.hidden_at_read_rows
    try:
        reranker.engine.forward.hidden_at_read_rows = lambda b: calls.append(len(b.prompt_index)) or forward(b)
        parts = list(reranker.engine.iter_batches(enc.ids, enc.groups))
    finally:
        del reranker.engine.forward.hidden_at_read_rows
        reranker.engine.max_tokens_per_batch = 8192
    assert len(parts) == len(calls) > 1
    index = [i for idx, _ in parts for i in idx]
    assert sorted(index) == list(range(len(pairs)))
    assert sum(calls) == len({(g, tuple(p)) for g, p in zip(enc.groups, enc.ids)})  # 7 duplicates not recomputed
    assert all(h.shape == (len(idx), reranker.engine.config.hidden_size) for idx, h in parts)
    scores = gather_rows(((i, reranker.score_hidden(h)) for i, h in parts), len(pairs))
    np.testing.assert_array_equal(scores.numpy()[len(pairs) - 7:], scores.numpy()[:7])
    np.testing.assert_array_equal(scores.numpy(), reranker.predict(pairs))


def test_iteration_is_lazy(reranker):
    enc = reranker.encode_pairs(_pairs(1))
    reranker.engine.max_tokens_per_batch = 32
    calls = []
    forward = reranker.engine.forward.hidden_at_read_rows
    try:
        reranker.engine.forward.hidden_at_read_rows = lambda b: calls.append(1) or forward(b)
        it = reranker.engine.iter_batches(enc.ids, enc.groups)
        assert calls == []
        next(it)
        it.close()
    finally:
        del reranker.engine.forward.hidden_at_read_rows
        reranker.engine.max_tokens_per_batch = 8192
    assert calls == [1]


def test_scores_do_not_depend_on_what_else_is_batched(reranker):
    """Bit-identical in float32 on CPU: the server packs unrelated requests together and promises the
    scores of a direct predict() call."""
    mine = _pairs(2, n=5, queries=("my own query",))
    alone = reranker.predict(mine)
    for seed, budget in ((3, 8192), (4, 40), (5, 200), (6, 8192)):
        others = _pairs(seed, n=random.Random(seed).randint(1, 40))
        mixed = others + mine
        random.Random(seed).shuffle(mixed)
        reranker.engine.max_tokens_per_batch = budget
        try:
            scores = reranker.predict(mixed)
        finally:
            reranker.engine.max_tokens_per_batch = 8192
        got = np.array([scores[mixed.index(p)] for p in mine], dtype=np.float32)
        np.testing.assert_array_equal(got, alone)


def test_linear_pads_small_inputs_so_rows_round_alike():
    torch.manual_seed(0)
    w, x = torch.randn(96, 64), torch.randn(40, 64)
    full = linear(x, w)
    for n in range(1, 40):
        torch.testing.assert_close(linear(x[:n], w), full[:n], rtol=0, atol=0)


def test_pad_rows():
    x = torch.randn(5, 3)
    p = pad_rows(x, 8)
    assert p.shape == (8, 3) and torch.equal(p[:5], x) and not p[5:].any()
    assert pad_rows(torch.randn(16, 3), 8).shape == (16, 3)


def test_gather_rows_checks_its_input():
    with pytest.raises(RuntimeError, match="2 rows for 3"):
        gather_rows([([0, 2], torch.zeros(2))], 3)
