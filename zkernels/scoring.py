"""`ScoringEngine`: a loaded Qwen3 forward on one device, and the packed, prefix-cached scheduling of many
prompts through it. It hands out canonical packed batches of final-norm hidden states; what a caller
makes of them (the reranker's score head, the embedder's pooling and projections, the server's and the
Ray adapter's routing of rows back to requests) is the caller's.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from .config import Qwen3Config
from .kernels import resolve_backend
from .loading import load_qwen3_weights, resolve_dtype
from .model import Qwen3Forward
from .options import EngineOptions, check_quantize_device
from .packing import PackedBatch, concat_batches, plan_batches
from .quantization import check_quantize_runs, layer_quantizer, read_recipe, resolve_quantize, weight_bytes


class ScoringEngine:
    """A Qwen3 forward on one device, with the batching policy around it."""

    def __init__(self, source: Path | Mapping[str, torch.Tensor], config: Qwen3Config,
                 score_token_ids: Sequence[int], *, options: EngineOptions = EngineOptions()):
        device = options.resolved_device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for, but torch sees no CUDA device")
        self.options = options
        self.device = device
        self.dtype = resolve_dtype(options.dtype, device)
        self.config = config
        recipe = read_recipe(source, config.hidden_size) if isinstance(source, Path) else None
        self.quantize = resolve_quantize(options.quantize, recipe)  # "none", "int8" or "fp8"
        check_quantize_device(self.quantize, device)
        check_quantize_runs(self.quantize, device)
        weights = load_qwen3_weights(source, self.config, score_token_ids, device, self.dtype, options.show_progress,
                                     prepare_layer=layer_quantizer(self.quantize, self.dtype, recipe))
        self.forward = Qwen3Forward(self.config, weights, resolve_backend(options.backend, device))
        self.max_tokens_per_batch = options.tokens_per_batch

    @property
    def backend(self) -> str:
        return self.forward.backend

    @property
    def weight_bytes(self) -> int:
        """Bytes the loaded weights take (quantized layers at their quantized size)."""
        return weight_bytes(self.forward.weights)

    @property
    def score_rows(self) -> torch.Tensor:
        """[m, hidden], model dtype, on device: the output-projection rows a score reads (LM-head rows of
        the score tokens, or a classifier's score.weight), in the order the loader was given them."""
        return self.forward.weights.score_rows

    def plan(self, prompts: Sequence[Sequence[int]], groups: Sequence | None = None, *,
             batch_size: int | None = None, use_prefix_cache: bool = True,
             max_tokens: int | None = None) -> BatchPlan:
        """The packed batches `iter_batches` runs for these prompts, planned but not run: duplicates
        removed, groups' shared prefixes found, canonical batches of at most `max_tokens` tokens (default:
        `max_tokens_per_batch`) and `batch_size` prompts. A scheduler that interleaves several callers'
        work runs the batches itself (`run_batches`), in whatever order and company it likes."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} has no tokens")
        groups = list(groups) if groups is not None else [0] * len(prompts)
        if len(groups) != len(prompts):
            raise ValueError(f"got {len(groups)} groups for {len(prompts)} prompts")
        unique: dict[tuple, int] = {}
        copies: list[list[int]] = []  # unique prompt -> caller indices
        for i, p in enumerate(prompts):
            u = unique.setdefault((groups[i], tuple(p)), len(unique))
            if u == len(copies):
                copies.append([])
            copies[u].append(i)
        keys = list(unique)
        group_ids: dict = {}
        u_groups = [group_ids.setdefault(k[0], len(group_ids)) for k in keys]
        batches = plan_batches([k[1] for k in keys], u_groups, max_tokens or self.max_tokens_per_batch, batch_size,
                               use_prefix_cache)
        return BatchPlan(batches, copies, len(prompts))

    def run_batches(self, batches: Sequence[PackedBatch]) -> list[torch.Tensor]:
        """Runs planned batches (from one plan or several) as ONE packed forward and returns each batch's
        final-norm hidden rows [R_unique, hidden] (model dtype, on the device), in the order given;
        `BatchPlan.rows` maps them to caller indices. A prompt's row is the same whatever shares the
        forward (see `iter_batches`)."""
        hidden = self.forward.hidden_at_read_rows(_merged(batches))       # [sum R_unique, hidden]
        return _split(hidden, batches)

    def forward_pieces(self, batches: Sequence[PackedBatch]):
        """run_batches as a generator of pieces (a few ops of one layer each, `Qwen3Forward.hidden_pieces`):
        the caller may run other work between two pieces; returns what run_batches returns."""
        hidden = yield from self.forward.hidden_pieces(_merged(batches))  # [sum R_unique, hidden]
        return _split(hidden, batches)

    def iter_batches(self, prompts: Sequence[Sequence[int]], groups: Sequence | None = None, *,
                     batch_size: int | None = None, use_prefix_cache: bool = True,
                     show_progress_bar: bool | None = False, desc: str = "Scoring"
                     ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Runs the prompts through the model and yields, one packed forward at a time,
        `(index, hidden)`: `hidden` [R, hidden] (model dtype, on the engine's device) is the final-norm
        hidden state at the last token of the prompts `prompts[index[r]]`.

        For the callers built on this (Reranker, Embedder, the server's scheduler, the Ray adapter):
        - Every caller index appears exactly once over the whole iteration; `gather_rows` puts the rows
          (or what a head made of them) back in caller order. Identical (group, prompt) pairs are
          computed once and their row repeated.
        - `groups` holds one hashable key per prompt (one per query); the prompts of a key share their
          longest common token prefix, computed once per batch. Give unrelated work distinct keys (the
          server keys by (request, query)), so what one caller sends never changes another's prefix.
        - Batches are formed in a canonical order under `max_tokens_per_batch` (and `batch_size` prompts),
          so the split into batches does not depend on the order of `prompts`.
        - On CPU in float32 a prompt's row does not depend on what else is in its batch (the forward pads
          the few shapes where CPU kernels round by batch size), so results are bit-identical however the
          work is batched. A head applied per batch should keep that property: see `pad_rows`.
        - Work starts at the first `next()`; a consumer may stop early, and the remaining batches are
          never computed.
        """
        plan = self.plan(prompts, groups, batch_size=batch_size, use_prefix_cache=use_prefix_cache)
        progress = _progress(len(plan.copies), show_progress_bar, len(plan.batches), desc)
        try:
            for batch in plan.batches:
                hidden = self.forward.hidden_at_read_rows(batch)           # [R_unique, hidden]
                if progress is not None:
                    progress.update(len(batch.prompt_index))
                yield plan.rows(batch, hidden)
        finally:
            if progress is not None:
                progress.close()


class OnScoringEngine:
    """What the Reranker and the Embedder share: their `engine` (a ScoringEngine) gives their device and
    weight bytes."""

    engine: ScoringEngine

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def weight_bytes(self) -> int:
        """Bytes the loaded model's weights take (see `quantize=`)."""
        return self.engine.weight_bytes


class BatchPlan:
    """`ScoringEngine.plan`'s result: the packed batches, and which caller prompts each planned prompt
    stands for (identical (group, prompt) pairs are planned once)."""

    def __init__(self, batches: list[PackedBatch], copies: list[list[int]], n_prompts: int):
        self.batches, self.copies, self.n_prompts = batches, copies, n_prompts

    def rows(self, batch: PackedBatch, hidden: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """A planned batch's hidden rows [R_unique, ...] -> (caller index, rows [R, ...]), duplicates repeated."""
        index, take = [], []
        for r, u in enumerate(batch.prompt_index):
            index.extend(self.copies[u])
            take.extend([r] * len(self.copies[u]))
        if len(take) != hidden.shape[0]:
            hidden = hidden[torch.tensor(take, device=hidden.device)]      # [R, ...]
        return index, hidden


def _merged(batches: Sequence[PackedBatch]) -> PackedBatch:
    return batches[0] if len(batches) == 1 else concat_batches(batches)


def _split(hidden: torch.Tensor, batches: Sequence[PackedBatch]) -> list[torch.Tensor]:
    """A merged forward's rows, back per batch."""
    return list(hidden.split([len(b.prompt_index) for b in batches]))


def gather_rows(parts: Iterable[tuple[Sequence[int], torch.Tensor]], n: int) -> torch.Tensor:
    """Rows from `(index, rows)` parts (as `ScoringEngine.iter_batches` yields them, or a head's output
    per batch) back in caller order: [n, ...]. Every index in range(n) must appear exactly once."""
    out, seen = None, 0
    for index, rows in parts:
        if out is None:
            out = rows.new_empty((n, *rows.shape[1:]))
        out[torch.as_tensor(index, dtype=torch.long, device=rows.device)] = rows
        seen += len(index)
    if seen != n:
        raise RuntimeError(f"gather_rows: got {seen} rows for {n} prompts")
    if out is None:
        raise ValueError("gather_rows: no rows (no prompts?)")
    return out


def pad_rows(x: torch.Tensor, multiple: int = 64) -> torch.Tensor:
    """x [R, ...] with zero rows appended up to a multiple of `multiple`. A per-batch head runs on the
    padded rows so that every real row takes the same kernel path whatever R is: CPU matmuls round
    differently below 12 rows, and vectorised elementwise ops (sigmoid, exp) compute a vector's
    remainder elements with scalar code that rounds differently."""
    pad = -x.shape[0] % multiple
    return x if pad == 0 else torch.cat((x, x.new_zeros((pad, *x.shape[1:]))))


def _progress(total: int, show: bool | None, n_batches: int, desc: str):
    if show is False or (show is None and (n_batches < 2 or not sys.stderr.isatty())):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="prompt")
