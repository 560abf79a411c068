"""BinaryIndex against an independent brute force and against FAISS IndexBinaryFlat."""
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from zkernels import BinaryIndex
from zkernels.binary import _cpu, storage, torch_search
from zkernels.binary.topk_contract import FILL_DISTANCE

faiss = pytest.importorskip("faiss")
ISAS = [isa for isa in ("scalar", "avx2", "avx512") if _cpu.cpu_has(isa)]


def brute(db, ids, q, k):
    """Reference: bit-unpacked XOR count, then Python sort by (distance, id)."""
    bits_db = np.unpackbits(db, axis=1).astype(np.int32)
    bits_q = np.unpackbits(q, axis=1).astype(np.int32)
    out_d = np.full((len(q), k), FILL_DISTANCE, np.int32)
    out_i = np.full((len(q), k), -1, np.int64)
    for j in range(len(q)):
        dist = (bits_db != bits_q[j]).sum(axis=1) if len(db) else np.empty(0, int)
        best = sorted(zip(dist.tolist(), ids.tolist()))[:k]
        for c, (d, i) in enumerate(best):
            out_d[j, c], out_i[j, c] = d, i
    return out_d, out_i


def codes(rng, n, nbytes, dup=True):
    x = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    if dup and n > 6:  # exact duplicates -> equal distances -> the tie rule decides
        x[n // 2] = x[1]
        x[n - 1] = x[1]
        x[5] = x[2]
    return x


@pytest.mark.parametrize("num_bits", [8, 40, 64, 256, 1024, 2560])
@pytest.mark.parametrize("nq", [0, 1, 13])
def test_matches_brute_force(num_bits, nq):
    rng = np.random.default_rng(num_bits + nq)
    n, w = 61, num_bits // 8
    db = codes(rng, n, w)
    q = codes(rng, nq, w, dup=False)
    if nq:
        q[0] = db[1]  # distance 0 to three rows
    ix = BinaryIndex(num_bits)
    ix.add(db)
    assert len(ix) == n
    for k in (1, 2, 7, n, n + 5):
        d, i = ix.search(q, k)
        assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (nq, k) == i.shape
        rd, ri = brute(db, np.arange(n), q, k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("nbytes", [1, 5, 8, 16, 24, 32, 40, 64, 96, 100, 128, 160, 192, 256, 320, 333])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_kernel_variant(isa, nbytes, threads):
    """Each ISA x code-length specialisation x thread split, arbitrary ids (ties by stored id)."""
    from zkernels import _hamming

    rng = np.random.default_rng(nbytes * 7 + threads)
    n = 203 if nbytes > 64 else 1500  # enough work to cross the multi-thread threshold for some sizes
    db = codes(rng, n, nbytes)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    q = codes(rng, 9, nbytes, dup=False)
    q[3] = db[1]
    for k in (1, 10, n + 1):
        d, i = _hamming.search(db, ids, q, k, threads, isa)
        rd, ri = brute(db, ids, q, k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)


@pytest.mark.parametrize("num_bits", [64, 1024, 2560])
def test_distances_equal_faiss(num_bits):
    rng = np.random.default_rng(num_bits)
    w = num_bits // 8
    db = codes(rng, 20000, w)
    q = codes(rng, 50, w, dup=False)
    ref = faiss.IndexBinaryFlat(num_bits)
    ref.add(db)
    ix = BinaryIndex(num_bits)
    ix.add(db)
    for k in (1, 10, 100):
        fd, fi = ref.search(q, k)
        d, i = ix.search(q, k)
        np.testing.assert_array_equal(d, fd)  # FAISS orders ties differently: compare distances
        # every id we return really has the distance we report
        np.testing.assert_array_equal(np.unpackbits(db[i] ^ q[:, None], axis=2).sum(2), d)


def test_k_larger_than_n_and_empty_index():
    ix = BinaryIndex(16)
    q = np.zeros((3, 2), np.uint8)
    d, i = ix.search(q, 4)
    assert (d == FILL_DISTANCE).all() and (i == -1).all()
    ix.add(np.array([[0, 1], [255, 255]], np.uint8))
    d, i = ix.search(q, 4)
    np.testing.assert_array_equal(i[0], [0, 1, -1, -1])
    np.testing.assert_array_equal(d[0], [1, 16, FILL_DISTANCE, FILL_DISTANCE])
    d, i = ix.search(np.zeros((0, 2), np.uint8), 3)
    assert d.shape == (0, 3) and i.shape == (0, 3)


def test_ties_broken_by_smaller_stored_id():
    ix = BinaryIndex(64)
    row = np.full((1, 8), 7, np.uint8)
    ix.add_with_ids(np.repeat(row, 5, 0), [50, 3, 40, 9, 12])
    ix.add_with_ids(row ^ 1, [1])  # distance 8 from the query below, id smaller than all
    d, i = ix.search(row, 4)
    np.testing.assert_array_equal(i, [[3, 9, 12, 40]])
    np.testing.assert_array_equal(d, [[0, 0, 0, 0]])


def test_add_ids_continue_and_remove_ids():
    rng = np.random.default_rng(0)
    ix = BinaryIndex(128)
    a, b = codes(rng, 40, 16), codes(rng, 30, 16)
    ix.add(a)
    ix.add(b)
    _, i = ix.search(b[:5], 1)
    np.testing.assert_array_equal(i[:, 0], 40 + np.arange(5))
    assert ix.remove_ids(np.array([0, 1, 2, 999])) == 3
    assert ix.remove_ids([999]) == 0
    assert len(ix) == 67
    d, i = ix.search(a[:3], 67)
    assert not np.isin(i, [0, 1, 2]).any()
    rd, ri = brute(np.concatenate([a[3:], b]), np.arange(3, 70), a[:3], 67)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)
    ix.reset()
    assert len(ix) == 0
    ix.add(a[:2])
    np.testing.assert_array_equal(ix.search(a[:2], 1)[1][:, 0], [0, 1])


def test_non_contiguous_inputs_are_copied():
    rng = np.random.default_rng(5)
    big = codes(rng, 200, 32)
    strided = big[::2, ::2]  # 16 bytes per row, non-contiguous
    fortran = np.asfortranarray(codes(rng, 7, 16))
    assert not strided.flags.c_contiguous and not fortran.flags.c_contiguous
    ix = BinaryIndex(128)
    ix.add(strided)
    d, i = ix.search(fortran, 5)
    rd, ri = brute(np.ascontiguousarray(strided), np.arange(100), np.ascontiguousarray(fortran), 5)
    np.testing.assert_array_equal(d, rd)
    np.testing.assert_array_equal(i, ri)


@pytest.mark.parametrize("bad", [
    np.zeros((3, 8), np.int8), np.zeros((3, 8), np.float32), np.zeros(8, np.uint8),
    np.zeros((3, 7), np.uint8), np.zeros((3, 8, 1), np.uint8), torch.zeros(3, 8, dtype=torch.int8),
    [[0] * 8], "codes",
])
def test_bad_codes_raise_value_error(bad):
    ix = BinaryIndex(64)
    ix.add(np.zeros((4, 8), np.uint8))
    with pytest.raises(ValueError):
        ix.add(bad)
    with pytest.raises(ValueError):
        ix.search(bad, 1)
    assert len(ix) == 4


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3", None])
def test_bad_k(k):
    ix = BinaryIndex(8)
    ix.add(np.zeros((2, 1), np.uint8))
    with pytest.raises(ValueError, match="k"):
        ix.search(np.zeros((1, 1), np.uint8), k)


@pytest.mark.parametrize("num_bits", [0, -8, 12, 8.0, True])
def test_bad_num_bits(num_bits):
    with pytest.raises(ValueError, match="num_bits"):
        BinaryIndex(num_bits)


def test_bad_ids():
    ix = BinaryIndex(8)
    x = np.zeros((2, 1), np.uint8)
    for ids in ([1.5, 2.0], [1], [[1, 2]], np.array([True, False])):
        with pytest.raises(ValueError, match="ids"):
            ix.add_with_ids(x, ids)
    assert len(ix) == 0


def test_torch_in_torch_out():
    rng = np.random.default_rng(2)
    db = codes(rng, 50, 32)
    ix = BinaryIndex(256)
    ix.add(torch.from_numpy(db))
    d, i = ix.search(torch.from_numpy(db[:4]), 3)
    assert isinstance(d, torch.Tensor) and d.dtype == torch.int32 and i.dtype == torch.int64
    rd, ri = brute(db, np.arange(50), db[:4], 3)
    np.testing.assert_array_equal(d.numpy(), rd)
    np.testing.assert_array_equal(i.numpy(), ri)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(tmp_path, mmap):
    rng = np.random.default_rng(8)
    db = codes(rng, 300, 5)
    ix = BinaryIndex(40)
    stored_ids = rng.permutation(1000)[:300]
    ix.add_with_ids(db, stored_ids)
    path = tmp_path / "ix.zkb"
    ix.save(path)
    assert os.listdir(tmp_path) == ["ix.zkb"]  # the temp file was renamed, nothing left behind
    back = BinaryIndex.load(path, mmap=mmap)
    assert back.num_bits == 40 and len(back) == 300
    q = codes(rng, 11, 5, dup=False)
    for a, b in zip(ix.search(q, 20), back.search(q, 20)):
        np.testing.assert_array_equal(a, b)
    back.add(db[:3])  # a memory-mapped index copies itself on write; ids continue after the max
    assert len(back) == 303 and back.search(db[:1], 400)[1].max() == stored_ids.max() + 3
    empty = tmp_path / "empty.zkb"
    BinaryIndex(16).save(empty)
    assert len(BinaryIndex.load(empty)) == 0


def _saved(tmp_path):
    ix = BinaryIndex(64)
    ix.add(codes(np.random.default_rng(9), 100, 8))
    path = tmp_path / "ix.zkb"
    ix.save(path)
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0, 10, 39, 40, 41, 500, -1])
def test_truncated_file_rejected(tmp_path, cut):
    path, raw = _saved(tmp_path)
    path.write_bytes(raw[:cut] if cut >= 0 else raw + b"\0")
    with pytest.raises(storage.IndexFileError):
        BinaryIndex.load(path)


