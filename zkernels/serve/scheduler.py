"""The device scheduler: one thread per device does every step of the requests on that device, one step
at a time, and decides between two steps what the next one is.

A request becomes a `Job` (lifecycle.py: its states and the transitions between them, all made by
`DeviceScheduler.move`). A step is a piece of tokenizing, one packed forward, or one piece of a forward
that runs in pieces (on CPU, big requests' work: the thread keeps it paused between two pieces, and the
policy may choose other steps before its next one); which is the policy's choice (`policy.py`).
Tokenizing ends with `ScoringEngine.plan` cutting the job into slices (packed batches of at most
`slice_tokens` tokens; each query of the request its own prefix group, as `Reranker.predict` forms
them). A forward holds slices of one or several jobs of the same model (`ScoringEngine.run_batches`,
or `forward_pieces` for one in pieces); rows go through the job's head (per head key, on the rows of
every job with that key, padded so each row rounds alike) and back to the job; a job is answered as
soon as its last slice is in. Before each step the thread drops the jobs whose deadline passed; a client that
leaves drops its job at once (`cancel`, from the event loop).

Errors stay in their step: a forward that raises fails nothing outright (each of its jobs is re-planned
in smaller batches and run again alone; a job that fails again gets the error); an exception anywhere
else in a step (tokenizing, heads, gathering rows, metrics, finishing) fails that step's jobs with a
500 naming the point, and the thread goes on. Should the thread itself end, every job it holds fails,
and `on_ended` tells the server (which answers /health 503 and stops with a non-zero exit status).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import torch

from ..scoring import gather_rows
from .errors import CUT_AT_SHUTDOWN, SHUTTING_DOWN, ServeError, unavailable
from .lifecycle import (  # noqa: F401  (Admission, Job, Ticket: the names the server imports from here)
    ALLOWED,
    FINAL,
    WAITING,
    Admission,
    Dropped,
    ForwardFailed,
    Job,
    State,
    Ticket,
)
from .metrics import Metrics
from .policy import Forward, Tokenize

log = logging.getLogger("zkernels.serve")


class InPieces:
    """A forward being run: its step, the (job, slice) pairs it took, its pieces (ScoringEngine.forward_pieces)."""

    def __init__(self, step: Forward, chosen: list, pieces):
        self.step, self.chosen, self.pieces = step, chosen, pieces


class DeviceScheduler:
    """The thread that runs one device's steps. `policy` picks each step (see policy.py)."""

    def __init__(self, device: str, policy, metrics: Metrics, loop: asyncio.AbstractEventLoop, on_ended=None):
        self.device, self.policy, self.metrics, self.loop = device, policy, metrics, loop
        self.on_ended = on_ended            # called (from the thread) with the reason if the thread ends
        self.ended: str | None = None       # why the thread ended, when it did before close()
        self._cv = threading.Condition()
        self._jobs: list[Job] = []          # submitted, not final, in arrival order
        self._paused: InPieces | None = None  # a forward in pieces between two of them
        self._closing = False
        self._drain_deadline: float | None = None
        self._thread = threading.Thread(target=self._main, name=f"zkernels-{device}", daemon=True)

    # ---- transitions: the one place a job's state changes --------------------------------------------
    def move(self, job: Job, to: State, *, result=None, exc: BaseException | None = None,
             reason: str | None = None) -> bool:
        """job -> `to`, if allowed from its state (False: it is final already, e.g. dropped meanwhile).
        Leaving the waiting states gives the --max-queue place back; a final state settles the future
        (`result`, or `exc`; DROPPED: Dropped(reason) unless `exc`) and counts drops: `dropped` before any
        forward, `stopped` after."""
        with self._cv:
            before = job.state
            if to not in ALLOWED.get(before, ()):
                if before not in FINAL:
                    raise RuntimeError(f"a request cannot go from {before.value} to {to.value}")
                return False
            job.state = to
            self._cv.notify()
        if before in WAITING and to not in WAITING and job.ticket is not None:
            job.ticket.release()
        if to not in FINAL:
            return True
        job.pieces = None
        if to is State.DROPPED:
            started = before is State.RUNNING
            (self.metrics.stopped if started else self.metrics.dropped).inc(model=job.served.kind, reason=reason)
            exc = exc or Dropped(reason, started)
        self._settle(job, result, exc)
        return True

    def _settle(self, job: Job, result, exc) -> None:
        def settle():
            if not job.future.done():
                job.future.set_exception(exc) if exc is not None else job.future.set_result(result)
        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def fail(self, job: Job, message: str) -> None:
        """FAILED with a 500 that says what failed."""
        self.move(job, State.FAILED, exc=ServeError(500, message))

    # ---- the event loop's side (and the tokenizer threads') ------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """A QUEUED job (the device thread tokenizes it) or a READY one (a tokenizer thread did)."""
        with self._cv:
            if self.ended is not None:
                raise ServeError(503, f"the device thread ended ({self.ended}); the server is restarting")
            if self._closing or self._drain_deadline is not None:
                raise unavailable(SHUTTING_DOWN)
            if job.state in FINAL:
                return
            self._jobs.append(job)
            self._cv.notify()

    def cancel(self, job: Job, reason: str) -> bool:
        """The client no longer waits: the job is dropped now, whatever its state (a forward running its
        slice finishes, and its rows are thrown away). True when it was dropped here."""
        return self.move(job, State.DROPPED, reason=reason)

    def tokenize_whole(self, job: Job) -> bool:
        """A tokenizer thread: tokenizes and plans the job (QUEUED -> TOKENIZING -> READY) unless it was
        dropped, or its deadline passed, before (then drops it). False when it is not READY after."""
        if time.monotonic() > job.deadline:
            self.move(job, State.DROPPED, reason="timeout")
            return False
        if not self.move(job, State.TOKENIZING):
            return False
        with self._boundary([job], "tokenizing the request"):
            while not job.tokenize_piece(None):
                pass
            self._ready_or_fail(job)
        return job.state is State.READY

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
        try:
            self._loop()
        except BaseException as e:  # a bug outside every step's boundary: nothing can be served any more
            self.ended = f"{type(e).__name__}: {e}"
            log.critical("zkernels serve: the %s device thread ended: %s", self.device, self.ended, exc_info=e)
            with self._cv:
                jobs, self._jobs = self._jobs, []
            for job in jobs:
                with contextlib.suppress(Exception):
                    self.fail(job, f"the device thread ended: {self.ended}")
            if self.on_ended is not None:
                self.on_ended(self.ended)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._live() or self._closing):
                    self._cv.wait(self._wait_s())
                    if self._past_drain_deadline():
                        break
                if self._closing and not self._live():
                    return
                jobs = self._live()
            if self._past_drain_deadline():
                self._shut_out(jobs)
                continue
            now = time.monotonic()
            for job in jobs:
                if now > job.deadline:
                    self.move(job, State.DROPPED, reason="timeout")
            jobs = [j for j in jobs if j.state not in FINAL]
            paused = self._paused
            if paused is not None and all(job.state in FINAL for job, _ in paused.chosen):
                self._paused = paused = None  # every request of the paused forward was dropped: it stops here
            if not jobs:
                continue
            paused_step = paused.step if paused is not None else None
            try:
                step = self.policy.next_step(jobs, now, paused_step)
            except Exception as e:  # a bug in the policy: fail what it was choosing from, keep serving
                log.exception("zkernels serve: the scheduling policy raised")
                self._paused = None
                for job in jobs:
                    self.fail(job, f"scheduling failed: {type(e).__name__}: {e}")
                continue
            if step is None:
                continue
            kind = "tokenize" if isinstance(step, Tokenize) else "forward"
            started = time.perf_counter()
            with self._boundary(step.jobs, "the scheduler step"):
                self._count_passed_over(jobs, step, paused_step)
                if kind == "tokenize":
                    self._tokenize(step)
                elif step is paused_step:
                    self._next_piece(paused)
                else:
                    self._forward(step)
                model = step.jobs[0].served.kind
                self.metrics.steps.inc(model=model, kind=kind)
                self.metrics.step_seconds.inc(time.perf_counter() - started, model=model, kind=kind)

    def _live(self) -> list[Job]:
        """The jobs not final (called under the lock; final ones are forgotten here)."""
        self._jobs = [j for j in self._jobs if j.state not in FINAL]
        return list(self._jobs)

    @contextlib.contextmanager
    def _boundary(self, jobs, point: str):
        """An exception inside fails the jobs (those not final yet) with a 500 naming `point`; the
        scheduler goes on."""
        try:
            yield
        except Exception as e:
            if isinstance(e, ServeError):
                for job in jobs:
                    self.move(job, State.FAILED, exc=e)
                return
            log.exception("zkernels serve: %s failed", point)
            for job in jobs:
                self.fail(job, f"{point} failed: {type(e).__name__}: {e}")

    def _count_passed_over(self, jobs, step, paused=None) -> None:
        """A job the step takes no work of was passed over; the jobs of a paused forward are not (they are
        part way through their step)."""
        in_step = {id(job) for job in step.jobs} | ({id(job) for job in paused.jobs} if paused else set())
        for job in jobs:
            job.passed_over = 0 if id(job) in in_step else job.passed_over + 1

    def _wait_s(self) -> float | None:
        if self._drain_deadline is None:
            return None
        return max(0.0, self._drain_deadline - time.monotonic())

    def _past_drain_deadline(self) -> bool:
        return self._drain_deadline is not None and time.monotonic() >= self._drain_deadline

    def _shut_out(self, jobs) -> None:
        """The drain deadline passed: every job still here is answered 503."""
        with self._cv:
            self._closing = True
        for job in jobs:
            self.move(job, State.DROPPED, reason="shutdown", exc=unavailable(CUT_AT_SHUTDOWN))

    # ---- tokenizing ---------------------------------------------------------------------------------
    def _tokenize(self, step: Tokenize) -> None:
        """One piece of each job's work before READY (a piece of text, or planning; Job.tokenize_piece)."""
        for job in step.jobs:
            if not self.move(job, State.TOKENIZING):
                continue
            with self._boundary([job], "tokenizing the request"):
                if job.tokenize_piece(self.policy.tokenize_chars):
                    self._ready_or_fail(job)

    def _ready_or_fail(self, job: Job) -> None:
        if not job.slices:
            self.fail(job, "nothing to compute for this request")
        else:
            self.move(job, State.READY)

    # ---- forwards -----------------------------------------------------------------------------------
    def _forward(self, step: Forward) -> None:
        """One packed forward over the chosen slices, whole or (`in_pieces`) its first piece; their rows go
        through their heads to their jobs."""
        chosen = [(job, batch) for job, batch in step.slices if self.move(job, State.RUNNING)]
        if not chosen:
            return
        engine, batches = chosen[0][0].engine, [batch for _, batch in chosen]
        if step.in_pieces:
            self._paused = InPieces(step, chosen, engine.forward_pieces(batches))
            self._next_piece(self._paused)
            return
        try:
            hidden = engine.run_batches(batches)
        except Exception as e:
            self._failed(chosen, e)
            return
        self._finish(chosen, hidden)

    def _next_piece(self, forward: InPieces) -> None:
        """The paused forward's next piece; after its last (or a failure), it is no longer paused and its
        rows go to its jobs."""
        try:
            next(forward.pieces)
            return
        except StopIteration as done:
            self._paused = None
            hidden = done.value
        except Exception as e:
            self._paused = None
            self._failed(forward.chosen, e)
            return
        self._finish(forward.chosen, hidden)

    def _finish(self, chosen, hidden) -> None:
        jobs = list(dict.fromkeys(job for job, _ in chosen))
        with self._boundary(jobs, "applying the heads"):
            outputs = self._apply_heads(chosen, hidden)
            with self._boundary(jobs, "recording the forward's metrics"):
                self._record(chosen)
            for (job, batch), (index, rows) in zip(chosen, outputs):
                if job.state in FINAL:  # dropped while the forward ran
                    continue
                with self._boundary([job], "gathering the request's rows"):
                    if job.slices[0] is not batch:
                        raise RuntimeError("the policy must take a job's slices in order")
                    job.slices.popleft()
                    job.remaining -= int(batch.token_ids.shape[0])
                    job.parts.append((index, rows))
                    if not job.slices:
                        result = gather_rows(job.parts, job.plan.n_prompts)
                        self.move(job, State.DONE, result=result)

    def _record(self, chosen) -> None:
        n_prompts = sum(len(batch.prompt_index) for _, batch in chosen)
        n_tokens = sum(int(batch.token_ids.shape[0]) for _, batch in chosen)
        kind = chosen[0][0].served.kind
        self.metrics.forwards.inc(model=kind)
        self.metrics.batch_prompts.observe(n_prompts, model=kind)
        self.metrics.batch_tokens.observe(n_tokens, model=kind)
        self.metrics.tokens.inc(n_tokens, model=kind)

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
                first = job.retrying
                self.move(job, State.FAILED, exc=ForwardFailed(
                    f"the forward failed ({type(first).__name__}: {first}); retried alone in smaller batches it "
                    f"failed again ({type(error).__name__}: {error})"))
                continue
            job.retrying = error
            with self._boundary([job], f"re-planning after a failed forward ({type(error).__name__}: {error})"):
                job.plan_slices(batch_size=max(1, len(job.encoded.prompts) // 2))
