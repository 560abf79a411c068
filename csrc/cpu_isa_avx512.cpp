// The AVX-512 (F/BW/VL/DQ) variant of the CPU model ops: cpu_kernels.h over cpu_vec_avx512.h,
// compiled for AVX-512 by the pragma and called only after the run-time CPU check (see
// cpu_isa_avx2.cpp for why the includes come first and the code sits in its own namespace).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_ops.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

// gcc 12 warns about its own _mm*_undefined_* helpers when they inline (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt")
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
#pragma GCC pop_options

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
