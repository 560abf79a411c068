"""`EngineOptions`: how a model runs (device, dtype, kernel backend, token budget per forward, progress
bars, weight quantization), in one place. The CLI, the server and the Ray adapter build one and pass it
by keyword through `Reranker.from_pretrained` / `Embedder.from_pretrained` to `ScoringEngine`; every
default lives here.

None means "not given", in every field and in every loader argument that mirrors one: a setting given
both in `options=` and as an argument must agree, whatever its value (an explicit device="cpu" beside
options=EngineOptions(device="cuda") is an error, not a silent cuda).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

# Prompt tokens packed into one forward, by device kind. On CUDA a bigger forward keeps the GPU busy; on
# CPU a forward costs in proportion to its tokens, so a smaller one bounds memory and latency for free.
DEFAULT_TOKENS_PER_BATCH = {"cuda": 32_768, "cpu": 8_192}
DEFAULT_DEVICE = "cpu"
# Weight quantization modes: "none" (the model dtype throughout), "int8" (CPU: int8 weights, per-token uint8
# activations) and "fp8" (CUDA sm_89+: e4m3 weights and activations). See docs/quantization.md.
QUANTIZE_MODES = ("none", "int8", "fp8")
TOKENS_PER_BATCH_HELP = (f"prompt tokens packed into one forward (default: {DEFAULT_TOKENS_PER_BATCH['cpu']} on cpu, "
                         f"{DEFAULT_TOKENS_PER_BATCH['cuda']} on cuda)")


@dataclass(frozen=True)
class EngineOptions:
    """device: "cpu", "cuda" or "cuda:N" (None: DEFAULT_DEVICE, cpu). dtype: a torch dtype or its name
    (None: float32 on CPU, bfloat16 on CUDA). backend: a kernel backend name (None:
    zkernels.kernels.resolve_backend's default). max_tokens_per_batch: prompt tokens per forward (None:
    DEFAULT_TOKENS_PER_BATCH for the device). show_progress: progress bars while loading (None: when
    stderr is a terminal). quantize: one of QUANTIZE_MODES (None: what the checkpoint records, written by
    `zkernels quantize`, else "none"). A plain dataclass: a new setting is a new field whose None means
    "not given"."""
    device: str | None = None
    dtype: torch.dtype | str | None = None
    backend: str | None = None
    max_tokens_per_batch: int | None = None
    show_progress: bool | None = None
    quantize: str | None = None

    def __post_init__(self):
        if self.device is not None:
            self._normalise_device()
        n = self.max_tokens_per_batch
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"max_tokens_per_batch must be a positive int or None, got {n!r}")
        q = self.quantize
        if q is not None:
            if not isinstance(q, str) or q.lower() not in QUANTIZE_MODES:
                raise ValueError(f"quantize must be one of {QUANTIZE_MODES} or None, got {q!r}")
            object.__setattr__(self, "quantize", q.lower())
            check_quantize_device(self.quantize, self.resolved_device)

    def _normalise_device(self):
        try:
            device = str(torch.device(self.device))
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device {self.device!r} is not a torch device (cpu, cuda or cuda:N): {e}") from None
        object.__setattr__(self, "device", device)

    @property
    def resolved_device(self) -> str:
        """The device a model loads on: the one given, else DEFAULT_DEVICE."""
        return self.device or DEFAULT_DEVICE

    @property
    def device_kind(self) -> str:
        return "cuda" if self.resolved_device.startswith("cuda") else "cpu"

    @property
    def tokens_per_batch(self) -> int:
        """The token budget per forward: the one asked for, else the device's default."""
        return self.max_tokens_per_batch or DEFAULT_TOKENS_PER_BATCH[self.device_kind]

    def replace(self, **changes) -> EngineOptions:
        return dataclasses.replace(self, **changes)


def given_settings(options: EngineOptions) -> dict:
    """The fields of `options` that were given (not None)."""
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return {k: v for k, v in values.items() if v is not None}


def agrees(set_value, given_value) -> bool:
    """Whether a value given beside an options field leaves it as it is: the field is not set (None), or
    holds the same setting (a torch dtype and its name are one setting)."""
    if set_value is None:
        return True
    return _setting(set_value) == _setting(given_value)


def _setting(value):
    return str(value).removeprefix("torch.") if isinstance(value, (torch.dtype, str)) else value


def check_quantize_device(quantize: str | None, device: str) -> None:
    """int8 runs on CPU devices, fp8 on CUDA ones: the other pairing is an error before anything loads."""
    on_cuda = str(device).startswith("cuda")
    if quantize == "fp8" and not on_cuda:
        raise ValueError(f"quantize='fp8' runs on CUDA devices (sm_89 or newer), not {device!r}; on a CPU use "
                         f"quantize='int8'")
    if quantize == "int8" and on_cuda:
        raise ValueError(f"quantize='int8' runs on CPU devices, not {device!r}; on CUDA use quantize='fp8'")


def merge_options(options: EngineOptions | None, **given) -> EngineOptions:
    """`options` (or the defaults) with the keyword arguments a loader was also given (device=, dtype=,
    backend=, max_tokens_per_batch=, show_progress=, quantize=; None: not given). The loaders keep those
    arguments for direct use; a setting given both ways must agree, so that neither silently wins: a
    contradiction is a ValueError naming the argument and the options."""
    if options is None:
        return EngineOptions(**{k: v for k, v in given.items() if v is not None})
    if not isinstance(options, EngineOptions):
        raise TypeError(f"options must be a zkernels.EngineOptions, got {type(options).__name__}")
    given = {k: v for k, v in given.items() if v is not None}
    # Compared after the same normalisation EngineOptions applies (torch.device("cpu") is "cpu").
    # (with options' device where none is given, so that a device-bound setting such as quantize='fp8'
    # beside options=EngineOptions(device="cuda") is checked against the device it will run on).
    probe = EngineOptions(**{"device": options.device, **given})
    normalised = {k: v for k, v in given_settings(probe).items() if k in given}
    clash = {k: given[k] for k, v in normalised.items() if not agrees(getattr(options, k), v)}
    if clash:
        raise ValueError(f"{', '.join(f'{k}={v!r}' for k, v in clash.items())} contradicts options={options!r}; "
                         f"give each setting once")
    unset = {k: v for k, v in normalised.items() if getattr(options, k) is None}
    return options.replace(**unset) if unset else options
