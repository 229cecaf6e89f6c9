/* The CUDA backend (libscfm_cuda, docs/cuda.md): the CPU kernels of
 * src/backend/cpu/cpu.h on a GPU, with the same tensor layouts (row-major,
 * T tokens by C channels, Linear weights [out, in]) so that each is checked
 * one to one against its CPU twin (tests/cuda/test_cuda_kernels.c).
 *
 * Every pointer named d_* or documented "device" is device memory; the
 * others are host memory. Functions enqueue work on the context's stream and
 * return at once unless they say they synchronise; a status reports launch
 * and cuBLAS errors, and scfm_cuda_sync reports those of work in flight.
 * Nothing here prints or exits.
 *
 * Precision: Linear layers multiply bf16 copies of activations and weights
 * with fp32 accumulation into fp32 outputs (the fp32 master weights and
 * gradients stay fp32); everything else, attention's products included, is
 * fp32. */
#ifndef SCFM_BACKEND_CUDA_BACKEND_H
#define SCFM_BACKEND_CUDA_BACKEND_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/device.h"
#include "backend/cuda/flash.h"
#include "scfm/core.h"
#include "scfm/dist.h"
#include "scfm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CPU kernels' types and dropout keys (a C header). */
#include "backend/cpu/cpu.h"

/* bf16 as its raw 16 bits (the upper half of the fp32 pattern, rounded to
 * nearest even), so that C code can hold and move it; __nv_bfloat16 in .cu. */
typedef uint16_t scfm_bf16;

/* ---- runtime: status, memory, context (runtime.c) ---- */

/* SCFM_OK for cudaSuccess, else SCFM_ERR_IO naming `what` and the error. */
scfm_status scfm_cuda_check(cudaError_t rc, const char *what, scfm_error *err);
scfm_status scfm_cuda_check_blas(cublasStatus_t rc, const char *what, scfm_error *err);

/* Zeroed device memory (*d = NULL on failure); scfm_cuda_free(NULL) is a no-op. */
scfm_status scfm_cuda_alloc(void **d, size_t bytes, scfm_error *err);
void scfm_cuda_free(void *d);
/* Synchronous copies between host and device. */
scfm_status scfm_cuda_upload(void *d_dst, const void *src, size_t bytes, scfm_error *err);
scfm_status scfm_cuda_download(void *dst, const void *d_src, size_t bytes, scfm_error *err);

/* One device, one stream and one cuBLAS handle, and a scratch buffer that
 * grows to the largest call's need. */
typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *d_work;
    size_t work_bytes;
} scfm_cuda_ctx;

scfm_status scfm_cuda_ctx_create(int device, scfm_cuda_ctx **out, scfm_error *err);
void scfm_cuda_ctx_free(scfm_cuda_ctx *ctx);
/* The scratch buffer with at least `bytes` (its contents are not kept: a call
 * owns it until the next call on the same stream). */
scfm_status scfm_cuda_workspace(scfm_cuda_ctx *ctx, size_t bytes, void **d_work, scfm_error *err);
/* Waits for the stream; reports any error of the work it ran. */
scfm_status scfm_cuda_sync(scfm_cuda_ctx *ctx, scfm_error *err);

/* ---- elementwise and row kernels (kernels.cu) ---- */

/* d_dst[n] = bf16(d_src[n]), round to nearest even. */
scfm_status scfm_cuda_to_bf16(scfm_cuda_ctx *ctx, scfm_bf16 *d_dst, const float *d_src, size_t n, scfm_error *err);

/* As scfm_embedding_forward/backward; backward adds with atomicAdd, so the
 * order of the additions (and the last bits of a repeated token's row)
 * varies from run to run. d_wpe / d_dwpe may be NULL. */
scfm_status scfm_cuda_embedding_forward(scfm_cuda_ctx *ctx, float *d_out, const int32_t *d_tokens,
                                        const int32_t *d_positions, const float *d_wte, const float *d_wpe, int T,
                                        int C, scfm_error *err);
scfm_status scfm_cuda_embedding_backward(scfm_cuda_ctx *ctx, float *d_dwte, float *d_dwpe, const float *d_dout,
                                         const int32_t *d_tokens, const int32_t *d_positions, int T, int C,
                                         scfm_error *err);

/* As scfm_layernorm_forward/backward (backward adds into dinp, dw, db, and
 * sums dw, db over tokens in a fixed order). */
scfm_status scfm_cuda_layernorm_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_mean, float *d_rstd,
                                        const float *d_inp, const float *d_w, const float *d_b, int T, int C,
                                        float eps, scfm_error *err);