@pytest.mark.parametrize("offset", [0, 9, 12, 16, 24, 32, 36, 45, 900, -1])
def test_altered_file_rejected(tmp_path, offset):
    path, raw = _saved(tmp_path)
    raw = bytearray(raw)
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    for mmap in (True, False):
        with pytest.raises(ValueError, match="checksum|magic|size|version|num_bits"):
            BinaryIndex.load(path, mmap=mmap)


def test_verify_false_skips_only_payload_check(tmp_path):
    path, raw = _saved(tmp_path)
    raw = bytearray(raw)
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    assert len(BinaryIndex.load(path, verify=False)) == 100  # documented: payload unchecked
    raw[3] ^= 1  # header damage is still caught
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError):
        BinaryIndex.load(path, verify=False)


POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def exact_topk(db, ids, q, k):
    """Independent top-k of one query: byte-table popcounts, then (distance, id) order."""
    dist = POPCOUNT[db ^ q].sum(axis=1)
    order = np.lexsort((ids, dist))[:k]
    return dist[order], ids[order]


def test_concurrent_searches_and_adds():
    """Searches racing adds (one of which reallocates the buffer) see, each time, the exact top-k of
    either the original rows or the original rows plus added ones. The added rows are all-zero codes
    and the queries have few bits set, so added rows do enter the top-k (tied with original rows at
    the k-th distance, where the tie rule decides): a search result tells which state it saw. Fails
    if the adds raise (the adder's result is read), if any id or distance is not one of the two exact
    answers (e.g. an id never added), or if no search saw an add finish (adds after all searches)."""
    rng = np.random.default_rng(11)
    n, w, k = 30000, 128, 10
    db = codes(rng, n, w)
    queries = []
    for j in range(3):
        q = np.zeros((3, w), np.uint8)
        for row in q:
            row[rng.choice(w, 5, replace=False)] = 0xFF  # popcount 40: all-zero rows are at distance 40
        db[100 + 10 * j: 103 + 10 * j] = q[0] ^ np.roll(q[0], 16)  # original rows tied at distance 40 (or less)
        queries.append(q)
    ix = BinaryIndex(8 * w, num_threads=2)
    ix.add(db)  # buffer capacity == n: the first concurrent add reallocates, later ones write in place
    batch = 500
    orig_ids = np.arange(n)
    zero_ids = np.arange(n, n + k)  # any batch of zero rows contributes at most its k smallest ids
    with_adds = (np.concatenate([db, np.zeros((k, w), np.uint8)]), np.concatenate([orig_ids, zero_ids]))
    before = [[exact_topk(db, orig_ids, row, k) for row in q] for q in queries]
    after = [[exact_topk(*with_adds, row, k) for row in q] for q in queries]
    assert all(not np.array_equal(b[0][1], a[0][1]) for b, a in zip(before, after))  # states are distinguishable
    stop = threading.Event()
    adds_done = []
    deadline = time.monotonic() + 30

    def adder():
        for _ in range(200):  # bounded: at most 200 batches
            if stop.is_set():
                break
            ix.add(np.zeros((batch, w), np.uint8))
            adds_done.append(1)
        return len(adds_done)

    def searcher(j):
        seen = []  # per result: 0 = original rows only, 1 = with added rows
        for _ in range(5000):  # bounded in count and (below) time
            d, i = ix.search(queries[j], k)
            for state, want in ((0, before[j]), (1, after[j])):
                if all(np.array_equal(d[r], want[r][0]) and np.array_equal(i[r], want[r][1]) for r in range(3)):
                    seen.append(state)
                    break
            else:
                raise AssertionError(f"search {len(seen)} of query group {j} matches neither exact answer:\n{d}\n{i}")
            if (seen[-1] == 1 and seen.count(1) >= 3) or fut.done() or time.monotonic() > deadline:
                return seen
        return seen

    with ThreadPoolExecutor(4) as pool:
        fut = pool.submit(adder)
        seen = list(pool.map(searcher, range(len(queries))))
        stop.set()
        added = fut.result(timeout=60)  # re-raises whatever an add raised
    assert added >= 1 and len(ix) == n + batch * added
    for j, states in enumerate(seen):
        assert 1 in states, f"query group {j}: no search saw an add finish (adds only after the searches?)"
        assert states == sorted(states), f"query group {j}: rows seen, then unseen again: {states}"


