/* scfm io: the safetensors file format (https://github.com/huggingface/safetensors),
 * used for checkpoints, exported models and test fixtures, so that every
 * tensor file scfm writes opens in PyTorch and the other way round.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the tensor bytes, little-endian,
 * row-major, with offsets relative to the end of the header. */
#ifndef SCFM_IO_H
#define SCFM_IO_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SCFM_DTYPE_BOOL = 0,
    SCFM_DTYPE_U8,
    SCFM_DTYPE_I8,
    SCFM_DTYPE_F8_E4M3,
    SCFM_DTYPE_F8_E5M2,
    SCFM_DTYPE_I16,
    SCFM_DTYPE_U16,
    SCFM_DTYPE_F16,
    SCFM_DTYPE_BF16,
    SCFM_DTYPE_I32,
    SCFM_DTYPE_U32,
    SCFM_DTYPE_F32,
    SCFM_DTYPE_I64,
    SCFM_DTYPE_U64,
    SCFM_DTYPE_F64,
    SCFM_DTYPE_COUNT
} scfm_dtype;

/* The safetensors spelling ("F32", "BF16", ...); "?" for an invalid value. */
const char *scfm_dtype_name(scfm_dtype dtype);
/* Bytes per element; 0 for an invalid value. */
size_t scfm_dtype_size(scfm_dtype dtype);

#define SCFM_ST_MAX_DIMS 8

/* One tensor: what the writer takes and what the reader hands out. ndim 0 is
 * a scalar (one element). */
typedef struct {
    const char *name;
    scfm_dtype dtype;
    int ndim;
    int64_t shape[SCFM_ST_MAX_DIMS];
    const void *data;
} scfm_st_tensor;

typedef struct {
    const char *key;
    const char *value;
} scfm_st_meta;

/* Elements in t (1 for a scalar). */
int64_t scfm_st_tensor_numel(const scfm_st_tensor *t);

/* Writes n_tensors tensors (data laid out in the given order) and n_meta
 * metadata pairs to path. The file is written to "<path>.tmp", synced and
 * renamed over path, so path is never seen half-written. Names must be
 * unique, non-empty and not "__metadata__"; keys unique (SCFM_ERR_ARG);
 * file system failures give SCFM_ERR_IO. */
scfm_status scfm_safetensors_write(const char *path, const scfm_st_tensor *tensors, int n_tensors,
                                   const scfm_st_meta *meta, int n_meta, scfm_error *err);

typedef struct scfm_safetensors scfm_safetensors;

/* Maps path read-only and validates all of it: the header JSON (strict), each
 * dtype, that each tensor's byte range matches its shape, and that the ranges
 * tile the data section exactly (sorted, no overlap, no gap, nothing past the
 * end of the file). Any violation gives SCFM_ERR_FORMAT with a message that
 * names the file and the fault; a missing or unreadable file SCFM_ERR_IO. */
scfm_status scfm_safetensors_open(const char *path, scfm_safetensors **out, scfm_error *err);
void scfm_safetensors_close(scfm_safetensors *f);

const char *scfm_safetensors_path(const scfm_safetensors *f);
/* Tensors in data order, i in [0, count). Data pointers are aligned to the
 * element size and stay valid until close. */
int scfm_safetensors_count(const scfm_safetensors *f);
const scfm_st_tensor *scfm_safetensors_at(const scfm_safetensors *f, int i);
/* NULL when there is no tensor of that name. */
const scfm_st_tensor *scfm_safetensors_find(const scfm_safetensors *f, const char *name);
/* Like find, but a missing tensor or a different dtype or shape is an error
 * (SCFM_ERR_FORMAT naming the file and the tensor). ndim < 0 skips the shape
 * check. */
scfm_status scfm_safetensors_expect(const scfm_safetensors *f, const char *name, scfm_dtype dtype,
                                    int ndim, const int64_t *shape, const scfm_st_tensor **out,
                                    scfm_error *err);

/* Metadata pairs in file order; value of key or NULL. */
int scfm_safetensors_meta_count(const scfm_safetensors *f);
const scfm_st_meta *scfm_safetensors_meta_at(const scfm_safetensors *f, int i);
const char *scfm_safetensors_meta(const scfm_safetensors *f, const char *key);


