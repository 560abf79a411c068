"""Shared test setup.

Triton kernels run on the CPU through triton's interpreter when no CUDA device exists. The
@triton.jit decorator reads TRITON_INTERPRET when the kernel modules are imported, so it is set here,
before any test module imports zkernels.kernels.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    # GPU tests skip cleanly without a device; run them with `pytest -m gpu` on a GPU machine.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
