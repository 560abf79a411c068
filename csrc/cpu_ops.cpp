// zkernels._cpu_ops: the CPU model ops (RMSNorm, add + RMSNorm, QK-norm + RoPE, SwiGLU, shared-prefix
// varlen attention), bound with pybind11 on raw buffers.
//
// The Python wrapper (zkernels/kernels/cpu.py) validates dtypes, devices, shapes and strides and
// allocates the outputs; this file re-checks what could make a kernel read or write out of bounds
// (sizes, index arrays, positions), picks the instruction-set variant (best one this CPU runs, or the
// one asked for), splits the work over the thread pool, and runs it without the GIL.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cpu_ops.h"
#include "cpu_pool.h"
#include "cpu_quant_bindings.h"

namespace py = pybind11;
using namespace zk::cpu;

namespace {

// ---------------------------------------------------------------- instruction sets
bool cpu_supports(const std::string& name) {
    if (name == "scalar") return true;
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (name == "avx2") return avx2;
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (name == "avx512") return avx512;
    if (name == "avx512bf16") return avx512 && __builtin_cpu_supports("avx512bf16");
#endif
    return false;
}

const KernelTable* table_for(const std::string& name) {
    if (name == "scalar") return kernels_scalar();
    if (name == "avx2") return kernels_avx2();
    if (name == "avx512") return kernels_avx512();
    if (name == "avx512bf16") return kernels_avx512bf16();
    return nullptr;
}

const char* const kIsaOrder[] = {"avx512bf16", "avx512", "avx2", "scalar"};  // fastest first

std::vector<std::string> built_isas() {
    std::vector<std::string> out;
    for (const char* n : kIsaOrder)
        if (table_for(n) != nullptr) out.push_back(n);
    return out;
}

std::string best_isa() {
    for (const char* n : kIsaOrder)
        if (table_for(n) != nullptr && cpu_supports(n)) return n;
    return "scalar";
}

const KernelTable* pick(const std::string& isa) {
    const std::string name = isa == "auto" ? best_isa() : isa;
    const KernelTable* t = table_for(name);
    if (t == nullptr)
        throw py::value_error("unknown or unbuilt isa '" + isa + "' (built: auto, avx512bf16, avx512, avx2, scalar)");
    if (!cpu_supports(name)) throw py::value_error("this CPU cannot run isa '" + name + "'");
    return t;
}

DType dtype_of(int code) {
    if (code != 0 && code != 1) throw py::value_error("dtype code must be 0 (float32) or 1 (bfloat16)");
    return (DType)code;
}

void check(bool ok, const std::string& what) {
    if (!ok) throw py::value_error(what);
}

const void* cptr(uintptr_t p) { return reinterpret_cast<const void*>(p); }
void* mptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

// Rows per task so that each task is worth a dispatch (~16k values) and every thread gets several.
int64_t row_chunk(int64_t rows, int64_t values_per_row, int threads) {
    const int64_t by_size = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, values_per_row));
    const int64_t by_balance = std::max<int64_t>(1, rows / (4 * (int64_t)std::max(1, threads)));
    return std::min(by_size > by_balance ? by_balance : by_size, std::max<int64_t>(1, rows));
}

// Runs fn(r0, r1) over row chunks on the pool; small jobs stay on the calling thread.
template <class Fn>
void parallel_rows(int threads, int64_t rows, int64_t values_per_row, Fn fn) {
    if (rows <= 0) return;
    if (threads <= 1 || rows * values_per_row < 32768) {
        fn(0, rows);
        return;
    }
    const int64_t chunk = std::max(row_chunk(rows, values_per_row, threads), (int64_t)1);
    const int64_t tasks = (rows + chunk - 1) / chunk;
    Pool::instance().run(threads, tasks, 1, [&](int64_t t, int) { fn(t * chunk, std::min(rows, (t + 1) * chunk)); });
}

// ---------------------------------------------------------------- ops
void py_rms_norm(uintptr_t x, int64_t sx, uintptr_t res, int64_t sr, uintptr_t w, uintptr_t out, int64_t so,
                 uintptr_t sum_out, int64_t ss, int64_t rows, int64_t cols, double eps, int dtype,
                 const std::string& isa, int threads) {
    check(rows >= 0 && cols > 0, "rms_norm: rows must be >= 0 and cols > 0");
    check(sx >= cols && so >= cols && (res == 0 || (sr >= cols && ss >= cols && sum_out != 0)),
          "rms_norm: row strides must be at least cols");
    check(rows == 0 || (x != 0 && w != 0 && out != 0), "rms_norm: null buffer");
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(dtype);
    RmsArgs a{cptr(x), sx, res ? cptr(res) : nullptr, sr, cptr(w), mptr(out), so,
              res ? mptr(sum_out) : nullptr, ss, rows, cols, (float)eps};
    py::gil_scoped_release nogil;
    parallel_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) { t->rms_norm(a, dt, r0, r1); });
}

