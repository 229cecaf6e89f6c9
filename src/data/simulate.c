/* A synthetic single-cell atlas with known truth (docs/simulate.md): cell
 * types with their own gene programmes, batches with gene-wise effects and
 * library shifts, negative-binomial counts with zero inflation, streamed into
 * an .h5ad a chunk of cells at a time.
 *
 * Every draw is Philox keyed by the seed, with counters that name what is
 * drawn (a gene's parameters, a cell's type, a (cell, gene) count), so a
 * chunk of cells comes out the same whatever the chunk size, the thread
 * count or the cells simulated before it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scfm/data.h"
#include "scfm/io.h"

/* Streams in the top byte of the fourth counter word; above the core's
 * SCFM_STREAM_* so that a data seed equal to a training seed draws
 * different numbers. */
enum {
    STREAM_GENE = 0x10,   /* (gene): baseline, dispersion */
    STREAM_MARKER,        /* (gene, type): marker or not, fold */
    STREAM_BATCH_GENE,    /* (gene, batch): gene-wise batch effect */
    STREAM_BATCH,         /* (batch): library shift */
    STREAM_TYPE,          /* (type): abundance */
    STREAM_CELL,          /* (cell): type, batch, library size */
    STREAM_COUNT          /* (cell, gene): the count, as many blocks as it needs */
};

/* Cell-genes per chunk: about 16k cells of 2,000 genes, a few hundred MB at
 * most even when every count is non-zero. */
#define CHUNK_ENTRIES ((int64_t)1 << 25)
#define CHUNK_MIN_CELLS 64
#define CHUNK_MAX_CELLS 65536
#define CHUNK_PIECES 64
#define CELL_PREFIX "cell_"
#define LABEL_BYTES 21 /* an int64 in decimal, its sign and the NUL */

void scfm_simulate_defaults(scfm_simulate_options *o) {
    *o = (scfm_simulate_options){
        .cells = 10000,
        .genes = 2000,
        .types = 8,
        .batches = 2,
        .seed = 0,
        .library_mean = 5000.0,
        .library_sdlog = 0.5,
        .baseline_sdlog = 1.0,
        .type_sdlog = 0.5,
        .marker_fraction = 0.07,
        .marker_fold_min = 2.0,
        .marker_fold_max = 8.0,
        .batch_sdlog = 0.3,
        .batch_library_sdlog = 0.2,
        .theta_min = 5.0,
        .theta_max = 10.0,
        .dropout_max = 0.4,
    };
}

static void draw(uint64_t seed, uint64_t a, uint32_t b, uint32_t stream, uint32_t out[4]) {
    uint32_t ctr[4] = {(uint32_t)a, (uint32_t)(a >> 32), b, stream << 24};
    scfm_philox(seed, ctr, out);
}

/* Uniform in the open interval (0, 1): logarithms and divisions stay finite. */
static double open01(uint32_t word) { return ((double)(word >> 8) + 0.5) * (1.0 / 16777216.0); }

/* The words of one (cell, gene) count: successive Philox blocks of its
 * counter, however many the rejection samplers ask for. */
typedef struct {
    uint64_t seed;
    uint32_t ctr[4], words[4];
    int used;
} word_stream;

static void stream_start(word_stream *s, uint64_t seed, int64_t cell, int gene) {
    *s = (word_stream){seed, {(uint32_t)cell, (uint32_t)((uint64_t)cell >> 32), (uint32_t)gene,
                              (uint32_t)STREAM_COUNT << 24}, {0}, 4};
}

static uint32_t next_word(word_stream *s) {
    if (s->used == 4) {
        scfm_philox(s->seed, s->ctr, s->words);
        s->ctr[3]++;
        s->used = 0;
    }
    return s->words[s->used++];
}

/* Gamma(shape, 1/shape), mean 1, for shape >= 1 (Marsaglia and Tsang, 2000);
 * d = shape - 1/3 and c = 1 / sqrt(9 d) come from the gene. */
