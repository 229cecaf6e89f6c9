/* Matrix Market coordinate files (https://math.nist.gov/MatrixMarket/formats.html)
 * as 10x writes them: matrix.mtx[.gz] beside features.tsv[.gz] (Cell Ranger
 * >= 3) or genes.tsv (Cell Ranger 2) and barcodes.tsv[.gz], genes as rows and
 * cells as columns (the transpose is recognised from the sizes). zlib reads
 * plain and gzip files alike.
 *
 * Entries may come in any order, so opening makes one pass that validates
 * every entry and counts each cell's entries (O(cells) memory, never
 * O(entries)). When they come sorted by cell, as 10x writes them, the pass
 * also records where each cell starts, and a chunk is one seek and one
 * sequential read (free when chunks are read in order). Otherwise every chunk
 * costs a pass over the whole file: read unsorted files in large chunks. */
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/matrix_impl.h"

enum { FIELD_INTEGER, FIELD_REAL, FIELD_PATTERN };

/* Lines of a plain or gzip text file. */
typedef struct {
    gzFile z;
    const char *path;
    char *buf;
    size_t cap;
    int64_t number; /* of the last line read; -1 when unknown (after a seek) */
} reader;

static scfm_status reader_open(reader *r, const char *path, scfm_error *err) {
    r->path = path;
    r->number = 0;
    errno = 0;
    r->z = gzopen(path, "rb");
    if (!r->z) return scfm_fail(err, SCFM_ERR_IO, "%s: %s", path, errno ? strerror(errno) : "cannot open");
    gzbuffer(r->z, 1 << 17);
    return SCFM_OK;
}

static void reader_close(reader *r) {
    if (r->z) gzclose(r->z);
    r->z = NULL;
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
}

/* The next line, without its line end, in r->buf; *got is 0 at the end. */
static scfm_status reader_next(reader *r, int *got, scfm_error *err) {
    size_t n = 0;
    *got = 0;
    for (;;) {
        if (r->cap - n < 2) {
            size_t cap = r->cap ? 2 * r->cap : 256;
            char *grown = realloc(r->buf, cap);
            if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for a line", r->path);
            r->buf = grown;
            r->cap = cap;
        }
        if (!gzgets(r->z, r->buf + n, (int)(r->cap - n))) {
            int code;
            const char *why = gzerror(r->z, &code);
            if (code != Z_OK && code != Z_STREAM_END)
                return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read after line %lld: %s (truncated or corrupt?)",
                                 r->path, (long long)r->number, why);
            if (n == 0) return SCFM_OK;
            break;
        }
        n += strlen(r->buf + n);
        if (n > 0 && r->buf[n - 1] == '\n') break;
        if (gzeof(r->z)) break;
    }
    while (n > 0 && (r->buf[n - 1] == '\n' || r->buf[n - 1] == '\r')) r->buf[--n] = '\0';
    if (r->number >= 0) r->number++;
    *got = 1;
    return SCFM_OK;
}

/* "line 57", or the byte offset when reading from a seek. */
static const char *where(const reader *r, z_off_t offset, char *buf, size_t cap) {
    if (r->number >= 0) snprintf(buf, cap, "line %lld", (long long)r->number);
    else snprintf(buf, cap, "byte %lld", (long long)offset);
    return buf;
}

typedef struct {
    reader r;
    char matrix[1024], features[1024], barcodes[1024];
    int field;
    int cells_are_rows;
    int64_t n_rows, n_cols, n_entries;
    z_off_t data_start;    /* offset of the first entry line */
    int64_t data_line;     /* its number */
    int32_t *cell_entries; /* [n_cells], explicit zeros included */
    z_off_t *cell_offset;  /* [n_cells + 1] where each cell starts; NULL when unsorted */
} mtx;

