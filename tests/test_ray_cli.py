"""`zkernels rerank-dataset` / `embed-dataset` end to end on a local Ray: real files (typed columns with
nulls, invalid rows), single-file and folder outputs, and the errors a long job must give."""
from __future__ import annotations

import datetime
import json
import math
import os

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

from zkernels.cli import main  # noqa: E402

pytest_plugins = ["_ray_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")

ROWS, BATCH = 60, 16
INVALID = (37, 41)  # rows whose document is null: the first one in the third batch


@pytest.fixture(scope="module")
def real_file(tmp_path_factory):
    """Parquet files as someone else wrote them: a nullable int with nulls only in the first batch, a string
    column that is all null in the first file, NaN and infinities, timestamps, and documents that are null."""
    at = datetime.datetime(2026, 5, 1, 12, 0)
    table = pa.table({
        "id": pa.array([None if i < BATCH else i for i in range(ROWS)], pa.int64()),
        "note": pa.array([None if i < 2 * BATCH else f"note {i}" for i in range(ROWS)], pa.string()),
        "x": [math.nan if i == 3 else math.inf if i == 4 else i / 4 for i in range(ROWS)],
        "at": pa.array([at + datetime.timedelta(minutes=i) for i in range(ROWS)], pa.timestamp("ms")),
        "q": [f"question {i // 10}" for i in range(ROWS)],
        "passage": [None if i in INVALID else f"passage {i} " + "v " * (i % 7) for i in range(ROWS)]})
    # Two files: the first invalid row is in the second one.
    folder = tmp_path_factory.mktemp("real") / "pairs"
    folder.mkdir()
    pq.write_table(table.slice(0, 2 * BATCH), folder / "part-0.parquet")
    pq.write_table(table.slice(2 * BATCH), folder / "part-1.parquet")
    return folder, table


def rerank_args(folder, source, output, *extra):
    return ["rerank-dataset", "--model", str(folder), "--input", str(source), "--input-format", "parquet",
            "--output", str(output), "--query-column", "q", "--document-column", "passage", "--concurrency", "1",
            "--batch-size", str(BATCH), *extra]


def test_an_invalid_row_stops_the_job_naming_its_position_and_leaves_no_output(ray_rerank_folder, real_file,
                                                                               tmp_path, capsys):
    source, _ = real_file
    rc = main(rerank_args(ray_rerank_folder, source, f"{tmp_path}/folder/"))
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("zkernels: error:")]
    assert rc == 1 and errors == [
        f"zkernels: error: row {INVALID[0]} of the input (counting from 0) holds a null (missing) value in column "
        f"'passage', where a string belongs; pass --on-invalid null to score the other rows and give such rows "
        f"a null score"]
    assert list(tmp_path.iterdir()) == []  # the folder the job created is gone with its files


