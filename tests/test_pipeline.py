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
def embedder(tmp_path_factory, qwen_tokenizer):
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint
    g = torch.Generator().manual_seed(5)
    folder = make_tiny_embedding_checkpoint(tmp_path_factory.mktemp("pipe") / "emb", tokenizer=qwen_tokenizer,
                                            prompts={}, projections={32: torch.randn(64, 32, generator=g)})
    return Embedder.from_pretrained(folder)


@pytest.fixture(scope="module")
def reranker(tiny_checkpoint):
    return Reranker.from_pretrained(tiny_checkpoint("pipe-rr"))


class OverlapReranker:
    """Scores a document by the number of query words it contains; records what it was asked."""

    def __init__(self):
        self.seen = []

    def rank(self, query, documents, top_k=None, show_progress_bar=None):
        self.seen.append(list(documents))
        q = set(query.split())
        scores = [len(q & set(d.split())) for d in documents]
        order = sorted(range(len(documents)), key=lambda i: -scores[i])[:top_k]
        return [{"corpus_id": i, "score": float(scores[i])} for i in order]


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
        pipe.search(["a list"])
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
    from zkernels.documents import read_documents
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
    assert main(["index", "search", str(tmp_path), "--query", QUERY]) == 2
    assert "pipeline.json is missing" in capsys.readouterr().err
