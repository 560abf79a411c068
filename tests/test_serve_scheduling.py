"""Scheduling at forward granularity: a small request overtakes a big one between two of its forwards;
a request whose deadline passed or whose client left is dropped before its next forward and never
tokenized if it had not been; --max-queue counts every admitted request from the route's entry. The
forwards are held and released one by one by a gate, so nothing here depends on timing."""
import collections
import concurrent.futures
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import ForwardGate, LiveServer, assert_rerank_matches_predict, count_submits, make_app, wait_until  # noqa: E402

from zkernels.serve import ServeLimits  # noqa: E402
from zkernels.serve.policy import (  # noqa: E402
    BIG_SLICES_PER_FORWARD,
    STARVATION_FORWARDS,
    Rounds,
    ShortestFirst,
    Tokenize,
)

RERANK = "/v1/models/rerank"


def _body(tag: str, n: int = 2, words: int = 3):
    return {"model": "m", "query": f"query {tag}",
            "documents": [f"{tag} document {i} " + "filler " * words for i in range(n)]}


def _ids(reranker, tag):
    return set(reranker.tokenizer(f" {tag}", add_special_tokens=False).input_ids)


def _post(url, body, timeout=60):
    return httpx.post(url + RERANK, json=body, timeout=timeout)


def _record_encodes(live, kind="reranker"):
    """The queries (or first texts) the model was asked to tokenize (wraps the served model's tokenize_pieces)."""
    served = live.state.served[kind]
    seen, real = [], served.tokenize_pieces

    def tokenize_pieces(first, *args, **kwargs):
        seen.append(first if isinstance(first, str) else first[0])
        return (yield from real(first, *args, **kwargs))
    served.tokenize_pieces = tokenize_pieces
    return seen


@pytest.mark.parametrize("threads", [0, 2])
def test_a_small_request_overtakes_a_big_one(served_models, threads):
    """The small request arrives while the big one's first forward runs: the next forward is the small
    one's, and it is answered while most of the big one's forwards are still to run."""
    reranker = served_models[0]
    limits = ServeLimits(request_tokens_per_forward=64, tokenize_threads=threads)
    big, small = _body("bigone", n=12, words=20), _body("small", n=2)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        counts = count_submits(live, "reranker")
        with concurrent.futures.ThreadPoolExecutor(2) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            big_f = pool.submit(_post, live.url, big)
            gate.wait_calls(1)                         # the big request's first forward is running
            small_f = pool.submit(_post, live.url, small)
            wait_until(lambda: counts["n"] == 2, what="the small request submitted")
            gate.step()                                # the big request's first forward ends
            gate.wait_calls(2)
            assert _ids(reranker, "small") <= gate.seen[-1] and not _ids(reranker, "bigone") <= gate.seen[-1]
            gate.step()                                # the small request's forward
            small_r = small_f.result(30)
            assert small_r.status_code == 200 and not big_f.done() and gate.calls <= 3  # the third waits
            gate.open()
            big_r = big_f.result(60)
        assert gate.calls >= 6  # the big request took several forwards of at most 64 tokens
        assert_rerank_matches_predict(reranker, small, small_r)
        assert_rerank_matches_predict(reranker, big, big_r)


