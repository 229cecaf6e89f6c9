/* The contrastive objective's layers: the projection head on pooled cell
 * embeddings and the InfoNCE loss over a batch of view pairs (shapes in
 * model.h). The cross-rank part, which gathers every rank's views, is in
 * src/train/contrastive.c. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "scfm/model.h"

void scfm_projection_free(scfm_projection_acts *a) {
    scfm_free(a->x);
    memset(a, 0, sizeof *a);
}

scfm_status scfm_projection_reserve(scfm_projection_acts *a, int n, int C, int P, scfm_error *err) {
    if (n <= a->cap) return SCFM_OK;
    int cap = n + n / 4 + 8;
    size_t W = (size_t)(C > P ? C : P), rows = (size_t)cap;
    /* one block: x, h1, a1, h2, z, rnorm, d1, d2 */
    size_t floats = rows * ((size_t)C + 4 * (size_t)P + 1 + 2 * W);
    scfm_free(a->x);
    memset(a, 0, sizeof *a);
    float *p = scfm_alloc(sizeof(float) * floats);
    if (!p) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the projection of %d cells", n);
    a->x = p;
    a->h1 = a->x + rows * C;
    a->a1 = a->h1 + rows * P;
    a->h2 = a->a1 + rows * P;
    a->z = a->h2 + rows * P;
    a->rnorm = a->z + rows * P;
    a->d1 = a->rnorm + rows;
    a->d2 = a->d1 + rows * W;
    a->cap = cap;
    return SCFM_OK;
}

void scfm_projection_forward(scfm_projection_acts *a, const float *w1, const float *b1, const float *w2,
                             const float *b2, int n, int C, int P, scfm_activation act) {
    scfm_linear_forward(a->h1, a->x, w1, b1, n, C, P);
    if (act == SCFM_ACT_GELU) scfm_gelu_forward(a->a1, a->h1, (size_t)n * P);
    else scfm_relu_forward(a->a1, a->h1, (size_t)n * P);
    scfm_linear_forward(a->h2, a->a1, w2, b2, n, P, P);
    for (int i = 0; i < n; i++) {
        const float *h = a->h2 + (size_t)i * P;
        double sq = 0.0;
        for (int k = 0; k < P; k++) sq += (double)h[k] * h[k];
        /* a zero vector has no direction; its z stays 0 and gets no gradient */
        a->rnorm[i] = sq > 0.0 ? (float)(1.0 / sqrt(sq)) : 0.0f;
        for (int k = 0; k < P; k++) a->z[(size_t)i * P + k] = h[k] * a->rnorm[i];
    }
}

void scfm_projection_backward(scfm_projection_acts *a, float *dx, float *dw1, float *db1, float *dw2, float *db2,
                              const float *dz, const float *w1, const float *w2, int n, int C, int P,
                              scfm_activation act) {
    /* through the normalisation: dh2 = (dz - z (z . dz)) / |h2| */
    float *dh2 = a->d1;
    for (int i = 0; i < n; i++) {
        const float *z = a->z + (size_t)i * P, *g = dz + (size_t)i * P;
        double dot = 0.0;
        for (int k = 0; k < P; k++) dot += (double)z[k] * g[k];
        for (int k = 0; k < P; k++) dh2[(size_t)i * P + k] = (float)((g[k] - z[k] * dot) * a->rnorm[i]);
    }
    scfm_linear_backward(a->d2, dw2, db2, dh2, a->a1, w2, n, P, P, 0);
    if (act == SCFM_ACT_GELU) scfm_gelu_backward(a->d1, a->h1, a->d2, (size_t)n * P);
    else scfm_relu_backward(a->d1, a->h1, a->d2, (size_t)n * P);
    scfm_linear_backward(dx, dw1, db1, a->d1, a->x, w1, n, C, P, 0);
}

double scfm_infonce_forward(float *sim, float *probs, const float *z_all, int N, int P, int lo, int n,
                            float log_tau) {
    if (n == 0) return 0.0;
    const float inv_tau = expf(-log_tau);
    /* sim[n,N] = z_local z_all^T / tau */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, N, P, inv_tau, z_all + (size_t)lo * P, P, z_all, P,
                0.0f, sim, N);
    double loss = 0.0;
    for (int r = 0; r < n; r++) {
        const int i = lo + r, pair = i ^ 1;
        const float *s = sim + (size_t)r * N;
        float *p = probs + (size_t)r * N;
        float mx = -INFINITY;
        for (int j = 0; j < N; j++)
            if (j != i && s[j] > mx) mx = s[j];
        double sum = 0.0;
        for (int j = 0; j < N; j++) {
            p[j] = j == i ? 0.0f : expf(s[j] - mx);
            sum += p[j];
        }
        for (int j = 0; j < N; j++) p[j] = (float)(p[j] / sum);
        loss += (double)mx + log(sum) - (double)s[pair];
    }
    return loss;
}

void scfm_infonce_backward(float *dz_all, float *dlog_tau, float *probs, const float *sim, const float *z_all,
                           int N, int P, int lo, int n, float log_tau, float scale) {
    if (n == 0) return;
    const float inv_tau = expf(-log_tau);
    /* G = scale (p - onehot(pair)) = dloss/dsim, in place of probs */
    double dt = 0.0;
    for (int r = 0; r < n; r++) {
        const int i = lo + r;
        float *g = probs + (size_t)r * N;
        g[i ^ 1] -= 1.0f;
        for (int j = 0; j < N; j++) {
            g[j] *= scale;
            /* s = z.z exp(-log_tau): ds/dlog_tau = -s */
            if (j != i) dt -= (double)g[j] * sim[(size_t)r * N + j];
        }
    }
    if (dlog_tau) *dlog_tau += (float)dt;
    /* anchors: dz_i += sum_j G_ij z_j / tau; every view: dz_j += sum_i G_ij z_i / tau */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, P, N, inv_tau, probs, N, z_all, P, 1.0f,
                dz_all + (size_t)lo * P, P);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, P, n, inv_tau, probs, N, z_all + (size_t)lo * P, P,
                1.0f, dz_all, P);
}
