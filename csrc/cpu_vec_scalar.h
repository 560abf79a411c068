// float32 "vector" traits in portable C++: 8 lanes held in an array, every operation a plain loop
// (the compiler may vectorise it with the baseline ISA). The reference variant for CPUs without AVX2
// and for other architectures. Unlike the SIMD variants, fma() rounds twice (a software fma would be
// far slower than the rest of this path); results stay within the ops' float32 tolerance.
#pragma once

struct Vec {
    struct F {
        float v[8];
    };
    static constexpr int W = 8;
    static constexpr int kRowsS = 2, kColsS = 2, kRowsPV = 2, kColsPV = 2;

    static inline F zero() { return set1(0.0f); }
    static inline F set1(float a) {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = a;
        return r;
    }
    static inline F load(const float* p) {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = p[i];
        return r;
    }
    static inline void store(float* p, F a) {
        for (int i = 0; i < W; ++i) p[i] = a.v[i];
    }
    static inline F load_n(const float* p, int n) {
        F r = zero();
        for (int i = 0; i < n; ++i) r.v[i] = p[i];
        return r;
    }
    static inline void store_n(float* p, F a, int n) {
        for (int i = 0; i < n; ++i) p[i] = a.v[i];
    }
    static inline F load_bf16(const uint16_t* p) {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = bf16_to_f32(p[i]);
        return r;
    }
    static inline F load_bf16_n(const uint16_t* p, int n) {
        F r = zero();
        for (int i = 0; i < n; ++i) r.v[i] = bf16_to_f32(p[i]);
        return r;
    }
    static inline void store_bf16(uint16_t* p, F a) {
        for (int i = 0; i < W; ++i) p[i] = f32_to_bf16(a.v[i]);
    }
    static inline void store_bf16_n(uint16_t* p, F a, int n) {
        for (int i = 0; i < n; ++i) p[i] = f32_to_bf16(a.v[i]);
    }
    static inline F round_bf16_finite(F a) { return round_bf16(a); }  // the SIMD variants skip the NaN fix-up
    static inline F round_bf16(F a) {
        for (int i = 0; i < W; ++i) a.v[i] = bf16_to_f32(f32_to_bf16(a.v[i]));
        return a;
    }

    // Values already integral in [0, 255] (quantization codes) -> uint8; _n: the first n lanes.
    static inline void store_u8(uint8_t* p, F a) {
        for (int i = 0; i < W; ++i) p[i] = (uint8_t)(int)a.v[i];
    }
    static inline void store_u8_n(uint8_t* p, F a, int n) {
        for (int i = 0; i < n; ++i) p[i] = (uint8_t)(int)a.v[i];
    }

#define ZK_LANEWISE(name, expr)                          \
    static inline F name(F a, F b) {                     \
        F r;                                             \
        for (int i = 0; i < W; ++i) r.v[i] = (expr);     \
        return r;                                        \
    }
    ZK_LANEWISE(add, a.v[i] + b.v[i])
    ZK_LANEWISE(sub, a.v[i] - b.v[i])
    ZK_LANEWISE(mul, a.v[i] * b.v[i])
    ZK_LANEWISE(div, a.v[i] / b.v[i])
    ZK_LANEWISE(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
    ZK_LANEWISE(min, a.v[i] < b.v[i] ? a.v[i] : b.v[i])
#undef ZK_LANEWISE
    static inline F fma(F a, F b, F c) {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
        return r;
    }
    static inline F round(F a) {
        for (int i = 0; i < W; ++i) a.v[i] = std::nearbyint(a.v[i]);
        return a;
    }
    static inline F pow2i(F n) {
        F r;
        for (int i = 0; i < W; ++i) {
            const uint32_t bits = (uint32_t)((int32_t)n.v[i] + 127) << 23;
            std::memcpy(&r.v[i], &bits, 4);
        }
        return r;
    }
    static inline F select_gt(F a, F b, F x, F y) {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = a.v[i] > b.v[i] ? x.v[i] : y.v[i];
        return r;
    }
    static inline F iota() {
        F r;
        for (int i = 0; i < W; ++i) r.v[i] = (float)i;
        return r;
    }
    static inline float hsum(F a) {
        return ((a.v[0] + a.v[4]) + (a.v[2] + a.v[6])) + ((a.v[1] + a.v[5]) + (a.v[3] + a.v[7]));
    }
    static inline float hmax(F a) {
        float m = a.v[0];
        for (int i = 1; i < W; ++i) m = a.v[i] > m ? a.v[i] : m;
        return m;
    }
};
