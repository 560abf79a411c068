"""How the writers encode rows: a pyarrow Table as strict JSON Lines, the null count of one column, and
the summary of a write. The single-file writer (io.py) and the folder sink (sinks.py) both use it, so a
file and a folder of the same rows hold the same bytes."""
from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
from dataclasses import dataclass


def _json_value(value):
    """json.dumps' `default`: the Arrow types JSON has no literal for (timestamps, decimals, bytes)."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact; a float could round it
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON")


def _finite(value):
    """`value` with every NaN or infinite float, however deep, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_lines(table) -> bytes:
    """The rows of a pyarrow Table as JSON Lines: strict JSON (NaN and infinities become null)."""
    out = []
    for row in table.to_pylist():
        try:
            line = json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_value)
        except ValueError:  # a non-finite float somewhere in the row: rare, so only then walk the row
            line = json.dumps(_finite(row), ensure_ascii=False, allow_nan=False, default=_json_value)
        out.append(line.encode() + b"\n")
    return b"".join(out)


def null_count(table, column: str | None) -> int:
    return 0 if column is None or column not in table.column_names else table.column(column).null_count


@dataclass
class WriteSummary:
    """What a write did: rows written, rows whose `null_column` is null, files written, the output."""
    rows: int
    null_rows: int
    files: int
    path: str
