/* Writing token shards (format 2, docs/formats.md) and publishing output
 * directories.
 *
 * A shard file grows by appends: each append carries every rank's next cells
 * (the ranks' cells follow in rank order), so a rank never holds more than
 * its share of one round of cells. The per-token and per-cell datasets are
 * chunked and extendible; an append exchanges the ranks' cell and token
 * counts, extends every dataset by the total and lets each rank write its
 * hyperslab with one collective transfer per dataset. */
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/comm_mpi.h"
#include "io/h5util.h"
#include "scfm/data.h"

#define SHARD_FORMAT "scfm-tokens"
#define TOKEN_CHUNK ((hsize_t)1 << 16)  /* elements per chunk of the per-token datasets */
#define CELL_CHUNK ((hsize_t)1 << 14)   /* of the per-cell datasets */

/* ---- output directories ---- */

/* What scfm writes into an output directory, and so may remove from it. */
static int is_own_file(const char *name) {
    size_t n = strlen(name);
    return !strcmp(name, SCFM_VOCAB_FILE) || (!strncmp(name, "shard_", 6) && n > 9 && !strcmp(name + n - 3, ".h5"));
}

static int is_dot(const char *name) { return !strcmp(name, ".") || !strcmp(name, ".."); }

/* The first entry of dir that scfm did not write, or "" when there is none. */
static scfm_status foreign_entry(const char *dir, char *name, size_t cap, scfm_error *err) {
    DIR *d = opendir(dir);
    if (!d) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    name[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)))
        if (!is_dot(e->d_name) && !is_own_file(e->d_name)) {
            snprintf(name, cap, "%s", e->d_name);
            break;
        }
    closedir(d);
    return SCFM_OK;
}

/* Removes scfm's files from dir, then dir itself; anything else stays and
 * makes it fail. */
static scfm_status remove_output(const char *dir, scfm_error *err) {
    char other[256];
    if (foreign_entry(dir, other, sizeof other, err) != SCFM_OK) return err->status;
    if (other[0])
        return scfm_fail(err, SCFM_ERR_IO, "%s: not replaced: it holds '%s', which scfm did not write", dir, other);
    DIR *d = opendir(dir);
    if (!d) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (is_own_file(e->d_name) && snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path)
            unlink(path);
    closedir(d);
    if (rmdir(dir) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
    return SCFM_OK;
}

static int path_exists(const char *path, int *is_dir) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    *is_dir = S_ISDIR(st.st_mode);
    return 1;
}

scfm_status scfm_output_dir_begin(const char *dir, int force, scfm_error *err) {
    char tmp[4096], other[256];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) >= (int)sizeof tmp)
        return scfm_fail(err, SCFM_ERR_ARG, "path too long: %s", dir);
    int is_dir = 0;
    if (path_exists(dir, &is_dir)) {
        if (!force) return scfm_fail(err, SCFM_ERR_ARG, "%s: the output exists (--force replaces it)", dir);
        if (!is_dir) return scfm_fail(err, SCFM_ERR_ARG, "%s: exists and is not a directory", dir);
        /* Refuse now rather than after all the work. */
        if (foreign_entry(dir, other, sizeof other, err) != SCFM_OK) return err->status;
        if (other[0])
            return scfm_fail(err, SCFM_ERR_ARG, "%s: not replaced: it holds '%s', which scfm did not write", dir,
                             other);
    }
    /* A temporary directory left by a run that died. */
    if (path_exists(tmp, &is_dir) && remove_output(tmp, err) != SCFM_OK) return err->status;
    return scfm_make_dirs(tmp, err);
}

scfm_status scfm_output_dir_commit(const char *dir, scfm_error *err) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    int is_dir = 0;
    if (path_exists(dir, &is_dir) && remove_output(dir, err) != SCFM_OK) return err->status;
    if (rename(tmp, dir) != 0)
        return scfm_fail(err, SCFM_ERR_IO, "cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    return SCFM_OK;
}

