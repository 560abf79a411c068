// The AVX-512 (F/BW/VL/DQ) variant of the CPU model ops: cpu_kernels.h over cpu_vec_avx512.h,
// compiled for ZK_CPU_AVX512_FEATURES (isa_features.h) and called only where the run-time check
// finds every one of them (see cpu_isa_avx2.cpp for why the includes come first and the code sits in
// its own namespace).
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

ZK_TARGET_PUSH(ZK_CPU_AVX512_FEATURES)
namespace zk {
namespace cpu {
namespace isa_avx512 {
#define ZK_ISA_NAME "avx512"
#include "cpu_vec_avx512.h"
#include "cpu_kernels.h"
#undef ZK_ISA_NAME
}  // namespace isa_avx512
}  // namespace cpu
}  // namespace zk
ZK_TARGET_POP

namespace zk {
namespace cpu {
const KernelTable* kernels_avx512() { return &isa_avx512::kTable; }
}  // namespace cpu
}  // namespace zk
#else
namespace zk {
namespace cpu {
const KernelTable* kernels_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace zk
#endif
