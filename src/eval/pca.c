/* The PCA baseline of scfm eval: counts scaled to 10,000 per cell, log1p,
 * the most dispersed genes, centred, and the leading components by
 * randomized SVD (Halko, Martinsson and Tropp, 2011, algorithm 4.4): a
 * Gaussian sketch Y = A Omega, power iterations re-orthonormalised by QR
 * (LAPACK sgeqrf/sorgqr) after every product, then the small problem
 * B B^T = (Q^T A)(Q^T A)^T solved exactly in double (dsyevd). Products are
 * OpenBLAS sgemm. The matrix A [n cells, n_hvg genes] is held dense. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_impl.h"
#include "scfm/eval.h"

#define TARGET_SUM 1e4  /* counts per cell after normalisation, as scanpy's normalize_total(target_sum=1e4) */
#define CHUNK_CELLS 4096

/* LAPACK through OpenBLAS (Fortran calling convention; no lapacke.h here). */
void sgeqrf_(const int *m, const int *n, float *a, const int *lda, float *tau, float *work, const int *lwork,
             int *info);
void sorgqr_(const int *m, const int *n, const int *k, float *a, const int *lda, const float *tau, float *work,
             const int *lwork, int *info);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w, double *work,
             const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

void scfm_pca_defaults(scfm_pca_options *o) {
    *o = (scfm_pca_options){.n_hvg = 2000, .n_components = 50, .oversample = 50, .power_iter = 10, .seed = 0};
}

void scfm_pca_free(scfm_pca *p) {
    free(p->hvg);
    free(p->dispersion);
    free(p->scores);
    free(p->explained_variance);
    free(p->explained_variance_ratio);
    memset(p, 0, sizeof *p);
}

/* Calls visit(user, row, chunk, c) for each of cells[n] (ascending), where c
 * is the cell's place in chunk; chunks start at the next wanted cell, so a
 * sparse subsample does not read the cells between. */
typedef void (*cell_visitor)(void *user, int64_t row, const scfm_cells_chunk *chunk, int64_t c);

static scfm_status for_each_cell(scfm_matrix *m, const int64_t *cells, int64_t n, cell_visitor visit, void *user,
                                 scfm_error *err) {
    scfm_cells_chunk chunk = {0};
    scfm_status st = SCFM_OK;
    int64_t total = scfm_matrix_num_cells(m);
    for (int64_t row = 0; st == SCFM_OK && row < n;) {
        int64_t first = cells[row], count = total - first < CHUNK_CELLS ? total - first : CHUNK_CELLS;
        st = scfm_matrix_read(m, first, count, &chunk, err);
        for (; st == SCFM_OK && row < n && cells[row] < first + count; row++) visit(user, row, &chunk, cells[row] - first);
    }
    scfm_cells_chunk_free(&chunk);
    return st;
}

/* log1p(count * 10,000 / total) of the cell's entries into y[nnz]. */
static int64_t log_normalise(const scfm_cells_chunk *chunk, int64_t c, float *y) {
    int64_t begin = chunk->indptr[c], end = chunk->indptr[c + 1];
    double total = 0.0;
    for (int64_t e = begin; e < end; e++) total += chunk->values[e];
    for (int64_t e = begin; e < end; e++) y[e - begin] = (float)log1p(chunk->values[e] * TARGET_SUM / total);
    return end - begin;
}

typedef struct {
    double *sum, *sumsq;  /* [genes] */
    float *y;             /* [genes] scratch */
    const int32_t *column;/* [genes]: the gene's column of A, -1 when not kept */
    float *a;             /* [n, n_hvg] */
    int n_hvg;
} pass_state;

static void accumulate(void *user, int64_t row, const scfm_cells_chunk *chunk, int64_t c) {
    (void)row;
    pass_state *s = user;
    int64_t nnz = log_normalise(chunk, c, s->y);
    const int32_t *genes = chunk->genes + chunk->indptr[c];
    for (int64_t e = 0; e < nnz; e++) {
        s->sum[genes[e]] += s->y[e];
        s->sumsq[genes[e]] += (double)s->y[e] * s->y[e];
    }
}

static void fill_row(void *user, int64_t row, const scfm_cells_chunk *chunk, int64_t c) {
    pass_state *s = user;
    int64_t nnz = log_normalise(chunk, c, s->y);
    const int32_t *genes = chunk->genes + chunk->indptr[c];
    float *a = s->a + (size_t)row * (size_t)s->n_hvg;
    for (int64_t e = 0; e < nnz; e++)
        if (s->column[genes[e]] >= 0) a[s->column[genes[e]]] = s->y[e];
}

typedef struct {
    double dispersion;
    int32_t gene;
} ranked_gene;

/* Highest dispersion first; the lower gene index on a tie. */
static int by_dispersion(const void *pa, const void *pb) {
    const ranked_gene *a = pa, *b = pb;
    if (a->dispersion != b->dispersion) return a->dispersion < b->dispersion ? 1 : -1;
    return (a->gene > b->gene) - (a->gene < b->gene);
}