/* Parses "row column [value]" and checks it; the cell and gene are 0-based. */
static scfm_status parse_entry(const scfm_matrix *m, mtx *x, z_off_t offset, int64_t *cell, int64_t *gene,
                               double *value, scfm_error *err) {
    char *p = x->r.buf, *end, at[64];
    int64_t row = strtoll(p, &end, 10), col = 0;
    int ok = end > p;
    p = end;
    if (ok) col = strtoll(p, &end, 10);
    ok = ok && end > p;
    p = end;
    *value = 1;
    if (ok && x->field != FIELD_PATTERN) *value = strtod(p, &end);
    ok = ok && (x->field == FIELD_PATTERN || end > p);
    p = end;
    while (ok && (*p == ' ' || *p == '\t')) p++;
    if (!ok || *p)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: \"%.60s\" is not ROW COLUMN%s", x->matrix,
                         where(&x->r, offset, at, sizeof at), x->r.buf, x->field == FIELD_PATTERN ? "" : " VALUE");
    if (row < 1 || row > x->n_rows || col < 1 || col > x->n_cols)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: entry (%lld, %lld) outside the %lld x %lld matrix", x->matrix,
                         where(&x->r, offset, at, sizeof at), (long long)row, (long long)col, (long long)x->n_rows,
                         (long long)x->n_cols);
    const char *why = scfm_value_problem(*value, m->opt.require_counts);
    if (!why && x->field == FIELD_INTEGER && *value != floor(*value)) why = "is not an integer (the header says integer)";
    if (why)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: value %g %s", x->matrix, where(&x->r, offset, at, sizeof at),
                         *value, why);
    *cell = (x->cells_are_rows ? row : col) - 1;
    *gene = (x->cells_are_rows ? col : row) - 1;
    return SCFM_OK;
}

/* The next entry line, skipping blank ones; *got is 0 at the end. */
static scfm_status next_entry(mtx *x, int *got, z_off_t *offset, scfm_error *err) {
    scfm_status st;
    do {
        *offset = gztell(x->r.z);
        st = reader_next(&x->r, got, err);
    } while (st == SCFM_OK && *got && x->r.buf[strspn(x->r.buf, " \t")] == '\0');
    return st;
}

/* One column (0: first, 1: second, falling back to the first) of each line. */
static scfm_status read_tsv(const char *path, scfm_names *first, scfm_names *second, scfm_error *err) {
    reader r = {0};
    scfm_status st = reader_open(&r, path, err);
    int got = 1;
    while (st == SCFM_OK) {
        st = reader_next(&r, &got, err);
        if (st != SCFM_OK || !got) break;
        if (!r.buf[0]) {
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: line %lld is empty", path, (long long)r.number);
            break;
        }
        size_t a = strcspn(r.buf, "\t");
        const char *b = r.buf[a] ? r.buf + a + 1 : r.buf;
        if (!scfm_names_push(first, r.buf, a) || (second && !scfm_names_push(second, b, strcspn(b, "\t"))))
            st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    reader_close(&r);
    return st;
}

/* path/prefix+name, or path/name, for the first name that exists. */
static int find_companion(char *out, size_t cap, const char *dir, const char *prefix, const char *const *names) {
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; names[i]; i++) {
            int n = snprintf(out, cap, "%s/%s%s", dir, pass ? "" : prefix, names[i]);
            if (n > 0 && (size_t)n < cap && access(out, F_OK) == 0) return 1;
        }
        if (!prefix[0]) break;
    }
    out[0] = '\0';
    return 0;
}

/* A directory holds matrix.mtx[.gz]; a file PREFIXmatrix.mtx[.gz] takes its
 * companions with the same prefix (GEO names them so) or without one. */
