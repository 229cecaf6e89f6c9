/* The gene vocabulary: the token dictionary and the per-gene medians that
 * Geneformer's rank-value encoding divides by (docs/formats.md).
 *
 * Medians. An exact median over all non-zero values of a gene needs every
 * value in memory at once, which an atlas does not allow. Each rank instead
 * counts its values in a histogram of HIST_BINS bins, equally wide on a log
 * scale over [10^HIST_LOG_MIN, 10^HIST_LOG_MAX]; the ranks' histograms are
 * summed (integers, so the sum does not depend on the number of ranks), and
 * each order statistic is placed inside its bin by linear interpolation.
 * Both the estimate and the true value of an order statistic x lie in the
 * same bin, whose width is at most x (r - 1) with r = 10^(7/1024), so the
 * median is within 1.59% of numpy's exact one (for the mean of two order
 * statistics as well). Geneformer itself uses approximate (t-digest) medians.
 * A normalised value never exceeds target_sum = 10^4; values below 10^-3
 * (one count in a cell of more than 10^7) fall into the first bin and are
 * outside the bound. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

#define HIST_BINS 1024
#define HIST_LOG_MIN (-3.0)
#define HIST_LOG_MAX 4.0
#define READ_CHUNK 4096     /* cells per read */
#define REDUCE_GENES 1024   /* genes per histogram all-reduce */

/* ---- FNV-1a 64 ---- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv1a(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* ---- string -> token lookup (open addressing, linear probing) ---- */

struct scfm_gene_index {
    uint64_t mask;
    const char **keys;
    int64_t *values;
};

static void gene_index_free(scfm_gene_index *ix) {
    if (!ix) return;
    free(ix->keys);
    free(ix->values);
    free(ix);
}

static scfm_gene_index *gene_index_new(int64_t n) {
    scfm_gene_index *ix = calloc(1, sizeof *ix);
    uint64_t cap = 16;
    while (cap < 2 * (uint64_t)n) cap *= 2;
    if (ix) {
        ix->mask = cap - 1;
        ix->keys = calloc(cap, sizeof *ix->keys);
        ix->values = calloc(cap, sizeof *ix->values);
    }
    if (!ix || !ix->keys || !ix->values) {
        gene_index_free(ix);
        return NULL;
    }
    return ix;
}

/* The slot of key: where it is, or the empty slot where it would go. */
static uint64_t gene_index_slot(const scfm_gene_index *ix, const char *key) {
    uint64_t i = fnv1a(FNV_OFFSET, key, strlen(key)) & ix->mask;
    while (ix->keys[i] && strcmp(ix->keys[i], key)) i = (i + 1) & ix->mask;
    return i;
}

/* Grows the table when it is half full; keys are borrowed, never copied. */
static int gene_index_grow(scfm_gene_index *ix, int64_t count) {
    if ((uint64_t)count * 2 < ix->mask + 1) return 1;
    scfm_gene_index *bigger = gene_index_new(count + 1);
    if (!bigger) return 0;
    for (uint64_t i = 0; i <= ix->mask; i++)
        if (ix->keys[i]) {
            uint64_t j = gene_index_slot(bigger, ix->keys[i]);
            bigger->keys[j] = ix->keys[i];
            bigger->values[j] = ix->values[i];
        }
    free(ix->keys);
    free(ix->values);
    *ix = *bigger;
    free(bigger);
    return 1;
}

static int64_t gene_index_get(const scfm_gene_index *ix, const char *key) {
    uint64_t i = gene_index_slot(ix, key);
    return ix->keys[i] ? ix->values[i] : -1;
}

/* ---- the vocabulary ---- */

void scfm_vocab_free(scfm_vocab *v) {
    if (!v) return;
    for (int64_t g = 0; g < v->n_genes; g++) {
        if (v->gene_ids) free(v->gene_ids[g]);
        if (v->symbols) free(v->symbols[g]);
    }
    free(v->gene_ids);
    free(v->symbols);
    free(v->medians);
    free(v->n_nonzero);
    gene_index_free(v->by_id);
    gene_index_free(v->by_symbol);
    free(v);
}

int32_t scfm_vocab_find(const scfm_vocab *v, const char *name, int by_symbol) {
    int64_t value = gene_index_get(by_symbol ? v->by_symbol : v->by_id, name);
    return value < 0 ? (int32_t)value : (int32_t)(v->n_special + value);
}

static int has_separator(const char *s) { return strpbrk(s, "\t\n\r") != NULL; }