/* ---- count matrices: AnnData .h5ad, 10x Genomics .h5, Matrix Market ----
 * A cells x genes matrix read in chunks of consecutive cells, never whole.
 * (src/io/matrix.c dispatches; src/io/h5ad.c, src/io/tenx.c, src/io/mtx.c.) */

typedef enum {
    SCFM_MATRIX_AUTO = 0, /* by content: h5ad (has /X and obs/var), 10x h5 (/matrix or v2 genome groups), mtx (directory or .mtx[.gz]) */
    SCFM_MATRIX_H5AD,
    SCFM_MATRIX_10X_H5,
    SCFM_MATRIX_MTX
} scfm_matrix_format;

typedef struct {
    scfm_matrix_format format;
    int use_raw;         /* h5ad: read raw/X (and raw/var) instead of X */
    int require_counts;  /* values must be finite, non-negative integers (SCFM_ERR_FORMAT otherwise) */
    int skip_cell_names; /* h5ad, 10x h5: do not load cell names (scfm_matrix_cell_name gives NULL),
                            so memory does not grow with the number of cells */
} scfm_matrix_options;

/* Cells [first, first + n_cells) in CSR form; genes are column indices in the
 * file's gene order, sorted within a cell; explicit zeros are dropped. */
typedef struct {
    int64_t first, n_cells;
    int64_t *indptr;     /* [n_cells + 1], indptr[0] == 0 */
    int32_t *genes;      /* [nnz] */
    float *values;       /* [nnz] */
    int64_t cap_cells, cap_nnz; /* entries allocated (malloc) in indptr and in genes/values */
} scfm_cells_chunk;

/* Frees the three arrays and zeroes c (NULL is allowed). */
void scfm_cells_chunk_free(scfm_cells_chunk *c);

typedef struct scfm_matrix scfm_matrix;

scfm_status scfm_matrix_open(const char *path, const scfm_matrix_options *opt, scfm_matrix **out,
                             scfm_error *err);
void scfm_matrix_close(scfm_matrix *m);
const char *scfm_matrix_path(const scfm_matrix *m);
scfm_matrix_format scfm_matrix_get_format(const scfm_matrix *m);
int64_t scfm_matrix_num_cells(const scfm_matrix *m);
int64_t scfm_matrix_num_genes(const scfm_matrix *m);
/* Gene identifiers: the Ensembl-style id (h5ad: var column gene_ids if present,
 * else the var index; 10x: features/id or genes; mtx: features.tsv column 1)
 * and the symbol (h5ad: var column feature_name if present, else the var
 * index; 10x: features/name or gene_names; mtx: column 2, else column 1). */
const char *scfm_matrix_gene_id(const scfm_matrix *m, int64_t gene);
const char *scfm_matrix_gene_symbol(const scfm_matrix *m, int64_t gene);
/* Cell barcodes / obs names; NULL when the file has none. */
const char *scfm_matrix_cell_name(const scfm_matrix *m, int64_t cell);
/* Reads cells [first, first + n) into chunk (storage reused and grown). */
scfm_status scfm_matrix_read(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *chunk,
                             scfm_error *err);

/* Categorical obs columns (h5ad current and legacy encodings). */
int scfm_matrix_num_obs_columns(const scfm_matrix *m);
const char *scfm_matrix_obs_column(const scfm_matrix *m, int i);
/* Categories of a categorical column; SCFM_ERR_ARG when the column is absent
 * or not categorical. The strings stay valid until close. */
scfm_status scfm_matrix_obs_categories(scfm_matrix *m, const char *column, int *n_categories,
                                       const char *const **categories, scfm_error *err);
/* Codes of cells [first, first + n) (-1 = missing). */
scfm_status scfm_matrix_obs_codes(scfm_matrix *m, const char *column, int64_t first, int64_t n,
                                  int32_t *codes, scfm_error *err);

