// The flash attention kernels (flash.cu launches them): CUDA C++ with
// nothing of the runtime API, so that tests/cuda/test_flash_emulated.cc
// also runs them on the CPU, each block's threads as host threads.
#ifndef SCFM_BACKEND_CUDA_FLASH_KERNELS_CUH
#define SCFM_BACKEND_CUDA_FLASH_KERNELS_CUH

#include <cuda_bf16.h>
#include <math.h>
#include <mma.h>

#include "backend/cuda/dropout.cuh"
#include "backend/cuda/flash.h"

namespace scfm_cuda_flash {

using namespace nvcuda;
using scfm_cuda::keep_factor;
using scfm_cuda::mix64;

constexpr int kTile = SCFM_CUDA_FLASH_TILE;
constexpr int kWarps = kTile / 16;
constexpr int kThreads = 32 * kWarps;

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::col_major> FragAT;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> FragBT;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> FragC;

// Rows [first, first + 64) of head h of a cell, as bf16 [64][D], zeros past
// the cell's end (`rows` valid rows); `part` 0, 1, 2 picks q, k or v.
template <int D>
__device__ void load_rows(__nv_bfloat16 *dst, const float *qkv, const scfm_cuda_flash_tile &t, int first, int rows,
                          int part, int h, int C) {
    for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) {
        const int r = i / D, c = i % D;
        const float v = r < rows ? qkv[(size_t)(t.start + first + r) * 3 * C + (size_t)part * C + h * D + c] : 0.0f;
        dst[i] = __float2bfloat16(v);
    }
}

// out[16 x 16n] (row-major, ld_out) = A[16 x K] B[K x 16n] for one warp:
// a_rows points at the warp's 16 rows of A (row-major, ld_a), b at B
// (row-major [K][ld_b], or with B_T its transpose stored [16n][ld_b]).
template <int K, int N, bool B_T, bool ACC>
__device__ void warp_gemm(float *out, int ld_out, const __nv_bfloat16 *a_rows, int ld_a, const __nv_bfloat16 *b,
                          int ld_b) {
    for (int n = 0; n < N / 16; n++) {
        FragC acc;
        if (ACC)
            wmma::load_matrix_sync(acc, out + n * 16, ld_out, wmma::mem_row_major);
        else
            wmma::fill_fragment(acc, 0.0f);
        for (int k = 0; k < K / 16; k++) {
            FragA fa;
            wmma::load_matrix_sync(fa, a_rows + k * 16, ld_a);
            if (B_T) {
                FragBT fb;
                wmma::load_matrix_sync(fb, b + (size_t)n * 16 * ld_b + k * 16, ld_b);
                wmma::mma_sync(acc, fa, fb, acc);
            } else {
                FragB fb;
                wmma::load_matrix_sync(fb, b + (size_t)k * 16 * ld_b + n * 16, ld_b);
                wmma::mma_sync(acc, fa, fb, acc);
            }
        }
        wmma::store_matrix_sync(out + n * 16, acc, ld_out, wmma::mem_row_major);
    }
}

// out[16 x 16n] += A^T B for one warp, A stored [K][ld_a] with the warp's 16
// columns at a_cols (so A^T's rows), B row-major [K][ld_b].
template <int K, int N>
__device__ void warp_gemm_at(float *out, int ld_out, const __nv_bfloat16 *a_cols, int ld_a, const __nv_bfloat16 *b,
                             int ld_b) {
    for (int n = 0; n < N / 16; n++) {
        FragC acc;
        wmma::load_matrix_sync(acc, out + n * 16, ld_out, wmma::mem_row_major);
        for (int k = 0; k < K / 16; k++) {
            FragAT fa;
            FragB fb;
            wmma::load_matrix_sync(fa, a_cols + (size_t)k * 16 * ld_a, ld_a);
            wmma::load_matrix_sync(fb, b + (size_t)k * 16 * ld_b + n * 16, ld_b);
            wmma::mma_sync(acc, fa, fb, acc);
        }
        wmma::store_matrix_sync(out + n * 16, acc, ld_out, wmma::mem_row_major);
    }
}

template <int D>
constexpr size_t forward_smem() {
    // q, k, v, p (bf16); s, o (fp32)
    return sizeof(__nv_bfloat16) * (3 * kTile * D + kTile * kTile) + sizeof(float) * (kTile * kTile + kTile * D);
}

template <int D>
constexpr size_t backward_smem() {
    // k, v, q, dO, p, dS (bf16); s, dP, dK, dV (fp32); lse, delta
    return sizeof(__nv_bfloat16) * (4 * kTile * D + 2 * kTile * kTile) +
           sizeof(float) * (2 * kTile * kTile + 2 * kTile * D + 2 * kTile);
}