static double gamma_mean1(word_stream *s, double d, double c) {
    for (;;) {
        double x, v;
        do {
            uint32_t w0 = next_word(s), w1 = next_word(s);
            x = scfm_normal(w0, w1);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = open01(next_word(s));
        if (u < 1.0 - 0.0331 * x * x * x * x || log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v / (d + 1.0 / 3.0);
    }
}

/* Poisson: inversion for small means, Hoermann's transformed rejection
 * (PTRS, 1993, as in NumPy) above, where inversion would walk too far. */
static int64_t poisson(word_stream *s, double lambda) {
    if (lambda < 10.0) {
        double u = open01(next_word(s)), p = exp(-lambda), cdf = p;
        int64_t k = 0;
        while (u > cdf && k < 1000) {
            k++;
            p *= lambda / (double)k;
            cdf += p;
        }
        return k;
    }
    double slam = sqrt(lambda), loglam = log(lambda);
    double b = 0.931 + 2.53 * slam, a = -0.059 + 0.02483 * b;
    double inv_alpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        double u = open01(next_word(s)) - 0.5, v = open01(next_word(s));
        double us = 0.5 - fabs(u);
        int64_t k = (int64_t)floor((2.0 * a / us + b) * u + lambda + 0.43);
        if (us >= 0.07 && v <= vr) return k;
        if (k < 0 || (us < 0.013 && v > us)) continue;
        int sign; /* lgamma_r: lgamma's sign global would be a data race across threads */
        double log_pmf = -lambda + (double)k * loglam - lgamma_r((double)k + 1.0, &sign);
        if (log(v) + log(inv_alpha) - log(a / (us * us) + b) <= log_pmf) return k;
    }
}

/* What the cells share: per-gene, per-type and per-batch draws; fold and
 * batch also go to varm as the truth. */
typedef struct {
    const scfm_simulate_options *o;
    float *programme;   /* [types][genes]: expected share of a cell's counts */
    float *fold;        /* [genes][types]: marker fold (1: not a marker), varm type_fold */
    float *batch;       /* [genes][batches]: gene-wise batch effect, varm batch_effect */
    double *shift;      /* [batches]: library-size factor */
    double *type_cdf;   /* [types]: cumulative abundance */
    double *gamma_d, *gamma_c, *dropout; /* [genes] */
} model;

static void model_free(model *m) {
    free(m->programme);
    free(m->fold);
    free(m->batch);
    free(m->shift);
    free(m->type_cdf);
    free(m->gamma_d);
    free(m->gamma_c);
    free(m->dropout);
}

static scfm_status model_build(model *m, const scfm_simulate_options *o, scfm_error *err) {
    const int G = o->genes, T = o->types, B = o->batches;
    *m = (model){.o = o};
    m->programme = malloc(sizeof(float) * (size_t)T * G);
    m->fold = malloc(sizeof(float) * (size_t)G * T);
    m->batch = malloc(sizeof(float) * (size_t)G * B);
    m->shift = malloc(sizeof(double) * (size_t)B);
    m->type_cdf = malloc(sizeof(double) * (size_t)T);
    m->gamma_d = malloc(sizeof(double) * (size_t)G);
    m->gamma_c = malloc(sizeof(double) * (size_t)G);
    m->dropout = malloc(sizeof(double) * (size_t)G);
    double *baseline = malloc(sizeof(double) * (size_t)G);
    if (!m->programme || !m->fold || !m->batch || !m->shift || !m->type_cdf || !m->gamma_d || !m->gamma_c ||
        !m->dropout || !baseline) {
        free(baseline);
        return scfm_fail(err, SCFM_ERR_NOMEM, "simulate: out of memory for %d genes x %d types", G, T);
    }
    const double log_fold_lo = log(o->marker_fold_min), log_fold_hi = log(o->marker_fold_max);
    uint32_t r[4];
    for (int g = 0; g < G; g++) {
        draw(o->seed, (uint64_t)g, 0, STREAM_GENE, r);
        baseline[g] = exp(o->baseline_sdlog * scfm_normal(r[0], r[1]));
        double theta = o->theta_min + (o->theta_max - o->theta_min) * open01(r[2]);
        m->gamma_d[g] = theta - 1.0 / 3.0;
        m->gamma_c[g] = 1.0 / sqrt(9.0 * m->gamma_d[g]);
        /* Weakly expressed genes drop out more, as in droplet data. */
        m->dropout[g] = o->dropout_max / (1.0 + baseline[g]);
        for (int t = 0; t < T; t++) {
            draw(o->seed, (uint64_t)g, (uint32_t)t, STREAM_MARKER, r);
            int marker = open01(r[0]) < o->marker_fraction;
            m->fold[(size_t)g * T + t] = marker ? (float)exp(log_fold_lo + (log_fold_hi - log_fold_lo) * open01(r[1]))
                                                : 1.0f;
        }
        for (int b = 0; b < B; b++) {
            draw(o->seed, (uint64_t)g, (uint32_t)b, STREAM_BATCH_GENE, r);
            double sd = o->batch_sdlog;
            m->batch[(size_t)g * B + b] = (float)exp(sd * scfm_normal(r[0], r[1]) - 0.5 * sd * sd);
        }
    }
    for (int t = 0; t < T; t++) {
        double total = 0.0;
        for (int g = 0; g < G; g++) total += baseline[g] * m->fold[(size_t)g * T + t];
        for (int g = 0; g < G; g++)
            m->programme[(size_t)t * G + g] = (float)(baseline[g] * m->fold[(size_t)g * T + t] / total);
        draw(o->seed, (uint64_t)t, 0, STREAM_TYPE, r);
        m->type_cdf[t] = exp(o->type_sdlog * scfm_normal(r[0], r[1])) + (t > 0 ? m->type_cdf[t - 1] : 0.0);
    }
    for (int t = 0; t < T; t++) m->type_cdf[t] /= m->type_cdf[T - 1];
    for (int b = 0; b < B; b++) {
        draw(o->seed, (uint64_t)b, 0, STREAM_BATCH, r);
        m->shift[b] = exp(o->batch_library_sdlog * scfm_normal(r[0], r[1]));
    }
    free(baseline);
    return SCFM_OK;
}

/* One cell: its type, batch and non-zero counts (genes ascending) into
 * genes/values, which have room for every gene; returns how many. */
static int simulate_cell(const model *m, int64_t cell, int32_t *type, int32_t *batch, int32_t *genes,
                         float *values) {
    const scfm_simulate_options *o = m->o;
    const int G = o->genes, B = o->batches;
    uint32_t r[4];
    draw(o->seed, (uint64_t)cell, 0, STREAM_CELL, r);
    double u = open01(r[0]);
    int t = 0;
    while (t < o->types - 1 && u >= m->type_cdf[t]) t++;
    int b = (int)(open01(r[1]) * B);
    double sd = o->library_sdlog;
    double library = o->library_mean * exp(sd * scfm_normal(r[2], r[3]) - 0.5 * sd * sd) * m->shift[b];
    *type = t;
    *batch = b;
    const float *share = m->programme + (size_t)t * G;
    int n = 0;
    for (int g = 0; g < G; g++) {
        word_stream s;
        stream_start(&s, o->seed, cell, g);
        if (open01(next_word(&s)) < m->dropout[g]) continue;
        double mean = library * share[g] * m->batch[(size_t)g * B + b];
        int64_t k = poisson(&s, mean * gamma_mean1(&s, m->gamma_d[g], m->gamma_c[g]));
        if (k == 0) continue;
        genes[n] = g;
        values[n++] = (float)k;
    }
    return n;
}

/* Consecutive cells of a chunk, simulated by one thread, in CSR form. */
typedef struct {
    scfm_cells_chunk x;
    int failed; /* out of memory */
} piece;

static int piece_reserve(piece *p, int64_t cells, int64_t nnz) {
    if (cells + 1 > p->x.cap_cells) {
        int64_t *indptr = realloc(p->x.indptr, sizeof(int64_t) * (size_t)(cells + 1));
        if (!indptr) return 0;
        p->x.indptr = indptr;
        p->x.cap_cells = cells + 1;
    }
    if (nnz > p->x.cap_nnz) {
        int64_t cap = nnz + nnz / 2;
        int32_t *genes = realloc(p->x.genes, sizeof(int32_t) * (size_t)cap);
        if (genes) p->x.genes = genes;
        float *values = genes ? realloc(p->x.values, sizeof(float) * (size_t)cap) : NULL;
        if (!values) return 0;
        p->x.values = values;
        p->x.cap_nnz = cap;
    }
    return 1;
}

static void simulate_piece(const model *m, piece *p, int64_t first, int64_t n, int32_t *types, int32_t *batches) {
    const int G = m->o->genes;
    p->x.first = first;
    p->x.n_cells = n;
    if (!piece_reserve(p, n, G)) {
        p->failed = 1;
        return;
    }
    p->x.indptr[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t nnz = p->x.indptr[i];
        if (!piece_reserve(p, n, nnz + G)) {
            p->failed = 1;
            return;
        }
        nnz += simulate_cell(m, first + i, &types[i], &batches[i], p->x.genes + nnz, p->x.values + nnz);
        p->x.indptr[i + 1] = nnz;
    }
}

static scfm_status check_options(const scfm_simulate_options *o, scfm_error *err) {
    struct {
        const char *name;
        double value, lo, hi;
    } limits[] = {
        {"cells", (double)o->cells, 1, SCFM_SIMULATE_MAX_CELLS},
        {"genes", o->genes, 1, SCFM_SIMULATE_MAX_GENES},
        {"types", o->types, 1, SCFM_SIMULATE_MAX_TYPES},
        {"batches", o->batches, 1, SCFM_SIMULATE_MAX_BATCHES},
        {"library_mean", o->library_mean, 1, 1e7},
        {"library_sdlog", o->library_sdlog, 0, 3},
        {"baseline_sdlog", o->baseline_sdlog, 0, 3},
        {"type_sdlog", o->type_sdlog, 0, 3},
        {"marker_fraction", o->marker_fraction, 0, 1},
        {"marker_fold_min", o->marker_fold_min, 1, o->marker_fold_max},
        {"marker_fold_max", o->marker_fold_max, 1, 1000},
        {"batch_sdlog", o->batch_sdlog, 0, 3},
        {"batch_library_sdlog", o->batch_library_sdlog, 0, 3},
        {"theta_min", o->theta_min, 1, o->theta_max}, /* the gamma sampler needs shape >= 1 */
        {"theta_max", o->theta_max, 1, 1e6},
        {"dropout_max", o->dropout_max, 0, 1},
    };
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++)
        if (!(limits[i].value >= limits[i].lo && limits[i].value <= limits[i].hi))
            return scfm_fail(err, SCFM_ERR_ARG, "simulate: %s = %g is outside [%g, %g]", limits[i].name,
                             limits[i].value, limits[i].lo, limits[i].hi);
    return SCFM_OK;
}

