// Instruction-set variants, one dispatch style for both extensions (zkernels._cpu_ops, zkernels._hamming).
//
// Each variant has ONE feature list (GCC target names). The same macro is its compile target (the
// `#pragma GCC target` of its translation unit, or the target attribute of its functions) and what the
// run-time check asks the CPU for, so a variant runs only where every feature it was compiled for is
// present. The lists spell out what GCC turns on by implication (avx2 brings sse3 .. sse4.2 and avx), so
// they are the whole set the compiler may emit instructions from; tests/test_isa_dispatch.py compiles
// each list and checks that the compiler's own feature macros name exactly these features.
//
// Which variant runs: the caller's choice, else the first one (fastest first) this CPU supports. What
// the CPU supports is read once per process.
#pragma once

#include <string>
#include <vector>

#define ZK_AVX2_AND_IMPLIED_FEATURES "sse3,ssse3,sse4.1,sse4.2,avx,avx2"
// zkernels._cpu_ops (cpu_isa_*.cpp): GCC may use FMA, F16C and BMI1/2 (shlx, bzhi) anywhere in these units
#define ZK_CPU_AVX2_FEATURES ZK_AVX2_AND_IMPLIED_FEATURES ",fma,f16c,bmi,bmi2,popcnt"
#define ZK_CPU_AVX512_FEATURES ZK_CPU_AVX2_FEATURES ",avx512f,avx512bw,avx512dq,avx512vl"
#define ZK_CPU_AVX512BF16_FEATURES ZK_CPU_AVX512_FEATURES ",avx512bf16"
// zkernels._hamming (hamming_isa.h)
#define ZK_HAMMING_AVX2_FEATURES ZK_AVX2_AND_IMPLIED_FEATURES ",popcnt"
#define ZK_HAMMING_AVX512_FEATURES ZK_HAMMING_AVX2_FEATURES ",avx512f,avx512bw,avx512vl,avx512vpopcntdq"

// `ZK_TARGET_PUSH(list)` ... `ZK_TARGET_POP`: the code between is compiled for `list`.
#define ZK_PRAGMA(x) _Pragma(#x)
#define ZK_TARGET_PUSH(features) _Pragma("GCC push_options") ZK_PRAGMA(GCC target(features))
#define ZK_TARGET_POP _Pragma("GCC pop_options")

namespace zk {

struct IsaVariant {
    const char* name;
    const char* features;  // comma-separated GCC target names; "" for the portable variant
};

inline std::vector<std::string> feature_list(const char* csv) {
    std::vector<std::string> out;
    std::string cur;
    for (const char* p = csv; ; ++p) {
        if (*p == ',' || *p == '\0') {
            if (!cur.empty()) out.push_back(cur);
            cur.clear();
            if (*p == '\0') break;
        } else {
            cur += *p;
        }
    }
    return out;
}

// Whether this CPU has one feature, by its GCC name. A name not listed here counts as missing, so a
// list naming a feature this function does not know keeps its variant off rather than risking SIGILL.
inline bool cpu_has_feature(const std::string& f) {
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
#define ZK_FEATURE(name) \
    if (f == name) return __builtin_cpu_supports(name);
    ZK_FEATURE("sse3") ZK_FEATURE("ssse3") ZK_FEATURE("sse4.1") ZK_FEATURE("sse4.2") ZK_FEATURE("avx")
    ZK_FEATURE("avx2") ZK_FEATURE("fma") ZK_FEATURE("f16c") ZK_FEATURE("bmi") ZK_FEATURE("bmi2")
    ZK_FEATURE("popcnt") ZK_FEATURE("avx512f") ZK_FEATURE("avx512bw") ZK_FEATURE("avx512dq")
    ZK_FEATURE("avx512vl") ZK_FEATURE("avx512bf16") ZK_FEATURE("avx512vpopcntdq")
#undef ZK_FEATURE
#else
    (void)f;
#endif
    return false;
}

// Whether `variant` may run where `has(feature)` says which features are present: every one it was
// compiled for.
template <class Has>
bool runs_with(const IsaVariant& variant, Has has) {
    for (const std::string& f : feature_list(variant.features))
        if (!has(f)) return false;
    return true;
}

inline bool runs_on_this_cpu(const IsaVariant& variant) {
    return runs_with(variant, [](const std::string& f) { return cpu_has_feature(f); });
}

}  // namespace zk
