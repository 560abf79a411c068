"""Documents files in (one document per line, or JSON Lines), ranked results out.

A line ends at "\n" (a "\r\n" ending is accepted); other characters that str.splitlines() would break on
(form feed, lone "\r", NEL, U+2028, ...) are part of the document. Each document keeps its line number
(1-based, as editors count) so results can point back into the file.
"""
from __future__ import annotations

import json
from pathlib import Path

JSON_SUFFIXES = (".jsonl", ".ndjson")


def _lines(path: Path) -> list[str]:
    if path.is_dir():
        raise IsADirectoryError(f"documents file {path} is a directory, not a file")
    if not path.exists():
        raise FileNotFoundError(f"documents file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a leading byte-order mark is not text
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_numbered_documents(path: str | Path) -> list[tuple[int, str]]:
    """(line number, document) for each document of a text file (one per line; blank lines skipped) or a
    .jsonl/.ndjson file (each line a JSON string, or an object with a string "text" field). A file with no
    document is an error; errors name the file and line."""
    path = Path(path)
    docs = []
    is_json = path.suffix.lower() in JSON_SUFFIXES
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        if not is_json:
            docs.append((n, line))
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(f"{path}:{n}: expected a JSON string or an object with a string \"text\" field")
        docs.append((n, item))
    if not docs:
        raise ValueError(f"{path} holds no documents (it is empty or has only blank lines)")
    return docs


def read_documents(path: str | Path) -> list[str]:
    """The documents of `path` (see read_numbered_documents), without their line numbers."""
    return [text for _, text in read_numbered_documents(path)]


def print_ranked(rows: list[dict], as_json: bool = False) -> None:
    """Ranked {"corpus_id", "score", "text"[, "line"]} rows, best first: one JSON object or one aligned
    line each (the line number in the documents file where known, else the corpus id)."""
    for i, row in enumerate(rows, 1):
        if as_json:
            print(json.dumps({"rank": i, **row}, ensure_ascii=False))
        else:
            where = f"line {row['line']}" if "line" in row else f"[{row['corpus_id']}]"
            print(f"{i:4d}  {row['score']:.6f}  {where}  {row['text'][:100].replace(chr(10), ' ')}")
