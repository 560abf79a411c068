"""Pipeline: embed -> binary index -> Hamming candidates -> float rescoring -> rerank.

The tiny models are random, so "relevant" is planted in ways that do not need a trained model: the
embedding checkpoint uses the same (empty) prompt for queries and documents, so a document whose text
IS the query has the query's exact embedding (float score 1, Hamming distance 0); a word-overlap
reranker stands in where the reranking stage must prefer the planted document. The real tiny reranker
checks the plumbing: the pipeline's order is the reranker's own order of the float-rescored survivors.
"""
import random

import numpy as np
import pytest
import torch

from zkernels.embedder import Embedder
from zkernels.pipeline import Pipeline
from zkernels.reranker import Reranker

QUERY = "where do penguins live in the southern hemisphere"
WORDS = ["alpha", "river", "stone", "cloud", "market", "engine", "violin", "harbor", "pepper", "lantern", "orbit",
         "meadow", "copper", "signal", "garden", "ticket", "winter", "canvas", "bridge", "falcon"]


def _corpus(n=40, seed=0):
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    planted = rng.randrange(n)
    docs[planted] = QUERY
    return docs, planted


@pytest.fixture(scope="module")
def embedder(tiny_embedding_checkpoint):
    g = torch.Generator().manual_seed(5)
    return Embedder.from_pretrained(tiny_embedding_checkpoint("pipe-emb", prompts={},
                                                              projections={32: torch.randn(64, 32, generator=g)}))


@pytest.fixture(scope="module")
def reranker(tiny_checkpoint):
    return Reranker.from_pretrained(tiny_checkpoint("pipe-rr"))


class OverlapReranker:
    """Scores a (query, document) pair by the number of query words the document contains; records
    the documents of each call."""

    def __init__(self):
        self.seen = []

    def predict(self, pairs, show_progress_bar=None):
        self.seen.append([d for _, d in pairs])
        return np.array([len(set(q.split()) & set(d.split())) for q, d in pairs], np.float32)


def _expected_survivors(pipe, query, candidates, rerank):
    """Stages 1-2 recomputed independently: Hamming by unpacked bits, then float dot products."""
    emb = pipe.embeddings
    q = pipe.embedder.encode_query([query], dimensions=pipe.dimensions)[0]
    dist = ((emb > 0) != (q > 0)).sum(axis=1)
    cand = np.lexsort((np.arange(len(emb)), dist))[:candidates]
    dots = emb[cand].astype(np.float64) @ q.astype(np.float64)
    return [int(i) for i in cand[np.argsort(-dots, kind="stable")[:rerank]]]


def test_planted_document_first_by_embedding(embedder):
    docs, planted = _corpus()
    pipe = Pipeline(embedder)
    assert pipe.add_documents(docs) == list(range(len(docs)))
    results = pipe.search(QUERY, k=5, candidates=20)
    assert results[0]["corpus_id"] == planted and results[0]["text"] == QUERY
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert len(results) == 5


def test_rerank_stage_sees_the_float_survivors_and_orders_the_result(embedder):
    docs, planted = _corpus(seed=1)
    rr = OverlapReranker()
    pipe = Pipeline(embedder, reranker=rr)
    pipe.add_documents(docs[:25])
    pipe.add_documents(docs[25:])  # ids continue across calls
    results = pipe.search(QUERY, k=3, candidates=16, rerank=8)
    survivors = _expected_survivors(pipe, QUERY, 16, 8)
    assert rr.seen[-1] == [docs[i] for i in survivors]
    assert results[0]["corpus_id"] == planted and results[0]["score"] == len(set(QUERY.split()))
    assert all(r["text"] == docs[r["corpus_id"]] for r in results)


def test_real_reranker_order_and_save_load_roundtrip(embedder, reranker, tmp_path):
    docs, _ = _corpus(seed=2)
    pipe = Pipeline(embedder, reranker=reranker, metadata={"note": "test"})
    pipe.add_documents(docs)
    results = pipe.search(QUERY, k=4, candidates=24)
    survivors = _expected_survivors(pipe, QUERY, 24, 16)
    want = reranker.rank(QUERY, [docs[i] for i in survivors], top_k=4)
    assert [(r["corpus_id"], r["score"]) for r in results] == [(survivors[w["corpus_id"]], w["score"]) for w in want]

    pipe.save(tmp_path / "saved")
    loaded = Pipeline.load(tmp_path / "saved", embedder, reranker)
    assert loaded.metadata == {"note": "test"} and len(loaded) == len(docs)
    np.testing.assert_array_equal(np.asarray(loaded.embeddings), pipe.embeddings)
    assert loaded.search(QUERY, k=4, candidates=24) == results
    for q in ("penguins", "market engine"):
        assert loaded.search(q, k=4, candidates=24) == pipe.search(q, k=4, candidates=24)


def test_projected_dimensions(embedder, tmp_path):
    docs, planted = _corpus(seed=3)
    pipe = Pipeline(embedder, dimensions=32)
    pipe.add_documents(docs)
    assert pipe.embeddings.shape == (len(docs), 32) and pipe.index.num_bits == 32
    assert pipe.search(QUERY, k=2, candidates=10)[0]["corpus_id"] == planted
    pipe.save(tmp_path / "p32")
    assert Pipeline.load(tmp_path / "p32", embedder).search(QUERY, k=2, candidates=10) == \
        pipe.search(QUERY, k=2, candidates=10)


