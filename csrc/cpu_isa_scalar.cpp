// The portable variant of the CPU model ops (any CPU, any architecture): cpu_kernels.h over
// cpu_vec_scalar.h, compiled with the build's baseline flags.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_ops.h"

namespace zk {
namespace cpu {
namespace isa_scalar {
#define ZK_ISA_NAME "scalar"
#include "cpu_vec_scalar.h"
#include "cpu_kernels.h"
#undef ZK_ISA_NAME
}  // namespace isa_scalar

const KernelTable* kernels_scalar() { return &isa_scalar::kTable; }

}  // namespace cpu
}  // namespace zk
