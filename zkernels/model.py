"""The stripped-down Qwen3 forward: packed sequences in, final-norm hidden states at read rows out.

No generation, no KV cache between calls, no full LM head. The last layer computes attention queries,
the attention output, the MLP and the final norm only at the rows that are read; every other layer runs
over all packed rows. Ops come from the dispatch (torch, Triton or the C++ CPU kernels) by name; a
backend that prepacks linear weights (cpu) does so here, once.
"""
from __future__ import annotations

import torch

from .config import Qwen3Config
from .kernels import get_ops
from .kernels.linear import PackedLinear
from .kernels.linear_int8 import QuantizedLinear, quantize_rows, scale_rows
from .kernels.qk_norm_rope import rope_tables
from .loading import Qwen3Weights
from .packing import PackedBatch

# CPU GEMM kernels take other code paths for small row counts (measured with torch 2.13's CPU wheel: 1-3,
# 5-7 and 9-11 rows round differently from 12 and more), so a row's value would depend on how many rows
# share its matmul; padding small inputs keeps a prompt's result independent of its batch (see
# ScoringEngine.iter_batches).
MIN_CPU_MATMUL_ROWS = 16


def linear(x: torch.Tensor, weight: torch.Tensor | PackedLinear, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear (or a prepacked weight's oneDNN matmul), batch-invariant per row on CPU. oneDNN's packed
    path also rounds a lone row differently (measured: 1 row differs from 2+ in float32), so it gets the
    same padding. A quantized layer (`row_invariant`: each row's result from its own values alone) runs as
    is."""
    if getattr(weight, "row_invariant", False):
        return weight(x, bias)
    n = x.shape[0]
    matmul = weight if isinstance(weight, PackedLinear) else (lambda a, b: torch.nn.functional.linear(a, weight, b))
    if n >= MIN_CPU_MATMUL_ROWS or x.device.type != "cpu":
        return matmul(x, bias)
    padded = torch.cat((x, x.new_zeros((MIN_CPU_MATMUL_ROWS - n, *x.shape[1:]))))
    return matmul(padded, bias)[:n]


class Qwen3Forward:
    def __init__(self, config: Qwen3Config, weights: Qwen3Weights, backend: str):
        self.config, self.weights = config, weights
        self.ops = get_ops(backend)
        self.backend = backend
        pack = getattr(self.ops, "pack_linear", None)
        if pack is not None:  # in place: the dense copies are dropped, not kept beside the packed ones
            for layer in weights.layers:
                layer.qkv, layer.o, layer.gate_up, layer.down = (pack(layer.qkv), pack(layer.o),
                                                                 pack(layer.gate_up), pack(layer.down))
        device = weights.embed.device
        # int8 linears whose inputs the C++ ops can quantize as they produce them (see _hidden_int8)
        self.fused_int8 = _fused_int8_runs(self.ops, weights)
        self.cos, self.sin = rope_tables(config.head_dim, config.rope_theta, config.max_position_embeddings, device)
        self.scale = config.head_dim ** -0.5

    @property
    def device(self) -> torch.device:
        return self.weights.embed.device

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (a quantized model may keep its embedding table narrower)."""
        return self.weights.final_norm.dtype

    def hidden_at_read_rows(self, batch: PackedBatch) -> torch.Tensor:
        """Final-norm hidden states [R, hidden] at batch.read_rows, in the model dtype: `hidden_pieces` run
        to its end, in one inference-mode context (entering it at every piece cost ~10 us a piece, 7% of a
        17-token forward of the demo model)."""
        with torch.inference_mode():
            return run_to_end(self._pieces(batch))

    @torch.inference_mode()
    def hidden_pieces(self, batch: PackedBatch):
        """hidden_at_read_rows as a generator of pieces: it yields (None) at four points of each layer, each
        piece a few of its ops (norm and q|k|v with RoPE; attention and o; norm and gate|up; SwiGLU and down,
        with no yield after the last layer's), and returns the [R, hidden] rows. Between two pieces the
        caller may run anything else, other forwards included (the server runs a small request's forward
        inside a big one's: serve/policy.py); the ops and the values are the same as in one go. Each piece
        runs in inference mode, whatever the caller runs between them."""
        return (yield from self._pieces(batch))

    def _pieces(self, batch: PackedBatch):
        """The forward, as hidden_pieces yields it (the caller provides inference mode).

        Shapes below: T packed rows (every token of the batch), R read rows (one per prompt), S packed
        sequences, Tq the rows that compute queries (T, or R in the last layer), H hidden, Hq / Hkv query /
        key-value heads, D head_dim, I intermediate; Hq * D = q_width, Hkv * D = kv_width.
        """
        c, w, ops = self.config, self.weights, self.ops
        # Checked on the host copy: no device sync.
        if int(batch.positions.max()) >= c.max_position_embeddings:
            raise ValueError(f"a prompt reaches position {int(batch.positions.max())}, beyond the model's "
                             f"max_position_embeddings {c.max_position_embeddings}")
        if int(batch.token_ids.max()) >= c.vocab_size:
            raise ValueError(f"token id {int(batch.token_ids.max())} is outside the vocabulary (size {c.vocab_size})")
        if self.fused_int8:
            return (yield from self._hidden_int8(batch))
        b = batch.to(self.device)                            # token_ids, positions [T]; read_rows [R]
        n_rows = b.token_ids.shape[0]                        # T
        hidden = w.embed[b.token_ids]                        # [T, H]
        if hidden.dtype != self.dtype:
            hidden = hidden.to(self.dtype)
        residual = None                                      # then [T, H]; [R, H] once the last layer selects
        for i, layer in enumerate(w.layers):
            last = i == len(w.layers) - 1
            if residual is None:
                x, residual = ops.rms_norm(hidden, layer.input_norm, c.rms_norm_eps), hidden  # [T, H], [T, H]
            else:
                x, residual = ops.add_rms_norm(hidden, residual, layer.input_norm, c.rms_norm_eps)  # [T, H], [T, H]
            qkv = linear(x, layer.qkv, layer.qkv_bias)            # [T, Hq*D + 2*Hkv*D]
            q = qkv[:, :c.q_width].view(n_rows, c.num_heads, c.head_dim)               # [T, Hq, D]
            k = qkv[:, c.q_width:c.q_width + c.kv_width].view(n_rows, c.num_kv_heads, c.head_dim)  # [T, Hkv, D]
            v = qkv[:, c.q_width + c.kv_width:].view(n_rows, c.num_kv_heads, c.head_dim)          # [T, Hkv, D]
            if last:  # keys and values are needed everywhere, queries and everything after only where read
                # q [R, Hq, D], residual [R, H], q_pos [R], cu_q [S+1] (read rows per sequence)
                q, residual = q[b.read_rows], residual[b.read_rows]
                q_pos, cu_q = b.positions[b.read_rows], b.cu_seqlens_read
            else:
                q_pos, cu_q = b.positions, b.cu_seqlens                                # [T], [S+1]
            q, k = ops.qk_norm_rope(q, k, layer.q_norm, layer.k_norm, self.cos, self.sin, q_pos, b.positions,
                                    c.rms_norm_eps)                                     # [Tq, Hq, D], [T, Hkv, D]
            yield
            # attn [Tq, Hq, D] -> o-proj [Tq, H]
            attn = ops.attention(q, k, v, cu_q, b.cu_seqlens, b.prefix_starts, b.prefix_lens, self.scale)
            hidden = linear(attn.reshape(attn.shape[0], c.q_width), layer.o, layer.o_bias)
            yield
            x, residual = ops.add_rms_norm(hidden, residual, layer.post_norm, c.rms_norm_eps)  # [Tq, H], [Tq, H]
            gate_up = linear(x, layer.gate_up)                                                 # [Tq, 2*I]
            yield
            hidden = linear(ops.swiglu(gate_up), layer.down)                                  # [Tq, I] -> [Tq, H]
            if not last:
                yield
        out, _ = ops.add_rms_norm(hidden, residual, w.final_norm, c.rms_norm_eps)  # [R, H]
        return out

    def _hidden_int8(self, batch: PackedBatch) -> torch.Tensor:
        """hidden_at_read_rows for int8 linears on the cpu backend: the same ops and the same values, bit for
        bit, as the generic path, with the per-token quantization inside the ops that produce the linears'
        inputs. The o, gate|up and down products leave the matmul in float32 without their per-row
        activation scale; the op that reads them applies it (rounded to the model dtype, as the layer
        would): add+RMSNorm after o and down, SwiGLU after gate|up. Shapes as in hidden_at_read_rows;
        (y, ys) is a float32 matmul output [rows, out] with its row scales [rows]. A generator of pieces, as
        hidden_pieces."""
        c, w, ops = self.config, self.weights, self.ops
        b = batch.to(self.device)
        n_rows, eps, dtype = b.token_ids.shape[0], c.rms_norm_eps, self.dtype
        hidden = w.embed[b.token_ids]                        # [T, H]
        if hidden.dtype != dtype:
            hidden = hidden.to(dtype)
        residual, down = hidden, None                        # down: the previous layer's (y, ys)
        for i, layer in enumerate(w.layers):
            last = i == len(w.layers) - 1
            if down is None:
                xq, xs, _ = ops.rms_norm_quantize(hidden, layer.input_norm, eps)                 # [T, H] uint8, [T]
            else:
                xq, xs, residual = ops.rms_norm_quantize(down[0], layer.input_norm, eps, residual=residual,
                                                         x_scale=down[1])
            qkv = self._qkv_int8(layer, xq, xs)                                                # [T, Hq*D + 2*Hkv*D]
            q = qkv[:, :c.q_width].view(n_rows, c.num_heads, c.head_dim)
            k = qkv[:, c.q_width:c.q_width + c.kv_width].view(n_rows, c.num_kv_heads, c.head_dim)
            v = qkv[:, c.q_width + c.kv_width:].view(n_rows, c.num_kv_heads, c.head_dim)
            if last:
                q, residual = q[b.read_rows], residual[b.read_rows]
                q_pos, cu_q = b.positions[b.read_rows], b.cu_seqlens_read
            else:
                q_pos, cu_q = b.positions, b.cu_seqlens
            q, k = ops.qk_norm_rope(q, k, layer.q_norm, layer.k_norm, self.cos, self.sin, q_pos, b.positions, eps)
            yield
            attn = ops.attention(q, k, v, cu_q, b.cu_seqlens, b.prefix_starts, b.prefix_lens, self.scale)
            aq, a_scale = quantize_rows(attn.reshape(attn.shape[0], c.q_width))                 # [Tq, Hq*D], [Tq]
            yield
            xq, xs, residual = ops.rms_norm_quantize(layer.o.matmul_unscaled(aq), layer.post_norm, eps,
                                                     residual=residual, x_scale=a_scale)       # [Tq, H], [Tq]
            yield
            hq, hs = self._gate_up_swiglu_int8(layer.gate_up, xq, xs)                              # [Tq, I], [Tq]
            down = (layer.down.matmul_unscaled(hq), hs)                                        # [Tq, H], [Tq]
            if not last:
                yield
        out, _ = ops.add_rms_norm(scale_rows(down[0], down[1], dtype), residual, w.final_norm, eps)  # [R, H]
        return out

    # The int8 matmuls' float32 outputs are large (T x 2I floats for gate|up). On one thread, run a block of
    # rows at a time, so the op that consumes a block reads it from cache instead of memory (measured on one
    # thread, rerank 1 x 50 at the 0.6B width: 1153 ms in blocks of 256 rows against 1338 ms in one call).
    # With more threads each block is one more parallel region to join, and on a shared 2-core machine that
    # cost more than it saved (1872 ms against 1480), so there the matmul runs in one call. Rows are
    # independent (exact int32 sums, row-wise ops): the blocks change no value.
    def _row_blocks(self, n: int) -> list[tuple[int, int]]:
        if torch.get_num_threads() > 1:
            return [(0, n)]
        return [(r0, min(n, r0 + INT8_BLOCK_ROWS)) for r0 in range(0, n, INT8_BLOCK_ROWS)]

    def _qkv_int8(self, layer, xq: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """q|k|v [n, Hq*D + 2*Hkv*D] in the model dtype from the input's codes and scales."""
        blocks = self._row_blocks(xq.shape[0])
        if len(blocks) <= 1 or layer.qkv_bias is not None:
            return layer.qkv.matmul_quantized(xq, xs, self.dtype, layer.qkv_bias)
        out = torch.empty((xq.shape[0], layer.qkv.out_features), dtype=self.dtype)
        for r0, r1 in blocks:
            scale_rows(layer.qkv.matmul_unscaled(xq[r0:r1]), xs[r0:r1], self.dtype, out=out[r0:r1])
        return out

    def _gate_up_swiglu_int8(self, gate_up, xq: torch.Tensor, xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SwiGLU's codes and scales [n, I], [n] from gate|up's input codes and scales."""
        blocks = self._row_blocks(xq.shape[0])
        if len(blocks) <= 1:
            return self.ops.swiglu_quantize(gate_up.matmul_unscaled(xq), self.dtype, in_scale=xs)
        hq = torch.empty((xq.shape[0], gate_up.out_features // 2), dtype=torch.uint8)
        hs = torch.empty(xq.shape[0], dtype=torch.float32)
        for r0, r1 in blocks:
            self.ops.swiglu_quantize(gate_up.matmul_unscaled(xq[r0:r1]), self.dtype, in_scale=xs[r0:r1],
                                     out=(hq[r0:r1], hs[r0:r1]))
        return hq, hs


def run_to_end(pieces):
    """A generator's return value, once run through (Qwen3Forward.hidden_pieces, the server's tokenize_pieces)."""
    while True:
        try:
            next(pieces)
        except StopIteration as done:
            return done.value


# Rows in one block of an int8 matmul and the op that reads its output, on one thread (Qwen3Forward._row_blocks).
INT8_BLOCK_ROWS = 256


def _fused_int8_runs(ops, weights: Qwen3Weights) -> bool:
    """Whether _hidden_int8 applies: every linear int8 (QuantizedLinear), no bias on o (its bias would be added
    after the row scale the next op applies), the model in float32 or bfloat16, the fused ops in `ops`."""
    if not hasattr(ops, "rms_norm_quantize") or weights.final_norm.dtype not in (torch.float32, torch.bfloat16):
        return False
    return bool(weights.layers) and all(
        all(isinstance(getattr(layer, name), QuantizedLinear) for name in ("qkv", "o", "gate_up", "down"))
        and layer.o_bias is None for layer in weights.layers)
