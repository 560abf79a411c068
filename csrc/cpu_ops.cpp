// zkernels._cpu_ops: the CPU model ops (RMSNorm, add + RMSNorm, QK-norm + RoPE, SwiGLU, shared-prefix
// varlen attention), bound with pybind11.
//
// Each op takes its tensors by keyword (py::kw_only: no argument can be handed over in the wrong
// place) and reads their pointers, dtypes, shapes and strides from the tensors themselves
// (cpu_tensor_view.h). It checks what its kernel relies on (shapes that agree, last-dim strides of 1,
// contiguous outputs, one floating dtype, int32/int64 index arrays and the values in them) and raises
// a ValueError naming the argument, so bad input never makes a kernel read or write out of bounds. The
// Python wrappers (each op file's C++ section in zkernels/kernels/) allocate the outputs and fall back
// to torch where these kernels do not apply. Then this file picks the instruction-set variant
// (isa_features.h), splits the work over the thread pool, and runs it without the GIL.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "cpu_ops.h"
#include "cpu_pool.h"
#include "cpu_tensor_view.h"
#include "isa_features.h"
#include "cpu_quant_bindings.h"

namespace py = pybind11;
using namespace zk::cpu;
using zk::IsaVariant;

namespace {

// ---------------------------------------------------------------- instruction sets
struct Variant {
    IsaVariant isa;                      // its name and features (isa_features.h)
    const KernelTable* (*table)();      // nullptr where not built (non-x86)
};
const Variant kVariants[] = {            // fastest first
    {{"avx512bf16", ZK_CPU_AVX512BF16_FEATURES}, kernels_avx512bf16},
    {{"avx512", ZK_CPU_AVX512_FEATURES}, kernels_avx512},
    {{"avx2", ZK_CPU_AVX2_FEATURES}, kernels_avx2},
    {{"scalar", ""}, kernels_scalar},
};

const Variant* find_variant(const std::string& name) {
    for (const Variant& v : kVariants)
        if (name == v.isa.name && v.table() != nullptr) return &v;
    return nullptr;
}

// Which variants this CPU runs, read once per process.
bool runs_here(const Variant& v) {
    static const std::vector<bool> supported = [] {
        std::vector<bool> s;
        for (const Variant& x : kVariants) s.push_back(x.table() != nullptr && zk::runs_on_this_cpu(x.isa));
        return s;
    }();
    return supported[(size_t)(&v - kVariants)];
}

bool cpu_supports(const std::string& name) {
    const Variant* v = find_variant(name);
    return v != nullptr && runs_here(*v);
}

std::vector<std::string> built_isas() {
    std::vector<std::string> out;
    for (const Variant& v : kVariants)
        if (v.table() != nullptr) out.push_back(v.isa.name);
    return out;
}

std::string best_isa() {
    for (const Variant& v : kVariants)
        if (v.table() != nullptr && runs_here(v)) return v.isa.name;
    return "scalar";
}

const KernelTable* pick(const std::string& isa) {
    const std::string name = isa == "auto" ? best_isa() : isa;
    const Variant* v = find_variant(name);
    if (v == nullptr) {
        std::string built;
        for (const std::string& n : built_isas()) built += ", " + n;
        throw py::value_error("unknown or unbuilt isa '" + isa + "' (built: auto" + built + ")");
    }
    if (!runs_here(*v)) throw py::value_error("this CPU cannot run isa '" + name + "'");
    return v->table();
}

void check(bool ok, const std::string& what) {
    if (!ok) throw py::value_error(what);
}

DType dtype_of(const TensorView& v) {
    v.expect_float();
    return v.elem == Elem::BF16 ? DType::BF16 : DType::F32;
}

// The first operand of a row op: 2-D float rows [rows, cols] with contiguous rows and cols > 0.
TensorView float_rows(const std::string& op, const char* name, py::handle t) {
    TensorView v = view_of(op, name, t);
    v.expect_dim(2);
    v.expect_float();
    v.expect_unit_last_stride();
    if (v.size(1) <= 0) v.fail("must have a non-empty last dim, got shape " + v.shape_str());
    return v;
}

// A floating operand of the same dtype as `first`, with contiguous rows (last-dim stride 1).
TensorView operand(const std::string& op, const char* name, py::handle t, const TensorView& first,
                   const std::vector<int64_t>& shape) {
    TensorView v = view_of(op, name, t);
    v.expect_shape(shape);
    v.expect_same_elem(first);
    v.expect_unit_last_stride();
    return v;
}

TensorView output(const std::string& op, const char* name, py::handle t, const TensorView& first,
                  const std::vector<int64_t>& shape) {
    TensorView v = operand(op, name, t, first, shape);
    v.expect_contiguous();
    return v;
}

// An index array: 1-D, contiguous, of `elem`, `n` entries.
TensorView indices(const std::string& op, const char* name, py::handle t, Elem elem, int64_t n) {
    TensorView v = view_of(op, name, t);
    v.expect_shape({n});
    v.expect_elem(elem);
    v.expect_contiguous();
    return v;
}

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
void py_rms_norm(py::handle x_, py::handle weight_, py::handle out_, py::handle residual_, py::handle sum_out_,
                 double eps, const std::string& isa, int threads) {
    const std::string op = "rms_norm";
    const TensorView x = float_rows(op, "x", x_);
    const int64_t rows = x.size(0), cols = x.size(1);
    const TensorView w = operand(op, "weight", weight_, x, {cols});
    const TensorView out = output(op, "out", out_, x, {rows, cols});
    if (residual_.is_none() != sum_out_.is_none())
        throw py::value_error("rms_norm: residual and sum_out go together: pass both or neither");
    TensorView res, sum;
    if (!residual_.is_none()) {
        res = operand(op, "residual", residual_, x, {rows, cols});
        sum = output(op, "sum_out", sum_out_, x, {rows, cols});
    }
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(x);
    RmsArgs a{x.data(), x.strides(0), res.ptr ? res.data() : nullptr, res.ptr ? res.strides(0) : 0, w.data(),
              out.mutable_data(), out.strides(0), sum.ptr ? sum.mutable_data() : nullptr, sum.ptr ? sum.strides(0) : 0,
              rows, cols, (float)eps};
    py::gil_scoped_release nogil;
    parallel_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) { t->rms_norm(a, dt, r0, r1); });
}