static scfm_status find_files(const scfm_matrix *m, mtx *x, scfm_error *err) {
    static const char *const matrices[] = {"matrix.mtx.gz", "matrix.mtx", NULL};
    static const char *const features[] = {"features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv", NULL};
    static const char *const barcodes[] = {"barcodes.tsv.gz", "barcodes.tsv", NULL};
    char dir[1024], prefix[256] = "";
    struct stat st;
    if (stat(m->path, &st) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: %s", m->path, strerror(errno));
    if (strlen(m->path) >= sizeof dir - 32) return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", m->path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", m->path);
        if (!find_companion(x->matrix, sizeof x->matrix, dir, "", matrices))
            return scfm_fail(err, SCFM_ERR_IO, "%s: no matrix.mtx or matrix.mtx.gz in the directory", m->path);
    } else {
        char copy[1024];
        snprintf(x->matrix, sizeof x->matrix, "%s", m->path);
        snprintf(copy, sizeof copy, "%s", m->path);
        snprintf(dir, sizeof dir, "%s", dirname(copy));
        snprintf(copy, sizeof copy, "%s", m->path);
        const char *base = basename(copy);
        for (int i = 0; matrices[i]; i++) {
            size_t n = strlen(base), k = strlen(matrices[i]);
            if (n > k && !strcmp(base + n - k, matrices[i])) snprintf(prefix, sizeof prefix, "%.*s", (int)(n - k), base);
        }
    }
    if (!find_companion(x->features, sizeof x->features, dir, prefix, features))
        return scfm_fail(err, SCFM_ERR_IO, "%s: no %sfeatures.tsv[.gz] or %sgenes.tsv[.gz] beside it", x->matrix, prefix,
                         prefix);
    find_companion(x->barcodes, sizeof x->barcodes, dir, prefix, barcodes);
    return SCFM_OK;
}

static const char *file_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* The banner and the size line; leaves the reader at the first entry. */
static scfm_status read_header(mtx *x, scfm_error *err) {
    char object[32], format[32], field[32], symmetry[32], extra;
    int got;
    scfm_status st = reader_next(&x->r, &got, err);
    if (st != SCFM_OK) return st;
    if (!got || sscanf(x->r.buf, "%%%%MatrixMarket %31s %31s %31s %31s %c", object, format, field, symmetry, &extra) != 4 ||
        strcasecmp(object, "matrix") || strcasecmp(format, "coordinate") || strcasecmp(symmetry, "general") ||
        (strcasecmp(field, "integer") && strcasecmp(field, "real") && strcasecmp(field, "pattern")))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: line 1: header \"%.80s\" is not \"%%%%MatrixMarket matrix "
                         "coordinate integer|real|pattern general\"", x->matrix, got ? x->r.buf : "");
    x->field = !strcasecmp(field, "integer") ? FIELD_INTEGER : !strcasecmp(field, "real") ? FIELD_REAL : FIELD_PATTERN;
    do {
        st = reader_next(&x->r, &got, err);
    } while (st == SCFM_OK && got && (x->r.buf[0] == '%' || !x->r.buf[strspn(x->r.buf, " \t")]));
    if (st != SCFM_OK) return st;
    long long rows, cols, entries;
    if (!got || sscanf(x->r.buf, "%lld %lld %lld %c", &rows, &cols, &entries, &extra) != 3 || rows < 0 || cols < 0 ||
        entries < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: line %lld: size line \"%.60s\" is not ROWS COLUMNS ENTRIES",
                         x->matrix, (long long)x->r.number, got ? x->r.buf : "");
    x->n_rows = rows;
    x->n_cols = cols;
    x->n_entries = entries;
    x->data_start = gztell(x->r.z);
    x->data_line = x->r.number;
    return SCFM_OK;
}

/* Which way round the matrix is, from the sizes of the companion files. */
static scfm_status orient(scfm_matrix *m, mtx *x, int64_t n_features, int64_t n_barcodes, scfm_error *err) {
    int have_barcodes = x->barcodes[0] != '\0';
    if (x->n_rows == n_features && (!have_barcodes || x->n_cols == n_barcodes)) x->cells_are_rows = 0;
    else if (have_barcodes && x->n_rows == n_barcodes && x->n_cols == n_features) x->cells_are_rows = 1;
    else if (have_barcodes)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: size %lld x %lld matches neither the %lld genes of %s by the %lld "
                         "barcodes of %s nor its transpose", x->matrix, (long long)x->n_rows, (long long)x->n_cols,
                         (long long)n_features, file_name(x->features), (long long)n_barcodes, file_name(x->barcodes));
    else
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %lld rows but %s lists %lld genes", x->matrix,
                         (long long)x->n_rows, file_name(x->features), (long long)n_features);
    m->n_cells = x->cells_are_rows ? x->n_rows : x->n_cols;
    m->n_genes = x->cells_are_rows ? x->n_cols : x->n_rows;
    return SCFM_OK;
}