scfm_status scfm_cuda_layernorm_backward(scfm_cuda_ctx *ctx, float *d_dinp, float *d_dw, float *d_db,
                                         const float *d_dout, const float *d_inp, const float *d_w,
                                         const float *d_mean, const float *d_rstd, int T, int C, scfm_error *err);

/* As scfm_gelu_* (exact erf form) and scfm_relu_*. */
scfm_status scfm_cuda_gelu_forward(scfm_cuda_ctx *ctx, float *d_out, const float *d_inp, size_t n, scfm_error *err);
scfm_status scfm_cuda_gelu_backward(scfm_cuda_ctx *ctx, float *d_dinp, const float *d_inp, const float *d_dout,
                                    size_t n, scfm_error *err);
scfm_status scfm_cuda_relu_forward(scfm_cuda_ctx *ctx, float *d_out, const float *d_inp, size_t n, scfm_error *err);
scfm_status scfm_cuda_relu_backward(scfm_cuda_ctx *ctx, float *d_dinp, const float *d_inp, const float *d_dout,
                                    size_t n, scfm_error *err);

/* d_out[T,C] = (bias broadcast over rows); d_db[C] += column sums of d_dout[T,C]
 * in a fixed order. */
scfm_status scfm_cuda_bias_fill(scfm_cuda_ctx *ctx, float *d_out, const float *d_b, int T, int C, scfm_error *err);
scfm_status scfm_cuda_bias_backward(scfm_cuda_ctx *ctx, float *d_db, const float *d_dout, int T, int C,
                                    scfm_error *err);

/* The dropout of scfm_dropout_apply on `rows` token rows of n values: row t
 * of d_dst = row t of d_src times its mask and d_grad (may be NULL) times
 * the same mask, keyed as on the CPU by scfm_dropout_key of the token's cell
 * and position, which the kernel derives from d_cell_keys[d_token_cell[t]]
 * (scfm_dropout_cell_key of each cell at this site) and d_positions[t]: one
 * key per cell crosses from the host, not one per token. Bit-identical
 * masks to the CPU's. */
scfm_status scfm_cuda_dropout_tokens(scfm_cuda_ctx *ctx, float *d_dst, const float *d_src, float *d_grad, int rows,
                                     int n, float p, const uint64_t *d_cell_keys, const int32_t *d_token_cell,
                                     const int32_t *d_positions, scfm_error *err);

/* Fused softmax cross-entropy over the vocabulary: one pass per row of
 * d_logits[N,V] replaces it by d(scale * loss)/d(logits) (what
 * scfm_crossentropy_forward then _backward leave) and *loss_sum gets the
 * loss summed over rows in row order. Synchronises (the loss comes back). */
scfm_status scfm_cuda_crossentropy(scfm_cuda_ctx *ctx, float *d_logits, const int32_t *d_labels, int N, int V,
                                   float scale, double *loss_sum, scfm_error *err);

/* d_out[n,:] = d_src[d_index[n],:] over N rows of C; and its backward,
 * d_dst[d_index[n],:] += d_src[n,:], for distinct indices (masked targets). */
scfm_status scfm_cuda_gather_rows(scfm_cuda_ctx *ctx, float *d_out, const float *d_src, const int32_t *d_index,
                                  int N, int C, scfm_error *err);
scfm_status scfm_cuda_scatter_add_rows(scfm_cuda_ctx *ctx, float *d_dst, const float *d_src, const int32_t *d_index,
                                       int N, int C, scfm_error *err);

/* One AdamW step over n contiguous values with one decay setting, the
 * update of scfm_adamw_update: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2,
 * p = p shrink - step_size m / (sqrt(v) v_correction + eps). */
typedef struct {
    float beta1, beta2, eps;
    float shrink;        /* 1 - lr * weight_decay for decayed tensors, else 1 */
    float step_size;     /* lr / (1 - beta1^t) */
    float v_correction;  /* 1 / sqrt(1 - beta2^t) */
} scfm_cuda_adamw_args;
scfm_status scfm_cuda_adamw(scfm_cuda_ctx *ctx, float *d_p, const float *d_g, float *d_m, float *d_v, size_t n,
                            const scfm_cuda_adamw_args *a, scfm_error *err);

/* ---- Linear through cuBLAS, bf16 in, fp32 accumulate and out (linear.c) ---- */

/* d_out[T,OC] = inp[T,C] @ w[OC,C]^T + b[OC] (d_b may be NULL), from bf16
 * copies d_inp16 and d_w16 (scfm_cuda_to_bf16 of the fp32 tensors). */
scfm_status scfm_cuda_linear_forward(scfm_cuda_ctx *ctx, float *d_out, const scfm_bf16 *d_inp16,
                                     const scfm_bf16 *d_w16, const float *d_b, int T, int C, int OC,
                                     scfm_error *err);
