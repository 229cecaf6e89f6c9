/* Private: HDF5 helpers for the h5ad and 10x readers. Objects are named by
 * their full path in the file ("raw/X/indptr"), which is also what error
 * messages quote. HDF5's own error printing is switched off: failures are
 * reported through scfm_error. */
#ifndef SCFM_IO_H5UTIL_H
#define SCFM_IO_H5UTIL_H

#include <hdf5.h>

#include "io/matrix_impl.h"

/* Opens path read-only: SCFM_ERR_IO when it cannot be read, SCFM_ERR_FORMAT
 * when it is not a readable HDF5 file (truncated, corrupt). */
SCFM_MATRIX_PRIVATE scfm_status scfm_h5_open_file(const char *path, hid_t *file, scfm_error *err);

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

#endif
