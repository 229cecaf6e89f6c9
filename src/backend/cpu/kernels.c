/* Token-wise kernels: embedding, LayerNorm, Linear, activations, dropout,
 * cross-entropy. Shapes are row-major; T tokens, C channels. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/vmath.h"

/* ---- dropout ---------------------------------------------------------- */

uint64_t scfm_dropout_cell_key(uint64_t seed, uint32_t epoch, uint32_t site, int64_t cell_id) {
    uint64_t k = scfm_mix64(seed ^ 0x5CF3D0D0ull);
    k = scfm_mix64(k + ((uint64_t)epoch << 32 | site));
    return scfm_mix64(k + (uint64_t)cell_id);
}

uint64_t scfm_dropout_key(uint64_t seed, uint32_t epoch, uint32_t site, int64_t cell_id,
                          int32_t position) {
    return scfm_mix64(scfm_dropout_cell_key(seed, epoch, site, cell_id) + (uint32_t)position);
}

/* One 32-bit hash per element (MurmurHash3's finaliser over a Weyl sequence
 * seeded by the row key): it vectorises, unlike a 64-bit mixer, and keeps p
 * exact to 2^-32. */
static inline uint32_t mask_hash(uint32_t base, int j) {
    uint32_t h = base + (uint32_t)j * 0x9E3779B9u;
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

void scfm_dropout_apply(float *dst, const float *src, float *grad, int n, float p, uint64_t row_key) {
    const double scaled = (double)p * 4294967296.0;
    const uint32_t threshold = scaled >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)scaled;
    const uint32_t base = (uint32_t)(row_key ^ (row_key >> 32));
    const float scale = 1.0f / (1.0f - p);
    if (grad) {
        for (int j = 0; j < n; j++) {
            float keep = mask_hash(base, j) < threshold ? 0.0f : scale;
            dst[j] = src[j] * keep;
            grad[j] *= keep;
        }
    } else {
        for (int j = 0; j < n; j++) dst[j] = src[j] * (mask_hash(base, j) < threshold ? 0.0f : scale);
    }
}

void scfm_dropout_row(float *x, int n, float p, uint64_t row_key) {
    scfm_dropout_apply(x, x, NULL, n, p, row_key);
}

/* ---- embedding -------------------------------------------------------- */

void scfm_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                            const float *wte, const float *wpe, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *o = out + (size_t)t * C;
        const float *e = wte + (size_t)tokens[t] * C;
        if (wpe) {
            const float *p = wpe + (size_t)positions[t] * C;
            for (int i = 0; i < C; i++) o[i] = e[i] + p[i];
        } else {
            memcpy(o, e, sizeof(float) * C);
        }
    }
}

void scfm_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             const int32_t *positions, int T, int C) {
    /* Tokens repeat across rows, so the scatter is split by channel, not by
     * token: each thread owns a slice of every embedding row. */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int t = 0; t < T; t++) {
            const float *d = dout + (size_t)t * C;
            if (dwte) {
                float *e = dwte + (size_t)tokens[t] * C;
                for (int i = lo; i < hi; i++) e[i] += d[i];
            }
            if (dwpe) {
                float *p = dwpe + (size_t)positions[t] * C;
                for (int i = lo; i < hi; i++) p[i] += d[i];
            }
        }
    }
}

/* ---- LayerNorm -------------------------------------------------------- */

void scfm_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int T, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        float m = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= (float)C;
        float v = 0.0f;
        for (int i = 0; i < C; i++) {
            float d = x[i] - m;
            v += d * d;
        }
        v /= (float)C;
        float s = 1.0f / sqrtf(v + eps);
        for (int i = 0; i < C; i++) o[i] = (x[i] - m) * s * w[i] + b[i];
        mean[t] = m;
        rstd[t] = s;
    }
}

void scfm_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int T, int C) {
    /* Two passes, both with a fixed summation order, so the result does not
     * depend on thread scheduling and a resumed run repeats bit for bit:
     * dinp by token, then dw/db by channel (each thread owns a slice). */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        const float *x = inp + (size_t)t * C, *d = dout + (size_t)t * C;
        float *dx = dinp + (size_t)t * C;
        float m = mean[t], s = rstd[t];
        float sum_dn = 0.0f, sum_dn_n = 0.0f;
        for (int i = 0; i < C; i++) {
            float dn = d[i] * w[i];
            sum_dn += dn;
            sum_dn_n += dn * (x[i] - m) * s;
        }
        sum_dn /= (float)C;
        sum_dn_n /= (float)C;
        for (int i = 0; i < C; i++) dx[i] += s * (d[i] * w[i] - sum_dn - (x[i] - m) * s * sum_dn_n);
    }
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int t = 0; t < T; t++) {
            const float *x = inp + (size_t)t * C, *d = dout + (size_t)t * C;
            float m = mean[t], s = rstd[t];
            for (int i = lo; i < hi; i++) {
                dw[i] += d[i] * (x[i] - m) * s;
                db[i] += d[i];
            }
        }
    }
}

