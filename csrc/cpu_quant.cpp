// Per-token uint8 quantization of activations (see cpu_quant.h) and its pybind11 bindings.
//
// The bindings take numpy views of the torch tensors (zkernels/kernels/linear_int8.py makes them) and
// check dtype, shape, strides and writability here, so a wrong argument is a Python ValueError, never an
// out-of-bounds read or write.
#include "cpu_quant.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cpu_pool.h"
#include "cpu_quant_bindings.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#include <immintrin.h>
// gcc 12 warns about its own _mm*_undefined_* helpers when they inline (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace py = pybind11;

namespace zk {
namespace quant {

namespace {

inline float load_scalar(const QuantRowsArgs& a, int64_t r, int64_t j) {
    if (a.bf16) {
        uint32_t u = (uint32_t)((const uint16_t*)a.x)[r * a.sx + j] << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    return ((const float*)a.x)[r * a.sx + j];
}

inline uint32_t abs_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u & 0x7fffffffu;
}

constexpr uint32_t kInfBits = 0x7f800000u;

// max|x| as the bit pattern of a non-negative float: integer order is float order there, and NaN sorts
// above infinity, so one comparison finds both the maximum and any non-finite value.
// (scale, 1 / scale as the reference computes it: 127 / max|x|); an all-zero row gets (1, 1).
inline void scales_from_bits(uint32_t amax_bits, float& scale, float& inv) {
    float amax;
    std::memcpy(&amax, &amax_bits, 4);
    scale = amax == 0.0f ? 1.0f : amax / 127.0f;
    inv = amax == 0.0f ? 1.0f : 127.0f / amax;
}

}  // namespace

int64_t quantize_rows_scalar(const QuantRowsArgs& a, int64_t r0, int64_t r1) {
    int64_t bad = -1;
    for (int64_t r = r0; r < r1; ++r) {
        uint32_t amax = 0;
        for (int64_t j = 0; j < a.cols; ++j) amax = std::max(amax, abs_bits(load_scalar(a, r, j)));
        if (amax >= kInfBits) {
            if (bad < 0) bad = r;
            amax = 0;
        }
        float s, inv;
        scales_from_bits(amax, s, inv);
        a.scale[r] = s;
        uint8_t* q = a.q + r * a.sq;
        for (int64_t j = 0; j < a.cols; ++j) {
            const float v = std::min(127.0f, std::max(-127.0f, std::nearbyint(load_scalar(a, r, j) * inv)));
            q[j] = (uint8_t)((int)v + 128);
        }
    }
    return bad;
}

inline uint16_t f32_to_bf16_rne(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

void scale_rows_scalar(const ScaleRowsArgs& a, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        const float s = a.scale[r];
        const float* y = a.y + r * a.sy;
        if (a.bf16) {
            uint16_t* o = (uint16_t*)a.out + r * a.so;
            for (int64_t j = 0; j < a.cols; ++j) o[j] = f32_to_bf16_rne(y[j] * s);
        } else {
            float* o = (float*)a.out + r * a.so;
            for (int64_t j = 0; j < a.cols; ++j) o[j] = y[j] * s;
        }
    }
}

#if defined(__x86_64__) || defined(_M_X64)
bool avx512_runs() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) static inline __m512 load16(const QuantRowsArgs& a, int64_t r,
                                                                          int64_t j, __mmask16 m) {
    if (a.bf16) {
        const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t*)a.x + r * a.sx + j);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_maskz_loadu_ps(m, (const float*)a.x + r * a.sx + j);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) int64_t quantize_rows_avx512(const QuantRowsArgs& a, int64_t r0,
                                                                         int64_t r1) {
    int64_t bad = -1;
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m512i zero_point = _mm512_set1_epi32(128);
    for (int64_t r = r0; r < r1; ++r) {
        __m512i amax = _mm512_setzero_si512();
        for (int64_t j = 0; j < a.cols; j += 16) {
            const __mmask16 m = a.cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (a.cols - j)) - 1);
            const __m512i bits = _mm512_and_si512(_mm512_castps_si512(load16(a, r, j, m)), abs_mask);
            amax = _mm512_max_epu32(amax, bits);
        }
        uint32_t amax_bits = (uint32_t)_mm512_reduce_max_epu32(amax);
        if (amax_bits >= kInfBits) {
            if (bad < 0) bad = r;
            amax_bits = 0;
        }
        float s, inv;
        scales_from_bits(amax_bits, s, inv);
        a.scale[r] = s;
        const __m512 vinv = _mm512_set1_ps(inv);
        uint8_t* q = a.q + r * a.sq;
        for (int64_t j = 0; j < a.cols; j += 16) {
            const __mmask16 m = a.cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (a.cols - j)) - 1);
            __m512 v = _mm512_mul_ps(load16(a, r, j, m), vinv);
            v = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
            const __m512i c = _mm512_add_epi32(_mm512_cvtps_epi32(v), zero_point);
            _mm512_mask_cvtusepi32_storeu_epi8(q + j, m, c);
        }
    }
    return bad;
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void scale_rows_avx512(const ScaleRowsArgs& a, int64_t r0,
                                                                             int64_t r1) {
    const __m512i round_bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf_bits = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet_nan = _mm512_set1_epi32(0x7fc00000);
    for (int64_t r = r0; r < r1; ++r) {
        const __m512 s = _mm512_set1_ps(a.scale[r]);
        const float* y = a.y + r * a.sy;
        for (int64_t j = 0; j < a.cols; j += 16) {
            const __mmask16 m = a.cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (a.cols - j)) - 1);
            const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + j), s);
            if (!a.bf16) {
                _mm512_mask_storeu_ps((float*)a.out + r * a.so + j, m, v);
                continue;
            }
            // round to nearest even on the bits, NaN kept quiet: f32_to_bf16_rne, 16 at a time
            __m512i u = _mm512_castps_si512(v);
            const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf_bits);
            u = _mm512_add_epi32(u, _mm512_add_epi32(round_bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
            u = _mm512_mask_mov_epi32(u, nan, quiet_nan);
            _mm512_mask_cvtepi32_storeu_epi16((uint16_t*)a.out + r * a.so + j, m, _mm512_srli_epi32(u, 16));
        }
    }
}

