// The CPU model ops, written once against a float32 vector traits type `Vec` (cpu_vec_*.h) and
// compiled once per instruction set: each cpu_isa_*.cpp sets its `#pragma GCC target`, opens its own
// namespace (so no two variants share a symbol), defines Vec and includes this file.
//
// Vec supplies: F (a vector of W floats); zero/set1/load/store and their _n forms (the first n lanes);
// load_bf16/store_bf16(_n) (bf16 <-> f32, round to nearest even); round_bf16 (round, back to f32);
// add/sub/mul/div/fma/max/min/round; pow2i (2^n for integral n in [-127, 127]); select_gt; iota;
// hsum/hmax (a fixed reduction order); kRowsS / kColsS / kRowsPV / kColsPV (attention register blocking).
//
// Determinism: a row's result depends only on that row's inputs, never on the rows beside it, the
// number of rows or threads: the reductions run in a fixed order per row, and the vector tails use
// masked loads, not different code. That is what keeps a prompt's score independent of its batch.
//
// No #pragma once: included once per ISA translation unit, inside that unit's namespace.

using F = Vec::F;
constexpr int W = Vec::W;

// ------------------------------------------------------------------ element types
template <DType T> struct IO;
template <> struct IO<DType::F32> {
    using E = float;
    static inline F load(const E* p) { return Vec::load(p); }
    static inline F load_n(const E* p, int n) { return Vec::load_n(p, n); }
    static inline void store(E* p, F v) { Vec::store(p, v); }
    static inline void store_n(E* p, F v, int n) { Vec::store_n(p, v, n); }
    static inline F round(F v) { return v; }
    static inline F round_not_nan(F v) { return v; }
    static inline E from_f32(float f) { return f; }
};
template <> struct IO<DType::BF16> {
    using E = uint16_t;
    static inline F load(const E* p) { return Vec::load_bf16(p); }
    static inline F load_n(const E* p, int n) { return Vec::load_bf16_n(p, n); }
    static inline void store(E* p, F v) { Vec::store_bf16(p, v); }
    static inline void store_n(E* p, F v, int n) { Vec::store_bf16_n(p, v, n); }
    static inline F round(F v) { return Vec::round_bf16(v); }
    static inline F round_not_nan(F v) { return Vec::round_bf16_finite(v); }  // v holds no NaN
    static inline E from_f32(float f) { return f32_to_bf16(f); }
};

// ------------------------------------------------------------------ exp
// 2^x: x = n + f with n integral, |f| <= 1/2, 2^f by its Taylor series to degree 7 (error < 1e-8
// relative, below float rounding). exp2(0) is exactly 1 and exp2(-inf) exactly 0, which the online
// softmax relies on (a fully masked key tile must leave a row's state bit-for-bit unchanged).
static inline F exp2v(F x) {
    x = Vec::min(Vec::max(x, Vec::set1(-127.0f)), Vec::set1(127.0f));
    const F n = Vec::round(x);
    const F f = Vec::sub(x, n);
    F p = Vec::set1(1.525273380405984e-05f);
    p = Vec::fma(p, f, Vec::set1(1.5403530393381606e-04f));
    p = Vec::fma(p, f, Vec::set1(1.3333558146428443e-03f));
    p = Vec::fma(p, f, Vec::set1(9.618129107628477e-03f));
    p = Vec::fma(p, f, Vec::set1(5.550410866482158e-02f));
    p = Vec::fma(p, f, Vec::set1(2.402265069591007e-01f));
    p = Vec::fma(p, f, Vec::set1(6.931471805599453e-01f));
    p = Vec::fma(p, f, Vec::set1(1.0f));
    return Vec::mul(p, Vec::pow2i(n));
}

// e^x with Cody-Waite reduction (x = n ln2 + r, |r| <= ln2/2, two-part ln2) and e^r to degree 7:
// about 1 ulp, like torch's vectorised exp. Below -87.3 the result is flushed to 0 (torch returns
// denormals there); above 88.72 it is +inf, as in torch.
static inline F expv(F x) {
    const F big = Vec::set1(88.72283935546875f);
    const F xc = Vec::min(Vec::max(x, Vec::set1(-87.33654f)), Vec::set1(88.0f));
    const F n = Vec::round(Vec::mul(xc, Vec::set1(1.44269504088896341f)));
    F r = Vec::fma(n, Vec::set1(-0.693359375f), xc);
    r = Vec::fma(n, Vec::set1(2.12194440e-4f), r);
    F p = Vec::set1(1.0f / 5040.0f);
    p = Vec::fma(p, r, Vec::set1(1.0f / 720.0f));
    p = Vec::fma(p, r, Vec::set1(1.0f / 120.0f));
    p = Vec::fma(p, r, Vec::set1(1.0f / 24.0f));
    p = Vec::fma(p, r, Vec::set1(1.0f / 6.0f));
    p = Vec::fma(p, r, Vec::set1(0.5f));
    p = Vec::fma(p, r, Vec::set1(1.0f));
    p = Vec::fma(p, r, Vec::set1(1.0f));
    return Vec::select_gt(x, big, Vec::set1(__builtin_inff()), Vec::mul(p, Vec::pow2i(n)));
}

