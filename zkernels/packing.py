"""Turns tokenized prompts into packed, unpadded batches with shared-prefix caching.

Prompts are grouped (one group per query). A group's longest common token prefix is packed once per
batch as a sequence of its own; each prompt of the group contributes only its remaining tokens, and
those attend to the prefix rows in the same buffer. The read position of every prompt is its last
token, so at least one token of each prompt stays outside the prefix.

Batches are formed in a canonical order (groups by prefix ids, prompts by remaining ids), so the work,
and therefore the floating-point result, does not depend on the order the caller passed things in.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    token_ids: torch.Tensor      # [T] int64
    positions: torch.Tensor      # [T] int64
    cu_seqlens: torch.Tensor     # [S+1] int32: every sequence's own rows
    prefix_starts: torch.Tensor  # [S] int32: row where the sequence's shared prefix starts
    prefix_lens: torch.Tensor    # [S] int32: 0 for prefix sequences and ungrouped prompts
    cu_seqlens_read: torch.Tensor  # [S+1] int32: read rows per sequence (the last layer's queries)
    read_rows: torch.Tensor      # [R] int64: row of each read position (each prompt's last token)
    prompt_index: list[int]      # [R]: which prompt each read row belongs to

    def to(self, device) -> PackedBatch:
        fields = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                  for k, v in self.__dict__.items()}
        return PackedBatch(**fields)


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Shared prefix of a group: its longest common token prefix, leaving each prompt one token."""
    if len(prompts) < 2:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        n = min(n, common_prefix_len(first, p))
        if n == 0:
            break
    return max(n, 0)


def plan_batches(prompts: Sequence[Sequence[int]], groups: Sequence[int], max_tokens: int,
                 max_prompts: int | None = None, use_prefix_cache: bool = True) -> list[PackedBatch]:
    """prompts: token ids per prompt; groups: group key per prompt (prompts of one query share one).

    Each batch holds at most max_tokens rows (prefix rows included) unless a single prompt is longer,
    and at most max_prompts prompts.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    work = []  # (prefix ids, [prompt indices in canonical order])
    for idx in members.values():
        plen = group_prefix_len([prompts[i] for i in idx]) if use_prefix_cache else 0
        idx = sorted(idx, key=lambda i: (len(prompts[i]), tuple(prompts[i])))
        work.append((tuple(prompts[idx[0]][:plen]), idx))
    work.sort(key=lambda w: (len(w[0]), w[0], tuple(prompts[w[1][0]])))

    batches, builder = [], _BatchBuilder(prompts)
    for prefix, idx in work:
        for i in idx:
            cost = len(prompts[i]) - len(prefix) + (0 if builder.has_prefix(prefix) else len(prefix))
            if builder.n_prompts and (builder.n_rows + cost > max_tokens
                                      or (max_prompts and builder.n_prompts >= max_prompts)):
                batches.append(builder.build())
                builder = _BatchBuilder(prompts)
            builder.add(i, prefix)
    if builder.n_prompts:
        batches.append(builder.build())
    return batches


class _BatchBuilder:
    def __init__(self, prompts):
        self.prompts = prompts
        self.ids, self.pos, self.seq_lens, self.p_start, self.p_len, self.n_read = [], [], [], [], [], []
        self.read_rows, self.prompt_index = [], []
        self.prefix_row: dict[tuple, int] = {}
        self.n_rows = 0

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_index)

    def has_prefix(self, prefix) -> bool:
        return not prefix or prefix in self.prefix_row

    def _add_sequence(self, ids, first_pos, prefix_start, prefix_len, read: bool):
        self.ids.extend(ids)
        self.pos.extend(range(first_pos, first_pos + len(ids)))
        self.seq_lens.append(len(ids))
        self.p_start.append(prefix_start)
        self.p_len.append(prefix_len)
        self.n_read.append(1 if read else 0)
        self.n_rows += len(ids)

    def add(self, i: int, prefix: tuple):
        if prefix and prefix not in self.prefix_row:
            self.prefix_row[prefix] = self.n_rows
            self._add_sequence(prefix, 0, 0, 0, read=False)
        rest = self.prompts[i][len(prefix):]
        self._add_sequence(rest, len(prefix), self.prefix_row.get(prefix, 0), len(prefix), read=True)
        self.read_rows.append(self.n_rows - 1)
        self.prompt_index.append(i)

    def build(self) -> PackedBatch:
        i32 = lambda xs: torch.tensor(xs, dtype=torch.int32)  # noqa: E731
        cu = [0]
        for n in self.seq_lens:
            cu.append(cu[-1] + n)
        cu_read = [0]
        for n in self.n_read:
            cu_read.append(cu_read[-1] + n)
        return PackedBatch(
            token_ids=torch.tensor(self.ids, dtype=torch.int64),
            positions=torch.tensor(self.pos, dtype=torch.int64),
            cu_seqlens=i32(cu), prefix_starts=i32(self.p_start), prefix_lens=i32(self.p_len),
            cu_seqlens_read=i32(cu_read), read_rows=torch.tensor(self.read_rows, dtype=torch.int64),
            prompt_index=list(self.prompt_index),
        )


def concat_batches(batches: Sequence[PackedBatch]) -> PackedBatch:
    """Several packed batches (from different plans) as one: their rows one after the other, every row
    index shifted by the rows before it. Each sequence keeps its own rows and its own prefix, so a
    prompt's result is the one it gets in its own batch. prompt_index is concatenated as given: the
    caller knows which batch each read row came from (in order, len(b.prompt_index) rows each)."""
    if not batches:
        raise ValueError("concat_batches: no batches")
    rows = [b.token_ids.shape[0] for b in batches]
    reads = [b.read_rows.shape[0] for b in batches]
    row0 = [sum(rows[:i]) for i in range(len(batches))]
    read0 = [sum(reads[:i]) for i in range(len(batches))]
    cat = torch.cat
    return PackedBatch(
        token_ids=cat([b.token_ids for b in batches]),
        positions=cat([b.positions for b in batches]),
        cu_seqlens=cat([batches[0].cu_seqlens[:1]] + [b.cu_seqlens[1:] + r for b, r in zip(batches, row0)]),
        prefix_starts=cat([b.prefix_starts + r for b, r in zip(batches, row0)]),
        prefix_lens=cat([b.prefix_lens for b in batches]),
        cu_seqlens_read=cat([batches[0].cu_seqlens_read[:1]]
                            + [b.cu_seqlens_read[1:] + r for b, r in zip(batches, read0)]),
        read_rows=cat([b.read_rows + r for b, r in zip(batches, row0)]),
        prompt_index=[i for b in batches for i in b.prompt_index],
    )
