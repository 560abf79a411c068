// Registers the per-token quantization ops (csrc/cpu_quant.cpp) on zkernels._cpu_ops.
#pragma once

#include <pybind11/pybind11.h>

namespace zk {
namespace quant {
void register_bindings(pybind11::module_& m);
}  // namespace quant
}  // namespace zk
