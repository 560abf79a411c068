"""A request's lifecycle on the server: its work bounded by its body (a hostile query x documents request
is refused by --max-request-tokens before any forward, its query tokenized once), a body that does not
arrive within --timeout-s (408 or closed, its queue place free at once), the one starvation rule over
tokenizing and forwards, an exception at each point of a step (that step's requests get a 500 naming
it, the server goes on), and a device thread that ends (/health 503, exit status 1)."""
import collections
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _serve_util import ForwardGate, LiveServer, assert_rerank_matches_predict, count_submits, make_app, wait_until  # noqa: E402

from zkernels.serve import ServeLimits  # noqa: E402
from zkernels.serve.policy import SMALL_STEPS_FIRST, STARVATION_STEPS, ShortestFirst, Tokenize  # noqa: E402
from zkernels.serve.runner import exit_status  # noqa: E402
from zkernels.serve.scheduler import DeviceScheduler  # noqa: E402

RERANK = "/v1/models/rerank"
SMALL = {"model": "m", "query": "a small query", "documents": ["first document", "second document"]}


def test_a_hostile_query_times_documents_request_is_refused_before_any_forward(served_models, monkeypatch):
    """A 200,000-character query with 1,000 one-character documents: refused with a 413 naming
    --max-request-tokens, no forward run for it, and the tokenizer saw its query once (copied into every
    pair, that would be 200 million characters)."""
    reranker = served_models[0]
    limits = ServeLimits(tokenize_threads=0, max_request_tokens=50_000)
    body = {"model": "m", "query": "the query goes on " * 11_112, "documents": ["x"] * 1000}
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        tokenizer = reranker.format.tokenizer
        seen, real = [], type(tokenizer).__call__

        def counting(self, text, *args, **kwargs):
            seen.extend([text] if isinstance(text, str) else text)
            return real(self, text, *args, **kwargs)
        monkeypatch.setattr(type(tokenizer), "__call__", counting)
        with ForwardGate(reranker.engine) as gate:
            r = live.post(RERANK, body)
            assert r.status_code == 413, r.text
            message = r.json()["error"]["message"]
            assert "--max-request-tokens" in message and "50000" in message
            assert gate.calls == 0
        assert sum(len(t) for t in seen) < 2 * len(body["query"])
        within = {"model": "m", "query": "short", "documents": ["word " * 40] * 3}
        assert live.post(RERANK, within).status_code == 200


def test_an_embedding_request_over_the_token_limit_is_refused(served_models):
    limits = ServeLimits(tokenize_threads=0, max_request_tokens=100)
    with LiveServer(make_app(served_models, limits, reranker=False)) as live:
        body = {"model": "m", "input": ["some words here"] * 30, "input_type": "document"}
        r = live.post("/v1/models/embed", body)
        assert r.status_code == 413 and "--max-request-tokens" in r.json()["error"]["message"]
        assert live.post("/v1/models/embed", {**body, "input": body["input"][:2]}).status_code == 200


