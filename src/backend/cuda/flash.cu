// Attention over packed cells in tiles, flash style (Dao et al.'s
// FlashAttention-2 schedule): bf16 tensor-core products (WMMA 16x16x16,
// fp32 accumulation), an online softmax, and no probabilities in memory:
// forward keeps each row's log-sum-exp, backward recomputes the
// probabilities tile by tile. Dropout on the probabilities uses the CPU's
// masks (row key of (cell, head, row), element = key column), so it
// matches scfm_attention_forward up to bf16 rounding of q, k, v, the
// probabilities and the gradients.
//
// A block is one tile of 64 rows of one cell and one head, 4 warps of 16
// rows each: in forward the rows are queries and the loop runs over key
// tiles; in backward the rows are keys (dK, dV accumulate in shared memory)
// and the loop runs over query tiles, dQ accumulating in global memory with
// atomicAdd. Rows past a cell's end are zeros and never written.
#include <math.h>
#include <stdlib.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/flash_kernels.cuh"

using namespace scfm_cuda_flash;
using scfm_cuda::dropout_params;

namespace {

scfm_status launched(const char *what, scfm_error *err) { return scfm_cuda_check(cudaGetLastError(), what, err); }

// The kernels of head width D: their launches, and the shared memory they
// need above the default 48 KiB, asked for once.
template <int D>
scfm_status forward_d(scfm_cuda_ctx *ctx, float *out, float *lse, const float *qkv, const scfm_cuda_flash_plan *plan,
                      int C, const uint64_t *cell_keys, float p, scfm_error *err) {
    static bool attributes_set = false;
    if (!attributes_set) {
        cudaFuncSetAttribute(flash_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)forward_smem<D>());
        attributes_set = true;
    }
    uint32_t threshold = 0;
    float keep_scale = 1.0f;
    dropout_params(p, &threshold, &keep_scale);
    const dim3 grid(plan->n_tiles, C / D);
    flash_forward_kernel<D><<<grid, kThreads, forward_smem<D>(), ctx->stream>>>(
        out, lse, qkv, plan->d_tiles, plan->n_tokens, C, 1.0f / sqrtf((float)D), p > 0.0f ? cell_keys : nullptr,
        threshold, keep_scale);
    return launched("flash attention forward", err);
}

template <int D>
scfm_status backward_d(scfm_cuda_ctx *ctx, float *dqkv, const float *dout, const float *qkv, const float *out,
                       const float *lse, const scfm_cuda_flash_plan *plan, int C, const uint64_t *cell_keys, float p,
                       scfm_error *err) {
    static bool attributes_set = false;
    if (!attributes_set) {
        cudaFuncSetAttribute(flash_backward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             (int)backward_smem<D>());
        attributes_set = true;
    }
    const int T = plan->n_tokens, heads = C / D;
    void *work = nullptr;
    scfm_status st = scfm_cuda_workspace(ctx, sizeof(float) * (size_t)T * heads, &work, err);
    if (st != SCFM_OK) return st;
    float *delta = (float *)work;
    const size_t n = (size_t)T * heads;
    flash_delta_kernel<<<(unsigned)((n + 255) / 256 < 65535 ? (n + 255) / 256 : 65535), 256, 0, ctx->stream>>>(
        delta, dout, out, T, C, D);
    if ((st = launched("flash attention delta", err)) != SCFM_OK) return st;
    // dq accumulates over key tiles; dk and dv are written once
    st = scfm_cuda_check(cudaMemsetAsync(dqkv, 0, sizeof(float) * (size_t)T * 3 * C, ctx->stream), "memset", err);
    if (st != SCFM_OK) return st;
    uint32_t threshold = 0;
    float keep_scale = 1.0f;
    dropout_params(p, &threshold, &keep_scale);
    const dim3 grid(plan->n_tiles, heads);
    flash_backward_kernel<D><<<grid, kThreads, backward_smem<D>(), ctx->stream>>>(
        dqkv, dout, qkv, lse, delta, plan->d_tiles, T, C, 1.0f / sqrtf((float)D), p > 0.0f ? cell_keys : nullptr,
        threshold, keep_scale);
    return launched("flash attention backward", err);
}

}  // namespace

extern "C" {

int scfm_cuda_flash_supported(int C, int heads) {
    const int d = heads > 0 && C % heads == 0 ? C / heads : 0;
    return d == 16 || d == 32 || d == 64;
}

scfm_status scfm_cuda_flash_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_lse, const float *d_qkv,
                                    const scfm_cuda_flash_plan *plan, int C, int heads, const uint64_t *d_cell_keys,
                                    float p, scfm_error *err) {
    if (plan->n_tiles == 0) return SCFM_OK;
    switch (C / heads) {
    case 16: return forward_d<16>(ctx, d_out, d_lse, d_qkv, plan, C, d_cell_keys, p, err);
    case 32: return forward_d<32>(ctx, d_out, d_lse, d_qkv, plan, C, d_cell_keys, p, err);
    case 64: return forward_d<64>(ctx, d_out, d_lse, d_qkv, plan, C, d_cell_keys, p, err);
    default: return scfm_fail(err, SCFM_ERR_ARG, "flash attention takes heads of width 16, 32 or 64, not %d", C / heads);
    }
}

scfm_status scfm_cuda_flash_backward(scfm_cuda_ctx *ctx, float *d_dqkv, const float *d_dout, const float *d_qkv,
                                     const float *d_out, const float *d_lse, const scfm_cuda_flash_plan *plan, int C,
                                     int heads, const uint64_t *d_cell_keys, float p, scfm_error *err) {
    if (plan->n_tiles == 0) return SCFM_OK;
    switch (C / heads) {
    case 16: return backward_d<16>(ctx, d_dqkv, d_dout, d_qkv, d_out, d_lse, plan, C, d_cell_keys, p, err);
    case 32: return backward_d<32>(ctx, d_dqkv, d_dout, d_qkv, d_out, d_lse, plan, C, d_cell_keys, p, err);
    case 64: return backward_d<64>(ctx, d_dqkv, d_dout, d_qkv, d_out, d_lse, plan, C, d_cell_keys, p, err);
    default: return scfm_fail(err, SCFM_ERR_ARG, "flash attention takes heads of width 16, 32 or 64, not %d", C / heads);
    }
}

}  // extern "C"
