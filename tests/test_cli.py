"""Command line: rerank from a file, the shared options of every command, errors and exit statuses,
warnings in CLI terms, a closed stdout, and the offline demo. Commands run in-process through
zkernels.cli.main (one subprocess: the closed-pipe test)."""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zkernels
from zkernels import Reranker
from zkernels.cli import main

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=1)
DOCS = ["first document", "  second one", "日本語 🐱"]
ROOT = Path(zkernels.__file__).resolve().parent.parent  # the zkernels under test, for the subprocess


def _one_error_line(err: str, status_word: str = "error") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"zkernels: {status_word}: "), err
    assert "Traceback" not in err
    return lines[0]


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, leaf in _subparsers(sub):
                    yield f"{name} {inner}", leaf


def _commands():
    """Leaf commands (the ones that run something) and their parsers."""
    from zkernels.cli import build_parser
    return {name: p for name, p in _subparsers(build_parser()) if not any(
        isinstance(a, argparse._SubParsersAction) for a in p._actions)}


def test_rerank_lines_and_jsonl_agree_with_the_api(tiny_checkpoint, tmp_path, capsys):
    folder = tiny_checkpoint("cli", **CFG)
    (tmp_path / "docs.txt").write_text("\n".join(DOCS[:1] + [""] + DOCS[1:]) + "\n")
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d if i % 2 else {"text": d}) for i, d in enumerate(DOCS)))
    expected = Reranker.from_pretrained(folder).rank("the query", DOCS)
    # The same option both ways: --top-k and its alias --k; --progress forced on, then off.
    for name, lines, extra in (("docs.txt", [1, 3, 4], ["--top-k", "2", "--progress"]),
                               ("docs.jsonl", [1, 2, 3], ["--k", "2", "--no-progress"])):
        assert main(["rerank", "--model", str(folder), "--query", "the query", "--documents",
                     str(tmp_path / name), "--json", *extra]) == 0
        captured = capsys.readouterr()
        rows = [json.loads(line) for line in captured.out.splitlines()]
        assert [r["corpus_id"] for r in rows] == [e["corpus_id"] for e in expected[:2]]
        assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected[:2]], rel=1e-6)
        assert rows[0]["text"] == DOCS[rows[0]["corpus_id"]]
        assert [r["line"] for r in rows] == [lines[r["corpus_id"]] for r in rows]  # where to find it in the file
        assert ("prompt" in captured.err) == ("--progress" in extra), captured.err  # the scoring bar's unit


def test_runtime_errors_are_one_line_with_status_1(tiny_checkpoint, tmp_path, capsys):
    folder = str(tiny_checkpoint("cli", **CFG))
    capsys.readouterr()
    good = tmp_path / "good.txt"
    good.write_text("a document\n")

    def rerank(model, documents, query="q"):
        status = main(["rerank", "--model", model, "--query", query, "--documents", str(documents)])
        return status, _one_error_line(capsys.readouterr().err)

    assert "documents file not found" in rerank(folder, tmp_path / "missing.txt")[1]
    assert "is a directory" in rerank(folder, tmp_path)[1]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"title": 3}\n')
    assert "bad.jsonl:2" in rerank(folder, tmp_path / "bad.jsonl")[1]
    (tmp_path / "blank.txt").write_text("\n  \n")
    status, line = rerank(folder, tmp_path / "blank.txt")
    assert status == 1 and "holds no documents" in line
    (tmp_path / "not-a-model").mkdir()
    status, line = rerank(str(tmp_path / "not-a-model"), good)
    assert status == 1 and "--model" in line and "no config.json" in line


