"""zkernels.ray's map_batches callables and file helpers, called directly (no Ray cluster)."""
from __future__ import annotations

import numpy as np
import pytest

from zkernels import Embedder, Reranker
from zkernels.ray import EmbedPredictor, RerankPredictor
from zkernels.ray.io import detect_format


@pytest.fixture(scope="module")
def rerank_folder(tiny_checkpoint):
    return tiny_checkpoint("ray-rerank")


@pytest.fixture(scope="module")
def embed_folder(tmp_path_factory, qwen_tokenizer):
    from zkernels.testing import make_tiny_embedding_checkpoint
    return make_tiny_embedding_checkpoint(tmp_path_factory.mktemp("ray-embed") / "emb", tokenizer=qwen_tokenizer)


def test_rerank_predictor_equals_predict_and_keeps_columns(rerank_folder):
    # Interleaved queries in one batch: predict groups them itself, the predictor must not reorder.
    queries = np.array(["q one", "q two", "q one", "q two", "q one"], dtype=object)
    docs = np.array([f"document {i} " + "x " * i for i in range(5)], dtype=object)
    batch = {"id": np.arange(5), "query": queries, "document": docs}
    out = RerankPredictor(str(rerank_folder))(batch)
    direct = Reranker.from_pretrained(rerank_folder).predict(list(zip(queries, docs)))
    assert out["score"].dtype == np.float32
    np.testing.assert_array_equal(out["score"], direct)
    np.testing.assert_array_equal(out["id"], batch["id"])
    assert list(out["query"]) == list(queries)


def test_rerank_predictor_custom_columns_and_bad_cells(rerank_folder):
    p = RerankPredictor(str(rerank_folder), query_column="q", document_column="d", score_column="s")
    assert p({"q": np.array(["a"], dtype=object), "d": np.array(["b"], dtype=object)})["s"].shape == (1,)
    with pytest.raises(KeyError, match=r"column 'd' is missing.*\['q', 'x'\]"):
        p({"q": np.array(["a"], dtype=object), "x": np.array(["b"], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'd' must hold strings, but a row holds a null.*row 1"):
        p({"q": np.array(["a", "a"], dtype=object), "d": np.array(["b", None], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'd' must hold strings, but a row holds a null.*row 0"):
        p({"q": np.array(["a"], dtype=object), "d": np.array([float("nan")], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'q' must hold strings, but a row holds int: 7 \(row 0"):
        p({"q": np.array([7], dtype=object), "d": np.array(["b"], dtype=object)})


def test_embed_predictor_equals_encode(embed_folder):
    texts = np.array(["alpha beta", "gamma", "a longer text about delta and epsilon", "zeta"], dtype=object)
    embedder = Embedder.from_pretrained(embed_folder)
    docs = EmbedPredictor(str(embed_folder))({"text": texts})["embedding"]
    np.testing.assert_array_equal(docs, embedder.encode_document(list(texts)))
    queries = EmbedPredictor(str(embed_folder), input_type="query", precision="ubinary",
                             embedding_column="codes")({"text": texts})["codes"]
    assert queries.dtype == np.uint8 and queries.shape == (4, embedder.dimensions[0] // 8)
    np.testing.assert_array_equal(queries, embedder.encode_query(list(texts), precision="ubinary"))
    assert not np.array_equal(queries, embedder.encode_document(list(texts), precision="ubinary"))


def test_embed_predictor_empty_batch_and_bad_options(embed_folder):
    p = EmbedPredictor(str(embed_folder), precision="binary")
    out = p({"text": np.array([], dtype=object)})["embedding"]
    assert out.shape == (0, 64 // 8) and out.dtype == np.int8
    with pytest.raises(ValueError, match="int8/uint8 calibrate on each batch"):
        EmbedPredictor(str(embed_folder), precision="int8")
    with pytest.raises(ValueError, match="input_type must be one of"):
        EmbedPredictor(str(embed_folder), input_type="passage")
    with pytest.raises(ValueError, match=r"dimensions=32 is not offered.*\[64\]"):
        EmbedPredictor(str(embed_folder), dimensions=32)


def test_detect_format():
    assert detect_format("a/b.parquet") == "parquet" and detect_format("x.JSONL") == "jsonl"
    assert detect_format("folder", "parquet") == "parquet"
    with pytest.raises(ValueError, match="cannot tell the format of 'data.csv'"):
        detect_format("data.csv")
    with pytest.raises(ValueError, match="format must be one of"):
        detect_format("a.parquet", "csv")


def test_batch_size_follows_the_token_budget():
    from zkernels.ray.datasets import MAX_BATCH, MIN_BATCH, estimate_batch_size
    rows = [{"query": "q" * 400, "document": "d" * 3600}]  # ~40 template + 1000 text tokens
    assert estimate_batch_size(rows, ["query", "document"], on_gpu=False, max_tokens_per_batch=None) == 31
    assert estimate_batch_size(rows, ["query", "document"], on_gpu=True, max_tokens_per_batch=None) == 126
    assert estimate_batch_size(rows, ["query", "document"], on_gpu=True, max_tokens_per_batch=1040) == MIN_BATCH
    assert estimate_batch_size([{"text": ""}], ["text"], on_gpu=True, max_tokens_per_batch=None) == 3276
    assert estimate_batch_size([{"text": ""}], ["text"], on_gpu=True, max_tokens_per_batch=10**6) == MAX_BATCH


def test_default_resources_are_one_actor_per_gpu(monkeypatch):
    """resolve_resources against a stand-in for ray reporting a cluster's resources."""
    import types

    from zkernels.ray import datasets

    def fake_ray(gpus):
        pool = lambda **kw: kw  # noqa: E731  (ActorPoolStrategy's arguments, to inspect)
        return types.SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: {"CPU": 64, "GPU": gpus},
                                     data=types.SimpleNamespace(ActorPoolStrategy=pool))
    monkeypatch.setattr(datasets, "_ray", lambda: fake_ray(8))
    assert datasets.resolve_resources(None, None, None) == ({"size": 8}, 1, 1)
    assert datasets.resolve_resources(None, 0.5, 2) == ({"size": 16}, 0.5, 2)
    assert datasets.resolve_resources((2, 6), None, None) == ({"min_size": 2, "max_size": 6}, 1, 1)
    monkeypatch.setattr(datasets, "_ray", lambda: fake_ray(0))
    assert datasets.resolve_resources(None, None, None) == ({"size": 1}, 0, 1)
    with pytest.raises(ValueError, match="concurrency must be a positive int or a"):
        datasets.resolve_resources((3, 2), None, None)
