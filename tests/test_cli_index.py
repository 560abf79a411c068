"""`zkernels index build / search` on the command line: arguments, paths and checkpoint kinds checked
before any model loads; results point back at the documents file's lines."""
import json

import pytest

from zkernels.cli import main


@pytest.fixture(scope="module")
def embedding_checkpoint(tiny_embedding_checkpoint):
    return tiny_embedding_checkpoint("cli-index-emb", prompts={})


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("zkernels: error: ") and "Traceback" not in err, err
    return err


def test_build_checks_paths_and_checkpoint_kinds_before_loading(embedding_checkpoint, tiny_checkpoint, tmp_path,
                                                                monkeypatch, capsys):
    reranker = str(tiny_checkpoint("cli-index-rr", num_hidden_layers=1))
    capsys.readouterr()

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")
    monkeypatch.setattr("zkernels.embedder.Embedder.from_pretrained", no_loading)
    monkeypatch.setattr("zkernels.reranker.Reranker.from_pretrained", no_loading)
    docs = tmp_path / "docs.txt"
    docs.write_text("one\ntwo\n")
    existing = tmp_path / "taken"
    existing.write_text("not a folder")
    build = ["index", "build", "--documents", str(docs), "--model", str(embedding_checkpoint), "--reranker", reranker]

    assert main(build + ["--out", str(existing)]) == 1
    assert "--out" in (err := _error(capsys)) and "existing file" in err
    assert main(build + ["--out", str(existing / "inside")]) == 1
    assert "--out" in _error(capsys)
    swapped = ["index", "build", "--documents", str(docs), "--out", str(tmp_path / "idx"),
               "--model", reranker, "--reranker", str(embedding_checkpoint)]
    assert main(swapped) == 1
    assert "--model" in (err := _error(capsys)) and "reranker checkpoint" in err and "pass it as --reranker" in err
    swapped[-3] = str(embedding_checkpoint)  # the right --model, still an embedder as --reranker
    assert main(swapped) == 1
    assert "--reranker" in (err := _error(capsys)) and "embedding checkpoint" in err and "pass it as --model" in err
    assert main(["rerank", "--model", str(embedding_checkpoint), "--query", "q", "--documents", str(docs)]) == 1
    assert "embedding checkpoint" in _error(capsys)
    assert not (tmp_path / "idx").exists()


def test_search_reports_file_lines_and_raises_candidates_to_top_k(embedding_checkpoint, tmp_path, capsys):
    docs = ["penguins live in antarctica", "the stock market fell", "violins have four strings",
            "copper conducts electricity", "falcons fly fast"]
    (tmp_path / "docs.txt").write_text("\n\n".join(docs[:2]) + "\n" + "\n".join(docs[2:]) + "\n")
    lines = [1, 3, 4, 5, 6]
    out = tmp_path / "idx"
    assert main(["index", "build", "--documents", str(tmp_path / "docs.txt"), "--out", str(out),
                 "--model", str(embedding_checkpoint), "--no-reranker", "--no-progress"]) == 0
    capsys.readouterr()
    # --top-k above the default 100 candidates: the candidates grow to top-k rather than fail
    assert main(["index", "search", str(out), "--query", docs[3], "--top-k", "150", "--no-reranker", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["corpus_id"] for r in rows) == list(range(len(docs)))
    assert rows[0]["corpus_id"] == 3  # the document equal to the query (same prompt for both)
    for r in rows:
        assert r["line"] == lines[r["corpus_id"]] and r["text"] == docs[r["corpus_id"]]
