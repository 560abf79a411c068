"""Builds the C++ extensions (pybind11, no torch at build time):

- zkernels._hamming: the exact Hamming search (csrc/hamming*);
- zkernels._cpu_ops: the CPU model ops (csrc/cpu_*): RMSNorm, QK-norm + RoPE, SwiGLU and the shared-prefix
  varlen attention, on CPU torch tensors handed over by keyword from each op's wrapper in zkernels/kernels/.

The CUDA kernel is not built here: it is compiled on first use on machines that have CUDA torch and
nvcc (zkernels/binary/cuda.py), so a CPU install never needs a CUDA toolchain or a CUDA torch.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

# The AVX-512/AVX2 variants carry their own target attributes (or a `#pragma GCC target` for their
# whole translation unit), from the feature lists in csrc/isa_features.h, and are picked at run time
# where the CPU has every listed feature, so no -march flag here: the built wheel must
# run on any x86-64. -ffp-contract=off: the compiler must not fuse a separate multiply and add into an
# fma, which would round differently from the torch reference where the kernels mirror its steps.
ext_modules = [
    Pybind11Extension(
        "zkernels._hamming",
        ["csrc/hamming.cpp"],
        include_dirs=["csrc"],
        depends=["csrc/hamming_topk.h", "csrc/hamming_scan.h", "csrc/hamming_isa.h", "csrc/isa_features.h"],
        cxx_std=17,
        extra_compile_args=["-O3"],
    ),
    Pybind11Extension(
        "zkernels._cpu_ops",
        ["csrc/cpu_ops.cpp", "csrc/cpu_isa_scalar.cpp", "csrc/cpu_isa_avx2.cpp", "csrc/cpu_isa_avx512.cpp",
         "csrc/cpu_isa_avx512bf16.cpp", "csrc/cpu_quant.cpp"],
        include_dirs=["csrc"],
        depends=["csrc/cpu_ops.h", "csrc/cpu_pool.h", "csrc/cpu_kernels.h", "csrc/cpu_vec_scalar.h",
                 "csrc/cpu_vec_avx2.h", "csrc/cpu_vec_avx512.h", "csrc/cpu_tensor_view.h", "csrc/isa_features.h",
                 "csrc/cpu_quant.h", "csrc/cpu_quant_bindings.h"],
        cxx_std=17,
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
