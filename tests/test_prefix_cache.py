"""Shared-prefix caching and batching change the schedule, never the scores."""
import random

import numpy as np
import pytest
import torch

from zkernels import Reranker
from zkernels.packing import group_prefix_len, plan_batches

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2)


def _pairs(seed):
    rng = random.Random(seed)
    words = ["alpha", "beta", " gamma", "\ndelta", "  epsilon", "ζήτα", "🐱", "x", ""]
    queries = ["first query?", "second, different query", "  third  "]
    return [(rng.choice(queries), "".join(rng.choice(words) for _ in range(rng.randint(0, 30))))
            for _ in range(40)]


@pytest.fixture(scope="module")
def reranker(tiny_checkpoint):
    return Reranker.from_pretrained(tiny_checkpoint("cache", **CFG))


@pytest.mark.parametrize("fmt", ["zerank", "qwen3-reranker"])
def test_cached_equals_uncached(tiny_checkpoint, fmt):
    r = Reranker.from_pretrained(tiny_checkpoint("cache", **CFG), format=fmt)  # format= picks the recipe
    pairs = _pairs(1)
    cached = r.predict(pairs)
    uncached = r.predict(pairs, use_prefix_cache=False)
    # Same math; only float32 summation order inside the matmuls may differ (a few ulp).
    np.testing.assert_allclose(cached, uncached, rtol=1e-6, atol=0)


def test_order_budget_and_batch_size_do_not_change_scores(reranker):
    pairs = _pairs(2)
    base = reranker.predict(pairs)
    order = list(range(len(pairs)))
    random.Random(3).shuffle(order)
    shuffled = reranker.predict([pairs[i] for i in order])
    np.testing.assert_array_equal(shuffled, base[order])  # canonical batching: bit-identical
    for budget in (16, 60, 500):
        reranker.engine.max_tokens_per_batch = budget
        try:
            np.testing.assert_array_equal(reranker.predict(pairs), base)  # batch-invariant forward
        finally:
            reranker.engine.max_tokens_per_batch = 8192
    np.testing.assert_array_equal(reranker.predict(pairs, batch_size=3), base)


def test_plan_batches_reconstructs_every_prompt_and_respects_the_budget():
    rng = random.Random(0)
    heads = [[1, 2, 3, 4, 5], [1, 2, 9], [7] * 12]
    prompts, groups = [], []
    for _ in range(200):
        g = rng.randrange(3)
        prompts.append(heads[g] + [rng.randrange(100) for _ in range(rng.randint(1, 20))])
        groups.append(g)
    for budget in (8, 40, 1000):
        batches = plan_batches(prompts, groups, budget)
        seen = []
        for b in batches:
            ids, cu = b.token_ids.tolist(), b.cu_seqlens.tolist()
            assert len(ids) <= max(budget, max(len(p) for p in prompts))
            read_seqs = [s for s in range(len(cu) - 1) if b.cu_seqlens_read[s + 1] > b.cu_seqlens_read[s]]
            assert len(read_seqs) == len(b.prompt_index)
            for s, p in zip(read_seqs, b.prompt_index):
                ps, pl = int(b.prefix_starts[s]), int(b.prefix_lens[s])
                rebuilt = ids[ps:ps + pl] + ids[cu[s]:cu[s + 1]]
                assert rebuilt == prompts[p]
                assert b.positions[cu[s]:cu[s + 1]].tolist() == list(range(pl, len(prompts[p])))
                assert int(b.read_rows[b.prompt_index.index(p)]) == cu[s + 1] - 1
            seen += b.prompt_index
        assert sorted(seen) == list(range(len(prompts)))
    # With a large budget each group's prefix is packed exactly once.
    (big,) = plan_batches(prompts, groups, 10_000)
    assert int((big.prefix_lens > 0).sum()) == len(prompts)
    assert big.token_ids.numel() == sum(len(p) for p in prompts) - sum(
        group_prefix_len([p for p, gg in zip(prompts, groups) if gg == g]) * (groups.count(g) - 1) for g in range(3))


def test_group_prefix_leaves_each_prompt_a_token():
    assert group_prefix_len([[1, 2, 3], [1, 2, 3]]) == 2
    assert group_prefix_len([[1, 2, 3], [1, 2]]) == 1
    assert group_prefix_len([[1, 2, 3]]) == 0
    assert group_prefix_len([[5], [5]]) == 0


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: this call runs ~100k tiny ops, and with two threads on a busy 2-core machine each
    op waits at OpenMP's barrier for the other thread to be scheduled (2 s alone, up to minutes shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ten_thousand_documents_in_one_call(reranker, one_torch_thread):
    docs = [f"document number {i} " + "word " * (i % 7) for i in range(10_000)]
    reranker.engine.max_tokens_per_batch = 4096
    try:
        scores = reranker.predict([("a query", d) for d in docs])
    finally:
        reranker.engine.max_tokens_per_batch = 8192
    assert scores.shape == (10_000,) and np.isfinite(scores).all()
    np.testing.assert_allclose(reranker.predict([("a query", d) for d in docs[:5]]), scores[:5], rtol=1e-6)
