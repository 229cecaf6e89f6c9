// Device kernels of the CUDA backend and their C launchers (cuda_backend.h).
// Each mirrors a CPU kernel of src/backend/cpu: same layouts, same
// formulas, the same fixed summation order where the CPU keeps one (LayerNorm
// and bias gradients), the same dropout masks bit for bit.
#include <cuda_bf16.h>
#include <math.h>
#include <stdlib.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/dropout.cuh"

using namespace scfm_cuda;

namespace {

constexpr int kThreads = 256;
// Rows of one partial column sum (LayerNorm and bias gradients).
constexpr int kRowsPerChunk = 64;

unsigned grid_for(size_t n) {
    size_t g = (n + kThreads - 1) / kThreads;
    return (unsigned)(g < 1 ? 1 : g > (1u << 20) ? (1u << 20) : g);
}

scfm_status launched(const char *what, scfm_error *err) { return scfm_cuda_check(cudaGetLastError(), what, err); }

struct Sum {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct Max {
    __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};

// Reduction over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. The leading barrier lets a second call reuse the
// shared slots once every thread has read the first call's result.
template <typename Op>
__device__ float block_reduce(float v, float identity, Op op) {
    __shared__ float warp_vals[32];
    __shared__ float result;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_vals[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? warp_vals[lane] : identity;
        for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) result = v;
    }
    __syncthreads();
    return result;
}

__global__ void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const int32_t *positions,
                                         const float *wte, const float *wpe, int T, int C) {
    const size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / C, c = i % C;
        float v = wte[(size_t)tokens[t] * C + c];
        if (wpe) v += wpe[(size_t)positions[t] * C + c];
        out[i] = v;
    }
}

__global__ void embedding_backward_kernel(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                                          const int32_t *positions, int T, int C) {
    const size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / C, c = i % C;
        if (dwte) atomicAdd(dwte + (size_t)tokens[t] * C + c, dout[i]);
        if (dwpe) atomicAdd(dwpe + (size_t)positions[t] * C + c, dout[i]);
    }
}

// One block per row, two passes (mean, then variance) as the CPU.
__global__ void layernorm_forward_kernel(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                         const float *b, int C, float eps) {
    const float *x = inp + (size_t)blockIdx.x * C;
    float *o = out + (size_t)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[i];
    const float m = block_reduce(s, 0.0f, Sum()) / (float)C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) v += (x[i] - m) * (x[i] - m);
    const float r = 1.0f / sqrtf(block_reduce(v, 0.0f, Sum()) / (float)C + eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = (x[i] - m) * r * w[i] + b[i];
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = m;
        rstd[blockIdx.x] = r;
    }
}

__global__ void layernorm_backward_input_kernel(float *dinp, const float *dout, const float *inp, const float *w,
                                                const float *mean, const float *rstd, int C) {
    const size_t row = (size_t)blockIdx.x * C;
    const float *x = inp + row, *d = dout + row;
    const float m = mean[blockIdx.x], r = rstd[blockIdx.x];
    float a = 0.0f, bsum = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float dn = d[i] * w[i];
        a += dn;
        bsum += dn * (x[i] - m) * r;
    }
    const float sum_dn = block_reduce(a, 0.0f, Sum()) / (float)C;
    const float sum_dn_n = block_reduce(bsum, 0.0f, Sum()) / (float)C;
    for (int i = threadIdx.x; i < C; i += blockDim.x)
        dinp[row + i] += r * (d[i] * w[i] - sum_dn - (x[i] - m) * r * sum_dn_n);
}

// Column sums of dout (and, with NORM, of dout * the normalised input) over
// one chunk of rows per blockIdx.x: partial[chunk][C], summed in chunk order
// by colsum_finish_kernel, so the result is the same on every run.
template <bool NORM>
__global__ void colsum_partial_kernel(float *part_b, float *part_w, const float *dout, const float *inp,
                                      const float *mean, const float *rstd, int T, int C) {
    const int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int lo = blockIdx.x * kRowsPerChunk, hi = min(T, lo + kRowsPerChunk);
    float sb = 0.0f, sw = 0.0f;
    for (int t = lo; t < hi; t++) {
        const float d = dout[(size_t)t * C + c];
        sb += d;
        if (NORM) sw += d * (inp[(size_t)t * C + c] - mean[t]) * rstd[t];
    }
    part_b[(size_t)blockIdx.x * C + c] = sb;
    if (NORM) part_w[(size_t)blockIdx.x * C + c] = sw;
}

