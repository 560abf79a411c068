"""A request's lifecycle on a device scheduler: its states, the transitions allowed between them, and
the `Job` that carries one request's work through them.

    QUEUED -> TOKENIZING -> READY -> RUNNING -> DONE
       \\            \\          \\        \\-> DROPPED | FAILED
        `------------`----------`--------> DROPPED | FAILED

QUEUED: submitted, nothing tokenized. TOKENIZING: some of its text tokenized (a piece per scheduler
step on the device thread, or all at once in a tokenizer thread). READY: tokenized and planned into
slices, no forward has taken any of them. RUNNING: a forward took some of its slices. DONE, DROPPED
(its client left, its deadline passed, the server shut down) and FAILED are final. A job's state is
one field, `state`, and only `DeviceScheduler.move` changes it (under the scheduler's lock): that is
where the future is settled, the --max-queue place given back and drops counted.
"""
from __future__ import annotations

import asyncio
import collections
import enum
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ..scoring import BatchPlan


class State(enum.Enum):
    QUEUED = "queued"
    TOKENIZING = "tokenizing"
    READY = "ready"
    RUNNING = "running"
    DONE = "done"
    DROPPED = "dropped"
    FAILED = "failed"


WAITING = frozenset({State.QUEUED, State.TOKENIZING, State.READY})  # hold a --max-queue place
FINAL = frozenset({State.DONE, State.DROPPED, State.FAILED})
NEEDS_TOKENIZING = frozenset({State.QUEUED, State.TOKENIZING})
ALLOWED = {
    State.QUEUED: {State.TOKENIZING, State.DROPPED, State.FAILED},
    State.TOKENIZING: {State.TOKENIZING, State.READY, State.DROPPED, State.FAILED},
    State.READY: {State.RUNNING, State.DROPPED, State.FAILED},
    State.RUNNING: {State.RUNNING, State.DONE, State.DROPPED, State.FAILED},
}

# Characters per token, to compare a request not tokenized yet with tokenized ones (English text with
# Qwen's vocabulary; only the order of requests depends on it).
CHARS_PER_TOKEN = 4


class ForwardFailed(Exception):
    """A step failed for this request (its forward, also when retried alone in smaller batches; or
    another point of the step: the message names it)."""


class Dropped(Exception):
    """The request was dropped before it finished: reason "timeout", "disconnected" or "shutdown";
    started: a forward had taken some of its work."""

    def __init__(self, reason: str, started: bool):
        super().__init__(reason)
        self.reason, self.started = reason, started


class Ticket:
    """A request's place among the model's admitted-but-not-running requests (`Admission`)."""

    def __init__(self, admission: Admission):
        self._admission, self._held = admission, True

    def release(self) -> None:
        """Idempotent; called when the request's first forward starts, or when the request ends."""
        with self._admission.lock:
            if self._held:
                self._held = False
                self._admission.waiting -= 1


class Admission:
    """Counts one model's admitted requests that are not running yet (reading their body, waiting to be
    tokenized, tokenizing, queued); `enter` refuses past the limit (--max-queue)."""

    def __init__(self, limit: int):
        self.limit, self.waiting, self.lock = limit, 0, threading.Lock()

    def enter(self) -> Ticket | None:
        with self.lock:
            if self.waiting >= self.limit:
                return None
            self.waiting += 1
        return Ticket(self)


@dataclass(eq=False)
class Job:
    served: object                      # ServedReranker | ServedEmbedder: .kind, .engine, .head(key)
    tokenize: Callable                  # (piece_chars, max_tokens) -> generator of pieces returning Encoded
    head_key: Hashable                  # which head turns hidden rows into this job's outputs
    deadline: float                     # time.monotonic() past which nothing more is done for it
    slice_tokens: int                   # the most tokens of this job one forward takes
    future: asyncio.Future
    ticket: Ticket | None = None
    size_hint: int = 0                  # characters of text, known before tokenizing
    max_tokens: int | None = None       # its prompts' tokens in all (--max-request-tokens)
    arrived: float = field(default_factory=time.monotonic)
    state: State = State.QUEUED
    passed_over: int = 0                # scheduler steps in a row that took none of its work (policy.py)
    retrying: BaseException | None = None  # the first failure, once re-planned to run alone
    pieces: object = None               # the tokenize generator, while TOKENIZING
    encoded: object = None              # Encoded: prompts, groups (READY on)
    plan: BatchPlan | None = None
    slices: collections.deque = field(default_factory=collections.deque)
    remaining: int = 0                  # tokens in the slices still to run
    planned: int = 0                    # tokens in all its slices, as planned
    parts: list = field(default_factory=list)  # [(caller index list, output rows)]

    @property
    def engine(self):
        return self.served.engine

    @property
    def n_tokens(self) -> int:
        return self.encoded.n_tokens if self.encoded is not None else 0

    @property
    def needs_tokenizing(self) -> bool:
        return self.state in NEEDS_TOKENIZING

    @property
    def work_left(self) -> int:
        """Tokens still to run; before planning, estimated from its characters."""
        return self.remaining if self.plan is not None else self.size_hint // CHARS_PER_TOKEN + 1

    @property
    def total_work(self) -> int:
        """Tokens of all its work, done or not; before planning, estimated from its characters."""
        return self.planned if self.plan is not None else self.work_left

    def tokenize_piece(self, piece_chars: int | None) -> bool:
        """Its next piece of work before READY: a piece of its text, or, once all of it is tokenized,
        planning its slices (a piece of its own when the request is bigger than one piece: planning a
        big request costs about as much as tokenizing a piece of it). True once planned."""
        if self.encoded is None:
            if self.pieces is None:
                self.pieces = self.tokenize(piece_chars, self.max_tokens)
            try:
                next(self.pieces)
                return False
            except StopIteration as done:
                self.pieces, self.encoded = None, done.value
            if piece_chars is not None and self.size_hint > piece_chars:
                return False
        self.plan_slices()
        return True

    def plan_slices(self, batch_size: int | None = None) -> None:
        """Plans its slices (again, after a failed forward: the whole job, its prefix groups unchanged)."""
        self.plan = self.engine.plan(self.encoded.prompts, self.encoded.groups, batch_size=batch_size,
                                     max_tokens=self.slice_tokens)
        self.slices = collections.deque(self.plan.batches)
        self.remaining = self.planned = sum(int(b.token_ids.shape[0]) for b in self.slices)
        self.parts = []


def already_tokenized(encoded):
    """A Job.tokenize for prompts tokenized beforehand (the warm-up's)."""
    def pieces(piece_chars, max_tokens):
        return encoded
        yield  # a generator that returns at once
    return pieces