def test_numpy_fallback_warns_once_and_agrees(monkeypatch):
    rng = np.random.default_rng(12)
    db, q = codes(rng, 80, 5), codes(rng, 4, 5)
    ix = BinaryIndex(40)
    ix.add(db)
    want = ix.search(q, 9)
    monkeypatch.setattr(_cpu, "_ext", None)
    monkeypatch.setattr(_cpu, "_warned", False)
    with pytest.warns(RuntimeWarning, match="numpy fallback"):
        got = ix.search(q, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ix.search(q, 9)  # second call: no warning
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


def test_num_threads_env(monkeypatch):
    monkeypatch.setenv("ZKERNELS_NUM_THREADS", "3")
    assert _cpu.default_threads() == 3
    monkeypatch.setenv("ZKERNELS_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="ZKERNELS_NUM_THREADS"):
        _cpu.default_threads()


# ---------------------------------------------------------------------------- rescoring

def _rescore_ref(cand_ids, fq, corpus_vecs, k):
    out_s, out_i = [], []
    for j, row in enumerate(cand_ids):
        scored = sorted((-float(fq[j] @ corpus_vecs[c]), int(c)) for c in row if c >= 0)[:k]
        out_s.append([-s for s, _ in scored] + [-np.inf] * (k - len(scored)))
        out_i.append([c for _, c in scored] + [-1] * (k - len(scored)))
    return np.array(out_s, np.float32), np.array(out_i)


def test_rescore_float_corpus_and_callable():
    rng = np.random.default_rng(13)
    n, dim = 500, 64
    floats = rng.standard_normal((n, dim)).astype(np.float32)
    fq = rng.standard_normal((6, dim)).astype(np.float32)
    ix = BinaryIndex(dim)
    ix.add(np.packbits(floats > 0, axis=1))
    qc = np.packbits(fq > 0, axis=1)
    k = 5
    _, cand = ix.search(qc, k * 4)  # the documented default candidate count
    rs, ri = _rescore_ref(cand, fq, floats, k)
    s, i = ix.search(qc, k, rescore=(fq, floats))
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, rtol=1e-5)
    seen = []
    s2, i2 = ix.search(qc, k, rescore=(fq, lambda ids: (seen.append(ids), floats[ids])[1]))
    assert isinstance(seen[0], np.ndarray) and len(seen[0]) == len(np.unique(cand))
    np.testing.assert_array_equal(i2, ri)
    # a larger candidate pool can only improve the best score
    s3, _ = ix.search(qc, k, rescore=(fq, floats), candidates=200)
    assert (s3[:, 0] >= s[:, 0] - 1e-6).all()
    with pytest.raises(ValueError, match="candidates"):
        ix.search(qc, k, rescore=(fq, floats), candidates=3)
    with pytest.raises(ValueError):
        ix.search(qc, k, rescore=(fq[:2], floats))
    with pytest.raises(ValueError, match="outside"):
        ix.search(qc, k, rescore=(fq, floats[:10]))


def test_rescore_with_own_bits_like_sentence_transformers():
    rng = np.random.default_rng(14)
    dim = 60  # not a multiple of 8: bits are trimmed back to dim, as sentence-transformers does
    floats = rng.standard_normal((300, dim)).astype(np.float32)
    fq = rng.standard_normal((4, dim)).astype(np.float32)
    ix = BinaryIndex(64)
    ix.add(np.packbits(floats > 0, axis=1))
    qc = np.packbits(fq > 0, axis=1)
    _, cand = ix.search(qc, 12)
    bits01 = np.unpackbits(np.packbits(floats > 0, axis=1), axis=1)[:, :dim].astype(np.float32)
    rs, ri = _rescore_ref(cand, fq, bits01, 3)
    s, i = ix.search(qc, 3, rescore=fq, candidates=12)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, rtol=1e-5)


