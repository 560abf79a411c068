// Exact top-k Hamming search over packed binary codes (CPU), bound with pybind11 as zkernels._hamming.
//
// One translation unit holds three instruction-set variants of the same blocked scan (AVX-512 with
// VPOPCNTDQ, AVX2, portable scalar). They are compiled with __attribute__((target(...))) rather than
// -march flags, and chosen at run time with __builtin_cpu_supports, so one binary runs on any x86-64.
//
// Work split: each thread keeps a bounded heap per query and takes database chunks from a shared
// counter, scanning each chunk for all queries (blocked, see hamming_scan.inc); the per-thread heaps
// are merged at the end.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

// gcc 12 warns about its own _mm*_undefined_* helpers when they inline (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hamming_topk.h"

namespace py = pybind11;

namespace zk {

struct Job {
    const uint8_t* db;
    const int64_t* ids;
    const uint8_t* queries;
    int nbytes;
    int64_t row_block;    // rows per database block (about 256 KiB of codes: stays in L2)
    int64_t query_block;  // queries per block (about 8 KiB of codes: stays in L1)
};

struct Worker {
    int64_t q0, q1, r0, r1;
    std::vector<TopK> heaps;  // one per query in [q0, q1)
    std::vector<int32_t> hd;  // heap storage
    std::vector<int64_t> hi;
};

using ScanFn = void (*)(const Job&, Worker&);

// ---------------------------------------------------------------- scalar (portable, any x86-64/arm)
namespace isa_scalar {
#define ZK_TARGET
constexpr int kGroup = 1;
template <int NB>
ZK_TARGET static unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh);
#include "hamming_scan.inc"
template <int NB>
ZK_TARGET static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
    d[0] = dist_one<NB>(q, rows, nb);
    return d[0] <= thresh;
}
#undef ZK_TARGET
}  // namespace isa_scalar

#if defined(__x86_64__) || defined(_M_X64)
#define ZK_X86 1

// ---------------------------------------------------------------- AVX2: nibble-table popcount
namespace isa_avx2 {
#define ZK_TARGET __attribute__((target("avx2,popcnt")))
constexpr int kGroup = 4;

// Four rows' qword partial sums -> one vector of the four row totals.
ZK_TARGET static inline __m256i hsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    __m256i t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(a0, a1), _mm256_unpackhi_epi64(a0, a1));
    __m256i t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(a2, a3), _mm256_unpackhi_epi64(a2, a3));
    return _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20),
                            _mm256_permute2x128_si256(t01, t23, 0x31));
}

template <int NB>
ZK_TARGET static inline int32_t dist_one_tail(const uint8_t* a, const uint8_t* b, int from, int n) {
    int32_t s = 0;
    int i = from;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        std::memcpy(&x, a + i, 8);
        std::memcpy(&y, b + i, 8);
        s += __builtin_popcountll(x ^ y);
    }
    for (; i < n; ++i) s += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return s;
}

template <int NB>
ZK_TARGET static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
    const int n = NB ? NB : nb;
    const int full = n / 32;
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    const __m256i zero = _mm256_setzero_si256();
    __m256i acc[4] = {zero, zero, zero, zero};
    // Byte counters are flushed into qword sums every 8 chunks (at most 64 per byte: no overflow).
    for (int c0 = 0; c0 < full; c0 += 8) {
        const int c1 = std::min(full, c0 + 8);
        __m256i bacc[4] = {zero, zero, zero, zero};
        for (int c = c0; c < c1; ++c) {
            const __m256i qv = _mm256_loadu_si256((const __m256i*)(q + 32 * c));
            for (int r = 0; r < 4; ++r) {
                __m256i x = _mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i*)(rows + r * n + 32 * c)));
                __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                                              _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
                bacc[r] = _mm256_add_epi8(bacc[r], cnt);
            }
        }
        for (int r = 0; r < 4; ++r) acc[r] = _mm256_add_epi64(acc[r], _mm256_sad_epu8(bacc[r], zero));
    }
    alignas(32) uint64_t s[4];
    _mm256_store_si256((__m256i*)s, hsum4(acc[0], acc[1], acc[2], acc[3]));
    for (int r = 0; r < 4; ++r) {
        int32_t t = (int32_t)s[r];
        if (n % 32) t += dist_one_tail<NB>(q, rows + r * n, full * 32, n);
        d[r] = t;
    }
    return (unsigned)(d[0] <= thresh) | (unsigned)(d[1] <= thresh) << 1 | (unsigned)(d[2] <= thresh) << 2 |
           (unsigned)(d[3] <= thresh) << 3;
}
#include "hamming_scan.inc"
#undef ZK_TARGET
}  // namespace isa_avx2

