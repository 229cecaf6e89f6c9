/* Kernels of the expression-value objectives (docs/objectives.md): indexed
 * embedding rows added to the token stream (value bins, conditions), the
 * squared error of the value regression, the sigmoid of scGPT's MVC query
 * and its per-token inner product with the cell embedding. */
#include <math.h>
#include <omp.h>

#include "backend/cpu/cpu.h"

void scfm_add_rows_forward(float *out, const int32_t *index, const float *table, int T, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        if (index[t] < 0) continue;
        const float *r = table + (size_t)index[t] * C;
        float *o = out + (size_t)t * C;
        for (int i = 0; i < C; i++) o[i] += r[i];
    }
}

void scfm_add_rows_backward(float *dtable, const float *dout, const int32_t *index, int T, int C) {
    /* Rows repeat, so threads split the channels, as the embedding scatter. */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int t = 0; t < T; t++) {
            if (index[t] < 0) continue;
            float *e = dtable + (size_t)index[t] * C;
            const float *d = dout + (size_t)t * C;
            for (int i = lo; i < hi; i++) e[i] += d[i];
        }
    }
}

double scfm_mse_forward(const float *pred, const int32_t *target, int N) {
    double sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (int n = 0; n < N; n++) {
        double e = (double)pred[n] - (double)target[n];
        sum += e * e;
    }
    return sum;
}

void scfm_mse_backward(float *dpred, const float *pred, const int32_t *target, int N, float scale) {
    for (int n = 0; n < N; n++) dpred[n] = 2.0f * scale * (pred[n] - (float)target[n]);
}

void scfm_sigmoid_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + expf(-inp[i]));
}

void scfm_sigmoid_backward(float *dinp, const float *out, const float *dout, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * out[i] * (1.0f - out[i]);
}

void scfm_rowdot_forward(float *out, const float *a, const float *cells, const int32_t *cell_of, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = a + (size_t)n * C, *y = cells + (size_t)cell_of[n] * C;
        float s = 0.0f;
        for (int i = 0; i < C; i++) s += x[i] * y[i];
        out[n] = s;
    }
}

void scfm_rowdot_backward(float *da, float *dcells, const float *dout, const float *a, const float *cells,
                          const int32_t *cell_of, int N, int C) {
    /* Many rows share a cell: the cell gradient is summed serially over rows,
     * each thread owning a slice of the channels. */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int n = 0; n < N; n++) {
            const float d = dout[n];
            const float *x = a + (size_t)n * C, *y = cells + (size_t)cell_of[n] * C;
            float *dx = da + (size_t)n * C, *dy = dcells + (size_t)cell_of[n] * C;
            for (int i = lo; i < hi; i++) {
                dx[i] = d * y[i];
                dy[i] += d * x[i];
            }
        }
    }
}