__global__ void colsum_finish_kernel(float *db, float *dw, const float *part_b, const float *part_w, int chunks,
                                     int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sb = 0.0f, sw = 0.0f;
    for (int k = 0; k < chunks; k++) {
        sb += part_b[(size_t)k * C + c];
        if (dw) sw += part_w[(size_t)k * C + c];
    }
    db[c] += sb;
    if (dw) dw[c] += sw;
}

__global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * (float)M_SQRT1_2));
}

__global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        const float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        dinp[i] = dout[i] * (cdf + x * inv_sqrt_2pi * expf(-0.5f * x * x));
    }
}

__global__ void relu_forward_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

__global__ void relu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

__global__ void bias_fill_kernel(float *out, const float *b, int T, int C) {
    const size_t n = (size_t)T * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = b[i % C];
}

// Row t's key is scfm_dropout_key of its cell and position: the cell's key
// at this site, then the position mixed in (kernels.c).
__global__ void dropout_tokens_kernel(float *dst, const float *src, float *grad, int rows, int n,
                                      const uint64_t *cell_keys, const int32_t *token_cell,
                                      const int32_t *positions, uint32_t threshold, float scale) {
    const size_t total = (size_t)rows * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / n;
        const uint64_t key = mix64(cell_keys[token_cell[t]] + (uint32_t)positions[t]);
        const float keep = keep_factor(key, (int)(i % n), threshold, scale);
        dst[i] = src[i] * keep;
        if (grad) grad[i] *= keep;
    }
}

// One block per probability row (blockIdx.x = task * L + row): the softmax
// as scfm_softmax_row (exp, then times 1/sum), and the dropped-out copy.
__global__ void attention_softmax_kernel(float *const *rows, float *const *dropped, const uint64_t *keys, int L,
                                         uint32_t threshold, float scale) {
    const int task = blockIdx.x / L, i = blockIdx.x % L;
    float *row = rows[task] + (size_t)i * L;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < L; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_reduce(mx, -INFINITY, Max());
    float s = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) s += expf(row[j] - mx);
    const float inv = 1.0f / block_reduce(s, 0.0f, Sum());
    float *drop = keys ? dropped[task] + (size_t)i * L : nullptr;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        const float p = expf(row[j] - mx) * inv;
        row[j] = p;
        if (drop) drop[j] = p * keep_factor(keys[blockIdx.x], j, threshold, scale);
    }
}

// dP through dropout (rebuilding the dropped-out row for dv), then the
// softmax backward dS = P * (dP - rowsum(dP * P)), in place.
__global__ void attention_softmax_backward_kernel(float *const *grads, const float *const *rows,
                                                  float *const *dropped, const uint64_t *keys, int L,
                                                  uint32_t threshold, float scale) {
    const int task = blockIdx.x / L, i = blockIdx.x % L;
    float *g = grads[task] + (size_t)i * L;
    const float *p = rows[task] + (size_t)i * L;
    float *drop = keys ? dropped[task] + (size_t)i * L : nullptr;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < L; j += blockDim.x) {
        if (drop) {
            const float keep = keep_factor(keys[blockIdx.x], j, threshold, scale);
            drop[j] = p[j] * keep;
            g[j] *= keep;
        }
        dot += g[j] * p[j];
    }
    dot = block_reduce(dot, 0.0f, Sum());
    for (int j = threadIdx.x; j < L; j += blockDim.x) g[j] = p[j] * (g[j] - dot);
}