/* Replaces the columns of a [m, ncol] (column-major) by an orthonormal basis
 * of their span. */
static scfm_status orthonormalise(float *a, int m, int ncol, scfm_error *err) {
    int info = 0, lwork = -1;
    float query = 0.0f;
    float *tau = malloc(sizeof *tau * (size_t)ncol);
    if (tau) sgeqrf_(&m, &ncol, a, &m, tau, &query, &lwork, &info);
    lwork = (int)query > ncol ? (int)query : ncol;
    float *work = tau ? malloc(sizeof *work * (size_t)lwork) : NULL;
    if (!work) {
        free(tau);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a QR factorisation of %d x %d", m, ncol);
    }
    sgeqrf_(&m, &ncol, a, &m, tau, work, &lwork, &info);
    if (info == 0) sorgqr_(&m, &ncol, &ncol, a, &m, tau, work, &lwork, &info);
    free(work);
    free(tau);
    if (info != 0) return scfm_fail(err, SCFM_ERR_NUMERIC, "QR factorisation of %d x %d failed (info %d)", m, ncol, info);
    return SCFM_OK;
}

/* Eigen-decomposition of the symmetric c[l, l] in place: eigenvectors in its
 * columns, eigenvalues ascending in w. */
static scfm_status symmetric_eigen(double *c, int l, double *w, scfm_error *err) {
    int info = 0, lwork = -1, liwork = -1, iquery = 0;
    double query = 0.0;
    dsyevd_("V", "U", &l, c, &l, w, &query, &lwork, &iquery, &liwork, &info, 1, 1);
    lwork = (int)query;
    liwork = iquery;
    double *work = malloc(sizeof *work * (size_t)lwork);
    int *iwork = malloc(sizeof *iwork * (size_t)liwork);
    if (work && iwork) dsyevd_("V", "U", &l, c, &l, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (!work || !iwork) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for an eigen-decomposition");
    if (info != 0) return scfm_fail(err, SCFM_ERR_NUMERIC, "eigen-decomposition of %d x %d failed (info %d)", l, l, info);
    return SCFM_OK;
}

/* The randomized SVD of the centred at [h, n] (column-major: A^T, a cell per
 * column). Fills p->scores and p->explained_variance. */
static scfm_status randomized_svd(const float *at, int n, int h, const scfm_pca_options *o, scfm_pca *p,
                                  scfm_error *err) {
    int k = p->n_components, l = k + o->oversample;
    if (l > n) l = n;
    if (l > h) l = h;
    float *y = malloc(sizeof *y * (size_t)n * (size_t)l);  /* [n, l] column-major */
    float *z = malloc(sizeof *z * (size_t)h * (size_t)l);  /* [h, l] column-major */
    double *bd = malloc(sizeof *bd * (size_t)h * (size_t)l), *c = malloc(sizeof *c * (size_t)l * (size_t)l);
    double *w = malloc(sizeof *w * (size_t)l);
    float *weights = malloc(sizeof *weights * (size_t)l * (size_t)k);
    scfm_status st = SCFM_OK;
    if (!y || !z || !bd || !c || !w || !weights) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the randomized SVD of %d x %d", n, h);
        goto done;
    }
    for (int j = 0; j < l; j++)
        for (int g = 0; g < h; g++) {
            uint32_t r[4];
            scfm_eval_words(o->seed, SCFM_EVAL_STREAM_SKETCH, (uint64_t)g, (uint32_t)j, r);
            z[(size_t)j * h + g] = scfm_normal(r[0], r[1]);
        }
    /* Y = A Omega, Q = qr(Y); then q times Z = qr(A^T Q), Q = qr(A Z) */
    cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, l, h, 1.0f, at, h, z, h, 0.0f, y, n);
    st = orthonormalise(y, n, l, err);
    for (int it = 0; st == SCFM_OK && it < o->power_iter; it++) {
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, h, l, n, 1.0f, at, h, y, n, 0.0f, z, h);
        st = orthonormalise(z, h, l, err);
        if (st != SCFM_OK) break;
        cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, n, l, h, 1.0f, at, h, z, h, 0.0f, y, n);
        st = orthonormalise(y, n, l, err);
    }
    if (st != SCFM_OK) goto done;
    /* B^T = A^T Q [h, l]; B B^T in double, whose eigenvectors U and
     * eigenvalues s^2 give the scores A V = Q U S */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, h, l, n, 1.0f, at, h, y, n, 0.0f, z, h);
    for (size_t i = 0; i < (size_t)h * (size_t)l; i++) bd[i] = z[i];
    cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, l, h, 1.0, bd, h, 0.0, c, l);
    st = symmetric_eigen(c, l, w, err);
    if (st != SCFM_OK) goto done;
    for (int j = 0; j < k; j++) {
        int e = l - 1 - j; /* descending */
        double s2 = w[e] > 0 ? w[e] : 0.0;
        p->explained_variance[j] = s2 / (double)(n - 1);
        for (int i = 0; i < l; i++) weights[(size_t)j * l + i] = (float)(c[(size_t)e * l + i] * sqrt(s2));
    }
    /* scores^T [k, n] = W^T Q^T, i.e. scores row-major [n, k] */
    cblas_sgemm(CblasColMajor, CblasTrans, CblasTrans, k, n, l, 1.0f, weights, l, y, n, 0.0f, p->scores, k);