/* "type_0", ... in one allocation: n pointers followed by their text. */
static char **make_labels(const char *prefix, int64_t n, int width) {
    size_t stride = strlen(prefix) + LABEL_BYTES;
    char **labels = malloc((sizeof(char *) + stride) * (size_t)n);
    if (!labels) return NULL;
    char *text = (char *)(labels + n);
    for (int64_t i = 0; i < n; i++) {
        labels[i] = text + (size_t)i * stride;
        snprintf(labels[i], stride, "%s%0*lld", prefix, width, (long long)i);
    }
    return labels;
}

/* Writes the chunk [first, first + n): X from the pieces, obs columns and names. */
static scfm_status write_chunk(scfm_h5ad_writer *w, const model *m, piece *pieces, int n_pieces, int64_t first,
                               int64_t n, const int32_t *types, const int32_t *batches, char **names,
                               char *const *type_labels, char *const *batch_labels, scfm_error *err) {
    for (int p = 0; p < n_pieces; p++) {
        if (pieces[p].failed)
            return scfm_fail(err, SCFM_ERR_NOMEM, "simulate: out of memory for the counts of cells from %lld",
                             (long long)pieces[p].x.first);
        if (scfm_h5ad_append_x(w, &pieces[p].x, err) != SCFM_OK) return err->status;
    }
    if (scfm_h5ad_append_obs_categorical(w, "cell_type", (const char *const *)type_labels, m->o->types, types, n,
                                         err) != SCFM_OK ||
        scfm_h5ad_append_obs_categorical(w, "batch", (const char *const *)batch_labels, m->o->batches, batches, n,
                                         err) != SCFM_OK)
        return err->status;
    for (int64_t i = 0; i < n; i++)
        snprintf(names[i], strlen(CELL_PREFIX) + LABEL_BYTES, CELL_PREFIX "%lld", (long long)(first + i));
    return scfm_h5ad_append_obs_names(w, (const char *const *)names, n, err);
}