/* A growing string: the file's text is built in one, then hashed and written. */
typedef struct {
    char *data;
    size_t len, cap;
} text;

static int text_printf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int text_printf(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->data ? t->data + t->len : NULL, t->data ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) return 0;
        if (t->data && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return 1;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap <= t->len + (size_t)n) cap *= 2;
        char *grown = realloc(t->data, cap);
        if (!grown) return 0;
        t->data = grown;
        t->cap = cap;
    }
}

static const char *const VOCAB_MAGIC = "# scfm-vocab 1\n";
static const char *const VOCAB_COLUMNS = "# columns token_id gene_id symbol median n_cells_nonzero\n";

/* Everything but the first line and the hash line. */
static int render_body(const scfm_vocab *v, text *t) {
    int ok = text_printf(t, "# special <pad>=0 <mask>=1");
    if (v->cls >= 0) ok = ok && text_printf(t, " <cls>=%d", v->cls);
    if (v->eos >= 0) ok = ok && text_printf(t, " <eos>=%d", v->eos);
    ok = ok && text_printf(t, "\n# target_sum %.17g\n# cells %lld\n# genes %lld\n%s", v->target_sum,
                           (long long)v->n_cells, (long long)v->n_genes, VOCAB_COLUMNS);
    for (int64_t g = 0; ok && g < v->n_genes; g++)
        ok = text_printf(t, "%lld\t%s\t%s\t%.17g\t%lld\n", (long long)(v->n_special + g), v->gene_ids[g],
                         v->symbols[g], v->medians[g], (long long)v->n_nonzero[g]);
    return ok;
}

static uint64_t body_hash(const char *body, size_t n) {
    return fnv1a(fnv1a(FNV_OFFSET, VOCAB_MAGIC, strlen(VOCAB_MAGIC)), body, n);
}

static scfm_status build_indexes(scfm_vocab *v, scfm_error *err) {
    v->by_id = gene_index_new(v->n_genes);
    v->by_symbol = gene_index_new(v->n_genes);
    if (!v->by_id || !v->by_symbol) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the vocabulary index");
    for (int64_t g = 0; g < v->n_genes; g++) {
        uint64_t i = gene_index_slot(v->by_id, v->gene_ids[g]);
        v->by_id->keys[i] = v->gene_ids[g];
        v->by_id->values[i] = g;
        /* A symbol shared by several genes cannot pick one of them. */
        i = gene_index_slot(v->by_symbol, v->symbols[g]);
        v->by_symbol->values[i] = v->by_symbol->keys[i] ? -2 : g;
        v->by_symbol->keys[i] = v->symbols[g];
    }
    return SCFM_OK;
}

static scfm_vocab *vocab_alloc(int cls, int eos, int64_t n_genes) {
    scfm_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->n_special = 2 + (cls != 0) + (eos != 0);
    v->cls = cls ? 2 : -1;
    v->eos = eos ? 2 + (cls != 0) : -1;
    v->target_sum = SCFM_VOCAB_TARGET_SUM;
    v->gene_ids = calloc((size_t)n_genes + 1, sizeof(char *));
    v->symbols = calloc((size_t)n_genes + 1, sizeof(char *));
    v->medians = calloc((size_t)n_genes + 1, sizeof(double));
    v->n_nonzero = calloc((size_t)n_genes + 1, sizeof(int64_t));
    if (!v->gene_ids || !v->symbols || !v->medians || !v->n_nonzero) {
        scfm_vocab_free(v);
        return NULL;
    }
    return v;
}

typedef struct {
    const char *id;
    int64_t index;
} gene_order;

static int by_id(const void *a, const void *b) {
    return strcmp(((const gene_order *)a)->id, ((const gene_order *)b)->id);
}