// ---------------------------------------------------------------- AVX-512 VPOPCNTDQ
namespace isa_avx512 {
#define ZK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx2,popcnt")))
constexpr int kGroup = 8;

// Eight rows' qword partial sums -> one vector holding the eight row totals in row order.
ZK_TARGET static inline __m512i hsum8(const __m512i* a) {
    __m512i t01 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[0], a[1]), _mm512_unpackhi_epi64(a[0], a[1]));
    __m512i t23 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2], a[3]), _mm512_unpackhi_epi64(a[2], a[3]));
    __m512i t45 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[4], a[5]), _mm512_unpackhi_epi64(a[4], a[5]));
    __m512i t67 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[6], a[7]), _mm512_unpackhi_epi64(a[6], a[7]));
    __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t01, t23, 0x88), _mm512_shuffle_i64x2(t01, t23, 0xDD));
    __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t45, t67, 0x88), _mm512_shuffle_i64x2(t45, t67, 0xDD));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, 0x88), _mm512_shuffle_i64x2(u0, u1, 0xDD));
}

template <int NB>
ZK_TARGET static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
    const int n = NB ? NB : nb;
    const int full = n / 64;
    const int tail = n % 64;
    __m512i acc[8];
    for (int r = 0; r < 8; ++r) acc[r] = _mm512_setzero_si512();
    for (int c = 0; c < full; ++c) {
        const __m512i qv = _mm512_loadu_si512(q + 64 * c);
        for (int r = 0; r < 8; ++r) {
            __m512i x = _mm512_xor_si512(qv, _mm512_loadu_si512(rows + r * n + 64 * c));
            acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
        }
    }
    if (tail) {
        // Masked byte loads read only the code's own bytes (masked-off bytes cannot fault), so any
        // code length works without padding; the zeroed lanes XOR to zero.
        const __mmask64 m = (__mmask64)((1ULL << tail) - 1);
        const __m512i qv = _mm512_maskz_loadu_epi8(m, q + 64 * full);
        for (int r = 0; r < 8; ++r) {
            __m512i x = _mm512_xor_si512(qv, _mm512_maskz_loadu_epi8(m, rows + r * n + 64 * full));
            acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
        }
    }
    const __m256i v = _mm512_cvtepi64_epi32(hsum8(acc));
    _mm256_store_si256((__m256i*)d, v);
    return _mm256_cmple_epi32_mask(v, _mm256_set1_epi32(thresh));
}
#include "hamming_scan.inc"
#undef ZK_TARGET
}  // namespace isa_avx512
#endif

// ---------------------------------------------------------------- dispatch

static bool cpu_has(const std::string& isa) {
#ifdef ZK_X86
    __builtin_cpu_init();
    if (isa == "avx512")
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    if (isa == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
    return isa == "scalar";
}

static std::string best_isa() {
    if (cpu_has("avx512")) return "avx512";
    if (cpu_has("avx2")) return "avx2";
    return "scalar";
}

static ScanFn pick_scan(const std::string& isa, int nbytes) {
#ifdef ZK_X86
    if (isa == "avx512") return isa_avx512::pick(nbytes);
    if (isa == "avx2") return isa_avx2::pick(nbytes);
#endif
    return isa_scalar::pick(nbytes);
}

static int group_rows(const std::string& isa) { return isa == "avx512" ? 8 : isa == "avx2" ? 4 : 1; }

// Raw search on validated buffers. Runs without the GIL.
static void search_raw(const uint8_t* db, const int64_t* ids, int64_t n, const uint8_t* queries, int64_t nq,
                       int nbytes, int k, int num_threads, const std::string& isa, int32_t* out_d,
                       int64_t* out_i) {
    if (nq == 0) return;
    const int cap = (int)std::min<int64_t>(k, n);
    if (cap == 0) {  // empty database: everything is fill
        for (int64_t j = 0; j < nq * (int64_t)k; ++j) { out_d[j] = kFillDistance; out_i[j] = -1; }
        return;
    }
    const int g = group_rows(isa);
    Job job{db, ids, queries, nbytes, 0, 0};
    job.row_block = std::max<int64_t>(g, ((256 * 1024) / nbytes) / g * g);
    job.query_block = std::max<int64_t>(1, std::min<int64_t>(64, 8192 / nbytes));

    // Small problems are not worth a thread start (~tens of microseconds).
    int T = std::max(1, num_threads);
    if ((double)n * (double)nq * nbytes < 4.0e6) T = 1;

    // Every worker takes all queries and pulls database chunks from a shared counter: each code
    // byte is read from memory once per call whatever nq is, and a thread that loses its core to
    // another process (shared machines) just takes fewer chunks instead of stalling the call.
    const int64_t row_groups = (n + g - 1) / g;
    const int64_t chunk_groups = std::max<int64_t>(job.row_block / g, row_groups / (16 * (int64_t)T) + 1);
    const int64_t nchunks = (row_groups + chunk_groups - 1) / chunk_groups;
    T = (int)std::min<int64_t>(T, nchunks);
    std::vector<Worker> workers((size_t)T);
    for (Worker& w : workers) {
        w.q0 = 0;
        w.q1 = nq;
        w.hd.resize((size_t)(nq * cap));
        w.hi.resize((size_t)(nq * cap));
        w.heaps.resize((size_t)nq);
        for (int64_t j = 0; j < nq; ++j) {
            w.heaps[j].d = w.hd.data() + j * cap;
            w.heaps[j].id = w.hi.data() + j * cap;
            w.heaps[j].cap = cap;
        }
    }
    const ScanFn fn = pick_scan(isa, nbytes);
    std::atomic<int64_t> next{0};
    auto run = [&](Worker& w) {
        for (int64_t c; (c = next.fetch_add(1)) < nchunks;) {
            // Chunks start on group boundaries so only the last one has a ragged tail.
            w.r0 = std::min(n, c * chunk_groups * g);
            w.r1 = std::min(n, (c + 1) * chunk_groups * g);
            fn(job, w);
        }
    };
    if (T == 1) {
        run(workers[0]);
    } else {
        std::vector<std::thread> threads;
        std::vector<std::exception_ptr> errors(workers.size());
        for (size_t t = 0; t < workers.size(); ++t)
            threads.emplace_back([&, t] {
                try { run(workers[t]); } catch (...) { errors[t] = std::current_exception(); }
            });
        for (auto& th : threads) th.join();
        for (auto& e : errors)
            if (e) std::rethrow_exception(e);
    }
    std::vector<const TopK*> parts(workers.size());
    for (int64_t q = 0; q < nq; ++q) {
        for (size_t t = 0; t < workers.size(); ++t) parts[t] = &workers[t].heaps[(size_t)q];
        merge_topk(parts, k, out_d + q * k, out_i + q * k);
    }
}

}  // namespace zk

