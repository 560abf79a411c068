"""Limits and bad input: every error answers with its status and a JSON message naming what was wrong,
no body is expensive to refuse, and the server keeps answering afterwards."""
import concurrent.futures
import json
import threading

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import LiveServer, make_app, wait_until  # noqa: E402

from zkernels.serve import ServeLimits  # noqa: E402

RERANK = "/v1/models/rerank"


def _ok(live, headers=None):
    r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": ["a", "b"]}, headers=headers,
                   timeout=30)
    assert r.status_code == 200, r.text
    return r


def _post_raw(live, path, content: bytes):
    return httpx.post(live.url + path, content=content, headers={"content-type": "application/json"}, timeout=60)


@pytest.fixture(scope="module")
def live(served_models):
    limits = ServeLimits(max_request_docs=5, max_request_bytes=4000)
    with LiveServer(make_app(served_models, limits)) as server:
        yield server


@pytest.mark.parametrize("path,body,field", [
    (RERANK, {"model": "m", "query": "q", "documents": ["a", 3]}, "documents[1]"),
    (RERANK, {"model": "m", "documents": ["a"]}, "query"),
    (RERANK, {"model": "m", "query": "q", "documents": "a"}, "documents"),
    (RERANK, {"model": "m", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
    ("/v2/rerank", {"query": "q", "documents": [{"txt": "a"}]}, "documents[0]"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": [1]}, "raw_scores"),
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


@pytest.mark.parametrize("path,body,field", [
    (RERANK, {"model": "m", "query": "q", "documents": ["fine", "bad \ud800 text"]}, "documents[1]"),
    (RERANK, {"model": "m", "query": "\udfff", "documents": ["a"]}, "query"),
    ("/v2/rerank", {"query": "q", "documents": [{"text": "\ud800"}]}, "documents[0].text"),
    ("/rerank", {"query": "q", "texts": ["a", "b", "\ud800"]}, "texts[2]"),
    ("/v1/embeddings", {"model": "m", "input": "\ud800"}, "input"),
    ("/embed", {"inputs": ["a", "\udbff"]}, "inputs[1]"),
])
def test_lone_surrogates_are_422_naming_the_field(live, path, body, field):
    """Valid JSON ("\\ud800" escapes) that is not encodable text: no tokenizer takes it."""
    r = httpx.post(live.url + path, content=json.dumps(body).encode(), timeout=30)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and "surrogate" in r.json()["error"]["message"]
    _ok(live)


@pytest.mark.parametrize("content,says", [
    (b'{"model": "m", "query": ', "not valid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (b'{"model": "m", "query": "q", "documents": [' + b"7" * 5000 + b"]}", "digits"),
    (b'{"model": "m", "query": "q\xff", "documents": []}', "not UTF-8"),
    (b'["not", "an", "object"]', "JSON object"),
])
def test_malformed_json_is_422(live_server, content, says):
    r = _post_raw(live_server, RERANK, content)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body", r.text
    assert says in r.json()["error"]["message"]
    _ok(live_server)


def test_a_million_item_body_is_refused_by_its_count(live_server):
    """2 MB of `[0, 0, ...]`: 413 from one length check, before any item is looked at."""
    content = b'{"model": "m", "query": "q", "documents": [' + b"0," * 999_999 + b"0]}"
    r = _post_raw(live_server, RERANK, content)
    assert r.status_code == 413 and r.json()["error"]["field"] == "documents"
    assert "1000000 items, over the limit of 1000" in r.json()["error"]["message"]
    assert httpx.get(live_server.url + "/health", timeout=10).status_code == 200


def test_a_wrong_item_fails_at_the_first_one(served_models):
    """Within the count limit, a list of wrong items is one error, the first, not one per item."""
    with LiveServer(make_app(served_models, ServeLimits(max_request_docs=100_000), embedder=False)) as live:
        body = {"model": "m", "query": "q", "documents": ["a", "b"] + [0] * 50_000}
        r = httpx.post(live.url + RERANK, json=body, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["field"] == "documents[2]"
        assert r.json()["error"]["message"] == "documents[2]: expected a string, got a number"
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


def test_404_for_a_model_not_loaded_and_413_over_the_model_length(served_models):
    with LiveServer(make_app(served_models, embedder=False)) as live:
        r = httpx.post(live.url + "/v1/embeddings", json={"model": "m", "input": ["a"]}, timeout=30)
        assert r.status_code == 404 and "--embedder" in r.json()["error"]["message"]
        long_text = "a1!" * 4000  # ~10,000 tokens after zerank's 10,000-character clip: over 4096 positions
        r = httpx.post(live.url + "/rerank", json={"query": "q", "texts": ["short", long_text]}, timeout=60)
        assert r.status_code == 413 and "max_length" in r.json()["error"]["message"]  # TEI: truncate=false
        assert r.json()["error"]["field"] == "texts"
        r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": [long_text]}, timeout=60)
        assert r.status_code == 200  # the reference recipe cuts the document's end
        _ok(live)


def test_401_wrong_or_missing_key(served_models):
    with LiveServer(make_app(served_models, api_key="s3cret")) as live:
        assert httpx.get(live.url + "/health", timeout=10).status_code == 200
        for headers in [None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
            r = httpx.post(live.url + RERANK, json={"model": "m", "query": "q", "documents": ["a"]}, headers=headers,
                           timeout=30)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert httpx.get(live.url + "/metrics", timeout=10).status_code == 401
        _ok(live, {"Authorization": "Bearer s3cret"})


def test_a_big_answer_is_built_off_the_event_loop(live_server, monkeypatch):
    """While an embedding answer is being written, the server answers other requests."""
    from zkernels.serve import encoding
    building, release = threading.Event(), threading.Event()
    real = encoding.Rows.encoded

    def slow_encoded(self):
        building.set()
        assert release.wait(30)
        return real(self)
    monkeypatch.setattr(encoding, "OFF_LOOP_FLOATS", 0)
    monkeypatch.setattr(encoding.Rows, "encoded", slow_encoded)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(live_server.post, "/v1/embeddings", {"model": "m", "input": ["a", "b"]})
        try:
            assert building.wait(30)
            assert httpx.get(live_server.url + "/health", timeout=5).json() == {"status": "ok"}
            _ok(live_server)
        finally:
            release.set()
        r = pending.result(30)
    assert r.status_code == 200 and len(r.json()["data"]) == 2


@pytest.mark.parametrize("field,value", [("max_queue", 0), ("timeout_s", 0), ("shutdown_timeout_s", -1),
                                         ("request_tokens_per_forward", 0), ("tokenize_threads", -1),
                                         ("tokenize_threads", 1.5)])
def test_bad_limits_are_refused_at_startup(field, value):
    with pytest.raises(ValueError, match=field):
        ServeLimits(**{field: value})


@pytest.mark.parametrize("threads,thread_name", [(None, "zkernels-cpu"), (0, "zkernels-cpu"),
                                                 (2, "zkernels-tokenize")])
def test_where_requests_are_tokenized(served_models, threads, thread_name):
    """On CPU, by default (None) and with 0, the device thread tokenizes between forwards; with N > 0 a
    pool of N threads does."""
    with LiveServer(make_app(served_models, ServeLimits(tokenize_threads=threads), embedder=False)) as live:
        served = live.state.served["reranker"]
        names, real = [], served.tokenize_pieces

        def tokenize_pieces(*args, **kwargs):
            names.append(threading.current_thread().name)
            return (yield from real(*args, **kwargs))
        served.tokenize_pieces = tokenize_pieces
        _ok(live)
        wait_until(lambda: names, what="a tokenization")
    assert names[0].startswith(thread_name)