void check_positions(const int64_t* pos, int64_t n, int64_t n_positions, const char* what) {
    for (int64_t i = 0; i < n; ++i)
        if (pos[i] < 0 || pos[i] >= n_positions)
            throw py::value_error(std::string("qk_norm_rope: ") + what + "[" + std::to_string(i) + "] = " +
                                  std::to_string(pos[i]) + " is outside the rope tables (" +
                                  std::to_string(n_positions) + " positions)");
}

void py_qk_norm_rope(uintptr_t q, int64_t sq_t, int64_t sq_h, uintptr_t k, int64_t sk_t, int64_t sk_h,
                     uintptr_t qw, uintptr_t kw, uintptr_t q_pos, uintptr_t k_pos, uintptr_t q_out,
                     uintptr_t k_out, int64_t tq, int64_t hq, int64_t tk, int64_t hk, int64_t head_dim,
                     uintptr_t cos, uintptr_t sin, int64_t cs_stride, int64_t n_positions, double eps, int dtype,
                     const std::string& isa, int threads) {
    check(tq >= 0 && tk >= 0 && hq > 0 && hk > 0, "qk_norm_rope: bad sizes");
    check(head_dim > 0 && head_dim % 2 == 0, "qk_norm_rope: head_dim must be even");
    check(cs_stride >= head_dim / 2 && n_positions > 0, "qk_norm_rope: bad cos/sin table");
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(dtype);
    check_positions(reinterpret_cast<const int64_t*>(q_pos), tq, n_positions, "q_positions");
    check_positions(reinterpret_cast<const int64_t*>(k_pos), tk, n_positions, "k_positions");
    NormRopeArgs a{{cptr(q), sq_t, sq_h, cptr(qw), reinterpret_cast<const int64_t*>(q_pos), mptr(q_out), tq, hq},
                   {cptr(k), sk_t, sk_h, cptr(kw), reinterpret_cast<const int64_t*>(k_pos), mptr(k_out), tk, hk},
                   reinterpret_cast<const float*>(cos), reinterpret_cast<const float*>(sin), cs_stride, head_dim,
                   (float)eps};
    py::gil_scoped_release nogil;
    parallel_rows(threads, tq + tk, std::max(hq, hk) * head_dim,
                  [&](int64_t r0, int64_t r1) { t->norm_rope(a, dt, r0, r1); });
}

void py_swiglu(uintptr_t gate, int64_t sg, uintptr_t up, int64_t su, uintptr_t out, int64_t so, int64_t rows,
               int64_t cols, int dtype, const std::string& isa, int threads) {
    check(rows >= 0 && cols > 0, "swiglu: rows must be >= 0 and cols > 0");
    check(sg >= cols && su >= cols && so >= cols, "swiglu: row strides must be at least cols");
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(dtype);
    SwigluArgs a{cptr(gate), sg, cptr(up), su, mptr(out), so, rows, cols};
    py::gil_scoped_release nogil;
    parallel_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) { t->swiglu(a, dt, r0, r1); });
}

// Checks the index arrays against the buffers (a bad index would read outside them) and builds the
// work plan: the shared key ranges (prefixes), each sequence's links to them, the work items.
struct Plan {
    std::vector<KeyRange> ranges;
    std::vector<AttnSeq> seqs;
    std::vector<AttnItem> items;
    std::vector<std::pair<int64_t, int64_t>> tasks;  // item ranges [i0, i1) handed to one thread each
    int64_t max_own_tiles = 0;
};