scfm_status scfm_vocab_create(int cls, int eos, int64_t n_genes, const char *const *gene_ids,
                              const char *const *symbols, const double *medians, const int64_t *n_nonzero,
                              int64_t n_cells, scfm_vocab **out, scfm_error *err) {
    *out = NULL;
    if (n_genes < 1) return scfm_fail(err, SCFM_ERR_ARG, "a vocabulary needs at least one gene");
    scfm_vocab *v = vocab_alloc(cls, eos, n_genes);
    gene_order *order = malloc(sizeof(gene_order) * (size_t)n_genes);
    if (!v || !order) {
        scfm_vocab_free(v);
        free(order);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a vocabulary of %lld genes", (long long)n_genes);
    }
    v->n_cells = n_cells;
    for (int64_t g = 0; g < n_genes; g++) order[g] = (gene_order){gene_ids[g], g};
    qsort(order, (size_t)n_genes, sizeof *order, by_id);
    scfm_status st = SCFM_OK;
    for (int64_t g = 0; g < n_genes && st == SCFM_OK; g++) {
        int64_t k = order[g].index;
        const char *symbol = symbols && symbols[k] && symbols[k][0] ? symbols[k] : gene_ids[k];
        if (!gene_ids[k][0] || has_separator(gene_ids[k]) || has_separator(symbol))
            st = scfm_fail(err, SCFM_ERR_ARG, "gene '%s' (symbol '%s'): ids and symbols must be non-empty and "
                           "hold no tab or line break", gene_ids[k], symbol);
        else if (g > 0 && !strcmp(gene_ids[k], v->gene_ids[g - 1]))
            st = scfm_fail(err, SCFM_ERR_ARG, "gene id '%s' appears twice", gene_ids[k]);
        else if (!(medians[k] > 0.0) || !isfinite(medians[k]))
            st =
                scfm_fail(err, SCFM_ERR_ARG, "gene '%s': the median must be positive, not %g", gene_ids[k], medians[k]);
        if (st != SCFM_OK) break;
        v->n_genes = g + 1;
        v->gene_ids[g] = strdup(gene_ids[k]);
        v->symbols[g] = strdup(symbol);
        v->medians[g] = medians[k];
        v->n_nonzero[g] = n_nonzero[k];
        if (!v->gene_ids[g] || !v->symbols[g]) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for gene names");
    }
    free(order);
    text body = {0};
    if (st == SCFM_OK) st = build_indexes(v, err);
    if (st == SCFM_OK && !render_body(v, &body))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory rendering the vocabulary");
    if (st == SCFM_OK) v->hash = body_hash(body.data, body.len);
    free(body.data);
    if (st != SCFM_OK) {
        scfm_vocab_free(v);
        return st;
    }
    *out = v;
    return SCFM_OK;
}

scfm_status scfm_vocab_write(const scfm_vocab *v, const char *dir, int force, scfm_error *err) {
    text body = {0};
    if (!render_body(v, &body)) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory rendering the vocabulary");
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    scfm_status st = scfm_path_join(path, sizeof path, tmp, SCFM_VOCAB_FILE, err);
    if (st == SCFM_OK) st = scfm_output_dir_begin(dir, force, err);
    if (st != SCFM_OK) {
        free(body.data);
        return st;
    }
    FILE *f = fopen(path, "w");
    int ok = f && fputs(VOCAB_MAGIC, f) >= 0 &&
             fprintf(f, "# hash fnv1a64 %016llx\n", (unsigned long long)body_hash(body.data, body.len)) > 0 &&
             fwrite(body.data, 1, body.len, f) == body.len;
    if (f && fclose(f) != 0) ok = 0;
    free(body.data);
    if (!ok) {
        scfm_output_dir_discard(dir);
        return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    }
    return scfm_output_dir_commit(dir, err);
}

/* ---- reading ---- */

static char *read_whole(const char *path, size_t *n, scfm_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            cap = cap ? 2 * cap : 1 << 20;
            char *grown = realloc(data, cap);
            if (!grown) {
                free(data);
                fclose(f);
                scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
                return NULL;
            }
            data = grown;
        }
        size_t got = fread(data + len, 1, 65536, f);
        len += got;
        if (got < 65536) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        scfm_fail(err, SCFM_ERR_IO, "%s: read error", path);
        return NULL;
    }
    data[len] = '\0';
    *n = len;
    return data;
}

/* Splits a row in place at tabs into exactly n fields. */
static int split_fields(char *line, char **fields, int n) {
    for (int i = 0; i < n; i++) {
        fields[i] = line;
        char *tab = strchr(line, '\t');
        if (i == n - 1) return tab == NULL;
        if (!tab) return 0;
        *tab = '\0';
        line = tab + 1;
    }
    return 1;
}

static int parse_i64(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno || end == s || *end) return 0;
    *out = x;
    return 1;
}

static int parse_f64(const char *s, double *out) {
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(x)) return 0;
    *out = x;
    return 1;
}

