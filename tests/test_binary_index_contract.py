"""BinaryIndex contracts written once and kept on both stores: result types, FAISS names, id exhaustion,
header validation, file permissions."""
import os
import pathlib
import stat
import struct
import zlib

import numpy as np
import pytest
import torch

from zkernels import BinaryIndex
from zkernels.binary import _cpu, storage, topk_contract
from zkernels.binary.index import HammingResult, RescoredResult
from zkernels.binary.torch_store import TorchStore

ROOT = pathlib.Path(__file__).resolve().parents[1]
INT64_MAX = 2**63 - 1


def make_index(store, num_bits):
    """An empty index on the numpy/C++ store, or on the torch store with CPU tensors (the CUDA path's
    store and selection, with plain-torch distances instead of the CUDA kernel)."""
    if store == "numpy":
        return BinaryIndex(num_bits)
    return BinaryIndex._from_store(num_bits, TorchStore.empty(num_bits // 8, "cpu"), 0)


def as_numpy(x):
    return x.numpy() if isinstance(x, torch.Tensor) else x


# ---------------------------------------------------------------------------- one fill rule

def _searches():
    """Every search implementation, called the way its store calls it: name -> search(db, ids, q, k)."""
    from zkernels.binary import _numpy_search, torch_search
    impls = {"numpy": _numpy_search.search,
             "torch": lambda db, ids, q, k: tuple(x.numpy() for x in torch_search.search(
                 torch.from_numpy(db), torch.from_numpy(ids), torch.from_numpy(q), k, db.shape[1] * 8))}
    if _cpu._ext is not None:
        for isa in ("scalar", "avx2", "avx512"):
            if _cpu.cpu_has(isa):
                impls[f"c++ {isa}"] = lambda db, ids, q, k, isa=isa: _cpu._ext.search(db, ids, q, k, 1, isa)
    return impls


@pytest.mark.parametrize("impl", list(_searches()))
def test_every_search_fills_short_rows_alike(impl):
    """Fewer codes than k: every implementation completes the row with (FILL_DISTANCE, FILL_ID)."""
    db = np.array([[0b1], [0b11], [0b111]], np.uint8)
    ids = np.array([10, 11, 12], np.int64)
    distances, got_ids = _searches()[impl](db, ids, np.zeros((2, 1), np.uint8), 5)
    np.testing.assert_array_equal(distances, [[1, 2, 3] + [topk_contract.FILL_DISTANCE] * 2] * 2)
    np.testing.assert_array_equal(got_ids, [[10, 11, 12] + [topk_contract.FILL_ID] * 2] * 2)
    assert topk_contract.FILL_DISTANCE == 2**31 - 1 and topk_contract.FILL_ID == -1


def test_extension_exports_the_same_fill_distance():
    if _cpu._ext is None:
        pytest.skip("the C++ extension is not built")
    assert _cpu._ext.FILL_DISTANCE == topk_contract.FILL_DISTANCE


def test_without_the_extension_the_numpy_fallback_is_reported(monkeypatch):
    monkeypatch.setattr(_cpu, "_ext", None)
    assert _cpu.best_isa() == "numpy"
    assert not any(_cpu.cpu_has(isa) for isa in ("scalar", "avx2", "avx512"))


# ---------------------------------------------------------------------------- FAISS names, result types

@pytest.mark.parametrize("store", ["numpy", "torch"])
def test_d_and_ntotal(store):
    ix = make_index(store, 1024)
    assert ix.d == 1024 == ix.num_bits and ix.ntotal == 0
    ix.add(np.zeros((5, 128), np.uint8))
    assert ix.ntotal == 5 == len(ix)
    ix.remove_ids([0, 1])
    assert ix.ntotal == 3


@pytest.mark.parametrize("store", ["numpy", "torch"])
def test_plain_and_rescored_results_say_their_order(store):
    rng = np.random.default_rng(3)
    dim, k = 64, 5
    floats = rng.standard_normal((300, dim)).astype(np.float32)
    fq = rng.standard_normal((4, dim)).astype(np.float32)
    ix = make_index(store, dim)
    ix.add(np.packbits(floats > 0, axis=1))
    qc = np.packbits(fq > 0, axis=1)
    if store == "torch":
        qc = torch.from_numpy(qc)
    plain = ix.search(qc, k)
    assert isinstance(plain, HammingResult) and plain.distances is plain[0] and plain.ids is plain[1]
    dist = as_numpy(plain.distances)
    assert (np.diff(dist, axis=1) >= 0).all()  # lowest distance first
    new = ix.search_rescored(qc, k, fq, floats, candidates=40)
    assert isinstance(new, RescoredResult) and new.scores is new[0]
    scores = as_numpy(new.scores)
    assert (np.diff(scores, axis=1) <= 0).all()  # highest score first
    _, cand = ix.search(qc, 40)
    best = [sorted(as_numpy(cand)[j], key=lambda i: (-float(fq[j] @ floats[i]), i))[:k] for j in range(4)]
    np.testing.assert_array_equal(as_numpy(new.ids), best)
    old_s, old_i = ix.search(qc, k, rescore=(fq, floats), candidates=40)  # the older call keeps working
    assert isinstance(ix.search(qc, k, rescore=(fq, floats)), RescoredResult)
    np.testing.assert_array_equal(as_numpy(old_i), as_numpy(new.ids))
    np.testing.assert_array_equal(as_numpy(old_s), scores)
    own_bits = ix.search_rescored(qc, k, fq)  # corpus=None: the codes' own bits, as search(rescore=fq)
    np.testing.assert_array_equal(as_numpy(own_bits.ids), as_numpy(ix.search(qc, k, rescore=fq).ids))


def test_torch_store_matches_numpy_store():
    """The device store (here on CPU tensors) agrees with the C++ store through add, add_with_ids,
    remove_ids, reset and search, tie rule and fill included."""
    rng = np.random.default_rng(4)
    db = rng.integers(0, 256, (300, 5), dtype=np.uint8)
    db[150:160] = db[3]  # ties
    q = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    q[0] = db[3]
    a, b = make_index("numpy", 40), make_index("torch", 40)
    given = rng.permutation(np.arange(500, 700))
    for ix in (a, b):
        ix.add(db[:100])
        ix.add_with_ids(db[100:], given)
        ix.add(db[:7])
        assert ix.remove_ids([2, 3, 650]) == 3
    for k in (1, 12, 305, 310):
        for (da, ia), (dbb, ib) in zip([a.search(q, k)], [b.search(torch.from_numpy(q), k)]):
            np.testing.assert_array_equal(da, dbb.numpy())
            np.testing.assert_array_equal(ia, ib.numpy())
    assert b.device == "cpu" and len(b) == len(a) == 304


# ---------------------------------------------------------------------------- ids past int64

@pytest.mark.parametrize("store", ["numpy", "torch"])
def test_automatic_ids_never_pass_int64(store, tmp_path):
    code = np.zeros((1, 1), np.uint8)
    ix = make_index(store, 8)
    ix.add_with_ids(code, [INT64_MAX])  # legal: ids are arbitrary int64
    for _ in range(2):  # a clear error every time, nothing added
        with pytest.raises(ValueError, match="add_with_ids"):
            ix.add(code)
        assert len(ix) == 1
    ix.add(np.zeros((0, 1), np.uint8))  # adding nothing needs no id
    ix.add_with_ids(code, [7])
    assert sorted(as_numpy(ix.search(code, 3)[1])[0].tolist()) == [-1, 7, INT64_MAX]

    near = make_index(store, 8)
    near.add_with_ids(code, [INT64_MAX - 3])
    with pytest.raises(ValueError, match=r"past the int64 maximum.*3 left.*add_with_ids"):
        near.add(np.zeros((5, 1), np.uint8))  # would wrap to -2**63 on main
    assert len(near) == 1
    near.add(np.zeros((3, 1), np.uint8))  # exactly the ids that are left
    got = as_numpy(near.search(code, 5)[1])[0]
    assert sorted(got[got >= 0].tolist()) == [INT64_MAX - 3, INT64_MAX - 2, INT64_MAX - 1, INT64_MAX]
    with pytest.raises(ValueError, match="0 left"):
        near.add(code)

    if store == "numpy":  # an exhausted index saves and loads, and stays exhausted
        ix.save(tmp_path / "x.zkb")
        back = BinaryIndex.load(tmp_path / "x.zkb")
        with pytest.raises(ValueError, match="add_with_ids"):
            back.add(code)


# ---------------------------------------------------------------------------- header validation

def _rewrite_next_id(path, next_id):
    """Sets the header's next_id and recomputes the header checksum: a self-consistent file, as a
    buggy writer or a crafted file has it."""
    raw = bytearray(path.read_bytes())
    head = storage._HEAD
    fields = list(head.unpack(bytes(raw[:head.size])))
    fields[4] = next_id
    packed = head.pack(*fields)
    raw[:storage.HEADER_SIZE] = packed + struct.pack("<I", zlib.crc32(packed))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("next_id,match", [
    (2, "not above the largest stored id"),  # ids 0..4 stored: add() would repeat 2, 3, 4
    (4, "not above the largest stored id"),
    (2**63 + 1, "past 2"),
    (2**64 - 1, "past 2"),
])
@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("verify", [True, False])
def test_header_next_id_is_checked_on_load(tmp_path, next_id, match, mmap, verify):
    ix = BinaryIndex(8)
    ix.add(np.arange(5, dtype=np.uint8)[:, None])
    path = tmp_path / "ix.zkb"
    ix.save(path)
    _rewrite_next_id(path, next_id)
    with pytest.raises(storage.IndexFileError, match=match):
        BinaryIndex.load(path, mmap=mmap, verify=verify)
    _rewrite_next_id(path, 5)  # the honest value loads
    back = BinaryIndex.load(path, mmap=mmap, verify=verify)
    back.add(np.zeros((1, 1), np.uint8))
    assert sorted(back.search(np.zeros((1, 1), np.uint8), 6)[1][0].tolist()) == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------- permissions

@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_saved_index_gets_the_folders_normal_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        BinaryIndex(8).save(tmp_path / "ix.zkb")
        (tmp_path / "other.txt").write_text("a file written the ordinary way")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ix.zkb").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "other.txt").stat().st_mode) == mode
    assert sorted(os.listdir(tmp_path)) == ["ix.zkb", "other.txt"]  # no temp file left behind