class _PieceLog:
    """Wraps the engine's forwards (in pieces, and in one go): records ("start" | "piece" | "end", tag) per
    forward (tag: "big" when it holds the big request's tokens), and holds the big forward after its first
    piece until `release` is set (the device thread waits inside that piece)."""

    def __init__(self, engine, big_ids):
        self.engine, self.big_ids, self.events = engine, big_ids, []
        self.held, self.release = threading.Event(), threading.Event()

    def __enter__(self):
        real = self.engine.forward.hidden_pieces

        def pieces(batch):
            tag = "big" if self.big_ids <= set(batch.token_ids.tolist()) else "small"
            self.events.append(("start", tag))
            inner = real(batch)
            while True:
                try:
                    next(inner)
                except StopIteration as done:
                    self.events.append(("end", tag))
                    return done.value
                self.events.append(("piece", tag))
                if tag == "big" and not self.release.is_set():
                    self.held.set()
                    self.release.wait(30)
                yield
        whole = self.engine.forward.hidden_at_read_rows

        def in_one_go(batch):
            tag = "big" if self.big_ids <= set(batch.token_ids.tolist()) else "small"
            self.events.append(("start", tag))
            rows = whole(batch)
            self.events.append(("end", tag))
            return rows
        self.engine.forward.hidden_pieces, self.engine.forward.hidden_at_read_rows = pieces, in_one_go
        return self

    def __exit__(self, *exc):
        self.release.set()
        del self.engine.forward.hidden_pieces, self.engine.forward.hidden_at_read_rows


def test_a_small_request_runs_between_two_pieces_of_a_big_forward(served_models):
    """CPU: a big request's forward runs in pieces; a small request that arrives during one is tokenized and
    run before the next piece, and both answers are the ones predict gives, bit for bit."""
    reranker = served_models[0]
    limits = ServeLimits(request_tokens_per_forward=64, tokenize_threads=0)
    big, small = _body("bigone", n=12, words=20), _body("small", n=2)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        counts = count_submits(live, "reranker")
        log = _PieceLog(reranker.engine, _ids(reranker, "bigone"))
        with concurrent.futures.ThreadPoolExecutor(2) as pool, log:
            big_f = pool.submit(_post, live.url, big)
            assert log.held.wait(30), "the big request's forward never started"
            small_f = pool.submit(_post, live.url, small)
            wait_until(lambda: counts["n"] == 2, what="the small request submitted")
            log.release.set()
            small_r, big_r = small_f.result(30), big_f.result(60)
        big_events = [i for i, (_, tag) in enumerate(log.events) if tag == "big"]
        small_start, small_end = log.events.index(("start", "small")), log.events.index(("end", "small"))
        assert log.events[:2] == [("start", "big"), ("piece", "big")]
        assert small_start == 2 and small_end < big_events[2]  # the whole small forward, then the big one's next piece
        assert log.events[big_events[-1]] == ("end", "big") and len(big_events) > 4
        assert_rerank_matches_predict(reranker, small, small_r)
        assert_rerank_matches_predict(reranker, big, big_r)


def test_small_requests_are_tokenized_before_a_big_one(served_models):
    """On the device thread (the CPU default), requests that arrived during a forward are tokenized
    smallest first, and a big one's tokenizing waits until the small ones' forward has run."""
    reranker = served_models[0]
    limits = ServeLimits(tokenize_threads=0)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        counts, encoded = count_submits(live, "reranker"), _record_encodes(live)
        with concurrent.futures.ThreadPoolExecutor(3) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            first = pool.submit(_post, live.url, _body("first"))
            gate.wait_calls(1)
            big = pool.submit(_post, live.url, _body("bigone", n=40, words=60))  # ~16,000 characters
            wait_until(lambda: counts["n"] == 2, what="the big request submitted")
            small = pool.submit(_post, live.url, _body("small"))
            wait_until(lambda: counts["n"] == 3, what="the small request submitted")
            gate.step()
            gate.wait_calls(2)
            assert encoded == ["query first", "query small"]  # the big one is not tokenized yet
            assert _ids(reranker, "small") <= gate.seen[-1]
            gate.open()
            assert [f.result(60).status_code for f in (first, small, big)] == [200, 200, 200]
        assert encoded == ["query first", "query small", "query bigone"]


