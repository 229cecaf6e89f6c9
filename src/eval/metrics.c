/* Metrics of an embedding against cell labels and batches (docs/eval.md):
 * kNN classification accuracy under stratified cross-validation, ARI and NMI
 * of k-means clusters, the label silhouette, and scib's iLISI. The O(n^2)
 * parts share one pass over blocks of the distance matrix, each block one
 * sgemm (|x|^2 + |y|^2 - 2 x.y on centred coordinates, which keeps the
 * cancellation small), post-processed row by row with OpenMP. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval/eval_impl.h"
#include "scfm/eval.h"

#define DISTANCE_BLOCK 256 /* query rows per sgemm: 256 x n floats of scratch */

void scfm_eval_defaults(scfm_eval_options *o) {
    *o = (scfm_eval_options){.k = 15, .folds = 5, .kmeans_n_init = 10, .kmeans_max_iter = 300, .lisi_k = 90,
                             .seed = 0};
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void scfm_eval_select(const int32_t *labels, const int32_t *batches, int64_t n, int64_t max_cells,
                      uint64_t seed, int64_t *cells, int64_t *n_out) {
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0 && (!batches || batches[i] >= 0)) cells[m++] = i;
    if (m > max_cells) {
        /* the first max_cells places of a seeded Fisher-Yates shuffle */
        for (int64_t i = 0; i < max_cells; i++) {
            int64_t j = i + (int64_t)scfm_eval_below(seed, SCFM_EVAL_STREAM_SAMPLE, (uint64_t)i, 0,
                                                     (uint64_t)(m - i));
            int64_t t = cells[i];
            cells[i] = cells[j];
            cells[j] = t;
        }
        m = max_cells;
        qsort(cells, (size_t)m, sizeof *cells, cmp_i64);
    }
    *n_out = m;
}

scfm_status scfm_eval_folds(const int32_t *labels, int64_t n, int n_labels, int folds, uint64_t seed,
                            int32_t *fold, scfm_error *err) {
    int64_t *members = malloc(sizeof *members * (size_t)(n ? n : 1));
    if (!members) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the folds of %lld cells", (long long)n);
    for (int l = 0; l < n_labels; l++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (labels[i] == l) members[m++] = i;
        for (int64_t i = m - 1; i > 0; i--) {
            int64_t j = (int64_t)scfm_eval_below(seed, SCFM_EVAL_STREAM_FOLDS, (uint64_t)i, (uint32_t)l,
                                                 (uint64_t)(i + 1));
            int64_t t = members[i];
            members[i] = members[j];
            members[j] = t;
        }
        for (int64_t r = 0; r < m; r++) fold[members[r]] = (int32_t)(r % folds);
    }
    free(members);
    return SCFM_OK;
}

/* ---- partition agreement ---- */

static scfm_status check_codes(const int32_t *a, int ka, int64_t n, const char *what, scfm_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] < 0 || a[i] >= ka)
            return scfm_fail(err, SCFM_ERR_ARG, "%s[%lld] = %d is outside [0, %d)", what, (long long)i, a[i], ka);
    return SCFM_OK;
}

/* The contingency table [ka, kb] of two partitions, after checking them. */
static scfm_status contingency(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, int64_t **table,
                               scfm_error *err) {
    *table = NULL;
    if (n < 1 || ka < 1 || kb < 1) return scfm_fail(err, SCFM_ERR_ARG, "partitions of %lld items into %d and %d "
                                                    "parts", (long long)n, ka, kb);
    scfm_status st = check_codes(a, ka, n, "first partition", err);
    if (st == SCFM_OK) st = check_codes(b, kb, n, "second partition", err);
    if (st != SCFM_OK) return st;
    *table = calloc((size_t)ka * (size_t)kb, sizeof **table);
    if (!*table) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a %d x %d contingency table", ka, kb);
    for (int64_t i = 0; i < n; i++) (*table)[(size_t)a[i] * (size_t)kb + (size_t)b[i]]++;
    return SCFM_OK;
}

static double pairs(int64_t c) { return 0.5 * (double)c * (double)(c - 1); }