done:
    free(y), free(z), free(bd), free(c), free(w), free(weights);
    return st;
}

scfm_status scfm_pca_baseline(scfm_matrix *m, const int64_t *cells, int64_t n, const scfm_pca_options *o,
                              scfm_pca *out, scfm_error *err) {
    memset(out, 0, sizeof *out);
    int64_t genes = scfm_matrix_num_genes(m);
    const char *path = scfm_matrix_path(m);
    if (n < 2 || n > INT32_MAX || o->n_hvg < 1 || o->n_components < 1 || o->oversample < 0 || o->power_iter < 0)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: PCA of %lld cells (%d genes, %d components): needs 2 cells",
                         path, (long long)n, o->n_hvg, o->n_components);
    pass_state s = {0};
    ranked_gene *ranked = malloc(sizeof *ranked * (size_t)(genes ? genes : 1));
    int32_t *column = malloc(sizeof *column * (size_t)(genes ? genes : 1));
    double *mean = malloc(sizeof *mean * (size_t)(genes ? genes : 1));
    s.sum = calloc((size_t)(genes ? genes : 1), sizeof *s.sum);
    s.sumsq = calloc((size_t)(genes ? genes : 1), sizeof *s.sumsq);
    s.y = malloc(sizeof *s.y * (size_t)(genes ? genes : 1));
    scfm_status st = SCFM_OK;
    if (!ranked || !column || !mean || !s.sum || !s.sumsq || !s.y) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for the statistics of %lld genes", path,
                       (long long)genes);
        goto done;
    }
    st = for_each_cell(m, cells, n, accumulate, &s, err);
    if (st != SCFM_OK) goto done;

    /* dispersion = variance / mean of the log-normalised values, over genes
     * that vary; the n_hvg highest are kept */
    int64_t candidates = 0;
    double total_variance = 0.0;
    for (int64_t g = 0; g < genes; g++) {
        mean[g] = s.sum[g] / (double)n;
        double var = (s.sumsq[g] - (double)n * mean[g] * mean[g]) / (double)(n - 1);
        column[g] = -1;
        s.sumsq[g] = var > 0 ? var : 0.0; /* the variance from here on */
        if (var > 0 && mean[g] > 0) ranked[candidates++] = (ranked_gene){var / mean[g], (int32_t)g};
    }
    qsort(ranked, (size_t)candidates, sizeof *ranked, by_dispersion);
    int h = (int)(candidates < o->n_hvg ? candidates : o->n_hvg);
    for (int j = 0; j < h; j++) column[ranked[j].gene] = 0;
    out->n_hvg = h;
    out->n_components = (int)(o->n_components < n - 1 ? o->n_components : n - 1);
    if (out->n_components > h) out->n_components = h;
    if (h < 1) {
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: no gene varies over the %lld evaluated cells; no PCA baseline",
                       path, (long long)n);
        goto done;
    }
    int k = out->n_components;
    out->hvg = malloc(sizeof *out->hvg * (size_t)h);
    out->dispersion = malloc(sizeof *out->dispersion * (size_t)h);
    out->scores = malloc(sizeof *out->scores * (size_t)n * (size_t)k);
    out->explained_variance = malloc(sizeof(double) * (size_t)k);
    out->explained_variance_ratio = malloc(sizeof(double) * (size_t)k);
    s.a = calloc((size_t)n * (size_t)h, sizeof *s.a);
    if (!out->hvg || !out->dispersion || !out->scores || !out->explained_variance || !out->explained_variance_ratio ||
        !s.a) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for a %lld x %d matrix", path, (long long)n, h);
        goto done;
    }
    h = 0;
    for (int64_t g = 0; g < genes; g++)
        if (column[g] == 0) {
            out->hvg[h] = (int32_t)g;
            out->dispersion[h] = s.sumsq[g] / mean[g];
            total_variance += s.sumsq[g];
            column[g] = h++;
        }
    s.column = column;
    s.n_hvg = h;
    st = for_each_cell(m, cells, n, fill_row, &s, err);
    if (st != SCFM_OK) goto done;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < h; j++) s.a[(size_t)i * h + j] -= (float)mean[out->hvg[j]];
    st = randomized_svd(s.a, (int)n, h, o, out, err);
    for (int j = 0; st == SCFM_OK && j < k; j++)
        out->explained_variance_ratio[j] = out->explained_variance[j] / total_variance;
done:
    free(ranked), free(column), free(mean), free(s.sum), free(s.sumsq), free(s.y), free(s.a);
    if (st != SCFM_OK) scfm_pca_free(out);
    return st;
}
