"""Which work goes into the next forward: the scheduling policies of `DeviceScheduler`.

`ShortestFirst` (the default) keeps a small request from waiting behind a big one: the request with the
least work left goes first, requests that finish in this forward share it, and a big request advances
one slice (at most `slice_tokens` tokens) per forward, so a newcomer waits for at most about one slice
of someone else's. Measured in benchmarks/bench_serve_mixed.py against `Rounds`, today's policy kept for
that comparison (hidden `--scheduler rounds`); the figures are in docs/serving.md.

A policy answers four questions for the scheduler thread: the slice size a job is planned with
(`slice_tokens`), how much text the device thread may tokenize between two forwards
(`tokenize_chars`, None: all), whether newly submitted jobs may be taken now (`takes_new_work`), and the
next forward (`next_forward`: [(job, its next slice)], all of one engine, a job's slices in order).
"""
from __future__ import annotations

# A request passed over for this many forwards in a row joins the next one, whatever its size: under a
# flood of small requests, shortest-first alone would starve a big one for as long as the flood lasts.
# Counted in forwards, not seconds, so that a slow machine does not turn every big request into a
# "starving" one (each would then add a slice to every forward).
STARVATION_FORWARDS = 8

# Tokens of one request per forward when --request-tokens-per-forward is not given, by device kind.
# CPU: a small request can wait behind one slice of a big one; measured with bench_serve_mixed.py
# (2-core CPU, the cpu backend, demo model, big requests of 60 x ~375 tokens), 1,024 tokens gave the
# lowest small-request p99 at 80% load without raising the big requests' latency (512: the same p99,
# 3x the big p50; 2,048: 2x the small p99); docs/serving.md has the figures. CUDA: a bigger forward
# keeps the GPU busy (not measured on a GPU yet).
DEFAULT_SLICE_TOKENS = {"cpu": 1024, "cuda": 4096}


def _tokens(batch) -> int:
    return int(batch.token_ids.shape[0])


def _retry_alone(jobs) -> list:
    """A request re-planned after a failed forward runs alone, oldest first, whatever the policy."""
    retrying = [j for j in jobs if j.retrying is not None]
    if not retrying:
        return []
    job = min(retrying, key=lambda j: j.arrived)
    return [(job, job.slices[0])]


class ShortestFirst:
    """Shortest remaining work first, at forward granularity.

    Each forward is one of:
    - the requests that finish in it (their last slice), fewest tokens left first, as many as fit in the
      engine's max_tokens_per_batch: small requests share forwards, as with cross-request batching;
    - else one slice of the request with the least work left (a big request advances while nothing
      smaller waits).
    The oldest request passed over for STARVATION_FORWARDS forwards in a row joins the next forward with
    one slice, whatever its size, and a request re-planned after a failure runs alone.
    """

    name = "shortest-first"
    # Characters of request text the device thread tokenizes between two forwards (smallest requests
    # first, at least one request): about the cost of a forward of one slice.
    tokenize_chars = 8_000

    def __init__(self, slice_tokens: int | None = None, starvation_forwards: int = STARVATION_FORWARDS):
        self._slice_tokens, self.starvation_forwards = slice_tokens, starvation_forwards

    def slice_tokens(self, engine) -> int:
        kind = "cuda" if str(engine.device).startswith("cuda") else "cpu"
        return min(self._slice_tokens or DEFAULT_SLICE_TOKENS[kind], engine.max_tokens_per_batch)

    def takes_new_work(self, active) -> bool:
        return True

    def next_forward(self, jobs, now: float) -> list:
        if not jobs:
            return []
        retry = _retry_alone(jobs)
        if retry:
            return retry
        starving = [j for j in jobs if j.passed_over >= self.starvation_forwards]
        oldest = [min(starving, key=lambda j: j.arrived)] if starving else []
        first = oldest[0] if oldest else min(jobs, key=lambda j: (j.remaining, j.arrived))
        engine = first.engine
        budget = engine.max_tokens_per_batch
        finishing = sorted((j for j in jobs if len(j.slices) == 1 and j.engine is engine and j not in oldest),
                           key=lambda j: (j.remaining, j.arrived))
        chosen, tokens = [], 0
        for job in oldest + finishing:
            t = _tokens(job.slices[0])
            if chosen and tokens + t > budget:
                continue
            chosen.append(job)
            tokens += t
        if not chosen:
            chosen = [first]
        return [(job, job.slices[0]) for job in chosen]


class Rounds:
    """The round scheduler `zkernels serve` had before `ShortestFirst`, kept to measure against: queued
    requests are taken in arrival order up to one forward's token budget (at least one request), planned
    into full-budget forwards, and the round runs to its end before anything newly queued is looked at
    (a small request waits for all of a big one's forwards)."""

    name = "rounds"
    tokenize_chars = None  # everything queued is tokenized between two rounds

    def __init__(self):
        self._round: list = []

    def slice_tokens(self, engine) -> int:
        return engine.max_tokens_per_batch

    def takes_new_work(self, active) -> bool:
        self._round = [j for j in self._round if j in active and j.slices]
        return not self._round

    def next_forward(self, jobs, now: float) -> list:
        if not jobs:
            return []
        retry = _retry_alone(jobs)
        if retry:
            return retry
        self._round = [j for j in self._round if j in jobs and j.slices]
        if not self._round:
            engine, tokens = None, 0
            for job in sorted(jobs, key=lambda j: j.arrived):
                if engine is not None and (job.engine is not engine
                                           or tokens + job.remaining > engine.max_tokens_per_batch):
                    break
                engine = job.engine
                self._round.append(job)
                tokens += job.remaining
        budget = self._round[0].engine.max_tokens_per_batch
        chosen, tokens = [], 0
        for job in self._round:
            for batch in job.slices:
                if chosen and tokens + _tokens(batch) > budget:
                    return chosen
                chosen.append((job, batch))
                tokens += _tokens(batch)
        return chosen


POLICIES = {"shortest-first": ShortestFirst, "rounds": Rounds}


def make_policy(name: str, slice_tokens: int | None = None):
    if name not in POLICIES:
        raise ValueError(f"unknown scheduling policy {name!r}; choose one of {sorted(POLICIES)}")
    return ShortestFirst(slice_tokens) if name == "shortest-first" else Rounds()