scfm_status scfm_eval_ari(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, double *ari,
                          scfm_error *err) {
    int64_t *t;
    scfm_status st = contingency(a, ka, b, kb, n, &t, err);
    if (st != SCFM_OK) return st;
    double both = 0.0, sa = 0.0, sb = 0.0;
    for (int i = 0; i < ka; i++) {
        int64_t row = 0;
        for (int j = 0; j < kb; j++) {
            both += pairs(t[(size_t)i * kb + j]);
            row += t[(size_t)i * kb + j];
        }
        sa += pairs(row);
    }
    for (int j = 0; j < kb; j++) {
        int64_t col = 0;
        for (int i = 0; i < ka; i++) col += t[(size_t)i * kb + j];
        sb += pairs(col);
    }
    free(t);
    double expected = sa * sb / pairs(n), max_index = 0.5 * (sa + sb);
    /* equal partitions with nothing to adjust (one cluster each, or all
     * singletons): sklearn calls that perfect agreement */
    *ari = max_index == expected ? 1.0 : (both - expected) / (max_index - expected);
    return SCFM_OK;
}

static double entropy(const int64_t *count, int k, int64_t n, int *present) {
    double h = 0.0;
    *present = 0;
    for (int i = 0; i < k; i++) {
        if (!count[i]) continue;
        double p = (double)count[i] / (double)n;
        h -= p * log(p);
        (*present)++;
    }
    return h;
}

scfm_status scfm_eval_nmi(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, double *nmi,
                          scfm_error *err) {
    int64_t *t;
    scfm_status st = contingency(a, ka, b, kb, n, &t, err);
    if (st != SCFM_OK) return st;
    int64_t *ra = calloc((size_t)ka + (size_t)kb, sizeof *ra), *rb = ra ? ra + ka : NULL;
    if (!ra) {
        free(t);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for NMI");
    }
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) {
            ra[i] += t[(size_t)i * kb + j];
            rb[j] += t[(size_t)i * kb + j];
        }
    double mi = 0.0;
    for (int i = 0; i < ka; i++)
        for (int j = 0; j < kb; j++) {
            int64_t c = t[(size_t)i * kb + j];
            if (c) mi += (double)c / (double)n * log((double)c * (double)n / ((double)ra[i] * (double)rb[j]));
        }
    int present_a, present_b;
    double ha = entropy(ra, ka, n, &present_a), hb = entropy(rb, kb, n, &present_b);
    free(ra);
    free(t);
    if (present_a == 1 && present_b == 1) *nmi = 1.0; /* sklearn: two single-cluster partitions agree */
    else if (mi <= 0.0) *nmi = 0.0;
    else *nmi = mi / fmax(0.5 * (ha + hb), 2.220446049250313e-16);
    return SCFM_OK;
}

/* ---- k-means ---- */

static double sq_dist(const float *x, const double *c, int dim) {
    double s = 0.0;
    for (int d = 0; d < dim; d++) {
        double t = (double)x[d] - c[d];
        s += t * t;
    }
    return s;
}

/* Assigns each point its nearest centre (the lowest index on a tie); the
 * squared distance goes to dist[i]. Returns how many assignments changed. */
static int64_t assign_points(const float *x, int64_t n, int dim, const double *centres, int k, int32_t *assign,
                             double *dist) {
    int64_t changed = 0;
#pragma omp parallel for schedule(static) reduction(+ : changed)
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        double best_d = INFINITY;
        for (int c = 0; c < k; c++) {
            double d = sq_dist(x + (size_t)i * dim, centres + (size_t)c * dim, dim);
            if (d < best_d) {
                best_d = d;
                best = c;
            }
        }
        changed += assign[i] != best;
        assign[i] = best;
        dist[i] = best_d;
    }
    return changed;
}

/* k-means++ (Arthur and Vassilvitskii, 2007): the first centre uniform, each
 * next one a point drawn with probability proportional to its squared
 * distance to the nearest centre so far. */
