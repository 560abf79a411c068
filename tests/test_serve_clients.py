"""The real, unmodified client SDKs against a live `zkernels serve` app: every answer equals the direct
Reranker.predict / Embedder.encode_* result bit for bit (float32, CPU)."""
import base64

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import DOCS, QUERIES, LiveServer, bits_equal, make_app  # noqa: E402

from zkernels.serve import ServeLimits  # noqa: E402

KEY = "test-key-123"


@pytest.fixture(scope="module")
def live(served_models):
    # tokenize_threads=0 is the CPU default of `zkernels serve`: tokenization on the device thread.
    with LiveServer(make_app(served_models, ServeLimits(tokenize_threads=0), api_key=KEY)) as server:
        server.headers = {"Authorization": f"Bearer {KEY}"}
        yield server


def _ranked(scores, top_n=None):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order[:top_n] if top_n else order


def test_zeroentropy_sdk_rerank(live, served_models):
    zeroentropy = pytest.importorskip("zeroentropy")
    reranker = served_models[0]
    client = zeroentropy.ZeroEntropy(api_key=KEY, base_url=live.url + "/v1", max_retries=0)
    for query, top_n in [(QUERIES[0], None), (QUERIES[3], 3)]:
        response = client.models.rerank(model="zerank-2", query=query, documents=DOCS, top_n=top_n)
        expected = reranker.predict([(query, d) for d in DOCS])
        assert [r.index for r in response.results] == _ranked(expected, top_n)
        assert bits_equal([r.relevance_score for r in response.results], expected[_ranked(expected, top_n)])
        assert response.total_tokens > 0 and response.total_bytes == sum(len(t.encode()) for t in [query, *DOCS])
        assert response.actual_latency_mode == "fast" and response.e2e_latency >= response.inference_latency >= 0


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_zeroentropy_sdk_embed(live, served_models, encoding_format):
    zeroentropy = pytest.importorskip("zeroentropy")
    embedder = served_models[1]
    client = zeroentropy.ZeroEntropy(api_key=KEY, base_url=live.url + "/v1", max_retries=0)
    for input_type, encode in [("query", embedder.encode_query), ("document", embedder.encode_document)]:
        response = client.models.embed(model="zembed-1", input=DOCS[:5], input_type=input_type, dimensions=32,
                                       encoding_format=encoding_format)
        got = [np.frombuffer(base64.b64decode(r.embedding), "<f4") if encoding_format == "base64" else r.embedding
               for r in response.results]
        assert bits_equal(np.stack(got), encode(DOCS[:5], dimensions=32))
        assert response.usage.total_tokens > 0


def test_cohere_sdk_v2_rerank(live, served_models):
    cohere = pytest.importorskip("cohere")
    reranker = served_models[0]
    client = cohere.ClientV2(api_key=KEY, base_url=live.url)
    response = client.rerank(model="rerank-v3.5", query=QUERIES[1], documents=DOCS, top_n=4)
    expected = reranker.predict([(QUERIES[1], d) for d in DOCS])
    assert [r.index for r in response.results] == _ranked(expected, 4)
    assert bits_equal([r.relevance_score for r in response.results], expected[_ranked(expected, 4)])


def test_jina_style_rerank_returns_documents(live, served_models):
    expected = served_models[0].predict([(QUERIES[2], d) for d in DOCS[:3]])
    body = {"model": "jina", "query": QUERIES[2], "documents": [{"text": d} for d in DOCS[:3]],
            "return_documents": True}
    r = httpx.post(live.url + "/v1/rerank", json=body, headers=live.headers, timeout=30)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == _ranked(expected)
    assert [x["document"]["text"] for x in results] == [DOCS[i] for i in _ranked(expected)]


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_sdk_embeddings(live, served_models, encoding_format):
    openai = pytest.importorskip("openai")
    embedder = served_models[1]
    client = openai.OpenAI(api_key=KEY, base_url=live.url + "/v1", max_retries=0)
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}  # None: the SDK sends base64
    response = client.embeddings.create(model="zembed-1", input=DOCS[:4], **kwargs)
    got = [np.frombuffer(base64.b64decode(d.embedding), "<f4") if encoding_format == "base64" else d.embedding
           for d in response.data]
    assert bits_equal(np.stack(got), embedder.encode_document(DOCS[:4]))
    assert [d.index for d in response.data] == [0, 1, 2, 3] and response.usage.total_tokens > 0
    query = client.embeddings.create(model="zembed-1", input=QUERIES[0], dimensions=16,
                                     extra_body={"input_type": "query"})
    assert bits_equal(np.array(query.data[0].embedding)[None], embedder.encode_query([QUERIES[0]], dimensions=16))


def test_tei_routes(live, served_models):
    reranker, embedder = served_models
    r = httpx.post(live.url + "/rerank", json={"query": QUERIES[0], "texts": DOCS[:4], "return_text": True},
                   headers=live.headers, timeout=30)
    expected = reranker.predict([(QUERIES[0], d) for d in DOCS[:4]])
    assert [x["index"] for x in r.json()] == _ranked(expected)
    assert bits_equal([x["score"] for x in r.json()], expected[_ranked(expected)])
    assert [x["text"] for x in r.json()] == [DOCS[i] for i in _ranked(expected)]
    r = httpx.post(live.url + "/embed", json={"inputs": DOCS[0], "prompt_name": "query"}, headers=live.headers,
                   timeout=30)
    assert bits_equal(r.json(), embedder.encode_query([DOCS[0]]))


def test_tei_raw_scores_are_the_identity_activation(live, served_models):
    """raw_scores=true: the raw score (zerank: the logit of "Yes"), bit-identical to
    Reranker.predict(..., activation_fn="identity"), in the same best-first order."""
    reranker = served_models[0]
    r = httpx.post(live.url + "/rerank", json={"query": QUERIES[1], "texts": DOCS, "raw_scores": True},
                   headers=live.headers, timeout=30)
    assert r.status_code == 200, r.text
    expected = reranker.predict([(QUERIES[1], d) for d in DOCS], activation_fn="identity")
    assert [x["index"] for x in r.json()] == _ranked(expected)
    assert bits_equal([x["score"] for x in r.json()], expected[_ranked(expected)])
    assert not bits_equal(expected, reranker.predict([(QUERIES[1], d) for d in DOCS]))  # not the default score


def test_health_info_and_metrics(live):
    assert httpx.get(live.url + "/health", timeout=10).json() == {"status": "ok"}  # open without the key
    info = httpx.get(live.url + "/info", headers=live.headers, timeout=10).json()
    assert info["models"]["reranker"]["format"] == "zerank"
    assert info["models"]["embedder"]["dimensions"] == [64, 32, 16]
    assert info["limits"]["max_request_docs"] == 1000 and info["dtype"] == "float32"
    text = httpx.get(live.url + "/metrics", headers=live.headers, timeout=10).text
    for name in ("zkernels_requests_total", "zkernels_queue_depth", "zkernels_batch_prompts_bucket",
                 "zkernels_batch_tokens_bucket", "zkernels_request_latency_seconds_bucket", "zkernels_tokens_total",
                 "zkernels_tokens_per_second"):
        assert name in text, name
    assert live.metric("zkernels_forwards_total", model="reranker") >= 1  # the warm-up at least
    # every forward is a device-thread step (a step whose requests all left meanwhile runs none); its
    # seconds are counted beside it
    assert live.metric("zkernels_scheduler_steps_total", kind="forward", model="reranker") >= live.metric(
        "zkernels_forwards_total", model="reranker")
    assert live.metric("zkernels_scheduler_step_seconds_total", kind="forward", model="reranker") > 0
