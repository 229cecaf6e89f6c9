/* Token shards: one HDF5 file per shard (docs/data-format.md). Cells are
 * numbered globally in shard-name order; a cell is read as one hyperslab. */
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

#define SHARD_FORMAT "scfm-tokens"
#define SHARD_VERSION 1

typedef struct {
    char path[1024];
    hid_t file, tokens;
    int64_t n_cells;
    int64_t first_cell;  /* global id of its first cell */
    int64_t *offsets;    /* [n_cells + 1] */
} shard;

struct scfm_shards {
    shard *shards;
    int n_shards;
    int64_t n_cells, n_tokens;
    int vocab_size, max_length;
    int32_t *buffer;
    int buffer_cap;
};

static int read_int_attr(hid_t file, const char *name, int64_t *value) {
    if (H5Aexists(file, name) <= 0) return 0;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    if (a < 0) return 0;
    herr_t r = H5Aread(a, H5T_NATIVE_INT64, value);
    H5Aclose(a);
    return r >= 0;
}

static int read_string_attr(hid_t file, const char *name, char *out, size_t cap) {
    if (H5Aexists(file, name) <= 0) return 0;
    hid_t a = H5Aopen(file, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a);
    int ok = 0;
    if (H5Tget_class(t) == H5T_STRING && !H5Tis_variable_str(t)) {
        size_t n = H5Tget_size(t);
        if (n < cap) {
            hid_t mem = H5Tcopy(H5T_C_S1);
            H5Tset_size(mem, n + 1);
            ok = H5Aread(a, mem, out) >= 0;
            out[n] = '\0';
            H5Tclose(mem);
        }
    }
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

static int64_t dataset_length(hid_t d) {
    hid_t space = H5Dget_space(d);
    hsize_t dims[1] = {0};
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd == 1) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    return nd == 1 ? (int64_t)dims[0] : -1;
}

static scfm_status open_shard(shard *s, int64_t *vocab_size, scfm_error *err) {
    s->file = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->file < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open as HDF5", s->path);
    char format[64] = "";
    int64_t version = 0;
    if (!read_string_attr(s->file, "format", format, sizeof format) || strcmp(format, SHARD_FORMAT) ||
        !read_int_attr(s->file, "version", &version) || version != SHARD_VERSION)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: not an scfm token shard (attribute 'format' must be "
                         "\"%s\" and 'version' %d)", s->path, SHARD_FORMAT, SHARD_VERSION);
    if (!read_int_attr(s->file, "vocab_size", vocab_size) || *vocab_size < 3)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: attribute 'vocab_size' missing or below 3", s->path);
    if (H5Lexists(s->file, "offsets", H5P_DEFAULT) <= 0 || H5Lexists(s->file, "tokens", H5P_DEFAULT) <= 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: datasets 'offsets' and 'tokens' are required", s->path);
    hid_t off = H5Dopen2(s->file, "offsets", H5P_DEFAULT);
    int64_t n_off = dataset_length(off);
    s->tokens = H5Dopen2(s->file, "tokens", H5P_DEFAULT);
    int64_t n_tok = dataset_length(s->tokens);
    if (n_off < 1 || n_tok < 0) {
        H5Dclose(off);
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' and 'tokens' must be 1-D", s->path);
    }
    s->n_cells = n_off - 1;
    s->offsets = malloc(sizeof(int64_t) * (size_t)n_off);
    if (!s->offsets) {
        H5Dclose(off);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for %lld offsets", s->path, (long long)n_off);
    }
    herr_t r = H5Dread(off, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->offsets);
    H5Dclose(off);
    if (r < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read 'offsets'", s->path);
    if (s->offsets[0] != 0 || s->offsets[s->n_cells] != n_tok)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' must start at 0 and end at the %lld tokens",
                         s->path, (long long)n_tok);
    for (int64_t i = 0; i < s->n_cells; i++)
        if (s->offsets[i + 1] < s->offsets[i])
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' decrease at cell %lld", s->path,
                             (long long)i);
    return SCFM_OK;
}

static int compare_paths(const void *a, const void *b) {
    return strcmp(((const shard *)a)->path, ((const shard *)b)->path);
}

