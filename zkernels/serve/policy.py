"""Which work the device thread does next: the scheduling policies of `DeviceScheduler`.

A step is a piece of tokenizing (`Tokenize`: one piece of text of each of its jobs, about
`tokenize_chars` characters in all), a packed forward (`Forward`: slices of jobs of one engine), or, for
a forward that runs in pieces (`Forward.in_pieces`, on CPU), one piece of it: a few ops of one layer
(`Qwen3Forward.hidden_pieces`). `ShortestFirst` (the default) keeps a small request from waiting behind a
big one: the request with the least work left goes first (tokenized or not: before tokenizing its work
is estimated from its characters), small requests (at most one slice of work in all) share forwards
that run in one go, big requests' work runs in forwards of several slices in pieces, and between two
pieces the small requests that arrived meanwhile are tokenized and run. So a newcomer waits for at most
about one piece, one piece of tokenizing or one small forward, whichever runs, while big requests get
forwards as large as the round scheduler's. One starvation rule covers everything waiting: the request
passed over for STARVATION_STEPS steps in a row gets the next step. Measured in
benchmarks/bench_serve_mixed.py against `Rounds` (the round scheduler, `--scheduler rounds`); the
figures are in docs/serving.md.

A policy answers: the slice size a job is planned with (`slice_tokens`), the piece of text tokenized per
step (`tokenize_chars`, None: a request's whole text), and the next step (`next_step`, given the forward
in pieces that is paused, if any). `next_forward` is the forward part alone, over jobs that are tokenized.
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
# Slices one forward takes while only big requests' work waits. On CPU: one slice per layer of the model
# (within max_tokens_per_batch), run in pieces, 4 per layer: a piece costs about a quarter of a slice's
# forward, and a small request that arrives runs between two pieces (`between_pieces`), so big requests
# get forwards as large as the round scheduler's while a small one waits for less than a slice.
# Measured with bench_serve_mixed.py (docs/serving.md): without pieces, 2 slices per forward gave device
# tokens/s 0.90x the round scheduler's, 4 slices 0.98x but the small p99 at 80% from 79 to 101 ms. On
# CUDA the host queues kernels ahead of the GPU, so pieces would not bound a newcomer's wait: forwards run
# in one go there, BIG_SLICES_PER_FORWARD slices while only big work waits.
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


@dataclass(eq=False)
class Forward:
    """One packed forward: [(job, its next slice)], all of one engine. `in_pieces`: it runs one piece per
    step (a few ops of one layer), and between two of them (while it is `paused`) the policy may choose
    other steps."""
    slices: list
    in_pieces: bool = False

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


def _next_slices_within(jobs, budget: int) -> list:
    """[(job, its next slice)] for the jobs in the order given, skipping those that would pass `budget`
    tokens in all (the first is always taken)."""
    chosen, tokens = [], 0
    for job in jobs:
        t = _tokens(job.slices[0])
        if chosen and tokens + t > budget:
            continue
        chosen.append((job, job.slices[0]))
        tokens += t
    return chosen


def _on_cuda(engine) -> bool:
    return str(engine.device).startswith("cuda")


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
    - the small requests that finish in this forward (their last slice), fewest tokens left first, as
      many as fit in the engine's max_tokens_per_batch: small requests share forwards (on CUDA big
      requests' last slices too), in one go;
    - else big work: up to `big_forward_slices` slices (the request with the least work left, then the
      next), within max_tokens_per_batch, in pieces on CPU;
    - while such a forward is paused between two pieces: a forward of the small requests tokenized, else
      their tokenizing (up to SMALL_STEPS_FIRST tokenizing steps in a pause), else its next piece
      (`between_pieces`).
    The request passed over for STARVATION_STEPS steps in a row (the longest passed over, then the
    oldest) gets the next step (its next piece of tokenizing, or a forward of one slice of it: on CPU in
    pieces, on CUDA joined by the finishing requests), whatever its size, after at least one step by
    size since the last such forced step; and while the request with the least work left is small (a
    tokenizing step, then one forward), up to SMALL_STEPS_FIRST steps by size go first. So a small
    request that arrives waits for the step running then (a piece, a piece of tokenizing, or another
    small forward) and its own two; starving requests take at most every other step outside a paused
    forward; a forward in pieces advances at least one piece in 2 * SMALL_STEPS_FIRST + 1 steps; a request
    re-planned after a failure runs alone.
    """

    name = "shortest-first"
    # Characters of request text the device thread tokenizes in one step (smallest requests first, at
    # least one request). Qwen's tokenizer takes about 0.25 ms per 1,000 characters of English on one
    # core; 16,000 characters (about 4-8 ms) stay under one 1,024-token slice's forward on CPU (about
    # 20 ms with the demo model), and the cost of tokenizing a request does not depend on the piece size.
    tokenize_chars = 16_000

    def __init__(self, slice_tokens: int | None = None, starvation_forwards: int = STARVATION_FORWARDS,
                 big_slices: int | None = None):
        self._slice_tokens, self.starvation_forwards = slice_tokens, starvation_forwards
        self._big_slices_given = big_slices
        self._steps_in_pause = 0  # steps run since the paused forward's last piece
        # Steps by size since the last forced step (a starving request's): a forced step waits for at
        # least one (with several big requests starving at once they would otherwise take every step,
        # starving the rest), and for up to SMALL_STEPS_FIRST of a small request's.
        self._by_size_steps = 1

    def slice_tokens(self, engine) -> int:
        kind = "cuda" if _on_cuda(engine) else "cpu"
        return min(self._slice_tokens or DEFAULT_SLICE_TOKENS[kind], engine.max_tokens_per_batch)

    def big_forward_slices(self, engine) -> int:
        """Slices of a forward taken while only big requests' work waits: on CPU one per layer of the model
        (in pieces), on CUDA BIG_SLICES_PER_FORWARD (see there)."""
        if self._big_slices_given is not None:
            return self._big_slices_given
        return BIG_SLICES_PER_FORWARD if _on_cuda(engine) else engine.config.num_layers

    def in_pieces(self, engine, slices) -> bool:
        """Whether a forward of these (job, slice) runs in pieces: on CPU, one of big requests' work (one
        whose work is small runs in one go: the requests in it finish with it)."""
        return not _on_cuda(engine) and not any(self._small(job) for job, _ in slices)

    def takes_new_work(self, active) -> bool:
        return True

    def _starving(self, jobs) -> list:
        starving = [j for j in jobs if j.passed_over >= self.starvation_forwards]
        # the one passed over longest (then the oldest): while a forward in pieces runs, every big request
        # outside it becomes starving, and oldest-first alone would then serve the two oldest in turn
        return [max(starving, key=lambda j: (j.passed_over, -j.arrived))] if starving else []

    def next_step(self, jobs, now: float, paused: Forward | None = None) -> Tokenize | Forward | None:
        """jobs: every live job, tokenized or not. `paused`: a forward in pieces that has run some of them
        (returned: its next piece)."""
        if paused is not None:
            return self.between_pieces(jobs, paused)
        if not jobs:
            return None
        ready = _ready(jobs)
        retry = _retry_alone(ready)
        if retry:
            return Forward(retry)
        smallest = min(jobs, key=lambda j: (j.work_left, j.arrived))
        small_waiting = self._small(smallest)
        small_first = small_waiting and self._by_size_steps < SMALL_STEPS_FIRST
        may_force = self._by_size_steps >= 1 and not small_first
        oldest = self._starving(jobs) if may_force else []
        first = oldest[0] if oldest else smallest
        if first.needs_tokenizing:  # the smallest requests' pieces share the step with a starving one's
            step = _smallest_pieces(jobs, self.tokenize_chars, first if oldest else None)
        else:
            step = self._forward(ready, oldest, only_big=not small_waiting)
        self._by_size_steps = 0 if oldest else self._by_size_steps + 1
        return step

    def between_pieces(self, jobs, paused: Forward) -> Tokenize | Forward:
        """While a forward in pieces is paused between two: first a forward of the small requests that are
        tokenized (one step from done: as many as fit, fewest tokens first), then the small requests'
        tokenizing (smallest first), up to SMALL_STEPS_FIRST tokenizing steps in a pause; else `paused`
        (its next piece). So a small request that arrives waits for the piece running then and its own
        two steps, never for a piece between them, and the forward advances at least one piece in
        2 * SMALL_STEPS_FIRST + 1 steps however many small requests come (each tokenizing step readies at
        most one forward's worth)."""
        in_paused = {id(j) for j in paused.jobs}
        small = [j for j in jobs if id(j) not in in_paused and j.retrying is None and self._small(j)]
        ready = _ready(small)
        if ready:
            engine = min(ready, key=lambda j: (j.remaining, j.arrived)).engine
            ready = sorted((j for j in ready if j.engine is engine), key=lambda j: (j.remaining, j.arrived))
            return Forward(_next_slices_within(ready, engine.max_tokens_per_batch))
        if small and self._steps_in_pause < SMALL_STEPS_FIRST:
            self._steps_in_pause += 1
            return _smallest_pieces(small, self.tokenize_chars)
        self._steps_in_pause = 0
        return paused

    def _choose_forward(self, jobs) -> list:
        smallest = min(jobs, key=lambda j: (j.work_left, j.arrived))
        return self._forward(jobs, self._starving(jobs), only_big=not self._small(smallest)).slices

    def _small(self, job) -> bool:
        """A small request: at most one slice of work in all (planned, or estimated before planning). Its
        work runs in forwards of small requests, in one go; a big request's (on CPU) in pieces."""
        return job.total_work <= self.slice_tokens(job.engine)

    def _forward(self, jobs, oldest: list, only_big: bool = False) -> Forward:
        """The starving request (`oldest`, if any) with one slice, then the finishing ones; else one slice
        of the request with the least work left, or with `only_big` (nothing needing at most one slice
        waits) a big forward (`big_forward_slices`), least work left first; in pieces per `in_pieces`."""
        first = oldest[0] if oldest else min(jobs, key=lambda j: (j.remaining, j.arrived))
        engine = first.engine
        budget = engine.max_tokens_per_batch
        pieces = not _on_cuda(engine)  # big requests' work in pieces, small ones' (finishing) in one go
        finishing = sorted((j for j in jobs if len(j.slices) == 1 and j.engine is engine and j not in oldest
                            and (not pieces or self._small(j))), key=lambda j: (j.remaining, j.arrived))
        if oldest and pieces and not self._small(oldest[0]):
            finishing = []  # its slice runs in pieces, the small requests between them
        slices = _next_slices_within(oldest + finishing, budget)
        if not slices and only_big:
            slices = self._big_slices(jobs, engine, budget, self.big_forward_slices(engine))
        elif not slices:
            slices = [(first, first.slices[0])]
        return Forward(slices, self.in_pieces(engine, slices))

    def _big_slices(self, jobs, engine, budget: int, n_slices: int) -> list:
        """Up to `n_slices` slices within the token budget: the request with the least work left first,
        then the next."""
        out, tokens = [], 0
        for job in sorted((j for j in jobs if j.engine is engine), key=lambda j: (j.remaining, j.arrived)):
            for batch in job.slices:
                t = _tokens(batch)
                if out and (tokens + t > budget or len(out) >= n_slices):
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

    def next_step(self, jobs, now: float, paused: Forward | None = None) -> Tokenize | Forward | None:
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
