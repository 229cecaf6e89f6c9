#include "scfm/io.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json.h"

/* Tensor bytes are handed out in place from the mapping, so the host must
 * share the format's byte order. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

static const struct {
    const char *name;
    size_t size;
} dtype_table[SCFM_DTYPE_COUNT] = {
    [SCFM_DTYPE_BOOL] = {"BOOL", 1},       [SCFM_DTYPE_U8] = {"U8", 1},
    [SCFM_DTYPE_I8] = {"I8", 1},           [SCFM_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [SCFM_DTYPE_F8_E5M2] = {"F8_E5M2", 1}, [SCFM_DTYPE_I16] = {"I16", 2},
    [SCFM_DTYPE_U16] = {"U16", 2},         [SCFM_DTYPE_F16] = {"F16", 2},
    [SCFM_DTYPE_BF16] = {"BF16", 2},       [SCFM_DTYPE_I32] = {"I32", 4},
    [SCFM_DTYPE_U32] = {"U32", 4},         [SCFM_DTYPE_F32] = {"F32", 4},
    [SCFM_DTYPE_I64] = {"I64", 8},         [SCFM_DTYPE_U64] = {"U64", 8},
    [SCFM_DTYPE_F64] = {"F64", 8},
};

const char *scfm_dtype_name(scfm_dtype dtype) {
    return (unsigned)dtype < SCFM_DTYPE_COUNT ? dtype_table[dtype].name : "?";
}

size_t scfm_dtype_size(scfm_dtype dtype) {
    return (unsigned)dtype < SCFM_DTYPE_COUNT ? dtype_table[dtype].size : 0;
}

int64_t scfm_st_tensor_numel(const scfm_st_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Bytes of a tensor; 0 (false) when the size does not fit in int64. */
static int tensor_bytes(scfm_dtype dtype, int ndim, const int64_t *shape, int64_t *bytes) {
    int64_t b = (int64_t)scfm_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return 0;
        if (shape[i] != 0 && b > INT64_MAX / shape[i]) return 0;
        b *= shape[i];
    }
    *bytes = b;
    return 1;
}

static const char *format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (len < size) snprintf(buf + len, size - len, "]");
    return buf;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice, or NULL. names is reordered. */
static const char *find_duplicate(const char **names, int n) {
    if (n < 2) return NULL;
    qsort(names, (size_t)n, sizeof *names, compare_names);
    for (int i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* ---- writer ---- */

static scfm_status check_write_args(const char *path, const scfm_st_tensor *tensors, int n_tensors,
                                    const scfm_st_meta *meta, int n_meta, scfm_error *err) {
    if (!path || n_tensors < 0 || n_meta < 0 || (n_tensors > 0 && !tensors) || (n_meta > 0 && !meta))
        return scfm_fail(err, SCFM_ERR_ARG, "safetensors write: invalid arguments");
    for (int i = 0; i < n_tensors; i++) {
        const scfm_st_tensor *t = &tensors[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: tensor %d has an invalid name", path, i);
        if ((unsigned)t->dtype >= SCFM_DTYPE_COUNT)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: tensor '%s' has an invalid dtype %d", path,
                             t->name, (int)t->dtype);
        if (t->ndim < 0 || t->ndim > SCFM_ST_MAX_DIMS)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: tensor '%s' has %d dimensions (0 to %d allowed)",
                             path, t->name, t->ndim, SCFM_ST_MAX_DIMS);
        int64_t bytes;
        if (!tensor_bytes(t->dtype, t->ndim, t->shape, &bytes))
            return scfm_fail(err, SCFM_ERR_ARG, "%s: tensor '%s' has an invalid shape", path, t->name);
        if (bytes > 0 && !t->data)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: tensor '%s' has no data", path, t->name);
    }
    for (int i = 0; i < n_meta; i++)
        if (!meta[i].key || !meta[i].value)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: metadata entry %d is incomplete", path, i);

    int most = n_tensors > n_meta ? n_tensors : n_meta;
    const char **names = malloc(sizeof *names * (size_t)(most > 0 ? most : 1));
    if (!names) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_tensors; i++) names[i] = tensors[i].name;
    const char *dup = find_duplicate(names, n_tensors);
    if (dup) {
        scfm_fail(err, SCFM_ERR_ARG, "%s: tensor name '%s' is used twice", path, dup);
    } else {
        for (int i = 0; i < n_meta; i++) names[i] = meta[i].key;
        dup = find_duplicate(names, n_meta);
        if (dup) scfm_fail(err, SCFM_ERR_ARG, "%s: metadata key '%s' is used twice", path, dup);
    }
    free(names);
    return dup ? SCFM_ERR_ARG : SCFM_OK;
}

