/* Multi-head self-attention over a packed stream: every (cell, head) pair is
 * an independent task of three small sgemms, so no FLOP is spent on padding
 * and cells never see each other. Tasks are spread over OpenMP threads; the
 * sgemms inside run single-threaded (OpenBLAS does so inside a parallel
 * region). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/vmath.h"

size_t scfm_attention_probs_size(const int32_t *cell_offsets, int n_cells, int heads) {
    size_t total = 0;
    for (int c = 0; c < n_cells; c++) {
        size_t L = (size_t)(cell_offsets[c + 1] - cell_offsets[c]);
        total += L * L;
    }
    return total * (size_t)heads;
}

/* Offset of cell c's first probability block, for all cells at once. */
static void probs_offsets(size_t *offsets, const int32_t *cell_offsets, int n_cells, int heads) {
    size_t total = 0;
    for (int c = 0; c < n_cells; c++) {
        offsets[c] = total;
        size_t L = (size_t)(cell_offsets[c + 1] - cell_offsets[c]);
        total += L * L * (size_t)heads;
    }
}

/* The dropout mask of row i of (cell c, head h) depends only on (seed,
 * epoch, site, cell, head, query position). */
static uint64_t probs_row_key(const scfm_attention_dropout *drop, int c, int h, int i) {
    return scfm_dropout_key(drop->seed, drop->epoch, drop->site, drop->cell_ids[c], h * 65536 + i);
}

void scfm_attention_forward(float *out, float *probs, const float *qkv,
                            const int32_t *cell_offsets, int n_cells, int C, int heads,
                            const scfm_attention_dropout *drop, float *scratch, int max_len) {
    const int d = C / heads, ld = 3 * C;
    const float scale = 1.0f / sqrtf((float)d);
    size_t offsets[n_cells > 0 ? n_cells : 1];
    probs_offsets(offsets, cell_offsets, n_cells, heads);
    const int n_tasks = n_cells * heads;
#pragma omp parallel
    {
        float *tmp = scratch + (size_t)omp_get_thread_num() * max_len * max_len;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < n_tasks; task++) {
            int c = task / heads, h = task % heads;
            int start = cell_offsets[c], L = cell_offsets[c + 1] - start;
            const float *q = qkv + (size_t)start * ld + h * d;
            const float *k = q + C, *v = q + 2 * C;
            float *p = probs + offsets[c] + (size_t)h * L * L;
            /* p[L,L] = q k^T / sqrt(d), then a row softmax. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, d, scale, q, ld, k, ld, 0.0f,
                        p, L);
            const int dropping = drop && drop->p > 0.0f;
            for (int i = 0; i < L; i++) {
                float mx, sum, *row = p + (size_t)i * L;
                scfm_softmax_row(row, L, &mx, &sum);
                if (dropping) scfm_dropout_apply(tmp + (size_t)i * L, row, NULL, L, drop->p, probs_row_key(drop, c, h, i));
            }
            const float *pv = dropping ? tmp : p;
            /* out[L,d] = p v */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d, L, 1.0f, pv, L, v, ld, 0.0f,
                        out + (size_t)start * C + h * d, C);
        }
    }
}

void scfm_attention_backward(float *dqkv, const float *dout, const float *qkv,
                             const float *probs, const int32_t *cell_offsets, int n_cells,
                             int C, int heads, const scfm_attention_dropout *drop,
                             float *scratch, int max_len) {
    const int d = C / heads, ld = 3 * C;
    const float scale = 1.0f / sqrtf((float)d);
    size_t offsets[n_cells > 0 ? n_cells : 1];
    probs_offsets(offsets, cell_offsets, n_cells, heads);
    const int n_tasks = n_cells * heads;
    const int dropping = drop && drop->p > 0.0f;
#pragma omp parallel
    {
        float *dp = scratch + (size_t)omp_get_thread_num() * 2 * max_len * max_len;
        float *pd = dp + (size_t)max_len * max_len;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < n_tasks; task++) {
            int c = task / heads, h = task % heads;
            int start = cell_offsets[c], L = cell_offsets[c + 1] - start;
            const float *q = qkv + (size_t)start * ld + h * d;
            const float *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + (size_t)start * ld + h * d;
            float *dk = dq + C, *dv = dq + 2 * C;
            const float *dO = dout + (size_t)start * C + h * d;
            const float *p = probs + offsets[c] + (size_t)h * L * L;
            /* dp[L,L] = dO v^T, the gradient of the dropped-out probabilities */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, d, 1.0f, dO, C, v, ld, 0.0f,
                        dp, L);
            /* Each row's mask is drawn once: it rebuilds the dropped-out row for
             * dv and takes dp back through dropout; then the softmax backward
             * ds = p * (dp - rowsum(dp * p)). */
            for (int i = 0; i < L; i++) {
                float *row = dp + (size_t)i * L;
                const float *prow = p + (size_t)i * L;
                if (dropping)
                    scfm_dropout_apply(pd + (size_t)i * L, prow, row, L, drop->p, probs_row_key(drop, c, h, i));
                float dot = 0.0f;
                for (int j = 0; j < L; j++) dot += row[j] * prow[j];
                for (int j = 0; j < L; j++) row[j] = prow[j] * (row[j] - dot);
            }
            /* dv[L,d] = pv^T dO */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, d, L, 1.0f, dropping ? pd : p, L,
                        dO, C, 0.0f, dv, ld);
            /* dq[L,d] = ds k * scale ; dk[L,d] = ds^T q * scale */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, d, L, scale, dp, L, k, ld, 0.0f,
                        dq, ld);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, d, L, scale, dp, L, q, ld, 0.0f,
                        dk, ld);
        }
    }
}
