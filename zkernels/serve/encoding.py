"""JSON answers, big ones built off the event loop.

1,000 embeddings of 2,560 floats are about 52 MB of JSON. Built by FastAPI (jsonable_encoder, then
json.dumps) that took seconds on the event loop, during which no other request was answered. Here the
embedding rows are written row by row (`json.dumps(row.tolist())`: the shortest decimal that reads
back as the same float) into the answer's text, in a worker thread when the answer is big;
the thread gives the interpreter lock back between rows, so the event loop keeps running.
"""
from __future__ import annotations

import asyncio
import base64
import json
import math

import numpy as np

from .errors import ServeError

OFF_LOOP_FLOATS = 50_000  # answers with more embedding values than this are built in a worker thread


class Rows:
    """Embedding rows [n, d] float32 to write into an answer, one JSON value per row: a list of numbers
    ("float") or a base64 string of the little-endian float32 bytes ("base64", as the ZeroEntropy and
    OpenAI SDKs decode it). `wrap(i, value)` places row i's value in its answer item."""

    def __init__(self, rows: np.ndarray, fmt: str, wrap=None):
        self.rows, self.fmt, self.wrap = rows, fmt, wrap or (lambda i, value: value)

    def encoded(self) -> str:
        items = []
        for i, row in enumerate(self.rows):
            if self.fmt == "base64":
                value = Raw('"' + base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") + '"')
            else:
                try:
                    value = Raw(json.dumps(row.tolist(), allow_nan=False, separators=(",", ":")))
                except ValueError:
                    raise ServeError(500, "inference produced a value that is not finite (NaN or infinity)") from None
            items.append(to_json(self.wrap(i, value)))
        return "[" + ",".join(items) + "]"


class Raw:
    """JSON text written as is."""

    def __init__(self, text: str):
        self.text = text


def to_json(obj) -> str:
    """json.dumps, with Raw and Rows written in place."""
    if isinstance(obj, Raw):
        return obj.text
    if isinstance(obj, Rows):
        return obj.encoded()
    if isinstance(obj, dict):
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + to_json(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in obj) + "]"
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ServeError(500, "inference produced a value that is not finite (NaN or infinity)")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _n_floats(obj) -> int:
    if isinstance(obj, Rows):
        return obj.rows.size
    if isinstance(obj, dict):
        return sum(_n_floats(v) for v in obj.values() if isinstance(v, (Rows, dict)))
    return 0


def to_json_bytes(obj) -> bytes:
    return to_json(obj).encode("utf-8")


async def json_response(obj, status: int = 200):
    """The answer as a JSON response; built in a worker thread when it holds many embedding values."""
    from fastapi.responses import Response
    if _n_floats(obj) > OFF_LOOP_FLOATS:
        body = await asyncio.to_thread(to_json_bytes, obj)
    else:
        body = to_json_bytes(obj)
    return Response(body, status_code=status, media_type="application/json")
