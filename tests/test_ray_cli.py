"""`zkernels rerank-dataset` / `embed-dataset` end to end on a local Ray: Parquet and JSONL round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
import pyarrow as pa  # noqa: E402

from zkernels import Embedder, Reranker  # noqa: E402
from zkernels.cli import main  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_rerank_dataset_parquet_in_jsonl_out(tiny_checkpoint, tmp_path, capsys):
    folder = tiny_checkpoint("ray-rerank")
    queries = [f"question {i % 3}" for i in range(40)]
    docs = [f"passage {i} " + "v " * (i % 7) for i in range(40)]
    pq.write_table(pa.table({"id": list(range(40)), "q": queries, "passage": docs}), tmp_path / "in.parquet")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "in.parquet"),
               "--output", str(tmp_path / "out.jsonl"), "--query-column", "q", "--document-column", "passage",
               "--concurrency", "1", "--batch-size", "16"])
    assert rc == 0 and "wrote 40 rows" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == list(range(40)) and [r["passage"] for r in rows] == docs
    reranker = Reranker.from_pretrained(folder)
    pairs = list(zip(queries, docs))
    direct = np.concatenate([reranker.predict(pairs[i:i + 16]) for i in range(0, 40, 16)])
    # JSON carries the float32 score as its exact decimal: it reads back to the same float32.
    np.testing.assert_array_equal(np.array([r["score"] for r in rows], dtype=np.float32), direct)


def test_embed_dataset_jsonl_in_parquet_out_ubinary(tmp_path, qwen_tokenizer, capsys):
    from zkernels.testing import make_tiny_embedding_checkpoint
    folder = make_tiny_embedding_checkpoint(tmp_path / "emb", tokenizer=qwen_tokenizer)
    texts = [f"sentence {i} " + "u " * (i % 5) for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    rc = main(["embed-dataset", "--model", str(folder), "--input", str(tmp_path / "in.jsonl"),
               "--output", str(tmp_path / "out.parquet"), "--text-column", "body", "--embedding-column", "code",
               "--input-type", "query", "--precision", "ubinary", "--concurrency", "1"])
    assert rc == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("body").to_pylist() == texts
    codes = np.array(table.column("code").to_pylist(), dtype=np.uint8)
    np.testing.assert_array_equal(codes, Embedder.from_pretrained(folder).encode_query(texts, precision="ubinary"))


def test_cli_errors_name_the_problem(tiny_checkpoint, tmp_path, capsys):
    folder = tiny_checkpoint("ray-rerank")
    (tmp_path / "in.jsonl").write_text(json.dumps({"query": "q", "text": "d"}) + "\n")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "in.jsonl"),
               "--output", str(tmp_path / "out.jsonl")])
    assert rc == 1 and "has no column 'document'" in capsys.readouterr().err
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "missing.parquet"),
               "--output", str(tmp_path / "out.jsonl")])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    (tmp_path / "null.jsonl").write_text(json.dumps({"query": "q", "document": "d"}) + "\n"
                                         + json.dumps({"query": "q", "document": None}) + "\n")
    rc = main(["rerank-dataset", "--model", str(folder), "--input", str(tmp_path / "null.jsonl"),
               "--output", str(tmp_path / "out.jsonl"), "--concurrency", "1"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and "TypeError: column 'document' must hold strings, but a row holds a null" in err
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.partial").exists()
