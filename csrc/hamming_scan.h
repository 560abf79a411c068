// The blocked scan loop, written once for every instruction set: `scan_rows<Isa, NB>`.
//
// An ISA is a traits type (hamming_isa.h) that supplies
//   kGroup                             rows handled per kernel call,
//   group<NB>(q, rows, nb, d, thresh)  distances of one query to kGroup consecutive rows, into
//                                      d[kGroup]; returns the bitmask of rows with d <= thresh,
//   scan<NB>(job, worker)              the entry point: calls scan_rows<Isa, NB> from a function
//                                      compiled for that ISA (see hamming_isa.h for why).
// NB is the code width in bytes when it is a compile-time constant (fully unrolled chunk loops),
// 0 when it is only known at run time (then `nb` / `Job::nbytes` holds it).
//
// Loop order, outermost first: database block (sized to stay in L2) -> query block (kept in L1) ->
// row group -> query. Each database block is therefore read from memory once per worker, however many
// queries the worker has, and each group of rows loaded into L1 feeds every query of the block.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "hamming_topk.h"

namespace zk {

struct Job {
    const uint8_t* db;
    const int64_t* ids;
    const uint8_t* queries;
    int64_t nq;
    int nbytes;
    int64_t row_block;    // rows per database block (about 256 KiB of codes: stays in L2)
    int64_t query_block;  // queries per block (about 8 KiB of codes: stays in L1)
};

// Every worker scans its database chunks [r0, r1) for all queries.
struct Worker {
    int64_t r0, r1;
    std::vector<TopK> heaps;  // one per query
    std::vector<int32_t> hd;  // heap storage
    std::vector<int64_t> hi;
};

using ScanFn = void (*)(const Job&, Worker&);

// popcount(a XOR b) over bytes [from, to): the one scalar distance. It is the scalar ISA's kernel,
// the byte tail of a code that a vector kernel's chunks do not cover, and the rows left over after
// the last full group. Compiled into each ISA's entry point, so it uses the popcnt instruction where
// that ISA has it.
inline int32_t popcount_xor(const uint8_t* a, const uint8_t* b, int from, int to) {
    int32_t s = 0;
    int i = from;
    for (; i + 8 <= to; i += 8) {
        uint64_t x, y;
        std::memcpy(&x, a + i, 8);  // unaligned-safe load; compiles to one mov
        std::memcpy(&y, b + i, 8);
        s += __builtin_popcountll(x ^ y);
    }
    for (; i < to; ++i) s += __builtin_popcount((unsigned)(a[i] ^ b[i]));
    return s;
}

template <class Isa, int NB>
inline void scan_rows(const Job& J, Worker& W) {
    constexpr int G = Isa::kGroup;
    const int n = NB ? NB : J.nbytes;
    alignas(64) int32_t d[G];
    for (int64_t rb = W.r0; rb < W.r1; rb += J.row_block) {
        const int64_t re = std::min(rb + J.row_block, W.r1);
        for (int64_t qb = 0; qb < J.nq; qb += J.query_block) {
            const int64_t qe = std::min(qb + J.query_block, J.nq);
            int64_t r = rb;
            for (; r + G <= re; r += G) {
                const uint8_t* rows = J.db + r * n;
                const int64_t* rid = J.ids + r;
                for (int64_t q = qb; q < qe; ++q) {
                    TopK& h = W.heaps[q];
                    // Bit i set when row i might enter the heap; usually zero once the heap is full.
                    unsigned m = Isa::template group<NB>(J.queries + q * n, rows, n, d, h.thresh);
                    while (m) {
                        const int i = __builtin_ctz(m);
                        m &= m - 1;
                        if (d[i] <= h.thresh) h.push(d[i], rid[i]);  // thresh may have dropped
                    }
                }
            }
            for (; r < re; ++r) {  // fewer than kGroup rows left (only in a worker's last chunk)
                for (int64_t q = qb; q < qe; ++q) {
                    const int32_t dd = popcount_xor(J.queries + q * n, J.db + r * n, 0, n);
                    TopK& h = W.heaps[q];
                    if (dd <= h.thresh) h.push(dd, J.ids[r]);
                }
            }
        }
    }
}

// Code widths with a compile-time specialisation; every other width runs the NB = 0 instance.
template <class Isa>
ScanFn pick_scan(int nbytes) {
    switch (nbytes) {
        case 8: return &Isa::template scan<8>;
        case 16: return &Isa::template scan<16>;
        case 32: return &Isa::template scan<32>;
        case 64: return &Isa::template scan<64>;
        case 96: return &Isa::template scan<96>;
        case 128: return &Isa::template scan<128>;
        case 160: return &Isa::template scan<160>;
        case 192: return &Isa::template scan<192>;
        case 256: return &Isa::template scan<256>;
        case 320: return &Isa::template scan<320>;
        default: return &Isa::template scan<0>;
    }
}

}  // namespace zk