def test_messages_name_cli_flags(tiny_checkpoint, tmp_path, capsys):
    plain = str(tiny_checkpoint("plain", format=None, **CFG))  # declares no recipe
    (tmp_path / "docs.txt").write_text("a document\n")
    capsys.readouterr()  # what writing the checkpoint printed
    assert main(["rerank", "--model", plain, "--query", "q", "--documents", str(tmp_path / "docs.txt")]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "--format zerank" in line and "--format qwen3-reranker" in line and "format=" not in line


def test_truncation_warning_names_the_flag_and_long_queries_are_noted(tiny_checkpoint, tmp_path, capsys):
    folder = str(tiny_checkpoint("cli", **CFG))
    capsys.readouterr()
    (tmp_path / "docs.txt").write_text("short\n" + "a long document " * 40 + "\n")
    argv = ["rerank", "--model", folder, "--query", "q", "--documents", str(tmp_path / "docs.txt"),
            "--max-length", "48"]
    assert main(argv) == 0
    warning = _one_error_line(capsys.readouterr().err, "warning")
    assert "--no-truncate" in warning and "--max-length 48" in warning and "truncate=" not in warning
    assert main(argv + ["--no-truncate"]) == 1
    assert "--max-length 48" in _one_error_line(capsys.readouterr().err)
    # The zerank recipe reads only the first 2,000 characters of a query: said once, not per document.
    assert main(["rerank", "--model", folder, "--query", "word " * 500, "--documents", str(tmp_path / "docs.txt"),
                 "--top-k", "1"]) == 0
    note = _one_error_line(capsys.readouterr().err, "note")
    assert "2,000 characters" in note and "2,500 given" in note


def test_usage_errors_have_status_2_and_come_before_any_loading(tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")
    for cls in ("Reranker", "Embedder"):
        monkeypatch.setattr(f"zkernels.{cls.lower()}.{cls}.from_pretrained", no_loading)
    docs = tmp_path / "docs.txt"
    docs.write_text("a document\n")
    rerank = ["rerank", "--model", str(tmp_path), "--query", "q", "--documents", str(docs)]
    for argv, words in ((rerank + ["--top-k", "0"], "--top-k"),
                        (rerank + ["--k", "-3"], "--top-k"),
                        (rerank + ["--max-length", "0"], "--max-length"),
                        (["rerank", "--model", "m", "--query", b"caf\xe9".decode("utf-8", "surrogateescape"),
                          "--documents", str(docs)], "not valid UTF-8"),
                        (["index", "search", str(tmp_path / "nothing"), "--query", "q", "--top-k", "10",
                          "--candidates", "5"], "--candidates (5) must be at least --top-k (10)"),
                        (["index", "search", str(tmp_path / "nothing"), "--query", "q", "--k", "3",
                          "--rerank", "2"], "--rerank (2) must lie between"),
                        (["index", "build", "--documents", str(docs), "--out", str(tmp_path / "o"),
                          "--dimensions", "12"], "multiple of 8")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("usage: ") and words in err and "Traceback" not in err, err


def test_every_option_has_help_and_every_command_the_shared_options(monkeypatch, capsys):
    import zkernels.formats
    import zkernels.kernels
    # choices= are read from the registries when the parser is built, not copied into the CLI
    monkeypatch.setattr(zkernels.formats, "FORMATS", zkernels.formats.FORMATS + ("registered-later",))
    monkeypatch.setattr(zkernels.kernels, "BACKENDS", zkernels.kernels.BACKENDS + ("registered-later",))
    commands = _commands()
    assert set(commands) == {"rerank", "index build", "index search", "serve", "rerank-dataset", "embed-dataset",
                             "demo", "quantize", "check-quantized"}
    for name, parser in commands.items():
        options = {s: a for a in parser._actions for s in a.option_strings}
        for action in parser._actions:
            if action.option_strings == ["--max-batch-tokens"]:  # serve's old name for the flag: hidden alias
                assert name == "serve" and options["--max-tokens-per-batch"].dest == action.dest
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        if name not in ("demo", "quantize"):  # every command that loads a model for a job (demo picks its own,
            # quantize calibrates in float32 on the CPU)
            for flag in ("--device", "--dtype", "--backend", "--max-tokens-per-batch", "--quantize"):
                assert flag in options, (name, flag)
        assert options["--progress"] is options["--no-progress"] and options["--progress"].default is None, name
        for flag in ("--format", "--backend"):
            if flag in options:
                assert "registered-later" in options[flag].choices, (name, flag)
        if name in ("rerank", "index search", "demo"):  # every command that prints ranked results
            assert options["--top-k"] is options["--k"], name
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("zkernels ")


def test_a_closed_stdout_ends_quietly(tiny_checkpoint, tmp_path):
    # `zkernels rerank ... | head -0`: the reader is gone before anything is written.
    folder = str(tiny_checkpoint("cli", **CFG))
    (tmp_path / "docs.txt").write_text("\n".join(f"document {i}" for i in range(50)) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "zkernels", "rerank", "--model", folder, "--query", "q",
                             "--documents", str(tmp_path / "docs.txt")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode == 141


def test_demo_runs_offline_with_a_parity_check(tmp_path, monkeypatch, capsys, qwen_tokenizer):
    qwen_tokenizer.save_pretrained(str(tmp_path / "qwen-tokenizer"))  # as a second run finds it; the demo
    monkeypatch.setenv("ZKERNELS_CACHE", str(tmp_path))                # checkpoint is still built afresh
    assert main(["demo", "--top-k", "3", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "distilled" in captured.out and "-> OK" in captured.out
    assert sum(line[:3].strip().rstrip(".").isdigit() for line in captured.out.splitlines()) == 3
    # transformers' own bars (writing the checkpoint, loading the reference) do not clutter the demo
    assert "Loading weights" not in captured.err and "Writing model shards" not in captured.err, captured.err


def test_an_unexpected_exception_is_one_line_unless_debugging(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("weight_map")
    monkeypatch.setattr("zkernels.cli.rerank.check_checkpoint", lambda *a, **k: None)
    monkeypatch.setattr("zkernels.reranker.Reranker.from_pretrained", broken)
    (tmp_path / "docs.txt").write_text("a document\n")
    argv = ["rerank", "--model", str(tmp_path), "--query", "q", "--documents", str(tmp_path / "docs.txt")]
    assert main(argv) == 1
    assert "unexpected KeyError" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("ZKERNELS_DEBUG", "1")
    with pytest.raises(KeyError):
        main(argv)
