// The AVX2 + FMA variant of the CPU model ops: cpu_kernels.h over cpu_vec_avx2.h. Every function from
// here on is compiled for ZK_CPU_AVX2_FEATURES (isa_features.h; no -march for the whole build), and it
// is only called where the run-time check finds every one of those features. The system headers come first so their inline functions keep
// the baseline target, and this unit's own code lives in its own namespace, so the linker can never
// hand another unit an AVX2 copy of a shared inline function.
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

ZK_TARGET_PUSH(ZK_CPU_AVX2_FEATURES)
namespace zk {
namespace cpu {
namespace isa_avx2 {
#define ZK_ISA_NAME "avx2"
#include "cpu_vec_avx2.h"
#include "cpu_kernels.h"
#undef ZK_ISA_NAME
}  // namespace isa_avx2
}  // namespace cpu
}  // namespace zk
ZK_TARGET_POP

namespace zk {
namespace cpu {
const KernelTable* kernels_avx2() { return &isa_avx2::kTable; }
}  // namespace cpu
}  // namespace zk
#else
namespace zk {
namespace cpu {
const KernelTable* kernels_avx2() { return nullptr; }
}  // namespace cpu
}  // namespace zk
#endif