// ------------------------------------------------------------------ RMSNorm (+ residual add)
// Sum of squares of n values (4 interleaved accumulators, combined in a fixed order).
template <DType T>
static inline float sum_squares(const typename IO<T>::E* x, int64_t n) {
    F a0 = Vec::zero(), a1 = a0, a2 = a0, a3 = a0;
    int64_t j = 0;
    for (; j + 4 * W <= n; j += 4 * W) {
        const F v0 = IO<T>::load(x + j), v1 = IO<T>::load(x + j + W);
        const F v2 = IO<T>::load(x + j + 2 * W), v3 = IO<T>::load(x + j + 3 * W);
        a0 = Vec::fma(v0, v0, a0);
        a1 = Vec::fma(v1, v1, a1);
        a2 = Vec::fma(v2, v2, a2);
        a3 = Vec::fma(v3, v3, a3);
    }
    for (; j + W <= n; j += W) {
        const F v = IO<T>::load(x + j);
        a0 = Vec::fma(v, v, a0);
    }
    if (j < n) {
        const F v = IO<T>::load_n(x + j, (int)(n - j));
        a1 = Vec::fma(v, v, a1);
    }
    return Vec::hsum(Vec::add(Vec::add(a0, a1), Vec::add(a2, a3)));
}

// out = round(w * round(x * rstd)): the reference's rounding order (normalised value in the input
// dtype, then one product with the weight).
template <DType T>
static inline void scale_by_weight(const typename IO<T>::E* x, const typename IO<T>::E* w, float rstd,
                                   typename IO<T>::E* out, int64_t n) {
    const F r = Vec::set1(rstd);
    int64_t j = 0;
    for (; j + W <= n; j += W)
        IO<T>::store(out + j, Vec::mul(IO<T>::load(w + j), IO<T>::round(Vec::mul(IO<T>::load(x + j), r))));
    if (j < n) {
        const int m = (int)(n - j);
        const F normed = IO<T>::round(Vec::mul(IO<T>::load_n(x + j, m), r));
        IO<T>::store_n(out + j, Vec::mul(IO<T>::load_n(w + j, m), normed), m);
    }
}

template <DType T>
static void rms_norm_rows(const RmsArgs& a, int64_t r0, int64_t r1) {
    using E = typename IO<T>::E;
    const int64_t H = a.cols;
    const E* w = (const E*)a.w;
    for (int64_t r = r0; r < r1; ++r) {
        const E* x = (const E*)a.x + r * a.sx;
        E* out = (E*)a.out + r * a.so;
        if (a.res != nullptr) {  // sum = round(x + res), written once, then normalised from L1
            const E* res = (const E*)a.res + r * a.sr;
            E* sum = (E*)a.sum_out + r * a.ss;
            int64_t j = 0;
            for (; j + W <= H; j += W)
                IO<T>::store(sum + j, Vec::add(IO<T>::load(x + j), IO<T>::load(res + j)));
            if (j < H) {
                const int m = (int)(H - j);
                IO<T>::store_n(sum + j, Vec::add(IO<T>::load_n(x + j, m), IO<T>::load_n(res + j, m)), m);
            }
            x = sum;
        }
        const float rstd = 1.0f / std::sqrt(sum_squares<T>(x, H) / (float)H + a.eps);
        scale_by_weight<T>(x, w, rstd, out, H);
    }
}

// ------------------------------------------------------------------ QK-norm + RoPE
template <DType T>
static void norm_rope_head(const typename IO<T>::E* x, const typename IO<T>::E* w, const float* cs,
                           const float* sn, int64_t D, float eps, typename IO<T>::E* out) {
    const int64_t half = D / 2;
    const F rstd = Vec::set1(1.0f / std::sqrt(sum_squares<T>(x, D) / (float)D + eps));
    for (int64_t j = 0; j < half; j += W) {
        const int m = (int)std::min<int64_t>(W, half - j);
        const bool full = m == W;
        const F x1 = full ? IO<T>::load(x + j) : IO<T>::load_n(x + j, m);
        const F x2 = full ? IO<T>::load(x + half + j) : IO<T>::load_n(x + half + j, m);
        const F w1 = full ? IO<T>::load(w + j) : IO<T>::load_n(w + j, m);
        const F w2 = full ? IO<T>::load(w + half + j) : IO<T>::load_n(w + half + j, m);
        // Reference: weight * round(x * rstd), rounded to the dtype, then RoPE in float32.
        const F n1 = IO<T>::round(Vec::mul(w1, IO<T>::round(Vec::mul(x1, rstd))));
        const F n2 = IO<T>::round(Vec::mul(w2, IO<T>::round(Vec::mul(x2, rstd))));
        const F c = full ? Vec::load(cs + j) : Vec::load_n(cs + j, m);
        const F s = full ? Vec::load(sn + j) : Vec::load_n(sn + j, m);
        // Separate products and sums (no fma): the reference's x1*c - x2*s, bit for bit in float32.
        const F o1 = Vec::sub(Vec::mul(n1, c), Vec::mul(n2, s));
        const F o2 = Vec::add(Vec::mul(n2, c), Vec::mul(n1, s));
        if (full) {
            IO<T>::store(out + j, o1);
            IO<T>::store(out + half + j, o2);
        } else {
            IO<T>::store_n(out + j, o1, m);
            IO<T>::store_n(out + half + j, o2, m);
        }
    }
}

template <DType T>
static void norm_rope_rows(const NormRopeArgs& a, int64_t r0, int64_t r1) {
    using E = typename IO<T>::E;
    const int64_t D = a.head_dim;
    for (int64_t r = r0; r < r1; ++r) {
        const bool is_q = r < a.q.tokens;
        const NormRopeSide& side = is_q ? a.q : a.k;
        const int64_t t = is_q ? r : r - a.q.tokens;
        const int64_t pos = side.pos[t];
        const float* cs = a.cos + pos * a.cs_stride;
        const float* sn = a.sin + pos * a.cs_stride;
        for (int64_t h = 0; h < side.heads; ++h)
            norm_rope_head<T>((const E*)side.x + t * side.st + h * side.sh, (const E*)side.w, cs, sn, D, a.eps,
                              (E*)side.out + (t * side.heads + h) * D);
    }
}

