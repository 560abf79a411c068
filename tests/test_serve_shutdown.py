"""`zkernels serve` as a user runs it: a subprocess on the built-in demo models (no model flags), and
SIGTERM with requests still queued: the small ones are answered, correctly, and a big one that cannot
finish within --shutdown-timeout-s gets 503, and the process exits within that time."""
import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import DOCS, assert_rerank_matches_predict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + '{model="reranker"}'):
            return float(line.split()[-1])
    return 0.0


SHUTDOWN_S = 8


def test_demo_server_sigterm_answers_queued_requests(tmp_path, qwen_tokenizer):
    qwen_tokenizer.save_pretrained(str(tmp_path / "qwen-tokenizer"))  # the demo builds on it; saves ~2 s
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ZKERNELS_CACHE": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.Popen([sys.executable, "-m", "zkernels", "serve", "--port", str(port), "--log-level", "warning",
                             "--shutdown-timeout-s", str(SHUTDOWN_S)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not become healthy"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        bodies = [{"model": "zerank-2", "query": f"query number {k}",
                   "documents": [f"{DOCS[j % len(DOCS)]} {k} " + "filler " * (10 + j) for j in range(16)]}
                  for k in range(8)]
        huge = {"model": "zerank-2", "query": "a huge request",  # ~45,000 tokens: well over SHUTDOWN_S of work
                "documents": [" ".join(f"w{(i * 7919 + j) % 9973}" for j in range(600)) for i in range(100)]}
        with concurrent.futures.ThreadPoolExecutor(len(bodies) + 1) as pool:
            big = pool.submit(httpx.post, url + "/v1/models/rerank", json=huge, timeout=120)
            deadline = time.monotonic() + 60
            while _metric(url, "zkernels_forwards_total") < 2:  # the warm-up, then the huge request's first
                assert time.monotonic() < deadline and not big.done(), "the huge request did not start"
                time.sleep(0.01)
            futures = [pool.submit(httpx.post, url + "/v1/models/rerank", json=b, timeout=120) for b in bodies]
            while _metric(url, "zkernels_queue_depth") < 1:  # SIGTERM only once work is waiting in the queue
                assert time.monotonic() < deadline and not any(f.done() for f in futures), "nothing queued"
                time.sleep(0.005)
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            responses = [f.result(timeout=120) for f in futures]
            refused = big.result(timeout=120)
            # uvicorn re-raises the signal once it has shut down cleanly: exit by SIGTERM is the normal end
            assert proc.wait(60) in (0, -signal.SIGTERM)
            took = time.monotonic() - sent
        message = refused.json()["error"]["message"]  # cut at the drain deadline: one text, whoever cut it
        assert refused.status_code == 503 and "shutting down" in message and "--shutdown-timeout-s" in message
        assert took < SHUTDOWN_S + 5, took
        output = proc.stdout.read()
        assert "DEMO models" in output
        from zkernels import Reranker
        reranker = Reranker.from_pretrained(next(tmp_path.glob("demo-zerank-trained-*")), dtype=torch.float32)
        for body, r in zip(bodies, responses):
            assert_rerank_matches_predict(reranker, body, r)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
