"""The attention tests' inputs, packed as the model packs them (shared by the Triton and C++ tests)."""
import torch


def pack(groups, Hq, Hkv, D, dtype, last_layer=False, seed=None, device="cpu"):
    """groups: [(prefix_len, [doc_len, ...])], prefix_len 0 for none; as the model packs them: each
    prefix is a sequence of its own (prefix_lens 0) that its documents point at. last_layer: one query
    row per document (its last token), none for the prefix sequences. q, k and v are strided views into
    one fused qkv buffer, as the model produces them; random from `seed` (None: torch's global
    generator). Returns attention's arguments (q, k, v, cu_seqlens_q, cu_seqlens_k, prefix_starts,
    prefix_lens, scale)."""
    seqs, rows = [], 0  # (n_q, n_k, prefix_start, prefix_len)
    for prefix_len, docs in groups:
        start = rows
        if prefix_len:
            seqs.append((0 if last_layer else prefix_len, prefix_len, 0, 0))
            rows += prefix_len
        for n in docs:
            seqs.append((min(n, 1) if last_layer else n, n, start, prefix_len))
            rows += n

    def i32(xs):
        return torch.tensor(xs, dtype=torch.int32, device=device)

    cu_q = i32([0] + [s[0] for s in seqs]).cumsum(0).to(torch.int32)
    cu_k = i32([0] + [s[1] for s in seqs]).cumsum(0).to(torch.int32)
    n_q = int(cu_q[-1])
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    qkv = torch.randn(max(rows, n_q), (Hq + 2 * Hkv) * D, generator=g).to(device=device, dtype=dtype)
    q = qkv[:n_q, : Hq * D].view(n_q, Hq, D)
    k = qkv[:rows, Hq * D : (Hq + Hkv) * D].view(rows, Hkv, D)
    v = qkv[:rows, (Hq + Hkv) * D :].view(rows, Hkv, D)
    return q, k, v, cu_q, cu_k, i32([s[2] for s in seqs]), i32([s[3] for s in seqs]), D**-0.5