static void kmeans_pp(const float *x, int64_t n, int dim, int k, uint64_t seed, int restart, double *centres,
                      double *dist) {
    uint64_t draw = (uint64_t)restart * (uint64_t)k;
    int64_t first = (int64_t)scfm_eval_below(seed, SCFM_EVAL_STREAM_KMEANS, draw, 0, (uint64_t)n);
    for (int d = 0; d < dim; d++) centres[d] = x[(size_t)first * dim + d];
    for (int64_t i = 0; i < n; i++) dist[i] = sq_dist(x + (size_t)i * dim, centres, dim);
    for (int c = 1; c < k; c++) {
        double total = 0.0;
        for (int64_t i = 0; i < n; i++) total += dist[i];
        uint32_t w[4];
        scfm_eval_words(seed, SCFM_EVAL_STREAM_KMEANS, draw + (uint64_t)c, 0, w);
        double target = (double)(((uint64_t)w[0] << 21) ^ (w[1] >> 11)) / 9007199254740992.0 * total;
        int64_t pick = n - 1;
        double acc = 0.0;
        for (int64_t i = 0; i < n; i++) {
            acc += dist[i];
            if (acc > target && dist[i] > 0) {
                pick = i;
                break;
            }
        }
        double *centre = centres + (size_t)c * dim;
        for (int d = 0; d < dim; d++) centre[d] = x[(size_t)pick * dim + d];
        for (int64_t i = 0; i < n; i++) dist[i] = fmin(dist[i], sq_dist(x + (size_t)i * dim, centre, dim));
    }
}

/* Centres as the means of their points; an empty cluster takes the point
 * farthest from its centre (as scikit-learn relocates them). */
static void update_centres(const float *x, int64_t n, int dim, int k, int32_t *assign, double *dist,
                           double *centres, int64_t *size) {
    memset(centres, 0, sizeof *centres * (size_t)k * (size_t)dim);
    memset(size, 0, sizeof *size * (size_t)k);
    for (int64_t i = 0; i < n; i++) {
        size[assign[i]]++;
        for (int d = 0; d < dim; d++) centres[(size_t)assign[i] * dim + d] += x[(size_t)i * dim + d];
    }
    for (int c = 0; c < k; c++) {
        if (size[c] == 0) {
            int64_t far = 0;
            for (int64_t i = 1; i < n; i++)
                if (dist[i] > dist[far]) far = i;
            size[assign[far]]--;
            for (int d = 0; d < dim; d++) {
                centres[(size_t)assign[far] * dim + d] -= x[(size_t)far * dim + d];
                centres[(size_t)c * dim + d] = x[(size_t)far * dim + d];
            }
            size[c] = 1;
            assign[far] = c;
            dist[far] = 0.0;
        }
    }
    for (int c = 0; c < k; c++)
        for (int d = 0; d < dim; d++) centres[(size_t)c * dim + d] /= (double)size[c];
}

scfm_status scfm_eval_kmeans(const float *x, int64_t n, int dim, int k, int n_init, int max_iter, uint64_t seed,
                             int32_t *assign, double *inertia, scfm_error *err) {
    if (k < 1 || k > n || n_init < 1 || max_iter < 1 || dim < 1)
        return scfm_fail(err, SCFM_ERR_ARG, "k-means of %lld points into %d clusters (%d restarts, %d iterations)",
                         (long long)n, k, n_init, max_iter);
    double *centres = malloc(sizeof *centres * (size_t)k * (size_t)dim);
    double *dist = malloc(sizeof *dist * (size_t)n);
    int64_t *size = malloc(sizeof *size * (size_t)k);
    int32_t *current = malloc(sizeof *current * (size_t)n);
    if (!centres || !dist || !size || !current) {
        free(centres), free(dist), free(size), free(current);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for k-means of %lld points", (long long)n);
    }
    *inertia = INFINITY;
    for (int r = 0; r < n_init; r++) {
        kmeans_pp(x, n, dim, k, seed, r, centres, dist);
        for (int64_t i = 0; i < n; i++) current[i] = -1;
        for (int it = 0; it < max_iter; it++) {
            if (assign_points(x, n, dim, centres, k, current, dist) == 0 && it > 0) break;
            update_centres(x, n, dim, k, current, dist, centres, size);
        }
        assign_points(x, n, dim, centres, k, current, dist);
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += dist[i];
        if (sum < *inertia) {
            *inertia = sum;
            memcpy(assign, current, sizeof *assign * (size_t)n);
        }
    }
    free(centres), free(dist), free(size), free(current);
    return SCFM_OK;
}

/* ---- the distance pass: kNN accuracy, silhouette, LISI ---- */

typedef struct {
    const float *x;     /* centred, [n, dim] */
    const float *norm;  /* [n] squared norms */
    int64_t n;
    int dim;
    const int32_t *labels, *batches, *fold;
    const int64_t *label_size; /* [n_labels] */
    int n_labels, n_batches, k, lisi_k;
    double perplexity;
} pass;