/* The JSON header, padded with spaces so that the data starts 8-byte aligned
 * (as the Python writer does). */
static void build_header(scfm_strbuf *h, const scfm_st_tensor *tensors, int n_tensors,
                         const scfm_st_meta *meta, int n_meta) {
    scfm_strbuf_append(h, "{", 1);
    if (n_meta > 0) {
        scfm_strbuf_append(h, "\"__metadata__\":{", 16);
        for (int i = 0; i < n_meta; i++) {
            if (i) scfm_strbuf_append(h, ",", 1);
            scfm_strbuf_json_string(h, meta[i].key);
            scfm_strbuf_append(h, ":", 1);
            scfm_strbuf_json_string(h, meta[i].value);
        }
        scfm_strbuf_append(h, "}", 1);
    }
    int64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const scfm_st_tensor *t = &tensors[i];
        int64_t bytes = 0;
        tensor_bytes(t->dtype, t->ndim, t->shape, &bytes);
        if (i || n_meta > 0) scfm_strbuf_append(h, ",", 1);
        scfm_strbuf_json_string(h, t->name);
        scfm_strbuf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", scfm_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            scfm_strbuf_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        scfm_strbuf_printf(h, "],\"data_offsets\":[%lld,%lld]}", (long long)offset,
                           (long long)(offset + bytes));
        offset += bytes;
    }
    scfm_strbuf_append(h, "}", 1);
    while (!h->failed && h->len % 8 != 0) scfm_strbuf_append(h, " ", 1);
}

static int write_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

