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

#ifdef __cplusplus
}
#endif
#endif
