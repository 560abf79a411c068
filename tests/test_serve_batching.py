"""Cross-request batching: concurrent requests share forwards, each answer still equals the direct call
bit for bit however its work was sliced and interleaved with others', and a failing forward fails only
the requests it held (after one retry alone)."""
import concurrent.futures

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import (  # noqa: E402
    DOCS,
    QUERIES,
    ForwardGate,
    LiveServer,
    assert_rerank_matches_predict,
    bits_equal,
    count_submits,
    make_app,
    wait_until,
)

from zkernels.serve import ServeLimits  # noqa: E402


def _rerank_body(k: int, n_docs: int | None = None):
    n = 1 + k % 8 if n_docs is None else n_docs
    docs = [DOCS[(k + j) % len(DOCS)] + f" ({k})" * (j % 2) for j in range(n)]
    return {"model": "zerank-2", "query": f"{QUERIES[k % len(QUERIES)]} #{k}", "documents": docs}


def _embed_body(k: int):
    return {"model": "zembed-1", "input": DOCS[k % 3:k % 3 + 1 + k % 4], "input_type": ("query", "document")[k % 2],
            "dimensions": (64, 32, 16)[k % 3]}


def _post_all(url, bodies, paths):
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        futures = [pool.submit(httpx.post, url + p, json=b, timeout=60) for b, p in zip(bodies, paths)]
        return [f.result() for f in futures]


def _assert_embeddings_match(embedder, body, response, what=""):
    assert response.status_code == 200, response.text
    encode = embedder.encode_query if body["input_type"] == "query" else embedder.encode_document
    got = np.array([x["embedding"] for x in response.json()["results"]], np.float32)
    assert bits_equal(got, encode(body["input"], dimensions=body["dimensions"])), what


def test_concurrent_requests_are_batched_and_exact(served_models, live_server):
    reranker, embedder = served_models
    live = live_server
    n_rerank, n_embed = 32, 6
    forwards0 = live.metric("zkernels_forwards_total", model="reranker")
    counts = {kind: count_submits(live, kind) for kind in ("reranker", "embedder")}
    # Forwards are held until every request is queued, so the test does not depend on timing.
    with ForwardGate(reranker.engine, closed=True) as gate_r, ForwardGate(embedder.engine, closed=True) as gate_e:
        with concurrent.futures.ThreadPoolExecutor(1) as runner:
            bodies = [_rerank_body(k) for k in range(n_rerank)] + [_embed_body(k) for k in range(n_embed)]
            paths = ["/v1/models/rerank"] * n_rerank + ["/v1/models/embed"] * n_embed
            pending = runner.submit(_post_all, live.url, bodies, paths)
            try:
                wait_until(lambda: counts["reranker"]["n"] == n_rerank and counts["embedder"]["n"] == n_embed,
                           what="all requests queued")
            finally:
                gate_r.open()
                gate_e.open()
            responses = pending.result(timeout=120)
    for k, r in enumerate(responses[:n_rerank]):
        assert_rerank_matches_predict(reranker, bodies[k], r, k)
    for k, r in enumerate(responses[n_rerank:]):
        _assert_embeddings_match(embedder, bodies[n_rerank + k], r, k)
    forwards = live.metric("zkernels_forwards_total", model="reranker") - forwards0
    assert 1 <= forwards < n_rerank // 2  # 32 small requests share a few forwards
    assert max(len(s) for s in gate_r.seen) > 0


@pytest.mark.parametrize("scheduler", ["shortest-first", "rounds"])
def test_sliced_and_interleaved_work_is_exact(served_models, scheduler):
    """Requests of 1-40 documents cut into slices of at most 48 tokens (many forwards each), interleaved
    with each other's in whatever order the policy picks: every score and embedding bit-identical to
    the direct call."""
    reranker, embedder = served_models
    bodies = [_rerank_body(k, n_docs=(1, 3, 40, 7, 22, 2)[k % 6]) for k in range(12)]
    bodies[3]["documents"] = bodies[3]["documents"][:2] * 3  # duplicates: computed once, row repeated
    embeds = [_embed_body(k) for k in range(4)]
    limits = ServeLimits(request_tokens_per_forward=48)
    with LiveServer(make_app(served_models, limits, scheduler=scheduler)) as live:
        responses = _post_all(live.url, bodies + embeds, ["/v1/models/rerank"] * 12 + ["/v1/models/embed"] * 4)
    for k, r in enumerate(responses[:12]):
        assert_rerank_matches_predict(reranker, bodies[k], r, k)
    for k, r in enumerate(responses[12:]):
        _assert_embeddings_match(embedder, embeds[k], r, k)


def test_failing_forward_is_retried_alone(served_models, live_server):
    reranker, _ = served_models
    live = live_server
    bodies = [_rerank_body(k) for k in range(6)]
    counts = count_submits(live, "reranker")
    failures0 = live.metric("zkernels_forward_failures_total", model="reranker")
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
    assert live.metric("zkernels_forward_failures_total", model="reranker") > failures0


def test_forward_failing_again_fails_only_its_request(served_models, live_server):
    reranker, _ = served_models
    live = live_server
    poison = "zyxwvut poisoned document"
    poison_ids = set(reranker.tokenizer(poison, add_special_tokens=False).input_ids)
    bodies = [_rerank_body(k) for k in range(5)]
    bodies.insert(2, {"model": "zerank-2", "query": "q", "documents": ["fine", poison]})
    counts = count_submits(live, "reranker")
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
                assert_rerank_matches_predict(reranker, bodies[k], r, k)
        after = httpx.post(live.url + "/v1/models/rerank", json=_rerank_body(9), timeout=30)
        assert_rerank_matches_predict(reranker, _rerank_body(9), after)  # the server keeps serving


def test_racing_truncating_and_strict_tokenizations_never_mix(served_models, live_server, monkeypatch):
    """TEI /embed from many clients at once, tokenized by 2 tokenizer threads: over-long texts with
    truncate=true (cut, 200), the same texts with truncate=false (413), short texts with truncate=false
    (200). No answer may come from another call's truncation setting."""
    import asyncio
    embedder = served_models[1]
    monkeypatch.setattr(embedder, "max_seq_length", 40)  # short texts are over it: cheap forwards
    long_texts = [f"{k} " + "long text " * 30 for k in range(3)]
    short_texts = [f"{k} short text" for k in range(3)]
    cut = {t: embedder.encode([t]) for t in long_texts}
    whole = {t: embedder.encode([t]) for t in short_texts}
    calls = [(long_texts[k % 3], True) if k % 3 == 0 else (long_texts[k % 3], False) if k % 3 == 1
             else (short_texts[k % 3], False) for k in range(2000)]

    async def run():
        wrong = []
        # idle connections expire on the client well before uvicorn's 5 s keep-alive timeout, so a request
        # is never sent on a connection the server is closing at that moment (a reset, not an answer)
        limits = httpx.Limits(max_connections=32, keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=live_server.url, timeout=120, limits=limits) as http:
            gate = asyncio.Semaphore(32)

            async def one(text, truncate):
                async with gate:
                    r = await http.post("/embed", json={"inputs": [text], "truncate": truncate, "normalize": False})
                if truncate or text in whole:
                    expected = cut[text] if truncate else whole[text]
                    if r.status_code != 200 or not bits_equal(r.json(), expected):
                        wrong.append((text[:10], truncate, r.status_code))
                elif r.status_code != 413:
                    wrong.append((text[:10], truncate, r.status_code))
            await asyncio.gather(*(one(t, c) for t, c in calls))
        return wrong
    assert live_server.state.tokenize_pool._max_workers == 2
    assert asyncio.run(run()) == []
