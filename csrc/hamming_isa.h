// One traits type per instruction set: Scalar (portable), Avx2 (nibble-table popcount), Avx512
// (VPOPCNTDQ). Each says how many rows its kernel takes at once (kGroup), computes one query's
// distances to those rows (group<NB>), and instantiates the shared scan loop (hamming_scan.h).
//
// Why each traits type has its own `scan` entry: an intrinsic may only be inlined into a function
// compiled for its ISA, and a template cannot take its target attribute from a template parameter.
// So the entry carries the ISA's target attribute plus `flatten`, which inlines the whole loop
// (scan_rows, group, popcount_xor, TopK::push) into it, compiled for that ISA. The target attribute
// is the variant's feature list (kFeatures, from isa_features.h), the same list the run-time check
// asks the CPU for; never -march, so one binary runs on any x86-64.
#pragma once

// gcc 12 warns about its own _mm*_undefined_* helpers when they inline (a false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(__x86_64__) || defined(_M_X64)
#define ZK_X86 1
#include <immintrin.h>
#endif

#include <cstdint>

#include "hamming_scan.h"
#include "isa_features.h"

#define ZK_FLATTEN __attribute__((flatten))

namespace zk {

// ---------------------------------------------------------------- scalar (portable, any CPU)
struct Scalar {
    static constexpr const char* kName = "scalar";
    static constexpr const char* kFeatures = "";
    static constexpr int kGroup = 1;

    template <int NB>
    static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
        d[0] = popcount_xor(q, rows, 0, NB ? NB : nb);
        return d[0] <= thresh;
    }
    template <int NB>
    ZK_FLATTEN static void scan(const Job& J, Worker& W) { scan_rows<Scalar, NB>(J, W); }
};

#ifdef ZK_X86
#define ZK_AVX2 __attribute__((target(ZK_HAMMING_AVX2_FEATURES)))
#define ZK_AVX512 __attribute__((target(ZK_HAMMING_AVX512_FEATURES)))

// ---------------------------------------------------------------- AVX2: nibble-table popcount
struct Avx2 {
    static constexpr const char* kName = "avx2";
    static constexpr const char* kFeatures = ZK_HAMMING_AVX2_FEATURES;
    static constexpr int kGroup = 4;

    // Four rows' qword partial sums -> one vector of the four row totals.
    ZK_AVX2 static inline __m256i hsum4(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
        __m256i t01 = _mm256_add_epi64(_mm256_unpacklo_epi64(a0, a1), _mm256_unpackhi_epi64(a0, a1));
        __m256i t23 = _mm256_add_epi64(_mm256_unpacklo_epi64(a2, a3), _mm256_unpackhi_epi64(a2, a3));
        return _mm256_add_epi64(_mm256_permute2x128_si256(t01, t23, 0x20),
                                _mm256_permute2x128_si256(t01, t23, 0x31));
    }

    template <int NB>
    ZK_AVX2 static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
        const int n = NB ? NB : nb;
        const int full = n / 32;
        const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                             0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
        const __m256i low = _mm256_set1_epi8(0x0f);
        const __m256i zero = _mm256_setzero_si256();
        __m256i acc[4] = {zero, zero, zero, zero};
        // Byte counters are flushed into qword sums every 8 chunks (at most 64 per byte: no overflow).
        for (int c0 = 0; c0 < full; c0 += 8) {
            const int c1 = std::min(full, c0 + 8);
            __m256i bacc[4] = {zero, zero, zero, zero};
            for (int c = c0; c < c1; ++c) {
                const __m256i qv = _mm256_loadu_si256((const __m256i*)(q + 32 * c));
                for (int r = 0; r < 4; ++r) {
                    __m256i x = _mm256_xor_si256(qv, _mm256_loadu_si256((const __m256i*)(rows + r * n + 32 * c)));
                    __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, low)),
                                                  _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), low)));
                    bacc[r] = _mm256_add_epi8(bacc[r], cnt);
                }
            }
            for (int r = 0; r < 4; ++r) acc[r] = _mm256_add_epi64(acc[r], _mm256_sad_epu8(bacc[r], zero));
        }
        alignas(32) uint64_t s[4];
        _mm256_store_si256((__m256i*)s, hsum4(acc[0], acc[1], acc[2], acc[3]));
        for (int r = 0; r < 4; ++r) {
            int32_t t = (int32_t)s[r];
            if (n % 32) t += popcount_xor(q, rows + r * n, full * 32, n);  // bytes past the last chunk
            d[r] = t;
        }
        return (unsigned)(d[0] <= thresh) | (unsigned)(d[1] <= thresh) << 1 | (unsigned)(d[2] <= thresh) << 2 |
               (unsigned)(d[3] <= thresh) << 3;
    }
    template <int NB>
    ZK_AVX2 ZK_FLATTEN static void scan(const Job& J, Worker& W) { scan_rows<Avx2, NB>(J, W); }
};

