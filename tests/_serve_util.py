"""Helpers of the serve tests: live servers (the production runner, `zkernels.serve.runner`, in a thread
of the test process, on 127.0.0.1 and a port the OS picks, so a test can reach into the engine), a gate
on the engine's forward, and exact comparisons. The fixtures are in serve_fixtures.py."""
from __future__ import annotations

import threading
import time

import httpx
import torch

STARTUP_S = 60


class LiveServer:
    def __init__(self, app, wait_healthy: bool = True):
        from zkernels.serve.runner import make_runner
        self.app, self.wait_healthy = app, wait_healthy
        self.server = make_runner(app, port=0, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = None

    @property
    def state(self):
        return self.app.state.server

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + STARTUP_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        while self.wait_healthy and httpx.get(self.url + "/health", timeout=5).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server never became healthy (warm-up)")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

    def post(self, path: str, body=None, timeout: float = 60, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=timeout, headers=getattr(self, "headers", None),
                          **kwargs)

    def metric(self, name: str, **labels) -> float:
        """One sample's value from /metrics (0 when absent)."""
        text = httpx.get(self.url + "/metrics", timeout=10, headers=getattr(self, "headers", None)).text
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        key = f"{name}{{{want}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0


class ForwardGate:
    """Wraps an engine's forward (its two entry points: `hidden_at_read_rows`, a forward in one go, and
    `hidden_pieces`, one in pieces): while closed, every forward waits (bounded) at its start until `open()`
    or a `step()` lets it through; records the token ids of each forward as it enters, and raises for
    batches `fail(batch)` says to fail. Installed on the instance, removed on exit."""

    ENTRIES = ("hidden_at_read_rows", "hidden_pieces")

    def __init__(self, engine, closed: bool = False, fail=None):
        self.engine, self.fail = engine, fail
        self._cv = threading.Condition()
        self._open, self._permits = not closed, 0
        self.entered = threading.Event()
        self.seen: list[set[int]] = []
        self.calls = 0

    def __enter__(self):
        for name in self.ENTRIES:
            setattr(self.engine.forward, name, self._gated(getattr(self.engine.forward, name)))
        return self

    def _gated(self, real):
        def gated(batch):
            with self._cv:
                self.calls += 1
                self.seen.append(set(batch.token_ids.tolist()))
                self.entered.set()
                self._cv.notify_all()
                if not self._cv.wait_for(lambda: self._open or self._permits > 0, 30):
                    raise RuntimeError("test gate never opened")
                if not self._open:
                    self._permits -= 1
            if self.fail is not None and self.fail(batch):
                raise RuntimeError("injected forward failure")
            return real(batch)
        return gated

    def open(self):
        with self._cv:
            self._open = True
            self._cv.notify_all()

    def step(self, n: int = 1):
        """Lets n more forwards through (each waiting one, or the next ones to come)."""
        with self._cv:
            self._permits += n
            self._cv.notify_all()

    def wait_calls(self, n: int, timeout_s: float = 20) -> None:
        """Until n forwards have entered the gate."""
        with self._cv:
            if not self._cv.wait_for(lambda: self.calls >= n, timeout_s):
                raise AssertionError(f"timed out waiting for forward {n} (got {self.calls})")

    def __exit__(self, *exc):
        self.open()
        for name in self.ENTRIES:
            delattr(self.engine.forward, name)  # back to the class's methods


def wait_until(predicate, timeout_s: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def bits_equal(a, b) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return a.shape == b.shape and bool(torch.equal(a.view(torch.int32), b.view(torch.int32)))


def assert_rerank_matches_predict(reranker, body: dict, response, what="") -> None:
    """A ZeroEntropy rerank response equals Reranker.predict on the same pairs, bit for bit."""
    assert response.status_code == 200, response.text
    expected = reranker.predict([(body["query"], d) for d in body["documents"]])
    got = torch.zeros(len(expected), dtype=torch.float32)
    for row in response.json()["results"]:
        got[row["index"]] = row["relevance_score"]
    assert bits_equal(got, expected), what


def make_app(models, limits=None, api_key=None, reranker=True, embedder=True, scheduler="shortest-first"):
    """Without `limits`: default limits, but 2 tokenizer threads (a ForwardGate holds the device thread, which
    on CPU would otherwise also be the one that tokenizes the requests a test waits to see queued)."""
    from zkernels.serve import ServeLimits, create_app
    from zkernels.serve.models import ServedEmbedder, ServedReranker
    r, e = models
    limits = limits or ServeLimits(tokenize_threads=2)
    return create_app(ServedReranker(r, "tiny-reranker") if reranker else None,
                      ServedEmbedder(e, "tiny-embedder") if embedder else None,
                      limits, api_key, scheduler=scheduler)


def count_submits(live, kind: str) -> dict:
    """{"n": jobs of `kind` handed to its device scheduler so far} (wraps the scheduler's submit)."""
    served = live.state.served[kind]
    scheduler = live.state.scheduler(served)
    counter = {"n": 0}
    real = scheduler.submit

    def submit(job):
        real(job)
        if job.served is served:
            counter["n"] += 1
    scheduler.submit = submit
    return counter


QUERIES = ["what is a prefix cache?", "Wie hoch ist der Eiffelturm?", "binary embeddings", "寿司の作り方"]
DOCS = ["A prefix cache keeps the keys and values of a shared prompt prefix.",
        "Der Eiffelturm ist 330 Meter hoch.", "Hamming distance counts differing bits.",
        "", "  leading spaces\nand newlines ", "酢飯と魚。", "Sourdough needs a starter.",
        "Packed batches avoid padding: " + "token " * 40]
