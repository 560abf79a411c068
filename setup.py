"""Builds the C++ Hamming-search extension (pybind11, no torch at build time).

The CUDA kernel is not built here: it is compiled on first use on machines that have CUDA torch and
nvcc (zkernels/binary/cuda.py), so a CPU install never needs a CUDA toolchain or a CUDA torch.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

# One translation unit; the AVX-512/AVX2 variants inside it carry their own target attributes and are
# picked at run time, so no -march flag here (the built wheel must run on any x86-64).
ext_modules = [
    Pybind11Extension(
        "zkernels._hamming",
        ["csrc/hamming.cpp"],
        include_dirs=["csrc"],
        depends=["csrc/hamming_topk.h", "csrc/hamming_scan.h", "csrc/hamming_isa.h"],
        cxx_std=17,
        extra_compile_args=["-O3"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