// One block per row of logits: max, sum of exponentials, the row's loss,
// and the gradient scale * (softmax - onehot) written over the logits.
__global__ void crossentropy_kernel(float *logits, double *row_loss, const int32_t *labels, int V, float scale) {
    float *z = logits + (size_t)blockIdx.x * V;
    const int label = labels[blockIdx.x];
    const float label_logit = z[label];
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, z[j]);
    mx = block_reduce(mx, -INFINITY, Max());
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - mx);
    const float sum = block_reduce(s, 0.0f, Sum()), inv = 1.0f / sum;
    for (int j = threadIdx.x; j < V; j += blockDim.x) z[j] = scale * (expf(z[j] - mx) * inv - (j == label ? 1.0f : 0.0f));
    if (threadIdx.x == 0) row_loss[blockIdx.x] = (double)(logf(sum) + mx - label_logit);
}

// out[n, :] = src[index[n], :] for N rows of C.
__global__ void gather_rows_kernel(float *out, const float *src, const int32_t *index, int N, int C) {
    const size_t n_all = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_all; i += (size_t)gridDim.x * blockDim.x)
        out[i] = src[(size_t)index[i / C] * C + i % C];
}

// dst[index[n], :] += src[n, :]; the indices are distinct, so no two
// threads add to one value.
__global__ void scatter_add_rows_kernel(float *dst, const float *src, const int32_t *index, int N, int C) {
    const size_t n_all = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n_all; i += (size_t)gridDim.x * blockDim.x)
        dst[(size_t)index[i / C] * C + i % C] += src[i];
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, scfm_cuda_adamw_args a) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g[i];
        v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g[i] * g[i];
        p[i] = p[i] * a.shrink - a.step_size * m[i] / (sqrtf(v[i]) * a.v_correction + a.eps);
    }
}

// Column sums of dout[T,C] into db (and of dout * the normalised input into
// dw when inp != NULL), through per-chunk partials in the workspace.
scfm_status column_sums(scfm_cuda_ctx *ctx, float *db, float *dw, const float *dout, const float *inp,
                        const float *mean, const float *rstd, int T, int C, scfm_error *err) {
    if (T == 0) return SCFM_OK;
    const int chunks = (T + kRowsPerChunk - 1) / kRowsPerChunk;
    void *work = nullptr;
    scfm_status st = scfm_cuda_workspace(ctx, sizeof(float) * 2 * (size_t)chunks * C, &work, err);
    if (st != SCFM_OK) return st;
    float *part_b = (float *)work, *part_w = part_b + (size_t)chunks * C;
    const dim3 grid(chunks, (C + kThreads - 1) / kThreads);
    if (inp)
        colsum_partial_kernel<true><<<grid, kThreads, 0, ctx->stream>>>(part_b, part_w, dout, inp, mean, rstd, T, C);
    else
        colsum_partial_kernel<false><<<grid, kThreads, 0, ctx->stream>>>(part_b, part_w, dout, inp, mean, rstd, T, C);
    colsum_finish_kernel<<<(C + kThreads - 1) / kThreads, kThreads, 0, ctx->stream>>>(db, inp ? dw : nullptr, part_b,
                                                                                     part_w, chunks, C);
    return launched("column sums", err);
}

}  // namespace

extern "C" {

scfm_status scfm_cuda_to_bf16(scfm_cuda_ctx *ctx, scfm_bf16 *d_dst, const float *d_src, size_t n, scfm_error *err) {
    to_bf16_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>((__nv_bfloat16 *)d_dst, d_src, n);
    return launched("bf16 conversion", err);
}

scfm_status scfm_cuda_embedding_forward(scfm_cuda_ctx *ctx, float *d_out, const int32_t *d_tokens,
                                        const int32_t *d_positions, const float *d_wte, const float *d_wpe, int T,
                                        int C, scfm_error *err) {
    embedding_forward_kernel<<<grid_for((size_t)T * C), kThreads, 0, ctx->stream>>>(d_out, d_tokens, d_positions,
                                                                                   d_wte, d_wpe, T, C);
    return launched("embedding forward", err);
}

scfm_status scfm_cuda_embedding_backward(scfm_cuda_ctx *ctx, float *d_dwte, float *d_dwpe, const float *d_dout,
                                         const int32_t *d_tokens, const int32_t *d_positions, int T, int C,
                                         scfm_error *err) {
    embedding_backward_kernel<<<grid_for((size_t)T * C), kThreads, 0, ctx->stream>>>(d_dwte, d_dwpe, d_dout,
                                                                                    d_tokens, d_positions, T, C);
    return launched("embedding backward", err);
}

scfm_status scfm_cuda_layernorm_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_mean, float *d_rstd,
                                        const float *d_inp, const float *d_w, const float *d_b, int T, int C,
                                        float eps, scfm_error *err) {
    if (T == 0) return SCFM_OK;
    layernorm_forward_kernel<<<T, kThreads, 0, ctx->stream>>>(d_out, d_mean, d_rstd, d_inp, d_w, d_b, C, eps);
    return launched("LayerNorm forward", err);
}

