"""Cross-request batching: concurrent requests share forwards, each answer still equals the direct call
bit for bit, and a failing forward fails only the requests it held (after one retry alone)."""
import concurrent.futures

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import (  # noqa: E402,F401
    DOCS,
    QUERIES,
    ForwardGate,
    LiveServer,
    assert_rerank_matches_predict,
    bits_equal,
    make_app,
    served_models,
    wait_until,
)


def _rerank_body(k: int):
    docs = [DOCS[(k + j) % len(DOCS)] + f" ({k})" * (j % 2) for j in range(1 + k % 8)]
    return {"model": "zerank-2", "query": f"{QUERIES[k % len(QUERIES)]} #{k}", "documents": docs}


def _embed_body(k: int):
    return {"model": "zembed-1", "input": DOCS[k % 3:k % 3 + 1 + k % 4], "input_type": ("query", "document")[k % 2],
            "dimensions": (64, 32, 16)[k % 3]}


def _count_submits(worker):
    """Counts jobs a worker accepted (wraps the instance's submit)."""
    counter = {"n": 0}
    real = worker.submit

    def submit(*args, **kwargs):
        job = real(*args, **kwargs)
        counter["n"] += 1
        return job
    worker.submit = submit
    return counter


def _post_all(url, bodies, paths):
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(httpx.post, url + p, json=b, timeout=60) for b, p in zip(bodies, paths)]
        return [f.result() for f in futures]


def test_concurrent_requests_are_batched_and_exact(served_models):  # noqa: F811
    reranker, embedder = served_models
    n_rerank, n_embed = 32, 6
    with LiveServer(make_app(served_models)) as live:
        workers = live.state.workers
        forwards0 = live.metric("zkernels_forwards_total", model="reranker")
        rounds0 = live.metric("zkernels_rounds_total", model="reranker")
        counts = {kind: _count_submits(w) for kind, w in workers.items()}
        # Forwards are held until every request is queued, so the test does not depend on timing.
        with ForwardGate(reranker.engine, closed=True) as gate_r, ForwardGate(embedder.engine, closed=True) as gate_e:
            with concurrent.futures.ThreadPoolExecutor(1) as runner:
                bodies = [_rerank_body(k) for k in range(n_rerank)] + [_embed_body(k) for k in range(n_embed)]
                paths = ["/v1/models/rerank"] * n_rerank + ["/v1/models/embed"] * n_embed
                pending = runner.submit(_post_all, live.url, bodies, paths)
                wait_until(lambda: counts["reranker"]["n"] == n_rerank and counts["embedder"]["n"] == n_embed,
                           what="all requests queued")
                gate_r.open()
                gate_e.open()
                responses = pending.result(timeout=120)
        for k, r in enumerate(responses[:n_rerank]):
            assert_rerank_matches_predict(reranker, bodies[k], r, k)
        for k, r in enumerate(responses[n_rerank:]):
            assert r.status_code == 200, r.text
            body = bodies[n_rerank + k]
            encode = embedder.encode_query if body["input_type"] == "query" else embedder.encode_document
            got = np.array([x["embedding"] for x in r.json()["results"]], np.float32)
            assert bits_equal(got, encode(body["input"], dimensions=body["dimensions"])), k
        forwards = live.metric("zkernels_forwards_total", model="reranker") - forwards0
        rounds = live.metric("zkernels_rounds_total", model="reranker") - rounds0
        assert 1 <= rounds <= forwards < n_rerank  # 32 requests cost a few forwards, not 32
        assert max(len(s) for s in gate_r.seen) > 0


def test_failing_forward_is_retried_alone(served_models):  # noqa: F811
    reranker, _ = served_models
    bodies = [_rerank_body(k) for k in range(6)]
    with LiveServer(make_app(served_models, embedder=False)) as live:
        counts = _count_submits(live.state.workers["reranker"])
        failures = {"n": 0}

        def fail_first(batch):
            failures["n"] += 1
            return failures["n"] == 1
        with ForwardGate(reranker.engine, closed=True, fail=fail_first) as gate:
            with concurrent.futures.ThreadPoolExecutor(1) as runner:
                pending = runner.submit(_post_all, live.url, bodies, ["/v1/models/rerank"] * len(bodies))
                wait_until(lambda: counts["n"] == len(bodies), what="all requests queued")
                gate.open()
                responses = pending.result(timeout=120)
        assert failures["n"] > 1
        for body, r in zip(bodies, responses):
            assert_rerank_matches_predict(reranker, body, r)
        assert live.metric("zkernels_forward_failures_total", model="reranker") >= 1


def test_forward_failing_again_fails_only_its_request(served_models):  # noqa: F811
    reranker, _ = served_models
    poison = "zyxwvut poisoned document"
    poison_ids = set(reranker.tokenizer(poison, add_special_tokens=False).input_ids)
    bodies = [_rerank_body(k) for k in range(5)]
    bodies.insert(2, {"model": "zerank-2", "query": "q", "documents": ["fine", poison]})
    with LiveServer(make_app(served_models, embedder=False)) as live:
        counts = _count_submits(live.state.workers["reranker"])
        with ForwardGate(reranker.engine, closed=True, fail=lambda b: poison_ids <= set(b.token_ids.tolist())) as gate:
            with concurrent.futures.ThreadPoolExecutor(1) as runner:
                pending = runner.submit(_post_all, live.url, bodies, ["/v1/models/rerank"] * len(bodies))
                wait_until(lambda: counts["n"] == len(bodies), what="all requests queued")
                gate.open()
                responses = pending.result(timeout=120)
            assert responses[2].status_code == 500
            assert "inference failed" in responses[2].json()["error"]["message"]
            assert "injected forward failure" in responses[2].json()["error"]["message"]
            for k, r in enumerate(responses):
                if k != 2:
                    assert r.status_code == 200, r.text
            after = httpx.post(live.url + "/v1/models/rerank", json=_rerank_body(9), timeout=30)
            assert after.status_code == 200  # the server keeps serving