/* ---- Linear ----------------------------------------------------------- */

void scfm_linear_forward(float *out, const float *inp, const float *w, const float *b, int T,
                         int C, int OC) {
    if (T == 0) return;
    if (b) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) memcpy(out + (size_t)t * OC, b, sizeof(float) * OC);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, OC, C, 1.0f, inp, C, w, C,
                b ? 1.0f : 0.0f, out, OC);
}

void scfm_bias_backward(float *db, const float *dout, int T, int C) {
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int t = 0; t < T; t++) {
            const float *d = dout + (size_t)t * C;
            for (int i = lo; i < hi; i++) db[i] += d[i];
        }
    }
}

void scfm_linear_backward(float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int T, int C, int OC,
                          int accumulate_dinp) {
    if (T == 0) return;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, C, OC, 1.0f, dout, OC, w, C,
                    accumulate_dinp ? 1.0f : 0.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, T, 1.0f, dout, OC, inp, C, 1.0f,
                dw, C);
    if (db) scfm_bias_backward(db, dout, T, OC);
}

/* ---- activations ------------------------------------------------------ */

void scfm_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * (float)M_SQRT1_2));
}

void scfm_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * scfm_expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}

void scfm_relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void scfm_relu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

/* ---- cross-entropy ---------------------------------------------------- */

double scfm_crossentropy_forward(float *logits, const int32_t *labels, int N, int V) {
    /* Per-row losses summed in row order: the total does not depend on
     * thread scheduling. */
    double *row_loss = malloc(sizeof(double) * (size_t)(N > 0 ? N : 1));
    double total = 0.0;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *z = logits + (size_t)n * V;
        float label_logit = z[labels[n]], mx, sum;
        scfm_softmax_row(z, V, &mx, &sum);
        double loss = (double)(logf(sum) + mx - label_logit);
        if (row_loss) row_loss[n] = loss;
    }
    for (int n = 0; row_loss && n < N; n++) total += row_loss[n];
    free(row_loss);
    return row_loss ? total : NAN;
}

void scfm_crossentropy_backward(float *probs, const int32_t *labels, int N, int V, float scale) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *p = probs + (size_t)n * V;
        p[labels[n]] -= 1.0f;
        for (int v = 0; v < V; v++) p[v] *= scale;
    }
}

/* The tokens a cell's embedding reads: its first under cls pooling, else its
 * gene tokens (all of them when it has none). */
static int pooled_token(const int32_t *tokens, int t, int first, int gene_tokens, int first_gene, int cls) {
    if (cls) return t == first;
    return gene_tokens == 0 || tokens[t] >= first_gene;
}

/* The weight of each pooled row of a cell's tokens [begin, end): 1 under
 * cls pooling, else one over the number of pooled tokens; *genes gets the
 * cell's gene tokens. */
static float pool_weight(const int32_t *tokens, int begin, int end, int first_gene, int cls, int *genes) {
    int n = 0;
    for (int t = begin; t < end; t++) n += tokens[t] >= first_gene;
    *genes = n;
    return cls ? 1.0f : 1.0f / (float)(n ? n : end - begin);
}

void scfm_pool_forward(float *out, const float *hidden, const int32_t *tokens, const int32_t *cell_offsets,
                       int n_cells, int C, int first_gene, int cls) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n_cells; c++) {
        const int begin = cell_offsets[c], end = cell_offsets[c + 1];
        int genes;
        const float scale = pool_weight(tokens, begin, end, first_gene, cls, &genes);
        float *o = out + (size_t)c * C;
        memset(o, 0, sizeof(float) * (size_t)C);
        for (int t = begin; t < end; t++) {
            if (!pooled_token(tokens, t, begin, genes, first_gene, cls)) continue;
            const float *h = hidden + (size_t)t * C;
            for (int i = 0; i < C; i++) o[i] += h[i];
        }
        for (int i = 0; i < C; i++) o[i] *= scale;
    }
}

void scfm_pool_backward(float *dhidden, const float *dout, const int32_t *tokens, const int32_t *cell_offsets,
                        int n_cells, int C, int first_gene, int cls) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n_cells; c++) {
        const int begin = cell_offsets[c], end = cell_offsets[c + 1];
        int genes;
        const float scale = pool_weight(tokens, begin, end, first_gene, cls, &genes);
        const float *d = dout + (size_t)c * C;
        for (int t = begin; t < end; t++) {
            if (!pooled_token(tokens, t, begin, genes, first_gene, cls)) continue;
            float *h = dhidden + (size_t)t * C;
            for (int i = 0; i < C; i++) h[i] += scale * d[i];
        }
    }
}