def test_bad_input(embedder, tmp_path):
    pipe = Pipeline(embedder)
    assert pipe.search(QUERY) == []  # nothing indexed yet
    with pytest.raises(ValueError, match="empty"):
        pipe.add_documents([])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        pipe.add_documents(["fine", None])
    pipe.add_documents(["one document", "another document"])
    with pytest.raises(TypeError, match="query must be a string"):
        pipe.search(42)
    with pytest.raises(TypeError, match=r"queries\[1\] must be a string"):
        pipe.search(["fine", b"bytes"])
    assert pipe.search([]) == []
    with pytest.raises(ValueError, match="k must be a positive int"):
        pipe.search(QUERY, k=0)
    with pytest.raises(ValueError, match=r"candidates \(2\) must be at least k \(5\)"):
        pipe.search(QUERY, k=5, candidates=2)
    with pytest.raises(ValueError, match="dimensions=12 is not offered"):
        Pipeline(embedder, dimensions=12)
    with pytest.raises(FileNotFoundError, match="pipeline.json is missing"):
        Pipeline.load(tmp_path, embedder)
    assert len(pipe.search(QUERY, k=5, candidates=50)) == 2  # fewer documents than k


def test_cli_build_and_search(embedder, tiny_checkpoint, tmp_path, capsys):
    import json

    from zkernels.cli import main
    from zkernels.cli.documents import read_documents
    docs, planted = _corpus(seed=4)
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs) + "\n\n")
    assert read_documents(str(tmp_path / "docs.jsonl")) == docs
    model, rr = str(embedder.folder), str(tiny_checkpoint("pipe-rr"))
    out = tmp_path / "idx"
    assert main(["index", "build", "--model", model, "--reranker", rr, "--documents", str(tmp_path / "docs.jsonl"),
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(out), "--query", QUERY, "--k", "3", "--candidates", "20", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    pipe = Pipeline.load(out, embedder, Reranker.from_pretrained(rr))  # the models recorded at build time
    assert [(r["corpus_id"], r["score"]) for r in rows] == \
        [(r["corpus_id"], r["score"]) for r in pipe.search(QUERY, k=3, candidates=20)]
    assert main(["index", "search", str(out), "--query", QUERY, "--k", "1", "--no-reranker", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["corpus_id"] == planted
    assert main(["index", "search", str(tmp_path), "--query", QUERY]) == 1  # a runtime error, not usage
    assert "pipeline.json is missing" in capsys.readouterr().err


class Spy:
    """Wraps an object and counts calls of one method."""

    def __init__(self, inner, method):
        self.inner, self.method, self.calls = inner, method, 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def counted(*args, **kwargs):
            self.calls += 1
            return attr(*args, **kwargs)
        return counted


@pytest.mark.parametrize("with_reranker", [False, True])
def test_list_of_queries_is_one_batch_with_the_same_results(embedder, reranker, with_reranker):
    docs, _ = _corpus(seed=6)
    queries = [QUERY, "market engine", "violin harbor pepper", QUERY]
    pipe = Pipeline(embedder, reranker=reranker if with_reranker else None)
    pipe.add_documents(docs)
    one_by_one = [pipe.search(q, k=3, candidates=20) for q in queries]
    pipe.embedder = Spy(embedder, "encode_query")
    if with_reranker:
        pipe.reranker = Spy(reranker, "predict")
    batched = pipe.search(queries, k=3, candidates=20)
    assert pipe.embedder.calls == 1  # all queries embedded in one encode_query call
    if with_reranker:
        assert pipe.reranker.calls == 1  # all survivors reranked in one call
    assert len(batched) == len(queries)
    for got, want in zip(batched, one_by_one):
        assert [(r["corpus_id"], r["text"]) for r in got] == [(r["corpus_id"], r["text"]) for r in want]
        # equal to float32 rounding: a batch of queries is embedded (and reranked) in other matmul shapes
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], rel=1e-5, abs=1e-6)
    assert batched[0] == batched[3]


def test_load_without_reranker_warns(embedder, reranker, tmp_path):
    import warnings

    pipe = Pipeline(embedder)
    pipe.add_documents(_corpus(seed=7)[0])
    pipe.save(tmp_path / "p")
    with pytest.warns(UserWarning, match="not reranked"):
        Pipeline.load(tmp_path / "p", embedder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Pipeline.load(tmp_path / "p", embedder, reranker)


@pytest.mark.skipif(__import__("os").name != "posix", reason="POSIX permission bits")
def test_saved_index_file_has_the_permissions_of_its_neighbours(embedder, tmp_path):
    import os
    import stat

    pipe = Pipeline(embedder)
    pipe.add_documents(_corpus(seed=8)[0][:5])
    old = os.umask(0o022)
    try:
        pipe.save(tmp_path / "p")
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "p").iterdir()}
    assert modes == dict.fromkeys(["index.bin", "embeddings.npy", "texts.jsonl", "pipeline.json"], 0o644)