void scfm_output_dir_discard(const char *dir) {
    char tmp[4096];
    scfm_error ignored = {0};
    int is_dir = 0;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", dir) < (int)sizeof tmp && path_exists(tmp, &is_dir))
        remove_output(tmp, &ignored);
}

/* ---- HDF5 helpers ---- */

static herr_t write_attr_int(hid_t loc, const char *name, int64_t value) {
    return scfm_h5_write_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, -1, &value);
}

/* A fixed-length UTF-8 string, the form the shard reader accepts. */
static herr_t write_attr_string(hid_t loc, const char *name, const char *value) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(value) ? strlen(value) : 1);
    H5Tset_cset(t, H5T_CSET_UTF8);
    herr_t r = scfm_h5_write_attr(loc, name, t, t, -1, value);
    H5Tclose(t);
    return r;
}

/* A 1-D dataset that grows by appends. */
static hid_t create_growing(hid_t loc, const char *name, hid_t type, hsize_t chunk) {
    hsize_t dims = 0, maxdims = H5S_UNLIMITED;
    return scfm_h5_create_dataset(loc, name, type, 1, &dims, &maxdims, &chunk, SCFM_H5_NO_FILL);
}

/* Writes data to elements [start, start + n) of a 1-D dataset; a rank with
 * nothing to write still takes part in the collective transfer. */
static herr_t write_part(hid_t d, hid_t dxpl, hid_t mem_type, int64_t start, int64_t n, const void *data) {
    return scfm_h5_write_rows(d, dxpl, mem_type, start, n, 0, data);
}

/* A 1-D dataset of n elements of type, written whole by rank 0. */
static herr_t write_fixed(hid_t loc, const char *name, hid_t type, hid_t mem_type, int64_t n, const void *data,
                          hid_t dxpl, int rank) {
    hsize_t dims = (hsize_t)n;
    hid_t d = scfm_h5_create_dataset(loc, name, type, 1, &dims, NULL, NULL, 0);
    herr_t r = d < 0 ? -1 : write_part(d, dxpl, mem_type, 0, rank == 0 ? n : 0, data);
    if (d >= 0) H5Dclose(d);
    return r;
}

/* A fixed-length UTF-8 string dataset of n strings, written by rank 0. */
static herr_t write_strings(hid_t loc, const char *name, const char *const *strings, int64_t n, hid_t dxpl, int rank) {
    size_t width = 1;
    for (int64_t i = 0; i < n; i++)
        if (strlen(strings[i]) > width) width = strlen(strings[i]);
    char *buf = calloc((size_t)(n > 0 ? n : 1), width);
    if (!buf) return -1;
    for (int64_t i = 0; i < n; i++) memcpy(buf + (size_t)i * width, strings[i], strlen(strings[i]));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, width);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    H5Tset_cset(t, H5T_CSET_UTF8);
    herr_t r = write_fixed(loc, name, t, t, n, buf, dxpl, rank);
    H5Tclose(t);
    free(buf);
    return r;
}

/* ---- the writer ---- */

struct scfm_shard_writer {
    scfm_comm *comm;
    int rank, size;
    char path[4096];
    hid_t file, dxpl;
    hid_t tokens, values, offsets, cell_id, count_data, library; /* count_data: dataset 'counts' */
    int n_obs;
    hid_t *obs_codes;
    int64_t n_cells, n_tokens;  /* appended so far, all ranks */
    int64_t *counts;            /* [2 * size] cells and tokens of each rank's append */
    int64_t *scratch;           /* this rank's offsets */
    int64_t scratch_cap;
};

/* Closes everything and frees w; the result of closing the file. */
static herr_t close_writer(scfm_shard_writer *w) {
    hid_t *handles[] = {&w->tokens, &w->values, &w->offsets, &w->cell_id, &w->count_data, &w->library};
    for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
        if (*handles[i] >= 0) H5Dclose(*handles[i]);
    for (int i = 0; i < w->n_obs; i++)
        if (w->obs_codes[i] >= 0) H5Dclose(w->obs_codes[i]);
    if (w->dxpl >= 0) H5Pclose(w->dxpl);
    herr_t r = w->file >= 0 ? H5Fclose(w->file) : 0;
    free(w->obs_codes);
    free(w->counts);
    free(w->scratch);
    free(w);
    return r;
}

