// Per-token (per-row) activation quantization for the int8 linear layers (zkernels/kernels/linear_int8.py):
// each row of x [rows, cols] (float32 or bfloat16) becomes uint8 codes with zero point 128 and one
// float32 scale, q = clamp(rint(x * (127 / max|x|)), -127, 127) + 128 and scale = max|x| / 127 (both 1 for
// an all-zero row). The same float32 steps and round-half-to-even as the torch reference
// (quantize_rows_torch), so the codes are bit-identical to it. uint8 rather than int8 codes: oneDNN's fast int8 kernels (VNNI, AMX)
// take unsigned activations; signed ones fall to its reference kernel.
#pragma once

#include <cstdint>

namespace zk {
namespace quant {

struct QuantRowsArgs {
    const void* x; int64_t sx;   // rows of cols values, row stride sx (elements)
    bool bf16;                   // x holds bfloat16 bits (else float32)
    uint8_t* q; int64_t sq;      // codes, row stride sq
    float* scale;                // [rows]
    int64_t rows, cols;
};

// Rows [r0, r1). Returns the first row in that range whose values are not all finite, or -1.
int64_t quantize_rows_scalar(const QuantRowsArgs& a, int64_t r0, int64_t r1);
int64_t quantize_rows_avx512(const QuantRowsArgs& a, int64_t r0, int64_t r1);  // AVX-512 F/BW/VL
bool avx512_runs();

// out[r, j] = round(y[r, j] * scale[r]): the int8 matmul's float32 rows times their activation scale, rounded
// once to the output type (float32, or bfloat16 with torch's round-to-nearest-even); out may be y itself.
struct ScaleRowsArgs {
    const float* y; int64_t sy;
    const float* scale;
    void* out; int64_t so;
    bool bf16;
    int64_t rows, cols;
};
void scale_rows_scalar(const ScaleRowsArgs& a, int64_t r0, int64_t r1);
void scale_rows_avx512(const ScaleRowsArgs& a, int64_t r0, int64_t r1);

// The instruction-set extensions oneDNN's fast int8 matmuls need, as this CPU reports them (cpuid, with
// the OS saving the wide registers).
struct Int8Isa {
    bool avx512_vnni, avx_vnni, amx_int8;
};
Int8Isa int8_isa();

}  // namespace quant
}  // namespace zk
