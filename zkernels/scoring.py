"""Shared machinery of every model in the package: a loaded Qwen3 forward plus the packed, prefix-cached
scheduling of many prompts through it. The reranker reads score rows at the last token; the embedder
reads the hidden state itself. Both go through `ScoringEngine.hidden_states`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .config import CheckpointError, Qwen3Config
from .kernels import resolve_backend
from .loading import load_qwen3_weights
from .model import Qwen3Forward
from .packing import plan_batches

DEFAULT_TOKENS_PER_BATCH = {"cuda": 32_768, "cpu": 8_192}


def resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(f"no tokenizer files (tokenizer.json / tokenizer_config.json) in {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise CheckpointError(f"could not load the tokenizer in {folder}: {type(e).__name__}: {e}") from None


class ScoringEngine:
    """A Qwen3 forward on one device, with the batching policy around it."""

    def __init__(self, source: Path | Mapping[str, torch.Tensor], config: Qwen3Config, score_token_ids: Sequence[int], device="cpu", dtype=None,
                 backend: str | None = None, max_tokens_per_batch: int | None = None,
                 show_progress: bool | None = None):
        device = str(torch.device(device))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA device")
        self.device = device
        self.dtype = resolve_dtype(dtype, device)
        self.config = config
        weights = load_qwen3_weights(source, self.config, score_token_ids, device, self.dtype, show_progress)
        self.forward = Qwen3Forward(self.config, weights, resolve_backend(backend, device))
        kind = "cuda" if device.startswith("cuda") else "cpu"
        self.max_tokens_per_batch = int(max_tokens_per_batch or DEFAULT_TOKENS_PER_BATCH[kind])
        if self.max_tokens_per_batch < 1:
            raise ValueError(f"max_tokens_per_batch must be positive, got {max_tokens_per_batch}")

    @property
    def backend(self) -> str:
        return self.forward.backend

    def hidden_states(self, prompts: Sequence[Sequence[int]], groups: Sequence[int] | None = None,
                      batch_size: int | None = None, show_progress_bar: bool | None = None,
                      use_prefix_cache: bool = True, desc: str = "Scoring", head=None) -> torch.Tensor:
        """Final-norm hidden state at the last token of every prompt: [n, hidden], model dtype, on device;
        or head(hidden states) [n, m] when a head is given.

        Identical prompts are computed once. Prompts with the same group share their common prefix. The
        head runs per packed batch, whose make-up is canonical, so its float rounding (a matmul's can
        depend on a row's place in the matrix) does not depend on the caller's input order.
        """
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} has no tokens")
        groups = list(groups) if groups is not None else [0] * len(prompts)
        unique: dict[tuple, int] = {}
        slot = [unique.setdefault((groups[i], tuple(p)), len(unique)) for i, p in enumerate(prompts)]
        u_prompts = [list(k[1]) for k in unique]
        u_groups = [k[0] for k in unique]
        batches = plan_batches(u_prompts, u_groups, self.max_tokens_per_batch, batch_size, use_prefix_cache)
        progress = _progress(len(u_prompts), show_progress_bar, len(batches), desc)
        out = None
        for batch in batches:
            rows = self.forward.hidden_at_read_rows(batch)
            if head is not None:
                rows = head(rows)
            if out is None:
                out = rows.new_empty((len(u_prompts), rows.shape[1]))
            out[torch.tensor(batch.prompt_index, device=self.device)] = rows
            if progress is not None:
                progress.update(len(batch.prompt_index))
        if progress is not None:
            progress.close()
        return out[torch.tensor(slot, dtype=torch.long, device=self.device)]


def _progress(total: int, show: bool | None, n_batches: int, desc: str):
    if show is False or (show is None and (n_batches < 2 or not sys.stderr.isatty())):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="prompt")