/* Inserts (d, j) into the ascending list of the m nearest so far (of at most
 * cap); an equal distance keeps the earlier index first. */
static void keep_nearest(float d, int64_t j, float *dist, int64_t *idx, int *m, int cap) {
    if (*m == cap && d >= dist[cap - 1]) return;
    int p = *m < cap ? (*m)++ : cap - 1;
    while (p > 0 && dist[p - 1] > d) {
        dist[p] = dist[p - 1];
        idx[p] = idx[p - 1];
        p--;
    }
    dist[p] = d;
    idx[p] = j;
}

/* The Gaussian kernel's entropy H and weights P (normalised) at precision
 * beta over distances d[m], as scib's Hbeta. */
static double hbeta(const float *d, int m, double beta, double *p) {
    double sum = 0.0, weighted = 0.0;
    for (int j = 0; j < m; j++) {
        p[j] = exp(-(double)d[j] * beta);
        sum += p[j];
        weighted += (double)d[j] * p[j];
    }
    if (sum == 0.0) {
        for (int j = 0; j < m; j++) p[j] = 0.0;
        return 0.0;
    }
    for (int j = 0; j < m; j++) p[j] /= sum;
    return log(sum) + beta * weighted / sum;
}

/* LISI of one cell from the distances d[m] to its nearest neighbours and
 * their batches: 1 / Simpson's index of the batches under the kernel whose
 * perplexity is the target, found by scib's bisection on beta (50 tries,
 * tolerance 1e-5); -1 where the kernel's entropy is 0, as scib. */
static double lisi(const pass *ps, const float *d, const int64_t *idx, int m, double *p, double *share) {
    double beta = 1.0, lo = -INFINITY, hi = INFINITY, log_u = log(ps->perplexity);
    double h = hbeta(d, m, beta, p), diff = h - log_u;
    for (int tries = 0; fabs(diff) > 1e-5 && tries < 50; tries++) {
        if (diff > 0) {
            lo = beta;
            beta = isinf(hi) ? beta * 2.0 : 0.5 * (beta + hi);
        } else {
            hi = beta;
            beta = isinf(lo) ? beta / 2.0 : 0.5 * (beta + lo);
        }
        h = hbeta(d, m, beta, p);
        diff = h - log_u;
    }
    if (h == 0.0) return -1.0;
    for (int b = 0; b < ps->n_batches; b++) share[b] = 0.0;
    for (int j = 0; j < m; j++) share[ps->batches[idx[j]]] += p[j];
    double simpson = 0.0;
    for (int b = 0; b < ps->n_batches; b++) simpson += share[b] * share[b];
    return 1.0 / simpson;
}

/* The label most frequent among the neighbours, the lowest on a tie (as
 * scikit-learn's uniform-weight vote). */
static int32_t vote(const pass *ps, const int64_t *idx, int m, int64_t *count) {
    for (int l = 0; l < ps->n_labels; l++) count[l] = 0;
    for (int j = 0; j < m; j++) count[ps->labels[idx[j]]]++;
    int32_t best = 0;
    for (int l = 1; l < ps->n_labels; l++)
        if (count[l] > count[best]) best = l;
    return best;
}

/* Silhouette of cell i from the sums of its distances to each label. */
static double silhouette(const pass *ps, int64_t i, const double *sum) {
    int32_t own = ps->labels[i];
    if (ps->label_size[own] < 2) return 0.0; /* sklearn: 0 for a singleton label */
    double a = sum[own] / (double)(ps->label_size[own] - 1), b = INFINITY;
    for (int l = 0; l < ps->n_labels; l++)
        if (l != own && ps->label_size[l] > 0) b = fmin(b, sum[l] / (double)ps->label_size[l]);
    double top = fmax(a, b);
    return top > 0 ? (b - a) / top : 0.0;
}

/* Each row r of the block (cell first + r): d2[r, n] holds its squared
 * distances. Fills correct[i], sil[i] and lisi_of[i]. */