def test_a_request_past_its_deadline_stops_between_forwards(served_models):
    reranker = served_models[0]
    limits = ServeLimits(request_tokens_per_forward=64, timeout_s=1.0)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        with concurrent.futures.ThreadPoolExecutor(1) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            big = pool.submit(_post, live.url, _body("bigone", n=12, words=20))
            gate.wait_calls(1)
            r = big.result(30)                          # answered at the deadline, its forward still held
            assert r.status_code == 504 and "remaining forwards were skipped" in r.json()["error"]["message"]
            gate.open()
            wait_until(lambda: live.metric("zkernels_stopped_total", model="reranker", reason="timeout") == 1,
                       what="the request stopped")
        assert gate.calls == 1                          # none of its other forwards ran
        assert live.post(RERANK, _body("after")).status_code == 200


def test_an_expired_request_is_never_tokenized(served_models):
    """It waited behind a held forward (tokenizing on the device thread, the CPU default) until its
    deadline passed: it is dropped without being tokenized or computed."""
    reranker = served_models[0]
    limits = ServeLimits(timeout_s=1.0, tokenize_threads=0)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        encoded = _record_encodes(live)
        with concurrent.futures.ThreadPoolExecutor(2) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            first = pool.submit(_post, live.url, _body("alpha"))
            gate.wait_calls(1)
            late = pool.submit(_post, live.url, _body("omega"))
            r = late.result(30)
            assert r.status_code == 504 and "dropped before any work" in r.json()["error"]["message"]
            assert first.result(30).status_code == 504
            gate.open()
            wait_until(lambda: live.metric("zkernels_dropped_total", model="reranker", reason="timeout") == 1,
                       what="the dropped request in the metrics")
        assert "query omega" not in encoded and "query alpha" in encoded
        assert not any(_ids(reranker, "omega") <= seen for seen in gate.seen)


def test_the_deadline_covers_waiting_for_a_tokenizer_thread(served_models):
    limits = ServeLimits(timeout_s=1.0, tokenize_threads=1)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        served = live.state.served["reranker"]
        release, real, seen = concurrent.futures.Future(), served.tokenize_pieces, []

        def tokenize_pieces(query, *args, **kwargs):  # "blocker" holds the only tokenizer thread
            seen.append(query)
            if query == "query blocker":
                release.result(30)
            return (yield from real(query, *args, **kwargs))
        served.tokenize_pieces = tokenize_pieces
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            blocker = pool.submit(_post, live.url, _body("blocker"))
            wait_until(lambda: seen == ["query blocker"], what="the tokenizer thread busy")
            r = _post(live.url, _body("omega"))
            assert r.status_code == 504
            release.set_result(None)
            assert blocker.result(30).status_code == 504
        wait_until(lambda: live.metric("zkernels_dropped_total", model="reranker", reason="timeout") >= 1,
                   what="the dropped request in the metrics")
        assert "query omega" not in seen


def test_clients_that_leave_are_dropped_and_never_tokenized(served_models):
    reranker = served_models[0]
    with LiveServer(make_app(served_models, ServeLimits(tokenize_threads=0), embedder=False)) as live:
        encoded = _record_encodes(live)
        with concurrent.futures.ThreadPoolExecutor(4) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            first = pool.submit(_post, live.url, _body("alpha"))
            gate.wait_calls(1)
            gone = [pool.submit(_post, live.url, _body(f"gamma{i}"), 0.5) for i in range(3)]
            for f in gone:
                with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
                    f.result(30)
            wait_until(lambda: live.metric("zkernels_dropped_total", model="reranker", reason="disconnected") == 3,
                       what="three dropped requests in the metrics")
            assert live.state.queue_depth("reranker") == 0
            gate.open()
            assert first.result(60).status_code == 200
        assert not any(q.startswith("query gamma") for q in encoded)
        assert not any(_ids(reranker, "gamma0") <= seen for seen in gate.seen)