// ---------------------------------------------------------------- AVX-512 VPOPCNTDQ
struct Avx512 {
    static constexpr const char* kName = "avx512";
    static constexpr const char* kFeatures = ZK_HAMMING_AVX512_FEATURES;
    static constexpr int kGroup = 8;

    // Eight rows' qword partial sums -> one vector holding the eight row totals in row order.
    ZK_AVX512 static inline __m512i hsum8(const __m512i* a) {
        __m512i t01 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[0], a[1]), _mm512_unpackhi_epi64(a[0], a[1]));
        __m512i t23 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2], a[3]), _mm512_unpackhi_epi64(a[2], a[3]));
        __m512i t45 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[4], a[5]), _mm512_unpackhi_epi64(a[4], a[5]));
        __m512i t67 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[6], a[7]), _mm512_unpackhi_epi64(a[6], a[7]));
        __m512i u0 = _mm512_add_epi64(_mm512_shuffle_i64x2(t01, t23, 0x88), _mm512_shuffle_i64x2(t01, t23, 0xDD));
        __m512i u1 = _mm512_add_epi64(_mm512_shuffle_i64x2(t45, t67, 0x88), _mm512_shuffle_i64x2(t45, t67, 0xDD));
        return _mm512_add_epi64(_mm512_shuffle_i64x2(u0, u1, 0x88), _mm512_shuffle_i64x2(u0, u1, 0xDD));
    }

    template <int NB>
    ZK_AVX512 static inline unsigned group(const uint8_t* q, const uint8_t* rows, int nb, int32_t* d, int32_t thresh) {
        const int n = NB ? NB : nb;
        const int full = n / 64;
        const int tail = n % 64;
        __m512i acc[8];
        for (int r = 0; r < 8; ++r) acc[r] = _mm512_setzero_si512();
        for (int c = 0; c < full; ++c) {
            const __m512i qv = _mm512_loadu_si512(q + 64 * c);
            for (int r = 0; r < 8; ++r) {
                __m512i x = _mm512_xor_si512(qv, _mm512_loadu_si512(rows + r * n + 64 * c));
                acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
            }
        }
        if (tail) {
            // Masked byte loads read only the code's own bytes (masked-off bytes cannot fault), so any
            // code length works without padding; the zeroed lanes XOR to zero.
            const __mmask64 m = (__mmask64)((1ULL << tail) - 1);
            const __m512i qv = _mm512_maskz_loadu_epi8(m, q + 64 * full);
            for (int r = 0; r < 8; ++r) {
                __m512i x = _mm512_xor_si512(qv, _mm512_maskz_loadu_epi8(m, rows + r * n + 64 * full));
                acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(x));
            }
        }
        const __m256i v = _mm512_cvtepi64_epi32(hsum8(acc));
        _mm256_store_si256((__m256i*)d, v);
        return _mm256_cmple_epi32_mask(v, _mm256_set1_epi32(thresh));
    }
    template <int NB>
    ZK_AVX512 ZK_FLATTEN static void scan(const Job& J, Worker& W) { scan_rows<Avx512, NB>(J, W); }
};
#endif  // ZK_X86

}  // namespace zk