static void finish_rows(const pass *ps, int64_t first, int64_t rows, const float *d2, uint8_t *correct,
                        double *sil, double *lisi_of, int *failed) {
#pragma omp parallel
    {
        int cap = ps->k > ps->lisi_k ? ps->k : ps->lisi_k;
        float *knn_d = malloc(sizeof(float) * (size_t)(ps->k + ps->lisi_k));
        int64_t *knn_i = malloc(sizeof(int64_t) * (size_t)(ps->k + ps->lisi_k));
        double *scratch = malloc(sizeof(double) * (size_t)(cap + 2 * ps->n_labels + ps->n_batches + 1));
        if (!knn_d || !knn_i || !scratch) {
#pragma omp atomic write
            *failed = 1;
        }
#pragma omp for schedule(dynamic, 8)
        for (int64_t r = 0; r < rows; r++) {
            if (!knn_d || !knn_i || !scratch) continue;
            int64_t i = first + r;
            const float *row = d2 + (size_t)r * (size_t)ps->n;
            float *lisi_d = knn_d + ps->k;
            int64_t *lisi_i = knn_i + ps->k;
            /* scratch: kernel weights [cap], label sums [n_labels], votes
             * [n_labels], batch shares [n_batches] */
            double *p = scratch, *sum = scratch + cap, *share = sum + 2 * ps->n_labels;
            int64_t *count = (int64_t *)(sum + ps->n_labels);
            int m_knn = 0, m_lisi = 0;
            for (int l = 0; l < ps->n_labels; l++) sum[l] = 0.0;
            for (int64_t j = 0; j < ps->n; j++) {
                if (j == i) continue;
                float d = sqrtf(row[j]);
                sum[ps->labels[j]] += d;
                if (ps->fold[j] != ps->fold[i]) keep_nearest(d, j, knn_d, knn_i, &m_knn, ps->k);
                if (ps->lisi_k > 0) keep_nearest(d, j, lisi_d, lisi_i, &m_lisi, ps->lisi_k);
            }
            correct[i] = m_knn > 0 && vote(ps, knn_i, m_knn, count) == ps->labels[i];
            sil[i] = silhouette(ps, i, sum);
            if (ps->lisi_k > 0) lisi_of[i] = lisi(ps, lisi_d, lisi_i, m_lisi, p, share);
        }
        free(knn_d);
        free(knn_i);
        free(scratch);
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static scfm_status distance_pass(const pass *ps, scfm_eval_metrics *out, scfm_error *err) {
    int64_t n = ps->n;
    int64_t block = n < DISTANCE_BLOCK ? n : DISTANCE_BLOCK;
    float *d2 = malloc(sizeof *d2 * (size_t)block * (size_t)n);
    uint8_t *correct = malloc((size_t)n);
    double *sil = malloc(sizeof *sil * (size_t)n), *lisi_of = malloc(sizeof *lisi_of * (size_t)n);
    int failed = 0;
    scfm_status st = SCFM_OK;
    if (!d2 || !correct || !sil || !lisi_of)
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the distances of %lld cells", (long long)n);
    for (int64_t first = 0; st == SCFM_OK && first < n; first += block) {
        int64_t rows = n - first < block ? n - first : block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, ps->dim, -2.0f,
                    ps->x + (size_t)first * ps->dim, ps->dim, ps->x, ps->dim, 0.0f, d2, (int)n);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < n; j++) {
                float v = d2[(size_t)r * n + j] + ps->norm[first + r] + ps->norm[j];
                d2[(size_t)r * n + j] = v > 0.0f ? v : 0.0f;
            }
        finish_rows(ps, first, rows, d2, correct, sil, lisi_of, &failed);
        if (failed) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the neighbours of %lld cells", (long long)n);
    }
    if (st == SCFM_OK) {
        int64_t hits = 0, labels_present = 0;
        double sil_sum = 0.0;
        for (int64_t i = 0; i < n; i++) {
            hits += correct[i];
            sil_sum += sil[i];
        }
        for (int l = 0; l < ps->n_labels; l++) labels_present += ps->label_size[l] > 0;
        out->knn_accuracy = (double)hits / (double)n;
        out->silhouette = labels_present >= 2 && labels_present < n ? sil_sum / (double)n : NAN;
        out->ilisi = NAN;
        if (ps->lisi_k > 0) {
            qsort(lisi_of, (size_t)n, sizeof *lisi_of, cmp_double);
            double median = n % 2 ? lisi_of[n / 2] : 0.5 * (lisi_of[n / 2 - 1] + lisi_of[n / 2]);
            out->ilisi = (median - 1.0) / (double)(ps->n_batches - 1);
        }
    }
    free(d2), free(correct), free(sil), free(lisi_of);
    return st;
}

