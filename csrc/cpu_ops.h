// Shared declarations of the CPU model ops (zkernels._cpu_ops): argument blocks, the per-ISA kernel
// table, and the scalar bf16 conversions every variant agrees on.
//
// The kernels work on raw buffers described by pointers, sizes and row strides (in elements), which
// cpu_ops.cpp takes from the tensors it is handed (cpu_tensor_view.h) and checks before any kernel
// runs; no torch header is needed to build this. Element types: float32 or bfloat16 (raw uint16 bits), the same for every
// floating-point operand of one call; the math is float32 throughout.
#pragma once

#include <cstdint>
#include <cstring>

namespace zk {
namespace cpu {

enum class DType : int { F32 = 0, BF16 = 1 };

// bfloat16 -> float32 is exact: the bf16 bits are the top half of the float.
inline float bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// float32 -> bfloat16, round to nearest even, NaN kept quiet: the rounding torch's c10::BFloat16 uses,
// so a value rounded here has the same bits as the torch reference's .to(torch.bfloat16).
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// rms_norm / add_rms_norm over `rows` rows of `cols` values.
//   res == nullptr: out = w * round(x * rstd(x))
//   else:           sum = round(x + res); out = w * round(sum * rstd(sum)); sum written to sum_out
// rstd(v) = 1 / sqrt(mean(v^2) + eps); round = to the element type (a no-op in float32).
struct RmsArgs {
    const void* x; int64_t sx;
    const void* res; int64_t sr;
    const void* w;
    void* out; int64_t so;
    void* sum_out; int64_t ss;
    int64_t rows, cols;
    float eps;
};

// Per-head RMSNorm then rotate-half RoPE, for q and k in one call. Source rows may be strided views
// (the fused QKV output); outputs are contiguous [tokens, heads, head_dim]. cos/sin: float32
// [positions, head_dim / 2] with row stride cs_stride; positions int64.
struct NormRopeSide {
    const void* x; int64_t st, sh;
    const void* w;
    const int64_t* pos;
    void* out;
    int64_t tokens, heads;
};
struct NormRopeArgs {
    NormRopeSide q, k;
    const float* cos; const float* sin; int64_t cs_stride;
    int64_t head_dim;
    float eps;
};

// out[r, j] = round(silu(gate[r, j]) * up[r, j]) for j < cols, silu(g) = g / (1 + exp(-g)).
struct SwigluArgs {
    const void* gate; int64_t sg;
    const void* up; int64_t su;
    void* out; int64_t so;
    int64_t rows, cols;
};

// Per-token uint8 quantization fused into the ops that produce the int8 linears' inputs. Each row's values
// v (in float32, rounded to the element type as the unfused op stores them) become codes
// q = clamp(rint(v * (127 / max|v|)), -127, 127) + 128 and scale = max|v| / 127 (1 and 128 for an all-zero
// row): bit for bit what the unfused op followed by zkernels.kernels.linear_int8.quantize_rows gives.
// A row whose values are not all finite is reported (the kernels return the first such row, else -1).
//
// x_scale != nullptr: x holds float32 rows (an int8 matmul's output before its per-row activation scale),
// and the op's input value is round(x[r, j] * x_scale[r]) in the element type (what scale_rows stores).
struct RmsQuantArgs {
    const void* x; int64_t sx;
    const float* x_scale;
    const void* res; int64_t sr;     // nullptr: no residual (x then holds the element type, x_scale null)
    const void* w;
    void* sum_out; int64_t ss;       // round(x + res), with res
    uint8_t* q; int64_t sq;
    float* scale;
    int64_t rows, cols;
    float eps;
};
// q, scale from round(silu(gate) * up) (SwigluArgs' values); gate and up are float32 when in_scale is set.
struct SwigluQuantArgs {
    const void* gate; int64_t sg;
    const void* up; int64_t su;
    const float* in_scale;
    uint8_t* q; int64_t sq;
    float* scale;
    int64_t rows, cols;
};

// Shared-prefix varlen attention, bottom-right causal, GQA (query head h reads kv head h / group).
// See zkernels/kernels/attention.py for the layout; index arrays are int32 host arrays.
struct AttnArgs {
    const void* q; int64_t sq_t, sq_h;
    const void* k; int64_t sk_t, sk_h;
    const void* v; int64_t sv_t, sv_h;
    const void* pk; int64_t spk_t, spk_h;   // prefix keys / values (usually k / v themselves)
    const void* pv; int64_t spv_t, spv_h;
    void* out; int64_t so_t, so_h;
    const int32_t* cu_q; const int32_t* cu_k; const int32_t* p_start; const int32_t* p_len;
    int64_t n_seqs, heads, kv_heads, head_dim;
    float scale;
};

// Keys and values are read through fp32 tiles of kKeyTile keys at fixed offsets of each key range
// (a sequence's own rows, or a shared prefix): K transposed, [head_dim][kKeyTile] (zero past the
// range's end), V as rows, [kKeyTile][head_dim]; tile i of kv head h at ((i * kv_heads + h) * tile_floats).
// A shared prefix is prepared once per call and read by every sequence of its group.
constexpr int kQueryRows = 32;  // (token, head) query rows per work item
constexpr int kKeyTile = 64;    // keys per online-softmax step
struct KeyRange {
    const void* k; int64_t sk_t, sk_h;
    const void* v; int64_t sv_t, sv_h;
    int64_t start, len;
    float* kt; float* vt;        // prepared tiles (shared ranges), else nullptr
};
struct AttnSeq {
    int32_t prefix_range;        // index of its prefix in the shared ranges, or -1
    int32_t own_range;           // index when its own rows are a shared range, or -1
};
struct AttnItem {
    int32_t seq, kv_head, row0;  // rows [row0, row0 + kQueryRows) of nq * group (token-major)
};
struct AttnPlan {
    const KeyRange* ranges;      // shared ranges
    const AttnSeq* seqs;
    const AttnItem* items;
    int64_t max_own_tiles;       // tiles of the longest own range (thread scratch size)
};
// Per-thread state of one attention call: work buffers and the own-key tiles it prepared last.
struct AttnThread {
    float* work;                 // attention_work_floats(head_dim)
    float* own_kt; float* own_vt;  // max_own_tiles tiles of one kv head
    int32_t seq = -1, kv_head = -1;
    int64_t tiles_ready = 0;
};
inline int64_t tile_floats(int64_t head_dim) { return head_dim * kKeyTile; }
inline int64_t attention_work_floats(int64_t head_dim) {
    // Q, O: [kQueryRows][head_dim]; S/P: [kQueryRows][kKeyTile]; limits, m, l, alpha: 4 x kQueryRows
    return 2 * kQueryRows * head_dim + kQueryRows * kKeyTile + 4 * kQueryRows;
}

// Each row function handles rows [r0, r1) (norm_rope: tokens, q's first, then k's).
struct KernelTable {
    const char* name;
    void (*rms_norm)(const RmsArgs&, DType, int64_t r0, int64_t r1);
    void (*norm_rope)(const NormRopeArgs&, DType, int64_t r0, int64_t r1);
    void (*swiglu)(const SwigluArgs&, DType, int64_t r0, int64_t r1);
    // tile `tile` of kv head `kv_head` of a range into kt / vt (one tile each)
    void (*prep_tile)(const KeyRange&, DType, int64_t head_dim, int64_t tile, int64_t kv_head, float* kt, float* vt);
    void (*attention_item)(const AttnArgs&, DType, const AttnPlan&, int64_t item, AttnThread&);
    // fused per-token quantization (RmsQuantArgs, SwigluQuantArgs): the first non-finite row, else -1
    int64_t (*rms_norm_quant)(const RmsQuantArgs&, DType, int64_t r0, int64_t r1);
    int64_t (*swiglu_quant)(const SwigluQuantArgs&, DType, int64_t r0, int64_t r1);
};

const KernelTable* kernels_scalar();
const KernelTable* kernels_avx2();       // nullptr when not built (non-x86)
const KernelTable* kernels_avx512();
const KernelTable* kernels_avx512bf16();

}  // namespace cpu
}  // namespace zk