Int8Isa int8_isa() {
    Int8Isa out{false, false, false};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return out;  // OSXSAVE: xgetbv is usable
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const bool os_avx = (xcr0_lo & 0x6u) == 0x6u;                  // XMM and YMM state
    const bool os_avx512 = os_avx && (xcr0_lo & 0xe0u) == 0xe0u;   // opmask, ZMM_Hi256, Hi16_ZMM
    const bool os_amx = (xcr0_lo & 0x60000u) == 0x60000u;          // XTILECFG, XTILEDATA
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return out;
    out.avx512_vnni = os_avx512 && (c & (1u << 11));
    out.amx_int8 = os_amx && (d & (1u << 25)) && (d & (1u << 24));  // AMX-INT8 and AMX-TILE
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) out.avx_vnni = os_avx && (a & (1u << 4));
    return out;
}
#else
bool avx512_runs() { return false; }
void scale_rows_avx512(const ScaleRowsArgs& a, int64_t r0, int64_t r1) { scale_rows_scalar(a, r0, r1); }
int64_t quantize_rows_avx512(const QuantRowsArgs& a, int64_t r0, int64_t r1) {
    return quantize_rows_scalar(a, r0, r1);
}
Int8Isa int8_isa() { return Int8Isa{false, false, false}; }
#endif