/* The pass at open: validates every entry, counts entries per cell and, while
 * they come sorted by cell, records where each cell starts. */
static scfm_status index_entries(scfm_matrix *m, mtx *x, scfm_error *err) {
    x->cell_entries = calloc((size_t)(m->n_cells ? m->n_cells : 1), sizeof *x->cell_entries);
    x->cell_offset = malloc(sizeof *x->cell_offset * (size_t)(m->n_cells + 1));
    if (!x->cell_entries || !x->cell_offset)
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory indexing %lld cells", x->matrix, (long long)m->n_cells);
    int64_t count = 0, next_cell = 0, cell, gene;
    double value;
    z_off_t offset = x->data_start;
    int got;
    scfm_status st;
    while ((st = next_entry(x, &got, &offset, err)) == SCFM_OK && got) {
        if (count == x->n_entries)
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: line %lld: more entries than the %lld of the size line",
                             x->matrix, (long long)x->r.number, (long long)x->n_entries);
        if ((st = parse_entry(m, x, offset, &cell, &gene, &value, err)) != SCFM_OK) return st;
        if (x->cell_entries[cell] == INT32_MAX)
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: line %lld: cell %lld has more than %d entries", x->matrix,
                             (long long)x->r.number, (long long)cell, INT32_MAX);
        x->cell_entries[cell]++;
        count++;
        if (x->cell_offset && cell + 1 < next_cell) {
            free(x->cell_offset); /* unsorted: chunks will scan the file */
            x->cell_offset = NULL;
        }
        while (x->cell_offset && next_cell <= cell) x->cell_offset[next_cell++] = offset;
    }
    if (st != SCFM_OK) return st;
    if (count < x->n_entries)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %lld entries where the size line declares %lld (truncated?)",
                         x->matrix, (long long)count, (long long)x->n_entries);
    while (x->cell_offset && next_cell <= m->n_cells) x->cell_offset[next_cell++] = offset;
    return SCFM_OK;
}

/* Sorted files: the chunk's entries are contiguous from its first cell's. */
static scfm_status read_sorted(scfm_matrix *m, mtx *x, int64_t first, int64_t n, scfm_cells_chunk *c,
                               scfm_error *err) {
    z_off_t start = x->cell_offset[first];
    if (gztell(x->r.z) != start && gzseek(x->r.z, start, SEEK_SET) != start)
        return scfm_fail(err, SCFM_ERR_IO, "%s: cannot seek to byte %lld", x->matrix, (long long)start);
    x->r.number = -1;
    int64_t cell, gene;
    double value;
    z_off_t offset;
    int got;
    for (int64_t w = 0; w < c->indptr[n]; w++) {
        scfm_status st = next_entry(x, &got, &offset, err);
        if (st == SCFM_OK && !got)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: ends early (changed since it was opened?)", x->matrix);
        if (st == SCFM_OK) st = parse_entry(m, x, offset, &cell, &gene, &value, err);
        if (st == SCFM_OK && (cell < first || cell >= first + n || w < c->indptr[cell - first] ||
                              w >= c->indptr[cell - first + 1]))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: byte %lld: cell %lld out of order (changed since it was "
                           "opened?)", x->matrix, (long long)offset, (long long)cell);
        if (st != SCFM_OK) return st;
        c->genes[w] = (int32_t)gene;
        c->values[w] = (float)value;
    }
    return SCFM_OK;
}