// Each lane pair owns one row of its warp's 16 (lane / 2) and half of the
// 64 columns (lane % 2).
struct RowSlot {
    int row, half;
    __device__ RowSlot() : row((threadIdx.x >> 5) * 16 + ((threadIdx.x & 31) >> 1)), half(threadIdx.x & 1) {}
};

template <int D>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(float *out, float *lse,
                                                                 const float *__restrict__ qkv,
                                                                 const scfm_cuda_flash_tile *tiles, int T, int C,
                                                                 float scale, const uint64_t *cell_keys,
                                                                 uint32_t threshold, float keep_scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16 *sQ = (__nv_bfloat16 *)smem, *sK = sQ + kTile * D, *sV = sK + kTile * D, *sP = sV + kTile * D;
    float *sS = (float *)(sP + kTile * kTile), *sO = sS + kTile * kTile;
    const scfm_cuda_flash_tile t = tiles[blockIdx.x];
    const int h = blockIdx.y, warp = threadIdx.x >> 5, rows = min(kTile, t.len - t.first);
    const RowSlot me;
    load_rows<D>(sQ, qkv, t, t.first, rows, 0, h, C);
    for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) sO[i] = 0.0f;
    const uint64_t row_key = cell_keys ? mix64(cell_keys[t.cell] + (uint32_t)(h * 65536 + t.first + me.row)) : 0;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < t.len; k0 += kTile) {
        const int keys = min(kTile, t.len - k0);
        __syncthreads(); // the last tile's k and v are read
        load_rows<D>(sK, qkv, t, k0, keys, 1, h, C);
        load_rows<D>(sV, qkv, t, k0, keys, 2, h, C);
        __syncthreads();
        // s = q k^T for the warp's rows
        warp_gemm<D, kTile, true, false>(sS + warp * 16 * kTile, kTile, sQ + warp * 16 * D, D, sK, D);
        __syncwarp();
        // the online softmax of the row, and p (dropped out) for p v
        const float *s = sS + me.row * kTile;
        float mx = -INFINITY;
        for (int j = me.half * 32; j < me.half * 32 + 32; j++)
            if (j < keys) mx = fmaxf(mx, s[j] * scale);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        const float m_new = fmaxf(m, mx), correction = expf(m - m_new);
        float sum = 0.0f;
        __nv_bfloat16 *p = sP + me.row * kTile;
        for (int j = me.half * 32; j < me.half * 32 + 32; j++) {
            float e = j < keys ? expf(s[j] * scale - m_new) : 0.0f;
            sum += e;
            if (cell_keys) e *= keep_factor(row_key, k0 + j, threshold, keep_scale);
            p[j] = __float2bfloat16(e);
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l = l * correction + sum;
        m = m_new;
        float *o = sO + me.row * D;
        for (int c = me.half * (D / 2); c < (me.half + 1) * (D / 2); c++) o[c] *= correction;
        __syncwarp();
        // o += p v
        warp_gemm<kTile, D, false, true>(sO + warp * 16 * D, D, sP + warp * 16 * kTile, kTile, sV, D);
        __syncwarp();
    }
    if (me.row < rows) {
        const size_t token = (size_t)t.start + t.first + me.row;
        const float inv = 1.0f / l;
        for (int c = me.half * (D / 2); c < (me.half + 1) * (D / 2); c++)
            out[token * C + h * D + c] = sO[me.row * D + c] * inv;
        if (me.half == 0) lse[(size_t)h * T + token] = m + logf(l);
    }
}

// delta[h][t] = sum over the head's channels of dout * out (FlashAttention's
// D: the row sum of dP * P).
__global__ void flash_delta_kernel(float *delta, const float *dout, const float *out, int T, int C, int D) {
    const size_t n = (size_t)T * (C / D);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t h = i / T, t = i % T;
        const float *a = dout + t * C + h * D, *b = out + t * C + h * D;
        float s = 0.0f;
        for (int c = 0; c < D; c++) s += a[c] * b[c];
        delta[i] = s;
    }
}

