"""zkernels.ray's map_batches callables and helpers, called directly (no Ray cluster)."""
from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")

from zkernels import EngineOptions  # noqa: E402
from zkernels.ray import EmbedPredictor, RerankPredictor  # noqa: E402
from zkernels.ray import predictors as predictors_module  # noqa: E402
from zkernels.ray.columns import InvalidRowError  # noqa: E402
from zkernels.ray.io import detect_format, folder_format, is_folder  # noqa: E402
from zkernels.ray.retries import BatchKeepsFailingError, CrashGuard, ray_limits  # noqa: E402

pytest_plugins = ["_ray_fixtures"]


# The input's schema, as Ray reports it, for the Arrow batches below.
SCHEMA = pa.schema([("id", pa.int64()), ("note", pa.string()), ("query", pa.string()), ("document", pa.string())])


@pytest.fixture(scope="module")
def rerank_predictor(ray_rerank_folder):
    return RerankPredictor(str(ray_rerank_folder), on_invalid="null", input_schema=SCHEMA)


def test_rerank_predictor_equals_predict_and_keeps_columns(rerank_predictor, ray_reranker):
    # Interleaved queries in one batch: predict groups them itself, the predictor must not reorder.
    queries = np.array(["q one", "q two", "q one", "q two", "q one"], dtype=object)
    docs = np.array([f"document {i} " + "x " * i for i in range(5)], dtype=object)
    batch = {"id": np.arange(5), "query": queries, "document": docs}
    out = rerank_predictor(batch)
    assert out["score"].dtype == np.float32
    np.testing.assert_array_equal(out["score"], ray_reranker.predict(list(zip(queries, docs))))
    np.testing.assert_array_equal(out["id"], batch["id"])
    assert list(out["query"]) == list(queries)


