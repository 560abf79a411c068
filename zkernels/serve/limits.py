"""Request limits and the API key check, applied before a request reaches its route.

Both are plain ASGI middleware so they run before the body is parsed: a too-large body is refused
without reading it into memory (Content-Length, or counting a chunked body as it arrives), and a
request without the key gets 401 before any validation.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass

from .errors import error_body


@dataclass
class ServeLimits:
    max_queue: int = 512              # admitted requests per model not running yet (tokenizing included) before 503
    max_request_docs: int = 1000      # documents (rerank) or inputs (embed) per request
    max_request_bytes: int = 8 << 20  # request body size
    max_request_tokens: int = 1_000_000  # one request's prompt tokens (after truncation), checked before any forward
    timeout_s: float = 60.0           # route entry to answer: reading the body, tokenizing, waiting, computing
    tokenize_threads: int | None = None  # 0: tokenize on the device thread; default 0 on CPU, 2 on a GPU
    request_tokens_per_forward: int | None = None  # one request's slice per forward; None: policy.DEFAULT_SLICE_TOKENS
    shutdown_timeout_s: float = 25.0  # SIGTERM to exit at most (under Kubernetes' default 30 s grace period)

    def __post_init__(self):
        for name in ("max_queue", "max_request_docs", "max_request_bytes", "max_request_tokens"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) \
                    or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        n = self.request_tokens_per_forward
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"request_tokens_per_forward must be a positive int or None, got {n!r}")
        if self.tokenize_threads is not None and (not isinstance(self.tokenize_threads, int)
                                                  or self.tokenize_threads < 0):
            raise ValueError(f"tokenize_threads must be an int >= 0, got {self.tokenize_threads!r}")

    def as_dict(self) -> dict:
        return asdict(self)


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": data})


class BodySizeLimit:
    """413 for a body over max_bytes."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self, size: str) -> dict:
        return error_body(413, f"the request body is {size} bytes, over the limit of {self.max_bytes} bytes "
                               f"(--max-request-bytes)")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_json(send, 413, self._message(length.decode()))
        seen, refused = 0, False

        async def counting_receive():
            # Over the limit: answer 413 here and tell the app the client left, so it stops reading and
            # whatever it answers is dropped (an exception would become the framework's generic 400).
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not refused:
                    refused = True
                    await _send_json(send, 413, self._message(f"more than {self.max_bytes}"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


class ApiKeyCheck:
    """401 unless `Authorization: Bearer <key>` matches (constant-time). /health stays open for probes."""

    OPEN_PATHS = ("/health",)

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if self.key is None or scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        # compare_digest on equal-type bytes: time does not depend on where the first difference is
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return await self.app(scope, receive, send)
        reason = "missing" if not header else "wrong"
        await _send_json(send, 401, error_body(401, f"{reason} API key: send 'Authorization: Bearer <key>' with the "
                                                    f"key the server was started with"),
                         [(b"www-authenticate", b"Bearer")])