void scfm_shard_abort(scfm_shard_writer *w) {
    if (w) close_writer(w);
}

/* Every rank's outcome: with comm, a failure anywhere fails everyone. */
static scfm_status settle(scfm_shard_writer *w, herr_t r, const char *what, scfm_error *err) {
    scfm_status st = r < 0 ? scfm_fail(err, SCFM_ERR_IO, "%s: cannot write %s", w->path, what) : SCFM_OK;
    return w->comm ? scfm_comm_agree(w->comm, st, err) : st;
}

static herr_t write_meta(scfm_shard_writer *w, const scfm_shard_meta *m) {
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)m->vocab_hash);
    herr_t r = write_attr_string(w->file, "format", SHARD_FORMAT);
    if (r >= 0) r = write_attr_int(w->file, "version", SCFM_SHARD_VERSION);
    if (r >= 0) r = write_attr_string(w->file, "mode", m->mode);
    if (r >= 0) r = write_attr_int(w->file, "vocab_size", m->vocab_size);
    if (r >= 0) r = write_attr_string(w->file, "vocab_hash", hash);
    if (r >= 0) r = write_attr_int(w->file, "max_length", m->max_length);
    if (r >= 0) r = write_attr_int(w->file, "n_bins", m->n_bins);
    if (r >= 0) r = write_attr_string(w->file, "normalisation", m->normalisation);
    if (r >= 0) r = write_attr_int(w->file, "shard_index", m->shard_index);
    if (r >= 0) r = write_attr_int(w->file, "n_shards", m->n_shards);
    hid_t g = r >= 0 ? scfm_h5_create_group(w->file, "sources", 0) : -1;
    r = g < 0 ? -1 : write_strings(g, "path", m->sources, m->n_sources, w->dxpl, w->rank);
    if (r >= 0)
        r = write_fixed(g, "n_cells", H5T_STD_I64LE, H5T_NATIVE_INT64, m->n_sources, m->source_cells, w->dxpl,
                        w->rank);
    if (g >= 0) H5Gclose(g);
    /* counts mode: the gene set, once per shard */
    if (r >= 0 && m->n_genes > 0)
        r = write_fixed(w->file, "genes", H5T_STD_I32LE, H5T_NATIVE_INT32, m->n_genes, m->genes, w->dxpl, w->rank);
    if (r >= 0 && m->n_genes > 0) r = write_strings(w->file, "gene_ids", m->gene_ids, m->n_genes, w->dxpl, w->rank);
    return r;
}