def test_embed_json_lines_into_a_folder_with_null_embeddings(ray_embed_folder, ray_embedder, tmp_path, capsys):
    # A JSON Lines file whose text column holds a number, an object and a null among its strings.
    texts = [5 if i == 3 else {"a": 1} if i == 9 else None if i == 5 else f"sentence {i} " + "u " * (i % 5)
             for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    rc = main(["embed-dataset", "--model", str(ray_embed_folder), "--input", str(tmp_path / "in.jsonl"),
               "--output", f"{tmp_path}/codes/", "--output-format", "jsonl", "--text-column", "body",
               "--embedding-column", "code", "--input-type", "query", "--precision", "ubinary", "--concurrency", "1",
               "--batch-size", "8", "--on-invalid", "null"])
    out = capsys.readouterr().out
    assert rc == 0 and "wrote 30 rows" in out and "3 rows had a null or non-string body: their embedding is null" in out
    rows = sorted((json.loads(line) for f in (tmp_path / "codes").iterdir() for line in f.read_text().splitlines()),
                  key=lambda r: r["n"])
    # The text column stays text: a value that was not a string is written as its JSON text.
    assert [r["body"] for r in rows] == [t if t is None or isinstance(t, str) else json.dumps(t) for t in texts]
    assert [i for i, r in enumerate(rows) if r["code"] is None] == [3, 5, 9]
    valid = [t for t in texts if isinstance(t, str)]
    codes = np.array([r["code"] for r in rows if r["code"] is not None], dtype=np.uint8)
    np.testing.assert_array_equal(codes, ray_embedder.encode_query(valid, precision="ubinary"))


def test_max_retries_ends_a_batch_that_keeps_killing_its_actor(ray_rerank_folder, monkeypatch, tmp_path, capsys):
    from zkernels.ray import RerankPredictor, datasets

    class DiesOnLongRows(RerankPredictor):
        """Dies, as a process the host runs out of memory for, on any batch with a document over 100 chars."""
        def compute(self, texts):
            if max(map(len, texts["document"])) > 100:
                os._exit(1)
            return super().compute(texts)

    monkeypatch.setattr(datasets, "RerankPredictor", DiesOnLongRows)
    docs = [f"doc {i}" + " long" * 40 * (i == 9) for i in range(24)]
    pq.write_table(pa.table({"query": ["q"] * 24, "document": docs}), tmp_path / "in.parquet")
    rc = main(["rerank-dataset", "--model", str(ray_rerank_folder), "--input", str(tmp_path / "in.parquet"),
               "--output", str(tmp_path / "out.parquet"), "--concurrency", "1", "--batch-size", "8",
               "--max-retries", "0"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and err == (
        "zkernels: error: a batch of 8 rows; its longest document has 205 characters (row 1 of the batch, starting "
        "'doc 9 long long long long long long long long long long long') killed its actor's process 1 time (out of "
        "memory, or a crash in native code); it is not tried again after --max-retries 0. Lower --batch-size or "
        "--max-tokens-per-batch, or remove that row")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_errors_before_any_actor_starts_name_the_problem(ray_rerank_folder, tmp_path, capsys):
    folder = ray_rerank_folder
    (tmp_path / "in.jsonl").write_text(json.dumps({"query": "q", "text": "d"}) + "\n")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "in.jsonl"),
               "--output", str(tmp_path / "out.jsonl")])
    assert rc == 1 and "has no column 'document'" in capsys.readouterr().err
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "missing.parquet"),
               "--output", str(tmp_path / "out.jsonl")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.parquet").write_bytes(b"")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"query": "q", "document": "d"}) + "\n")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "pairs.jsonl"),
               "--output", str(tmp_path / "full")])
    assert rc == 1 and "output folder" in (err := capsys.readouterr().err) and "is not empty (1 entries" in err
    pq.write_table(pa.table({"query": ["q", "q"], "document": pa.nulls(2)}), tmp_path / "nulls.parquet")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "nulls.parquet"),
               "--output", str(tmp_path / "out.parquet")])
    err = capsys.readouterr().err
    assert rc == 1 and "row 0 of the input holds a null (missing) value in column 'document'" in err
    assert "pass --on-invalid null" in err
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "pairs.jsonl"),
               "--output", str(tmp_path / "out.parquet"), "--max-retries", "-1"])
    assert rc == 2 and "--max-retries: must be an integer >= 0, got -1" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "in.jsonl", "nulls.parquet", "pairs.jsonl"]


def test_engine_flags_reach_the_job_as_one_engine_options(ray_rerank_folder, monkeypatch, tmp_path, capsys):
    """What the commands hand the Ray job: one EngineOptions, the device left to each actor unless given."""
    from zkernels import EngineOptions
    from zkernels.ray import datasets
    seen = []

    def record(ds, predictor_cls, predictor_kwargs, **job):
        seen.append((predictor_cls.__name__, predictor_kwargs, job))
        raise RuntimeError("recorded")  # no actors needed to see what they would get

    monkeypatch.setattr(datasets, "map_with_actors", record)
    (tmp_path / "in.jsonl").write_text(json.dumps({"query": "q", "document": "d", "text": "t"}) + "\n")
    common = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"), "--dtype", "bfloat16",
              "--max-tokens-per-batch", "512", "--backend", "torch", "--max-retries", "5", "--on-invalid", "null"]
    assert main(["rerank-dataset", "--model", str(ray_rerank_folder), *common, "--format", "zerank"]) == 1
    assert main(["embed-dataset", "--model", str(ray_rerank_folder), *common, "--device", "cpu"]) == 1
    assert capsys.readouterr().err.count("zkernels: error: recorded") == 2
    (rerank, rerank_kwargs, rerank_job), (embed, embed_kwargs, embed_job) = seen
    options = EngineOptions(dtype="bfloat16", backend="torch", max_tokens_per_batch=512)
    assert rerank == "RerankPredictor" and embed == "EmbedPredictor"
    # without --device the options leave the device unset, so each actor picks its own
    assert rerank_job["options"] == options and embed_job["options"] == options.replace(device="cpu")
    assert (rerank_job["max_retries"], rerank_job["on_invalid"]) == (5, "null")
    assert rerank_kwargs["format"] == "zerank"
    assert not {"device", "dtype", "backend", "max_tokens_per_batch"} & (set(rerank_kwargs) | set(embed_kwargs))