def test_a_stalled_body_gets_408_and_frees_its_queue_place(served_models):
    """--max-queue 1: a client sends its headers and the body's first byte, then nothing. At --timeout-s
    it gets 408 (or its connection closed), and the one queue place serves the next request."""
    limits = ServeLimits(max_queue=1, timeout_s=1.5)
    with LiveServer(make_app(served_models, limits, embedder=False)) as live:
        port = int(live.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/models/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 5000\r\n\r\n{")
            wait_until(lambda: live.state.queue_depth("reranker") == 1, what="the stalled request admitted")
            assert live.post(RERANK, SMALL).status_code == 503  # its place is taken meanwhile
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except (ConnectionResetError, TimeoutError):
                pass
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        if answer:
            assert b"--timeout-s" in answer
        assert live.state.queue_depth("reranker") == 0
        assert live.post(RERANK, SMALL).status_code == 200


# ---- the starvation rule, over tokenizing and forwards ------------------------------------------------
class _SimJob:
    """A job as the policy sees it: `pieces` pieces of tokenizing, then `slices` slices of `tokens` each."""

    def __init__(self, engine, name, pieces, slices, tokens, arrived, chars):
        self.engine, self.name, self.arrived = engine, name, arrived
        self.pieces_left, self.size_hint = pieces, chars
        self.n_slices, self.tokens = slices, tokens
        self.slices, self.remaining, self.passed_over, self.retrying = collections.deque(), 0, 0, None

    @property
    def needs_tokenizing(self):
        return self.pieces_left > 0

    @property
    def work_left(self):
        return self.remaining if not self.needs_tokenizing else self.size_hint // 4 + 1

    @property
    def total_work(self):
        return self.tokens * self.n_slices if not self.needs_tokenizing else self.work_left

    def run(self, step):
        if isinstance(step, Tokenize):
            self.pieces_left -= 1
            if not self.pieces_left:
                self.slices.extend(SimpleNamespace(token_ids=torch.zeros(self.tokens), prompt_index=[0])
                                   for _ in range(self.n_slices))
                self.remaining = self.tokens * self.n_slices
        else:  # its slices in this forward (while only big work waits, a forward takes several)
            for _ in [batch for job, batch in step.slices if job is self]:
                self.slices.popleft()
                self.remaining -= self.tokens


class _SimDevice:
    """Runs the policy's steps on _SimJobs as the scheduler does: a forward in pieces (4 per layer) is paused
    between two, and the policy is asked for the next step with it."""

    def __init__(self, policy, layers):
        self.policy, self.pieces_per_forward = policy, 4 * layers
        self.paused, self.pieces_left = None, 0

    def step(self, jobs, now):
        """Runs the next step; returns it and the jobs whose work it finished (a forward's, at its last piece)."""
        paused = self.paused
        step = self.policy.next_step(jobs, now, paused)
        DeviceScheduler._count_passed_over(None, jobs, step, paused)
        if step is not paused and getattr(step, "in_pieces", False):
            self.paused, self.pieces_left = step, self.pieces_per_forward
        if step is self.paused:
            self.pieces_left -= 1
            if self.pieces_left:
                return step, []
            self.paused = None
        for job in step.jobs:
            job.run(step)
        return step, step.jobs


def _simulate(n_big):
    """A new small request every step (1 piece, 1 slice) beside n_big big ones (5 pieces of tokenizing,
    then 6 slices; forwards of 2 slices in 4 pieces while only big work waits), until the big ones are
    done: (steps of each big one, steps each small one took)."""
    engine = SimpleNamespace(device="cpu", max_tokens_per_batch=2048, config=SimpleNamespace(num_layers=2))
    policy = ShortestFirst(slice_tokens=1024)
    device = _SimDevice(policy, layers=2)
    bigs = [_SimJob(engine, f"big{i}", pieces=5, slices=6, tokens=1024, arrived=i / 10, chars=40_000)
            for i in range(n_big)]
    jobs, big_steps, small_took, step_no = list(bigs), {b: [] for b in bigs}, [], 0
    while any(b in jobs for b in bigs):
        step_no += 1
        jobs.append(_SimJob(engine, f"small{step_no}", pieces=1, slices=1, tokens=20, arrived=float(step_no),
                            chars=80))
        step, ran = device.step(jobs, float(step_no))
        for job in step.jobs:
            if job in big_steps:
                big_steps[job].append(step_no)
        for job in ran:
            if not job.needs_tokenizing and not job.slices:
                jobs.remove(job)
                if job not in big_steps:
                    small_took.append(step_no - job.arrived + 1)
        assert step_no < 3000, "the big requests never finished"
    return list(big_steps.values()), small_took


@pytest.mark.parametrize("n_big", [1, 3])
def test_a_steady_small_stream_does_not_starve_big_requests_nor_they_it(n_big):
    """Each big request gets a step (a piece of tokenizing or of a forward) within STARVATION_STEPS steps and
    the turns of the other starving ones (a forced step at least every SMALL_STEPS_FIRST + 1 steps; a forced
    forward runs in pieces, a piece at least every 2 * SMALL_STEPS_FIRST + 1 steps) and finishes; the small
    requests run between those pieces and finish within a few steps of arriving."""
    pieces = 4 * 2  # per forward: 4 per layer, 2 layers
    big_steps, small_took = _simulate(n_big)
    for steps in big_steps:
        gaps = [b - a for a, b in zip([0] + steps, steps)]
        assert len(steps) == 5 + 6 * pieces, steps  # 5 pieces of tokenizing, 6 forced forwards of one slice
        between_pieces = 2 * SMALL_STEPS_FIRST + 1
        others = between_pieces * pieces * (n_big - 1)  # the others' forced forwards, in pieces
        assert max(gaps) <= STARVATION_STEPS + others + between_pieces, gaps
    assert max(small_took) <= 4, sorted(small_took)[-5:]


def test_a_small_request_gets_its_forward_right_after_its_tokenizing_beside_a_starving_one():
    """A forced step for a starving request comes before or after a small request's two steps (tokenizing,
    forward), not between them: the small request waits for one of the big request's slices, not two."""
    engine = SimpleNamespace(device="cpu", max_tokens_per_batch=2048)
    policy = ShortestFirst(slice_tokens=1024)
    big = _SimJob(engine, "big", pieces=1, slices=6, tokens=1024, arrived=0.0, chars=40_000)
    other = _SimJob(engine, "other", pieces=1, slices=3, tokens=1024, arrived=0.5, chars=12_000)
    jobs = [big, other]
    for job in jobs:  # tokenized and planned: their slices wait
        job.run(Tokenize([job]))
    big.passed_over = other.passed_over = STARVATION_STEPS  # both starving; big is the older one
    taken = []
    for step_no in range(4):
        if step_no == 1:
            jobs.append(_SimJob(engine, "small", pieces=1, slices=1, tokens=20, arrived=1.0, chars=80))
        step = policy.next_step(jobs, float(step_no))
        DeviceScheduler._count_passed_over(None, jobs, step, None)
        for job in step.jobs:
            job.run(step)
        jobs = [j for j in jobs if j.needs_tokenizing or j.slices]
        taken.append([j.name for j in step.jobs])
    # big, forced; the small one's tokenizing and forward, by size; then the other starving one, forced
    assert taken[:4] == [["big"], ["small"], ["small"], ["other"]], taken


# ---- an exception at each point of a step ------------------------------------------------------------
def _break(live, reranker, point, monkeypatch):
    """Makes `point` raise for the next request; returns the text its 500 must name."""
    import zkernels.serve.scheduler as scheduler_module
    served = live.state.served["reranker"]
    if point == "tokenizing":
        def tokenize_pieces(*args, **kwargs):
            raise RuntimeError("injected tokenizing failure")
            yield
        monkeypatch.setattr(served, "tokenize_pieces", tokenize_pieces)
        return "tokenizing the request failed: RuntimeError: injected tokenizing failure"
    if point == "planning":
        def plan(*args, **kwargs):
            raise RuntimeError("injected planning failure")
        monkeypatch.setattr(reranker.engine, "plan", plan)
        return "tokenizing the request failed: RuntimeError: injected planning failure"
    if point == "heads":
        def head(key):
            raise RuntimeError("injected head failure")
        monkeypatch.setattr(served, "head", head)
        return "applying the heads failed: RuntimeError: injected head failure"
    if point == "gather":
        def gather_rows(*args):
            raise RuntimeError("injected gather failure")
        monkeypatch.setattr(scheduler_module, "gather_rows", gather_rows)
        return "gathering the request's rows failed: RuntimeError: injected gather failure"
    if point == "metrics":
        def observe(*args, **kwargs):
            raise RuntimeError("injected metrics failure")
        monkeypatch.setattr(live.state.metrics.batch_tokens, "observe", observe)
        return "recording the forward's metrics failed: RuntimeError: injected metrics failure"
    if point == "finish":
        real = DeviceScheduler.move

        def move(self, job, to, **kwargs):
            if to.value == "done":
                raise RuntimeError("injected finish failure")
            return real(self, job, to, **kwargs)
        monkeypatch.setattr(DeviceScheduler, "move", move)
        return "gathering the request's rows failed: RuntimeError: injected finish failure"
    raise AssertionError(point)


@pytest.mark.parametrize("threads", [0, 2])
def test_an_exception_at_each_point_of_a_step_fails_only_that_step(served_models, threads):
    reranker = served_models[0]
    with LiveServer(make_app(served_models, ServeLimits(tokenize_threads=threads), embedder=False)) as live:
        for point in ["tokenizing", "planning", "heads", "gather", "metrics", "finish"]:
            with pytest.MonkeyPatch.context() as monkeypatch:
                expected = _break(live, reranker, point, monkeypatch)
                r = live.post(RERANK, SMALL)
            assert r.status_code == 500 and expected in r.json()["error"]["message"], (point, r.text)
            after = {"model": "m", "query": f"after {point}", "documents": ["one", "two", "three"]}
            assert_rerank_matches_predict(reranker, after, live.post(RERANK, after), point)
        assert live.state.schedulers["cpu"].ended is None


def test_a_device_thread_that_ends_fails_its_requests_and_stops_the_server(served_models, monkeypatch):
    """Something outside every step's boundary raises: the request waiting on the thread gets a 500 saying
    so, /health answers 503, new requests 503, the server is told to stop (the runner's stop, as after a
    failed warm-up) and its exit status is 1."""
    reranker = served_models[0]
    app = make_app(served_models, ServeLimits(tokenize_threads=0), embedder=False)
    with LiveServer(app) as live:
        scheduler, stops = live.state.schedulers["cpu"], []
        live.state.on_fatal = lambda: stops.append(True)
        counts = count_submits(live, "reranker")
        with ForwardGate(reranker.engine, closed=True) as gate, ThreadPoolExecutor(2) as pool:
            first = pool.submit(live.post, RERANK, SMALL)
            gate.wait_calls(1)
            waiting = pool.submit(live.post, RERANK, {"model": "m", "query": "waiting", "documents": ["d"]})
            wait_until(lambda: counts["n"] == 2, what="the second request queued")
            monkeypatch.setattr(scheduler, "_live", lambda: 1 / 0)
            gate.open()
            assert first.result(30).status_code == 200  # its forward ran to its end
            r = waiting.result(30)
        assert r.status_code == 500 and "the device thread ended: ZeroDivisionError" in r.json()["error"]["message"]
        wait_until(lambda: stops == [True], what="the server told to stop")
        health = httpx.get(live.url + "/health", timeout=5)
        assert health.status_code == 503 and "the device thread ended" in health.json()["error"]
        assert live.post(RERANK, SMALL).status_code == 503
        assert exit_status(app) == 1