static herr_t create_datasets(scfm_shard_writer *w, const scfm_shard_meta *m) {
    hid_t token_type = m->vocab_size <= 65535 ? H5T_STD_U16LE : H5T_STD_U32LE;
    w->tokens = create_growing(w->file, "tokens", token_type, TOKEN_CHUNK);
    if (m->n_bins > 0) w->values = create_growing(w->file, "values", H5T_STD_U8LE, TOKEN_CHUNK);
    w->offsets = create_growing(w->file, "offsets", H5T_STD_I64LE, CELL_CHUNK);
    w->cell_id = create_growing(w->file, "cell_id", H5T_STD_I64LE, CELL_CHUNK);
    if (m->n_genes > 0) {
        w->count_data = create_growing(w->file, "counts", H5T_IEEE_F32LE, TOKEN_CHUNK);
        w->library = create_growing(w->file, "library", H5T_IEEE_F32LE, CELL_CHUNK);
    }
    if (w->tokens < 0 || (m->n_bins > 0 && w->values < 0) || w->offsets < 0 || w->cell_id < 0 ||
        (m->n_genes > 0 && (w->count_data < 0 || w->library < 0)))
        return -1;
    /* offsets starts with the 0 of the first cell */
    hsize_t one = 1;
    const int64_t zero = 0;
    herr_t r = H5Dset_extent(w->offsets, &one);
    if (r >= 0) r = write_part(w->offsets, w->dxpl, H5T_NATIVE_INT64, 0, w->rank == 0 ? 1 : 0, &zero);
    hid_t obs = m->n_obs > 0 && r >= 0 ? scfm_h5_create_group(w->file, "obs", 0) : -1;
    if (m->n_obs > 0 && obs < 0) r = -1;
    for (int i = 0; i < m->n_obs && r >= 0; i++) {
        hid_t g = scfm_h5_create_group(obs, m->obs_columns[i], 0);
        r = g < 0 ? -1 : write_strings(g, "categories", m->obs_categories[i], m->obs_n_categories[i], w->dxpl, w->rank);
        w->obs_codes[i] = g < 0 ? -1 : create_growing(g, "codes", H5T_STD_I32LE, CELL_CHUNK);
        if (w->obs_codes[i] < 0) r = -1;
        if (g >= 0) H5Gclose(g);
    }
    if (obs >= 0) H5Gclose(obs);
    return r;
}

scfm_status scfm_shard_create(scfm_comm *comm, const char *path, const scfm_shard_meta *meta,
                              scfm_shard_writer **out, scfm_error *err) {
    *out = NULL;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported through err */
    scfm_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    w->comm = comm;
    w->rank = comm ? scfm_comm_rank(comm) : 0;
    w->size = comm ? scfm_comm_size(comm) : 1;
    w->file = w->dxpl = w->tokens = w->values = w->offsets = w->cell_id = w->count_data = w->library = H5I_INVALID_HID;
    w->n_obs = meta->n_obs;
    snprintf(w->path, sizeof w->path, "%s", path);
    w->obs_codes = malloc(sizeof(hid_t) * (size_t)(meta->n_obs + 1));
    w->counts = malloc(sizeof(int64_t) * 2 * (size_t)w->size);
    scfm_status st = SCFM_OK;
    if (!w->obs_codes || !w->counts) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (st == SCFM_OK && !strcmp(meta->mode, "counts") != (meta->n_genes > 0 && meta->genes && meta->gene_ids))
        st = scfm_fail(err, SCFM_ERR_ARG, "shard mode %s: a gene set belongs to counts mode, which needs one",
                       meta->mode);
    for (int i = 0; st == SCFM_OK && i < meta->n_obs; i++) {
        w->obs_codes[i] = H5I_INVALID_HID;
        if (strchr(meta->obs_columns[i], '/') || !meta->obs_columns[i][0])
            st = scfm_fail(err, SCFM_ERR_ARG, "obs column '%s': names must be non-empty and hold no '/'",
                           meta->obs_columns[i]);
    }
    if (comm) st = scfm_comm_agree(comm, st, err);
    if (st != SCFM_OK) {
        w->n_obs = 0;
        close_writer(w);
        return st;
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    w->dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (comm) {
        H5Pset_fapl_mpio(fapl, scfm_comm_mpi(comm), MPI_INFO_NULL);
        H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE);
    }
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    herr_t r = w->file < 0 ? -1 : write_meta(w, meta);
    if (r >= 0) r = create_datasets(w, meta);
    if ((st = settle(w, r, "the shard's attributes and datasets", err)) != SCFM_OK) {
        close_writer(w);
        return st;
    }
    *out = w;
    return SCFM_OK;
}

static herr_t extend(hid_t d, int64_t n) {
    hsize_t dims = (hsize_t)n;
    return d < 0 ? 0 : H5Dset_extent(d, &dims);
}