/* Unsorted files: one pass over all entries, keeping the chunk's. */
static scfm_status read_scan(scfm_matrix *m, mtx *x, int64_t first, int64_t n, scfm_cells_chunk *c,
                             scfm_error *err) {
    int64_t *next = malloc(sizeof *next * (size_t)(n ? n : 1));
    if (!next) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", x->matrix);
    memcpy(next, c->indptr, sizeof *next * (size_t)n);
    scfm_status st = SCFM_OK;
    if (gzseek(x->r.z, x->data_start, SEEK_SET) != x->data_start)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: cannot seek to byte %lld", x->matrix, (long long)x->data_start);
    x->r.number = x->data_line;
    int64_t cell, gene;
    double value;
    z_off_t offset;
    int got;
    while (st == SCFM_OK && (st = next_entry(x, &got, &offset, err)) == SCFM_OK && got) {
        st = parse_entry(m, x, offset, &cell, &gene, &value, err);
        if (st != SCFM_OK || cell < first || cell >= first + n) continue;
        if (next[cell - first] == c->indptr[cell - first + 1])
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: line %lld: more entries for cell %lld than at open (changed "
                           "since?)", x->matrix, (long long)x->r.number, (long long)cell);
        else {
            c->genes[next[cell - first]] = (int32_t)gene;
            c->values[next[cell - first]++] = (float)value;
        }
    }
    for (int64_t i = 0; st == SCFM_OK && i < n; i++)
        if (next[i] != c->indptr[i + 1])
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: fewer entries for cell %lld than at open (changed since?)",
                           x->matrix, (long long)(first + i));
    free(next);
    return st;
}

static scfm_status mtx_read(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *c, scfm_error *err) {
    mtx *x = m->impl;
    for (int64_t i = 0; i < n; i++) c->indptr[i + 1] = c->indptr[i] + x->cell_entries[first + i];
    scfm_status st = scfm_chunk_reserve_nnz(c, c->indptr[n], x->matrix, err);
    if (st != SCFM_OK) return st;
    return x->cell_offset ? read_sorted(m, x, first, n, c, err) : read_scan(m, x, first, n, c, err);
}

static void mtx_close(scfm_matrix *m) {
    mtx *x = m->impl;
    if (!x) return;
    reader_close(&x->r);
    free(x->cell_entries);
    free(x->cell_offset);
    free(x);
}

static const scfm_matrix_ops mtx_ops = {mtx_read, NULL, mtx_close};

scfm_status scfm_mtx_open(scfm_matrix *m, scfm_error *err) {
    mtx *x = calloc(1, sizeof *x);
    if (!x) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", m->path);
    m->impl = x;
    m->ops = &mtx_ops;
    scfm_status st = find_files(m, x, err);
    if (st == SCFM_OK) st = read_tsv(x->features, &m->gene_ids, &m->gene_symbols, err);
    if (st == SCFM_OK && x->barcodes[0]) st = read_tsv(x->barcodes, &m->cell_names, NULL, err);
    if (st == SCFM_OK) st = reader_open(&x->r, x->matrix, err);
    if (st == SCFM_OK) st = read_header(x, err);
    if (st == SCFM_OK) st = orient(m, x, m->gene_ids.n, m->cell_names.n, err);
    snprintf(m->entries_field, sizeof m->entries_field, "%.255s", file_name(x->matrix));
    snprintf(m->gene_id_field, sizeof m->gene_id_field, "%.255s", file_name(x->features));
    if (st == SCFM_OK)
        st = scfm_names_check(m->path, &m->gene_ids, file_name(x->features), m->n_genes, "genes", m->entries_field, err);
    if (st == SCFM_OK)
        st = scfm_names_check(m->path, &m->gene_symbols, file_name(x->features), m->n_genes, "genes",
                              m->entries_field, err);
    if (st == SCFM_OK && x->barcodes[0])
        st = scfm_names_check(m->path, &m->cell_names, file_name(x->barcodes), m->n_cells, "cells",
                              m->entries_field, err);
    if (st == SCFM_OK) st = index_entries(m, x, err);
    return st;
}
