"""What the routes share: the served models, their device schedulers, admission, and one request's way
through them (`Call`).

A request's way: the route is entered -> the model exists (404) and has room (--max-queue counts
every admitted request not yet running: 503 + Retry-After at once) -> the deadline starts
(--timeout-s covers reading the body from its first byte, parsing, tokenizing, waiting and computing; a
body not in by then is a 408 and its queue place is free at once) -> the body is checked (413 / 422,
bodies.py) -> tokenized in a tokenizer thread or, piece by piece, on the device thread, never once the
client has left or the deadline has passed; prompts over --max-request-tokens in all are a 413 before
any forward -> its slices run on the device scheduler -> rows back. While it waits, a client that goes
away or a deadline that passes drops it (lifecycle.py).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import time

import numpy as np

from .bodies import read_body
from .errors import CLIENT_CLOSED, CUT_AT_SHUTDOWN, RETRY_AFTER_S, SHUTTING_DOWN, ServeError, unavailable
from .lifecycle import State, already_tokenized
from .limits import ServeLimits
from .metrics import Metrics
from .models import ServedEmbedder, ServedReranker
from .policy import make_policy
from .scheduler import Admission, DeviceScheduler, Dropped, ForwardFailed, Job

log = logging.getLogger("zkernels.serve")
DRAIN_MARGIN_S = 0.5  # of --shutdown-timeout-s, kept for the last answers to go out and the threads to stop


class Server:
    """The served models and everything the routes share."""

    def __init__(self, reranker: ServedReranker | None, embedder: ServedEmbedder | None, limits: ServeLimits,
                 api_key: str | None, demo: bool, policy: str = "shortest-first"):
        self.limits, self.demo, self.policy_name = limits, demo, policy
        self.served = {m.kind: m for m in (reranker, embedder) if m is not None}
        self.api_key_required = bool(api_key)
        self.metrics = Metrics()
        self.admission = {kind: Admission(limits.max_queue) for kind in self.served}
        self.schedulers: dict[str, DeviceScheduler] = {}
        self.tokenize_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.ready = False
        self.failed: str | None = None   # why the server cannot serve (warm-up failed, device thread ended)
        self.on_fatal = None             # called then (the runner stops the process, exit status 1)
        self.draining = False
        self.shut: asyncio.Future | None = None  # done once the drain deadline passed: waiting requests get 503
        self.started_at = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None  # set by start()
        make_policy(policy)              # an unknown name fails here, before anything starts

    @property
    def models(self) -> list:
        return list(self.served.values())

    def scheduler(self, served) -> DeviceScheduler:
        return self.schedulers[served.engine.device]

    async def start(self) -> None:
        self.loop = loop = asyncio.get_running_loop()
        self.shut = loop.create_future()
        for served in self.models:
            device = served.engine.device
            if device not in self.schedulers:
                policy = make_policy(self.policy_name, self.limits.request_tokens_per_forward)
                self.schedulers[device] = DeviceScheduler(device, policy, self.metrics, loop,
                                                          on_ended=self._device_thread_ended)
                self.schedulers[device].start()
        # On a GPU, tokenizing in threads of its own overlaps the forward. On CPU the forward already keeps
        # every core busy (torch's intra-op threads); tokenizer threads beside it only oversubscribe those
        # cores. There, by default, the device thread tokenizes between forwards.
        threads = self.limits.tokenize_threads
        if threads is None:
            threads = 0 if "cpu" in self.schedulers else 2
        if threads:
            self.tokenize_pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="zkernels-tokenize")

    def _device_thread_ended(self, reason: str) -> None:
        """A device thread ended (called from it): /health answers 503 and the process stops, exit 1, so
        an orchestrator restarts it."""
        self.failed = f"the device thread ended: {reason}"
        if self.on_fatal is not None:
            self.loop.call_soon_threadsafe(self.on_fatal)

    async def warm_up(self) -> None:
        """One real forward per model through its scheduler; /health answers 200 only after it. A failure
        is logged, /health says "failed", and the runner stops the process with a non-zero status."""
        try:
            for served in self.models:
                job = Job(served, already_tokenized(served.warmup_prompts()), served.default_head_key, math.inf,
                          self.slice_tokens(served), asyncio.get_running_loop().create_future())
                self.scheduler(served).submit(job)
                await job.future
        except Exception as e:
            self.failed = f"the warm-up forward failed: {type(e).__name__}: {e}"
            log.error("zkernels serve: the warm-up forward failed, the server cannot serve: %s", self.failed,
                      exc_info=e)
            if self.on_fatal is not None:
                self.on_fatal()
            return
        self.ready = True

    def begin_drain(self, timeout_s: float) -> None:
        """Shutdown began (event loop): new requests get 503; requests not answered within timeout_s (less
        a margin for the answers to go out) get 503 too, even if a forward is still running."""
        if self.draining:
            return
        self.draining = True
        grace = max(0.0, timeout_s - DRAIN_MARGIN_S)
        for scheduler in self.schedulers.values():
            scheduler.drain_until(time.monotonic() + grace)
        if self.shut is not None:
            asyncio.get_running_loop().call_later(grace, lambda: self.shut.done() or self.shut.set_result(None))

    async def stop(self) -> None:
        """Finishes what the schedulers hold (when draining: until the drain deadline), then releases the
        threads. A device thread still inside a forward then is left behind (it is a daemon thread)."""
        for scheduler in self.schedulers.values():
            await asyncio.to_thread(scheduler.close, DRAIN_MARGIN_S if self.draining else None)
        if self.tokenize_pool is not None:
            self.tokenize_pool.shutdown(wait=False, cancel_futures=True)

    def slice_tokens(self, served) -> int:
        return self.scheduler(served).policy.slice_tokens(served.engine)

    def require(self, kind: str):
        served = self.served.get(kind)
        if served is None:
            raise ServeError(404, f"this server has no {kind} loaded; start it with --{kind} PATH")
        return served

    def queue_depth(self, kind: str) -> int:
        return self.admission[kind].waiting

    @contextlib.asynccontextmanager
    async def call(self, request, kind: str):
        """One request to `kind`'s model: refused at once when the model is missing (404), the server is
        shutting down or the model's queue is full (503)."""
        served = self.require(kind)
        deadline = time.monotonic() + self.limits.timeout_s
        if self.draining:
            raise unavailable(SHUTTING_DOWN)
        ticket = self.admission[kind].enter()
        if ticket is None:
            raise unavailable(f"the {kind} queue is full ({self.limits.max_queue} requests waiting, "
                              f"--max-queue); retry after {RETRY_AFTER_S} s")
        call = Call(self, request, served, ticket, deadline)
        try:
            yield call
        finally:
            ticket.release()
            call.abandon()


