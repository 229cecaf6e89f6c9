/* Variable-length attention over packed cells: for each group of cells of
 * one length L (scfm_cuda_varlen_plan), one batched cuBLAS call per product
 * covers all of its (cell, head) pairs, each pair's matrices addressed in
 * place in the packed q | k | v stream, as the CPU's per-pair sgemms. */
#include <math.h>
#include <stdlib.h>

#include "backend/cuda/cuda_backend.h"

/* The matrices of one (cell, head) pair, in the order of the pointer arrays
 * uploaded for a call: array k holds every pair's matrix of kind k. */
enum { Q, K, V, P, DROPPED, OUT, DP, DQ, DK, DV, N_KINDS };

/* Row-major C = alpha op(A) op(B) + beta C over a batch of pointer triples
 * (see rowmajor_gemm in linear.c: operands swapped for column-major). */
static scfm_status batched_sgemm(scfm_cuda_ctx *ctx, int trans_a, int trans_b, int M, int N, int K_, float alpha,
                                 float *const *A, int lda, float *const *B, int ldb, float *const *Cm, int ldc,
                                 int batch, scfm_error *err) {
    const float beta = 0.0f;
    return scfm_cuda_check_blas(cublasSgemmBatched(ctx->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K_, &alpha,
                                                   (const float *const *)B, ldb, (const float *const *)A, lda,
                                                   &beta, Cm, ldc, batch),
                                "batched attention GEMM", err);
}

typedef struct {
    float **ptrs;        /* device: N_KINDS arrays of n_tasks pointers */
    uint64_t *keys;      /* device: one dropout key per probability row, or NULL */
    int n_tasks;
} task_arrays;

/* Fills the pointer arrays (and dropout keys) of every (cell, head) pair in
 * plan order and uploads them into the workspace, followed by `scratch`
 * probability-sized scratch buffers (the dropped-out probabilities, then
 * dP) that the pointers of kinds DROPPED and DP address. */
static scfm_status upload_tasks(scfm_cuda_ctx *ctx, const scfm_cuda_varlen_plan *plan, int C, const float *qkv,
                                const float *probs, const float *out, const float *dqkv,
                                const scfm_attention_dropout *drop, int scratch, task_arrays *ta,
                                scfm_error *err) {
    const int heads = plan->heads, d = C / heads, ld = 3 * C;
    const int kept = plan->group_start[plan->n_groups];
    const int dropping = drop && drop->p > 0.0f;
    size_t n_tasks = (size_t)kept * (size_t)heads, n_keys = 0;
    for (int i = 0; dropping && i < kept; i++) {
        int c = plan->order[i];
        n_keys += (size_t)(plan->cell_offsets[c + 1] - plan->cell_offsets[c]) * (size_t)heads;
    }
    size_t ptr_bytes = sizeof(float *) * N_KINDS * n_tasks, key_bytes = sizeof(uint64_t) * n_keys;
    size_t head_bytes = (ptr_bytes + key_bytes + 255) / 256 * 256;
    void *work = NULL;
    scfm_status st = scfm_cuda_workspace(ctx, head_bytes + sizeof(float) * plan->probs_size * (size_t)scratch, &work,
                                         err);
    if (st != SCFM_OK) return st;
    float *scr = (float *)((char *)work + head_bytes);
    char *host = malloc(ptr_bytes + key_bytes + 1);
    if (!host) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for %zu attention tasks", n_tasks);
    float **hp = (float **)host;
    uint64_t *hk = (uint64_t *)(host + ptr_bytes);
    size_t task = 0, key = 0;
    for (int i = 0; i < kept; i++) {
        const int c = plan->order[i], start = plan->cell_offsets[c], L = plan->cell_offsets[c + 1] - start;
        for (int h = 0; h < heads; h++, task++) {
            const size_t qo = (size_t)start * ld + (size_t)h * d, po = plan->probs_offset[c] + (size_t)h * L * L;
            float *m[N_KINDS] = {
                [Q] = (float *)qkv + qo,
                [K] = (float *)qkv + qo + C,
                [V] = (float *)qkv + qo + 2 * C,
                [P] = (float *)probs + po,
                [DROPPED] = dropping ? scr + po : (float *)probs + po,
                [OUT] = (float *)out + (size_t)start * C + (size_t)h * d,
                [DP] = scratch > 1 ? scr + plan->probs_size + po : NULL,
                [DQ] = dqkv ? (float *)dqkv + qo : NULL,
                [DK] = dqkv ? (float *)dqkv + qo + C : NULL,
                [DV] = dqkv ? (float *)dqkv + qo + 2 * C : NULL,
            };
            for (int k = 0; k < N_KINDS; k++) hp[(size_t)k * n_tasks + task] = m[k];
            /* the CPU's key of row i of (cell c, head h) */
            for (int r = 0; dropping && r < L; r++)
                hk[key++] = scfm_dropout_key(drop->seed, drop->epoch, drop->site, drop->cell_ids[c], h * 65536 + r);
        }
    }
    /* From pageable memory the copy returns once the data is staged, so the
     * host buffer can go at once. */
    st = scfm_cuda_check(cudaMemcpyAsync(work, host, ptr_bytes + key_bytes, cudaMemcpyHostToDevice, ctx->stream),
                         "upload of attention tasks", err);
    free(host);
    ta->ptrs = work;
    ta->keys = dropping ? (uint64_t *)((char *)work + ptr_bytes) : NULL;
    ta->n_tasks = (int)n_tasks;
    return st;
}

