"""Command-line I/O: document files in (one document per line, or JSON Lines), ranked results out."""
from __future__ import annotations

import json
from pathlib import Path


def read_documents(path: str | Path) -> list[str]:
    """Documents from a text file (one per line; blank lines skipped) or a .jsonl/.ndjson file (each line
    a JSON string, or an object with a "text" field). Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"documents file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return [line for line in lines if line.strip()]
    docs = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON: {e}") from None
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError(f"{path}:{n}: expected a JSON string or an object with a string \"text\" field")
        docs.append(item)
    return docs


def print_ranked(rows: list[dict], as_json: bool = False) -> None:
    """Ranked {"corpus_id", "score", "text"} rows, best first: one JSON object or one aligned line each."""
    for i, row in enumerate(rows, 1):
        if as_json:
            print(json.dumps({"rank": i, **row}, ensure_ascii=False))
        else:
            print(f"{i:4d}  {row['score']:.6f}  [{row['corpus_id']}]  {row['text'][:100].replace(chr(10), ' ')}")