/* d_dinp[T,C] = (or += with accumulate_dinp; NULL: skipped) dout @ w,
 * d_dw[OC,C] += dout^T @ inp, d_db[OC] += column sums of dout (NULL:
 * skipped), from fp32 d_dout[T,OC] (rounded to bf16 in the workspace for
 * the products). */
scfm_status scfm_cuda_linear_backward(scfm_cuda_ctx *ctx, float *d_dinp, float *d_dw, float *d_db,
                                      const float *d_dout, const scfm_bf16 *d_inp16, const scfm_bf16 *d_w16, int T,
                                      int C, int OC, int accumulate_dinp, scfm_error *err);

/* ---- variable-length attention over packed cells (plan.c, attention.c) ----
 * The batch's cells grouped by length: one batched GEMM per distinct length
 * and product covers every (cell, head) of that length, reading q, k, v in
 * place in the packed stream, so no work goes to padding and no cell sees
 * another's tokens. Host-side, pure C. */
typedef struct {
    int n_cells, heads;
    int n_groups;
    int *group_len;       /* [n_groups] the length L of each group, longest first */
    int *group_start;     /* [n_groups + 1] each group's first entry of order */
    int *order;           /* [cells with L > 0] cell indices by length (longest first), then index */
    int32_t *cell_offsets;/* [n_cells + 1] copy of the batch's offsets (cu_seqlens) */
    size_t *probs_offset; /* [n_cells] where cell c's heads x L x L probabilities start, as on the CPU */
    size_t probs_size;    /* heads * sum L^2: scfm_attention_probs_size */
} scfm_cuda_varlen_plan;

scfm_status scfm_cuda_varlen_plan_build(scfm_cuda_varlen_plan *plan, const int32_t *cell_offsets, int n_cells,
                                        int heads, scfm_error *err);
void scfm_cuda_varlen_plan_free(scfm_cuda_varlen_plan *plan);

/* As scfm_attention_forward/backward with the same d_qkv[T,3C], d_out[T,C]
 * and d_probs layout (plan.probs_size floats, the softmax before dropout),
 * so probabilities can be compared with the CPU's; drop (host, cell_ids
 * too) as on the CPU, NULL or p == 0 for none. Backward overwrites
 * d_dqkv[T,3C]. */
scfm_status scfm_cuda_attention_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_probs, const float *d_qkv,
                                        const scfm_cuda_varlen_plan *plan, int C,
                                        const scfm_attention_dropout *drop, scfm_error *err);
scfm_status scfm_cuda_attention_backward(scfm_cuda_ctx *ctx, float *d_dqkv, const float *d_dout, const float *d_qkv,
                                         const float *d_probs, const scfm_cuda_varlen_plan *plan, int C,
                                         const scfm_attention_dropout *drop, scfm_error *err);

/* Row kernels of attention (kernels.cu), over n_tasks (cell, head) pairs of
 * one length L: row i of task k is d_rows[k] + i * L, its dropout key
 * d_keys[k * L + i] (d_keys NULL: no dropout). Forward: softmax in place and,
 * with dropout, the dropped-out row into d_dropped[k] + i * L. Backward: with
 * d_grads[k] holding dP, takes it back through dropout (writing the
 * dropped-out probabilities to d_dropped) and the softmax, in place. */
scfm_status scfm_cuda_attention_softmax(scfm_cuda_ctx *ctx, float *const *d_rows, float *const *d_dropped,
                                        const uint64_t *d_keys, int n_tasks, int L, float p, scfm_error *err);
scfm_status scfm_cuda_attention_softmax_backward(scfm_cuda_ctx *ctx, float *const *d_grads,
                                                 const float *const *d_rows, float *const *d_dropped,
                                                 const uint64_t *d_keys, int n_tasks, int L, float p,
                                                 scfm_error *err);

/* ---- flash attention over packed cells (plan.c, flash.cu) ----
 * Tiles of SCFM_CUDA_FLASH_TILE rows of one cell; a block computes one tile
 * of one head with bf16 tensor-core products and an online softmax, keeping
 * no probabilities (docs/cuda.md). Heads of width 16, 32 or 64. */
typedef struct {
    int n_tiles, n_tokens;
    scfm_cuda_flash_tile *tiles;   /* host [n_tiles] */
    scfm_cuda_flash_tile *d_tiles; /* device copy */
    int cap, d_cap;                /* their capacities */
} scfm_cuda_flash_plan;

/* The tiles of a batch (host only; reuses the plan's buffers; zero the plan
 * before its first use), and their upload. */
scfm_status scfm_cuda_flash_plan_build(scfm_cuda_flash_plan *plan, const int32_t *cell_offsets, int n_cells,
                                       scfm_error *err);
