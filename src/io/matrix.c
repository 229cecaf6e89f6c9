/* Count matrices: format detection, the public scfm_matrix_* functions and
 * what every format shares (string tables, chunk storage, value checks, the
 * final pass that drops explicit zeros and sorts each cell's genes). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/h5util.h"
#include "io/matrix_impl.h"

int scfm_names_push(scfm_names *s, const char *str, size_t len) {
    len = strnlen(str, len);
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 64;
        size_t *grown = realloc(s->offsets, sizeof *grown * (size_t)cap);
        if (!grown) return 0;
        s->offsets = grown;
        s->cap = cap;
    }
    if (s->pool_len + len + 1 > s->pool_cap) {
        size_t cap = s->pool_cap ? 2 * s->pool_cap : 1024;
        while (cap < s->pool_len + len + 1) cap *= 2;
        char *grown = realloc(s->pool, cap);
        if (!grown) return 0;
        s->pool = grown;
        s->pool_cap = cap;
    }
    memcpy(s->pool + s->pool_len, str, len);
    s->pool[s->pool_len + len] = '\0';
    s->offsets[s->n++] = s->pool_len;
    s->pool_len += len + 1;
    return 1;
}

int scfm_names_finish(scfm_names *s) {
    s->at = malloc(sizeof *s->at * (size_t)(s->n ? s->n : 1));
    if (!s->at) return 0;
    for (int64_t i = 0; i < s->n; i++) s->at[i] = s->pool + s->offsets[i];
    free(s->offsets);
    s->offsets = NULL;
    return 1;
}

void scfm_names_free(scfm_names *s) {
    free(s->at);
    free(s->pool);
    free(s->offsets);
    memset(s, 0, sizeof *s);
}

scfm_status scfm_names_check(const char *path, scfm_names *names, const char *field, int64_t want,
                             const char *what, const char *shape_field, scfm_error *err) {
    if (names->n != want)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has %lld entries for the %lld %s of %s", path, field,
                         (long long)names->n, (long long)want, what, shape_field);
    if (!scfm_names_finish(names)) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", path, field);
    return SCFM_OK;
}

const char *scfm_value_problem(double v, int require_counts) {
    if (!isfinite(v)) return "is not finite";
    if (fabs(v) > FLT_MAX) return "does not fit in float32";
    if (require_counts && v < 0) return "is negative, not a count (require_counts)";
    if (require_counts && v != floor(v)) return "is not an integer count (require_counts)";
    return NULL;
}

static scfm_status reserve_cells(scfm_cells_chunk *c, int64_t n, const char *path, scfm_error *err) {
    if (c->indptr && n + 1 <= c->cap_cells) return SCFM_OK;
    int64_t *grown = realloc(c->indptr, sizeof *grown * (size_t)(n + 1));
    if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for a chunk of %lld cells", path, (long long)n);
    c->indptr = grown;
    c->cap_cells = n + 1;
    return SCFM_OK;
}

scfm_status scfm_chunk_reserve_nnz(scfm_cells_chunk *c, int64_t nnz, const char *path, scfm_error *err) {
    if (nnz <= c->cap_nnz && c->genes) return SCFM_OK;
    int64_t cap = c->cap_nnz > 0 ? c->cap_nnz : 1024;
    while (cap < nnz) cap *= 2;
    int32_t *genes = realloc(c->genes, sizeof *genes * (size_t)cap);
    if (genes) c->genes = genes;
    float *values = realloc(c->values, sizeof *values * (size_t)cap);
    if (values) c->values = values;
    if (!genes || !values)
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for %lld entries", path, (long long)nnz);
    c->cap_nnz = cap;
    return SCFM_OK;
}

void scfm_cells_chunk_free(scfm_cells_chunk *c) {
    if (!c) return;
    free(c->indptr);
    free(c->genes);
    free(c->values);
    memset(c, 0, sizeof *c);
}

typedef struct {
    int32_t gene;
    float value;
} entry;

static int compare_entries(const void *a, const void *b) {
    int32_t x = ((const entry *)a)->gene, y = ((const entry *)b)->gene;
    return (x > y) - (x < y);
}

/* Drops explicit zeros, sorts each cell's genes and rejects a gene twice in
 * one cell, so that every format hands out the same canonical CSR. */
