"""rerank_dataset / embed_dataset on a local Ray (2 CPUs, 2 actors, tiny random models)."""
from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from zkernels import Embedder, Reranker  # noqa: E402
from zkernels.ray import RerankPredictor, embed_dataset, map_with_actors, rerank_dataset  # noqa: E402

ROWS, BLOCKS, BATCH = 512, 4, 128  # blocks of exactly BATCH rows: Ray's batches are rows[k*BATCH:(k+1)*BATCH]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def rerank_folder(tiny_checkpoint):
    return tiny_checkpoint("ray-rerank")


@pytest.fixture(scope="module")
def pairs():
    """Rows laid out query by query, in groups of 1-40 rows that do not line up with the batches."""
    rng = np.random.default_rng(7)
    rows = []
    while len(rows) < ROWS:
        q = f"query {len(rows)} about topic {rng.integers(100)}"
        rows += [{"row": len(rows) + k, "query": q, "document": f"doc {len(rows) + k} " + "w " * int(rng.integers(1, 9))}
                 for k in range(int(rng.integers(1, 41)))]
    return rows[:ROWS]


@pytest.fixture(scope="module")
def direct_scores(rerank_folder, pairs):
    """predict() per actor-sized batch, and one predict() over all rows."""
    reranker = Reranker.from_pretrained(rerank_folder)
    tuples = [(r["query"], r["document"]) for r in pairs]
    chunked = np.concatenate([reranker.predict(tuples[i:i + BATCH]) for i in range(0, len(tuples), BATCH)])
    return chunked, reranker.predict(tuples)


def test_rerank_dataset_parity_order_and_grouping(rerank_folder, pairs, direct_scores):
    ds = ray.data.from_items(pairs, override_num_blocks=BLOCKS)
    out = rerank_dataset(ds, rerank_folder, concurrency=2, batch_size=BATCH).take_all()
    # Order and the query groups come back exactly as they went in.
    assert [r["row"] for r in out] == list(range(ROWS))
    assert [(r["query"], r["document"]) for r in out] == [(r["query"], r["document"]) for r in pairs]
    got = np.array([r["score"] for r in out], dtype=np.float32)
    chunked, whole = direct_scores
    # Each actor batch is one predict() call: bit-identical to predict() on the same rows.
    np.testing.assert_array_equal(got, chunked)
    # One predict() over all rows sees each query's rows together, where an actor sees only those in its
    # batch: a query cut by a batch edge then has a different shared prefix (the longest common token
    # prefix of the rows present; none for a lone row), and a prefix computed apart from the document
    # sums the attention in another order: a few ulp. What else is in the batch does not matter (the
    # engine is batch-invariant on CPU; tests/test_engine_batches.py), only which rows form the group.
    np.testing.assert_array_max_ulp(got, whole, maxulp=1)


def test_failed_actor_is_retried_without_losing_or_duplicating_rows(rerank_folder, pairs, direct_scores, tmp_path):
    marker = str(tmp_path / "crashed")

    class CrashOnce(RerankPredictor):
        """Kills its own actor process the first time it sees row 300 (mid-run, after other batches)."""
        def __call__(self, batch):
            if 300 in batch["row"].tolist():
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    os._exit(1)
                except FileExistsError:
                    pass
            return super().__call__(batch)

    ds = ray.data.from_items(pairs, override_num_blocks=BLOCKS)
    out = map_with_actors(ds, CrashOnce, {"model": str(rerank_folder)}, input_columns=["query", "document"],
                          what="test", concurrency=2, batch_size=BATCH).take_all()
    assert os.path.exists(marker), "the actor never crashed: the test did not exercise a retry"
    assert [r["row"] for r in out] == list(range(ROWS))
    np.testing.assert_array_equal(np.array([r["score"] for r in out], dtype=np.float32), direct_scores[0])


def test_embed_dataset_parity(tmp_path, qwen_tokenizer):
    from zkernels.testing import make_tiny_embedding_checkpoint
    folder = make_tiny_embedding_checkpoint(tmp_path / "emb", tokenizer=qwen_tokenizer)
    texts = [f"text {i} " + "z " * (i % 11) for i in range(ROWS)]
    ds = ray.data.from_items([{"text": t} for t in texts], override_num_blocks=4)
    out = embed_dataset(ds, folder, concurrency=2, batch_size=BATCH).take_all()
    got = np.stack([r["embedding"] for r in out])
    embedder = Embedder.from_pretrained(folder)
    chunked = np.concatenate([embedder.encode_document(texts[i:i + BATCH]) for i in range(0, ROWS, BATCH)])
    assert [r["text"] for r in out] == texts
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, chunked)


def test_bad_datasets_give_clear_errors(rerank_folder):
    with pytest.raises(ValueError, match=r"rerank_dataset: the dataset has no column 'document'"):
        rerank_dataset(ray.data.from_items([{"query": "q", "doc": "d"}]), rerank_folder, concurrency=1)
    with pytest.raises(TypeError, match=r"column 'document' must hold strings, but its type is int64"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": 3}]), rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"the dataset is empty"):
        rerank_dataset(ray.data.from_items([]), rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"concurrency must be a positive int"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), rerank_folder, concurrency=0)
    with pytest.raises(ValueError, match=r"precision must be one of"):
        embed_dataset(ray.data.from_items([{"text": "t"}]), rerank_folder, precision="uint8")


def test_missing_cell_fails_the_job_with_the_column_named(rerank_folder):
    ds = ray.data.from_items([{"query": "q", "document": "d"}, {"query": "q", "document": None}])
    with pytest.raises(Exception, match=r"column 'document' must hold strings, but a row holds a null"):
        rerank_dataset(ds, rerank_folder, concurrency=1, batch_size=2).take_all()
