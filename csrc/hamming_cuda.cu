// Hamming distances on the GPU: out[q, row] = popcount(query[q] XOR code[row]) as int32.
//
// Self-contained (CUDA runtime + pybind11 only, no torch headers) so CI can compile-check it with a
// bare `nvcc -c`; zkernels/binary/cuda.py builds it on first use with torch.utils.cpp_extension.load
// and passes raw device pointers and the current torch stream. Top-k selection runs afterwards in
// torch (zkernels/binary/torch_search.py); the distance matrix costs 4 bytes per row against the
// code bytes read (128 for 1024-bit codes), so the scan stays bandwidth-bound.
//
// Layout: one thread per database row (grid-stride), a tile of up to kQueryTile queries in shared
// memory. Each thread loads its row in VEC-byte vectors (16 = uint4 when the width allows) once and
// XORs every vector against all queries of the tile, so a row is read once per query tile.

#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME zk_hamming_cuda
#endif

namespace {

constexpr int kQueryTile = 8;
constexpr int kThreads = 256;

template <int VEC> struct Vec;
template <> struct Vec<16> {
    using T = uint4;
    __device__ static int popc_xor(const T& a, const T& b) {
        return __popc(a.x ^ b.x) + __popc(a.y ^ b.y) + __popc(a.z ^ b.z) + __popc(a.w ^ b.w);
    }
};
template <> struct Vec<8> {
    using T = unsigned long long;
    __device__ static int popc_xor(T a, T b) { return __popcll(a ^ b); }
};
template <> struct Vec<4> {
    using T = unsigned int;
    __device__ static int popc_xor(T a, T b) { return __popc(a ^ b); }
};
template <> struct Vec<1> {
    using T = unsigned char;
    __device__ static int popc_xor(T a, T b) { return __popc((unsigned)(a ^ b)); }
};

template <int VEC>
__global__ void __launch_bounds__(kThreads)
hamming_distances_kernel(const uint8_t* __restrict__ queries, const uint8_t* __restrict__ codes,
                         int32_t* __restrict__ out, int64_t nq, int64_t n, int nbytes) {
    using T = typename Vec<VEC>::T;
    extern __shared__ __align__(16) uint8_t tile[];  // kQueryTile * nbytes bytes
    const int64_t q0 = (int64_t)blockIdx.y * kQueryTile;
    const int qt = (int)((nq - q0) < kQueryTile ? (nq - q0) : kQueryTile);
    for (int i = threadIdx.x; i < qt * nbytes; i += blockDim.x) tile[i] = queries[q0 * nbytes + i];
    __syncthreads();
    const int nv = nbytes / VEC;
    const T* sq = reinterpret_cast<const T*>(tile);
    for (int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; row < n;
         row += (int64_t)gridDim.x * blockDim.x) {
        const T* r = reinterpret_cast<const T*>(codes + row * nbytes);
        int acc[kQueryTile];
#pragma unroll
        for (int j = 0; j < kQueryTile; ++j) acc[j] = 0;
        for (int c = 0; c < nv; ++c) {
            const T v = __ldg(r + c);  // read-only path; every code byte is used exactly once here
#pragma unroll
            for (int j = 0; j < kQueryTile; ++j)
                if (j < qt) acc[j] += Vec<VEC>::popc_xor(v, sq[j * nv + c]);
        }
#pragma unroll
        for (int j = 0; j < kQueryTile; ++j)
            if (j < qt) out[(q0 + j) * n + row] = acc[j];
    }
}

template <int VEC>
void launch_vec(const uint8_t* q, const uint8_t* db, int32_t* out, int64_t nq, int64_t n, int nbytes,
                cudaStream_t stream) {
    const int64_t blocks_needed = (n + kThreads - 1) / kThreads;
    const unsigned gx = (unsigned)(blocks_needed < (1 << 20) ? blocks_needed : (1 << 20));
    const int64_t tiles = (nq + kQueryTile - 1) / kQueryTile;
    const size_t smem = (size_t)kQueryTile * nbytes;
    if (smem > 48 * 1024) {
        cudaFuncSetAttribute(hamming_distances_kernel<VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    }
    // gridDim.y is limited to 65535: launch query tiles in slices.
    for (int64_t t0 = 0; t0 < tiles; t0 += 65535) {
        const int64_t tn = (tiles - t0) < 65535 ? (tiles - t0) : 65535;
        const int64_t qs = t0 * kQueryTile;
        const int64_t qn = (nq - qs) < tn * kQueryTile ? (nq - qs) : tn * kQueryTile;
        dim3 grid(gx, (unsigned)tn);
        hamming_distances_kernel<VEC><<<grid, kThreads, smem, stream>>>(q + qs * nbytes, db, out + qs * n, qn, n, nbytes);
    }
}

void distances(uintptr_t queries, uintptr_t codes, uintptr_t out, int64_t nq, int64_t n, int nbytes,
               uintptr_t stream) {
    if (nq < 0 || n < 0 || nbytes <= 0) throw std::invalid_argument("bad sizes for hamming distances");
    if (nq == 0 || n == 0) return;
    auto q = reinterpret_cast<const uint8_t*>(queries);
    auto db = reinterpret_cast<const uint8_t*>(codes);
    auto o = reinterpret_cast<int32_t*>(out);
    auto s = reinterpret_cast<cudaStream_t>(stream);
    // The widest vector that divides the code width and the row addresses (torch allocations are
    // 256-byte aligned; a sliced view might not be).
    auto fits = [&](int v) { return nbytes % v == 0 && codes % v == 0; };
    if (fits(16)) launch_vec<16>(q, db, o, nq, n, nbytes, s);
    else if (fits(8)) launch_vec<8>(q, db, o, nq, n, nbytes, s);
    else if (fits(4)) launch_vec<4>(q, db, o, nq, n, nbytes, s);
    else launch_vec<1>(q, db, o, nq, n, nbytes, s);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) throw std::runtime_error(std::string("hamming CUDA launch failed: ") + cudaGetErrorString(err));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("distances", &distances, pybind11::arg("queries"), pybind11::arg("codes"), pybind11::arg("out"),
          pybind11::arg("nq"), pybind11::arg("n"), pybind11::arg("nbytes"), pybind11::arg("stream"),
          "int32 Hamming distances [nq, n] of uint8 device buffers (raw pointers) on the given stream");
}