Plan make_plan(const AttnArgs& a, int64_t tq, int64_t tk, int64_t tp, int threads) {
    const int64_t S = a.n_seqs, G = a.heads / a.kv_heads;
    Plan plan;
    plan.seqs.resize((size_t)S);
    check(a.cu_q[0] == 0 && a.cu_k[0] == 0, "attention: cu_seqlens_q and cu_seqlens_k must start at 0");
    check(a.cu_q[S] <= tq, "attention: cu_seqlens_q ends past q's rows");
    check(a.cu_k[S] <= tk, "attention: cu_seqlens_k ends past k's rows");
    std::map<std::tuple<int64_t, int64_t>, int32_t> shared;  // (start, len) in the prefix buffers
    for (int64_t s = 0; s < S; ++s) {
        const int64_t nq = a.cu_q[s + 1] - a.cu_q[s], nk = a.cu_k[s + 1] - a.cu_k[s];
        const int64_t ps = a.p_start[s], pl = a.p_len[s];
        const std::string at = " (sequence " + std::to_string(s) + ")";
        check(nq >= 0 && nk >= 0, "attention: cu_seqlens must not decrease" + at);
        check(ps >= 0 && pl >= 0 && ps + pl <= tp, "attention: prefix rows outside the prefix buffer" + at);
        check(nq <= nk + pl, "attention: more query rows than keys" + at);
        plan.seqs[(size_t)s] = {-1, -1};
        if (pl > 0) {
            auto key = std::make_tuple(ps, pl);
            auto found = shared.find(key);
            if (found == shared.end()) {
                found = shared.emplace(key, (int32_t)plan.ranges.size()).first;
                plan.ranges.push_back({a.pk, a.spk_t, a.spk_h, a.pv, a.spv_t, a.spv_h, ps, pl, nullptr, nullptr});
            }
            plan.seqs[(size_t)s].prefix_range = found->second;
        }
    }
    // A sequence whose own rows are a shared prefix (the prefix sequence itself) reads those tiles.
    const bool same_buffers = a.pk == a.k && a.pv == a.v && a.spk_t == a.sk_t && a.spk_h == a.sk_h &&
                              a.spv_t == a.sv_t && a.spv_h == a.sv_h;
    for (int64_t s = 0; s < S; ++s) {
        const int64_t nq = a.cu_q[s + 1] - a.cu_q[s], nk = a.cu_k[s + 1] - a.cu_k[s];
        if (same_buffers && nk > 0) {
            auto found = shared.find(std::make_tuple((int64_t)a.cu_k[s], nk));
            if (found != shared.end()) plan.seqs[(size_t)s].own_range = found->second;
        }
        // tiles a thread prepares: the prefix's partial last tile (if any) and the own keys
        const int64_t tail = a.p_len[s] % kKeyTile;
        if (!(a.p_len[s] == 0 && plan.seqs[(size_t)s].own_range >= 0))
            plan.max_own_tiles = std::max(plan.max_own_tiles, (tail + nk + kKeyTile - 1) / kKeyTile);
        for (int64_t h = 0; h < a.kv_heads; ++h)
            for (int64_t r = 0; r < nq * G; r += kQueryRows) plan.items.push_back({(int32_t)s, (int32_t)h, (int32_t)r});
    }
    // Longest work first (a long sequence's items are the last to finish otherwise); the items of one
    // sequence and head stay in order, so a thread usually reuses the key tiles it just prepared.
    auto cost = [&](const AttnItem& it) {
        const int64_t s = it.seq;
        return (a.cu_q[s + 1] - a.cu_q[s]) * (a.cu_k[s + 1] - a.cu_k[s] + a.p_len[s]);
    };
    std::stable_sort(plan.items.begin(), plan.items.end(), [&](const AttnItem& x, const AttnItem& y) {
        const int64_t cx = cost(x), cy = cost(y);
        if (cx != cy) return cx > cy;
        return x.seq != y.seq ? x.seq < y.seq : (x.kv_head != y.kv_head ? x.kv_head < y.kv_head : x.row0 < y.row0);
    });
    // One task per (sequence, kv head) when there are enough of them to balance the threads: its items
    // then run on one thread, which prepares the sequence's key tiles once and keeps them in its caches.
    // Few long sequences: one task per item instead (tiles prepared by each thread that needs them).
    std::vector<std::pair<int64_t, int64_t>> groups;
    for (int64_t i = 0; i < (int64_t)plan.items.size(); ++i) {
        const AttnItem& it = plan.items[(size_t)i];
        if (groups.empty() || plan.items[(size_t)groups.back().first].seq != it.seq ||
            plan.items[(size_t)groups.back().first].kv_head != it.kv_head)
            groups.emplace_back(i, i + 1);
        else
            groups.back().second = i + 1;
    }
    if ((int64_t)groups.size() >= 4 * (int64_t)std::max(1, threads)) {
        plan.tasks = std::move(groups);
    } else {
        for (int64_t i = 0; i < (int64_t)plan.items.size(); ++i) plan.tasks.emplace_back(i, i + 1);
    }
    return plan;
}

