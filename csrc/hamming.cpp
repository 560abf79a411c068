// Exact top-k Hamming search over packed binary codes (CPU), bound with pybind11 as zkernels._hamming.
//
// Three instruction-set variants (AVX-512 with VPOPCNTDQ, AVX2, portable scalar) are traits types
// (hamming_isa.h) that share one blocked scan loop (hamming_scan.h); the variant is chosen at run
// time from the table below, as zkernels._cpu_ops chooses its own (isa_features.h: each variant runs
// only where the CPU has every feature it is compiled for), so one binary runs on any x86-64.
//
// Work split: each thread keeps a bounded heap per query and takes database chunks from a shared
// counter, scanning each chunk for all queries; the per-thread heaps are merged at the end.
// Result contract (ascending distance, ties by smaller id, fill): hamming_topk.h.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hamming_isa.h"
#include "hamming_scan.h"
#include "hamming_topk.h"

namespace py = pybind11;

namespace zk {

// ---------------------------------------------------------------- dispatch
// One entry per variant, fastest first (isa_features.h: its features are its compile target and what
// the run-time check asks for).
struct IsaEntry {
    IsaVariant isa;
    int group_rows;
    ScanFn (*pick)(int nbytes);
};

template <class Isa>
constexpr IsaEntry entry() { return {{Isa::kName, Isa::kFeatures}, Isa::kGroup, &pick_scan<Isa>}; }

static const IsaEntry kIsas[] = {
#ifdef ZK_X86
    entry<Avx512>(),
    entry<Avx2>(),
#endif
    entry<Scalar>(),
};

static const IsaEntry* find_isa(const std::string& name) {
    for (const IsaEntry& e : kIsas)
        if (name == e.isa.name) return &e;
    return nullptr;
}

// Which variants this CPU runs, read once per process.
static bool runs_here(const IsaEntry& e) {
    static const std::vector<bool> supported = [] {
        std::vector<bool> s;
        for (const IsaEntry& x : kIsas) s.push_back(runs_on_this_cpu(x.isa));
        return s;
    }();
    return supported[(size_t)(&e - kIsas)];
}

static bool cpu_has(const std::string& isa) {
    const IsaEntry* e = find_isa(isa);
    return e != nullptr && runs_here(*e);
}

static std::string best_isa() {
    for (const IsaEntry& e : kIsas)
        if (runs_here(e)) return e.isa.name;
    return Scalar::kName;
}

static std::string built_names() {
    std::string out;
    for (const IsaEntry& e : kIsas) out += std::string(out.empty() ? "" : ", ") + "'" + e.isa.name + "'";
    return out;
}

// Raw search on validated buffers. Runs without the GIL.
static void search_raw(const uint8_t* db, const int64_t* ids, int64_t n, const uint8_t* queries, int64_t nq,
                       int nbytes, int k, int num_threads, const IsaEntry& isa, int32_t* out_d,
                       int64_t* out_i) {
    if (nq == 0) return;
    const int cap = (int)std::min<int64_t>(k, n);
    if (cap == 0) {  // empty database: everything is fill
        for (int64_t j = 0; j < nq * (int64_t)k; ++j) { out_d[j] = kFillDistance; out_i[j] = -1; }
        return;
    }
    const int g = isa.group_rows;
    Job job{db, ids, queries, nq, nbytes, 0, 0};
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
        w.hd.resize((size_t)(nq * cap));
        w.hi.resize((size_t)(nq * cap));
        w.heaps.resize((size_t)nq);
        for (int64_t j = 0; j < nq; ++j) {
            w.heaps[j].d = w.hd.data() + j * cap;
            w.heaps[j].id = w.hi.data() + j * cap;
            w.heaps[j].cap = cap;
        }
    }
    const ScanFn fn = isa.pick(nbytes);
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
    if (zk::find_isa(isa) == nullptr)
        throw py::value_error("isa must be 'auto' or one of the built variants " + zk::built_names());
    if (!zk::cpu_has(isa)) throw py::value_error("this CPU does not support isa '" + isa + "'");
    const zk::IsaEntry& variant = *zk::find_isa(isa);  // cpu_has found it
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
        zk::search_raw(pdb, pid, n, pq, nq, (int)nbytes, k, num_threads, variant, od, oi);
    }
    return py::make_tuple(out_d, out_i);
}

PYBIND11_MODULE(_hamming, m) {
    m.doc() = "Exact top-k Hamming search over packed binary codes (AVX-512 VPOPCNTDQ / AVX2 / scalar)";
    m.def("search", &py_search, py::arg("db"), py::arg("ids"), py::arg("queries"), py::arg("k"),
          py::arg("num_threads") = 0, py::arg("isa") = "auto",
          "Top-k smallest Hamming distances; returns (int32 [nq,k], int64 [nq,k]) ordered and filled as "
          "zkernels.binary.topk_contract describes.");
    m.def("best_isa", &zk::best_isa, "The instruction set 'auto' picks on this CPU.");
    m.def("cpu_has", &zk::cpu_has, py::arg("isa"), "Whether this CPU can run the given isa variant.");
    m.def("isa_features", [] {
        py::dict out;
        for (const zk::IsaEntry& e : zk::kIsas) out[e.isa.name] = zk::feature_list(e.isa.features);
        return out;
    }, "Each built variant (fastest first) -> the CPU features it is compiled for and checked against.");
    m.def("isa_runs_with", [](const std::string& isa, const std::vector<std::string>& present) {
        const zk::IsaEntry* e = zk::find_isa(isa);
        if (e == nullptr) throw py::value_error("unknown isa '" + isa + "'");
        return zk::runs_with(e->isa, [&](const std::string& f) {
            return std::find(present.begin(), present.end(), f) != present.end();
        });
    }, py::arg("isa"), py::arg("present"),
          "Whether the run-time check lets `isa` run on a CPU with exactly the `present` features.");
    m.attr("FILL_DISTANCE") = zk::kFillDistance;
}
