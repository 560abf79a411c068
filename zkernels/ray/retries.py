"""A batch that kills its actor every time (the host runs out of memory on it, native code crashes) is
tried a few times, then the job stops with an error that says which batch it was.

Ray restarts a dead actor and resubmits its batch (max_restarts / max_task_retries), but the error it
raises when those run out names neither the batch nor its rows. So before scoring a batch, the actor
notes the batch in a small file named after its actor id, which survives a restart on the same node,
and removes the note when the batch is done (or fails with a Python error, which is not a crash). A
restarted actor that is handed the noted batch again knows it killed its predecessor; past the limit it
refuses the batch with BatchKeepsFailingError instead of dying once more.

The budget is per batch, and it is this guard's: Ray's max_restarts counts an actor's restarts over its
whole life, so a long job would fail with Ray's unnamed error after a few crashes on unrelated batches.
So the actor may restart without limit (max_restarts=-1), and Ray's per-task limit, max_task_retries,
is set one above max_retries: the actor gets to refuse the batch by name, and Ray's limit stays the
backstop for an actor restarted on another node (where there is no note).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import tempfile
from pathlib import Path

DEFAULT_MAX_RETRIES = 3
UNLIMITED = -1  # Ray's "no limit"


class BatchKeepsFailingError(RuntimeError):
    """A batch killed its actor's process more often than max_retries allows."""


def check_max_retries(max_retries: int) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
    return max_retries


def ray_limits(max_retries: int, max_restarts: int | None, max_task_retries: int | None) -> tuple[int, int]:
    """(max_restarts, max_task_retries) for Ray: as given, else -1 (restarts without limit: the budget is
    per batch, see the module's docstring) and one more than max_retries (so that the actor is handed
    the batch once more and refuses it by name)."""
    for name, value in (("max_restarts", max_restarts), ("max_task_retries", max_task_retries)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            raise ValueError(f"{name} must be an int >= -1 (-1: no limit) or None, got {value!r}")
    per_batch = check_max_retries(max_retries) + 1
    return (UNLIMITED if max_restarts is None else max_restarts,
            per_batch if max_task_retries is None else max_task_retries)


def batch_key(cells: dict[str, list]) -> str:
    """A digest of a batch's text cells: the same batch handed over again has the same key."""
    digest = hashlib.blake2b(digest_size=16)
    for name, values in cells.items():
        digest.update(name.encode() + b"\0")
        for v in values:
            digest.update(v.encode("utf-8", "surrogatepass") + b"\0" if isinstance(v, str) else b"\1")
    return digest.hexdigest()


def batch_summary(cells: dict[str, list]) -> str:
    """"128 rows; its longest document has 1,234,567 characters (row 17 of the batch, starting 'Lorem')"."""
    rows = len(next(iter(cells.values()), []))
    longest = max(((len(v), -i, name) for name, values in cells.items() for i, v in enumerate(values)
                   if isinstance(v, str)), default=None)
    if longest is None:
        return f"{rows} rows"
    chars, row, name = longest[0], -longest[1], longest[2]
    start = " ".join(cells[name][row][:60].split())  # one line, whatever the text's whitespace
    return f"{rows} rows; its longest {name} has {chars:,} characters (row {row} of the batch, starting {start!r})"


def _actor_id() -> str | None:
    """This process's Ray actor id (the same across the actor's restarts), or None outside an actor."""
    if "ray" not in sys.modules:  # never import ray here: the predictors also run without it
        return None
    ray = sys.modules["ray"]
    try:
        return ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    except Exception:  # an older Ray without the call: no guard, Ray's limits still apply
        return None


class CrashGuard:
    """Counts how often the same batch was in flight when this actor's process died (see the module's
    docstring). Inactive outside a Ray actor, or with max_retries=None."""

    def __init__(self, max_retries: int | None):
        self.max_retries, self.path, self.previous = max_retries, None, None
        actor = _actor_id() if max_retries is not None else None
        if actor is None:
            return
        self.path = Path(tempfile.gettempdir()) / f"zkernels-batch-in-flight-{actor}.json"
        try:  # the batch the previous process of this actor died on, if it died
            self.previous = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.previous = None

    @contextlib.contextmanager
    def watch(self, cells: dict[str, list]):
        if self.path is None:
            yield
            return
        key = batch_key(cells)
        deaths = self.previous["deaths"] + 1 if (self.previous or {}).get("key") == key else 0
        if deaths > self.max_retries:
            self.path.unlink(missing_ok=True)
            times = f"{deaths} time{'s' * (deaths > 1)}"
            raise BatchKeepsFailingError(
                f"a batch of {batch_summary(cells)} killed its actor's process {times} (out of memory, or a crash in "
                f"native code); it is not tried again after max_retries={self.max_retries}. Lower batch_size or "
                f"max_tokens_per_batch, or remove that row")
        self.path.write_text(json.dumps({"key": key, "deaths": deaths}))
        try:
            yield
        finally:  # done, or a Python error (not a crash: Ray reports it, no retry)
            self.path.unlink(missing_ok=True)