scfm_status scfm_shard_append(scfm_shard_writer *w, const scfm_shard_cells *cells, scfm_error *err) {
    const int64_t n = cells->n_cells, t = n > 0 ? cells->offsets[n] : 0;
    int64_t mine[2] = {n, t};
    scfm_status st = SCFM_OK;
    if (w->comm) st = scfm_comm_allgather(w->comm, mine, sizeof mine, w->counts, err);
    else memcpy(w->counts, mine, sizeof mine);
    if (st != SCFM_OK) return st;
    int64_t cell0 = w->n_cells, token0 = w->n_tokens, all_cells = 0, all_tokens = 0;
    for (int r = 0; r < w->size; r++) {
        if (r < w->rank) {
            cell0 += w->counts[2 * r];
            token0 += w->counts[2 * r + 1];
        }
        all_cells += w->counts[2 * r];
        all_tokens += w->counts[2 * r + 1];
    }
    if (n > w->scratch_cap) {
        free(w->scratch);
        w->scratch = malloc(sizeof(int64_t) * (size_t)n);
        w->scratch_cap = w->scratch ? n : 0;
    }
    st =
        n > 0 && !w->scratch ? scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for %lld offsets", (long long)n) : SCFM_OK;
    if (w->comm) st = scfm_comm_agree(w->comm, st, err);
    if (st != SCFM_OK) return st;
    /* Where each cell ends in the shard's token stream. */
    for (int64_t c = 0; c < n; c++) w->scratch[c] = token0 + cells->offsets[c + 1];
    herr_t r = extend(w->tokens, w->n_tokens + all_tokens);
    if (r >= 0) r = extend(w->values, w->n_tokens + all_tokens);
    if (r >= 0) r = extend(w->offsets, w->n_cells + all_cells + 1);
    if (r >= 0) r = extend(w->cell_id, w->n_cells + all_cells);
    if (r >= 0) r = extend(w->count_data, w->n_tokens + all_tokens);
    if (r >= 0) r = extend(w->library, w->n_cells + all_cells);
    for (int i = 0; i < w->n_obs && r >= 0; i++) r = extend(w->obs_codes[i], w->n_cells + all_cells);
    if (r >= 0) r = write_part(w->tokens, w->dxpl, H5T_NATIVE_INT32, token0, t, cells->tokens);
    if (r >= 0 && w->values >= 0) r = write_part(w->values, w->dxpl, H5T_NATIVE_UINT8, token0, t, cells->values);
    if (r >= 0) r = write_part(w->offsets, w->dxpl, H5T_NATIVE_INT64, cell0 + 1, n, w->scratch);
    if (r >= 0) r = write_part(w->cell_id, w->dxpl, H5T_NATIVE_INT64, cell0, n, cells->cell_ids);
    if (r >= 0 && w->count_data >= 0) r = write_part(w->count_data, w->dxpl, H5T_NATIVE_FLOAT, token0, t, cells->counts);
    if (r >= 0 && w->library >= 0) r = write_part(w->library, w->dxpl, H5T_NATIVE_FLOAT, cell0, n, cells->library);
    for (int i = 0; i < w->n_obs && r >= 0; i++)
        r = write_part(w->obs_codes[i], w->dxpl, H5T_NATIVE_INT32, cell0, n, cells->obs_codes[i]);
    w->n_cells += all_cells;
    w->n_tokens += all_tokens;
    return settle(w, r, "cells", err);
}

scfm_status scfm_shard_finish(scfm_shard_writer *w, int64_t skipped_cells, scfm_error *err) {
    scfm_comm *comm = w->comm;
    char path[sizeof w->path];
    memcpy(path, w->path, sizeof path);
    herr_t r = write_attr_int(w->file, "n_cells", w->n_cells);
    if (r >= 0) r = write_attr_int(w->file, "n_tokens", w->n_tokens);
    if (r >= 0) r = write_attr_int(w->file, "skipped_cells", skipped_cells);
    /* Closing flushes everything; only then is the file complete. */
    herr_t closed = close_writer(w);
    scfm_status st = r < 0 || closed < 0 ? scfm_fail(err, SCFM_ERR_IO, "%s: cannot complete the shard", path) : SCFM_OK;
    return comm ? scfm_comm_agree(comm, st, err) : st;
}
