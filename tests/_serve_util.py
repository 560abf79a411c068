"""Live servers for the serve tests: uvicorn in a thread of the test process, on 127.0.0.1 and a port
the OS picks, so a test can reach into the engine (inject a failing or gated forward)."""
from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import pytest
import torch

STARTUP_S = 60


class LiveServer:
    def __init__(self, app, wait_healthy: bool = True):
        import uvicorn
        self.app, self.wait_healthy = app, wait_healthy
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    access_log=False))
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
    """Wraps an engine's forward: blocks every forward while closed (bounded wait), records the token ids
    each forward saw, and raises for batches `fail(batch)` says to fail. Installed on the instance,
    removed on exit."""

    def __init__(self, engine, closed: bool = False, fail=None):
        self.engine, self.fail = engine, fail
        self.open_event = threading.Event()
        if not closed:
            self.open_event.set()
        self.entered = threading.Event()
        self.seen: list[set[int]] = []
        self.calls = 0

    def __enter__(self):
        real = self.engine.forward.hidden_at_read_rows

        def gated(batch):
            self.calls += 1
            self.entered.set()
            if not self.open_event.wait(30):
                raise RuntimeError("test gate never opened")
            self.seen.append(set(batch.token_ids.tolist()))
            if self.fail is not None and self.fail(batch):
                raise RuntimeError("injected forward failure")
            return real(batch)
        self.engine.forward.hidden_at_read_rows = gated
        return self

    def open(self):
        self.open_event.set()

    def __exit__(self, *exc):
        self.open_event.set()
        del self.engine.forward.hidden_at_read_rows  # back to the class's method


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


_MODELS: dict = {}  # one pair for the whole session (a session fixture imported by several modules is rebuilt)


@pytest.fixture(scope="session")
def served_models(tiny_checkpoint, qwen_tokenizer, tmp_path_factory):
    """(Reranker, Embedder) on tiny random checkpoints; the embedder has learned projections 64 -> 32 -> 16."""
    if "pair" not in _MODELS:
        _MODELS["pair"] = _build_models(tiny_checkpoint, qwen_tokenizer, tmp_path_factory)
    return _MODELS["pair"]


def _build_models(tiny_checkpoint, qwen_tokenizer, tmp_path_factory):
    from zkernels import Embedder, Reranker
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint
    reranker = Reranker.from_pretrained(tiny_checkpoint("serve-reranker", seed=3), dtype=torch.float32)
    gen = torch.Generator().manual_seed(5)
    folder = make_tiny_embedding_checkpoint(tmp_path_factory.mktemp("serve") / "embedder", seed=4,
                                            tokenizer=qwen_tokenizer,
                                            projections={32: torch.randn(64, 32, generator=gen) / 8,
                                                         16: torch.randn(32, 16, generator=gen) / 6})
    embedder = Embedder.from_pretrained(folder, dtype=torch.float32)
    return reranker, embedder


def make_app(models, limits=None, api_key=None, reranker=True, embedder=True):
    """Tokenizes in its own threads unless `limits` says otherwise: a ForwardGate holds the device thread,
    which on CPU would otherwise also be the one that tokenizes the requests the test waits to see queued."""
    from zkernels.serve import ServeLimits, create_app
    from zkernels.serve.models import ServedEmbedder, ServedReranker
    r, e = models
    limits = limits or ServeLimits()
    if limits.tokenize_threads is None:
        limits = dataclasses.replace(limits, tokenize_threads=2)
    return create_app(ServedReranker(r, "tiny-reranker") if reranker else None,
                      ServedEmbedder(e, "tiny-embedder") if embedder else None,
                      limits, api_key)


QUERIES = ["what is a prefix cache?", "Wie hoch ist der Eiffelturm?", "binary embeddings", "寿司の作り方"]
DOCS = ["A prefix cache keeps the keys and values of a shared prompt prefix.",
        "Der Eiffelturm ist 330 Meter hoch.", "Hamming distance counts differing bits.",
        "", "  leading spaces\nand newlines ", "酢飯と魚。", "Sourdough needs a starter.",
        "Packed batches avoid padding: " + "token " * 40]
