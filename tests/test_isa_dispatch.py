"""Instruction-set dispatch of both C++ extensions (zkernels._cpu_ops, zkernels._hamming): each variant
runs only where the CPU has every feature it is compiled for.

- The run-time check asks for exactly the variant's feature list (isa_runs_with: all of them runs, any
  one missing does not).
- That list is the whole compile target: compiled as a GCC target, it turns on exactly those features
  (the compiler's own feature macros say which), none implied beyond it.
- On this machine the check agrees with the kernel's own CPU flags (/proc/cpuinfo).
"""
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from zkernels.binary import _cpu as hamming_cpu
from zkernels.kernels import cpu_runtime

EXTENSIONS = {}
if cpu_runtime.available():
    EXTENSIONS["_cpu_ops"] = cpu_runtime.extension()
if hamming_cpu._ext is not None:
    EXTENSIONS["_hamming"] = hamming_cpu._ext

pytestmark = pytest.mark.skipif(not EXTENSIONS, reason="no C++ extension is built")

# Every x86 feature GCC may turn on from a target list, with the macro it defines when it does, and its
# name among /proc/cpuinfo's flags.
FEATURES = {
    "sse3": ("__SSE3__", "pni"), "ssse3": ("__SSSE3__", "ssse3"), "sse4.1": ("__SSE4_1__", "sse4_1"),
    "sse4.2": ("__SSE4_2__", "sse4_2"), "avx": ("__AVX__", "avx"), "avx2": ("__AVX2__", "avx2"),
    "fma": ("__FMA__", "fma"), "f16c": ("__F16C__", "f16c"), "bmi": ("__BMI__", "bmi1"), "bmi2": ("__BMI2__", "bmi2"),
    "popcnt": ("__POPCNT__", "popcnt"), "lzcnt": ("__LZCNT__", "abm"), "movbe": ("__MOVBE__", "movbe"),
    "pclmul": ("__PCLMUL__", "pclmulqdq"), "aes": ("__AES__", "aes"), "avx512f": ("__AVX512F__", "avx512f"),
    "avx512cd": ("__AVX512CD__", "avx512cd"), "avx512bw": ("__AVX512BW__", "avx512bw"),
    "avx512dq": ("__AVX512DQ__", "avx512dq"), "avx512vl": ("__AVX512VL__", "avx512vl"),
    "avx512bf16": ("__AVX512BF16__", "avx512_bf16"), "avx512vpopcntdq": ("__AVX512VPOPCNTDQ__", "avx512_vpopcntdq"),
    "avx512vnni": ("__AVX512VNNI__", "avx512_vnni"), "avx512ifma": ("__AVX512IFMA__", "avx512ifma"),
    "avx512vbmi": ("__AVX512VBMI__", "avx512vbmi"), "avx512fp16": ("__AVX512FP16__", "avx512_fp16"),
}
X86 = platform.machine() in ("x86_64", "AMD64")

VARIANTS = [(name, isa, features) for name, ext in EXTENSIONS.items() for isa, features in ext.isa_features().items()]


def _id(v):
    return f"{v[0]}-{v[1]}"


def test_every_built_variant_is_listed_fastest_first():
    for name, ext in EXTENSIONS.items():
        listed = list(ext.isa_features())
        assert listed[-1] == "scalar" and ext.isa_features()["scalar"] == [], name
        assert ext.best_isa() == next(isa for isa in listed if _runs_here(ext, isa)), name
    if "_cpu_ops" in EXTENSIONS:
        assert list(EXTENSIONS["_cpu_ops"].isa_features()) == EXTENSIONS["_cpu_ops"].built_isas()


def _runs_here(ext, isa):
    return ext.cpu_supports(isa) if hasattr(ext, "cpu_supports") else ext.cpu_has(isa)


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_the_check_asks_for_exactly_the_listed_features(variant):
    name, isa, features = variant
    ext = EXTENSIONS[name]
    assert ext.isa_runs_with(isa, features)
    assert ext.isa_runs_with(isa, [*features, "avx512fp16", "movbe"])  # more present: still runs
    for missing in features:
        assert not ext.isa_runs_with(isa, [f for f in features if f != missing]), f"{isa} runs without {missing}"


def test_a_cpu_with_avx2_but_not_bmi2_runs_the_portable_cpu_ops():
    """GCC emits BMI2 (shlx, bzhi) in the AVX2 unit: such a CPU (some VMs) must not get it."""
    if "_cpu_ops" not in EXTENSIONS or "avx2" not in EXTENSIONS["_cpu_ops"].isa_features():
        pytest.skip("the AVX2 variant is not built")
    ext = EXTENSIONS["_cpu_ops"]
    present = [f for f in ext.isa_features()["avx2"] if f != "bmi2"]
    assert not ext.isa_runs_with("avx2", present) and ext.isa_runs_with("scalar", present)


def _compiler():
    return shutil.which("gcc") or shutil.which("cc")


@pytest.mark.skipif(not X86 or _compiler() is None, reason="needs an x86-64 C compiler (GCC)")
@pytest.mark.parametrize("variant", [v for v in VARIANTS if v[2]], ids=_id)
def test_the_listed_features_are_the_whole_compile_target(variant, tmp_path):
    """Compiled under `#pragma GCC target(<list>)` (as the variant's code is, from the same macro in
    csrc/isa_features.h), the compiler turns on exactly the listed features: the list misses none that
    the target implies, so the check covers every instruction the variant's code may hold."""
    _, isa, features = variant
    lines = [f'#pragma GCC target("{",".join(features)}")', "#include <stdio.h>", "int main(void) {"]
    for feature, (macro, _) in FEATURES.items():
        lines += [f"#ifdef {macro}", f'    puts("{feature}");', "#endif"]
    lines += ["    return 0;", "}"]
    source = tmp_path / "target.c"
    source.write_text("\n".join(lines) + "\n")
    subprocess.run([_compiler(), str(source), "-o", str(tmp_path / "target")], check=True, capture_output=True)
    enabled = subprocess.run([str(tmp_path / "target")], check=True, capture_output=True, text=True).stdout.split()
    assert sorted(enabled) == sorted(features), f"{isa}: compiled for {sorted(enabled)}, checked for {sorted(features)}"


def _cpuinfo_flags() -> set[str] | None:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@pytest.mark.skipif(not X86 or _cpuinfo_flags() is None, reason="needs Linux on x86-64 (/proc/cpuinfo)")
@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_the_check_agrees_with_this_cpus_flags(variant):
    name, isa, features = variant
    flags = _cpuinfo_flags()
    expected = all(FEATURES[f][1] in flags for f in features)
    assert _runs_here(EXTENSIONS[name], isa) == expected, (isa, [f for f in features if FEATURES[f][1] not in flags])
