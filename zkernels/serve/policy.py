"""Which work the device thread does next: the scheduling policies of `DeviceScheduler`.

A step is either a piece of tokenizing (`Tokenize`: one piece of text of each of its jobs, about
`tokenize_chars` characters in all) or one packed forward (`Forward`: slices of jobs of one engine).
`ShortestFirst` (the default) keeps a small request from waiting behind a big one: the request with the
least work left goes first (tokenized or not: before tokenizing its work is estimated from its
characters), requests that finish in this forward share it, a big request advances one slice (at most
`slice_tokens` tokens) per forward and its tokenizing one piece per step, so a newcomer waits for at
most about one slice or one piece of someone else's, whichever runs. One starvation rule covers
everything waiting: a request passed over for STARVATION_STEPS steps in a row gets the next one.
Measured in benchmarks/bench_serve_mixed.py against `Rounds` (the round scheduler, `--scheduler
rounds`); the figures are in docs/serving.md.

A policy answers: the slice size a job is planned with (`slice_tokens`), the piece of text tokenized per
step (`tokenize_chars`, None: a request's whole text), and the next step (`next_step`). `next_forward`
is the forward part alone, over jobs that are tokenized.
"""
from __future__ import annotations

from dataclasses import dataclass

# A request passed over for this many steps in a row (tokenizing pieces or forwards) gets the next
# step, whatever its size: under a flood of small requests, shortest-first alone would starve a big one
# for as long as the flood lasts. Counted in steps, not seconds, so that a slow machine does not turn
# every big request into a "starving" one (each would then take a share of every step).
STARVATION_STEPS = 8
# Steps by size that a request needing at most one slice in all (tokenizing it, then its forward) may
# take before a starving request's next forced step: the bound on how long a forced step waits.
SMALL_STEPS_FIRST = 3
STARVATION_FORWARDS = STARVATION_STEPS  # the name ShortestFirst's callers know
# Slices one forward takes while nothing needing at most one slice waits (only big requests' work left):
# fewer, larger forwards at saturation (a forward's fixed cost is about 2.5 ms on CPU with the demo model,
# 12% of a 1,024-token slice). A small request that arrives then waits for at most one such forward, so
# it stays at 2: measured with bench_serve_mixed.py (single-block runs, docs/serving.md), 4 slices
# brought device tokens/s to 0.98x the round scheduler's but the small p99 at 80% from 79 to 101 ms.
BIG_SLICES_PER_FORWARD = 2

# Tokens of one request per forward when --request-tokens-per-forward is not given, by device kind.
# CPU: a small request can wait behind one slice of a big one; measured with bench_serve_mixed.py
# (2-core CPU, the cpu backend, demo model, big requests of 60 x ~375 tokens), 1,024 tokens gave the
# lowest small-request p99 at 80% load without raising the big requests' latency (512: the same p99,
# 3x the big p50; 2,048: 2x the small p99); docs/serving.md has the figures. CUDA: a bigger forward
# keeps the GPU busy (not measured on a GPU yet).
DEFAULT_SLICE_TOKENS = {"cpu": 1024, "cuda": 4096}


@dataclass
class Tokenize:
    """One piece of tokenizing of each job, in order."""
    jobs: list


@dataclass
class Forward:
    """One packed forward: [(job, its next slice)], all of one engine."""
    slices: list

    @property
    def jobs(self) -> list:
        return list(dict.fromkeys(job for job, _ in self.slices))


def _ready(jobs) -> list:
    return [j for j in jobs if not j.needs_tokenizing]


def _smallest_pieces(jobs, budget: int | None, first=None) -> Tokenize:
    """`first` (a starving request, if given), then the jobs to tokenize with the least work, until about
    `budget` characters (a job's next piece is at most its size, at most about the budget)."""
    chosen, chars = ([first] if first is not None else []), 0  # a starving request's piece is on top
    for job in sorted((j for j in jobs if j.needs_tokenizing and j is not first),
                      key=lambda j: (j.work_left, j.arrived)):
        if chosen and budget is not None and chars + job.size_hint > budget:
            break
        chosen.append(job)
        chars += job.size_hint
    return Tokenize(chosen)


def _tokens(batch) -> int:
    return int(batch.token_ids.shape[0])


def _retry_alone(jobs) -> list:
    """A request re-planned after a failed forward runs alone, oldest first, whatever the policy."""
    retrying = [j for j in jobs if j.retrying is not None]
    if not retrying:
        return []
    job = min(retrying, key=lambda j: j.arrived)
    return [(job, job.slices[0])]


class _Policy:
    """What the policies share: `next_forward` runs a request re-planned after a failure alone, else the
    policy's own choice (`_choose_forward`)."""

    def next_forward(self, jobs, now: float) -> list:
        """jobs: tokenized ones. [(job, its next slice)]."""
        if not jobs:
            return []
        retry = _retry_alone(jobs)
        if retry:
            return retry
        return self._choose_forward(jobs)


