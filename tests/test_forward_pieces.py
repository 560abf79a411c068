"""Qwen3Forward.hidden_pieces: the forward as a generator of pieces (four per layer), which the server runs
a small request's forward between (serve/policy.py). Its rows must be those of the forward in one go, bit
for bit, whatever runs between two pieces, on every CPU path (torch ops, the C++ ops, int8)."""
import random

import pytest
import torch

from zkernels import Reranker
from zkernels.kernels import linear_int8
from zkernels.model import run_to_end

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=3)
PATHS = [dict(backend="torch"), dict(backend="cpu"), dict(backend="cpu", quantize="int8")]


def _pairs(seed, n, words):
    rng = random.Random(seed)
    vocab = ["alpha", "beta", " gamma", "\ndelta", "ζήτα", "🐱", "x", "river", "plane"]
    return [(f"query {seed} {q % 2}", " ".join(rng.choice(vocab) for _ in range(rng.randint(1, words))))
            for q in range(n)]


def _batch(reranker, pairs):
    enc = reranker.encode_pairs(pairs)
    return reranker.engine.plan(enc.ids, enc.groups).batches[0]


@pytest.fixture(scope="module", params=PATHS, ids=lambda p: "-".join(p.values()))
def reranker(tiny_checkpoint, request):
    if request.param.get("quantize") == "int8" and linear_int8.int8_unsupported_reason() is not None:
        pytest.skip(f"int8 cannot run here: {linear_int8.int8_unsupported_reason()}")
    return Reranker.from_pretrained(tiny_checkpoint("pieces", **CFG), dtype=torch.float32, **request.param)


def test_pieces_give_the_rows_of_one_go_whatever_runs_between_them(reranker):
    forward = reranker.engine.forward
    big, small = _batch(reranker, _pairs(1, 12, 60)), _batch(reranker, _pairs(2, 3, 8))
    whole_big, whole_small = forward.hidden_at_read_rows(big), forward.hidden_at_read_rows(small)
    pieces, n_pieces, between = forward.hidden_pieces(big), 0, []
    while True:
        try:
            next(pieces)
        except StopIteration as done:
            rows = done.value
            break
        n_pieces += 1
        between.append(forward.hidden_at_read_rows(small))  # another forward between two pieces
    assert n_pieces == 4 * CFG["num_hidden_layers"] - 1  # four pieces per layer: three yields inside the last
    assert torch.equal(rows.view(torch.int32), whole_big.view(torch.int32))
    assert all(torch.equal(b.view(torch.int32), whole_small.view(torch.int32)) for b in between)


def test_forward_pieces_of_several_batches_match_run_batches(reranker):
    engine = reranker.engine
    batches = [_batch(reranker, _pairs(seed, 4, 20)) for seed in (3, 4)]
    expected = engine.run_batches(batches)
    got = run_to_end(engine.forward_pieces(batches))
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, expected))


def test_a_bad_batch_fails_at_the_first_piece(reranker):
    batch = _batch(reranker, _pairs(5, 2, 5))
    batch.token_ids[0] = reranker.engine.config.vocab_size  # outside the vocabulary
    with pytest.raises(ValueError, match="outside the vocabulary"):
        next(reranker.engine.forward.hidden_pieces(batch))