def test_rescore_fill_when_few_rows():
    ix = BinaryIndex(8)
    ix.add(np.array([[1], [3]], np.uint8))
    s, i = ix.search(np.array([[1]], np.uint8), 4, rescore=(np.ones((1, 2), np.float32), np.eye(2, dtype=np.float32)))
    np.testing.assert_array_equal(i, [[0, 1, -1, -1]])
    assert np.isneginf(s[0, 2:]).all()


# ---------------------------------------------------------------------------- device path

@pytest.mark.parametrize("num_bits", [8, 40, 1024])
def test_torch_selection_matches_brute_force(num_bits):
    """The CUDA path's top-k selection (torch ops), driven by the plain-torch distances on CPU."""
    rng = np.random.default_rng(num_bits)
    w = num_bits // 8
    db = codes(rng, 400, w)
    db[10:40] = db[1]  # many ties at the k-th distance
    ids = np.sort(rng.permutation(5000)[:400]).astype(np.int64)  # device rows are kept id-sorted
    q = codes(rng, 7, w, dup=False)
    q[0] = db[1]
    for k in (1, 5, 31, 400, 405):
        d, i = torch_search.search(torch.from_numpy(db), torch.from_numpy(ids), torch.from_numpy(q), k, num_bits,
                                   budget_bytes=4 * 400 * 3)  # force several query chunks
        rd, ri = brute(db, ids, q, k)
        np.testing.assert_array_equal(d.numpy(), rd)
        np.testing.assert_array_equal(i.numpy(), ri)


def test_to_cuda_without_device_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CUDA"):
        BinaryIndex(8).to("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("num_bits", [8, 40, 64, 256, 1024, 2560])
def test_cuda_matches_cpu(num_bits):
    rng = np.random.default_rng(num_bits)
    w = num_bits // 8
    db = codes(rng, 5000, w)
    q = codes(rng, 20, w, dup=False)
    q[0] = db[1]
    cpu = BinaryIndex(num_bits)
    stored_ids = rng.permutation(50000)[:5000]
    cpu.add_with_ids(db, stored_ids)
    gpu = cpu.to("cuda")
    for k in (1, 10, 5000, 5003):
        cd, ci = cpu.search(q, k)
        gd, gi = gpu.search(torch.from_numpy(q).cuda(), k)
        assert gd.is_cuda
        np.testing.assert_array_equal(gd.cpu().numpy(), cd)
        np.testing.assert_array_equal(gi.cpu().numpy(), ci)
    assert gpu.remove_ids(stored_ids[:10]) == 10 and len(gpu) == 4990
    back = gpu.to("cpu")
    assert len(back) == 4990