void check_positions(const TensorView& pos, int64_t n_positions) {
    const int64_t* p = reinterpret_cast<const int64_t*>(pos.ptr);
    for (int64_t i = 0; i < pos.size(0); ++i)
        if (p[i] < 0 || p[i] >= n_positions)
            throw py::value_error("qk_norm_rope: " + pos.name + "[" + std::to_string(i) + "] = " + std::to_string(p[i]) +
                                  " is outside the rope tables (" + std::to_string(n_positions) + " positions)");
}

NormRopeSide head_side(const std::string& op, const char* name, py::handle x_, py::handle w_, py::handle pos_,
                       py::handle out_, const TensorView& first, int64_t head_dim, int64_t n_positions) {
    const TensorView x = view_of(op, name, x_);
    x.expect_dim(3);
    x.expect_same_elem(first);
    x.expect_unit_last_stride();
    const int64_t tokens = x.size(0), heads = x.size(1);
    if (x.size(2) != head_dim) x.fail("must have head_dim " + std::to_string(head_dim) + ", got shape " + x.shape_str());
    if (heads <= 0) x.fail("must have at least one head, got shape " + x.shape_str());
    const std::string n = name;
    const TensorView w = operand(op, (n + "_weight").c_str(), w_, first, {head_dim});
    const TensorView pos = indices(op, (n + "_positions").c_str(), pos_, Elem::I64, tokens);
    const TensorView out = output(op, (n + "_out").c_str(), out_, first, {tokens, heads, head_dim});
    check_positions(pos, n_positions);
    return {x.data(), x.strides(0), x.strides(1), w.data(), reinterpret_cast<const int64_t*>(pos.ptr),
            out.mutable_data(), tokens, heads};
}