def test_a_started_request_whose_client_left_stops(served_models):
    reranker = served_models[0]
    limits = ServeLimits(request_tokens_per_forward=64)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        with ForwardGate(reranker.engine, closed=True) as gate:
            with pytest.raises(httpx.ReadTimeout):
                _post(live.url, _body("bigone", n=12, words=20), timeout=1.0)
            wait_until(lambda: live.metric("zkernels_requests_total", route=RERANK, status="499") == 1,
                       what="the server noticing the client left")
            gate.open()
            wait_until(lambda: live.metric("zkernels_stopped_total", model="reranker", reason="disconnected") == 1,
                       what="the request stopped")
        assert gate.calls == 1


@pytest.mark.parametrize("threads", [0, 2])
def test_max_queue_refuses_at_the_door(served_models, threads):
    """--max-queue 2 and a forward that does not end: of 20 more requests, 2 are admitted (waiting to be
    tokenized or queued) and 18 get 503 + Retry-After at once, while the forward still runs."""
    reranker = served_models[0]
    limits = ServeLimits(max_queue=2, tokenize_threads=threads)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        with concurrent.futures.ThreadPoolExecutor(21) as pool, ForwardGate(reranker.engine, closed=True) as gate:
            first = pool.submit(_post, live.url, _body("first"))
            gate.wait_calls(1)
            wait_until(lambda: live.state.queue_depth("reranker") == 0, what="the first request running")
            t0 = time.monotonic()
            more = [pool.submit(_post, live.url, _body(f"more{i}")) for i in range(20)]
            wait_until(lambda: sum(f.done() for f in more) == 18, what="18 answers")
            refused = [f.result() for f in more if f.done()]
            assert time.monotonic() - t0 < 20 and gate.calls == 1  # refused while the forward is still held
            assert all(r.status_code == 503 and r.headers["Retry-After"] == "1" for r in refused)
            assert "queue is full" in refused[0].json()["error"]["message"]
            assert live.metric("zkernels_queue_depth", model="reranker") == 2
            gate.open()
            assert first.result(60).status_code == 200
            assert sorted(f.result(60).status_code for f in more) == [200] * 2 + [503] * 18
        assert live.post(RERANK, _body("after")).status_code == 200


# ---- the policies on their own ---------------------------------------------------------------------------
def _job(engine, slice_tokens: list[int], arrived: float, passed_over: int = 0):
    slices = collections.deque(SimpleNamespace(token_ids=torch.zeros(n), prompt_index=[0]) for n in slice_tokens)
    return SimpleNamespace(engine=engine, slices=slices, remaining=sum(slice_tokens), arrived=arrived,
                           passed_over=passed_over, retrying=None, needs_tokenizing=False,
                           work_left=sum(slice_tokens), total_work=sum(slice_tokens))


def _names(step, jobs):
    return [next(k for k, j in jobs.items() if j is job) for job, _ in step]


def test_shortest_first_batches_finishing_requests_and_slices_big_ones():
    engine = SimpleNamespace(device="cpu", max_tokens_per_batch=100, config=SimpleNamespace(num_layers=2))
    policy = ShortestFirst(slice_tokens=40)
    assert policy.slice_tokens(engine) == 40
    jobs = {"big": _job(engine, [40, 40, 40], 0.0), "small": _job(engine, [30], 0.2),
            "smaller": _job(engine, [10], 0.3), "third": _job(engine, [70], 0.1)}
    now = 1.0
    assert _names(policy.next_forward(list(jobs.values()), now), jobs) == ["smaller", "small"]  # 70 more: over 100
    del jobs["smaller"], jobs["small"]
    assert _names(policy.next_forward(list(jobs.values()), now), jobs) == ["third"]
    del jobs["third"]
    # only big work waits: on CPU one slice per layer of it (2)
    assert _names(policy.next_forward(list(jobs.values()), now), jobs) == ["big"] * 2
    cuda = SimpleNamespace(device="cuda", max_tokens_per_batch=1000, config=SimpleNamespace(num_layers=20))
    assert policy.big_forward_slices(cuda) == BIG_SLICES_PER_FORWARD  # on CUDA: a few slices, in one go
    assert not policy.in_pieces(cuda, [(jobs["big"], jobs["big"].slices[0])])
    jobs["other"] = _job(engine, [40, 40, 40, 40], 0.5)
    assert _names(policy.next_forward(list(jobs.values()), now), jobs) == ["big", "big"]  # least work left first
    jobs["starved"] = _job(engine, [40, 40, 40, 40, 40], -5.0, passed_over=STARVATION_FORWARDS)
    jobs["also"] = _job(engine, [40, 40, 40, 40, 40], -4.0, passed_over=STARVATION_FORWARDS)
    jobs["tiny"] = _job(engine, [5], 0.9)
    step = policy.next_forward(list(jobs.values()), now)  # passed over too often: the oldest gets the forward
    assert _names(step, jobs) == ["starved"] and policy.in_pieces(engine, step)  # alone, in pieces: "tiny" between
    on_cuda = {name: _job(cuda, [int(b.token_ids.shape[0]) for b in j.slices], j.arrived, j.passed_over)
               for name, j in jobs.items()}
    assert _names(policy.next_forward(list(on_cuda.values()), now), on_cuda) == ["starved", "tiny"]  # in one go
    jobs["tiny"].retrying = RuntimeError("failed once")
    assert _names(policy.next_forward(list(jobs.values()), now), jobs) == ["tiny"]  # a retry runs alone