// ------------------------------------------------------------------ SwiGLU
template <DType T>
static inline F swiglu_vec(F g, F u) {
    // silu(g) = g / (1 + exp(-g)), as torch computes it, then one product with up.
    const F e = expv(Vec::sub(Vec::zero(), g));
    return Vec::mul(Vec::div(g, Vec::add(Vec::set1(1.0f), e)), u);
}

template <DType T>
static void swiglu_rows(const SwigluArgs& a, int64_t r0, int64_t r1) {
    using E = typename IO<T>::E;
    const int64_t n = a.cols;
    for (int64_t r = r0; r < r1; ++r) {
        const E* g = (const E*)a.gate + r * a.sg;
        const E* u = (const E*)a.up + r * a.su;
        E* o = (E*)a.out + r * a.so;
        int64_t j = 0;
        for (; j + W <= n; j += W) IO<T>::store(o + j, swiglu_vec<T>(IO<T>::load(g + j), IO<T>::load(u + j)));
        if (j < n) {
            const int m = (int)(n - j);
            IO<T>::store_n(o + j, swiglu_vec<T>(IO<T>::load_n(g + j, m), IO<T>::load_n(u + j, m)), m);
        }
    }
}

// ------------------------------------------------------------------ fused per-token quantization
// The row's values go to a float32 scratch row (one pass, tracking max|v| and whether any is not finite),
// then to codes (a second pass over the scratch, which is in L1/L2): the steps of quantize_rows, so the
// codes are bit for bit the unfused op's followed by quantize_rows.
struct RowScratch {
    float* p;
    explicit RowScratch(int64_t n) : p(new float[(size_t)(n > 0 ? n : 1)]) {}
    ~RowScratch() { delete[] p; }
    RowScratch(const RowScratch&) = delete;
    RowScratch& operator=(const RowScratch&) = delete;
};

// Tracks max|v| and finiteness of the values a row's producer stores into the scratch row (a vector tail's
// lanes past the row hold zeros from masked loads: they change neither).
struct AbsMax {
    F amax = Vec::zero(), nonfinite = Vec::zero();  // v - v is 0 for a finite v, NaN otherwise
    inline void add(F v) {
        amax = Vec::max(amax, Vec::max(v, Vec::sub(Vec::zero(), v)));
        nonfinite = Vec::add(nonfinite, Vec::sub(v, v));
    }
    inline bool finite() const { return Vec::hsum(nonfinite) == 0.0f; }
};

// codes and scale of one row of n values (all finite) from the scratch row v and its max|v|
static inline void quantize_row(const float* v, int64_t n, float amax, uint8_t* q, float* scale) {
    *scale = amax == 0.0f ? 1.0f : amax / 127.0f;
    const F inv = Vec::set1(amax == 0.0f ? 1.0f : 127.0f / amax);
    const F lo = Vec::set1(-127.0f), hi = Vec::set1(127.0f), zero_point = Vec::set1(128.0f);
    int64_t j = 0;
    for (; j + W <= n; j += W)
        Vec::store_u8(q + j, Vec::add(Vec::min(hi, Vec::max(lo, Vec::round(Vec::mul(Vec::load(v + j), inv)))),
                                      zero_point));
    if (j < n) {
        const int m = (int)(n - j);
        Vec::store_u8_n(q + j, Vec::add(Vec::min(hi, Vec::max(lo, Vec::round(Vec::mul(Vec::load_n(v + j, m), inv)))),
                                        zero_point), m);
    }
}

// A row that is not finite gets codes 128 and scale 1 (the caller raises); returns whether it was finite.
static inline bool finish_row(const float* v, int64_t n, const AbsMax& m, uint8_t* q, float* scale) {
    if (!m.finite()) {
        for (int64_t j = 0; j < n; ++j) q[j] = 128;
        *scale = 1.0f;
        return false;
    }
    quantize_row(v, n, Vec::hmax(m.amax), q, scale);
    return true;
}

// The input value of an op that may read an int8 matmul's float32 output: round(y * s) in T (what
// scale_rows stores), else the T element itself. y * s holds no NaN (an int32 sum times finite scales), so
// its rounding needs no NaN fix-up.
template <DType T, bool Scaled>
static inline F load_input(const void* x, int64_t j, F s) {
    if constexpr (Scaled) return IO<T>::round_not_nan(Vec::mul(Vec::load((const float*)x + j), s));
    else return IO<T>::load((const typename IO<T>::E*)x + j);
}
template <DType T, bool Scaled>
static inline F load_input_n(const void* x, int64_t j, F s, int m) {
    if constexpr (Scaled) return IO<T>::round_not_nan(Vec::mul(Vec::load_n((const float*)x + j, m), s));
    else return IO<T>::load_n((const typename IO<T>::E*)x + j, m);
}

