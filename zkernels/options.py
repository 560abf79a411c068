"""`EngineOptions`: how a model runs (device, dtype, kernel backend, token budget per forward, progress
bars), in one place. The CLI, the server and the Ray adapter build one and pass it by keyword through
`Reranker.from_pretrained` / `Embedder.from_pretrained` to `ScoringEngine`; every default lives here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

# Prompt tokens packed into one forward, by device kind. On CUDA a bigger forward keeps the GPU busy; on
# CPU a forward costs in proportion to its tokens, so a smaller one bounds memory and latency for free.
DEFAULT_TOKENS_PER_BATCH = {"cuda": 32_768, "cpu": 8_192}
TOKENS_PER_BATCH_HELP = (f"prompt tokens packed into one forward (default: {DEFAULT_TOKENS_PER_BATCH['cpu']} on cpu, "
                         f"{DEFAULT_TOKENS_PER_BATCH['cuda']} on cuda)")


@dataclass(frozen=True)
class EngineOptions:
    """device: "cpu", "cuda" or "cuda:N". dtype: a torch dtype or its name (None: float32 on CPU, bfloat16
    on CUDA). backend: a kernel backend name (None: zkernels.kernels.resolve_backend's default).
    max_tokens_per_batch: prompt tokens per forward (None: DEFAULT_TOKENS_PER_BATCH for the device).
    show_progress: progress bars while loading (None: when stderr is a terminal)."""
    device: str = "cpu"
    dtype: torch.dtype | str | None = None
    backend: str | None = None
    max_tokens_per_batch: int | None = None
    show_progress: bool | None = None

    def __post_init__(self):
        try:
            device = str(torch.device(self.device))
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r} is not a torch device (cpu, cuda or cuda:N): {e}") from None
        object.__setattr__(self, "device", device)
        n = self.max_tokens_per_batch
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"max_tokens_per_batch must be a positive int or None, got {n!r}")

    @property
    def device_kind(self) -> str:
        return "cuda" if self.device.startswith("cuda") else "cpu"

    @property
    def tokens_per_batch(self) -> int:
        """The token budget per forward: the one asked for, else the device's default."""
        return self.max_tokens_per_batch or DEFAULT_TOKENS_PER_BATCH[self.device_kind]

    def replace(self, **changes) -> EngineOptions:
        return dataclasses.replace(self, **changes)


def merge_options(options: EngineOptions | None, **given) -> EngineOptions:
    """`options` (or the defaults) with the keyword arguments a loader was also given (device=, dtype=,
    backend=, max_tokens_per_batch=, show_progress=). The loaders keep those arguments for direct use;
    with options= as well, a value set both ways must agree, so that neither silently wins (a value equal
    to the loader's default counts as not given)."""
    if options is None:
        return EngineOptions(**{k: v for k, v in given.items() if v is not None})
    if not isinstance(options, EngineOptions):
        raise TypeError(f"options must be a zkernels.EngineOptions, got {type(options).__name__}")
    defaults = EngineOptions()
    clash = {k: v for k, v in given.items()
             if v is not None and v != getattr(defaults, k) and v != getattr(options, k)}
    if clash:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in clash.items())} contradicts options={options!r}; "
                         f"give each setting once")
    return options
