"""Operations: /health through warm-up, a failed warm-up stops the server with a non-zero status and a
log line, shutdown is bounded by --shutdown-timeout-s, and binding beyond this machine without an API
key is warned about."""
import argparse
import concurrent.futures
import logging
import threading
import time

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import ForwardGate, LiveServer, count_submits, make_app, wait_until  # noqa: E402

from zkernels.serve import ServeLimits  # noqa: E402
from zkernels.serve.runner import is_loopback, serve  # noqa: E402

RERANK = "/v1/models/rerank"


def _body(tag: str):
    return {"model": "m", "query": f"query {tag}", "documents": [f"{tag} document {i}" for i in range(2)]}


def test_health_is_503_until_the_warm_up_forward_ran(served_models):
    reranker = served_models[0]
    with ForwardGate(reranker.engine, closed=True) as gate:
        with LiveServer(make_app(served_models, embedder=False), wait_healthy=False) as live:
            wait_until(gate.entered.is_set, what="the warm-up forward")
            r = httpx.get(live.url + "/health", timeout=10)
            assert r.status_code == 503 and r.json()["status"] == "loading"
            gate.open()
            wait_until(lambda: httpx.get(live.url + "/health", timeout=10).status_code == 200, what="healthy")


def test_a_failed_warm_up_stops_the_server_with_status_1(served_models, caplog):
    reranker = served_models[0]
    app = make_app(served_models, embedder=False)
    status = {}
    with ForwardGate(reranker.engine, fail=lambda batch: True), caplog.at_level(logging.ERROR, "zkernels.serve"):
        thread = threading.Thread(target=lambda: status.setdefault("code", serve(app, "127.0.0.1", 0, "warning")))
        thread.start()
        thread.join(60)
    assert not thread.is_alive() and status["code"] == 1
    assert "injected forward failure" in app.state.server.failed
    assert any("warm-up forward failed" in r.getMessage() for r in caplog.records)


def test_shutdown_answers_within_the_shutdown_timeout(served_models):
    """A forward that does not end and three requests behind it: once shutdown begins, new requests get
    503, and shutdown_timeout_s later every waiting one gets 503 and the server stops."""
    reranker = served_models[0]
    limits = ServeLimits(shutdown_timeout_s=2.0, tokenize_threads=2)
    live = LiveServer(make_app(served_models, limits, embedder=False)).__enter__()
    counts = count_submits(live, "reranker")
    with concurrent.futures.ThreadPoolExecutor(4) as pool, ForwardGate(reranker.engine, closed=True) as gate:
        futures = [pool.submit(httpx.post, live.url + RERANK, json=_body(f"t{i}"), timeout=30) for i in range(4)]
        gate.wait_calls(1)
        wait_until(lambda: counts["n"] == 4, what="all four submitted")
        t0 = time.monotonic()
        live.server.should_exit = True  # what SIGTERM does
        wait_until(lambda: live.state.draining, what="the drain")
        answers = [f.result(30) for f in futures]
        took = time.monotonic() - t0
        live.thread.join(30)
        stopped = time.monotonic() - t0
    assert [r.status_code for r in answers] == [503] * 4
    messages = [r.json()["error"]["message"] for r in answers]  # cut at the drain deadline
    assert all("shutting down" in m and "--shutdown-timeout-s" in m for m in messages), messages
    assert 1.0 < took < 10 and not live.thread.is_alive() and stopped < 15


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                           ("0.0.0.0", False), ("192.0.2.7", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_binding_beyond_this_machine_without_a_key_is_warned_about(monkeypatch, capsys, served_models):
    from zkernels.cli.serve import add_parser
    from zkernels.serve import models, runner
    from zkernels.serve.models import ServedReranker
    served = ServedReranker(served_models[0], "tiny")
    monkeypatch.setattr(models, "load_served_models", lambda *a, **k: (served, None, False))
    monkeypatch.setattr(runner, "serve", lambda *a, **k: 0)  # the check happens before anything binds
    monkeypatch.delenv("ZKERNELS_API_KEY", raising=False)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    for argv, warned in [(["serve", "--host", "0.0.0.0"], True), (["serve"], False),
                         (["serve", "--host", "0.0.0.0", "--api-key", "k"], False)]:
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        assert ("WARNING: binding 0.0.0.0" in capsys.readouterr().err) is warned
