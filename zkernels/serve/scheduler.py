"""The batching model worker: many HTTP requests, few forwards.

Requests arrive already tokenized as `Job`s in a bounded queue. The worker takes everything queued (up to
one token budget), gives every request's groups their own keys (so different requests' queries are
separate prefix groups), and runs the combined prompt list through `ScoringEngine.iter_batches` on the
device's thread. Each packed batch's hidden rows go through the job's head and back to the job they
belong to; a job is resolved as soon as its last row is in, so a small request does not wait for the
whole round. A round whose forward raises fails nothing outright: its unfinished jobs are retried once,
each alone and in smaller batches, and only a job that fails again gets the error.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch

from ..scoring import gather_rows
from .metrics import Metrics


class QueueFull(Exception):
    """The model's queue holds --max-queue requests already."""


class ForwardFailed(Exception):
    """The forward raised for this request, also when retried alone in smaller batches."""


@dataclass(eq=False)
class Job:
    prompts: list[list[int]]
    groups: list[int]                 # request-local prefix groups
    head_key: Hashable                # which head turns hidden rows into this job's outputs
    future: asyncio.Future
    n_tokens: int = 0
    started: bool = False
    parts: list = field(default_factory=list)  # [(local index list, rows)] collected so far
    n_done: int = 0

    def __post_init__(self):
        self.n_tokens = sum(len(p) for p in self.prompts)


class ModelWorker:
    """One served model's queue and the coroutine that drains it into forwards.

    heads(head_key) -> callable(hidden [R, H]) -> float32 rows [R, ...] (runs on the device thread).
    device_thread: a one-thread executor shared by every model on the same device, so forwards on one
    device never run at the same time.
    """

    def __init__(self, name: str, engine, heads: Callable[[Hashable], Callable[[torch.Tensor], torch.Tensor]],
                 device_thread: concurrent.futures.ThreadPoolExecutor, max_queue: int, metrics: Metrics):
        self.name, self.engine, self.heads = name, engine, heads
        self.device_thread, self.max_queue, self.metrics = device_thread, max_queue, metrics
        # A round (the requests packed into one iter_batches call) takes up to one forward's token budget.
        self.max_round_tokens = engine.max_tokens_per_batch
        self._queue: collections.deque[Job] = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- the request side -------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"zkernels-worker-{self.name}")

    def submit(self, prompts: Sequence[Sequence[int]], groups: Sequence[int], head_key: Hashable = None) -> Job:
        """Queues a request's prompts; raises QueueFull when max_queue requests wait already."""
        if self._closing:
            raise QueueFull("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the {self.name} queue is full ({self.max_queue} requests waiting)")
        job = Job([list(p) for p in prompts], list(groups), head_key, self._loop.create_future())
        self._queue.append(job)
        self.metrics.queue_depth.set(len(self._queue), model=self.name)
        self._wake.set()
        return job

    def discard(self, job: Job) -> bool:
        """Takes a job the client no longer waits for out of the queue; False if the worker has it already."""
        try:
            self._queue.remove(job)
        except ValueError:
            return False
        self.metrics.queue_depth.set(len(self._queue), model=self.name)
        return True

    async def close(self) -> None:
        """Finishes everything queued, then stops."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    # ---- the worker side ---------------------------------------------------------------------------
    def _take_round(self) -> list[Job]:
        """Everything queued up to the token budget (at least one job); cancelled jobs are dropped here,
        before any work is spent on them."""
        jobs, tokens = [], 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # timed out or client gone while queued
                self._queue.popleft()
                continue
            if jobs and tokens + job.n_tokens > self.max_round_tokens:
                break
            self._queue.popleft()
            job.started = True
            jobs.append(job)
            tokens += job.n_tokens
        self.metrics.queue_depth.set(len(self._queue), model=self.name)
        return jobs

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take_round()
            if not jobs:
                continue
            try:
                await self._loop.run_in_executor(self.device_thread, self._run_round, jobs)
            except Exception as e:  # a bug in the round itself: fail its jobs, keep serving
                for job in jobs:
                    self._resolve(job, exc=ForwardFailed(f"{type(e).__name__}: {e}"))

    def _run_round(self, jobs: list[Job]) -> None:
        """Device thread: one combined iteration over every job's prompts."""
        self.metrics.rounds.inc(model=self.name)
        try:
            self._iterate(jobs, batch_size=None)
        except Exception as first:
            unfinished = [j for j in jobs if j.n_done < len(j.prompts) and not j.future.done()]
            self.metrics.forward_failures.inc(len(unfinished), model=self.name)
            if torch.cuda.is_available() and str(self.engine.device).startswith("cuda"):
                torch.cuda.empty_cache()  # after an out-of-memory error, give the retry the cached blocks back
            for job in unfinished:  # retried once, alone, in batches half the job's size
                job.parts, job.n_done = [], 0
                try:
                    self._iterate([job], batch_size=max(1, len(job.prompts) // 2))
                except Exception as again:
                    self._resolve(job, exc=ForwardFailed(
                        f"the forward failed ({type(first).__name__}: {first}); retried alone in smaller batches "
                        f"it failed again ({type(again).__name__}: {again})"))

    def _iterate(self, jobs: list[Job], batch_size: int | None) -> None:
        prompts, groups, owner = [], [], []  # owner[i] = (job, local index) of combined prompt i
        group_keys: dict[tuple[int, int], int] = {}
        for j, job in enumerate(jobs):
            for local, (p, g) in enumerate(zip(job.prompts, job.groups)):
                prompts.append(p)
                groups.append(group_keys.setdefault((j, g), len(group_keys)))
                owner.append((job, local))
        for index, hidden in self.engine.iter_batches(prompts, groups, batch_size=batch_size):
            by_job: dict[Job, list[int]] = {}
            for row, i in enumerate(index):
                by_job.setdefault(owner[i][0], []).append(row)
            keys = {job.head_key for job in by_job}
            if len(keys) == 1:  # one head: it runs on the whole canonical batch, as a direct call does
                outputs = {next(iter(keys)): (None, self.heads(next(iter(keys)))(hidden).cpu())}
            else:
                outputs = {}
                for key in keys:
                    rows = [r for job, rs in by_job.items() if job.head_key == key for r in rs]
                    sel = torch.tensor(rows, dtype=torch.long, device=hidden.device)
                    outputs[key] = ({r: k for k, r in enumerate(rows)}, self.heads(key)(hidden[sel]).cpu())
            n_tokens = sum(len(prompts[i]) for i in index)
            self.metrics.forwards.inc(model=self.name)
            self.metrics.batch_prompts.observe(len(index), model=self.name)
            self.metrics.batch_tokens.observe(n_tokens, model=self.name)
            self.metrics.tokens.inc(n_tokens, model=self.name)
            for job, rows in by_job.items():
                where, out = outputs[job.head_key]
                sel = rows if where is None else [where[r] for r in rows]
                job.parts.append(([owner[index[r]][1] for r in rows], out[torch.tensor(sel, dtype=torch.long)]))
                job.n_done += len(rows)
                if job.n_done == len(job.prompts):
                    self._resolve(job, result=gather_rows(job.parts, len(job.prompts)))

    def _resolve(self, job: Job, result=None, exc: BaseException | None = None) -> None:
        def settle():
            if not job.future.done():
                job.future.set_exception(exc) if exc is not None else job.future.set_result(result)
        self._loop.call_soon_threadsafe(settle)