/* The batches present among the cells, relabelled 0.. in code order (scib
 * counts the batches it sees). */
static int compact_batches(const int32_t *batches, int64_t n, int n_batches, int32_t *out) {
    int32_t *map = malloc(sizeof *map * (size_t)(n_batches ? n_batches : 1));
    if (!map) return -1;
    for (int b = 0; b < n_batches; b++) map[b] = -1;
    for (int64_t i = 0; i < n; i++) map[batches[i]] = 0;
    int present = 0;
    for (int b = 0; b < n_batches; b++)
        if (map[b] == 0) map[b] = present++;
    for (int64_t i = 0; i < n; i++) out[i] = map[batches[i]];
    free(map);
    return present;
}

scfm_status scfm_eval_embedding(const float *x, int64_t n, int dim, const int32_t *labels, int n_labels,
                                const int32_t *batches, int n_batches, const int32_t *fold,
                                const scfm_eval_options *o, scfm_eval_metrics *out, int32_t *clusters,
                                scfm_error *err) {
    *out = (scfm_eval_metrics){NAN, NAN, NAN, NAN, NAN, NAN};
    if (n < 2 || dim < 1 || n_labels < 1 || o->k < 1 || o->folds < 2)
        return scfm_fail(err, SCFM_ERR_ARG, "evaluation of %lld cells x %d dimensions, %d labels, k %d, %d folds: "
                         "needs 2 cells, 1 dimension, 1 label, k >= 1 and 2 folds", (long long)n, dim, n_labels,
                         o->k, o->folds);
    scfm_status st = check_codes(labels, n_labels, n, "labels", err);
    if (st == SCFM_OK && batches) st = check_codes(batches, n_batches, n, "batches", err);
    if (st == SCFM_OK) st = check_codes(fold, o->folds, n, "folds", err);
    if (st != SCFM_OK) return st;

    float *xc = malloc(sizeof *xc * (size_t)n * (size_t)dim), *norm = malloc(sizeof *norm * (size_t)n);
    double *mean = calloc((size_t)dim, sizeof *mean);
    int64_t *label_size = calloc((size_t)n_labels, sizeof *label_size);
    int32_t *batch = batches ? malloc(sizeof *batch * (size_t)n) : NULL;
    if (!xc || !norm || !mean || !label_size || (batches && !batch)) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for an embedding of %lld cells", (long long)n);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        label_size[labels[i]]++;
        for (int d = 0; d < dim; d++) mean[d] += x[(size_t)i * dim + d];
    }
    for (int d = 0; d < dim; d++) mean[d] /= (double)n;
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int d = 0; d < dim; d++) {
            float v = (float)((double)x[(size_t)i * dim + d] - mean[d]);
            xc[(size_t)i * dim + d] = v;
            s += (double)v * v;
        }
        norm[i] = (float)s;
    }
    int present_batches = batch ? compact_batches(batches, n, n_batches, batch) : 0;
    if (present_batches < 0) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the batches");
        goto done;
    }
    int lisi_k = present_batches >= 2 ? (int)(o->lisi_k < n - 1 ? o->lisi_k : n - 1) : 0;
    if (lisi_k < 3) lisi_k = 0; /* the perplexity, lisi_k / 3 rounded down, must be at least 1 */
    pass ps = {.x = xc, .norm = norm, .n = n, .dim = dim, .labels = labels, .batches = batch, .fold = fold,
               .label_size = label_size, .n_labels = n_labels, .n_batches = present_batches,
               .k = o->k, .lisi_k = lisi_k, .perplexity = floor(lisi_k / 3.0)};
    st = distance_pass(&ps, out, err);

    int k = 0;
    for (int l = 0; l < n_labels; l++) k += label_size[l] > 0;
    if (st == SCFM_OK)
        st = scfm_eval_kmeans(xc, n, dim, k, o->kmeans_n_init, o->kmeans_max_iter, o->seed, clusters,
                              &out->kmeans_inertia, err);
    if (st == SCFM_OK) st = scfm_eval_ari(labels, n_labels, clusters, k, n, &out->ari, err);
    if (st == SCFM_OK) st = scfm_eval_nmi(labels, n_labels, clusters, k, n, &out->nmi, err);
done:
    free(xc), free(norm), free(mean), free(label_size), free(batch);
    return st;
}