static scfm_status finish_chunk(const scfm_matrix *m, scfm_cells_chunk *c, scfm_error *err) {
    int64_t *ip = c->indptr, w = 0, begin = ip[0];
    entry *sorted = NULL;
    int64_t sorted_cap = 0;
    scfm_status st = SCFM_OK;
    for (int64_t i = 0; st == SCFM_OK && i < c->n_cells; i++) {
        int64_t end = ip[i + 1], start = w;
        /* The usual cell, already canonical and in place, in one pass without
         * branches that the compiler vectorises. */
        int canonical = w == begin;
        for (int64_t k = begin; k < end; k++) canonical &= c->values[k] != 0;
        for (int64_t k = begin + 1; k < end; k++) canonical &= c->genes[k] > c->genes[k - 1];
        if (canonical) {
            ip[i] = start;
            w = begin = end;
            continue;
        }
        int ascending = 1;
        for (int64_t k = begin; k < end; k++) {
            if (c->values[k] == 0) continue;
            if (w > start && c->genes[k] <= c->genes[w - 1]) ascending = 0;
            c->genes[w] = c->genes[k];
            c->values[w++] = c->values[k];
        }
        ip[i] = start;
        begin = end;
        if (ascending) continue;
        int64_t len = w - start;
        if (len > sorted_cap) {
            free(sorted);
            sorted_cap = len;
            sorted = malloc(sizeof *sorted * (size_t)len);
            if (!sorted) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory sorting a cell", m->path);
                break;
            }
        }
        for (int64_t k = 0; k < len; k++) sorted[k] = (entry){c->genes[start + k], c->values[start + k]};
        qsort(sorted, (size_t)len, sizeof *sorted, compare_entries);
        for (int64_t k = 0; k < len; k++) {
            if (k > 0 && sorted[k].gene == sorted[k - 1].gene) {
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: gene %d appears twice in cell %lld", m->path,
                               m->entries_field, sorted[k].gene, (long long)(c->first + i));
                break;
            }
            c->genes[start + k] = sorted[k].gene;
            c->values[start + k] = sorted[k].value;
        }
    }
    free(sorted);
    ip[c->n_cells] = w;
    return st;
}

scfm_status scfm_matrix_read(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *chunk, scfm_error *err) {
    if (first < 0 || n < 0 || first > m->n_cells - n)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: cells [%lld, %lld) are outside the %lld cells", m->path,
                         (long long)first, (long long)(first + n), (long long)m->n_cells);
    scfm_status st = reserve_cells(chunk, n, m->path, err);
    if (st != SCFM_OK) return st;
    chunk->first = first;
    chunk->n_cells = n;
    chunk->indptr[0] = 0;
    st = m->ops->read(m, first, n, chunk, err);
    if (st == SCFM_OK) st = finish_chunk(m, chunk, err);
    if (st != SCFM_OK) {
        chunk->n_cells = 0; /* never hand out half a chunk */
        chunk->indptr[0] = 0;
    }
    return st;
}

static int compare_strings(const void *a, const void *b) {
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    int c = strcmp(x, y);
    return c ? c : (x > y) - (x < y); /* pool order is file order */
}

/* Position of s in names (the pointers ascend with the index). */
static int64_t name_index(const scfm_names *names, const char *s) {
    int64_t lo = 0, hi = names->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (names->at[mid] < s) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Gene ids must be unique (symbols need not be): names the duplicate whose
 * second occurrence comes first in the file. */
static scfm_status check_unique_ids(const scfm_matrix *m, scfm_error *err) {
    const scfm_names *ids = &m->gene_ids;
    const char **sorted = malloc(sizeof *sorted * (size_t)(ids->n ? ids->n : 1));
    if (!sorted) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory checking gene ids", m->path);
    memcpy(sorted, ids->at, sizeof *sorted * (size_t)ids->n);
    qsort(sorted, (size_t)ids->n, sizeof *sorted, compare_strings);
    const char *first = NULL, *second = NULL;
    for (int64_t i = 1; i < ids->n; i++)
        if (!strcmp(sorted[i], sorted[i - 1]) && (i == 1 || strcmp(sorted[i - 1], sorted[i - 2])) &&
            (!second || sorted[i] < second)) {
            first = sorted[i - 1];
            second = sorted[i];
        }
    free(sorted);
    if (!second) return SCFM_OK;
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: gene id \"%s\" appears twice (genes %lld and %lld)", m->path,
                     m->gene_id_field, first, (long long)name_index(ids, first), (long long)name_index(ids, second));
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* HDF5 files are told apart by their top-level objects; anything else is
 * Matrix Market when it is a directory, is named *.mtx[.gz] or starts like
 * one (gzip or the %%MatrixMarket banner). */
static scfm_status detect(const char *path, scfm_matrix_format *format, scfm_error *err) {
    struct stat st;
    if (stat(path, &st) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode) || has_suffix(path, ".mtx") || has_suffix(path, ".mtx.gz")) {
        *format = SCFM_MATRIX_MTX;
        return SCFM_OK;
    }
    unsigned char head[14] = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp) return scfm_fail(err, SCFM_ERR_IO, "%s: %s", path, strerror(errno));
    size_t got = fread(head, 1, sizeof head, fp);
    fclose(fp);
    if ((got >= 2 && head[0] == 0x1f && head[1] == 0x8b) || (got == sizeof head && !memcmp(head, "%%MatrixMarket", 14))) {
        *format = SCFM_MATRIX_MTX;
        return SCFM_OK;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: neither HDF5 (h5ad, 10x h5) nor Matrix Market", path);
    hid_t file;
    scfm_status s = scfm_h5_open_file(path, &file, err);
    if (s != SCFM_OK) return s;
    if (scfm_h5_kind(file, "matrix") != H5I_BADID) *format = SCFM_MATRIX_10X_H5;
    else if (scfm_h5_kind(file, "X") != H5I_BADID || scfm_h5_kind(file, "obs") != H5I_BADID ||
             scfm_h5_kind(file, "var") != H5I_BADID)
        *format = SCFM_MATRIX_H5AD;
    else *format = SCFM_MATRIX_10X_H5; /* per-genome groups (v2), checked when opened */
    H5Fclose(file);
    return SCFM_OK;
}