/* ---- obsm arrays of an AnnData .h5ad (src/io/h5ad_obsm.c) ----
 * obsm/<name>, a 2-D float32 or float64 dataset [cells, dim] (an embedding),
 * read in chunks of rows as float32. A missing name is SCFM_ERR_FORMAT with
 * the obsm keys the file has in the message; so is an obsm entry that is not
 * a 2-D float dataset (a dataframe, a sparse matrix) or a value that is not
 * finite (the message names the row and column). */
typedef struct scfm_obsm scfm_obsm;

scfm_status scfm_obsm_open(const char *path, const char *name, scfm_obsm **out, scfm_error *err);
void scfm_obsm_close(scfm_obsm *o);
int64_t scfm_obsm_rows(const scfm_obsm *o);
int scfm_obsm_dim(const scfm_obsm *o);
/* Rows [first, first + n) into rows[n * dim], row-major. */
scfm_status scfm_obsm_read(scfm_obsm *o, int64_t first, int64_t n, float *rows, scfm_error *err);

/* ---- writing AnnData .h5ad (src/io/h5ad_write.c) ----
 * Streams a file that anndata (>= 0.8) reads: X as CSR (float32 data;
 * indices and indptr int32 when cells x genes < 2^31, else both int64, as
 * scipy needs one type for both), obs categoricals and names, obsm arrays
 * appended in chunks of cells, so memory stays bounded; var index and varm
 * written whole.
 * The file is written to PATH.tmp; finish checks that every per-cell array
 * holds the declared cells and renames it to PATH (replacing PATH);
 * abort removes it. After any failed call only abort is left (finish then
 * fails too). Not thread-safe: one writer, one thread. */
typedef struct scfm_h5ad_writer scfm_h5ad_writer;

/* gene_ids: the var index, n_genes distinct strings. */
scfm_status scfm_h5ad_create(const char *path, int64_t n_cells, int64_t n_genes,
                             const char *const *gene_ids, scfm_h5ad_writer **out, scfm_error *err);
/* Appends the next cells' counts; chunk->first must be the number of cells
 * appended so far and genes sorted within a cell. */
scfm_status scfm_h5ad_append_x(scfm_h5ad_writer *w, const scfm_cells_chunk *chunk, scfm_error *err);
/* Appends the codes (-1 = missing) of the next n_rows cells to categorical obs
 * column `column`; the first call for a column gives its categories (distinct),
 * later calls the same n_categories (categories is then not read). Columns
 * appear in the order of their first call. */
scfm_status scfm_h5ad_append_obs_categorical(scfm_h5ad_writer *w, const char *column,
                                             const char *const *categories, int n_categories,
                                             const int32_t *codes, int64_t n_rows, scfm_error *err);
/* Appends the next cells' names (obs index); never called: "0", "1", ... */
scfm_status scfm_h5ad_append_obs_names(scfm_h5ad_writer *w, const char *const *names, int64_t n_rows,
                                       scfm_error *err);
/* Appends the next n_rows rows of obsm[name], float32 [n_cells, dim]. */
scfm_status scfm_h5ad_append_obsm(scfm_h5ad_writer *w, const char *name, int dim, const float *rows,
                                  int64_t n_rows, scfm_error *err);
/* varm[name] = values, float32 [n_genes, dim], row-major. */
scfm_status scfm_h5ad_write_varm(scfm_h5ad_writer *w, const char *name, int dim, const float *values,
                                 scfm_error *err);
/* A writer that adds to a copy of an existing .h5ad (input, with n_cells
 * cells) instead: everything in it is kept, and only obs categoricals and
 * obsm arrays are appended (an existing obsm key or obs column of the same
 * name is replaced; the obs columns named in replace are dropped from the
 * column order first). finish renames the copy to PATH; the input is never
 * written. */
scfm_status scfm_h5ad_annotate(const char *input, const char *path, int64_t n_cells, const char *const *replace,
                               int n_replace, scfm_h5ad_writer **out, scfm_error *err);
/* Completes, syncs and renames the file; frees w whatever the outcome. */
scfm_status scfm_h5ad_finish(scfm_h5ad_writer *w, scfm_error *err);
/* Removes PATH.tmp and frees w (NULL is allowed). */
void scfm_h5ad_abort(scfm_h5ad_writer *w);

#ifdef __cplusplus
}
#endif
#endif
