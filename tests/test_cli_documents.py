"""The documents-file reader of the command line: lines end at "\n" only, BOM, empty files, line numbers."""
import json

import pytest

from zkernels.cli.documents import read_documents


def test_lines_end_at_newline_only(tmp_path):
    # Form feed, lone CR, NEL and U+2028 are characters of a document, not line ends (str.splitlines splits them).
    inner = ["page\x0cbreak", "old\rmac", "next\x85line", "para\u2028sep", "file\x1cgroup"]
    path = tmp_path / "docs.txt"
    path.write_bytes(("\r\n".join(inner) + "\r\n").encode("utf-8"))
    assert read_documents(path) == inner
    jsonl = tmp_path / "docs.jsonl"  # valid JSON Lines: JSON allows a raw U+2028 inside a string
    jsonl.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in inner), encoding="utf-8")
    assert read_documents(jsonl) == inner


def test_byte_order_mark_is_not_text(tmp_path):
    (tmp_path / "docs.txt").write_bytes("\ufefffirst\nsecond\n".encode("utf-8"))
    assert read_documents(tmp_path / "docs.txt") == ["first", "second"]
    (tmp_path / "docs.jsonl").write_bytes('\ufeff{"text": "first"}\n"second"\n'.encode("utf-8"))
    assert read_documents(tmp_path / "docs.jsonl") == ["first", "second"]


def test_line_numbers_survive_skipped_blank_lines(tmp_path):
    from zkernels.cli.documents import read_numbered_documents
    (tmp_path / "docs.txt").write_text("\none\n  \ntwo\r\n\nthree")
    assert read_numbered_documents(tmp_path / "docs.txt") == [(2, "one"), (4, "two"), (6, "three")]


@pytest.mark.parametrize("content", ["", "\n\n", "  \r\n\t\n"])
@pytest.mark.parametrize("name", ["docs.txt", "docs.jsonl"])
def test_a_file_without_documents_is_an_error(tmp_path, content, name):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match="holds no documents"):
        read_documents(tmp_path / name)


def test_a_directory_is_called_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_documents(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_documents(tmp_path / "missing.txt")


def test_old_import_path_is_the_cli_reader():
    from zkernels.cli.documents import read_documents as new
    assert new is read_documents