/* "# special <pad>=0 <mask>=1[ <cls>=2][ <eos>=N]" */
static int parse_special(const char *s, int *cls, int *eos) {
    *cls = strstr(s, "<cls>=2") != NULL;
    *eos = 0;
    char expect[64];
    snprintf(expect, sizeof expect, "<pad>=0 <mask>=1%s", *cls ? " <cls>=2" : "");
    size_t n = strlen(expect);
    if (strncmp(s, expect, n)) return 0;
    if (!s[n]) return 1;
    snprintf(expect, sizeof expect, " <eos>=%d", *cls ? 3 : 2);
    *eos = 1;
    return !strcmp(s + n, expect);
}

scfm_status scfm_vocab_read(const char *dir, scfm_vocab **out, scfm_error *err) {
    *out = NULL;
    char path[4096];
    if (scfm_path_join(path, sizeof path, dir, SCFM_VOCAB_FILE, err) != SCFM_OK) return err->status;
    size_t len = 0;
    char *data = read_whole(path, &len, err);
    if (!data) return err->status;
    /* Hash every line but the hash line, as the writer did. */
    uint64_t hash = FNV_OFFSET, stated = 0;
    int have_hash = 0, have_special = 0, cls = 0, eos = 0, columns = 0;
    int64_t n_genes = -1, n_cells = -1, line_no = 0, rows = 0;
    double target_sum = 0.0;
    scfm_vocab *v = NULL;
    scfm_status st = SCFM_OK;
    char *line = data;
    if (strncmp(data, VOCAB_MAGIC, strlen(VOCAB_MAGIC)))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: not an scfm vocabulary (the first line must be '%.*s')", path,
                       (int)strlen(VOCAB_MAGIC) - 1, VOCAB_MAGIC);
    while (st == SCFM_OK && *line) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: the last line is not terminated (truncated file?)", path);
            break;
        }
        line_no++;
        int is_hash = !strncmp(line, "# hash ", 7);
        if (!is_hash) hash = fnv1a(hash, line, (size_t)(nl - line + 1));
        *nl = '\0';
        unsigned long long h = 0;
        if (is_hash) {
            char extra;
            if (sscanf(line, "# hash fnv1a64 %16llx%c", &h, &extra) != 1 || strlen(line) != 31)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: the hash line must be '# hash fnv1a64 <16 hex digits>'",
                               path, (long long)line_no);
            stated = h;
            have_hash = 1;
        } else if (!strncmp(line, "# special ", 10)) {
            have_special = parse_special(line + 10, &cls, &eos);
            if (!have_special)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: special tokens must be '<pad>=0 <mask>=1' then "
                               "optionally <cls>=2 and <eos> next", path, (long long)line_no);
        } else if (!strncmp(line, "# target_sum ", 13)) {
            if (!parse_f64(line + 13, &target_sum) || target_sum <= 0.0)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: target_sum must be a positive number", path,
                               (long long)line_no);
        } else if (!strncmp(line, "# cells ", 8)) {
            if (!parse_i64(line + 8, &n_cells) || n_cells < 0)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: cells must be a count", path, (long long)line_no);
        } else if (!strncmp(line, "# genes ", 8)) {
            if (!parse_i64(line + 8, &n_genes) || n_genes < 1)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: genes must be a positive count", path,
                               (long long)line_no);
        } else if (!strncmp(line, "# columns ", 10)) {
            columns = !strncmp(line, VOCAB_COLUMNS, strlen(VOCAB_COLUMNS) - 1) && !line[strlen(VOCAB_COLUMNS) - 1];
            if (!columns)
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: the columns must be '%.*s'", path, (long long)line_no,
                               (int)strlen(VOCAB_COLUMNS) - 11, VOCAB_COLUMNS + 10);
        } else if (line[0] != '#') {
            if (!v) {
                if (!have_special || n_genes < 0 || n_cells < 0 || target_sum <= 0.0 || !columns) {
                    st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: a gene row before the special, target_sum, cells, "
                                   "genes and columns lines", path, (long long)line_no);
                    break;
                }
                v = vocab_alloc(cls, eos, n_genes);
                if (!v) {
                    st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for %lld genes", path, (long long)n_genes);
                    break;
                }
                v->target_sum = target_sum;
                v->n_cells = n_cells;
            }
            char *f[5];
            int64_t token = 0;
            if (rows >= n_genes) {
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: more gene rows than the %lld of the genes line", path,
                               (long long)line_no, (long long)n_genes);
            } else if (!split_fields(line, f, 5)) {
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: a gene row has 5 tab-separated fields", path,
                               (long long)line_no);
            } else if (!parse_i64(f[0], &token) || token != v->n_special + rows) {
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: token_id must be %lld", path, (long long)line_no,
                               (long long)(v->n_special + rows));
            } else if (!f[1][0] || (rows > 0 && strcmp(v->gene_ids[rows - 1], f[1]) >= 0)) {
                st = scfm_fail(err, SCFM_ERR_FORMAT,
                               "%s:%lld: gene_id '%s' is empty or not after '%s' (the rows are "
                               "sorted by gene id)",
                               path, (long long)line_no, f[1], rows > 0 ? v->gene_ids[rows - 1] : "");
            } else if (!f[2][0] || !parse_f64(f[3], &v->medians[rows]) || v->medians[rows] <= 0.0 ||
                       !parse_i64(f[4], &v->n_nonzero[rows]) || v->n_nonzero[rows] < 0) {
                st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: gene '%s': symbol must be non-empty, median a positive "
                               "number and n_cells_nonzero a count", path, (long long)line_no, f[1]);
            } else {
                v->gene_ids[rows] = strdup(f[1]);
                v->symbols[rows] = strdup(f[2]);
                v->n_genes = ++rows;
                if (!v->gene_ids[rows - 1] || !v->symbols[rows - 1])
                    st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
            }
        }
        line = nl + 1;
    }
    free(data);
    if (st == SCFM_OK && (!v || rows != n_genes))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %lld gene rows, but the genes line says %lld", path, (long long)rows,
                       (long long)n_genes);
    if (st == SCFM_OK && !have_hash) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: no '# hash' line", path);
    if (st == SCFM_OK && hash != stated)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: content hash %016llx differs from the recorded %016llx (the file "
                       "was edited or damaged)", path, (unsigned long long)hash, (unsigned long long)stated);
    if (st == SCFM_OK) {
        v->hash = hash;
        st = build_indexes(v, err);
    }
    if (st != SCFM_OK) {
        scfm_vocab_free(v);
        return st;
    }
    *out = v;
    return SCFM_OK;
}