def test_only_big_work_left_takes_several_slices_per_forward_until_a_small_request_waits():
    engine = SimpleNamespace(device="cpu", max_tokens_per_batch=100)
    policy = ShortestFirst(slice_tokens=40, big_slices=3)
    jobs = {"big": _job(engine, [40, 40, 40], 0.0), "bigger": _job(engine, [30, 30, 30, 30], 0.1)}
    step = policy.next_step(list(jobs.values()), 1.0)
    # the least work left first (big: 120 tokens), then the next; 3 slices would pass the 100-token budget
    assert _names(step.slices, jobs) == ["big", "big"]
    assert [b for _, b in step.slices] == list(jobs["big"].slices)[:2]  # its slices in order
    jobs["big"].slices.popleft()
    jobs["big"].slices.popleft()
    jobs["big"].remaining = jobs["big"].work_left = 40
    step = policy.next_step(list(jobs.values()), 1.0)  # big's last slice is big work too: with the next one's
    assert _names(step.slices, jobs) == ["big", "bigger", "bigger"] and step.in_pieces
    jobs["big"].slices.clear()
    del jobs["big"]
    step = policy.next_step(list(jobs.values()), 1.0)
    assert _names(step.slices, jobs) == ["bigger"] * 3  # the slice bound
    jobs["small"] = _job(engine, [10], 0.9)
    jobs["small"].needs_tokenizing = True  # not tokenized yet: its estimate alone makes it small
    jobs["small"].work_left, jobs["small"].size_hint = 10, 40
    step = policy.next_step(list(jobs.values()), 1.0)
    assert isinstance(step, Tokenize) and step.jobs == [jobs["small"]]
    jobs["small"].needs_tokenizing = False
    step = policy.next_step(list(jobs.values()), 1.0)
    assert _names(step.slices, jobs) == ["small"]  # a small request waits: no multi-slice forward


def test_rounds_run_to_their_end_before_new_work():
    engine = SimpleNamespace(device="cpu", max_tokens_per_batch=100)
    policy = Rounds()
    assert policy.slice_tokens(engine) == 100
    big, small = _job(engine, [100, 100, 100], 0.0), _job(engine, [10], 1.0)
    step = policy.next_forward([big, small], 2.0)
    assert [job for job, _ in step] == [big]  # arrival order; the small one does not fit the round's budget
    assert not policy.takes_new_work([big, small])
    big.slices.popleft()
    assert [job for job, _ in policy.next_forward([big, small], 2.0)] == [big]
    big.slices.clear()
    assert policy.takes_new_work([small])
    assert [job for job, _ in policy.next_forward([small], 2.0)] == [small]
