"""rerank_dataset / embed_dataset on a local Ray (2 CPUs, tiny random models)."""
from __future__ import annotations

import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

from zkernels.ray import RerankPredictor, embed_dataset, map_with_actors, rerank_dataset  # noqa: E402
from zkernels.ray.columns import InvalidRowError  # noqa: E402

pytest_plugins = ["_ray_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

ROWS, BLOCKS, BATCH = 512, 4, 128  # blocks of exactly BATCH rows: Ray's batches are rows[k*BATCH:(k+1)*BATCH]


@pytest.fixture(scope="module")
def pairs():
    """Rows laid out query by query, in groups of 1-40 rows that do not line up with the batches."""
    rng = np.random.default_rng(7)
    rows = []
    while len(rows) < ROWS:
        q = f"query {len(rows)} about topic {rng.integers(100)}"
        rows += [{"row": len(rows) + k, "query": q,
                  "document": f"doc {len(rows) + k} " + "w " * int(rng.integers(1, 9))}
                 for k in range(int(rng.integers(1, 41)))]
    return rows[:ROWS]


def test_two_actors_one_crashing_give_every_row_once_in_order_as_predict_does(ray_rerank_folder, ray_reranker,
                                                                                 pairs, tmp_path):
    marker = str(tmp_path / "crashed")

    class CrashOnce(RerankPredictor):
        """Kills its own actor process the first time it scores row 300 (mid-run, after other batches)."""
        def compute(self, texts):
            if pairs[300]["document"] in texts["document"]:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    os._exit(1)
                except FileExistsError:
                    pass
            return super().compute(texts)

    ds = ray.data.from_items(pairs, override_num_blocks=BLOCKS)
    out = map_with_actors(ds, CrashOnce, {"model": str(ray_rerank_folder)}, input_columns=["query", "document"],
                          what="test", concurrency=2, batch_size=BATCH).take_all()
    assert os.path.exists(marker), "the actor never crashed: the test did not exercise a retry"
    # Order and the query groups come back exactly as they went in: no row lost or repeated by the retry.
    assert [r["row"] for r in out] == list(range(ROWS))
    assert [(r["query"], r["document"]) for r in out] == [(r["query"], r["document"]) for r in pairs]
    got = np.array([r["score"] for r in out], dtype=np.float32)
    tuples = [(r["query"], r["document"]) for r in pairs]
    # Each actor batch is one predict() call: bit-identical to predict() on the same rows.
    chunked = np.concatenate([ray_reranker.predict(tuples[i:i + BATCH]) for i in range(0, ROWS, BATCH)])
    np.testing.assert_array_equal(got, chunked)
    # One predict() over all rows sees each query's rows together, where an actor sees only those in its
    # batch: a query cut by a batch edge then has a different shared prefix (the longest common token
    # prefix of the rows present; none for a lone row), and a prefix computed apart from the document
    # sums the attention in another order: a few ulp. What else is in the batch does not matter (the
    # engine is batch-invariant on CPU; tests/test_engine_batches.py), only which rows form the group.
    np.testing.assert_array_max_ulp(got, ray_reranker.predict(tuples), maxulp=1)


def test_bad_datasets_give_clear_errors_before_any_actor_starts(ray_rerank_folder):
    with pytest.raises(ValueError, match=r"rerank_dataset: the dataset has no column 'document'"):
        rerank_dataset(ray.data.from_items([{"query": "q", "doc": "d"}]), ray_rerank_folder, concurrency=1)
    with pytest.raises(TypeError, match=r"column 'document' must hold strings, but its type is int64"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": 3}]), ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"the dataset is empty"):
        rerank_dataset(ray.data.from_items([]), ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"concurrency must be a positive int"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, concurrency=0)
    with pytest.raises(ValueError, match=r"precision must be one of"):
        embed_dataset(ray.data.from_items([{"text": "t"}]), ray_rerank_folder, precision="uint8")
    all_null = ray.data.from_arrow(pa.table({"query": ["q", "q"], "document": pa.nulls(2)}))
    with pytest.raises(InvalidRowError, match=r"row 0 of the input holds a null \(missing\) value in column "
                                              r"'document' \(Ray types the column null.*on_invalid='null'"):
        rerank_dataset(all_null, ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"on_invalid must be one of"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, on_invalid="skip")
    with pytest.raises(ValueError, match=r"max_retries must be an int >= 0, got -1"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, max_retries=-1)
    with pytest.raises(TypeError, match=r"options must be a zkernels.EngineOptions"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, options="cpu")