static scfm_status run(const model *m, scfm_h5ad_writer *w, scfm_simulate_progress_fn progress, void *user,
                       scfm_error *err) {
    const scfm_simulate_options *o = m->o;
    int64_t chunk = CHUNK_ENTRIES / o->genes;
    chunk = chunk < CHUNK_MIN_CELLS ? CHUNK_MIN_CELLS : chunk > CHUNK_MAX_CELLS ? CHUNK_MAX_CELLS : chunk;
    if (chunk > o->cells) chunk = o->cells;
    /* A fixed number of pieces, so that the file's layout (one append per
     * piece) does not depend on the thread count; more pieces than threads
     * even out cells of different depths. */
    const int n_pieces = CHUNK_PIECES;
    piece *pieces = calloc((size_t)n_pieces, sizeof(piece));
    int32_t *types = malloc(sizeof(int32_t) * (size_t)chunk);
    int32_t *batches = malloc(sizeof(int32_t) * (size_t)chunk);
    char **names = make_labels(CELL_PREFIX, chunk, 0);
    char **type_labels = make_labels("type_", o->types, 0);
    char **batch_labels = make_labels("batch_", o->batches, 0);
    scfm_status st = SCFM_OK;
    if (!pieces || !types || !batches || !names || !type_labels || !batch_labels)
        st = scfm_fail(err, SCFM_ERR_NOMEM, "simulate: out of memory for a chunk of %lld cells", (long long)chunk);
    const double start = scfm_now();
    for (int64_t first = 0; st == SCFM_OK && first < o->cells; first += chunk) {
        int64_t n = o->cells - first < chunk ? o->cells - first : chunk;
#pragma omp parallel for schedule(dynamic, 1)
        for (int p = 0; p < n_pieces; p++) {
            int64_t lo = n * p / n_pieces, hi = n * (p + 1) / n_pieces;
            simulate_piece(m, &pieces[p], first + lo, hi - lo, types + lo, batches + lo);
        }
        st = write_chunk(w, m, pieces, n_pieces, first, n, types, batches, names, type_labels, batch_labels, err);
        if (st == SCFM_OK && progress) {
            scfm_simulate_progress pr = {.cells_done = first + n, .cells = o->cells};
            pr.elapsed_s = scfm_now() - start;
            pr.cells_per_s = pr.elapsed_s > 0 ? (double)pr.cells_done / pr.elapsed_s : 0.0;
            pr.eta_s = pr.cells_per_s > 0 ? (double)(o->cells - pr.cells_done) / pr.cells_per_s : 0.0;
            progress(&pr, user);
        }
    }
    for (int p = 0; pieces && p < n_pieces; p++) scfm_cells_chunk_free(&pieces[p].x);
    free(pieces);
    free(types);
    free(batches);
    free(names);
    free(type_labels);
    free(batch_labels);
    return st;
}