scfm_status scfm_cuda_layernorm_backward(scfm_cuda_ctx *ctx, float *d_dinp, float *d_dw, float *d_db,
                                         const float *d_dout, const float *d_inp, const float *d_w,
                                         const float *d_mean, const float *d_rstd, int T, int C, scfm_error *err) {
    if (T == 0) return SCFM_OK;
    layernorm_backward_input_kernel<<<T, kThreads, 0, ctx->stream>>>(d_dinp, d_dout, d_inp, d_w, d_mean, d_rstd, C);
    scfm_status st = launched("LayerNorm backward", err);
    if (st != SCFM_OK) return st;
    return column_sums(ctx, d_db, d_dw, d_dout, d_inp, d_mean, d_rstd, T, C, err);
}

scfm_status scfm_cuda_gelu_forward(scfm_cuda_ctx *ctx, float *d_out, const float *d_inp, size_t n, scfm_error *err) {
    gelu_forward_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>(d_out, d_inp, n);
    return launched("GELU forward", err);
}

scfm_status scfm_cuda_gelu_backward(scfm_cuda_ctx *ctx, float *d_dinp, const float *d_inp, const float *d_dout,
                                    size_t n, scfm_error *err) {
    gelu_backward_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>(d_dinp, d_inp, d_dout, n);
    return launched("GELU backward", err);
}

scfm_status scfm_cuda_relu_forward(scfm_cuda_ctx *ctx, float *d_out, const float *d_inp, size_t n, scfm_error *err) {
    relu_forward_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>(d_out, d_inp, n);
    return launched("ReLU forward", err);
}

scfm_status scfm_cuda_relu_backward(scfm_cuda_ctx *ctx, float *d_dinp, const float *d_inp, const float *d_dout,
                                    size_t n, scfm_error *err) {
    relu_backward_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>(d_dinp, d_inp, d_dout, n);
    return launched("ReLU backward", err);
}

scfm_status scfm_cuda_bias_fill(scfm_cuda_ctx *ctx, float *d_out, const float *d_b, int T, int C, scfm_error *err) {
    bias_fill_kernel<<<grid_for((size_t)T * C), kThreads, 0, ctx->stream>>>(d_out, d_b, T, C);
    return launched("bias broadcast", err);
}

scfm_status scfm_cuda_bias_backward(scfm_cuda_ctx *ctx, float *d_db, const float *d_dout, int T, int C,
                                    scfm_error *err) {
    return column_sums(ctx, d_db, nullptr, d_dout, nullptr, nullptr, nullptr, T, C, err);
}

scfm_status scfm_cuda_dropout_tokens(scfm_cuda_ctx *ctx, float *d_dst, const float *d_src, float *d_grad, int rows,
                                     int n, float p, const uint64_t *d_cell_keys, const int32_t *d_token_cell,
                                     const int32_t *d_positions, scfm_error *err) {
    if (rows == 0) return SCFM_OK;
    uint32_t threshold;
    float scale;
    dropout_params(p, &threshold, &scale);
    dropout_tokens_kernel<<<grid_for((size_t)rows * n), kThreads, 0, ctx->stream>>>(
        d_dst, d_src, d_grad, rows, n, d_cell_keys, d_token_cell, d_positions, threshold, scale);
    return launched("dropout", err);
}