void py_qk_norm_rope(py::handle q_, py::handle k_, py::handle q_weight, py::handle k_weight, py::handle q_positions,
                     py::handle k_positions, py::handle cos_, py::handle sin_, py::handle q_out, py::handle k_out,
                     double eps, const std::string& isa, int threads) {
    const std::string op = "qk_norm_rope";
    const TensorView q = view_of(op, "q", q_);
    q.expect_dim(3);
    q.expect_float();
    const int64_t head_dim = q.size(2);
    if (head_dim <= 0 || head_dim % 2) q.fail("must have an even head_dim, got shape " + q.shape_str());
    const TensorView cos = view_of(op, "cos", cos_);
    cos.expect_dim(2);
    cos.expect_elem(Elem::F32);
    cos.expect_shape({-1, head_dim / 2});
    cos.expect_unit_last_stride();
    const TensorView sin = view_of(op, "sin", sin_);
    sin.expect_shape(cos.shape);
    sin.expect_elem(Elem::F32);
    sin.expect_unit_last_stride();
    if (sin.strides(0) != cos.strides(0))
        sin.fail("must have cos's row stride " + std::to_string(cos.strides(0)) + ", got " + std::to_string(sin.strides(0)));
    const int64_t n_positions = cos.size(0);
    if (n_positions <= 0) cos.fail("must hold at least one position");
    const NormRopeSide qs = head_side(op, "q", q_, q_weight, q_positions, q_out, q, head_dim, n_positions);
    const NormRopeSide ks = head_side(op, "k", k_, k_weight, k_positions, k_out, q, head_dim, n_positions);
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(q);
    NormRopeArgs a{qs, ks, reinterpret_cast<const float*>(cos.ptr), reinterpret_cast<const float*>(sin.ptr),
                   cos.strides(0), head_dim, (float)eps};
    py::gil_scoped_release nogil;
    parallel_rows(threads, qs.tokens + ks.tokens, std::max(qs.heads, ks.heads) * head_dim,
                  [&](int64_t r0, int64_t r1) { t->norm_rope(a, dt, r0, r1); });
}

void py_swiglu(py::handle gate_, py::handle up_, py::handle out_, const std::string& isa, int threads) {
    const std::string op = "swiglu";
    const TensorView gate = float_rows(op, "gate", gate_);
    const int64_t rows = gate.size(0), cols = gate.size(1);
    const TensorView up = operand(op, "up", up_, gate, {rows, cols});
    const TensorView out = output(op, "out", out_, gate, {rows, cols});
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(gate);
    SwigluArgs a{gate.data(), gate.strides(0), up.data(), up.strides(0), out.mutable_data(), out.strides(0), rows, cols};
    py::gil_scoped_release nogil;
    parallel_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) { t->swiglu(a, dt, r0, r1); });
}

// ---------------------------------------------------------------- fused per-token quantization
// The outputs of a quantizing op: uint8 codes [rows, cols] and float32 scales [rows], both contiguous.
TensorView codes_out(const std::string& op, py::handle t, int64_t rows, int64_t cols) {
    TensorView v = view_of(op, "q_out", t);
    v.expect_shape({rows, cols});
    if (v.dtype != "torch.uint8") v.fail("must be torch.uint8, got " + v.dtype);
    v.expect_contiguous();
    return v;
}

TensorView row_scales(const std::string& op, const char* name, py::handle t, int64_t rows) {
    TensorView v = view_of(op, name, t);
    v.expect_shape({rows});
    v.expect_elem(Elem::F32);
    v.expect_contiguous();
    return v;
}

// The matmul output an op reads with its per-row scale: float32 rows [rows, cols] (last-dim stride 1).
TensorView scaled_rows(const std::string& op, const char* name, py::handle t, int64_t rows, int64_t cols) {
    TensorView v = view_of(op, name, t);
    v.expect_shape({rows, cols});
    v.expect_elem(Elem::F32);
    v.expect_unit_last_stride();
    return v;
}

