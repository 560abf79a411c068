"""The device scheduler: one thread per device runs every forward of the models on that device, one
packed forward at a time, and decides between two forwards what goes into the next.

A request becomes a `Job`: tokenized (here, between forwards, or beforehand in a tokenizer pool),
planned by `ScoringEngine.plan` into slices (packed batches of at most `slice_tokens` tokens; each
query of the request is its own prefix group, its shared prefix taken over all its documents, exactly
as `Reranker.predict` takes it), then run slice by slice. A forward holds slices of one or several
jobs of the same model (`ScoringEngine.run_batches`); which ones is the policy's choice
(`policy.py`). Between forwards the thread takes newly submitted jobs and drops the ones whose client
left or whose deadline passed, before any more work is spent on them.

Rows go through the job's head (per head key, on the rows of every job with that key, padded so each
row rounds alike) and back to the job; a job is answered as soon as its last slice is in. A forward
that raises fails nothing outright: each job in it is re-planned in smaller batches and run again
alone; only a job that fails again gets the error.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

from ..scoring import BatchPlan, gather_rows
from .errors import SHUTTING_DOWN, ServeError, unavailable
from .metrics import Metrics

log = logging.getLogger("zkernels.serve")


class ForwardFailed(Exception):
    """The forward raised for this request, also when retried alone in smaller batches."""


class Dropped(Exception):
    """The request was dropped before it finished: reason "timeout", "disconnected" or "shutdown"."""

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
    prepare: Callable                   # () -> Encoded: tokenizes the request (may raise ServeError)
    head_key: Hashable                  # which head turns hidden rows into this job's outputs
    deadline: float                     # time.monotonic() past which nothing more is done for it
    slice_tokens: int                   # the most tokens of this job one forward takes
    future: asyncio.Future
    ticket: Ticket | None = None
    size_hint: int = 0                  # characters of text, known before tokenizing
    arrived: float = field(default_factory=time.monotonic)
    cancelled: str | None = None        # set from the event loop: "timeout", "disconnected", "shutdown"
    started: bool = False               # a forward has taken some of its work
    # set by `prepare_now` (a tokenizer thread or the device thread):
    encoded: object = None              # Encoded: prompts, groups
    plan: BatchPlan | None = None
    slices: collections.deque = field(default_factory=collections.deque)
    remaining: int = 0                  # tokens in the slices still to run
    passed_over: int = 0                # forwards in a row that took none of its work (policy.py)
    retrying: BaseException | None = None  # the first failure, once re-planned to run alone
    parts: list = field(default_factory=list)  # [(caller index list, output rows)]
    n_done: int = 0

    @property
    def engine(self):
        return self.served.engine

    @property
    def n_tokens(self) -> int:
        return self.encoded.n_tokens if self.encoded is not None else 0

    def stop_reason(self, now: float) -> str | None:
        return self.cancelled or ("timeout" if now > self.deadline else None)

    def prepare_now(self, batch_size: int | None = None) -> None:
        """Tokenizes (once) and plans the job's slices."""
        if self.encoded is None:
            self.encoded = self.prepare()
        self.plan = self.engine.plan(self.encoded.prompts, self.encoded.groups, batch_size=batch_size,
                                     max_tokens=self.slice_tokens)
        self.slices = collections.deque(self.plan.batches)
        self.remaining = sum(int(b.token_ids.shape[0]) for b in self.slices)
        self.parts, self.n_done = [], 0


