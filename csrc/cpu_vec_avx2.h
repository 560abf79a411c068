// float32 vector traits for AVX2 + FMA: 8 lanes. Included only by cpu_isa_avx2.cpp, after its
// `#pragma GCC target`, inside the ISA's own namespace (see cpu_kernels.h for the interface).
#pragma once

struct Vec {
    using F = __m256;
    static constexpr int W = 8;
    // attention micro-kernel shapes (16 registers: at most 8-12 accumulators)
    static constexpr int kRowsS = 4, kColsS = 2, kRowsPV = 2, kColsPV = 4;

    static inline F zero() { return _mm256_setzero_ps(); }
    static inline F set1(float a) { return _mm256_set1_ps(a); }
    static inline F load(const float* p) { return _mm256_loadu_ps(p); }
    static inline void store(float* p, F v) { _mm256_storeu_ps(p, v); }
    static inline __m256i first(int n) {  // lanes [0, n) set, 0 <= n < 8
        static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
        return _mm256_loadu_si256((const __m256i*)(table + 8 - n));
    }
    static inline F load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
    static inline void store_n(float* p, F v, int n) { _mm256_maskstore_ps(p, first(n), v); }

    static inline F widen(__m128i b) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16)); }
    static inline F load_bf16(const uint16_t* p) { return widen(_mm_loadu_si128((const __m128i*)p)); }
    static inline F load_bf16_n(const uint16_t* p, int n) {
        alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < n; ++i) tmp[i] = p[i];
        return widen(_mm_load_si128((const __m128i*)tmp));
    }
    static inline __m256i round_bits(F v) {  // as Vec (AVX-512): c10::BFloat16's rounding, bits on top
        const __m256i u = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc00000), nan);
        return _mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u));
    }
    static inline __m128i to_bf16(F v) {
        const __m256i r = _mm256_srli_epi32(round_bits(v), 16);
        // packus works per 128-bit half: [r0-3 r0-3 | r4-7 r4-7]; gather quadwords 0 and 2.
        return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08));
    }
    static inline void store_bf16(uint16_t* p, F v) { _mm_storeu_si128((__m128i*)p, to_bf16(v)); }
    static inline void store_bf16_n(uint16_t* p, F v, int n) {
        alignas(16) uint16_t tmp[8];
        _mm_store_si128((__m128i*)tmp, to_bf16(v));
        for (int i = 0; i < n; ++i) p[i] = tmp[i];
    }
    static inline F round_bf16(F v) { return _mm256_castsi256_ps(round_bits(v)); }
    // round_bf16 for values known not to be NaN (no NaN fix-up; infinities round to themselves)
    static inline F round_bf16_finite(F v) {
        const __m256i u = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
        return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
    }

    // Values already integral in [0, 255] (quantization codes) -> uint8; _n: the first n lanes.
    static inline __m128i to_u8(F v) {
        const __m256i i = _mm256_cvtps_epi32(v);
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
        return _mm_packus_epi16(w, w);
    }
    static inline void store_u8(uint8_t* p, F v) { _mm_storel_epi64((__m128i*)p, to_u8(v)); }
    static inline void store_u8_n(uint8_t* p, F v, int n) {
        alignas(16) uint8_t tmp[16];
        _mm_store_si128((__m128i*)tmp, to_u8(v));
        for (int i = 0; i < n; ++i) p[i] = tmp[i];
    }

    static inline F add(F a, F b) { return _mm256_add_ps(a, b); }
    static inline F sub(F a, F b) { return _mm256_sub_ps(a, b); }
    static inline F mul(F a, F b) { return _mm256_mul_ps(a, b); }
    static inline F div(F a, F b) { return _mm256_div_ps(a, b); }
    static inline F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
    static inline F max(F a, F b) { return _mm256_max_ps(a, b); }
    static inline F min(F a, F b) { return _mm256_min_ps(a, b); }
    static inline F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static inline F pow2i(F n) {
        const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_castsi256_ps(_mm256_slli_epi32(e, 23));
    }
    static inline F select_gt(F a, F b, F x, F y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
    static inline F iota() { return _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7); }
    static inline float hsum(F v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        return _mm_cvtss_f32(s);
    }
    static inline float hmax(F v) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
        return _mm_cvtss_f32(s);
    }
};