// Runs a quantizing kernel over row chunks; raises naming the first row that was not finite.
template <class Fn>
void run_quantizing(const std::string& op, const char* input, int threads, int64_t rows, int64_t cols, Fn fn) {
    std::atomic<int64_t> bad{-1};
    {
        py::gil_scoped_release nogil;
        parallel_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) {
            const int64_t b = fn(r0, r1);
            int64_t seen = bad.load();
            while (b >= 0 && (seen < 0 || b < seen) && !bad.compare_exchange_weak(seen, b)) {
            }
        });
    }
    if (bad.load() >= 0)
        throw py::value_error(op + ": row " + std::to_string(bad.load()) + " of " + input +
                              " holds a NaN or an infinity; int8 quantization needs finite activations");
}

void py_rms_norm_quantize(py::handle x_, py::handle weight_, py::handle q_out_, py::handle scale_out_,
                          py::handle residual_, py::handle sum_out_, py::handle x_scale_, double eps,
                          const std::string& isa, int threads) {
    const std::string op = "rms_norm_quantize";
    if (residual_.is_none() != sum_out_.is_none())
        throw py::value_error(op + ": residual and sum_out go together: pass both or neither");
    if (residual_.is_none() && !x_scale_.is_none())
        throw py::value_error(op + ": x_scale (x as a float32 matmul output) needs a residual to add it to");
    TensorView x, res, sum, xs;
    if (residual_.is_none()) {
        x = float_rows(op, "x", x_);
    } else {
        res = float_rows(op, "residual", residual_);
        const int64_t rows = res.size(0), cols = res.size(1);
        if (x_scale_.is_none()) {
            x = operand(op, "x", x_, res, {rows, cols});
        } else {
            x = scaled_rows(op, "x", x_, rows, cols);
            xs = row_scales(op, "x_scale", x_scale_, rows);
        }
        sum = output(op, "sum_out", sum_out_, res, {rows, cols});
    }
    const TensorView& first = residual_.is_none() ? x : res;  // its dtype is the values' element type
    const int64_t rows = first.size(0), cols = first.size(1);
    const TensorView w = operand(op, "weight", weight_, first, {cols});
    const TensorView q = codes_out(op, q_out_, rows, cols);
    const TensorView sc = row_scales(op, "scale_out", scale_out_, rows);
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(first);
    RmsQuantArgs a{x.data(), rows > 0 ? x.strides(0) : cols, xs.ptr ? reinterpret_cast<const float*>(xs.ptr) : nullptr,
                   residual_.is_none() ? nullptr : res.data(), residual_.is_none() ? 0 : res.strides(0), w.data(),
                   residual_.is_none() ? nullptr : sum.mutable_data(), residual_.is_none() ? 0 : sum.strides(0),
                   reinterpret_cast<uint8_t*>(q.ptr), cols, reinterpret_cast<float*>(sc.ptr), rows, cols, (float)eps};
    run_quantizing(op, "the normalised input", threads, rows, cols,
                   [&](int64_t r0, int64_t r1) { return t->rms_norm_quant(a, dt, r0, r1); });
}

