"""Prometheus text exposition (format 0.0.4) for the server's counters, gauges and histograms.

Hand-written rather than a dependency: a few label sets, read by one scrape endpoint. Updates come from
the event loop and from the device thread, hence the lock.
"""
from __future__ import annotations

import math
import threading

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROMPT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    esc = lambda v: str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')  # noqa: E731
    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items())) + "}"


def _num(x: float) -> str:
    return "+Inf" if x == math.inf else repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, lock: threading.Lock):
        self.name, self.help, self._lock = name, help, lock
        self._values: dict[tuple, object] = {}

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0)

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(dict(k))} {_num(v)}" for k, v in sorted(self._values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help, lock, buckets):
        super().__init__(name, help, lock)
        self.buckets = tuple(buckets) + (math.inf,)

    def observe(self, value: float, **labels) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._values.get(key, ([0] * len(self.buckets), 0.0))
            counts = [c + (value <= b) for c, b in zip(counts, self.buckets)]
            self._values[key] = (counts, total + value)

    def count(self, **labels) -> int:
        entry = self._values.get(tuple(sorted(labels.items())))
        return entry[0][-1] if entry else 0

    def render(self) -> list[str]:
        lines = self.header()
        for key, (counts, total) in sorted(self._values.items()):
            labels = dict(key)
            for b, c in zip(self.buckets, counts):
                lines.append(f"{self.name}_bucket{_labels({**labels, 'le': _num(b)})} {c}")
            lines.append(f"{self.name}_sum{_labels(labels)} {_num(total)}")
            lines.append(f"{self.name}_count{_labels(labels)} {counts[-1]}")
        return lines


class Metrics:
    """Everything /metrics shows."""

    def __init__(self):
        lock = threading.Lock()
        self.requests = Counter("zkernels_requests_total", "HTTP requests answered, by route and status code", lock)
        self.latency = Histogram("zkernels_request_latency_seconds", "time from request received to response "
                                 "sent, by route", lock, LATENCY_BUCKETS)
        self.queue_depth = Gauge("zkernels_queue_depth", "admitted requests not running yet (reading, tokenizing "
                                 "or queued), by model; --max-queue bounds it", lock)
        self.forwards = Counter("zkernels_forwards_total", "packed forward batches run", lock)
        self.batch_prompts = Histogram("zkernels_batch_prompts", "prompts per forward batch", lock, PROMPT_BUCKETS)
        self.batch_tokens = Histogram("zkernels_batch_tokens", "prompt tokens per forward batch (before prefix "
                                      "sharing)", lock, TOKEN_BUCKETS)
        self.tokens = Counter("zkernels_tokens_total", "prompt tokens scored; rate() of it is tokens/s", lock)
        self.forward_failures = Counter("zkernels_forward_failures_total", "requests whose forward raised and "
                                        "were retried alone", lock)
        self.dropped = Counter("zkernels_dropped_total", "requests dropped before any forward (never tokenized "
                               "once gone), by reason: timeout, disconnected, shutdown", lock)
        self.stopped = Counter("zkernels_stopped_total", "requests stopped between forwards (deadline passed or "
                               "client gone), their remaining forwards skipped, by reason", lock)
        self.steps = Counter("zkernels_scheduler_steps_total", "device-thread steps, by model and kind: tokenize (a "
                             "piece of tokenizing) or forward", lock)
        self.step_seconds = Counter("zkernels_scheduler_step_seconds_total", "seconds the device thread spent in "
                                    "steps, by model and kind; rate() of it is the share of time busy", lock)
        self.started_at: float | None = None

    def render(self, uptime_s: float | None = None) -> str:
        metrics = [self.requests, self.latency, self.queue_depth, self.forwards, self.batch_prompts,
                   self.batch_tokens, self.tokens, self.forward_failures, self.dropped, self.stopped, self.steps,
                   self.step_seconds]
        lines = []
        for m in metrics:
            lines += m.render()
        if uptime_s:  # average throughput since start, for a human reading the page
            lines += ["# HELP zkernels_tokens_per_second prompt tokens scored per second since start, all models",
                      "# TYPE zkernels_tokens_per_second gauge",
                      f"zkernels_tokens_per_second {_num(sum(self.tokens._values.values()) / uptime_s)}"]
        return "\n".join(lines) + "\n"