scfm_status scfm_cuda_flash_plan_upload(scfm_cuda_ctx *ctx, scfm_cuda_flash_plan *plan, scfm_error *err);
void scfm_cuda_flash_plan_free(scfm_cuda_flash_plan *plan);
/* 1 when heads of C / heads channels are supported. */
int scfm_cuda_flash_supported(int C, int heads);
/* d_out[T,C] as scfm_attention_forward's, and d_lse[heads,T] each row's
 * log-sum-exp of its scaled scores; with p > 0, dropout on the
 * probabilities with the CPU's masks: d_cell_keys[c] is
 * scfm_dropout_cell_key(seed, epoch, site, cell id) and row r of head h
 * takes key position h * 65536 + r, as on the CPU. */
scfm_status scfm_cuda_flash_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_lse, const float *d_qkv,
                                    const scfm_cuda_flash_plan *plan, int C, int heads, const uint64_t *d_cell_keys,
                                    float p, scfm_error *err);
/* d_dqkv[T,3C] (overwritten) from d_dout[T,C], the forward's d_qkv, d_out and
 * d_lse, and the same dropout. */
scfm_status scfm_cuda_flash_backward(scfm_cuda_ctx *ctx, float *d_dqkv, const float *d_dout, const float *d_qkv,
                                     const float *d_out, const float *d_lse, const scfm_cuda_flash_plan *plan, int C,
                                     int heads, const uint64_t *d_cell_keys, float p, scfm_error *err);

/* ---- the transformer with its masked-gene head on the device (model.c) ----
 * Mirrors a host scfm_model (its layout, configuration and batch checks):
 * fp32 parameters and gradients at the host's offsets, and a bf16 copy of
 * the parameters for the Linear layers, refreshed by
 * scfm_cuda_model_refresh_bf16 after the parameters change. */
typedef struct scfm_cuda_model scfm_cuda_model;
/* Called as backward finishes a bucket of gradients [offset, offset + size). */
typedef scfm_status (*scfm_cuda_bucket_fn)(size_t offset, size_t size, void *user, scfm_error *err);

scfm_status scfm_cuda_model_create(scfm_cuda_ctx *ctx, const scfm_model *host, scfm_cuda_model **out,
                                   scfm_error *err);
void scfm_cuda_model_free(scfm_cuda_model *cm);
size_t scfm_cuda_model_num_params(const scfm_cuda_model *cm);
float *scfm_cuda_model_params(scfm_cuda_model *cm); /* device */
float *scfm_cuda_model_grads(scfm_cuda_model *cm);  /* device */
scfm_status scfm_cuda_model_refresh_bf16(scfm_cuda_model *cm, scfm_error *err);
/* As scfm_model_forward, except that the cross-entropy's gradient,
 * loss_scale * objective.mlm * d(loss), is made here (fused). Synchronises
 * (the loss comes back). */
scfm_status scfm_cuda_model_forward(scfm_cuda_model *cm, const scfm_batch *b, int training, uint64_t seed,
                                    uint32_t epoch, float loss_scale, double *loss_sum, scfm_error *err);
/* Adds the last forward's gradient into the device gradients, calling
 * bucket_ready (may be NULL) for each bucket of scfm_cuda_model_buckets in
 * order as soon as it is complete. */
scfm_status scfm_cuda_model_backward(scfm_cuda_model *cm, scfm_cuda_bucket_fn bucket_ready, void *user,
                                     scfm_error *err);
/* The gradient buckets in backward's order (offset/size NULL: count only). */
int scfm_cuda_model_buckets(const scfm_cuda_model *cm, size_t *offset, size_t *size);

/* ---- gradient reduction over NCCL (nccl.c) ---- */

typedef struct scfm_cuda_nccl scfm_cuda_nccl;
/* Collective over comm: rank 0 makes the ncclUniqueId, scfm_comm_bcast
 * shares it, every rank joins on `device` with its own reduction stream. */
scfm_status scfm_cuda_nccl_init(scfm_comm *comm, int device, scfm_cuda_nccl **out, scfm_error *err);
void scfm_cuda_nccl_free(scfm_cuda_nccl *n);
/* Starts an in-place sum over ranks of d_values[count] on the reduction
 * stream once the work enqueued so far on `compute` is done (an event), so
 * backward goes on while the bucket reduces. Like scfm_comm_isum_f32. */
scfm_status scfm_cuda_nccl_isum_f32(scfm_cuda_nccl *n, float *d_values, size_t count, cudaStream_t compute,
                                    scfm_error *err);
/* Makes `compute` wait (on the device, not the host) for every reduction
 * started so far. Like scfm_comm_wait. */
scfm_status scfm_cuda_nccl_wait(scfm_cuda_nccl *n, cudaStream_t compute, scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
