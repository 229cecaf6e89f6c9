/* Private: what the count-matrix formats share. matrix.c owns the public
 * scfm_matrix_* functions and the checks common to every format; each format
 * (h5ad.c, tenx.c, mtx.c) fills an scfm_matrix at open and supplies the chunk
 * reader through scfm_matrix_ops. */
#ifndef SCFM_IO_MATRIX_IMPL_H
#define SCFM_IO_MATRIX_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/io.h"

#define SCFM_MATRIX_PRIVATE __attribute__((visibility("hidden")))

/* Entries a reader converts at once (indices, values, dense elements): bounds
 * its scratch memory whatever the chunk or the file. */
#define SCFM_MATRIX_SLICE ((int64_t)1 << 18)

/* n strings packed in one pool: one allocation for millions of barcodes. */
typedef struct {
    int64_t n;
    const char **at;  /* [n], set by scfm_names_finish */
    char *pool;
    size_t pool_len, pool_cap;
    size_t *offsets;  /* while building */
    int64_t cap;
} scfm_names;

/* Appends s[0, len) (a NUL ends it early). 0 when out of memory. */
SCFM_MATRIX_PRIVATE int scfm_names_push(scfm_names *s, const char *str, size_t len);
/* Turns the offsets into pointers; no push after. 0 when out of memory. */
SCFM_MATRIX_PRIVATE int scfm_names_finish(scfm_names *s);
SCFM_MATRIX_PRIVATE void scfm_names_free(scfm_names *s);
/* Finishes names read from field, which must hold one per each of the want
 * genes or cells (what) that shape_field defines. */
SCFM_MATRIX_PRIVATE scfm_status scfm_names_check(const char *path, scfm_names *names, const char *field,
                                                 int64_t want, const char *what, const char *shape_field,
                                                 scfm_error *err);

typedef struct {
    char *name;
    scfm_names categories;
} scfm_obs_column;

typedef struct {
    /* Fills indptr, genes and values for cells [first, first + n): matrix.c
     * has reserved the n + 1 indptr slots and set first and n_cells, and
     * afterwards drops explicit zeros and sorts each cell, so a format may
     * leave both. */
    scfm_status (*read)(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *chunk, scfm_error *err);
    /* Codes of obs column i (NULL for formats without obs columns). */
    scfm_status (*obs_codes)(scfm_matrix *m, int column, int64_t first, int64_t n, int32_t *codes,
                             scfm_error *err);
    void (*close)(scfm_matrix *m);
} scfm_matrix_ops;

struct scfm_matrix {
    char *path;
    scfm_matrix_format format;
    scfm_matrix_options opt;
    int64_t n_cells, n_genes;
    scfm_names gene_ids;
    scfm_names gene_symbols;  /* n == 0: the ids serve */
    scfm_names cell_names;    /* n == 0: the file has none */
    scfm_obs_column *obs;
    int n_obs;
    /* Where the gene ids and the entries come from, for messages:
     * "var/_index", "X/indices", "matrix.mtx.gz", ... */
    char gene_id_field[512];
    char entries_field[512];
    const scfm_matrix_ops *ops;
    void *impl;
    /* Set by h5ad CSR and 10x: a read costs in proportion to its cells, so a
     * caller may read a few at a time and find them still in cache; other
     * layouts pass over the file in every read and want large ones. */
    int small_reads;
};

SCFM_MATRIX_PRIVATE scfm_status scfm_h5ad_open(scfm_matrix *m, scfm_error *err);
SCFM_MATRIX_PRIVATE scfm_status scfm_tenx_open(scfm_matrix *m, scfm_error *err);
SCFM_MATRIX_PRIVATE scfm_status scfm_mtx_open(scfm_matrix *m, scfm_error *err);

/* Room for nnz entries in chunk (its indptr is reserved by matrix.c). */
SCFM_MATRIX_PRIVATE scfm_status scfm_chunk_reserve_nnz(scfm_cells_chunk *c, int64_t nnz, const char *path,
                                                       scfm_error *err);
/* Why value v is not acceptable (not finite; with require_counts, negative or
 * fractional), or NULL when it is. */
SCFM_MATRIX_PRIVATE const char *scfm_value_problem(double v, int require_counts);

#endif