// rms_norm_rows' values (with the residual: sum written, then normalised from it), quantized per row.
template <DType T, bool Scaled>
static int64_t rms_norm_quant_rows(const RmsQuantArgs& a, int64_t r0, int64_t r1) {
    using E = typename IO<T>::E;
    const int64_t H = a.cols;
    const E* w = (const E*)a.w;
    RowScratch scratch(H);
    float* v = scratch.p;
    int64_t bad = -1;
    for (int64_t r = r0; r < r1; ++r) {
        const void* xr = Scaled ? (const void*)((const float*)a.x + r * a.sx) : (const void*)((const E*)a.x + r * a.sx);
        const F s = Vec::set1(Scaled ? a.x_scale[r] : 1.0f);
        const E* x;
        if (a.res != nullptr) {
            const E* res = (const E*)a.res + r * a.sr;
            E* sum = (E*)a.sum_out + r * a.ss;
            int64_t j = 0;
            for (; j + W <= H; j += W)
                IO<T>::store(sum + j, Vec::add(load_input<T, Scaled>(xr, j, s), IO<T>::load(res + j)));
            if (j < H) {
                const int m = (int)(H - j);
                IO<T>::store_n(sum + j, Vec::add(load_input_n<T, Scaled>(xr, j, s, m), IO<T>::load_n(res + j, m)), m);
            }
            x = sum;
        } else {
            x = (const E*)xr;  // Scaled needs a residual (checked by the binding)
        }
        const F rstd = Vec::set1(1.0f / std::sqrt(sum_squares<T>(x, H) / (float)H + a.eps));
        AbsMax mx;
        int64_t j = 0;
        for (; j + W <= H; j += W) {  // scale_by_weight's values, rounded to T as it stores them
            const F o = IO<T>::round(Vec::mul(IO<T>::load(w + j), IO<T>::round(Vec::mul(IO<T>::load(x + j), rstd))));
            Vec::store(v + j, o);
            mx.add(o);
        }
        if (j < H) {
            const int m = (int)(H - j);
            const F o = IO<T>::round(Vec::mul(IO<T>::load_n(w + j, m), IO<T>::round(Vec::mul(IO<T>::load_n(x + j, m), rstd))));
            Vec::store_n(v + j, o, m);
            mx.add(o);
        }
        if (!finish_row(v, H, mx, a.q + r * a.sq, a.scale + r) && bad < 0) bad = r;
    }
    return bad;
}

// swiglu_rows' values, quantized per row.
template <DType T, bool Scaled>
static int64_t swiglu_quant_rows(const SwigluQuantArgs& a, int64_t r0, int64_t r1) {
    using E = typename IO<T>::E;
    const int64_t n = a.cols;
    RowScratch scratch(n);
    float* v = scratch.p;
    int64_t bad = -1;
    for (int64_t r = r0; r < r1; ++r) {
        const void* g = Scaled ? (const void*)((const float*)a.gate + r * a.sg) : (const void*)((const E*)a.gate + r * a.sg);
        const void* u = Scaled ? (const void*)((const float*)a.up + r * a.su) : (const void*)((const E*)a.up + r * a.su);
        const F s = Vec::set1(Scaled ? a.in_scale[r] : 1.0f);
        AbsMax mx;
        int64_t j = 0;
        for (; j + W <= n; j += W) {
            const F o = IO<T>::round(swiglu_vec<T>(load_input<T, Scaled>(g, j, s), load_input<T, Scaled>(u, j, s)));
            Vec::store(v + j, o);
            mx.add(o);
        }
        if (j < n) {
            const int m = (int)(n - j);
            const F o = IO<T>::round(swiglu_vec<T>(load_input_n<T, Scaled>(g, j, s, m), load_input_n<T, Scaled>(u, j, s, m)));
            Vec::store_n(v + j, o, m);
            mx.add(o);
        }
        if (!finish_row(v, n, mx, a.q + r * a.sq, a.scale + r) && bad < 0) bad = r;
    }
    return bad;
}

// ------------------------------------------------------------------ attention
// Work item: up to kQueryRows (token, head) rows of one sequence and kv head, token-major (row i is
// token i / G, head kv_head * G + i % G), so every K/V tile is read once for the whole GQA group.
// Keys: the shared prefix's tiles, then the sequence's own tiles, kKeyTile keys each at fixed offsets
// of their range; per tile: scores, online softmax (base 2, float32), P V into the float32 output.
//
// Two tile formats: float32 (K transposed [D][kKeyTile], V rows [kKeyTile][D]) for float32 inputs and
// on CPUs without bf16 dot products; bf16 pairs for bf16 inputs where Vec has them (AVX512-BF16):
// K as [D/2][kKeyTile] pairs (k[n][2i], k[n][2i+1]) and V as [kKeyTile/2][D] pairs (v[2j][d],
// v[2j+1][d]), each pair one 32-bit lane of vdpbf16ps. The bf16 path rounds the softmax weights P to
// bf16 before P V (as flash attention and torch's own CPU flash attention do), with float32 sums.
//
// A row's result is independent of the rows that share its item: tiles sit at fixed offsets; a tile
// whose keys a row cannot see leaves its state bit-for-bit unchanged (p = 0, alpha = 1); sums over d
// and over keys run in one fixed order per row.

constexpr int kTileVecs = kKeyTile / W;

// A sequence's keys as one virtual range: keys [0, pl) from its shared prefix, [pl, pl + own.len) from
// its own rows. Tiles sit at multiples of kKeyTile of this virtual index, so a prompt split into a
// shared prefix and the rest meets its keys in exactly the tiles (and the order) it would meet them
// packed whole: the prefix cache does not change a single bit of its result.
struct KeySource {
    const KeyRange* pre;  // nullptr when pl == 0
    int64_t pl;
    const KeyRange* own;
    int64_t len() const { return pl + own->len; }
    template <class E>
    const E* k(int64_t c, int64_t h) const {
        return c < pl ? (const E*)pre->k + (pre->start + c) * pre->sk_t + h * pre->sk_h
                      : (const E*)own->k + (own->start + c - pl) * own->sk_t + h * own->sk_h;
    }
    template <class E>
    const E* v(int64_t c, int64_t h) const {
        return c < pl ? (const E*)pre->v + (pre->start + c) * pre->sv_t + h * pre->sv_h
                      : (const E*)own->v + (own->start + c - pl) * own->sv_t + h * own->sv_h;
    }
};