scfm_status scfm_matrix_open(const char *path, const scfm_matrix_options *opt, scfm_matrix **out,
                             scfm_error *err) {
    *out = NULL;
    static const scfm_matrix_options defaults = {SCFM_MATRIX_AUTO, 0, 0, 0};
    if (!opt) opt = &defaults;
    if ((unsigned)opt->format > SCFM_MATRIX_MTX)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: unknown matrix format %d", path, (int)opt->format);
    scfm_matrix *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    m->opt = *opt;
    m->format = opt->format;
    scfm_status st = m->format == SCFM_MATRIX_AUTO ? detect(path, &m->format, err) : SCFM_OK;
    if (st == SCFM_OK) {
        switch (m->format) {
        case SCFM_MATRIX_H5AD: st = scfm_h5ad_open(m, err); break;
        case SCFM_MATRIX_10X_H5: st = scfm_tenx_open(m, err); break;
        default: st = scfm_mtx_open(m, err); break;
        }
    }
    if (st == SCFM_OK && m->n_genes > INT32_MAX)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %lld genes; at most %d are supported", path, (long long)m->n_genes,
                       INT32_MAX);
    if (st == SCFM_OK) st = check_unique_ids(m, err);
    if (st != SCFM_OK) {
        scfm_matrix_close(m);
        return st;
    }
    *out = m;
    return SCFM_OK;
}

void scfm_matrix_close(scfm_matrix *m) {
    if (!m) return;
    if (m->ops) m->ops->close(m);
    scfm_names_free(&m->gene_ids);
    scfm_names_free(&m->gene_symbols);
    scfm_names_free(&m->cell_names);
    for (int i = 0; i < m->n_obs; i++) {
        free(m->obs[i].name);
        scfm_names_free(&m->obs[i].categories);
    }
    free(m->obs);
    free(m->path);
    free(m);
}

const char *scfm_matrix_path(const scfm_matrix *m) { return m->path; }
scfm_matrix_format scfm_matrix_get_format(const scfm_matrix *m) { return m->format; }
int64_t scfm_matrix_num_cells(const scfm_matrix *m) { return m->n_cells; }
int64_t scfm_matrix_num_genes(const scfm_matrix *m) { return m->n_genes; }

const char *scfm_matrix_gene_id(const scfm_matrix *m, int64_t gene) {
    return gene >= 0 && gene < m->n_genes ? m->gene_ids.at[gene] : NULL;
}

const char *scfm_matrix_gene_symbol(const scfm_matrix *m, int64_t gene) {
    if (gene < 0 || gene >= m->n_genes) return NULL;
    return m->gene_symbols.n ? m->gene_symbols.at[gene] : m->gene_ids.at[gene];
}

const char *scfm_matrix_cell_name(const scfm_matrix *m, int64_t cell) {
    return m->cell_names.n && cell >= 0 && cell < m->n_cells ? m->cell_names.at[cell] : NULL;
}

int scfm_matrix_num_obs_columns(const scfm_matrix *m) { return m->n_obs; }

const char *scfm_matrix_obs_column(const scfm_matrix *m, int i) {
    return i >= 0 && i < m->n_obs ? m->obs[i].name : NULL;
}

static int find_obs(const scfm_matrix *m, const char *column) {
    for (int i = 0; i < m->n_obs; i++)
        if (!strcmp(m->obs[i].name, column)) return i;
    return -1;
}

scfm_status scfm_matrix_obs_categories(scfm_matrix *m, const char *column, int *n_categories,
                                       const char *const **categories, scfm_error *err) {
    int i = find_obs(m, column);
    if (i < 0) return scfm_fail(err, SCFM_ERR_ARG, "%s: no categorical obs column \"%s\"", m->path, column);
    *n_categories = (int)m->obs[i].categories.n;
    *categories = m->obs[i].categories.at;
    return SCFM_OK;
}

scfm_status scfm_matrix_obs_codes(scfm_matrix *m, const char *column, int64_t first, int64_t n, int32_t *codes,
                                  scfm_error *err) {
    int i = find_obs(m, column);
    if (i < 0) return scfm_fail(err, SCFM_ERR_ARG, "%s: no categorical obs column \"%s\"", m->path, column);
    if (first < 0 || n < 0 || first > m->n_cells - n)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: cells [%lld, %lld) are outside the %lld cells", m->path,
                         (long long)first, (long long)(first + n), (long long)m->n_cells);
    return m->ops->obs_codes(m, i, first, n, codes, err);
}