def test_rerank_predictor_custom_columns_and_bad_cells(ray_rerank_folder):
    p = RerankPredictor(str(ray_rerank_folder), query_column="q", document_column="d", score_column="s")
    assert p({"q": np.array(["a"], dtype=object), "d": np.array(["b"], dtype=object)})["s"].shape == (1,)
    with pytest.raises(KeyError, match=r"column 'd' is missing.*\['q', 'x'\]"):
        p({"q": np.array(["a"], dtype=object), "x": np.array(["b"], dtype=object)})
    with pytest.raises(InvalidRowError, match=r"column 'd' must hold strings, but a row holds a null.*row 1 of this "
                                              r"batch\); pass on_invalid='null'"):
        p({"q": np.array(["a", "a"], dtype=object), "d": np.array(["b", None], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'd' must hold strings, but a row holds a null.*row 0"):
        p({"q": np.array(["a"], dtype=object), "d": np.array([float("nan")], dtype=object)})
    with pytest.raises(TypeError, match=r"column 'q' must hold strings, but a row holds int: 7 \(row 0"):
        p({"q": np.array([7], dtype=object), "d": np.array(["b"], dtype=object)})
    arrow = pa.table({"q": ["a", "a", "a"], "d": ["b", "c", None]})
    with pytest.raises(InvalidRowError, match=r"column 'd' must hold strings, but a row holds a null.*row 2 of"):
        p(arrow)


def test_arrow_batch_keeps_kept_columns_and_gives_invalid_rows_a_null_score(rerank_predictor, ray_reranker):
    # A batch as Ray hands it over after pandas touched it: the nullable int came back as float64 and the
    # all-null note as a null-typed column; the columns in another order. The input's schema says what
    # they are.
    batch = pa.table({"note": pa.nulls(4), "id": pa.array([None, 1.0, 2.0, 3.0]),
                      "query": ["q a", "q a", None, "q b"], "document": ["d 0", None, "d 2", "d 3"]})
    p = rerank_predictor
    out = p(batch)
    assert out.schema == pa.schema([*SCHEMA, pa.field("score", pa.float32())])
    assert out.column("id").to_pylist() == [None, 1, 2, 3] and out.column("note").null_count == 4
    scores = out.column("score").to_pylist()
    assert [s is None for s in scores] == [False, True, True, False]
    np.testing.assert_array_equal(np.array([scores[0], scores[3]], dtype=np.float32),
                                  ray_reranker.predict([("q a", "d 0"), ("q b", "d 3")]))
    # Every row invalid: a column of nulls of the same type, no call into the model.
    none = p(pa.table({"query": pa.array([None, None], pa.string()), "document": ["x", "y"]}))
    assert none.column("score").type == pa.float32() and none.column("score").null_count == 2
    # numpy batches have no null: None in an object array.
    out = p({"query": np.array(["q a", "q a"], dtype=object), "document": np.array(["d", None], dtype=object)})
    assert out["score"].dtype == object and out["score"][1] is None and isinstance(out["score"][0], np.float32)


@pytest.fixture(scope="module")
def document_predictor(ray_embed_folder):
    return EmbedPredictor(str(ray_embed_folder), on_invalid="null")


def test_embed_predictor_equals_encode_and_uses_the_embedders_prompts(document_predictor, ray_embed_folder,
                                                                      ray_embedder):
    texts = np.array(["alpha beta", "gamma", "a longer text about delta and epsilon", "zeta"], dtype=object)
    docs = document_predictor({"text": texts})["embedding"]
    assert docs.dtype == np.float32
    np.testing.assert_array_equal(docs, ray_embedder.encode_document(list(texts)))
    queries = EmbedPredictor(str(ray_embed_folder), input_type="query", precision="ubinary",
                             embedding_column="codes")({"text": texts})["codes"]
    assert queries.dtype == np.uint8 and queries.shape == (4, ray_embedder.dimensions[0] // 8)
    np.testing.assert_array_equal(queries, ray_embedder.encode_query(list(texts), precision="ubinary"))
    assert not np.array_equal(queries, ray_embedder.encode_document(list(texts), precision="ubinary"))
    custom = EmbedPredictor(str(ray_embed_folder), prompt="Represent this: ")({"text": texts})["embedding"]
    np.testing.assert_array_equal(custom, ray_embedder.encode(list(texts), prompt="Represent this: "))


def test_embed_predictor_arrow_nulls_empty_batch_and_bad_options(document_predictor, ray_embed_folder,
                                                                ray_embedder):
    out = document_predictor(pa.table({"id": [1, 2, 3], "text": ["one", None, "three"]}))
    vectors = out.column("embedding")
    assert vectors.type == pa.list_(pa.float32(), 64) and vectors.to_pylist()[1] is None
    np.testing.assert_array_equal(np.array([vectors.to_pylist()[i] for i in (0, 2)], dtype=np.float32),
                                  ray_embedder.encode_document(["one", "three"]))
    assert out.column("id").to_pylist() == [1, 2, 3]
    empty = document_predictor({"text": np.array([], dtype=object)})["embedding"]
    assert empty.shape == (0, 64) and empty.dtype == np.float32
    with pytest.raises(ValueError, match="int8/uint8 calibrate on each batch"):
        EmbedPredictor(str(ray_embed_folder), precision="int8")
    with pytest.raises(ValueError, match="input_type must be one of"):
        EmbedPredictor(str(ray_embed_folder), input_type="passage")
    with pytest.raises(ValueError, match=r"on_invalid must be one of \('error', 'null'\)"):
        EmbedPredictor(str(ray_embed_folder), on_invalid="skip")
    # The embedder's own rules, applied when the actor loads the model.
    with pytest.raises(ValueError, match=r"dimensions=32 is not offered.*\[64\]"):
        EmbedPredictor(str(ray_embed_folder), dimensions=32)
    with pytest.raises(ValueError, match=r"prompt_name 'title' is not among the checkpoint's prompts"):
        EmbedPredictor(str(ray_embed_folder), prompt_name="title")


def test_engine_options_reach_the_model_and_the_device_is_chosen_per_actor(ray_rerank_folder, monkeypatch):
    p = RerankPredictor(str(ray_rerank_folder), options=EngineOptions(max_tokens_per_batch=96, show_progress=True))
    assert p.reranker.engine.options.max_tokens_per_batch == 96 and p.reranker.engine.options.show_progress is False
    options = predictors_module.actor_options
    # The device given (as device= or in the options), else the actor's GPU when Ray gave it one.
    monkeypatch.setattr(predictors_module, "actor_device", lambda: "cuda")
    assert options(EngineOptions(dtype="float32"), "auto", {}).device == "cuda"
    assert options(None, None, {}).device == "cuda"
    assert options(EngineOptions(device="cuda:1"), None, {}).device == "cuda:1"
    assert options(EngineOptions(device="cpu"), None, {}).device == "cpu"  # cpu, given, is not "auto"
    assert options(EngineOptions(), "cpu", {}).device == "cpu"
    assert options(EngineOptions(device="cpu"), "cpu", {}).device == "cpu"
    with pytest.raises(ValueError, match=r"device='cpu' contradicts options=EngineOptions\(device='cuda'"):
        options(EngineOptions(device="cuda"), "cpu", {})
    with pytest.raises(ValueError, match=r"device='auto' contradicts options=EngineOptions\(device='cpu'"):
        options(EngineOptions(device="cpu"), "auto", {})
    # Engine settings given as from_pretrained keywords join the options, and leave the keywords.
    kwargs = {"dtype": "float32", "format": "zerank"}
    assert options(EngineOptions(max_tokens_per_batch=64), "cpu", kwargs) == EngineOptions(
        device="cpu", dtype="float32", max_tokens_per_batch=64, show_progress=False)
    assert kwargs == {"format": "zerank"}
    with pytest.raises(ValueError, match=r"dtype='float16' contradicts options="):
        options(EngineOptions(dtype="float32"), None, {"dtype": "float16"})
    with pytest.raises(ValueError, match=r"max_tokens_per_batch=64 contradicts options="):
        options(EngineOptions(max_tokens_per_batch=32), None, {"max_tokens_per_batch": 64})
    with pytest.raises(TypeError, match="options must be a zkernels.EngineOptions"):
        options({"device": "cpu"}, None, {})


def test_crash_guard_refuses_a_batch_that_killed_its_actor_too_often(tmp_path, monkeypatch):
    """Each CrashGuard stands for one process of the same actor; leaving watch() unfinished is a death."""
    from zkernels.ray import retries
    monkeypatch.setattr(retries, "_actor_id", lambda: "actor-1")
    monkeypatch.setattr(retries.tempfile, "gettempdir", lambda: str(tmp_path))
    batch = {"document": ["short", "a much longer document", None]}
    dead = []  # watches that never finish: held, since closing one would run its clean-up

    def die_in(guard, cells):
        dead.append(guard.watch(cells))
        dead[-1].__enter__()  # scoring started; the process never got to finish it

    die_in(CrashGuard(1), batch)
    die_in(CrashGuard(1), batch)  # one retry allowed: tried again, died again
    with pytest.raises(BatchKeepsFailingError, match=r"a batch of 3 rows; its longest document has 22 characters "
                                                     r"\(row 1 of the batch, starting 'a much longer document'\) "
                                                     r"killed its actor's process 2 times .*max_retries=1"):
        with CrashGuard(1).watch(batch):
            pass
    assert not list(tmp_path.iterdir()), "the note of the batch in flight was not removed"
    # Another batch after a death starts from zero; a Python error is not a death.
    die_in(CrashGuard(0), batch)
    with CrashGuard(0).watch({"document": ["other"]}):
        pass
    with pytest.raises(ZeroDivisionError), CrashGuard(0).watch(batch):
        raise ZeroDivisionError("a Python error while scoring")
    with CrashGuard(0).watch(batch):
        pass
    assert not list(tmp_path.iterdir())
    # Outside a Ray actor the guard does nothing.
    monkeypatch.setattr(retries, "_actor_id", lambda: None)
    die_in(CrashGuard(0), batch)
    assert not list(tmp_path.iterdir())
    # The actor restarts without limit (the budget is per batch); each batch is handed over once more than
    # max_retries, so that the actor gets to refuse it by name.
    assert ray_limits(3, None, None) == (-1, 4) and ray_limits(0, 5, 2) == (5, 2)
    with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
        ray_limits(-1, None, None)


def test_detect_format_and_folders(tmp_path):
    assert detect_format("a/b.parquet") == "parquet" and detect_format("x.JSONL") == "jsonl"
    assert detect_format("folder", "parquet") == "parquet"
    with pytest.raises(ValueError, match="cannot tell the format of 'data.csv'"):
        detect_format("data.csv")
    with pytest.raises(ValueError, match="format must be one of"):
        detect_format("a.parquet", "csv")
    assert is_folder("out/") and is_folder("s3://bucket/scored") and is_folder(str(tmp_path))
    assert not is_folder(str(tmp_path / "scored.parquet"))
    assert folder_format("out/") == "parquet" and folder_format("out.jsonl/") == "jsonl"
    assert folder_format("out/", "jsonl") == "jsonl"


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

    def fake_ray(gpus, cpus=64):
        pool = lambda **kw: kw  # noqa: E731  (ActorPoolStrategy's arguments, to inspect)
        return types.SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: {"CPU": cpus, "GPU": gpus},
                                     data=types.SimpleNamespace(ActorPoolStrategy=pool))
    monkeypatch.setattr(datasets, "_ray", lambda: fake_ray(8))
    assert datasets.resolve_resources(None, None, None) == ({"size": 8}, 1, 1)
    assert datasets.resolve_resources(None, 0.5, 2) == ({"size": 16}, 0.5, 2)
    assert datasets.resolve_resources((2, 6), None, None) == ({"min_size": 2, "max_size": 6}, 1, 1)
    monkeypatch.setattr(datasets, "_ray", lambda: fake_ray(0))
    assert datasets.resolve_resources(None, None, None) == ({"size": 1}, 0, 1)
    with pytest.raises(ValueError, match="concurrency must be a positive int or a"):
        datasets.resolve_resources((3, 2), None, None)
    # Actors may not take every CPU: Ray Data's read and write tasks would wait for one forever.
    monkeypatch.setattr(datasets, "_ray", lambda: fake_ray(0, cpus=2))
    assert datasets.resolve_resources(1, None, None) == ({"size": 1}, 0, 1)
    assert datasets.resolve_resources(2, None, 0.5) == ({"size": 2}, 0, 0.5)
    with pytest.raises(ValueError, match=r"2 actor\(s\) with num_cpus=1 each take 2 of the cluster's 2 CPUs, leaving "
                                         r"less than the one CPU .*Lower concurrency=2 or num_cpus=1"):
        datasets.resolve_resources(2, None, None)