// Tile `tile` of kv head `h` in the float32 format (zeros past the keys' end).
template <DType T>
static void prep_tile_f32(const KeySource& src, int64_t D, int64_t tile, int64_t h, float* kt, float* vt) {
    using E = typename IO<T>::E;
    const int64_t j0 = tile * kKeyTile;
    const int n = (int)std::min<int64_t>(kKeyTile, src.len() - j0);
    for (int i = 0; i < n; ++i) {
        const E* k = src.k<E>(j0 + i, h);
        const E* v = src.v<E>(j0 + i, h);
        alignas(64) float row[W];
        for (int64_t d = 0; d < D; d += W) {  // D is a multiple of W (checked by the caller)
            Vec::store(row, IO<T>::load(k + d));
            for (int l = 0; l < W; ++l) kt[(d + l) * kKeyTile + i] = row[l];
            Vec::store(vt + i * D + d, IO<T>::load(v + d));
        }
    }
    for (int64_t d = 0; d < D && n < kKeyTile; ++d)
        for (int i = n; i < kKeyTile; ++i) kt[d * kKeyTile + i] = 0.0f;
}

#ifdef ZK_BF16_DOT
constexpr bool kDotBf16 = true;
// The bf16-pair format (see above); zeros past the keys' end, so an odd key count pairs with a zero.
static void prep_tile_pairs(const KeySource& src, int64_t D, int64_t tile, int64_t h, uint32_t* kt, uint32_t* vt) {
    const int64_t j0 = tile * kKeyTile;
    const int n = (int)std::min<int64_t>(kKeyTile, src.len() - j0);
    const int64_t half = D / 2;
    for (int i = 0; i < n; ++i) {
        const uint32_t* k = (const uint32_t*)src.k<uint16_t>(j0 + i, h);
        for (int64_t p = 0; p < half; ++p) kt[p * kKeyTile + i] = k[p];
    }
    for (int64_t p = 0; p < half && n < kKeyTile; ++p)
        for (int i = n; i < kKeyTile; ++i) kt[p * kKeyTile + i] = 0;
    for (int j = 0; j < kKeyTile / 2; ++j) {
        const int a = 2 * j, b = 2 * j + 1;
        const uint16_t* va = a < n ? src.v<uint16_t>(j0 + a, h) : nullptr;
        const uint16_t* vb = b < n ? src.v<uint16_t>(j0 + b, h) : nullptr;
        uint32_t* dst = vt + j * D;
        for (int64_t d = 0; d < D; ++d)
            dst[d] = (va ? (uint32_t)va[d] : 0u) | (vb ? (uint32_t)vb[d] << 16 : 0u);
    }
}
#else
constexpr bool kDotBf16 = false;
#endif

static void prep_source_tile(const KeySource& src, DType t, int64_t D, int64_t tile, int64_t h, float* kt, float* vt) {
    if (t == DType::F32) return prep_tile_f32<DType::F32>(src, D, tile, h, kt, vt);
#ifdef ZK_BF16_DOT
    prep_tile_pairs(src, D, tile, h, (uint32_t*)kt, (uint32_t*)vt);
#else
    prep_tile_f32<DType::BF16>(src, D, tile, h, kt, vt);
#endif
}

// A shared range on its own (phase 1 of a call: the prefixes).
static void prep_tile(const KeyRange& r, DType t, int64_t D, int64_t tile, int64_t h, float* kt, float* vt) {
    prep_source_tile(KeySource{nullptr, 0, &r}, t, D, tile, h, kt, vt);
}

// Work buffers of one item (see attention_work_floats).
struct ItemBuf {
    float* q;      // float32 path: [kQueryRows][D], scaled by scale * log2(e)
    float* o;      // [kQueryRows][D]
    float* p;      // [kQueryRows][kKeyTile]: scores, then softmax weights
    float* lim;    // last visible own key per row (prefix keys are all visible)
    float* m;      // running max (log2 domain)
    float* l;      // running sum
    float* alpha;  // this tile's rescale factor per row
    const uint16_t* qrow[kQueryRows];  // bf16-pair path: the rows' q vectors, in place
};