/* ---- the inputs as one sequence of cells ---- */

scfm_status scfm_corpus_open(scfm_corpus *c, const char *const *paths, int n_inputs,
                             const scfm_matrix_options *opt,
                             scfm_status (*visit)(void *user, int input, scfm_matrix *m, scfm_error *err),
                             void *user, scfm_error *err) {
    memset(c, 0, sizeof *c);
    c->current = -1;
    c->n_inputs = n_inputs;
    c->paths = paths;
    c->opt = *opt;
    if (n_inputs < 1) return scfm_fail(err, SCFM_ERR_ARG, "no input files");
    c->first = calloc((size_t)n_inputs + 1, sizeof(int64_t));
    if (!c->first) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int k = 0; k < n_inputs; k++) {
        scfm_matrix *m = NULL;
        scfm_status st = scfm_matrix_open(paths[k], opt, &m, err);
        if (st == SCFM_OK && visit) st = visit(user, k, m, err);
        if (st == SCFM_OK) c->first[k + 1] = c->first[k] + scfm_matrix_num_cells(m);
        scfm_matrix_close(m);
        if (st != SCFM_OK) return st;
    }
    return SCFM_OK;
}

void scfm_corpus_close(scfm_corpus *c) {
    scfm_matrix_close(c->m);
    free(c->first);
    memset(c, 0, sizeof *c);
    c->current = -1;
}

/* The last input that starts at or before cell, which is never one without cells. */
int scfm_corpus_input(const scfm_corpus *c, int64_t cell) {
    int lo = 0, hi = c->n_inputs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (c->first[mid] <= cell) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

scfm_status scfm_corpus_select(scfm_corpus *c, int k, int *opened, scfm_error *err) {
    *opened = 0;
    if (k == c->current) return SCFM_OK;
    scfm_matrix_close(c->m);
    c->m = NULL;
    c->current = -1;
    scfm_status st = scfm_matrix_open(c->paths[k], &c->opt, &c->m, err);
    if (st != SCFM_OK) return st;
    if (scfm_matrix_num_cells(c->m) != c->first[k + 1] - c->first[k])
        return scfm_fail(err, SCFM_ERR_IO, "%s: changed while being read (%lld cells, %lld before)", c->paths[k],
                         (long long)scfm_matrix_num_cells(c->m), (long long)(c->first[k + 1] - c->first[k]));
    c->current = k;
    *opened = 1;
    return SCFM_OK;
}

scfm_status scfm_corpus_cell_total(const scfm_corpus *c, int k, const scfm_cells_chunk *chunk, int64_t i,
                                   double *total, scfm_error *err) {
    *total = 0.0;
    for (int64_t e = chunk->indptr[i]; e < chunk->indptr[i + 1]; e++) {
        if (!(chunk->values[e] >= 0.0f) || !isfinite(chunk->values[e]))
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cell %lld has the value %g; counts must be finite and "
                             "non-negative", c->paths[k], (long long)(chunk->first + i), chunk->values[e]);
        *total += chunk->values[e];
    }
    return SCFM_OK;
}