namespace {

void require(bool ok, const std::string& what) {
    if (!ok) throw py::value_error("quantize_rows: " + what);
}

void py_quantize_rows(py::array x, const std::string& dtype, py::array q, py::array scale, const std::string& isa,
                      int threads) {
    require(dtype == "float32" || dtype == "bfloat16", "dtype must be 'float32' or 'bfloat16', got '" + dtype + "'");
    const bool bf16 = dtype == "bfloat16";
    const py::dtype xd = x.dtype();
    if (bf16)
        require(xd.itemsize() == 2 && (xd.kind() == 'i' || xd.kind() == 'u'),
                "x must be a 16-bit integer view of bfloat16 values");
    else
        require(xd.kind() == 'f' && xd.itemsize() == 4, "x must be float32");
    require(x.ndim() == 2, "x must be 2-D [rows, cols], got " + std::to_string(x.ndim()) + "-D");
    const int64_t rows = x.shape(0), cols = x.shape(1), item = xd.itemsize();
    require(cols > 0, "x must have at least one column");
    require(x.strides(1) == item, "x's rows must be contiguous (column stride one element)");
    require(rows <= 1 || (x.strides(0) % item == 0 && x.strides(0) >= cols * item),
            "x's row stride must be a whole number of elements and at least cols");
    require(q.dtype().kind() == 'u' && q.dtype().itemsize() == 1, "q must be uint8");
    require(q.ndim() == 2 && q.shape(0) == rows && q.shape(1) == cols, "q must have x's shape");
    require(q.writeable(), "q must be writable");
    require(q.strides(1) == 1 && (rows <= 1 || q.strides(0) >= cols), "q's rows must be contiguous");
    require(scale.dtype().kind() == 'f' && scale.dtype().itemsize() == 4, "scale must be float32");
    require(scale.ndim() == 1 && scale.shape(0) == rows, "scale must have shape [rows]");
    require(scale.writeable() && (rows <= 1 || scale.strides(0) == 4), "scale must be writable and contiguous");
    require(isa == "auto" || isa == "avx512" || isa == "scalar", "isa must be 'auto', 'avx512' or 'scalar'");
    const bool wide = isa != "scalar" && avx512_runs();
    require(isa != "avx512" || wide, "this CPU cannot run isa 'avx512'");
    QuantRowsArgs a{x.data(), rows > 1 ? (int64_t)(x.strides(0) / item) : cols, bf16,
                    (uint8_t*)q.mutable_data(), rows > 1 ? (int64_t)q.strides(0) : cols,
                    (float*)scale.mutable_data(), rows, cols};
    int64_t bad = -1;
    {
        py::gil_scoped_release nogil;
        auto run = [&](int64_t r0, int64_t r1) {
            return wide ? quantize_rows_avx512(a, r0, r1) : quantize_rows_scalar(a, r0, r1);
        };
        if (threads <= 1 || rows * cols < 65536) {
            bad = run(0, rows);
        } else {
            const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows / (4 * threads) + 1, 65536 / cols + 1));
            const int64_t tasks = (rows + chunk - 1) / chunk;
            std::vector<int64_t> bad_per_task(tasks, -1);
            zk::cpu::Pool::instance().run(threads, tasks, 1, [&](int64_t t, int) {
                bad_per_task[t] = run(t * chunk, std::min(rows, (t + 1) * chunk));
            });
            for (int64_t b : bad_per_task)
                if (b >= 0) {
                    bad = b;
                    break;
                }
        }
    }
    require(bad < 0, "row " + std::to_string(bad) + " of x holds a NaN or an infinity; int8 quantization needs "
                     "finite activations");
}

template <class Fn>
void over_rows(int threads, int64_t rows, int64_t cols, Fn fn) {
    if (threads <= 1 || rows * cols < 65536) {
        fn(0, rows);
        return;
    }
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows / (4 * threads) + 1, 65536 / cols + 1));
    const int64_t tasks = (rows + chunk - 1) / chunk;
    zk::cpu::Pool::instance().run(threads, tasks, 1, [&](int64_t t, int) {
        fn(t * chunk, std::min(rows, (t + 1) * chunk));
    });
}