// float32 scores of R rows against the first NV vectors of keys of a K tile: R x NV accumulators,
// each K vector loaded once per d for all R rows; every (row, key) sum runs over d in order.
template <int R, int NV>
static inline void scores_f32(const float* q, int64_t D, const float* kt, float* s) {
    F acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < NV; ++c) acc[r][c] = Vec::zero();
    for (int64_t d = 0; d < D; ++d) {
        F kv[NV];
        for (int c = 0; c < NV; ++c) kv[c] = Vec::load(kt + d * kKeyTile + c * W);
        for (int r = 0; r < R; ++r) {
            const F b = Vec::set1(q[r * D + d]);
            for (int c = 0; c < NV; ++c) acc[r][c] = Vec::fma(b, kv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < NV; ++c) Vec::store(s + r * kKeyTile + c * W, acc[r][c]);
}

// O[r][d0 .. d0 + C*W) = O * alpha[r] + sum_{n < n_keys} P[r][n] V[n], for R rows.
template <int R, int C>
static inline void pv_f32(float* o, int64_t D, int64_t d0, const float* p, const float* alpha, const float* vt,
                          int n_keys) {
    F acc[R][C];
    for (int r = 0; r < R; ++r) {
        const F a = Vec::set1(alpha[r]);
        for (int c = 0; c < C; ++c) acc[r][c] = Vec::mul(Vec::load(o + r * D + d0 + c * W), a);
    }
    for (int n = 0; n < n_keys; ++n) {
        F vv[C];
        for (int c = 0; c < C; ++c) vv[c] = Vec::load(vt + n * D + d0 + c * W);
        for (int r = 0; r < R; ++r) {
            const F b = Vec::set1(p[r * kKeyTile + n]);
            for (int c = 0; c < C; ++c) acc[r][c] = Vec::fma(b, vv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) Vec::store(o + r * D + d0 + c * W, acc[r][c]);
}

#ifdef ZK_BF16_DOT
// bf16-pair scores: R x NV accumulators over D / 2 pairs, q pairs broadcast straight from the q rows;
// scaled to the log2 domain afterwards.
template <int R, int NV>
static inline void scores_pairs(const uint16_t* const* qrow, int64_t D, const uint32_t* kt, float scale, float* s) {
    F acc[R][NV];
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < NV; ++c) acc[r][c] = Vec::zero();
    for (int64_t p = 0; p < D / 2; ++p) {
        Vec::I kv[NV];
        for (int c = 0; c < NV; ++c) kv[c] = Vec::loadi(kt + p * kKeyTile + c * W);
        for (int r = 0; r < R; ++r) {
            const Vec::I b = Vec::bcast_pair(qrow[r] + 2 * p);
            for (int c = 0; c < NV; ++c) acc[r][c] = Vec::dot2(acc[r][c], b, kv[c]);
        }
    }
    const F sc = Vec::set1(scale);
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < NV; ++c) Vec::store(s + r * kKeyTile + c * W, Vec::mul(acc[r][c], sc));
}

// O[r][d0 .. d0 + C*W) = O * alpha[r] + sum over key pairs j < n_pairs of P16[r][2j..2j+1] . V pairs.
template <int R, int C>
static inline void pv_pairs(float* o, int64_t D, int64_t d0, const uint16_t* p16, const float* alpha,
                            const uint32_t* vt, int n_pairs) {
    F acc[R][C];
    for (int r = 0; r < R; ++r) {
        const F a = Vec::set1(alpha[r]);
        for (int c = 0; c < C; ++c) acc[r][c] = Vec::mul(Vec::load(o + r * D + d0 + c * W), a);
    }
    for (int j = 0; j < n_pairs; ++j) {
        Vec::I vv[C];
        for (int c = 0; c < C; ++c) vv[c] = Vec::loadi(vt + j * D + d0 + c * W);
        for (int r = 0; r < R; ++r) {
            const Vec::I b = Vec::bcast_pair(p16 + r * kKeyTile + 2 * j);
            for (int c = 0; c < C; ++c) acc[r][c] = Vec::dot2(acc[r][c], b, vv[c]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < C; ++c) Vec::store(o + r * D + d0 + c * W, acc[r][c]);
}
#else
// Never called without bf16 dot products (attention_item picks the float32 path); declared so the
// shared code below compiles for every variant.
template <int R, int NV>
static inline void scores_pairs(const uint16_t* const*, int64_t, const uint32_t*, float, float*) {}
template <int R, int C>
static inline void pv_pairs(float*, int64_t, int64_t, const uint16_t*, const float*, const uint32_t*, int) {}
#endif

// Loop orders keep the operands a block streams in L1 (48 KB per core on the build machine): scores
// run over key columns of kColsS vectors (kColsS * W keys of K, D x that many floats), each column for
// every row block; P V runs over D columns of kColsPV vectors (a kKeyTile x kColsPV * W block of V),
// each for every row block.

// Scores of rows [r, r + R) against key vectors [c0, c0 + NV) of a tile.
template <bool Pairs, int R, int NV>
static inline void scores_block(ItemBuf& b, int r, int c0, int64_t D, const float* kt, float scale) {
    if constexpr (Pairs)
        scores_pairs<R, NV>(b.qrow + r, D, (const uint32_t*)kt + c0 * W, scale, b.p + r * kKeyTile + c0 * W);
    else scores_f32<R, NV>(b.q + r * D, D, kt + c0 * W, b.p + r * kKeyTile + c0 * W);
}

template <bool Pairs, int NV>
static inline void scores_column(ItemBuf& b, int n_rows, int c0, int64_t D, const float* kt, float scale) {
    int r = 0;
    for (; r + Vec::kRowsS <= n_rows; r += Vec::kRowsS) scores_block<Pairs, Vec::kRowsS, NV>(b, r, c0, D, kt, scale);
    for (; r < n_rows; ++r) scores_block<Pairs, 1, NV>(b, r, c0, D, kt, scale);
}

// Scores of all rows against the first nv key vectors of a tile.
template <bool Pairs>
static inline void scores_rows(int nv, ItemBuf& b, int n_rows, int64_t D, const float* kt, float scale) {
    int c0 = 0;
    for (; c0 + Vec::kColsS <= nv; c0 += Vec::kColsS) scores_column<Pairs, Vec::kColsS>(b, n_rows, c0, D, kt, scale);
    for (; c0 < nv; ++c0) scores_column<Pairs, 1>(b, n_rows, c0, D, kt, scale);
}

// P V for rows [r, r + R) and output vectors [c, c + C).
template <bool Pairs, int R, int C>
static inline void pv_block(ItemBuf& b, int r, int64_t c, int64_t D, const uint16_t* p16, const float* vt, int n_keys) {
    if constexpr (Pairs)
        pv_pairs<R, C>(b.o + r * D, D, c * W, p16 + r * kKeyTile, b.alpha + r, (const uint32_t*)vt, (n_keys + 1) / 2);
    else pv_f32<R, C>(b.o + r * D, D, c * W, b.p + r * kKeyTile, b.alpha + r, vt, n_keys);
}

template <bool Pairs, int C>
static inline void pv_column(ItemBuf& b, int n_rows, int64_t c, int64_t D, const uint16_t* p16, const float* vt,
                             int n_keys) {
    int r = 0;
    for (; r + Vec::kRowsPV <= n_rows; r += Vec::kRowsPV) pv_block<Pairs, Vec::kRowsPV, C>(b, r, c, D, p16, vt, n_keys);
    for (; r < n_rows; ++r) pv_block<Pairs, 1, C>(b, r, c, D, p16, vt, n_keys);
}

template <bool Pairs>
static inline void pv_rows(ItemBuf& b, int n_rows, int64_t D, const uint16_t* p16, const float* vt, int n_keys) {
    const int64_t n_dvec = D / W;
    int64_t c = 0;
    for (; c + Vec::kColsPV <= n_dvec; c += Vec::kColsPV)
        pv_column<Pairs, Vec::kColsPV>(b, n_rows, c, D, p16, vt, n_keys);
    for (; c < n_dvec; ++c) pv_column<Pairs, 1>(b, n_rows, c, D, p16, vt, n_keys);
}

// Online-softmax update of n_rows rows from the scores in b.p (log2 domain; the first nv vectors of
// each row are live): masks keys a row cannot see (past n_keys; with causal, keys j0 + i past its
// limit), then P = exp2(S - m_new) in place, alpha = exp2(m - m_new), l = l * alpha + sum(P).
static void softmax_update(ItemBuf& b, int n_rows, int n_keys, int64_t j0, bool causal, int nv) {
    const F minus_inf = Vec::set1(-__builtin_inff());
    for (int r = 0; r < n_rows; ++r) {
        float* s = b.p + r * kKeyTile;
        int64_t last = n_keys - 1;  // last key of this tile the row sees (tile-relative)
        if (causal) last = std::min<int64_t>(last, (int64_t)b.lim[r] - j0);
        if (last < 0) {  // nothing visible: an exact no-op on the row's state
            for (int c = 0; c < nv; ++c) Vec::store(s + c * W, Vec::zero());
            b.alpha[r] = 1.0f;
            continue;
        }
        F v[kTileVecs];
        for (int c = 0; c < nv; ++c) v[c] = Vec::load(s + c * W);
        if (last < nv * W - 1) {
            const F lastv = Vec::set1((float)last);
            for (int c = 0; c < nv; ++c)
                v[c] = Vec::select_gt(Vec::add(Vec::iota(), Vec::set1((float)(c * W))), lastv, minus_inf, v[c]);
        }
        F mx = v[0];
        for (int c = 1; c < nv; ++c) mx = Vec::max(mx, v[c]);
        const float m_new = std::max(b.m[r], Vec::hmax(mx));
        const F mv = Vec::set1(m_new);
        F sum = Vec::zero();
        for (int c = 0; c < nv; ++c) {
            const F e = exp2v(Vec::sub(v[c], mv));
            Vec::store(s + c * W, e);
            sum = Vec::add(sum, e);
        }
        const float alpha = m_new == b.m[r] ? 1.0f : std::exp2(b.m[r] - m_new);
        b.l[r] = b.l[r] * alpha + Vec::hsum(sum);
        b.m[r] = m_new;
        b.alpha[r] = alpha;
    }
}

// One key tile (n_keys live keys, virtual keys j0 ..) into the item's rows; causal: masked per row
// (tiles wholly inside the prefix are visible to every row).
template <bool Pairs>
static void attend_tile(ItemBuf& b, int n_rows, int64_t D, const float* kt, const float* vt, int n_keys,
                        int64_t j0, bool causal, float scale) {
    const int nv = (n_keys + W - 1) / W;  // live key vectors: the rest of the tile is never computed
    scores_rows<Pairs>(nv, b, n_rows, D, kt, scale);
    softmax_update(b, n_rows, n_keys, j0, causal, nv);
    if constexpr (Pairs) {
        // P to bf16 (round to nearest even) for the pair products. Keys past n_keys in the live vectors
        // are masked (P = 0), so an odd tile end pairs a real key with a zero weight.
        alignas(64) uint16_t p16[kQueryRows * kKeyTile];
        for (int r = 0; r < n_rows; ++r)
            for (int c = 0; c < nv; ++c)
                Vec::store_bf16(p16 + r * kKeyTile + c * W, Vec::load(b.p + r * kKeyTile + c * W));
        pv_rows<true>(b, n_rows, D, p16, vt, n_keys);
    } else {
        pv_rows<false>(b, n_rows, D, nullptr, vt, n_keys);
    }
}

template <DType T, bool Pairs>
static void attention_item_t(const AttnArgs& a, const AttnPlan& plan, int64_t index, AttnThread& th) {
    using E = typename IO<T>::E;
    const AttnItem& it = plan.items[index];
    const int64_t D = a.head_dim, G = a.heads / a.kv_heads, H = a.kv_heads;
    const int64_t s = it.seq, h = it.kv_head;
    const int64_t q_beg = a.cu_q[s], nq = a.cu_q[s + 1] - q_beg;
    const int64_t nk = a.cu_k[s + 1] - a.cu_k[s], pl = a.p_len[s];
    const int n_rows = (int)std::min<int64_t>(kQueryRows, nq * G - it.row0);
    const int64_t tf = tile_floats(D);
    const float log2e = 1.44269504088896341f;

    ItemBuf b;
    b.q = th.work;
    b.o = b.q + kQueryRows * D;
    b.p = b.o + kQueryRows * D;
    b.lim = b.p + kQueryRows * kKeyTile;
    b.m = b.lim + kQueryRows;
    b.l = b.m + kQueryRows;
    b.alpha = b.l + kQueryRows;

    const F qscale = Vec::set1(a.scale * log2e);  // softmax in base 2
    for (int r = 0; r < n_rows; ++r) {
        const int64_t t = (it.row0 + r) / G, head = h * G + (it.row0 + r) % G;
        const E* src = (const E*)a.q + (q_beg + t) * a.sq_t + head * a.sq_h;
        if constexpr (Pairs) b.qrow[r] = (const uint16_t*)src;
        for (int64_t d = 0; d < D; d += W) {
            if constexpr (!Pairs) Vec::store(b.q + r * D + d, Vec::mul(IO<T>::load(src + d), qscale));
            Vec::store(b.o + r * D + d, Vec::zero());
        }
        // bottom-right causal: token t sees every prefix key and own keys 0 .. t + nk - nq, i.e. the
        // virtual keys 0 .. pl + t + nk - nq
        b.lim[r] = (float)(pl + t + nk - nq);
        b.m[r] = -1e30f;  // finite: a first tile with every key masked gives alpha = exp2(0) = 1, not NaN
        b.l[r] = 0.0f;
    }
    const float dot_scale = a.scale * log2e;
    const int64_t end = std::min<int64_t>(pl + nk, (int64_t)b.lim[n_rows - 1] + 1);  // virtual keys the last row sees
    const int64_t n_tiles = (end + kKeyTile - 1) / kKeyTile;

    // Tiles wholly inside the prefix: its shared tiles, prepared once for the whole call.
    const int64_t n_pre = pl / kKeyTile;
    const KeyRange* pre = pl > 0 ? &plan.ranges[plan.seqs[s].prefix_range] : nullptr;
    for (int64_t i = 0; i < n_pre && i < n_tiles; ++i)
        attend_tile<Pairs>(b, n_rows, D, pre->kt + (i * H + h) * tf, pre->vt + (i * H + h) * tf, kKeyTile,
                           i * kKeyTile, false, dot_scale);
    // The rest: shared tiles where the sequence itself is a shared prefix (pl == 0), else tiles this
    // thread prepares (the prefix's tail and the own keys; kept for the next item of the same sequence
    // and head, which usually follows on this thread).
    const float *kt, *vt;  // tile n_pre + i at kt + i * stride
    int64_t stride;
    if (pl == 0 && plan.seqs[s].own_range >= 0) {
        const KeyRange& orr = plan.ranges[plan.seqs[s].own_range];
        kt = orr.kt + h * tf;
        vt = orr.vt + h * tf;
        stride = H * tf;
    } else {
        if (th.seq != s || th.kv_head != h) {
            th.seq = (int32_t)s;
            th.kv_head = (int32_t)h;
            th.tiles_ready = 0;
        }
        const KeyRange own{a.k, a.sk_t, a.sk_h, a.v, a.sv_t, a.sv_h, a.cu_k[s], nk, nullptr, nullptr};
        const KeySource src{pre, pl, &own};
        for (; n_pre + th.tiles_ready < n_tiles; ++th.tiles_ready)
            prep_source_tile(src, T, D, n_pre + th.tiles_ready, h, th.own_kt + th.tiles_ready * tf,
                             th.own_vt + th.tiles_ready * tf);
        kt = th.own_kt;
        vt = th.own_vt;
        stride = tf;
    }
    for (int64_t i = n_pre; i < n_tiles; ++i)
        attend_tile<Pairs>(b, n_rows, D, kt + (i - n_pre) * stride, vt + (i - n_pre) * stride,
                           (int)std::min<int64_t>(kKeyTile, end - i * kKeyTile), i * kKeyTile, true, dot_scale);

    for (int r = 0; r < n_rows; ++r) {
        const int64_t t = (it.row0 + r) / G, head = h * G + (it.row0 + r) % G;
        E* dst = (E*)a.out + (q_beg + t) * a.so_t + head * a.so_h;
        const F l = Vec::set1(b.l[r]);
        for (int64_t d = 0; d < D; d += W) IO<T>::store(dst + d, Vec::div(Vec::load(b.o + r * D + d), l));
    }
}

static void attention_item(const AttnArgs& a, DType t, const AttnPlan& plan, int64_t index, AttnThread& th) {
    if (t == DType::F32) attention_item_t<DType::F32, false>(a, plan, index, th);
    else attention_item_t<DType::BF16, kDotBf16>(a, plan, index, th);
}

// ------------------------------------------------------------------ dtype dispatch, table
static void rms_norm(const RmsArgs& a, DType t, int64_t r0, int64_t r1) {
    if (t == DType::F32) rms_norm_rows<DType::F32>(a, r0, r1);
    else rms_norm_rows<DType::BF16>(a, r0, r1);
}
static void norm_rope(const NormRopeArgs& a, DType t, int64_t r0, int64_t r1) {
    if (t == DType::F32) norm_rope_rows<DType::F32>(a, r0, r1);
    else norm_rope_rows<DType::BF16>(a, r0, r1);
}
static void swiglu(const SwigluArgs& a, DType t, int64_t r0, int64_t r1) {
    if (t == DType::F32) swiglu_rows<DType::F32>(a, r0, r1);
    else swiglu_rows<DType::BF16>(a, r0, r1);
}

static int64_t rms_norm_quant(const RmsQuantArgs& a, DType t, int64_t r0, int64_t r1) {
    const bool scaled = a.x_scale != nullptr;
    if (t == DType::F32)
        return scaled ? rms_norm_quant_rows<DType::F32, true>(a, r0, r1) : rms_norm_quant_rows<DType::F32, false>(a, r0, r1);
    return scaled ? rms_norm_quant_rows<DType::BF16, true>(a, r0, r1) : rms_norm_quant_rows<DType::BF16, false>(a, r0, r1);
}
static int64_t swiglu_quant(const SwigluQuantArgs& a, DType t, int64_t r0, int64_t r1) {
    const bool scaled = a.in_scale != nullptr;
    if (t == DType::F32)
        return scaled ? swiglu_quant_rows<DType::F32, true>(a, r0, r1) : swiglu_quant_rows<DType::F32, false>(a, r0, r1);
    return scaled ? swiglu_quant_rows<DType::BF16, true>(a, r0, r1) : swiglu_quant_rows<DType::BF16, false>(a, r0, r1);
}

static const KernelTable kTable = {ZK_ISA_NAME,     &rms_norm,       &norm_rope,   &swiglu, &prep_tile,
                                   &attention_item, &rms_norm_quant, &swiglu_quant};