/* ---- building the vocabulary ---- */

/* The union of the inputs' genes, in order of first appearance (an input
 * lists each gene id once: the readers check it). */
typedef struct {
    scfm_gene_index *index;  /* gene id -> position; keys are ids[] */
    char **ids, **symbols;
    int64_t n, cap;
} gene_union;

static void gene_union_free(gene_union *u) {
    for (int64_t i = 0; i < u->n; i++) {
        free(u->ids[i]);
        free(u->symbols[i]);
    }
    free(u->ids);
    free(u->symbols);
    gene_index_free(u->index);
}

static scfm_status gene_union_add(void *user, int input, scfm_matrix *m, scfm_error *err) {
    (void)input;
    gene_union *u = user;
    int64_t n_genes = scfm_matrix_num_genes(m);
    const char *path = scfm_matrix_path(m);
    for (int64_t j = 0; j < n_genes; j++) {
        const char *id = scfm_matrix_gene_id(m, j);
        const char *symbol = scfm_matrix_gene_symbol(m, j);
        if (!id || !id[0]) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: gene %lld has no id", path, (long long)j);
        if (u->n == u->cap) {
            int64_t cap = u->cap ? 2 * u->cap : 4096;
            char **ids = realloc(u->ids, sizeof(char *) * (size_t)cap);
            if (ids) u->ids = ids;
            char **symbols = realloc(u->symbols, sizeof(char *) * (size_t)cap);
            if (symbols) u->symbols = symbols;
            if (!ids || !symbols) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for gene names");
            u->cap = cap;
        }
        if (!gene_index_grow(u->index, u->n + 1)) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for gene names");
        uint64_t slot = gene_index_slot(u->index, id);
        if (u->index->keys[slot]) continue;
        int64_t g = u->n;
        u->ids[g] = strdup(id);
        u->symbols[g] = strdup(symbol && symbol[0] ? symbol : id);
        if (!u->ids[g] || !u->symbols[g]) {
            free(u->ids[g]);
            free(u->symbols[g]);
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for gene names");
        }
        u->index->keys[slot] = u->ids[g];
        u->index->values[slot] = g;
        u->n++;
    }
    return SCFM_OK;
}

static int hist_bin(double v) {
    double b = floor((log10(v) - HIST_LOG_MIN) * (HIST_BINS / (HIST_LOG_MAX - HIST_LOG_MIN)));
    return b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : (int)b;
}

static double hist_edge(int b) { return pow(10.0, HIST_LOG_MIN + b * ((HIST_LOG_MAX - HIST_LOG_MIN) / HIST_BINS)); }

/* The k-th smallest value (from 0), spread evenly inside its bin. */
static double hist_order_statistic(const int64_t *h, int64_t k) {
    int64_t below = 0;
    for (int b = 0; b < HIST_BINS; b++) {
        if (below + h[b] > k) {
            double lo = hist_edge(b), hi = hist_edge(b + 1);
            return lo + (hi - lo) * ((double)(k - below) + 0.5) / (double)h[b];
        }
        below += h[b];
    }
    return hist_edge(HIST_BINS);
}

static double hist_median(const int64_t *h, int64_t n) {
    if (n % 2) return hist_order_statistic(h, n / 2);
    return 0.5 * (hist_order_statistic(h, n / 2 - 1) + hist_order_statistic(h, n / 2));
}

/* This rank's share of the cells into the histograms and non-zero counts.
 * Each chunk's values are put in gene order first, so that a gene's
 * histogram row stays in cache while its values go in; a value at a time, in
 * cell order, would miss the cache on nearly every value. */