scfm_status scfm_shards_open(const char *dir, scfm_shards **out, scfm_error *err) {
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported through err */
    DIR *d = opendir(dir);
    if (!d) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open the shard directory", dir);
    scfm_shards *s = calloc(1, sizeof *s);
    int cap = 0;
    struct dirent *e;
    scfm_status st = s ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    while (st == SCFM_OK && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "shard_", 6) || n < 4 || strcmp(e->d_name + n - 3, ".h5")) continue;
        if (s->n_shards == cap) {
            cap = cap ? 2 * cap : 16;
            shard *grown = realloc(s->shards, sizeof(shard) * (size_t)cap);
            if (!grown) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory listing %s", dir);
                break;
            }
            s->shards = grown;
        }
        shard *sh = &s->shards[s->n_shards++];
        memset(sh, 0, sizeof *sh);
        sh->file = sh->tokens = H5I_INVALID_HID;
        snprintf(sh->path, sizeof sh->path, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (st == SCFM_OK && s->n_shards == 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: no shard_*.h5 files", dir);
    if (st == SCFM_OK) qsort(s->shards, (size_t)s->n_shards, sizeof(shard), compare_paths);
    for (int i = 0; st == SCFM_OK && i < s->n_shards; i++) {
        int64_t vocab = 0;
        st = open_shard(&s->shards[i], &vocab, err);
        if (st != SCFM_OK) break;
        if (i > 0 && vocab != s->vocab_size)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: vocab_size %lld differs from %d in %s",
                           s->shards[i].path, (long long)vocab, s->vocab_size, s->shards[0].path);
        s->vocab_size = (int)vocab;
        s->shards[i].first_cell = s->n_cells;
        s->n_cells += s->shards[i].n_cells;
        s->n_tokens += s->shards[i].offsets[s->shards[i].n_cells];
        for (int64_t c = 0; c < s->shards[i].n_cells; c++) {
            int64_t L = s->shards[i].offsets[c + 1] - s->shards[i].offsets[c];
            if (L > s->max_length) s->max_length = (int)L;
        }
    }
    if (st == SCFM_OK && s->n_cells == 0) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: the shards hold no cells", dir);
    if (st != SCFM_OK) {
        scfm_shards_close(s);
        return st;
    }
    *out = s;
    return SCFM_OK;
}

void scfm_shards_close(scfm_shards *s) {
    if (!s) return;
    for (int i = 0; i < s->n_shards; i++) {
        if (s->shards[i].tokens >= 0) H5Dclose(s->shards[i].tokens);
        if (s->shards[i].file >= 0) H5Fclose(s->shards[i].file);
        free(s->shards[i].offsets);
    }
    free(s->shards);
    free(s->buffer);
    free(s);
}

int64_t scfm_shards_num_cells(const scfm_shards *s) { return s->n_cells; }
int64_t scfm_shards_num_tokens(const scfm_shards *s) { return s->n_tokens; }
int scfm_shards_vocab_size(const scfm_shards *s) { return s->vocab_size; }
int scfm_shards_max_length(const scfm_shards *s) { return s->max_length; }

scfm_status scfm_shards_cell(scfm_shards *s, int64_t i, const int32_t **tokens, int *length,
                             scfm_error *err) {
    if (i < 0 || i >= s->n_cells)
        return scfm_fail(err, SCFM_ERR_ARG, "cell %lld outside the %lld cells of the shards", (long long)i,
                         (long long)s->n_cells);
    int lo = 0, hi = s->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->shards[mid].first_cell <= i) lo = mid;
        else hi = mid - 1;
    }
    shard *sh = &s->shards[lo];
    int64_t j = i - sh->first_cell;
    hsize_t start = (hsize_t)sh->offsets[j], count = (hsize_t)(sh->offsets[j + 1] - sh->offsets[j]);
    if ((int)count > s->buffer_cap) {
        int32_t *grown = realloc(s->buffer, sizeof(int32_t) * (count + 1));
        if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory reading cell %lld", (long long)i);
        s->buffer = grown;
        s->buffer_cap = (int)count;
    }
    *tokens = s->buffer;
    *length = (int)count;
    if (count == 0) return SCFM_OK;
    hid_t fspace = H5Dget_space(sh->tokens);
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, &start, NULL, &count, NULL);
    hid_t mspace = H5Screate_simple(1, &count, NULL);
    herr_t r = H5Dread(sh->tokens, H5T_NATIVE_INT32, mspace, fspace, H5P_DEFAULT, s->buffer);
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (r < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot read the tokens of cell %lld", sh->path, (long long)j);
    return SCFM_OK;
}

static herr_t write_attr_int(hid_t file, const char *name, int64_t value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return r;
}

static herr_t write_attr_string(hid_t file, const char *name, const char *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value));
    hid_t a = H5Acreate2(file, name, t, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, t, value);
    if (a >= 0) H5Aclose(a);
    H5Tclose(t);
    H5Sclose(space);
    return r;
}

static herr_t write_dataset(hid_t file, const char *name, hid_t file_type, hid_t mem_type, hsize_t n,
                            const void *data) {
    hid_t space = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(file, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = d < 0 ? -1 : H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Sclose(space);
    return r;
}

scfm_status scfm_shard_write(const char *path, const int32_t *tokens, const int64_t *offsets,
                             int64_t n_cells, int vocab_size, scfm_error *err) {
    /* Written beside the target and renamed, so a reader never sees half a shard. */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create", tmp);
    herr_t r = write_attr_string(f, "format", SHARD_FORMAT);
    if (r >= 0) r = write_attr_int(f, "version", SHARD_VERSION);
    if (r >= 0) r = write_attr_int(f, "vocab_size", vocab_size);
    if (r >= 0) r = write_dataset(f, "offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)n_cells + 1, offsets);
    if (r >= 0) r = write_dataset(f, "tokens", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)offsets[n_cells], tokens);
    if (H5Fclose(f) < 0) r = -1;
    if (r < 0 || rename(tmp, path) != 0) {
        remove(tmp);
        return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write the shard", path);
    }
    return SCFM_OK;
}
