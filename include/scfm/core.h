/* scfm core: status codes, error messages, aligned memory, the counter-based
 * random generator and a wall clock. Every other subsystem builds on this. */
#ifndef SCFM_CORE_H
#define SCFM_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SCFM_VERSION_STRING "0.1.0"

typedef enum {
    SCFM_OK = 0,
    SCFM_ERR_ARG,      /* bad argument or command line */
    SCFM_ERR_CONFIG,   /* invalid configuration */
    SCFM_ERR_IO,       /* file system */
    SCFM_ERR_FORMAT,   /* malformed input file */
    SCFM_ERR_NOMEM,
    SCFM_ERR_NUMERIC,  /* NaN or Inf */
    SCFM_ERR_INTERRUPTED
} scfm_status;

/* A failing function fills one of these and returns its status; only the CLI
 * prints it. */
typedef struct {
    scfm_status status;
    char message[1024];
} scfm_error;

/* Records the first failure (later ones keep the root cause) and returns s. */
scfm_status scfm_fail(scfm_error *err, scfm_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void scfm_error_clear(scfm_error *err);
const char *scfm_status_name(scfm_status s);

/* 64-byte aligned, zeroed allocation; NULL on failure. Free with scfm_free. */
void *scfm_alloc(size_t bytes);
void scfm_free(void *p);

/* Philox-4x32-10 (Salmon et al., SC'11): four 32-bit words from a 64-bit key
 * and a 128-bit counter. Every random decision in scfm (masking, dropout,
 * shuffling, init) is a pure function of such a (key, counter) pair, so it
 * does not depend on batch packing, thread count or the number of ranks. */
void scfm_philox(uint64_t key, const uint32_t counter[4], uint32_t out[4]);
/* A uniform float in [0, 1) from one 32-bit word (24 bits of mantissa). */
static inline float scfm_u01(uint32_t word) { return (float)(word >> 8) * (1.0f / 16777216.0f); }
/* Standard normal from two words (Box-Muller). */
float scfm_normal(uint32_t w0, uint32_t w1);

/* Streams that separate the uses of the generator. */
enum {
    SCFM_STREAM_MASK = 1,
    SCFM_STREAM_DROPOUT = 2,
    SCFM_STREAM_SHUFFLE = 3,
    SCFM_STREAM_INIT = 4,
    SCFM_STREAM_HOLDOUT = 5,
    SCFM_STREAM_VALUE_MASK = 6,
    SCFM_STREAM_VIEW = 7,
    SCFM_STREAM_LATENT = 8,   /* a variational count encoder's latent noise */
    SCFM_STREAM_GENE_MASK = 9, /* scMAE's masked genes */
    SCFM_STREAM_AUGMENT = 10  /* the contrastive augmentations of a count vector */
};

/* CRC-32 (IEEE, as zlib's crc32): start with crc = 0, feed pieces in order. */
uint32_t scfm_crc32(uint32_t crc, const void *data, size_t n);

/* out = dir + "/" + name; SCFM_ERR_ARG when it does not fit in cap. */
scfm_status scfm_path_join(char *out, size_t cap, const char *dir, const char *name, scfm_error *err);

/* mkdir -p: creates path and its missing parents. */
scfm_status scfm_make_dirs(const char *path, scfm_error *err);

/* fsync of a file or a directory (so a rename inside it is durable). */
scfm_status scfm_fsync_path(const char *path, scfm_error *err);
/* fsync of the directory that holds path (after a rename into it). */
scfm_status scfm_fsync_parent(const char *path, scfm_error *err);
/* Copies the file from to the file to (created or truncated) and syncs it. */
scfm_status scfm_copy_file(const char *from, const char *to, scfm_error *err);
/* Removes a directory and the plain files in it (one level, no recursion). */
scfm_status scfm_remove_dir(const char *path, scfm_error *err);

/* Monotonic wall clock in seconds. */
double scfm_now(void);

#ifdef __cplusplus
}
#endif
#endif
