// The AVX-512 variant with bf16 dot products (AVX512-BF16: Zen 4 and later, Cooper Lake, Sapphire
// Rapids and later): cpu_kernels.h over cpu_vec_avx512.h with ZK_BF16_DOT, so attention on bf16 inputs
// runs its scores and P V as vdpbf16ps on bf16 pairs. Every other op is the AVX-512 one. Compiled for
// ZK_CPU_AVX512BF16_FEATURES (isa_features.h), called only where the CPU has every one of them
// (see cpu_isa_avx2.cpp for why the includes come first and the code sits in its own namespace).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_ops.h"
#include "isa_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

// gcc 12 warns about its own _mm*_undefined_* helpers when they inline (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

ZK_TARGET_PUSH(ZK_CPU_AVX512BF16_FEATURES)
namespace zk {
namespace cpu {
namespace isa_avx512bf16 {
#define ZK_ISA_NAME "avx512bf16"
#define ZK_BF16_DOT 1
#include "cpu_vec_avx512.h"
#include "cpu_kernels.h"
#undef ZK_BF16_DOT
#undef ZK_ISA_NAME
}  // namespace isa_avx512bf16
}  // namespace cpu
}  // namespace zk
ZK_TARGET_POP

namespace zk {
namespace cpu {
const KernelTable* kernels_avx512bf16() { return &isa_avx512bf16::kTable; }
}  // namespace cpu
}  // namespace zk
#else
namespace zk {
namespace cpu {
const KernelTable* kernels_avx512bf16() { return nullptr; }
}  // namespace cpu
}  // namespace zk
#endif