/* Group g's slice of pointer array `kind`, and of the keys. */
static float *const *group_ptrs(const task_arrays *ta, const scfm_cuda_varlen_plan *plan, int kind, int g) {
    return ta->ptrs + (size_t)kind * ta->n_tasks + (size_t)plan->group_start[g] * plan->heads;
}
static const uint64_t *group_keys(const task_arrays *ta, const scfm_cuda_varlen_plan *plan, int g) {
    if (!ta->keys) return NULL;
    size_t rows = 0;
    for (int i = 0; i < plan->group_start[g]; i++) {
        int c = plan->order[i];
        rows += (size_t)(plan->cell_offsets[c + 1] - plan->cell_offsets[c]) * (size_t)plan->heads;
    }
    return ta->keys + rows;
}

scfm_status scfm_cuda_attention_forward(scfm_cuda_ctx *ctx, float *d_out, float *d_probs, const float *d_qkv,
                                        const scfm_cuda_varlen_plan *plan, int C,
                                        const scfm_attention_dropout *drop, scfm_error *err) {
    const int heads = plan->heads, d = C / heads, ld = 3 * C;
    const float scale = 1.0f / sqrtf((float)d), p = drop ? drop->p : 0.0f;
    task_arrays ta = {0};
    scfm_status st = upload_tasks(ctx, plan, C, d_qkv, d_probs, d_out, NULL, drop, p > 0.0f, &ta, err);
    for (int g = 0; st == SCFM_OK && g < plan->n_groups; g++) {
        const int L = plan->group_len[g], n = (plan->group_start[g + 1] - plan->group_start[g]) * heads;
        /* probs = q k^T / sqrt(d), the row softmax (and dropout), out = probs v */
        st = batched_sgemm(ctx, 0, 1, L, L, d, scale, group_ptrs(&ta, plan, Q, g), ld, group_ptrs(&ta, plan, K, g),
                           ld, group_ptrs(&ta, plan, P, g), L, n, err);
        if (st == SCFM_OK)
            st = scfm_cuda_attention_softmax(ctx, group_ptrs(&ta, plan, P, g), group_ptrs(&ta, plan, DROPPED, g),
                                             group_keys(&ta, plan, g), n, L, p, err);
        if (st == SCFM_OK)
            st = batched_sgemm(ctx, 0, 0, L, d, L, 1.0f, group_ptrs(&ta, plan, DROPPED, g), L,
                               group_ptrs(&ta, plan, V, g), ld, group_ptrs(&ta, plan, OUT, g), C, n, err);
    }
    return st;
}

scfm_status scfm_cuda_attention_backward(scfm_cuda_ctx *ctx, float *d_dqkv, const float *d_dout, const float *d_qkv,
                                         const float *d_probs, const scfm_cuda_varlen_plan *plan, int C,
                                         const scfm_attention_dropout *drop, scfm_error *err) {
    const int heads = plan->heads, d = C / heads, ld = 3 * C;
    const float scale = 1.0f / sqrtf((float)d), p = drop ? drop->p : 0.0f;
    task_arrays ta = {0};
    /* two scratch buffers: the dropped-out probabilities, and dP */
    scfm_status st = upload_tasks(ctx, plan, C, d_qkv, d_probs, d_dout, d_dqkv, drop, 2, &ta, err);
    for (int g = 0; st == SCFM_OK && g < plan->n_groups; g++) {
        const int L = plan->group_len[g], n = (plan->group_start[g + 1] - plan->group_start[g]) * heads;
        /* dP = dO v^T; dS through dropout and softmax; dv = P'^T dO;
         * dq = dS k / sqrt(d); dk = dS^T q / sqrt(d) */
        st = batched_sgemm(ctx, 0, 1, L, L, d, 1.0f, group_ptrs(&ta, plan, OUT, g), C, group_ptrs(&ta, plan, V, g),
                           ld, group_ptrs(&ta, plan, DP, g), L, n, err);
        if (st == SCFM_OK)
            st = scfm_cuda_attention_softmax_backward(ctx, group_ptrs(&ta, plan, DP, g),
                                                      (const float *const *)group_ptrs(&ta, plan, P, g),
                                                      group_ptrs(&ta, plan, DROPPED, g), group_keys(&ta, plan, g), n,
                                                      L, p, err);
        if (st == SCFM_OK)
            st = batched_sgemm(ctx, 1, 0, L, d, L, 1.0f, group_ptrs(&ta, plan, DROPPED, g), L,
                               group_ptrs(&ta, plan, OUT, g), C, group_ptrs(&ta, plan, DV, g), ld, n, err);
        if (st == SCFM_OK)
            st = batched_sgemm(ctx, 0, 0, L, d, L, scale, group_ptrs(&ta, plan, DP, g), L,
                               group_ptrs(&ta, plan, K, g), ld, group_ptrs(&ta, plan, DQ, g), ld, n, err);
        if (st == SCFM_OK)
            st = batched_sgemm(ctx, 1, 0, L, d, L, scale, group_ptrs(&ta, plan, DP, g), L,
                               group_ptrs(&ta, plan, Q, g), ld, group_ptrs(&ta, plan, DK, g), ld, n, err);
    }
    return st;
}