scfm_status scfm_cuda_attention_softmax(scfm_cuda_ctx *ctx, float *const *d_rows, float *const *d_dropped,
                                        const uint64_t *d_keys, int n_tasks, int L, float p, scfm_error *err) {
    if (n_tasks == 0 || L == 0) return SCFM_OK;
    uint32_t threshold;
    float scale;
    dropout_params(p, &threshold, &scale);
    attention_softmax_kernel<<<n_tasks * L, kThreads, 0, ctx->stream>>>(d_rows, d_dropped, d_keys, L, threshold,
                                                                       scale);
    return launched("attention softmax", err);
}

scfm_status scfm_cuda_attention_softmax_backward(scfm_cuda_ctx *ctx, float *const *d_grads,
                                                 const float *const *d_rows, float *const *d_dropped,
                                                 const uint64_t *d_keys, int n_tasks, int L, float p,
                                                 scfm_error *err) {
    if (n_tasks == 0 || L == 0) return SCFM_OK;
    uint32_t threshold;
    float scale;
    dropout_params(p, &threshold, &scale);
    attention_softmax_backward_kernel<<<n_tasks * L, kThreads, 0, ctx->stream>>>(d_grads, d_rows, d_dropped, d_keys,
                                                                                L, threshold, scale);
    return launched("attention softmax backward", err);
}

scfm_status scfm_cuda_crossentropy(scfm_cuda_ctx *ctx, float *d_logits, const int32_t *d_labels, int N, int V,
                                   float scale, double *loss_sum, scfm_error *err) {
    *loss_sum = 0.0;
    if (N == 0) return SCFM_OK;
    void *work = nullptr;
    scfm_status st = scfm_cuda_workspace(ctx, sizeof(double) * (size_t)N, &work, err);
    if (st != SCFM_OK) return st;
    crossentropy_kernel<<<N, kThreads, 0, ctx->stream>>>(d_logits, (double *)work, d_labels, V, scale);
    if ((st = launched("cross-entropy", err)) != SCFM_OK) return st;
    double *row_loss = (double *)malloc(sizeof(double) * (size_t)N);
    if (!row_loss) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for %d losses", N);
    st = scfm_cuda_check(cudaMemcpyAsync(row_loss, work, sizeof(double) * (size_t)N, cudaMemcpyDeviceToHost,
                                         ctx->stream),
                         "download of the losses", err);
    if (st == SCFM_OK) st = scfm_cuda_sync(ctx, err);
    // summed on the host in row order, as the CPU, so the total repeats
    for (int n = 0; st == SCFM_OK && n < N; n++) *loss_sum += row_loss[n];
    free(row_loss);
    return st;
}

scfm_status scfm_cuda_gather_rows(scfm_cuda_ctx *ctx, float *d_out, const float *d_src, const int32_t *d_index,
                                  int N, int C, scfm_error *err) {
    if (N == 0) return SCFM_OK;
    gather_rows_kernel<<<grid_for((size_t)N * C), kThreads, 0, ctx->stream>>>(d_out, d_src, d_index, N, C);
    return launched("row gather", err);
}

scfm_status scfm_cuda_scatter_add_rows(scfm_cuda_ctx *ctx, float *d_dst, const float *d_src, const int32_t *d_index,
                                       int N, int C, scfm_error *err) {
    if (N == 0) return SCFM_OK;
    scatter_add_rows_kernel<<<grid_for((size_t)N * C), kThreads, 0, ctx->stream>>>(d_dst, d_src, d_index, N, C);
    return launched("row scatter", err);
}

scfm_status scfm_cuda_adamw(scfm_cuda_ctx *ctx, float *d_p, const float *d_g, float *d_m, float *d_v, size_t n,
                            const scfm_cuda_adamw_args *a, scfm_error *err) {
    if (n == 0) return SCFM_OK;
    adamw_kernel<<<grid_for(n), kThreads, 0, ctx->stream>>>(d_p, d_g, d_m, d_v, n, *a);
    return launched("AdamW", err);
}

}  // extern "C"