void py_attention(uintptr_t q, int64_t sq_t, int64_t sq_h, uintptr_t k, int64_t sk_t, int64_t sk_h, uintptr_t v,
                  int64_t sv_t, int64_t sv_h, uintptr_t pk, int64_t spk_t, int64_t spk_h, uintptr_t pv,
                  int64_t spv_t, int64_t spv_h, uintptr_t out, int64_t so_t, int64_t so_h, uintptr_t cu_q,
                  uintptr_t cu_k, uintptr_t p_start, uintptr_t p_len, int64_t n_seqs, int64_t tq, int64_t tk,
                  int64_t tp, int64_t heads, int64_t kv_heads, int64_t head_dim, double scale, int dtype,
                  const std::string& isa, int threads) {
    check(n_seqs >= 0 && tq >= 0 && tk >= 0 && tp >= 0, "attention: bad sizes");
    check(kv_heads > 0 && heads > 0 && heads % kv_heads == 0, "attention: heads must be a multiple of kv_heads");
    check(head_dim > 0 && head_dim % 16 == 0, "attention: head_dim must be a positive multiple of 16");
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(dtype);
    AttnArgs a{cptr(q), sq_t, sq_h, cptr(k), sk_t, sk_h, cptr(v), sv_t, sv_h, cptr(pk), spk_t, spk_h,
               cptr(pv), spv_t, spv_h, mptr(out), so_t, so_h,
               reinterpret_cast<const int32_t*>(cu_q), reinterpret_cast<const int32_t*>(cu_k),
               reinterpret_cast<const int32_t*>(p_start), reinterpret_cast<const int32_t*>(p_len),
               n_seqs, heads, kv_heads, head_dim, (float)scale};
    if (n_seqs == 0 || tq == 0) return;
    Plan plan = make_plan(a, tq, tk, tp, threads);
    if (plan.items.empty()) return;

    py::gil_scoped_release nogil;
    const int64_t tf = tile_floats(head_dim);
    // Phase 1: every shared prefix into fp32 tiles, once.
    std::vector<std::tuple<int64_t, int64_t, int64_t>> units;  // (range, tile, kv head)
    int64_t shared_tiles = 0;
    for (const KeyRange& r : plan.ranges) shared_tiles += (r.len + kKeyTile - 1) / kKeyTile;
    std::unique_ptr<float[]> shared(new float[(size_t)std::max<int64_t>(1, 2 * shared_tiles * kv_heads * tf)]);
    int64_t offset = 0;
    for (size_t i = 0; i < plan.ranges.size(); ++i) {
        KeyRange& r = plan.ranges[i];
        const int64_t n = (r.len + kKeyTile - 1) / kKeyTile;
        r.kt = shared.get() + offset;
        r.vt = r.kt + n * kv_heads * tf;
        offset += 2 * n * kv_heads * tf;
        for (int64_t j = 0; j < n; ++j)
            for (int64_t h = 0; h < kv_heads; ++h) units.emplace_back((int64_t)i, j, h);
    }
    Pool& pool = Pool::instance();
    const int n_threads = std::max(1, threads);
    pool.run(n_threads, (int64_t)units.size(), 1, [&](int64_t u, int) {
        const auto [i, j, h] = units[(size_t)u];
        const KeyRange& r = plan.ranges[(size_t)i];
        t->prep_tile(r, dt, head_dim, j, h, r.kt + (j * kv_heads + h) * tf, r.vt + (j * kv_heads + h) * tf);
    });
    // Phase 2: the items.
    AttnPlan ap{plan.ranges.data(), plan.seqs.data(), plan.items.data(), plan.max_own_tiles};
    const int64_t per_thread = attention_work_floats(head_dim) + 2 * plan.max_own_tiles * tf + 16;
    std::unique_ptr<float[]> scratch(new float[(size_t)(per_thread * n_threads)]);
    std::vector<AttnThread> state((size_t)n_threads);
    for (int i = 0; i < n_threads; ++i) {
        AttnThread& s = state[(size_t)i];
        s.work = scratch.get() + i * per_thread;
        s.own_kt = s.work + attention_work_floats(head_dim);
        s.own_vt = s.own_kt + plan.max_own_tiles * tf;
    }
    pool.run(n_threads, (int64_t)plan.tasks.size(), 1, [&](int64_t task, int tid) {
        for (int64_t i = plan.tasks[(size_t)task].first; i < plan.tasks[(size_t)task].second; ++i)
            t->attention_item(a, dt, ap, i, state[(size_t)tid]);
    });
}

}  // namespace

PYBIND11_MODULE(_cpu_ops, m) {
    m.doc() = "zkernels' CPU model ops on raw buffers (use zkernels.kernels.cpu, which validates tensors)";
    m.def("built_isas", &built_isas, "Instruction-set variants compiled into this module, fastest first.");
    m.def("cpu_supports", &cpu_supports, py::arg("isa"), "Whether this CPU can run the given variant.");
    m.def("best_isa", &best_isa, "The variant 'auto' picks on this CPU.");
    m.def("rms_norm", &py_rms_norm);
    m.def("qk_norm_rope", &py_qk_norm_rope);
    m.def("swiglu", &py_swiglu);
    m.def("attention", &py_attention);
    m.attr("QUERY_ROWS") = kQueryRows;
    m.attr("KEY_TILE") = kKeyTile;
    zk::quant::register_bindings(m);  // per-token int8 quantization (csrc/cpu_quant.cpp)
}