using U8 = py::array_t<uint8_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

static py::tuple py_search(U8 db, I64 ids, U8 queries, int k, int num_threads, std::string isa) {
    // The Python layer validates first; these checks keep a direct caller from reading out of bounds.
    if (db.ndim() != 2 || queries.ndim() != 2 || ids.ndim() != 1)
        throw py::value_error("db and queries must be 2-D uint8, ids 1-D int64");
    const int64_t n = db.shape(0), nq = queries.shape(0);
    const int64_t nbytes = db.shape(1);
    if (nbytes <= 0 || queries.shape(1) != nbytes)
        throw py::value_error("queries must have the same code width (bytes per row) as the database");
    if (ids.shape(0) != n) throw py::value_error("ids must have one entry per database row");
    if (k <= 0) throw py::value_error("k must be a positive integer");
    if (isa == "auto") isa = zk::best_isa();
    if (isa != "avx512" && isa != "avx2" && isa != "scalar")
        throw py::value_error("isa must be one of 'auto', 'avx512', 'avx2', 'scalar'");
    if (!zk::cpu_has(isa)) throw py::value_error("this CPU does not support isa '" + isa + "'");
    if (num_threads <= 0) num_threads = (int)std::max(1u, std::thread::hardware_concurrency());

    py::array_t<int32_t> out_d({nq, (int64_t)k});
    py::array_t<int64_t> out_i({nq, (int64_t)k});
    const uint8_t* pdb = db.data();
    const int64_t* pid = ids.data();
    const uint8_t* pq = queries.data();
    int32_t* od = out_d.mutable_data();
    int64_t* oi = out_i.mutable_data();
    {
        py::gil_scoped_release release;  // the arrays stay referenced by this frame meanwhile
        zk::search_raw(pdb, pid, n, pq, nq, (int)nbytes, k, num_threads, isa, od, oi);
    }
    return py::make_tuple(out_d, out_i);
}

PYBIND11_MODULE(_hamming, m) {
    m.doc() = "Exact top-k Hamming search over packed binary codes (AVX-512 VPOPCNTDQ / AVX2 / scalar)";
    m.def("search", &py_search, py::arg("db"), py::arg("ids"), py::arg("queries"), py::arg("k"),
          py::arg("num_threads") = 0, py::arg("isa") = "auto",
          "Top-k smallest Hamming distances; returns (int32 [nq,k], int64 [nq,k]); ties by smaller id, "
          "fill (INT32_MAX, -1) when k > n.");
    m.def("best_isa", &zk::best_isa, "The instruction set 'auto' picks on this CPU.");
    m.def("cpu_has", &zk::cpu_has, py::arg("isa"), "Whether this CPU can run the given isa variant.");
    m.attr("FILL_DISTANCE") = zk::kFillDistance;
}
