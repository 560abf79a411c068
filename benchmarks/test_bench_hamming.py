"""pytest-benchmark view of the CPU Hamming benchmark (not part of CI: testpaths is tests/).

    PYTHONPATH=. python -m pytest benchmarks/test_bench_hamming.py --benchmark-only

The JSON rows with FAISS ratios and bandwidth come from benchmarks/bench_hamming.py.
"""
import numpy as np
import pytest

from zkernels import BinaryIndex

faiss = pytest.importorskip("faiss")
N, BITS, K = 1_000_000, 1024, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    db = rng.integers(0, 256, (N, BITS // 8), dtype=np.uint8)
    ours = BinaryIndex(BITS)
    ours.add(db)
    ref = faiss.IndexBinaryFlat(BITS)
    ref.add(db)
    queries = {nq: rng.integers(0, 256, (nq, BITS // 8), dtype=np.uint8) for nq in (1, 10, 100)}
    return ours, ref, queries


@pytest.mark.parametrize("nq", [1, 10, 100])
@pytest.mark.parametrize("impl", ["zkernels", "faiss"])
def test_search_1m_1024bit(benchmark, data, impl, nq):
    ours, ref, queries = data
    index = ours if impl == "zkernels" else ref
    q = queries[nq]
    benchmark.group = f"nq={nq}"
    d, _ = benchmark.pedantic(index.search, args=(q, K), rounds=5 if nq == 100 else 15, warmup_rounds=1)
    assert np.array_equal(d, ref.search(q, K)[0])