template <int D>
__global__ void __launch_bounds__(kThreads) flash_backward_kernel(float *dqkv, const float *__restrict__ dout,
                                                                  const float *__restrict__ qkv, const float *lse,
                                                                  const float *delta,
                                                                  const scfm_cuda_flash_tile *tiles, int T, int C,
                                                                  float scale, const uint64_t *cell_keys,
                                                                  uint32_t threshold, float keep_scale) {
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16 *sK = (__nv_bfloat16 *)smem, *sV = sK + kTile * D, *sQ = sV + kTile * D, *sdO = sQ + kTile * D;
    __nv_bfloat16 *sP = sdO + kTile * D, *sdS = sP + kTile * kTile;
    float *sS = (float *)(sdS + kTile * kTile), *sdP = sS + kTile * kTile, *sdK = sdP + kTile * kTile;
    float *sdV = sdK + kTile * D, *sL = sdV + kTile * D, *sD = sL + kTile;
    const scfm_cuda_flash_tile t = tiles[blockIdx.x];
    const int h = blockIdx.y, warp = threadIdx.x >> 5, keys = min(kTile, t.len - t.first);
    const RowSlot me;
    load_rows<D>(sK, qkv, t, t.first, keys, 1, h, C);
    load_rows<D>(sV, qkv, t, t.first, keys, 2, h, C);
    for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) sdK[i] = sdV[i] = 0.0f;
    for (int q0 = 0; q0 < t.len; q0 += kTile) {
        const int rows = min(kTile, t.len - q0);
        __syncthreads(); // the last query tile is done with
        load_rows<D>(sQ, qkv, t, q0, rows, 0, h, C);
        for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) {
            const int r = i / D, c = i % D;
            sdO[i] = __float2bfloat16(r < rows ? dout[(size_t)(t.start + q0 + r) * C + h * D + c] : 0.0f);
        }
        for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
            const size_t token = (size_t)t.start + q0 + r;
            sL[r] = r < rows ? lse[(size_t)h * T + token] : 0.0f;
            sD[r] = r < rows ? delta[(size_t)h * T + token] : 0.0f;
        }
        __syncthreads();
        // s = q k^T (rows: queries), then p, and p dropped out (bf16) for dV
        warp_gemm<D, kTile, true, false>(sS + warp * 16 * kTile, kTile, sQ + warp * 16 * D, D, sK, D);
        __syncwarp();
        const uint64_t row_key = cell_keys ? mix64(cell_keys[t.cell] + (uint32_t)(h * 65536 + q0 + me.row)) : 0;
        float *s = sS + me.row * kTile;
        for (int j = me.half * 32; j < me.half * 32 + 32; j++) {
            const float p = me.row < rows && j < keys ? expf(s[j] * scale - sL[me.row]) : 0.0f;
            s[j] = p;
            sP[me.row * kTile + j] =
                __float2bfloat16(cell_keys ? p * keep_factor(row_key, t.first + j, threshold, keep_scale) : p);
        }
        // dP (dropped out) = dO v^T
        warp_gemm<D, kTile, true, false>(sdP + warp * 16 * kTile, kTile, sdO + warp * 16 * D, D, sV, D);
        __syncwarp();
        // dS = p (dP - delta), dP taken back through the dropout
        for (int j = me.half * 32; j < me.half * 32 + 32; j++) {
            float dp = sdP[me.row * kTile + j];
            if (cell_keys) dp *= keep_factor(row_key, t.first + j, threshold, keep_scale);
            sdS[me.row * kTile + j] = __float2bfloat16(s[j] * (dp - sD[me.row]));
        }
        __syncthreads();
        // dV += p'^T dO and dK += dS^T q, the warp's 16 key rows
        warp_gemm_at<kTile, D>(sdV + warp * 16 * D, D, sP + warp * 16, kTile, sdO, D);
        warp_gemm_at<kTile, D>(sdK + warp * 16 * D, D, sdS + warp * 16, kTile, sQ, D);
        // dQ = dS k for the warp's query rows, into its rows of sdP, then
        // added to the queries' gradient
        warp_gemm<kTile, D, false, false>(sdP + warp * 16 * kTile, D, sdS + warp * 16 * kTile, kTile, sK, D);
        __syncwarp();
        if (me.row < rows) {
            float *dq = dqkv + (size_t)(t.start + q0 + me.row) * 3 * C + h * D;
            const float *part = sdP + warp * 16 * kTile + (me.row - warp * 16) * D;
            for (int c = me.half * (D / 2); c < (me.half + 1) * (D / 2); c++) atomicAdd(dq + c, part[c] * scale);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) {
        const int r = i / D, c = i % D;
        if (r >= keys) continue;
        float *row = dqkv + (size_t)(t.start + t.first + r) * 3 * C + h * D + c;
        row[C] = sdK[i] * scale;
        row[2 * C] = sdV[i];
    }
}

}  // namespace scfm_cuda_flash

#endif