scfm_status scfm_safetensors_write(const char *path, const scfm_st_tensor *tensors, int n_tensors,
                                   const scfm_st_meta *meta, int n_meta, scfm_error *err) {
    scfm_status s = check_write_args(path, tensors, n_tensors, meta, n_meta, err);
    if (s != SCFM_OK) return s;

    scfm_strbuf header = {0};
    build_header(&header, tensors, n_tensors, meta, n_meta);
    size_t tmp_len = strlen(path) + 5;
    char *tmp = malloc(tmp_len);
    if (header.failed || !tmp) {
        scfm_strbuf_free(&header);
        free(tmp);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_len, "%s.tmp", path);

    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)header.len >> (8 * i));
    int ok = write_all(fd, len_bytes, 8) && write_all(fd, header.data, header.len);
    for (int i = 0; ok && i < n_tensors; i++) {
        int64_t bytes = 0;
        tensor_bytes(tensors[i].dtype, tensors[i].ndim, tensors[i].shape, &bytes);
        ok = write_all(fd, tensors[i].data, (size_t)bytes);
    }
    if (!ok || fsync(fd) != 0) {
        s = scfm_fail(err, SCFM_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (close(fd) != 0) {
        s = scfm_fail(err, SCFM_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        s = scfm_fail(err, SCFM_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    /* Makes the rename itself durable. */
    char *dir = strdup(path);
    s = dir ? scfm_fsync_path(dirname(dir), err) : scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    free(dir);
done:
    scfm_strbuf_free(&header);
    free(tmp);
    return s;
}

/* ---- reader ---- */

typedef struct {
    scfm_st_tensor t;
    int64_t begin, end;  /* data_offsets, relative to the data section */
    void *copy;          /* aligned copy when the bytes in the file are misaligned */
} entry;

struct scfm_safetensors {
    char *path;
    unsigned char *map;
    size_t map_len;
    entry *tensors;  /* in data order once open succeeds */
    int n, cap;
    const entry **by_name;
    scfm_st_meta *meta;
    int n_meta, cap_meta;
};

void scfm_safetensors_close(scfm_safetensors *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free((char *)f->tensors[i].t.name);
        scfm_free(f->tensors[i].copy);
    }
    free(f->tensors);
    free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->meta);
    if (f->map) munmap(f->map, f->map_len);
    free(f->path);
    free(f);
}

static scfm_status json_error(const scfm_safetensors *f, const scfm_json *j, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: invalid header JSON at byte %zu: %s", f->path,
                     scfm_json_offset(j), j->message);
}

static scfm_status nomem(const scfm_safetensors *f, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", f->path);
}

/* [n0, n1, ...] of at most max integers. 1: ok, 0: JSON error, -1: too many. */
static int parse_int_array(scfm_json *j, int64_t *out, int max, int *count) {
    *count = 0;
    if (!scfm_json_expect(j, '[')) return 0;
    if (scfm_json_peek(j) == ']') {
        j->p++;
        return 1;
    }
    for (;;) {
        if (*count == max) return -1;
        if (!scfm_json_uint(j, &out[*count])) return 0;
        (*count)++;
        int more = scfm_json_next(j, ']');
        if (more < 0) return 0;
        if (!more) return 1;
    }
}

static int lookup_dtype(const char *name, scfm_dtype *out) {
    for (int d = 0; d < SCFM_DTYPE_COUNT; d++)
        if (strcmp(dtype_table[d].name, name) == 0) {
            *out = (scfm_dtype)d;
            return 1;
        }
    return 0;
}

/* {"dtype": .., "shape": [..], "data_offsets": [b, e]} for the last entry. */
static scfm_status parse_tensor(scfm_safetensors *f, scfm_json *j, scfm_error *err) {
    entry *e = &f->tensors[f->n - 1];
    const char *name = e->t.name;
    int have_dtype = 0, have_shape = 0, have_offsets = 0;
    if (!scfm_json_expect(j, '{')) return json_error(f, j, err);
    int more = scfm_json_peek(j) != '}';
    if (!more) j->p++;
    while (more) {
        char *key;
        if (!scfm_json_string(j, &key)) return json_error(f, j, err);
        int *seen = strcmp(key, "dtype") == 0          ? &have_dtype
                    : strcmp(key, "shape") == 0        ? &have_shape
                    : strcmp(key, "data_offsets") == 0 ? &have_offsets
                                                       : NULL;
        if (!seen || *seen) {
            scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': %s field \"%s\"", f->path, name,
                      seen ? "repeated" : "unknown", key);
            free(key);
            return SCFM_ERR_FORMAT;
        }
        free(key);
        *seen = 1;
        if (!scfm_json_expect(j, ':')) return json_error(f, j, err);
        if (seen == &have_dtype) {
            char *dtype;
            if (!scfm_json_string(j, &dtype)) return json_error(f, j, err);
            int known = lookup_dtype(dtype, &e->t.dtype);
            if (!known)
                scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"", f->path, name,
                          dtype);
            free(dtype);
            if (!known) return SCFM_ERR_FORMAT;
        } else if (seen == &have_shape) {
            int r = parse_int_array(j, e->t.shape, SCFM_ST_MAX_DIMS, &e->t.ndim);
            if (r == 0) return json_error(f, j, err);
            if (r < 0)
                return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': more than %d dimensions",
                                 f->path, name, SCFM_ST_MAX_DIMS);
        } else {
            int64_t offsets[2];
            int count;
            int r = parse_int_array(j, offsets, 2, &count);
            if (r == 0) return json_error(f, j, err);
            if (r < 0 || count != 2)
                return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                                 f->path, name);
            e->begin = offsets[0];
            e->end = offsets[1];
        }
        more = scfm_json_next(j, '}');
        if (more < 0) return json_error(f, j, err);
    }
    const char *missing = !have_dtype ? "dtype" : !have_shape ? "shape" : !have_offsets ? "data_offsets" : NULL;
    if (missing)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': missing field \"%s\"", f->path, name,
                         missing);
    return SCFM_OK;
}

static scfm_status parse_metadata(scfm_safetensors *f, scfm_json *j, scfm_error *err) {
    if (!scfm_json_expect(j, '{')) return json_error(f, j, err);
    if (scfm_json_peek(j) == '}') {
        j->p++;
        return SCFM_OK;
    }
    for (;;) {
        char *key, *value;
        if (!scfm_json_string(j, &key)) return json_error(f, j, err);
        for (int i = 0; i < f->n_meta; i++)
            if (strcmp(f->meta[i].key, key) == 0) {
                scfm_fail(err, SCFM_ERR_FORMAT, "%s: metadata key '%s' appears twice", f->path, key);
                free(key);
                return SCFM_ERR_FORMAT;
            }
        if (f->n_meta == f->cap_meta) {
            int cap = f->cap_meta ? 2 * f->cap_meta : 8;
            scfm_st_meta *m = realloc(f->meta, sizeof *m * (size_t)cap);
            if (!m) {
                free(key);
                return nomem(f, err);
            }
            f->meta = m;
            f->cap_meta = cap;
        }
        f->meta[f->n_meta].key = key;
        f->meta[f->n_meta].value = NULL;
        f->n_meta++;
        if (!scfm_json_expect(j, ':')) return json_error(f, j, err);
        if (scfm_json_peek(j) != '"')
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: metadata value of '%s' is not a string",
                             f->path, key);
        if (!scfm_json_string(j, &value)) return json_error(f, j, err);
        f->meta[f->n_meta - 1].value = value;
        int more = scfm_json_next(j, '}');
        if (more < 0) return json_error(f, j, err);
        if (!more) return SCFM_OK;
    }
}