void py_swiglu_quantize(py::handle gate_, py::handle up_, py::handle q_out_, py::handle scale_out_,
                        py::handle in_scale_, const std::string& dtype, const std::string& isa, int threads) {
    const std::string op = "swiglu_quantize";
    if (dtype != "float32" && dtype != "bfloat16")
        throw py::value_error(op + ": dtype must be 'float32' or 'bfloat16', got '" + dtype + "'");
    const TensorView gate = float_rows(op, "gate", gate_);
    const int64_t rows = gate.size(0), cols = gate.size(1);
    const TensorView up = operand(op, "up", up_, gate, {rows, cols});
    TensorView s;
    if (in_scale_.is_none()) {
        if (gate.dtype != "torch." + dtype) gate.fail("must be torch." + dtype + " (dtype), got " + gate.dtype);
    } else {
        gate.expect_elem(Elem::F32);  // an int8 matmul's output before its per-row scale
        s = row_scales(op, "in_scale", in_scale_, rows);
    }
    const TensorView q = codes_out(op, q_out_, rows, cols);
    const TensorView sc = row_scales(op, "scale_out", scale_out_, rows);
    const KernelTable* t = pick(isa);
    const DType dt = dtype == "bfloat16" ? DType::BF16 : DType::F32;
    SwigluQuantArgs a{gate.data(), rows > 0 ? gate.strides(0) : cols, up.data(), rows > 0 ? up.strides(0) : cols,
                      s.ptr ? reinterpret_cast<const float*>(s.ptr) : nullptr, reinterpret_cast<uint8_t*>(q.ptr), cols,
                      reinterpret_cast<float*>(sc.ptr), rows, cols};
    run_quantizing(op, "silu(gate) * up", threads, rows, cols,
                   [&](int64_t r0, int64_t r1) { return t->swiglu_quant(a, dt, r0, r1); });
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

void py_attention(py::handle q_, py::handle k_, py::handle v_, py::handle prefix_k_, py::handle prefix_v_,
                  py::handle out_, py::handle cu_seqlens_q, py::handle cu_seqlens_k, py::handle prefix_starts,
                  py::handle prefix_lens, double scale, const std::string& isa, int threads) {
    const std::string op = "attention";
    const TensorView q = view_of(op, "q", q_);
    q.expect_dim(3);
    q.expect_float();
    q.expect_unit_last_stride();
    const int64_t tq = q.size(0), heads = q.size(1), head_dim = q.size(2);
    if (head_dim <= 0 || head_dim % 16) q.fail("must have a head_dim that is a positive multiple of 16, got shape " +
                                               q.shape_str());
    const TensorView k = operand(op, "k", k_, q, {-1, -1, head_dim});
    const int64_t tk = k.size(0), kv_heads = k.size(1);
    if (kv_heads <= 0 || heads % kv_heads)
        k.fail("must have a number of heads that divides q's " + std::to_string(heads) + ", got shape " + k.shape_str());
    const TensorView v = operand(op, "v", v_, q, {tk, kv_heads, head_dim});
    const TensorView pk = operand(op, "prefix_k", prefix_k_, q, {-1, kv_heads, head_dim});
    const int64_t tp = pk.size(0);
    const TensorView pv = operand(op, "prefix_v", prefix_v_, q, {tp, kv_heads, head_dim});
    const TensorView out = operand(op, "out", out_, q, {tq, heads, head_dim});
    out.expect_contiguous();
    const TensorView cu_q = view_of(op, "cu_seqlens_q", cu_seqlens_q);
    cu_q.expect_dim(1);
    if (cu_q.size(0) < 1) cu_q.fail("must hold at least one entry (0)");
    const int64_t n_seqs = cu_q.size(0) - 1;
    const TensorView cq = indices(op, "cu_seqlens_q", cu_seqlens_q, Elem::I32, n_seqs + 1);
    const TensorView ck = indices(op, "cu_seqlens_k", cu_seqlens_k, Elem::I32, n_seqs + 1);
    const TensorView ps = indices(op, "prefix_starts", prefix_starts, Elem::I32, n_seqs);
    const TensorView pl = indices(op, "prefix_lens", prefix_lens, Elem::I32, n_seqs);
    const KernelTable* t = pick(isa);
    const DType dt = dtype_of(q);
    AttnArgs a{q.data(), q.strides(0), q.strides(1), k.data(), k.strides(0), k.strides(1), v.data(), v.strides(0),
               v.strides(1), pk.data(), pk.strides(0), pk.strides(1), pv.data(), pv.strides(0), pv.strides(1),
               out.mutable_data(), out.strides(0), out.strides(1),
               reinterpret_cast<const int32_t*>(cq.ptr), reinterpret_cast<const int32_t*>(ck.ptr),
               reinterpret_cast<const int32_t*>(ps.ptr), reinterpret_cast<const int32_t*>(pl.ptr),
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
    m.doc() = "zkernels' CPU model ops on CPU torch tensors, every argument by keyword (the wrappers in "
              "zkernels.kernels' op modules allocate the outputs and fall back to torch where these do not apply)";
    m.def("built_isas", &built_isas, "Instruction-set variants compiled into this module, fastest first.");
    m.def("cpu_supports", &cpu_supports, py::arg("isa"), "Whether this CPU can run the given variant.");
    m.def("best_isa", &best_isa, "The variant 'auto' picks on this CPU.");
    m.def("isa_features", [] {
        py::dict out;
        for (const Variant& v : kVariants)
            if (v.table() != nullptr) out[v.isa.name] = zk::feature_list(v.isa.features);
        return out;
    }, "Each built variant (fastest first) -> the CPU features it is compiled for and checked against.");
    m.def("isa_runs_with", [](const std::string& isa, const std::vector<std::string>& present) {
        const Variant* v = find_variant(isa);
        if (v == nullptr) throw py::value_error("unknown or unbuilt isa '" + isa + "'");
        return zk::runs_with(v->isa, [&](const std::string& f) {
            return std::find(present.begin(), present.end(), f) != present.end();
        });
    }, py::arg("isa"), py::arg("present"),
          "Whether the run-time check lets `isa` run on a CPU with exactly the `present` features.");
    m.def("rms_norm", &py_rms_norm, py::kw_only(), py::arg("x"), py::arg("weight"), py::arg("out"),
          py::arg("residual").none(true), py::arg("sum_out").none(true), py::arg("eps"), py::arg("isa"),
          py::arg("threads"),
          "out = weight * rmsnorm(x) over rows of x [rows, cols]; with residual: sum_out = x + residual first.");
    m.def("qk_norm_rope", &py_qk_norm_rope, py::kw_only(), py::arg("q"), py::arg("k"), py::arg("q_weight"),
          py::arg("k_weight"), py::arg("q_positions"), py::arg("k_positions"), py::arg("cos"), py::arg("sin"),
          py::arg("q_out"), py::arg("k_out"), py::arg("eps"), py::arg("isa"), py::arg("threads"),
          "Per-head RMSNorm then rotate-half RoPE of q [Tq, Hq, D] and k [Tk, Hkv, D] into q_out / k_out.");
    m.def("swiglu", &py_swiglu, py::kw_only(), py::arg("gate"), py::arg("up"), py::arg("out"), py::arg("isa"),
          py::arg("threads"), "out = silu(gate) * up, rows of [rows, cols].");
    m.def("attention", &py_attention, py::kw_only(), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("prefix_k"),
          py::arg("prefix_v"), py::arg("out"), py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"),
          py::arg("prefix_starts"), py::arg("prefix_lens"), py::arg("scale"), py::arg("isa"), py::arg("threads"),
          "Shared-prefix varlen attention (zkernels/kernels/attention.py) into out [Tq, Hq, D].");
    m.def("rms_norm_quantize", &py_rms_norm_quantize, py::kw_only(), py::arg("x"), py::arg("weight"),
          py::arg("q_out"), py::arg("scale_out"), py::arg("residual").none(true), py::arg("sum_out").none(true),
          py::arg("x_scale").none(true), py::arg("eps"), py::arg("isa"), py::arg("threads"),
          "rms_norm (with residual: add_rms_norm, sum into sum_out) quantized per row to uint8 codes (zero point 128) "
          "in q_out and float32 scales in scale_out; x_scale: x is a float32 matmul output, taken as x * x_scale[:, None] "
          "rounded to the residual's dtype.");
    m.def("swiglu_quantize", &py_swiglu_quantize, py::kw_only(), py::arg("gate"), py::arg("up"), py::arg("q_out"),
          py::arg("scale_out"), py::arg("in_scale").none(true), py::arg("dtype"), py::arg("isa"), py::arg("threads"),
          "silu(gate) * up in dtype, quantized per row to uint8 codes (zero point 128) and float32 scales; in_scale: "
          "gate and up are float32 matmul outputs, taken times in_scale[:, None] rounded to dtype.");
    m.attr("QUERY_ROWS") = kQueryRows;
    m.attr("KEY_TILE") = kKeyTile;
    zk::quant::register_bindings(m);  // per-token int8 quantization (csrc/cpu_quant.cpp)
}