class DeviceScheduler:
    """The thread that runs one device's forwards. `policy` picks each forward (see policy.py)."""

    def __init__(self, device: str, policy, metrics: Metrics, loop: asyncio.AbstractEventLoop):
        self.device, self.policy, self.metrics, self.loop = device, policy, metrics, loop
        self._cv = threading.Condition()
        self._inbox: list[Job] = []
        self._active: list[Job] = []
        self._closing = False
        self._drain_deadline: float | None = None
        self._thread = threading.Thread(target=self._main, name=f"zkernels-{device}", daemon=True)

    # ---- the event loop's side --------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closing or self._drain_deadline is not None:
                raise unavailable(SHUTTING_DOWN)
            self._inbox.append(job)
            self._cv.notify()

    def cancel(self, job: Job, reason: str) -> bool:
        """Marks a job its client no longer waits for; the thread skips it at its next look. True when no
        forward had taken any of its work (then it counts as dropped here, at once)."""
        with self._cv:
            if job.cancelled is not None or job.future.done():
                return False
            job.cancelled = reason
            self._cv.notify()
            if not job.started:
                self.metrics.dropped.inc(model=job.served.kind, reason=reason)
                return True
            return False

    def drain_until(self, deadline: float) -> None:
        """No new jobs from now; jobs not finished by `deadline` are answered 503 and dropped."""
        with self._cv:
            self._drain_deadline = deadline
            self._cv.notify()

    def close(self, timeout_s: float | None = None) -> None:
        """Blocking: finishes the jobs it has (until the drain deadline, if one was set), then stops."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout_s)

    # ---- the device thread --------------------------------------------------------------------------
    def _main(self) -> None:
        while True:
            with self._cv:
                while not (self._inbox or self._active or self._closing):
                    self._cv.wait(self._wait_s())
                    if self._past_drain_deadline():
                        break
                if self._closing and not self._inbox and not self._active:
                    return
                past_drain_deadline = self._past_drain_deadline()
                new = []
                if not past_drain_deadline and self.policy.takes_new_work(self._active):
                    new, self._inbox = self._inbox, []
            if past_drain_deadline:
                self._shut_out()
                continue
            self._admit_new(new)
            self._drop_stopped()
            try:
                step = self.policy.next_forward(self._active, time.monotonic())
            except Exception as e:  # a bug in the policy: fail what it was choosing from, keep serving
                log.exception("zkernels serve: the scheduling policy raised")
                for job in list(self._active):
                    self._finish(job, exc=ForwardFailed(f"scheduling failed: {type(e).__name__}: {e}"))
                continue
            if step:
                self._forward(step)

    def _wait_s(self) -> float | None:
        if self._drain_deadline is None:
            return None
        return max(0.0, self._drain_deadline - time.monotonic())

    def _past_drain_deadline(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def _shut_out(self) -> None:
        """The drain deadline passed: every job still here is answered 503."""
        with self._cv:
            jobs, self._inbox = self._inbox + self._active, []
            self._active = []
            self._closing = True
        for job in jobs:
            if job.cancelled is None and not job.started:
                self.metrics.dropped.inc(model=job.served.kind, reason="shutdown")
            self._finish(job, exc=unavailable("the server shut down before this request finished "
                                              "(--shutdown-timeout-s); retry on another replica"))

    def _admit_new(self, new: list[Job]) -> None:
        """Smallest first; when tokenizing here, only about policy.tokenize_chars characters of text per
        step (at least one job): a big request's tokenizing is a step of its own, and small requests that
        arrived with it are tokenized, and run, before it. The rest go back to the front of the inbox."""
        budget = self.policy.tokenize_chars
        if budget is not None:
            new.sort(key=lambda j: 0 if j.plan is not None else j.size_hint)
        chars = 0
        for i, job in enumerate(new):
            if budget is not None and job.plan is None:
                if chars and chars + job.size_hint > budget:
                    with self._cv:
                        self._inbox[:0] = new[i:]
                    return
                chars += job.size_hint
            self._admit(job)

    def _admit(self, job: Job) -> None:
        """A newly submitted job: dropped if its client is gone or its deadline passed, else tokenized
        (unless a tokenizer thread did it) and planned, then handed to the policy."""
        if job.stop_reason(time.monotonic()) is not None:
            self._drop(job)
            return
        if job.plan is None:
            try:
                job.prepare_now()
            except ServeError as e:
                self._finish(job, exc=e)
                return
            except Exception as e:
                log.exception("zkernels serve: tokenizing a request failed")
                self._finish(job, exc=ServeError(500, f"tokenizing the request failed: {type(e).__name__}: {e}"))
                return
        if not job.slices:
            self._finish(job, exc=ServeError(500, "nothing to compute for this request"))
            return
        self._active.append(job)

    def _drop_stopped(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._active if j.stop_reason(now) is not None]:
            self._active.remove(job)
            self._drop(job)

    def _drop(self, job: Job) -> None:
        reason = job.stop_reason(time.monotonic())
        with self._cv:
            counted = job.cancelled is not None  # cancel() counted a drop already
            if job.cancelled is None:
                job.cancelled = reason
        if job.started:
            self.metrics.stopped.inc(model=job.served.kind, reason=reason)
        elif not counted:
            self.metrics.dropped.inc(model=job.served.kind, reason=reason)
        self._finish(job, exc=Dropped(reason, job.started))

    def _forward(self, step: list[tuple[Job, object]]) -> None:
        """One packed forward over the chosen slices; their rows go through their heads to their jobs."""
        engine = step[0][0].engine
        with self._cv:
            for job, _ in step:
                job.started = True
        for job, _ in step:
            if job.ticket is not None:
                job.ticket.release()
        try:
            hidden = engine.run_batches([batch for _, batch in step])
            outputs = self._apply_heads(step, hidden)
        except Exception as e:
            self._failed(step, e)
            return
        n_prompts = sum(len(batch.prompt_index) for _, batch in step)
        n_tokens = sum(int(batch.token_ids.shape[0]) for _, batch in step)
        kind = step[0][0].served.kind
        self.metrics.forwards.inc(model=kind)
        self.metrics.batch_prompts.observe(n_prompts, model=kind)
        self.metrics.batch_tokens.observe(n_tokens, model=kind)
        self.metrics.tokens.inc(n_tokens, model=kind)
        in_step = {id(job) for job, _ in step}
        for job in self._active:
            job.passed_over = 0 if id(job) in in_step else job.passed_over + 1
        for (job, batch), (index, rows) in zip(step, outputs):
            assert job.slices[0] is batch, "the policy must take a job's slices in order"
            job.slices.popleft()
            job.remaining -= int(batch.token_ids.shape[0])
            job.parts.append((index, rows))
            job.n_done += len(index)
            if not job.slices:
                self._active.remove(job)
                self._finish(job, result=gather_rows(job.parts, job.plan.n_prompts))

    def _apply_heads(self, step, hidden: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
        """Per step entry: (caller indices, head outputs on CPU). One head call per head key, on the rows
        of every entry with that key together."""
        expanded = [job.plan.rows(batch, h) for (job, batch), h in zip(step, hidden)]
        out: list = [None] * len(step)
        for key in dict.fromkeys(job.head_key for job, _ in step):
            which = [k for k, (job, _) in enumerate(step) if job.head_key == key]
            rows = torch.cat([expanded[k][1] for k in which]) if len(which) > 1 else expanded[which[0]][1]
            result = step[which[0]][0].served.head(key)(rows).cpu()
            for k, part in zip(which, result.split([expanded[k][1].shape[0] for k in which])):
                out[k] = (expanded[k][0], part)
        return out

    def _failed(self, step, error: Exception) -> None:
        """Each job of a failed forward runs again alone in smaller batches; a second failure is its error."""
        jobs = list(dict.fromkeys(job for job, _ in step))
        self.metrics.forward_failures.inc(len(jobs), model=jobs[0].served.kind)
        log.warning("zkernels serve: a forward of %d request(s) failed (%s: %s); retrying each alone",
                    len(jobs), type(error).__name__, error)
        if torch.cuda.is_available() and str(jobs[0].engine.device).startswith("cuda"):
            torch.cuda.empty_cache()  # after an out-of-memory error, give the retry the cached blocks back
        for job in jobs:
            if job.retrying is not None:
                self._active.remove(job)
                first = job.retrying
                self._finish(job, exc=ForwardFailed(
                    f"the forward failed ({type(first).__name__}: {first}); retried alone in smaller batches "
                    f"it failed again ({type(error).__name__}: {error})"))
                continue
            job.retrying = error
            try:  # the whole job again: its prefix groups must stay the ones Reranker.predict forms
                job.prepare_now(batch_size=max(1, len(job.encoded.prompts) // 2))
            except Exception as e:
                self._active.remove(job)
                self._finish(job, exc=ForwardFailed(f"{type(error).__name__}: {error}; re-planning: {e}"))

    def _finish(self, job: Job, result=None, exc: BaseException | None = None) -> None:
        if job.ticket is not None:
            job.ticket.release()

        def settle():
            if not job.future.done():
                job.future.set_exception(exc) if exc is not None else job.future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass
