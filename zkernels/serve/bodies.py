"""Reading a request body into its schema, at a cost no client can inflate.

The routes read their bodies themselves (not through FastAPI's parameter parsing) so that admission
is decided before the body is read, and so that parsing is ours:
- the JSON is parsed by the standard library; anything it refuses (bad syntax, nesting deeper than the
  interpreter's recursion limit, an integer of more than 4,300 digits, bytes that are not UTF-8) is a
  422 saying so;
- the text fields are checked before pydantic sees them: a text list's length against
  --max-request-docs first (413), then item by item, stopping at the first wrong item (422 naming
  `documents[3]`) or the first text that is not encodable Unicode (a lone surrogate such as "\\ud800",
  valid JSON that no tokenizer takes); so a million-item body costs one length check, not a million
  error objects;
- a body over OFF_LOOP_BYTES is parsed and checked in a worker thread, so the event loop keeps
  answering (/health, other requests) meanwhile.
"""
from __future__ import annotations

import asyncio
import json

from .errors import CLIENT_CLOSED, ServeError, validation_error

OFF_LOOP_BYTES = 64 << 10

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}


def json_type(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


async def read_body(request, schema, max_items: int):
    """The request's body as `schema` (a pydantic model with TEXT_FIELDS / TEXT_LISTS, see schemas.py)."""
    from starlette.requests import ClientDisconnect
    try:
        raw = await request.body()
    except ClientDisconnect:  # also what the body size limit reports once it has answered 413
        raise ServeError(CLIENT_CLOSED, "the client closed the connection while sending the body") from None
    if len(raw) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse_body, raw, schema, max_items)
    return parse_body(raw, schema, max_items)


def parse_body(raw: bytes, schema, max_items: int):
    data = load_json(raw)
    if not isinstance(data, dict):
        raise ServeError(422, f"the body must be a JSON object, got {json_type(data)}", field="body")
    check_texts(data, schema, max_items)
    from pydantic import ValidationError
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise validation_error(e.errors()) from None


def load_json(raw: bytes):
    try:
        return json.loads(raw)
    except RecursionError:
        raise ServeError(422, "the body is not valid JSON: nested too deeply", field="body") from None
    except UnicodeDecodeError as e:
        raise ServeError(422, f"the body is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})",
                         field="body") from None
    except ValueError as e:  # JSONDecodeError, and an integer too long to convert
        raise ServeError(422, f"the body is not valid JSON: {e}", field="body") from None


def check_text(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ServeError(422, f"{field}: not valid Unicode text: {value[e.start]!r} at character {e.start} is a "
                              f"lone surrogate (send UTF-8 text)", field=field) from None


def check_texts(data: dict, schema, max_items: int) -> None:
    """Counts first, then items, stopping at the first bad one. Fields that are absent or of the wrong
    container type are left to pydantic (one error each)."""
    for name in getattr(schema, "TEXT_FIELDS", ()):
        if isinstance(data.get(name), str):
            check_text(data[name], name)
    for name in getattr(schema, "TEXT_LISTS", ()):
        value = data.get(name)
        if isinstance(value, str):
            check_text(value, name)
            continue
        if not isinstance(value, list):
            continue
        if len(value) > max_items:
            raise ServeError(413, f"{name} holds {len(value)} items, over the limit of {max_items} per request "
                                  f"(--max-request-docs)", field=name)
        objects = name in getattr(schema, "DOCUMENT_OBJECTS", ())
        if value and name in getattr(schema, "NO_TOKEN_IDS", ()) and isinstance(value[0], (int, list)) \
                and not isinstance(value[0], bool):
            raise ServeError(422, f"{name} holds token ids; this server embeds text: send a string or a list of "
                                  f"strings", field=name)
        for i, item in enumerate(value):
            if isinstance(item, str):
                check_text(item, f"{name}[{i}]")
            elif objects and isinstance(item, dict) and isinstance(item.get("text"), str):
                check_text(item["text"], f"{name}[{i}].text")
            else:
                want = 'a string or an object {"text": string}' if objects else "a string"
                raise ServeError(422, f"{name}[{i}]: expected {want}, got {json_type(item)}", field=f"{name}[{i}]")
