"""Builds the C++ Hamming-search extension (pybind11, no torch at build time).

The CUDA kernel is not built here: it is compiled on first use on machines that have CUDA torch and
nvcc (zkernels/binary/cuda.py), so a CPU install never needs a CUDA toolchain or a CUDA torch.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = []  # filled in by the Hamming-search work (csrc/)

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
