"""Limits and failures: every error answers with its status and a JSON message naming what was wrong,
and the server keeps answering afterwards."""
import asyncio
import concurrent.futures

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import ForwardGate, LiveServer, make_app, served_models, wait_until  # noqa: E402,F401

from zkernels.serve import ServeLimits  # noqa: E402

RERANK = "/v1/models/rerank"


def _ok(live, headers=None):
    r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": ["a", "b"]}, headers=headers,
                   timeout=30)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
def live(served_models):  # noqa: F811
    limits = ServeLimits(max_request_docs=5, max_request_bytes=4000)
    with LiveServer(make_app(served_models, limits)) as server:
        yield server


@pytest.mark.parametrize("path,body,field", [
    (RERANK, {"model": "m", "query": "q", "documents": ["a", 3]}, "documents[1]"),
    (RERANK, {"model": "m", "documents": ["a"]}, "query"),
    (RERANK, {"model": "m", "query": "q", "documents": "a"}, "documents"),
    (RERANK, {"model": "m", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ("/v2/rerank", {"query": "q", "documents": [{"txt": "a"}]}, "documents[0]"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": True}, "raw_scores"),
    ("/v1/embeddings", {"model": "m", "input": [1, 2, 3]}, "input"),
    ("/v1/embeddings", {"model": "m", "input": ["a"], "encoding_format": "hex"}, "encoding_format"),
    ("/v1/embeddings", {"model": "m", "input": ["a"], "dimensions": 7}, "dimensions"),
    ("/v1/embeddings", {"model": "m", "input": []}, "input"),
    ("/v1/models/embed", {"model": "m", "input": ["a"], "input_type": "passage"}, "input_type"),
    ("/embed", {"inputs": ["a"], "prompt_name": "nope"}, "prompt_name"),
])
def test_422_names_the_field(live, path, body, field):
    r = httpx.post(live.url + path, json=body, timeout=30)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and field in error["message"]
    _ok(live)


def test_422_malformed_json(live):
    r = httpx.post(live.url + RERANK, content=b'{"model": "m", "query": ', headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    _ok(live)


def test_413_too_many_documents_and_bytes(live):
    r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": ["d"] * 6}, timeout=30)
    assert r.status_code == 413 and "limit of 5" in r.json()["error"]["message"]
    r = httpx.post(live.url + "/v1/embeddings", json={"model": "m", "input": ["d"] * 6}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["field"] == "input"
    big = {"model": "m", "query": "q", "documents": ["x" * 5000]}
    r = httpx.post(live.url + RERANK, json=big, timeout=30)  # Content-Length over the limit
    assert r.status_code == 413 and "4000 bytes" in r.json()["error"]["message"]
    chunks = (c for c in [b'{"model": "m", "query": "q", "documents": ["', b"x" * 5000, b'"]}'])
    r = httpx.post(live.url + RERANK, content=chunks, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413  # chunked: counted as it arrives
    r = httpx.post(live.url + "/rerank", json={"query": "q", "texts": ["word " * 700]}, timeout=30)
    assert r.status_code == 200  # under the token limit of the tiny model: fine
    _ok(live)


def test_404_for_a_model_not_loaded_and_413_over_the_model_length(served_models):  # noqa: F811
    with LiveServer(make_app(served_models, embedder=False)) as live:
        r = httpx.post(live.url + "/v1/embeddings", json={"model": "m", "input": ["a"]}, timeout=30)
        assert r.status_code == 404 and "--embedder" in r.json()["error"]["message"]
        long_text = "a1!" * 4000  # ~10,000 tokens after zerank's 10,000-character clip: over 4096 positions
        r = httpx.post(live.url + "/rerank", json={"query": "q", "texts": ["short", long_text]}, timeout=60)
        assert r.status_code == 413 and "max_length" in r.json()["error"]["message"]  # TEI: truncate=false
        r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": [long_text]}, timeout=60)
        assert r.status_code == 200  # the reference recipe cuts the document's end
        _ok(live)


def test_health_is_503_until_the_warm_up_forward_ran(served_models):  # noqa: F811
    reranker = served_models[0]
    with ForwardGate(reranker.engine, closed=True) as gate:
        with LiveServer(make_app(served_models, embedder=False), wait_healthy=False) as live:
            wait_until(gate.entered.is_set, what="the warm-up forward")
            r = httpx.get(live.url + "/health", timeout=10)
            assert r.status_code == 503 and r.json()["status"] == "loading"
            gate.open()
            wait_until(lambda: httpx.get(live.url + "/health", timeout=10).status_code == 200, what="healthy")


def test_401_wrong_or_missing_key(served_models):  # noqa: F811
    with LiveServer(make_app(served_models, api_key="s3cret")) as live:
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
        for headers in [None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
            r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": ["a"]}, headers=headers,
                           timeout=30)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert httpx.get(live.url + "/metrics", timeout=10).status_code == 401
        _ok(live, {"Authorization": "Bearer s3cret"})


def _post(url, body, timeout=60):
    return httpx.post(url + RERANK, json=body, timeout=timeout)


def _body(tag: str, n=2):
    return {"model": "m", "query": f"query {tag}", "documents": [f"{tag} document {i}" for i in range(n)]}


def _ids(reranker, tag):
    return set(reranker.tokenizer(f" {tag}", add_special_tokens=False).input_ids)


def test_503_when_the_queue_is_full(served_models):  # noqa: F811
    reranker = served_models[0]
    with LiveServer(make_app(served_models, ServeLimits(max_queue=2), embedder=False)) as live:
        worker = live.state.workers["reranker"]
        with ForwardGate(reranker.engine, closed=True) as gate, concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(_post, live.url, _body("first"))
            wait_until(gate.entered.is_set, what="the first forward")
            queued = [pool.submit(_post, live.url, _body(f"queued{i}")) for i in range(2)]
            wait_until(lambda: worker.depth == 2, what="two queued requests")
            r = _post(live.url, _body("refused"))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1"
            assert "queue is full" in r.json()["error"]["message"]
            gate.open()
            assert [f.result(60).status_code for f in [first, *queued]] == [200, 200, 200]
        _ok(live)


def test_504_drops_unstarted_work(served_models):  # noqa: F811
    reranker = served_models[0]
    with LiveServer(make_app(served_models, ServeLimits(timeout_s=1.0), embedder=False)) as live:
        worker = live.state.workers["reranker"]
        with ForwardGate(reranker.engine, closed=True) as gate, concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, live.url, _body("alpha"))
            wait_until(gate.entered.is_set, what="the first forward")
            late = pool.submit(_post, live.url, _body("omega"))
            wait_until(lambda: worker.depth == 1, what="a queued request")
            r = late.result(30)
            assert r.status_code == 504 and "dropped before it started" in r.json()["error"]["message"]
            r = first.result(30)
            assert r.status_code == 504 and "already being computed" in r.json()["error"]["message"]
            gate.open()
            wait_until(lambda: worker.depth == 0, what="the queue to drain")
        assert not any(_ids(reranker, "omega") <= seen for seen in gate.seen)  # never computed
        assert live.metric("zkernels_dropped_total", model="reranker", reason="timeout") == 1
        _ok(live)


def test_client_disconnect_drops_queued_work(served_models):  # noqa: F811
    reranker = served_models[0]
    with LiveServer(make_app(served_models, embedder=False)) as live:
        worker = live.state.workers["reranker"]
        with ForwardGate(reranker.engine, closed=True) as gate, concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(_post, live.url, _body("alpha"))
            wait_until(gate.entered.is_set, what="the first forward")
            with pytest.raises(httpx.ReadTimeout):
                _post(live.url, _body("gamma"), timeout=0.5)  # the client gives up and closes the connection
            wait_until(lambda: live.metric("zkernels_dropped_total", model="reranker", reason="disconnected") == 1,
                       what="the dropped request in the metrics")
            assert worker.depth == 0
            gate.open()
            assert first.result(60).status_code == 200
        assert not any(_ids(reranker, "gamma") <= seen for seen in gate.seen)
        _ok(live)


@pytest.mark.parametrize("field,value", [("max_queue", 0), ("timeout_s", 0),
                                         ("tokenize_threads", -1), ("tokenize_threads", 1.5)])
def test_bad_limits_are_refused_at_startup(field, value):
    with pytest.raises(ValueError, match=field):
        ServeLimits(**{field: value})


@pytest.mark.parametrize("threads", [None, 0, 2])
def test_where_requests_are_tokenized(served_models, threads):  # noqa: F811
    """On CPU, by default (None) and with 0, tokenization takes turns with the forwards on the device
    thread; with N > 0 it runs in a pool of its own."""
    from zkernels.serve.app import Server
    from zkernels.serve.models import ServedReranker

    async def pools():
        server = Server(ServedReranker(served_models[0], "tiny-reranker"), None,
                        ServeLimits(tokenize_threads=threads), None, False)
        await server.start()
        try:
            return server._tokenize_pool, server._device_threads["cpu"]
        finally:
            await server.stop()
    tokenize, device = asyncio.run(pools())
    if threads:
        assert tokenize is not device and tokenize._max_workers == threads
    else:
        assert tokenize is device