static scfm_status parse_header(scfm_safetensors *f, const char *text, size_t len, scfm_error *err) {
    scfm_json j;
    scfm_json_init(&j, text, len);
    int have_metadata = 0;
    if (!scfm_json_expect(&j, '{')) return json_error(f, &j, err);
    int more = scfm_json_peek(&j) != '}';
    if (!more) j.p++;
    while (more) {
        char *key;
        if (!scfm_json_string(&j, &key)) return json_error(f, &j, err);
        scfm_status s;
        if (strcmp(key, "__metadata__") == 0) {
            free(key);
            if (have_metadata)
                return scfm_fail(err, SCFM_ERR_FORMAT, "%s: \"__metadata__\" appears twice", f->path);
            have_metadata = 1;
            if (!scfm_json_expect(&j, ':')) return json_error(f, &j, err);
            s = parse_metadata(f, &j, err);
        } else {
            if (f->n == f->cap) {
                int cap = f->cap ? 2 * f->cap : 64;
                entry *t = realloc(f->tensors, sizeof *t * (size_t)cap);
                if (!t) {
                    free(key);
                    return nomem(f, err);
                }
                f->tensors = t;
                f->cap = cap;
            }
            memset(&f->tensors[f->n], 0, sizeof f->tensors[f->n]);
            f->tensors[f->n++].t.name = key;
            if (!scfm_json_expect(&j, ':')) return json_error(f, &j, err);
            s = parse_tensor(f, &j, err);
        }
        if (s != SCFM_OK) return s;
        more = scfm_json_next(&j, '}');
        if (more < 0) return json_error(f, &j, err);
    }
    if (scfm_json_peek(&j) != -1) {
        snprintf(j.message, sizeof j.message, "unexpected bytes after the header object");
        return json_error(f, &j, err);
    }
    return SCFM_OK;
}

static int compare_offsets(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

static int compare_entry_names(const void *a, const void *b) {
    return strcmp((*(const entry *const *)a)->t.name, (*(const entry *const *)b)->t.name);
}

/* Each range matches its shape and lies in the data section, and together
 * they tile it: the checks of the reference implementation. */
static scfm_status check_layout(scfm_safetensors *f, int64_t data_len, scfm_error *err) {
    char shape[160];
    for (int i = 0; i < f->n; i++) {
        const entry *e = &f->tensors[i];
        int64_t bytes;
        if (e->end < e->begin)
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s': data_offsets [%lld, %lld) are reversed",
                             f->path, e->t.name, (long long)e->begin, (long long)e->end);
        if (!tensor_bytes(e->t.dtype, e->t.ndim, e->t.shape, &bytes) || e->end - e->begin != bytes)
            return scfm_fail(err, SCFM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%lld, %lld) do not match shape %s of %s",
                             f->path, e->t.name, (long long)e->begin, (long long)e->end,
                             format_shape(shape, sizeof shape, e->t.ndim, e->t.shape),
                             scfm_dtype_name(e->t.dtype));
        if (e->end > data_len)
            return scfm_fail(err, SCFM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%lld, %lld) run past the end of the "
                             "file, whose data section has %lld bytes (truncated?)",
                             f->path, e->t.name, (long long)e->begin, (long long)e->end,
                             (long long)data_len);
    }
    if (f->n > 0) qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, compare_offsets);
    int64_t covered = 0;
    for (int i = 0; i < f->n; i++) {
        const entry *e = &f->tensors[i];
        if (e->begin < covered)
            return scfm_fail(err, SCFM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%lld, %lld) overlap tensor '%s' [%lld, %lld)",
                             f->path, e->t.name, (long long)e->begin, (long long)e->end,
                             f->tensors[i - 1].t.name, (long long)f->tensors[i - 1].begin,
                             (long long)f->tensors[i - 1].end);
        if (e->begin > covered)
            return scfm_fail(err, SCFM_ERR_FORMAT,
                             "%s: data bytes [%lld, %lld) before tensor '%s' belong to no tensor",
                             f->path, (long long)covered, (long long)e->begin, e->t.name);
        covered = e->end;
    }
    if (covered != data_len)
        return scfm_fail(err, SCFM_ERR_FORMAT,
                         "%s: %lld bytes after the last tensor belong to no tensor", f->path,
                         (long long)(data_len - covered));
    return SCFM_OK;
}