void py_scale_rows(py::array y, py::array scale, py::array out, const std::string& out_dtype, const std::string& isa,
                   int threads) {
    auto need = [](bool ok, const std::string& what) {
        if (!ok) throw py::value_error("scale_rows: " + what);
    };
    need(out_dtype == "float32" || out_dtype == "bfloat16",
         "out_dtype must be 'float32' or 'bfloat16', got '" + out_dtype + "'");
    const bool bf16 = out_dtype == "bfloat16";
    need(y.dtype().kind() == 'f' && y.dtype().itemsize() == 4, "y must be float32");
    need(y.ndim() == 2, "y must be 2-D [rows, cols]");
    const int64_t rows = y.shape(0), cols = y.shape(1);
    need(y.strides(1) == 4 && (rows <= 1 || (y.strides(0) % 4 == 0 && y.strides(0) >= 4 * cols)),
         "y's rows must be contiguous");
    need(scale.dtype().kind() == 'f' && scale.dtype().itemsize() == 4 && scale.ndim() == 1 && scale.shape(0) == rows &&
             (rows <= 1 || scale.strides(0) == 4),
         "scale must be contiguous float32 [rows]");
    const int64_t item = bf16 ? 2 : 4;
    if (bf16)
        need(out.dtype().itemsize() == 2 && (out.dtype().kind() == 'i' || out.dtype().kind() == 'u'),
             "out must be a 16-bit integer view of bfloat16 values");
    else
        need(out.dtype().kind() == 'f' && out.dtype().itemsize() == 4, "out must be float32");
    need(out.ndim() == 2 && out.shape(0) == rows && out.shape(1) == cols, "out must have y's shape");
    need(out.writeable(), "out must be writable");
    need(out.strides(1) == item && (rows <= 1 || (out.strides(0) % item == 0 && out.strides(0) >= item * cols)),
         "out's rows must be contiguous");
    need(isa == "auto" || isa == "avx512" || isa == "scalar", "isa must be 'auto', 'avx512' or 'scalar'");
    const bool wide = isa != "scalar" && avx512_runs();
    need(isa != "avx512" || wide, "this CPU cannot run isa 'avx512'");
    ScaleRowsArgs a{(const float*)y.data(), rows > 1 ? (int64_t)(y.strides(0) / 4) : cols, (const float*)scale.data(),
                    out.mutable_data(), rows > 1 ? (int64_t)(out.strides(0) / item) : cols, bf16, rows, cols};
    py::gil_scoped_release nogil;
    over_rows(threads, rows, cols, [&](int64_t r0, int64_t r1) {
        if (wide)
            scale_rows_avx512(a, r0, r1);
        else
            scale_rows_scalar(a, r0, r1);
    });
}

py::dict py_int8_isa() {
    const Int8Isa i = int8_isa();
    py::dict d;
    d["avx512_vnni"] = i.avx512_vnni;
    d["avx_vnni"] = i.avx_vnni;
    d["amx_int8"] = i.amx_int8;
    return d;
}

}  // namespace

void register_bindings(py::module_& m) {
    m.def("quantize_rows", &py_quantize_rows, py::arg("x"), py::arg("dtype"), py::arg("q"), py::arg("scale"),
          py::arg("isa") = "auto", py::arg("threads") = 1,
          "Per-row uint8 quantization (zero point 128) of x [rows, cols] into q [rows, cols] and scale [rows].");
    m.def("scale_rows", &py_scale_rows, py::arg("y"), py::arg("scale"), py::arg("out"), py::arg("out_dtype"),
          py::arg("isa") = "auto", py::arg("threads") = 1,
          "out[r] = y[r] * scale[r], rounded once to out_dtype ('float32' or 'bfloat16'); out may be y.");
    m.def("int8_isa", &py_int8_isa, "The CPU's int8 dot-product extensions: avx512_vnni, avx_vnni, amx_int8.");
}

}  // namespace quant
}  // namespace zk
