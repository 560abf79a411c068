"""rerank_dataset / embed_dataset and map_with_actors on a local Ray (2 CPUs, tiny random models)."""
from __future__ import annotations

import datetime
import math
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from zkernels.ray import RerankPredictor, embed_dataset, map_with_actors, rerank_dataset, write_output  # noqa: E402
from zkernels.ray.columns import InvalidRowError  # noqa: E402

pytest_plugins = ["_ray_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

BLOCKS, BATCH = 4, 16  # blocks of exactly BATCH rows: Ray's batches are rows[k*BATCH:(k+1)*BATCH]
ROWS = BLOCKS * BATCH
INVALID = (37, 41)  # rows whose document is null


def typed_blocks() -> list:
    """Blocks as a reader hands them over: in the first, the nullable int and the note are all null (typed
    null there); NaN and infinities; timestamps; queries in groups of 10 that batch edges cut."""
    at = datetime.datetime(2026, 5, 1, 12, 0)
    blocks = []
    for k in range(BLOCKS):
        rows = range(k * BATCH, (k + 1) * BATCH)
        blocks.append(pa.table({
            "id": pa.nulls(BATCH) if k == 0 else pa.array(list(rows), pa.int64()),
            "note": pa.nulls(BATCH) if k == 0 else pa.array([f"note {i}" for i in rows]),
            "x": [math.nan if i == 3 else math.inf if i == 4 else i / 4 for i in rows],
            "at": pa.array([at + datetime.timedelta(minutes=i) for i in rows], pa.timestamp("ms")),
            "q": [f"question {i // 10}" for i in rows],
            "passage": [None if i in INVALID else f"passage {i} " + "v " * (i % 7) for i in rows]}))
    return blocks


def test_two_actors_one_crashing_keep_types_order_and_predicts_scores(ray_rerank_folder, ray_reranker, tmp_path):
    marker = str(tmp_path / "crashed")

    class CrashOnce(RerankPredictor):
        """Kills its own actor process the first time it scores row 40 (mid-run, after other batches)."""
        def compute(self, texts):
            if "passage 40 v v v v v " in texts["passage"]:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    os._exit(1)
                except FileExistsError:
                    pass
            return super().compute(texts)

    ds = ray.data.from_arrow(typed_blocks())
    # Two actors on half a CPU each: the 2-CPU Ray keeps a CPU for Ray Data's own tasks.
    scored = map_with_actors(ds, CrashOnce, {"model": str(ray_rerank_folder), "query_column": "q",
                                            "document_column": "passage"}, input_columns=["q", "passage"],
                             what="test", concurrency=2, num_cpus=0.5, batch_size=BATCH, on_invalid="null")
    summary = write_output(scored, str(tmp_path / "out.parquet"), null_column="score")
    assert os.path.exists(marker), "the actor never crashed: the test did not exercise a retry"
    got, table = pq.read_table(tmp_path / "out.parquet"), pa.concat_tables(typed_blocks(), promote_options="default")
    # Every row once, in order, every kept column with the input's type and its nulls, whatever the batch.
    assert (summary.rows, summary.null_rows) == (ROWS, len(INVALID))
    assert got.schema.remove_metadata() == pa.schema([*ds.schema().base_schema, ("score", pa.float32())])
    assert got.schema.field("id").type == pa.int64() and got.schema.field("note").type == pa.string()
    assert str(got.drop_columns(["score"]).to_pylist()) == str(table.to_pylist())  # str(): NaN equals NaN
    scores = got.column("score").to_pylist()
    assert [i for i, s in enumerate(scores) if s is None] == list(INVALID)
    # Each Ray batch is one predict() call over its valid rows: bit-identical to that call.
    pairs = list(zip(table.column("q").to_pylist(), table.column("passage").to_pylist()))
    expected = np.concatenate([ray_reranker.predict([p for p in pairs[i:i + BATCH] if p[1] is not None])
                               for i in range(0, ROWS, BATCH)])
    got_scores = np.array([s for s in scores if s is not None], dtype=np.float32)
    np.testing.assert_array_equal(got_scores, expected)
    # One predict() over all rows sees each query's rows together, where an actor sees only those in its
    # batch: a query cut by a batch edge then has a different shared prefix (the longest common token
    # prefix of the rows present; none for a lone row), and a prefix computed apart from the document
    # sums the attention in another order: a few ulp. What else is in the batch does not matter (the
    # engine is batch-invariant on CPU; tests/test_engine_batches.py), only which rows form the group.
    np.testing.assert_array_max_ulp(got_scores, ray_reranker.predict([p for p in pairs if p[1] is not None]),
                                    maxulp=1)


def test_crashes_on_many_batches_each_get_their_own_budget(ray_rerank_folder, ray_reranker, tmp_path):
    """One actor dies once on each of 3 batches with max_retries=1: every batch is within its budget, so
    the job completes, however many crashes the actor's life holds (Ray's max_restarts=max_retries + 1
    would have failed it at the third)."""
    marker_dir = str(tmp_path)

    class CrashOncePerBatch(RerankPredictor):
        """Kills its actor's process the first time it meets each batch (a marker file per batch)."""
        def compute(self, texts):  # one actor at a time (concurrency=1): no race on the marker
            marker = os.path.join(marker_dir, texts["document"][0].replace(" ", "-"))
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().compute(texts)

    rows = [{"query": "q", "document": f"doc {i}"} for i in range(6)]
    ds = ray.data.from_items(rows, override_num_blocks=3)
    scored = map_with_actors(ds, CrashOncePerBatch, {"model": str(ray_rerank_folder)},
                             input_columns=["query", "document"], what="test", concurrency=1, num_cpus=0.5,
                             batch_size=2, max_retries=1)
    got = [r["score"] for r in scored.take_all()]
    assert len(os.listdir(tmp_path)) == 3, "each batch crashed its actor once"
    expected = np.concatenate([ray_reranker.predict([("q", f"doc {i}") for i in range(k, k + 2)])
                               for k in range(0, 6, 2)])
    np.testing.assert_array_equal(np.array(got, dtype=np.float32), expected)


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
