"""The one JSON error shape every route answers with: {"error": {"message", "type", "code"[, "field"]}}.

OpenAI's SDK reads `error.message`; the ZeroEntropy and Cohere SDKs surface the body as is. `field`
names what was wrong in a 422.
"""
from __future__ import annotations

# No fastapi import at module level: `zkernels --help` must work without the serve extra installed.

TYPES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 408: "timeout", 413: "request_too_large",
         422: "invalid_request", 429: "rate_limited", 500: "inference_failed", 503: "overloaded", 504: "timeout"}
CLIENT_CLOSED = 499  # nginx's code for "client closed the connection"; logged and counted, never received
RETRY_AFTER_S = 1    # what a 503 tells clients to wait before retrying (all three SDKs honour it)


class ServeError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or {}


def unavailable(message: str) -> ServeError:
    """503 + Retry-After: out of capacity for now (a full queue, shutting down), not the client's fault."""
    return ServeError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


SHUTTING_DOWN = "the server is shutting down; retry on another replica"
# A request admitted before shutdown began and not answered by the drain deadline. One text, whichever side
# notices first: the route's shutdown timer or the device thread between two steps.
CUT_AT_SHUTDOWN = ("the server is shutting down and this request did not finish within --shutdown-timeout-s; "
                   "retry on another replica")


def error_body(status: int, message: str, field: str | None = None) -> dict:
    body = {"message": message, "type": TYPES.get(status, "error"), "code": status}
    if field is not None:
        body["field"] = field
    return {"error": body}


def error_response(status: int, message: str, field: str | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse
    return JSONResponse(error_body(status, message, field), status_code=status, headers=headers)


_TYPE_NAMES = ("str", "int", "float", "bool", "list", "dict")


def _field_name(loc) -> str:
    """('body', 'documents', 3) -> 'documents[3]'; the union branch names pydantic adds are dropped."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and ("[" in p or "-" in p or p[:1].isupper() or p in _TYPE_NAMES):
            continue  # a union branch ('str', 'list[str]', 'TextDocument'), not a field: ours are lowercase
        else:
            out += ("." if out else "") + p
    return out or "body"


def validation_error(errors: list[dict]) -> ServeError:
    """pydantic's errors as one 422: the first error's field and message, and a few of the others."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field_name(first.get("loc", ()))
    message = f"{field}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more: " + "; ".join(
            f"{_field_name(e.get('loc', ()))}: {e['msg']}" for e in errors[1:4]) + ")"
    return ServeError(422, message, field)


async def on_serve_error(request, exc: ServeError):
    return error_response(exc.status, exc.message, exc.field, exc.headers)


async def on_validation_error(request, exc):
    """FastAPI's own body validation (the routes parse their bodies themselves; this is the fallback)."""
    error = validation_error(exc.errors())
    return error_response(error.status, error.message, error.field)