scfm_status scfm_simulate(const scfm_simulate_options *o, const char *path, int force,
                          scfm_simulate_progress_fn progress, void *user, scfm_error *err) {
    if (check_options(o, err) != SCFM_OK) return err->status;
    struct stat info;
    if (stat(path, &info) == 0) {
        if (S_ISDIR(info.st_mode)) return scfm_fail(err, SCFM_ERR_ARG, "%s: is a directory", path);
        if (!force) return scfm_fail(err, SCFM_ERR_ARG, "%s: already exists (--force replaces it)", path);
    }
    model m;
    if (model_build(&m, o, err) != SCFM_OK) {
        model_free(&m);
        return err->status;
    }
    /* Zero-padded so that the ids sort in gene order. */
    char **gene_ids = make_labels("ENSG", o->genes, 11);
    scfm_h5ad_writer *w = NULL;
    scfm_status st = gene_ids ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "simulate: out of memory for gene ids");
    if (st == SCFM_OK) st = scfm_h5ad_create(path, o->cells, o->genes, (const char *const *)gene_ids, &w, err);
    if (st == SCFM_OK) st = scfm_h5ad_write_varm(w, "type_fold", o->types, m.fold, err);
    if (st == SCFM_OK) st = scfm_h5ad_write_varm(w, "batch_effect", o->batches, m.batch, err);
    if (st == SCFM_OK) st = run(&m, w, progress, user, err);
    if (st == SCFM_OK) {
        st = scfm_h5ad_finish(w, err);
    } else {
        scfm_h5ad_abort(w);
    }
    free(gene_ids);
    model_free(&m);
    return st;
}
