/* Private: HDF5 helpers for the h5ad and 10x readers, the token shard
 * reader, and the h5ad and shard writers. Objects are named by their full
 * path in the file ("raw/X/indptr"), which is also what error messages
 * quote. HDF5's own error printing is switched off: failures are reported
 * through scfm_error, or by the writing helpers as a negative result for the
 * caller to name the object in its message. */
#ifndef SCFM_IO_H5UTIL_H
#define SCFM_IO_H5UTIL_H

#include <hdf5.h>

#include "io/matrix_impl.h"

/* Opens path read-only: SCFM_ERR_IO when it cannot be read, SCFM_ERR_FORMAT
 * when it is not a readable HDF5 file (truncated, corrupt). */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_open_file(const char *path, hid_t *file, scfm_error *err);

/* Registers the filters scfm adds to HDF5's (LZF decoding, src/io/lzf.c);
 * scfm_h5_open_file calls it. Once per process, from any thread. */
SCFM_MATRIX_PRIVATE void scfm_h5_register_filters(void);

/* SCFM_ERR_FORMAT, naming the dataset and the filter, when dataset d (name
 * in file path) is stored through an HDF5 filter this process cannot
 * decode (blosc, zstd, ...: compressions HDF5 itself lacks). */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_check_filters(hid_t d, const char *path, const char *name,
                                                      scfm_error *err);

/* H5I_GROUP or H5I_DATASET for the object at name, H5I_BADID when there is
 * none (missing parents included). */
SCFM_MATRIX_PRIVATE H5I_type_t scfm_h5_kind(hid_t file, const char *name);

/* Attribute attr of the object at name as a string (fixed or variable
 * length, scalar or one element); 0 when absent or not a string. */
SCFM_MATRIX_PRIVATE int scfm_h5_attr_string(hid_t file, const char *name, const char *attr, char *out,
                                            size_t cap);
/* Integer attribute with 1 to max elements; the count, or -1 when absent or
 * of another type or size. */
SCFM_MATRIX_PRIVATE int scfm_h5_attr_ints(hid_t file, const char *name, const char *attr, int64_t *out,
                                          int max);

/* Elements of the 1-D dataset d; -1 when it has another rank. */
SCFM_MATRIX_PRIVATE int64_t scfm_h5_dataset_length(hid_t d);
/* Reads elements [start, start + count) of the 1-D dataset d as mem_type;
 * < 0 on failure. */
SCFM_MATRIX_PRIVATE herr_t scfm_h5_read_slice(hid_t d, hid_t mem_type, int64_t start, int64_t count, void *out);
/* The same with a transfer property list (e.g. one whose type-conversion
 * buffer is reused: with H5P_DEFAULT, HDF5 allocates and zeroes 1 MiB for
 * every read that converts types). */
SCFM_MATRIX_PRIVATE herr_t scfm_h5_read_slice_xfer(hid_t d, hid_t mem_type, hid_t xfer, int64_t start, int64_t count,
                                                   void *out);

/* A 1-D numeric dataset. */
typedef struct {
    hid_t id;
    const char *file;  /* for messages; owned by the caller */
    char name[256];
    int64_t length;
} scfm_h5_array;

/* integer: the dataset must hold integers (indices, codes), else integers or
 * floats. A missing dataset or a wrong type or rank is SCFM_ERR_FORMAT. */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_array_open(hid_t file, const char *path, const char *name,
                                                   int integer, scfm_h5_array *a, scfm_error *err);
SCFM_MATRIX_PRIVATE void scfm_h5_array_close(scfm_h5_array *a);
/* Elements [start, start + count) converted to mem_type (H5T_NATIVE_INT64,
 * H5T_NATIVE_DOUBLE, ...); HDF5 converts any integer or float width. */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_array_read(const scfm_h5_array *a, hid_t mem_type, int64_t start,
                                                   int64_t count, void *out, scfm_error *err);

/* Appends the elements of the 1-D dataset at name to out: strings of fixed or
 * variable length, or numbers written as text (numeric categories). */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_read_strings(hid_t file, const char *path, const char *name,
                                                     scfm_names *out, scfm_error *err);

/* A compressed sparse matrix in a group: data, indices and indptr, where
 * indptr runs over the major axis. */
typedef struct {
    scfm_h5_array data, indices, indptr;
    int64_t n_major, n_minor;
    const char *major;  /* what a major index is called in messages: "row", "column" */
    int64_t *ptr;       /* the whole indptr, loaded by the first read_minor */
    int direct;         /* indices and data convert to int32 and float32 without loss */
} scfm_h5_sparse;

/* Opens group/{data,indices,indptr} and checks their lengths against the
 * shape and that indptr starts at 0 and ends at the number of entries. */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_sparse_open(hid_t file, const char *path, const char *group,
                                                    int64_t n_major, int64_t n_minor, const char *major,
                                                    scfm_h5_sparse *s, scfm_error *err);
SCFM_MATRIX_PRIVATE void scfm_h5_sparse_close(scfm_h5_sparse *s);
/* Cells along the major axis (h5ad CSR, 10x): reads indptr[first, first + n]
 * and the entries between, in slices. */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_sparse_read_major(scfm_h5_sparse *s, int require_counts,
                                                          int64_t first, int64_t n, scfm_cells_chunk *c,
                                                          scfm_error *err);
/* Cells along the minor axis (h5ad CSC): every chunk scans all the indices
 * in slices, reading values only around the entries that fall in the chunk,
 * so each call costs a pass over the file; use large chunks. */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_sparse_read_minor(scfm_h5_sparse *s, int require_counts,
                                                          int64_t first, int64_t n, scfm_cells_chunk *c,
                                                          scfm_error *err);

/* ---- writing: each returns < 0 on failure ---- */

/* Creation options of scfm_h5_create_group and scfm_h5_create_dataset. */
enum {
    SCFM_H5_NO_TIMES = 1, /* object times not recorded: the same calls give the same bytes */
    SCFM_H5_NO_FILL = 2,  /* chunks are not filled before they are written */
};

SCFM_MATRIX_PRIVATE hid_t scfm_h5_create_group(hid_t loc, const char *name, unsigned flags);
/* A dataset of the given rank and dims that can grow to max_dims (NULL:
 * fixed), stored in chunks of chunk elements (NULL: contiguous). */
SCFM_MATRIX_PRIVATE hid_t scfm_h5_create_dataset(hid_t loc, const char *name, hid_t type, int rank,
                                                 const hsize_t *dims, const hsize_t *max_dims, const hsize_t *chunk,
                                                 unsigned flags);
/* Attribute name of obj of the file type type: a scalar when n < 0, else a
 * 1-D array of n elements; buf (in mem_type) is written unless n is 0. */
SCFM_MATRIX_PRIVATE herr_t scfm_h5_write_attr(hid_t obj, const char *name, hid_t type, hid_t mem_type, int64_t n,
                                              const void *buf);
/* Writes rows [start, start + n) of d, a dataset of rows of width elements
 * (width 0: a 1-D dataset of scalars), through the transfer list dxpl. With
 * n 0 it selects nothing but still writes, so that a rank without rows takes
 * part in a collective transfer. */
SCFM_MATRIX_PRIVATE herr_t scfm_h5_write_rows(hid_t d, hid_t dxpl, hid_t mem_type, int64_t start, int64_t n,
                                              int width, const void *buf);

#endif
