"""The CrossEncoder-style API: predict / rank conventions and bad input."""
import numpy as np
import pytest
import torch

from zkernels import Reranker

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2)


@pytest.fixture(scope="module")
def reranker(tiny_checkpoint):
    return Reranker.from_pretrained(tiny_checkpoint("api", **CFG))


def test_predict_conventions(reranker):
    pairs = [("q", "first"), ("q", "second doc"), ("other", "third")]
    scores = reranker.predict(pairs)
    assert isinstance(scores, np.ndarray) and scores.dtype == np.float32 and scores.shape == (3,)
    assert ((scores > 0) & (scores < 1)).all()
    rows = reranker.predict(pairs, convert_to_numpy=False)  # CrossEncoder's list of 0-d tensors
    assert isinstance(rows, list) and all(r.ndim == 0 for r in rows) and torch.equal(torch.stack(rows),
                                                                                     torch.from_numpy(scores))
    single = reranker.predict(("q", "second doc"))
    assert isinstance(single, np.float32) and single == scores[1]
    assert reranker.predict([]).shape == (0,)


def test_rank(reranker):
    docs = ["alpha", "beta gamma", "", "delta " * 5, "alpha"]
    scores = reranker.predict([("query", d) for d in docs])
    ranked = reranker.rank("query", docs)
    assert [r["corpus_id"] for r in ranked] == sorted(range(len(docs)), key=lambda i: (-scores[i], i))
    assert [r["score"] for r in ranked] == sorted(scores.tolist(), reverse=True)
    top = reranker.rank("query", docs, top_k=2, return_documents=True)
    assert len(top) == 2 and top[0]["text"] == docs[top[0]["corpus_id"]]
    assert set(top[0]) == {"corpus_id", "score", "text"}
    assert reranker.rank("query", []) == []


@pytest.mark.parametrize("bad, match", [
    ([("q", 3)], r"pairs\[0\] must hold two strings"),
    ([("q", "d"), ["only one"]], r"pairs\[1\] must be a \(query, document\) pair"),
    ([None], r"pairs\[0\] must be a \(query, document\) pair"),
    ("just a string", "must be a list of"),
])
def test_predict_bad_input(reranker, bad, match):
    with pytest.raises(TypeError, match=match):
        reranker.predict(bad)


def test_rank_bad_input(reranker):
    with pytest.raises(TypeError, match="query must be a string"):
        reranker.rank(None, ["a"])
    with pytest.raises(TypeError, match=r"documents\[1\] must be a string"):
        reranker.rank("q", ["a", b"bytes"])
    with pytest.raises(TypeError, match="documents must be a list"):
        reranker.rank("q", "not a list")
    with pytest.raises(ValueError, match="top_k must be"):
        reranker.rank("q", ["a"], top_k=-1)
    assert reranker.rank("q", ["a"], top_k=0) == []
    with pytest.raises(ValueError, match="batch_size must be"):
        reranker.predict([("q", "d")], batch_size=0)


def test_best_first_orders_ties_by_input_and_nan_last():
    from zkernels.ranking import best_first
    assert best_first([0.1, 0.5, 0.5, float("nan"), 0.9]) == [4, 1, 2, 0, 3]
    assert best_first(np.array([0.2, 0.2, 0.2], dtype=np.float32), 2) == [0, 1]
    assert best_first([]) == []