static scfm_status count_cells(scfm_corpus *c, int64_t lo, int64_t hi, const gene_union *u, uint32_t *hist,
                               int64_t *nonzero, int64_t *cells_empty, scfm_error *err) {
    scfm_cells_chunk chunk = {0};
    int64_t *column_gene = NULL, *at = calloc((size_t)u->n + 1, sizeof(int64_t)), cap = 0;
    uint16_t *bins = NULL, *by_gene = NULL;
    scfm_status st = at ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int64_t cell = lo; cell < hi && st == SCFM_OK;) {
        int k = scfm_corpus_input(c, cell), opened = 0;
        if ((st = scfm_corpus_select(c, k, &opened, err)) != SCFM_OK) break;
        if (opened) {
            int64_t n_genes = scfm_matrix_num_genes(c->m);
            free(column_gene);
            column_gene = malloc(sizeof(int64_t) * (size_t)(n_genes + 1));
            if (!column_gene) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
                break;
            }
            for (int64_t j = 0; j < n_genes; j++)
                column_gene[j] = gene_index_get(u->index, scfm_matrix_gene_id(c->m, j));
        }
        int64_t n = hi < c->first[k + 1] ? hi - cell : c->first[k + 1] - cell;
        if (n > READ_CHUNK) n = READ_CHUNK;
        if ((st = scfm_matrix_read(c->m, cell - c->first[k], n, &chunk, err)) != SCFM_OK) break;
        const int64_t nnz = chunk.indptr[n];
        if (nnz > cap) {
            cap = nnz;
            free(bins);
            free(by_gene);
            bins = malloc(sizeof(uint16_t) * (size_t)cap);
            by_gene = malloc(sizeof(uint16_t) * (size_t)cap);
            if (!bins || !by_gene) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a chunk of %lld values", (long long)nnz);
                break;
            }
        }
        /* the bin of each value, and how many values each gene has (at[g + 1]) */
        for (int64_t i = 0; i < n && st == SCFM_OK; i++) {
            double total = 0.0;
            if ((st = scfm_corpus_cell_total(c, k, &chunk, i, &total, err)) != SCFM_OK) break;
            if (total <= 0.0) (*cells_empty)++; /* and it has no values */
            for (int64_t e = chunk.indptr[i]; e < chunk.indptr[i + 1]; e++) {
                bins[e] = (uint16_t)hist_bin((double)chunk.values[e] / total * SCFM_VOCAB_TARGET_SUM);
                at[column_gene[chunk.genes[e]] + 1]++;
            }
        }
        if (st != SCFM_OK) break;
        for (int64_t g = 0; g < u->n; g++) at[g + 1] += at[g];
        for (int64_t e = 0; e < nnz; e++) by_gene[at[column_gene[chunk.genes[e]]]++] = bins[e];
        /* at[g] is now where gene g's values end */
        for (int64_t g = 0, start = 0; g < u->n; start = at[g++]) {
            for (int64_t j = start; j < at[g]; j++) hist[g * HIST_BINS + by_gene[j]]++;
            nonzero[g] += at[g] - start;
        }
        memset(at, 0, sizeof(int64_t) * ((size_t)u->n + 1));
        cell += n;
    }
    free(bins);
    free(by_gene);
    free(at);
    free(column_gene);
    scfm_cells_chunk_free(&chunk);
    return st;
}

