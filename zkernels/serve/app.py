"""The routes: each API family's request in, the packed scheduler in the middle, the family's response out."""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import time
import uuid
from collections.abc import Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..ranking import best_first
from .errors import ServeError, error_response, on_serve_error, on_validation_error
from .limits import ApiKeyCheck, BodySizeLimit, ServeLimits
from .metrics import Metrics
from .models import Encoded, ServedEmbedder, ServedReranker
from .scheduler import ForwardFailed, ModelWorker, QueueFull
from .schemas import (
    CohereRerankRequest,
    OpenAIEmbeddingRequest,
    TeiEmbedRequest,
    TeiRerankRequest,
    ZeEmbedRequest,
    ZeRerankRequest,
)

RETRY_AFTER_S = 1
CLIENT_CLOSED = 499  # nginx's code for "client closed the connection"; logged and counted, never received
ROUTES = ("/v1/models/rerank", "/v1/models/embed", "/v1/rerank", "/v2/rerank", "/rerank", "/embed", "/v1/embeddings",
          "/health", "/info", "/metrics")


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("zkernels")
    except Exception:  # running from a source tree that was never installed
        return "unknown"


class Server:
    """Everything the routes share: the served models, their workers, limits and metrics."""

    def __init__(self, reranker: ServedReranker | None, embedder: ServedEmbedder | None, limits: ServeLimits,
                 api_key: str | None, demo: bool):
        self.reranker, self.embedder, self.limits, self.demo = reranker, embedder, limits, demo
        self.api_key_required = bool(api_key)
        self.metrics = Metrics()
        self.workers: dict[str, ModelWorker] = {}
        self.ready = False
        self.started_at = time.monotonic()
        self._tokenize_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._device_threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}

    @property
    def models(self) -> list:
        return [m for m in (self.reranker, self.embedder) if m is not None]

    async def start(self) -> None:
        for served in self.models:
            device = served.engine.device
            if device not in self._device_threads:
                self._device_threads[device] = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=f"zkernels-{device}")
            worker = ModelWorker(served.kind, served.engine, served.head, self._device_threads[device],
                                 self.limits.max_queue, self.metrics)
            worker.start()
            self.workers[served.kind] = worker
        # On a GPU, tokenizing in its own threads overlaps the forward. On CPU the forward already keeps
        # every core busy (torch's intra-op threads), and tokenizer threads beside it only oversubscribe
        # those cores: the OpenMP regions then wait on a descheduled thread. There, by default,
        # tokenization takes turns with the forwards on the device thread (bench_serve, 2-core CPU, 16/64
        # clients: 1.08-1.15x the per-request baseline this way, 0.99-1.28x with a separate pool).
        threads = self.limits.tokenize_threads
        if threads is None:
            threads = 0 if "cpu" in self._device_threads else 2
        if threads == 0:  # on a device thread: the CPU one where there is one
            self._tokenize_pool = self._device_threads.get("cpu") or next(iter(self._device_threads.values()), None)
        else:
            self._tokenize_pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="zkernels-tokenize")

    async def warm_up(self) -> None:
        """One real forward per model through its worker; /health answers 200 only after it."""
        for served in self.models:
            enc = await self.tokenize(served.warmup_prompts)
            key = None if served.kind == "reranker" else (served.model.resolve_dimensions(None), False)
            await self.workers[served.kind].submit(enc.prompts, enc.groups, key).future
        self.ready = True

    async def stop(self) -> None:
        """Finishes every queued request, then releases the threads."""
        for worker in self.workers.values():
            await worker.close()
        for pool in {self._tokenize_pool, *self._device_threads.values()}:  # a set: the CPU thread may be both
            if pool is not None:
                pool.shutdown(wait=True)

    async def tokenize(self, fn: Callable[..., Encoded], *args) -> Encoded:
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, fn, *args)

    def require(self, kind: str):
        served = self.reranker if kind == "reranker" else self.embedder
        if served is None:
            raise ServeError(404, f"this server has no {kind} loaded; start it with --{kind} PATH")
        return served

    def check_count(self, n: int, field: str) -> None:
        if n > self.limits.max_request_docs:
            raise ServeError(413, f"{field} holds {n} items, over the limit of {self.limits.max_request_docs} per "
                                  f"request (--max-request-docs)", field=field)

    async def run(self, request: Request, kind: str, enc: Encoded, head_key, deadline: float) -> tuple[np.ndarray, float]:
        """Queues a request's prompts and waits for its rows: (outputs [n, ...] float32, inference seconds).
        Raises 503 when the queue is full, 504 past the deadline, 500 when its forward failed twice."""
        worker = self.workers[kind]
        try:
            job = worker.submit(enc.prompts, enc.groups, head_key)
        except QueueFull as e:
            raise ServeError(503, f"{e}; retry after {RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})
        submitted = time.perf_counter()
        disconnect = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            done, _ = await asyncio.wait({job.future, disconnect}, timeout=max(0.0, deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
        if job.future in done:
            try:
                rows = job.future.result()
            except ForwardFailed as e:
                raise ServeError(500, f"inference failed for this request: {e}") from None
            return rows.numpy(), time.perf_counter() - submitted
        job.future.cancel()
        started = not worker.discard(job)
        reason = "disconnected" if disconnect in done else "timeout"
        if not started:
            self.metrics.dropped.inc(model=kind, reason=reason)
        if reason == "disconnected":
            raise ServeError(CLIENT_CLOSED, "the client closed the connection; its queued work was dropped")
        raise ServeError(504, f"the request did not finish within {self.limits.timeout_s} s (--timeout-s); "
                              + ("its work was dropped before it started" if not started else
                                 "it was already being computed, its result is discarded"))

    def deadline(self) -> float:
        return time.monotonic() + self.limits.timeout_s

    async def rerank(self, request: Request, query: str, documents: list[str], truncate: bool = True):
        """Scores in document order (float32), prompt tokens, inference seconds."""
        served = self.require("reranker")
        self.check_count(len(documents), "documents")
        deadline = self.deadline()
        if not documents:
            return np.zeros(0, np.float32), 0, 0.0
        enc = await self.tokenize(served.encode, query, documents, truncate)
        scores, seconds = await self.run(request, "reranker", enc, None, deadline)
        return scores, enc.n_tokens, seconds

    async def embed(self, request: Request, texts: list[str], field: str, *, input_type: str | None = None,
                    prompt_name: str | None = None, dimensions: int | None = None, normalize: bool = False,
                    truncate: bool = True):
        """Embeddings [n, d] float32 exactly as Embedder.encode_* gives them, prompt tokens."""
        served = self.require("embedder")
        if not texts:
            raise ServeError(422, f"{field} is empty: nothing to embed", field=field)
        self.check_count(len(texts), field)
        deadline = self.deadline()
        dim = served.check_dimensions(dimensions)
        prompt = served.prompt_for(input_type, prompt_name)
        enc = await self.tokenize(served.encode, texts, prompt, truncate)
        # Extra normalisation only where the checkpoint does not normalise already (it would change bits).
        key = (dim, bool(normalize and not served.model.recipe.normalize))
        rows, _ = await self.run(request, "embedder", enc, key, deadline)
        return rows, enc.n_tokens


async def _wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. The body is read already, so the next ASGI message is the
    disconnect (the server holds it until the connection closes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _ranked(scores: np.ndarray, top_n: int | None) -> list[int]:
    return best_first(scores, top_n)


def _encode_rows(rows: np.ndarray, fmt: str) -> list:
    if fmt == "base64":  # float32 little endian, as the ZeroEntropy and OpenAI SDKs decode it
        return [base64.b64encode(r.astype("<f4").tobytes()).decode("ascii") for r in rows]
    return [[float(x) for x in r] for r in rows]


def _text_bytes(*texts) -> int:
    return sum(len(t.encode("utf-8")) for t in texts)


class RequestMetrics:
    """Counts every answered request by route and status, and its latency (outermost middleware, so
    401 / 413 answers from the middleware below count too)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        start, status = time.perf_counter(), 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.requests.inc(route=route, status=status)
            if route not in ("/metrics", "/health"):
                self.metrics.latency.observe(time.perf_counter() - start, route=route)


def create_app(reranker: ServedReranker | None = None, embedder: ServedEmbedder | None = None,
               limits: ServeLimits | None = None, api_key: str | None = None, demo: bool = False) -> FastAPI:
    """The ASGI app. Models are loaded already; the lifespan starts their workers and warms them up."""
    limits = limits or ServeLimits()
    server = Server(reranker, embedder, limits, api_key, demo)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await server.start()
        warm = asyncio.create_task(server.warm_up())
        try:
            yield
        finally:
            await server.stop()
            if not warm.done():
                warm.cancel()

    app = FastAPI(title="zkernels serve", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.add_exception_handler(ServeError, on_serve_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, exc):
        return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    # ---- ZeroEntropy ---------------------------------------------------------------------------------
    @app.post("/v1/models/rerank")
    async def ze_rerank(body: ZeRerankRequest, request: Request):
        t0 = time.perf_counter()
        scores, n_tokens, seconds = await server.rerank(request, body.query, body.documents)
        return {"results": [{"index": i, "relevance_score": float(scores[i])} for i in _ranked(scores, body.top_n)],
                "e2e_latency": time.perf_counter() - t0, "inference_latency": seconds,
                "total_bytes": _text_bytes(body.query, *body.documents), "total_tokens": n_tokens,
                "actual_latency_mode": body.latency or "fast"}

    @app.post("/v1/models/embed")
    async def ze_embed(body: ZeEmbedRequest, request: Request):
        rows, n_tokens = await server.embed(request, body.input, "input", input_type=body.input_type,
                                            dimensions=body.dimensions)
        return {"results": [{"embedding": e} for e in _encode_rows(rows, body.encoding_format)],
                "usage": {"total_bytes": _text_bytes(*body.input), "total_tokens": n_tokens}}

    # ---- Cohere v2 / Jina ----------------------------------------------------------------------------
    async def cohere_rerank(body: CohereRerankRequest, request: Request):
        texts = body.texts()
        scores, n_tokens, _ = await server.rerank(request, body.query, texts)
        results = []
        for i in _ranked(scores, body.top_n):
            row = {"index": i, "relevance_score": float(scores[i])}
            if body.return_documents:
                row["document"] = {"text": texts[i]}
            results.append(row)
        return {"id": str(uuid.uuid4()), "results": results, "model": server.reranker.name,
                "usage": {"total_tokens": n_tokens},
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}}

    app.post("/v1/rerank")(cohere_rerank)
    app.post("/v2/rerank")(cohere_rerank)

    # ---- TEI -----------------------------------------------------------------------------------------
    @app.post("/rerank")
    async def tei_rerank(body: TeiRerankRequest, request: Request):
        if body.raw_scores:
            raise ServeError(422, "raw_scores=true is not supported: zkernels returns the checkpoint's own score "
                                  "(zerank: sigmoid(logit/5); Qwen3-Reranker: P(yes))", field="raw_scores")
        scores, _, _ = await server.rerank(request, body.query, body.texts, truncate=bool(body.truncate))
        out = []
        for i in _ranked(scores, None):
            row = {"index": i, "score": float(scores[i])}
            if body.return_text:
                row["text"] = body.texts[i]
            out.append(row)
        return out

    @app.post("/embed")
    async def tei_embed(body: TeiEmbedRequest, request: Request):
        rows, _ = await server.embed(request, body.inputs, "inputs", prompt_name=body.prompt_name,
                                     dimensions=body.dimensions, normalize=body.normalize,
                                     truncate=bool(body.truncate))
        return _encode_rows(rows, "float")

    # ---- OpenAI --------------------------------------------------------------------------------------
    @app.post("/v1/embeddings")
    async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request):
        rows, n_tokens = await server.embed(request, body.input, "input", input_type=body.input_type,
                                            dimensions=body.dimensions)
        data = [{"object": "embedding", "index": i, "embedding": e}
                for i, e in enumerate(_encode_rows(rows, body.encoding_format))]
        return {"object": "list", "data": data, "model": server.embedder.name,
                "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

    # ---- operations ----------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        if not server.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        return {"status": "ok"}

    @app.get("/info")
    async def info():
        some = server.models[0].engine if server.models else None
        return {"version": _version(), "demo_models": server.demo,
                "models": {m.kind: m.describe() for m in server.models},
                "device": some.device if some else None, "dtype": str(some.dtype).replace("torch.", "") if some else None,
                "limits": limits.as_dict(), "api_key_required": server.api_key_required, "routes": list(ROUTES),
                "embedding_formats": ["float", "base64"], "queue_full_status": 503}

    @app.get("/metrics")
    async def metrics():
        for kind, worker in server.workers.items():
            server.metrics.queue_depth.set(worker.depth, model=kind)
        return PlainTextResponse(server.metrics.render(time.monotonic() - server.started_at),
                                 media_type="text/plain; version=0.0.4")

    # The last added runs first: metrics see every answer, then the size limit, then the key.
    app.add_middleware(ApiKeyCheck, api_key=api_key)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    return app