scfm_status scfm_safetensors_open(const char *path, scfm_safetensors **out, scfm_error *err) {
    *out = NULL;
    scfm_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    scfm_status s;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        s = scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        s = scfm_fail(err, SCFM_ERR_IO, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size < 8) {
        close(fd);
        s = scfm_fail(err, SCFM_ERR_FORMAT,
                      "%s: file has %lld bytes, fewer than the 8-byte header length", path,
                      (long long)st.st_size);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        s = scfm_fail(err, SCFM_ERR_IO, "%s: cannot map: %s", path, strerror(map_errno));
        goto fail;
    }
    f->map = map;
    f->map_len = (size_t)st.st_size;

    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)f->map[i] << (8 * i);
    if (header_len == 0 || header_len > f->map_len - 8) {
        s = scfm_fail(err, SCFM_ERR_FORMAT,
                      "%s: header length %llu does not fit the %zu bytes after the length field "
                      "(truncated, or not a safetensors file?)",
                      path, (unsigned long long)header_len, f->map_len - 8);
        goto fail;
    }
    s = parse_header(f, (const char *)f->map + 8, (size_t)header_len, err);
    if (s != SCFM_OK) goto fail;
    const unsigned char *data = f->map + 8 + header_len;
    s = check_layout(f, (int64_t)(f->map_len - 8 - header_len), err);
    if (s != SCFM_OK) goto fail;

    f->by_name = malloc(sizeof *f->by_name * (size_t)(f->n > 0 ? f->n : 1));
    if (!f->by_name) {
        s = nomem(f, err);
        goto fail;
    }
    for (int i = 0; i < f->n; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, (size_t)f->n, sizeof *f->by_name, compare_entry_names);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->by_name[i - 1]->t.name, f->by_name[i]->t.name) == 0) {
            s = scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s' appears twice", path,
                          f->by_name[i]->t.name);
            goto fail;
        }

    for (int i = 0; i < f->n; i++) {
        entry *e = &f->tensors[i];
        const unsigned char *p = data + e->begin;
        size_t bytes = (size_t)(e->end - e->begin);
        if ((uintptr_t)p % scfm_dtype_size(e->t.dtype) != 0) {
            if (!(e->copy = scfm_alloc(bytes))) {
                s = nomem(f, err);
                goto fail;
            }
            memcpy(e->copy, p, bytes);
            p = e->copy;
        }
        e->t.data = p;
    }
    *out = f;
    return SCFM_OK;
fail:
    scfm_safetensors_close(f);
    return s;
}

const char *scfm_safetensors_path(const scfm_safetensors *f) { return f->path; }

int scfm_safetensors_count(const scfm_safetensors *f) { return f->n; }

const scfm_st_tensor *scfm_safetensors_at(const scfm_safetensors *f, int i) {
    return i >= 0 && i < f->n ? &f->tensors[i].t : NULL;
}

const scfm_st_tensor *scfm_safetensors_find(const scfm_safetensors *f, const char *name) {
    entry key;
    key.t.name = name;
    const entry *k = &key;
    const entry *const *hit = bsearch(&k, f->by_name, (size_t)f->n, sizeof *f->by_name, compare_entry_names);
    return hit ? &(*hit)->t : NULL;
}

scfm_status scfm_safetensors_expect(const scfm_safetensors *f, const char *name, scfm_dtype dtype,
                                    int ndim, const int64_t *shape, const scfm_st_tensor **out,
                                    scfm_error *err) {
    const scfm_st_tensor *t = scfm_safetensors_find(f, name);
    if (out) *out = NULL;
    if (!t) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s' is missing", f->path, name);
    if (t->dtype != dtype)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s' is %s, expected %s", f->path, name,
                         scfm_dtype_name(t->dtype), scfm_dtype_name(dtype));
    int same = ndim < 0 || ndim == t->ndim;
    for (int i = 0; same && ndim >= 0 && i < ndim; i++) same = shape[i] == t->shape[i];
    if (!same) {
        char have[160], want[160];
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", f->path,
                         name, format_shape(have, sizeof have, t->ndim, t->shape),
                         format_shape(want, sizeof want, ndim, shape));
    }
    if (out) *out = t;
    return SCFM_OK;
}

int scfm_safetensors_meta_count(const scfm_safetensors *f) { return f->n_meta; }

const scfm_st_meta *scfm_safetensors_meta_at(const scfm_safetensors *f, int i) {
    return i >= 0 && i < f->n_meta ? &f->meta[i] : NULL;
}

const char *scfm_safetensors_meta(const scfm_safetensors *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}