scfm_status scfm_vocab_build(scfm_comm *comm, const char *const *inputs, int n_inputs,
                             const scfm_vocab_options *opt, scfm_vocab **out, scfm_vocab_report *report,
                             scfm_error *err) {
    *out = NULL;
    memset(report, 0, sizeof *report);
    if (opt->min_cells < 1) return scfm_fail(err, SCFM_ERR_ARG, "min_cells must be at least 1");
    gene_union u = {0};
    scfm_corpus corpus;
    uint32_t *hist = NULL;
    int64_t *nonzero = NULL, *block = NULL, empty = 0;
    double *medians = NULL;
    const char **kept_ids = NULL, **kept_symbols = NULL;
    int64_t *kept_nonzero = NULL;
    scfm_status st = (u.index = gene_index_new(4096)) ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (st == SCFM_OK) st = scfm_corpus_open(&corpus, inputs, n_inputs, &opt->matrix, gene_union_add, &u, err);
    else memset(&corpus, 0, sizeof corpus);
    if (st == SCFM_OK) {
        hist = calloc((size_t)u.n * HIST_BINS, sizeof(uint32_t));
        nonzero = calloc((size_t)u.n, sizeof(int64_t));
        block = malloc(sizeof(int64_t) * REDUCE_GENES * HIST_BINS);
        medians = calloc((size_t)u.n, sizeof(double));
        if (!hist || !nonzero || !block || !medians)
            st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the histograms of %lld genes (%lld MiB)",
                           (long long)u.n, (long long)(u.n * HIST_BINS * 4 >> 20));
    }
    const int rank = scfm_comm_rank(comm), size = scfm_comm_size(comm);
    const int64_t n_cells = corpus.first ? corpus.first[n_inputs] : 0;
    if (st == SCFM_OK)
        st = count_cells(&corpus, n_cells * rank / size, n_cells * (rank + 1) / size, &u, hist, nonzero, &empty, err);
    st = scfm_comm_agree(comm, st, err);
    if (st == SCFM_OK) st = scfm_comm_sum_i64(comm, &empty, 1, err);
    if (st == SCFM_OK) st = scfm_comm_sum_i64(comm, nonzero, (size_t)u.n, err);
    /* Histograms travel in blocks of genes, as int64, so the sum cannot overflow. */
    for (int64_t g0 = 0; st == SCFM_OK && g0 < u.n; g0 += REDUCE_GENES) {
        int64_t ng = u.n - g0 < REDUCE_GENES ? u.n - g0 : REDUCE_GENES;
        for (int64_t i = 0; i < ng * HIST_BINS; i++) block[i] = hist[g0 * HIST_BINS + i];
        st = scfm_comm_sum_i64(comm, block, (size_t)(ng * HIST_BINS), err);
        for (int64_t g = 0; st == SCFM_OK && g < ng; g++)
            if (nonzero[g0 + g] > 0) medians[g0 + g] = hist_median(block + g * HIST_BINS, nonzero[g0 + g]);
    }
    int64_t n_kept = 0;
    if (st == SCFM_OK) {
        kept_ids = malloc(sizeof(char *) * (size_t)(u.n + 1));
        kept_symbols = malloc(sizeof(char *) * (size_t)(u.n + 1));
        kept_nonzero = malloc(sizeof(int64_t) * (size_t)(u.n + 1));
        if (!kept_ids || !kept_symbols || !kept_nonzero) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    }
    for (int64_t g = 0; st == SCFM_OK && g < u.n; g++) {
        if (nonzero[g] < opt->min_cells) continue;
        kept_ids[n_kept] = u.ids[g];
        kept_symbols[n_kept] = u.symbols[g];
        kept_nonzero[n_kept] = nonzero[g];
        medians[n_kept++] = medians[g];
    }
    if (st == SCFM_OK && n_kept == 0)
        st = scfm_fail(err, SCFM_ERR_ARG, "no gene is counted in at least %lld cells of the %lld cells read",
                       (long long)opt->min_cells, (long long)n_cells);
    report->cells = n_cells;
    report->cells_empty = empty;
    report->genes_seen = u.n;
    report->genes_kept = n_kept;
    if (st == SCFM_OK)
        st = scfm_vocab_create(opt->cls, opt->eos, n_kept, kept_ids, kept_symbols, medians, kept_nonzero,
                               n_cells - empty, out, err);
    free(kept_ids);
    free(kept_symbols);
    free(kept_nonzero);
    free(medians);
    free(block);
    free(nonzero);
    free(hist);
    scfm_corpus_close(&corpus);
    gene_union_free(&u);
    return st;
}

/* A name and where it came from, for sorting. */
typedef struct {
    const char *name;
    int64_t index;
} named;

static int by_name(const void *a, const void *b) { return strcmp(((const named *)a)->name, ((const named *)b)->name); }

scfm_status scfm_vocab_map_genes(const scfm_vocab *v, const scfm_matrix *m, int by_symbol, int32_t *gene_token,
                                 scfm_error *err) {
    const int64_t n = scfm_matrix_num_genes(m);
    for (int64_t j = 0; j < n; j++) {
        const char *name = by_symbol ? scfm_matrix_gene_symbol(m, j) : scfm_matrix_gene_id(m, j);
        gene_token[j] = name ? scfm_vocab_find(v, name, by_symbol) : -1;
    }
    if (!by_symbol) return SCFM_OK;
    /* Repeated symbols: sorted side by side. */
    named *symbols = malloc(sizeof(named) * (size_t)(n + 1));
    if (!symbols) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int64_t j = 0; j < n; j++) {
        symbols[j].name = scfm_matrix_gene_symbol(m, j) ? scfm_matrix_gene_symbol(m, j) : "";
        symbols[j].index = j;
    }
    qsort(symbols, (size_t)n, sizeof *symbols, by_name);
    for (int64_t j = 1; j < n; j++)
        if (!strcmp(symbols[j].name, symbols[j - 1].name))
            gene_token[symbols[j].index] = gene_token[symbols[j - 1].index] = -2;
    free(symbols);
    return SCFM_OK;
}