class ShortestFirst(_Policy):
    """Shortest remaining work first, at step granularity.

    Each step is one of:
    - a piece of tokenizing, when the request with the least work left is not tokenized yet: the
      smallest such requests, one piece each, about tokenize_chars characters in all;
    - the requests that finish in this forward (their last slice), fewest tokens left first, as many as
      fit in the engine's max_tokens_per_batch: small requests share forwards, as with cross-request
      batching;
    - else one slice of the request with the least work left (a big request advances while nothing
      smaller waits); while no request needing at most one slice waits, up to BIG_SLICES_PER_FORWARD
      slices (that request's, then the next's), within max_tokens_per_batch: fewer, larger forwards when
      only big work is left, and a small request that arrives then waits for at most one such forward.
    The oldest request passed over for STARVATION_STEPS steps in a row gets the next step (its next
    piece, or one slice joining the forward), whatever its size, after at least one step by size since
    the last such forced step; and while the request with the least work left needs no more than one
    slice in all (a small request: a tokenizing step, then one forward), up to SMALL_STEPS_FIRST steps by
    size go first. So a small request that arrives waits for the step running then and its own two,
    not for a forced slice of someone else's between them; starving requests take at most every other
    step and at least one in SMALL_STEPS_FIRST + 1; a request re-planned after a failure runs alone.
    """

    name = "shortest-first"
    # Characters of request text the device thread tokenizes in one step (smallest requests first, at
    # least one request). Qwen's tokenizer takes about 0.25 ms per 1,000 characters of English on one
    # core; 16,000 characters (about 4-8 ms) stay under one 1,024-token slice's forward on CPU (about
    # 20 ms with the demo model), and the cost of tokenizing a request does not depend on the piece size.
    tokenize_chars = 16_000

    def __init__(self, slice_tokens: int | None = None, starvation_forwards: int = STARVATION_FORWARDS,
                 big_slices: int = BIG_SLICES_PER_FORWARD):
        self._slice_tokens, self.starvation_forwards = slice_tokens, starvation_forwards
        self.big_slices = big_slices
        # Steps by size since the last forced step (a starving request's): a forced step waits for at
        # least one (with several big requests starving at once they would otherwise take every step,
        # starving the rest), and for up to SMALL_STEPS_FIRST of a small request's.
        self._by_size_steps = 1

    def slice_tokens(self, engine) -> int:
        kind = "cuda" if str(engine.device).startswith("cuda") else "cpu"
        return min(self._slice_tokens or DEFAULT_SLICE_TOKENS[kind], engine.max_tokens_per_batch)

    def takes_new_work(self, active) -> bool:
        return True

    def _starving(self, jobs) -> list:
        starving = [j for j in jobs if j.passed_over >= self.starvation_forwards]
        return [min(starving, key=lambda j: j.arrived)] if starving else []

    def next_step(self, jobs, now: float) -> Tokenize | Forward | None:
        """jobs: every live job, tokenized or not."""
        if not jobs:
            return None
        ready = _ready(jobs)
        retry = _retry_alone(ready)
        if retry:
            return Forward(retry)
        smallest = min(jobs, key=lambda j: (j.work_left, j.arrived))
        small_waiting = self._needs_one_slice(smallest)
        small_first = small_waiting and self._by_size_steps < SMALL_STEPS_FIRST
        may_force = self._by_size_steps >= 1 and not small_first
        oldest = self._starving(jobs) if may_force else []
        first = oldest[0] if oldest else smallest
        if first.needs_tokenizing:  # the smallest requests' pieces share the step with a starving one's
            step = _smallest_pieces(jobs, self.tokenize_chars, first if oldest else None)
        else:
            step = Forward(self._forward(ready, oldest, only_big=not small_waiting))
        self._by_size_steps = 0 if oldest else self._by_size_steps + 1
        return step

    def _choose_forward(self, jobs) -> list:
        smallest = min(jobs, key=lambda j: (j.work_left, j.arrived))
        return self._forward(jobs, self._starving(jobs), only_big=not self._needs_one_slice(smallest))

    def _needs_one_slice(self, job) -> bool:
        """A small request: at most one slice of work in all (for the smallest job waiting: there is a small
        request to keep forwards short for)."""
        return job.work_left <= self.slice_tokens(job.engine)

    def _forward(self, jobs, oldest: list, only_big: bool = False) -> list:
        """The starving request (`oldest`, if any) with one slice, then the finishing ones; else one slice
        of the request with the least work left, or with `only_big` (nothing needing at most one slice
        waits) up to `big_slices` slices, least work left first."""
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
            if only_big and self.big_slices > 1 and not oldest:
                return self._big_slices(jobs, engine, budget)
            chosen = [first]
        return [(job, job.slices[0]) for job in chosen]

    def _big_slices(self, jobs, engine, budget: int) -> list:
        """Up to `big_slices` slices within the token budget: the request with the least work left first,
        then the next."""
        out, tokens = [], 0
        for job in sorted((j for j in jobs if j.engine is engine), key=lambda j: (j.remaining, j.arrived)):
            for batch in job.slices:
                t = _tokens(batch)
                if out and (tokens + t > budget or len(out) >= self.big_slices):
                    return out
                out.append((job, batch))
                tokens += t
        return out


class Rounds(_Policy):
    """The round scheduler, to measure `ShortestFirst` against: queued requests are tokenized whole,
    taken in arrival order up to one forward's token budget (at least one request), planned into
    full-budget forwards, and the round runs to its end before anything newly queued is looked at (a
    small request waits for all of a big one's forwards)."""

    name = "rounds"
    tokenize_chars = None  # everything queued is tokenized between two rounds

    def __init__(self):
        self._round: list = []

    def slice_tokens(self, engine) -> int:
        return engine.max_tokens_per_batch

    def _current(self, jobs) -> list:
        return [j for j in self._round if j in jobs and j.slices]

    def takes_new_work(self, active) -> bool:
        return not self._current(active)

    def next_step(self, jobs, now: float) -> Tokenize | Forward | None:
        if not jobs:
            return None
        ready = _ready(jobs)
        if not _retry_alone(ready) and not self._current(ready) and len(ready) < len(jobs):
            return _smallest_pieces(jobs, None)  # between two rounds: everything queued
        chosen = self.next_forward(ready, now)
        return Forward(chosen) if chosen else None

    def _choose_forward(self, jobs) -> list:
        self._round = self._current(jobs)
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
