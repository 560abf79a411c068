// float32 vector traits for AVX-512 (F/BW/VL/DQ): 16 lanes. Included only by cpu_isa_avx512*.cpp,
// after their `#pragma GCC target`, inside the ISA's own namespace (see cpu_kernels.h for the interface).
#pragma once

struct Vec {
    using F = __m512;
    static constexpr int W = 16;
    // attention micro-kernel shapes: rows x vectors of accumulators (16 of the 32 registers)
    static constexpr int kRowsS = 8, kColsS = 2, kRowsPV = 4, kColsPV = 4;

    static inline F zero() { return _mm512_setzero_ps(); }
    static inline F set1(float a) { return _mm512_set1_ps(a); }
    static inline F load(const float* p) { return _mm512_loadu_ps(p); }
    static inline void store(float* p, F v) { _mm512_storeu_ps(p, v); }
    static inline __mmask16 first(int n) { return (__mmask16)((1u << n) - 1u); }  // 0 <= n < 16
    static inline F load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
    static inline void store_n(float* p, F v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }

    static inline F widen(__m256i b) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(b), 16)); }
    static inline F load_bf16(const uint16_t* p) { return widen(_mm256_loadu_si256((const __m256i*)p)); }
    static inline F load_bf16_n(const uint16_t* p, int n) { return widen(_mm256_maskz_loadu_epi16(first(n), p)); }
    // Round to nearest even in integer arithmetic, NaN -> quiet NaN (c10::BFloat16's rounding);
    // returns the rounded value's bits in the top half of each 32-bit lane.
    static inline __m512i round_bits(F v) {
        const __m512i u = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc00000));
        return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
    }
    static inline __m256i to_bf16(F v) { return _mm512_cvtepi32_epi16(_mm512_srli_epi32(round_bits(v), 16)); }
    static inline void store_bf16(uint16_t* p, F v) { _mm256_storeu_si256((__m256i*)p, to_bf16(v)); }
    static inline void store_bf16_n(uint16_t* p, F v, int n) { _mm256_mask_storeu_epi16(p, first(n), to_bf16(v)); }
    static inline F round_bf16(F v) { return _mm512_castsi512_ps(round_bits(v)); }
    // round_bf16 for values known not to be NaN (no NaN fix-up; infinities round to themselves)
    static inline F round_bf16_finite(F v) {
        const __m512i u = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
        return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
    }

    // Values already integral in [0, 255] (quantization codes) -> uint8; _n: the first n lanes.
    static inline void store_u8(uint8_t* p, F v) {
        _mm_storeu_si128((__m128i*)p, _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(v)));
    }
    static inline void store_u8_n(uint8_t* p, F v, int n) {
        _mm512_mask_cvtusepi32_storeu_epi8(p, first(n), _mm512_cvtps_epi32(v));
    }

    static inline F add(F a, F b) { return _mm512_add_ps(a, b); }
    static inline F sub(F a, F b) { return _mm512_sub_ps(a, b); }
    static inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
    static inline F div(F a, F b) { return _mm512_div_ps(a, b); }
    static inline F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c, one rounding
    static inline F max(F a, F b) { return _mm512_max_ps(a, b); }
    static inline F min(F a, F b) { return _mm512_min_ps(a, b); }
    static inline F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    // 2^n for integral n in [-127, 127] (n = -127 gives 0: results below 2^-126 are flushed)
    static inline F pow2i(F n) {
        const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        return _mm512_castsi512_ps(_mm512_slli_epi32(e, 23));
    }
    static inline F select_gt(F a, F b, F x, F y) {  // a > b ? x : y, per lane
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x);
    }
#ifdef ZK_BF16_DOT
    // bf16 pair products (AVX512-BF16): each 32-bit lane holds two bf16; dot2 adds a.lo*b.lo + a.hi*b.hi
    // to the float32 lane (vdpbf16ps).
    using I = __m512i;
    static inline I loadi(const uint32_t* p) { return _mm512_loadu_si512(p); }
    static inline I bcast_pair(const uint16_t* p) {
        uint32_t u;
        std::memcpy(&u, p, 4);
        return _mm512_set1_epi32((int)u);
    }
    static inline F dot2(F acc, I a, I b) { return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b); }
#endif
    static inline F iota() {
        return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    }
    // Fixed lane order: the same input always gives the same sum.
    static inline float hsum(F v) {
        __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        return _mm_cvtss_f32(s);
    }
    static inline float hmax(F v) {
        __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
        return _mm_cvtss_f32(s);
    }
};