class Call:
    """One request's way through body parsing, tokenizing and the scheduler."""

    def __init__(self, server: Server, request, served, ticket, deadline: float):
        self.server, self.request, self.served, self.ticket, self.deadline = server, request, served, ticket, deadline
        self.job: Job | None = None

    async def body(self, schema):
        """The body as `schema`; read within the request's deadline (else 408: its queue place is given
        back when the route ends, at once)."""
        try:
            return await asyncio.wait_for(read_body(self.request, schema, self.server.limits.max_request_docs),
                                          max(0.0, self.deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise ServeError(408, f"the request body did not arrive within {self.server.limits.timeout_s} s "
                                  f"(--timeout-s)") from None

    async def rerank(self, query: str, documents: list[str], *, truncate: bool = True, activation_fn=None,
                     field: str = "documents"):
        """(scores [n] float32 in document order, prompt tokens, inference seconds)."""
        if not documents:
            return np.zeros(0, np.float32), 0, 0.0
        tokenize = functools.partial(self.served.tokenize_pieces, query, documents, truncate, field)
        return await self._run(tokenize, activation_fn, len(query) + sum(map(len, documents)))

    async def embed(self, texts: list[str], field: str, *, input_type: str | None = None,
                    prompt_name: str | None = None, dimensions: int | None = None, normalize: bool = False,
                    truncate: bool = True):
        """(embeddings [n, d] float32 exactly as Embedder.encode_* gives them, prompt tokens)."""
        if not texts:
            raise ServeError(422, f"{field} is empty: nothing to embed", field=field)
        dim = self.served.check_dimensions(dimensions)
        prompt = self.served.prompt_for(input_type, prompt_name)
        tokenize = functools.partial(self.served.tokenize_pieces, texts, prompt, truncate, field)
        rows, n_tokens, _ = await self._run(tokenize, self.served.head_key(dim, normalize), sum(map(len, texts)))
        return rows, n_tokens

    async def _run(self, tokenize, head_key, size_hint: int):
        server, loop = self.server, asyncio.get_running_loop()
        scheduler = server.scheduler(self.served)
        self.job = job = Job(self.served, tokenize, head_key, self.deadline, server.slice_tokens(self.served),
                             loop.create_future(), self.ticket, size_hint=size_hint,
                             max_tokens=server.limits.max_request_tokens)
        disconnect = asyncio.ensure_future(_wait_for_disconnect(self.request))
        try:
            if server.tokenize_pool is not None:
                prepared = loop.run_in_executor(server.tokenize_pool, scheduler.tokenize_whole, job)
                await self._wait(prepared, disconnect)
            submitted = time.perf_counter()
            scheduler.submit(job)  # not taken when final (failed or dropped while tokenizing): its future says why
            rows = await self._wait(job.future, disconnect)
            return rows.numpy(), job.n_tokens, time.perf_counter() - submitted
        finally:
            disconnect.cancel()

    async def _wait(self, future, disconnect):
        done, _ = await asyncio.wait({future, disconnect, self.server.shut},
                                     timeout=max(0.0, self.deadline - time.monotonic()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if future in done:
            try:
                return future.result()
            except ForwardFailed as e:
                raise ServeError(500, f"inference failed for this request: {e}") from None
            except Dropped as e:
                raise self._stopped(e.reason, e.started) from None
        reason = "disconnected" if disconnect in done else "shutdown" if self.server.shut in done else "timeout"
        started = self.job.state is State.RUNNING
        self._cancel(reason)
        raise self._stopped(reason, started)

    def _cancel(self, reason: str) -> None:
        self.server.scheduler(self.served).cancel(self.job, reason)
        self.job.future.cancel()  # nobody waits for it any more: what the scheduler settles later is dropped

    def _stopped(self, reason: str, started: bool) -> ServeError:
        if reason == "disconnected":
            return ServeError(CLIENT_CLOSED, "the client closed the connection; its work was dropped")
        if reason == "shutdown":
            return unavailable(CUT_AT_SHUTDOWN)
        return ServeError(504, f"the request did not finish within {self.server.limits.timeout_s} s (--timeout-s); "
                               + ("its remaining forwards were skipped" if started else
                                  "it was dropped before any work on it started"))

    def abandon(self) -> None:
        """The route is done (answered, failed or cancelled): a job still queued or running is dropped."""
        if self.job is not None and not self.job.future.done():
            self._cancel("disconnected")


async def _wait_for_disconnect(request) -> None:
    """Returns when the client goes away. The body is read already, so the next ASGI message is the
    disconnect (the server holds it until the connection closes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
