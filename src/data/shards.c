/* Reading token shards, format 2 (docs/formats.md): one HDF5 file per shard.
 * Cells are numbered globally in shard-name order; a cell is read as one
 * hyperslab, converted to int32 by HDF5 whatever the stored token width.
 * Count shards' tokens index a gene set and are checked as they are read,
 * so a damaged file cannot send a reader outside a dense count vector. */
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"
#include "scfm/data.h"

#define SHARD_FORMAT "scfm-tokens"

typedef struct {
    char path[1024];
    hid_t file, tokens, values, counts;
    int64_t n_cells;
    int64_t first_cell;  /* global id of its first cell */
    int64_t *offsets;    /* [n_cells + 1] */
    int64_t *cell_ids;   /* [n_cells] */
    float *library;      /* counts mode: [n_cells] */
} shard;

/* What every shard of a set must agree on. */
typedef struct {
    int64_t vocab_size, n_shards, shard_index;
    uint64_t vocab_hash;
    char mode[16];
    int64_t n_bins;       /* bin mode */
    char normalisation[512];
    int32_t *genes;       /* counts mode: the gene set, owned by the caller */
    int64_t n_genes;
} shard_attrs;

struct scfm_shards {
    char dir[1024];
    shard *shards;
    int n_shards;
    int64_t n_cells, n_tokens;
    int vocab_size, max_length;
    uint64_t vocab_hash;
    char mode[16];
    int n_bins;
    char normalisation[512];
    int32_t *genes;      /* counts mode: [n_genes] the first shard's gene set */
    int n_genes;
    int32_t *buffer;
    uint8_t *value_buffer;
    float *count_buffer;
    int buffer_cap, value_buffer_cap, count_buffer_cap;
    /* Reads of single cells convert types (uint16 tokens into int32) through
     * this buffer; HDF5's default allocates and zeroes 1 MiB per read, which
     * cost the loader more than the read itself. */
    hid_t xfer;
    void *conversion;
};

#define CONVERSION_BYTES (64 * 1024)

static int read_int_attr(hid_t file, const char *name, int64_t *value) {
    return scfm_h5_attr_ints(file, ".", name, value, 1) == 1;
}

/* Reads a whole 1-D dataset of n elements (n < 0: whatever its length, put
 * in *n) into a new array of mem_type elements of elem bytes. */
static scfm_status read_whole(const shard *s, const char *name, hid_t mem_type, size_t elem, int64_t *n, void *out,
                              scfm_error *err) {
    void **array = out;
    if (H5Lexists(s->file, name, H5P_DEFAULT) <= 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: dataset '%s' is missing", s->path, name);
    hid_t d = H5Dopen2(s->file, name, H5P_DEFAULT);
    int64_t len = d < 0 ? -1 : scfm_h5_dataset_length(d);
    if (*n < 0 && len >= 0) *n = len;
    scfm_status st = SCFM_OK;
    if (len != *n) {
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: '%s' must be 1-D with %lld elements", s->path, name, (long long)*n);
    } else if (!(*array = malloc(elem * (size_t)(*n > 0 ? *n : 1)))) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for '%s'", s->path, name);
    } else if (scfm_h5_read_slice(d, mem_type, 0, *n, *array) < 0) {
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read '%s'", s->path, name);
    }
    if (d >= 0) H5Dclose(d);
    return st;
}

/* Opens a per-token dataset without a chunk cache: cells are read at random,
 * so a cached chunk is rarely read twice, and a cache per open shard adds up;
 * HDF5 reads a cell's part of an uncompressed chunk straight from the file. */
static hid_t open_uncached(hid_t file, const char *name) {
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return H5I_INVALID_HID;
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
    hid_t d = H5Dopen2(file, name, dapl);
    H5Pclose(dapl);
    return d;
}

/* Counts mode: the gene set (ascending vocabulary tokens), a count per token
 * and a library size per cell. */
static scfm_status open_counts(shard *s, shard_attrs *a, int64_t n_tok, scfm_error *err) {
    a->n_genes = -1;
    scfm_status st = read_whole(s, "genes", H5T_NATIVE_INT32, sizeof(int32_t), &a->n_genes, &a->genes, err);
    if (st == SCFM_OK && (a->n_genes < 1 || a->n_genes > a->vocab_size))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: counts mode needs 1 to vocab_size genes in 'genes'", s->path);
    for (int64_t g = 0; st == SCFM_OK && g < a->n_genes; g++)
        if (a->genes[g] < 0 || a->genes[g] >= a->vocab_size || (g > 0 && a->genes[g] <= a->genes[g - 1]))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'genes' must be ascending vocabulary tokens (column %lld)",
                           s->path, (long long)g);
    if (st == SCFM_OK) st = read_whole(s, "library", H5T_NATIVE_FLOAT, sizeof(float), &s->n_cells, &s->library, err);
    for (int64_t i = 0; st == SCFM_OK && i < s->n_cells; i++)
        if (!(s->library[i] > 0.0f) || !isfinite(s->library[i]))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cell %lld has library size %g (must be positive)", s->path,
                           (long long)i, (double)s->library[i]);
    if (st == SCFM_OK && ((s->counts = open_uncached(s->file, "counts")) < 0 ||
                          scfm_h5_dataset_length(s->counts) != n_tok))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: counts mode needs dataset 'counts' with one count per token",
                       s->path);
    return st;
}

static scfm_status open_shard(shard *s, shard_attrs *a, scfm_error *err) {
    s->file = H5Fopen(s->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->file < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open as HDF5", s->path);
    char format[64] = "", hash[32] = "";
    int64_t version = 0;
    if (!scfm_h5_attr_string(s->file, ".", "format", format, sizeof format) || strcmp(format, SHARD_FORMAT) ||
        !read_int_attr(s->file, "version", &version))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: not an scfm token shard (attribute 'format' must be \"%s\")",
                         s->path, SHARD_FORMAT);
    if (version != SCFM_SHARD_VERSION)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: shard format version %lld; this scfm reads version %d (tokenize "
                         "the data again)", s->path, (long long)version, SCFM_SHARD_VERSION);
    if (!read_int_attr(s->file, "vocab_size", &a->vocab_size) || a->vocab_size < 3)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: attribute 'vocab_size' missing or below 3", s->path);
    char *end = NULL;
    if (!scfm_h5_attr_string(s->file, ".", "vocab_hash", hash, sizeof hash) || strlen(hash) != 16 ||
        (a->vocab_hash = strtoull(hash, &end, 16), *end))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: attribute 'vocab_hash' must be 16 hex digits", s->path);
    if (!scfm_h5_attr_string(s->file, ".", "mode", a->mode, sizeof a->mode) ||
        (strcmp(a->mode, "rank") && strcmp(a->mode, "bin") && strcmp(a->mode, "counts")))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: attribute 'mode' must be \"rank\", \"bin\" or \"counts\"",
                         s->path);
    if (!read_int_attr(s->file, "shard_index", &a->shard_index) || !read_int_attr(s->file, "n_shards", &a->n_shards))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: attributes 'shard_index' and 'n_shards' are required", s->path);
    if ((s->tokens = open_uncached(s->file, "tokens")) < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: dataset 'tokens' is missing", s->path);
    int64_t n_tok = scfm_h5_dataset_length(s->tokens);
    if (H5Lexists(s->file, "offsets", H5P_DEFAULT) <= 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: dataset 'offsets' is missing", s->path);
    hid_t off = H5Dopen2(s->file, "offsets", H5P_DEFAULT);
    int64_t n_off = off < 0 ? -1 : scfm_h5_dataset_length(off);
    if (off >= 0) H5Dclose(off);
    if (n_off < 1 || n_tok < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' and 'tokens' must be 1-D", s->path);
    s->n_cells = n_off - 1;
    scfm_status st = read_whole(s, "offsets", H5T_NATIVE_INT64, sizeof(int64_t), &n_off, &s->offsets, err);
    if (st == SCFM_OK) st = read_whole(s, "cell_id", H5T_NATIVE_INT64, sizeof(int64_t), &s->n_cells, &s->cell_ids, err);
    if (st != SCFM_OK) return st;
    if (s->offsets[0] != 0 || s->offsets[s->n_cells] != n_tok)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' must start at 0 and end at the %lld tokens",
                         s->path, (long long)n_tok);
    for (int64_t i = 0; i < s->n_cells; i++)
        if (s->offsets[i + 1] < s->offsets[i])
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: 'offsets' decrease at cell %lld", s->path, (long long)i);
    if (!strcmp(a->mode, "bin")) {
        if (!read_int_attr(s->file, "n_bins", &a->n_bins) || a->n_bins < 2 || a->n_bins > 256 ||
            !scfm_h5_attr_string(s->file, ".", "normalisation", a->normalisation, sizeof a->normalisation))
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: bin mode needs attributes 'n_bins' (2 to 256) and "
                             "'normalisation'", s->path);
        if ((s->values = open_uncached(s->file, "values")) < 0 || scfm_h5_dataset_length(s->values) != n_tok)
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: bin mode needs dataset 'values' with one value per token",
                             s->path);
    }
    return strcmp(a->mode, "counts") ? SCFM_OK : open_counts(s, a, n_tok, err);
}

static int compare_paths(const void *a, const void *b) {
    return strcmp(((const shard *)a)->path, ((const shard *)b)->path);
}

/* Every shard against the first: one vocabulary, one mode (one gene set), one
 * complete set. The first shard's gene set moves from a into s. */
static scfm_status check_set(scfm_shards *s, int i, shard_attrs *a, scfm_error *err) {
    const char *path = s->shards[i].path, *first = s->shards[0].path;
    if (i == 0) {
        s->vocab_size = (int)a->vocab_size;
        s->vocab_hash = a->vocab_hash;
        snprintf(s->mode, sizeof s->mode, "%s", a->mode);
        s->n_bins = (int)a->n_bins;
        snprintf(s->normalisation, sizeof s->normalisation, "%s", a->normalisation);
        s->genes = a->genes;
        s->n_genes = (int)a->n_genes;
        a->genes = NULL; /* kept */
    }
    if (a->vocab_hash != s->vocab_hash || a->vocab_size != s->vocab_size)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: made with vocabulary %016llx (%lld tokens), but %s with %016llx "
                         "(%d tokens): a shard set has one vocabulary", path, (unsigned long long)a->vocab_hash,
                         (long long)a->vocab_size, first, (unsigned long long)s->vocab_hash, s->vocab_size);
    if (strcmp(a->mode, s->mode))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: mode '%s' differs from '%s' in %s", path, a->mode, s->mode, first);
    if (i > 0 && (a->n_genes != s->n_genes || (a->genes && memcmp(a->genes, s->genes, sizeof(int32_t) * s->n_genes))))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: its gene set differs from that of %s", path, first);
    if (a->n_shards != s->n_shards || a->shard_index != i)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: shard %lld of %lld, but it is file %d of the %d in %s (a shard is "
                         "missing or comes from another set)", path, (long long)a->shard_index, (long long)a->n_shards,
                         i, s->n_shards, s->dir);
    return SCFM_OK;
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
    if (s) snprintf(s->dir, sizeof s->dir, "%s", dir);
    if (s && ((s->conversion = malloc(CONVERSION_BYTES)) == NULL || (s->xfer = H5Pcreate(H5P_DATASET_XFER)) < 0 ||
              H5Pset_buffer(s->xfer, CONVERSION_BYTES, s->conversion, NULL) < 0))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a transfer buffer");
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
        sh->file = sh->tokens = sh->values = sh->counts = H5I_INVALID_HID;
        snprintf(sh->path, sizeof sh->path, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (st == SCFM_OK && s->n_shards == 0)
        st = scfm_fail(err, SCFM_ERR_IO, "%s: no shard_*.h5 files", dir);
    if (st == SCFM_OK) qsort(s->shards, (size_t)s->n_shards, sizeof(shard), compare_paths);
    for (int i = 0; st == SCFM_OK && i < s->n_shards; i++) {
        shard_attrs a = {0};
        shard *sh = &s->shards[i];
        st = open_shard(sh, &a, err);
        if (st == SCFM_OK) st = check_set(s, i, &a, err);
        free(a.genes);
        if (st != SCFM_OK) break;
        sh->first_cell = s->n_cells;
        s->n_cells += sh->n_cells;
        s->n_tokens += sh->offsets[sh->n_cells];
        for (int64_t c = 0; c < sh->n_cells; c++) {
            int64_t L = sh->offsets[c + 1] - sh->offsets[c];
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
        if (s->shards[i].values >= 0) H5Dclose(s->shards[i].values);
        if (s->shards[i].counts >= 0) H5Dclose(s->shards[i].counts);
        if (s->shards[i].file >= 0) H5Fclose(s->shards[i].file);
        free(s->shards[i].offsets);
        free(s->shards[i].cell_ids);
        free(s->shards[i].library);
    }
    free(s->shards);
    if (s->xfer > 0) H5Pclose(s->xfer);
    free(s->conversion);
    free(s->genes);
    free(s->buffer);
    free(s->value_buffer);
    free(s->count_buffer);
    free(s);
}

int64_t scfm_shards_num_cells(const scfm_shards *s) { return s->n_cells; }
int64_t scfm_shards_num_tokens(const scfm_shards *s) { return s->n_tokens; }
int scfm_shards_vocab_size(const scfm_shards *s) { return s->vocab_size; }
int scfm_shards_max_length(const scfm_shards *s) { return s->max_length; }
const char *scfm_shards_mode(const scfm_shards *s) { return s->mode; }
int scfm_shards_n_bins(const scfm_shards *s) { return s->n_bins; }
const char *scfm_shards_normalisation(const scfm_shards *s) { return s->normalisation; }
uint64_t scfm_shards_vocab_hash(const scfm_shards *s) { return s->vocab_hash; }

/* The shard that holds global cell i (0 <= i < n_cells): the last one that
 * starts at or before i, which is never a shard without cells. */
static shard *locate(const scfm_shards *s, int64_t i) {
    int lo = 0, hi = s->n_shards - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->shards[mid].first_cell <= i) lo = mid;
        else hi = mid - 1;
    }
    return &s->shards[lo];
}

int64_t scfm_shards_cell_id(const scfm_shards *s, int64_t i) {
    const shard *sh = locate(s, i);
    return sh->cell_ids[i - sh->first_cell];
}

/* The per-token datasets. */
enum { CELL_TOKENS, CELL_VALUES, CELL_COUNTS };

/* Reads cell i's slice of per-token dataset `which` into *buffer (grown). */
static scfm_status read_cell(scfm_shards *s, int64_t i, int which, void **buffer, int *cap, size_t elem,
                             int *length, scfm_error *err) {
    static const char *const names[] = {"tokens", "values", "counts"};
    if (i < 0 || i >= s->n_cells)
        return scfm_fail(err, SCFM_ERR_ARG, "cell %lld outside the %lld cells of the shards", (long long)i,
                         (long long)s->n_cells);
    const shard *sh = locate(s, i);
    int64_t j = i - sh->first_cell;
    int64_t start = sh->offsets[j], count = sh->offsets[j + 1] - sh->offsets[j];
    if (!*buffer || (int)count > *cap) { /* never NULL, even for a cell of no tokens */
        void *grown = realloc(*buffer, elem * (size_t)(count + 1));
        if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory reading cell %lld", (long long)i);
        *buffer = grown;
        *cap = (int)count;
    }
    *length = (int)count;
    if (count == 0) return SCFM_OK;
    const hid_t dataset[] = {sh->tokens, sh->values, sh->counts};
    const hid_t mem_type[] = {H5T_NATIVE_INT32, H5T_NATIVE_UINT8, H5T_NATIVE_FLOAT};
    if (scfm_h5_read_slice_xfer(dataset[which], mem_type[which], s->xfer, start, count, *buffer) < 0)
        return scfm_fail(err, SCFM_ERR_IO, "%s: cannot read the %s of cell %lld", sh->path, names[which],
                         (long long)j);
    return SCFM_OK;
}

scfm_status scfm_shards_cell(scfm_shards *s, int64_t i, const int32_t **tokens, int *length,
                             scfm_error *err) {
    scfm_status st = read_cell(s, i, CELL_TOKENS, (void **)&s->buffer, &s->buffer_cap, sizeof(int32_t), length, err);
    *tokens = s->buffer;
    /* counts mode: columns of the gene set, ascending */
    for (int k = 0; st == SCFM_OK && s->n_genes > 0 && k < *length; k++)
        if (s->buffer[k] < 0 || s->buffer[k] >= s->n_genes || (k > 0 && s->buffer[k] <= s->buffer[k - 1]))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cell %lld: token %d is not an ascending column of the %d genes",
                           s->dir, (long long)i, s->buffer[k], s->n_genes);
    return st;
}

/* SCFM_ERR_ARG unless the shards are in `mode`, for an accessor of `what`. */
static scfm_status expect_mode(const scfm_shards *s, const char *mode, const char *what, scfm_error *err) {
    if (strcmp(s->mode, mode))
        return scfm_fail(err, SCFM_ERR_ARG, "%s: the shards were made in %s mode and hold no %s", s->dir, s->mode,
                         what);
    return SCFM_OK;
}

scfm_status scfm_shards_cell_values(scfm_shards *s, int64_t i, const uint8_t **values, int *length,
                                    scfm_error *err) {
    scfm_status st = expect_mode(s, "bin", "values", err);
    if (st == SCFM_OK) st = read_cell(s, i, CELL_VALUES, (void **)&s->value_buffer, &s->value_buffer_cap, 1, length,
                                      err);
    *values = s->value_buffer;
    return st;
}

void scfm_shards_gene_set(const scfm_shards *s, const int32_t **tokens, int *n_genes) {
    *tokens = s->genes;
    *n_genes = s->n_genes;
}

scfm_status scfm_shards_cell_counts(scfm_shards *s, int64_t i, const float **counts, int *length,
                                    scfm_error *err) {
    scfm_status st = expect_mode(s, "counts", "counts", err);
    if (st == SCFM_OK) st = read_cell(s, i, CELL_COUNTS, (void **)&s->count_buffer, &s->count_buffer_cap,
                                      sizeof(float), length, err);
    *counts = s->count_buffer;
    for (int k = 0; st == SCFM_OK && k < *length; k++)
        if (!(s->count_buffer[k] > 0.0f) || !isfinite(s->count_buffer[k]))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cell %lld: count %g (must be positive and finite)", s->dir,
                           (long long)i, (double)s->count_buffer[k]);
    return st;
}

float scfm_shards_cell_library(const scfm_shards *s, int64_t i) {
    if (s->n_genes == 0 || i < 0 || i >= s->n_cells) return 0.0f;
    const shard *sh = locate(s, i);
    return sh->library[i - sh->first_cell];
}

scfm_status scfm_shards_expect_vocab(const scfm_shards *s, const scfm_vocab *v, scfm_error *err) {
    if (s->vocab_hash != v->hash || s->vocab_size != scfm_vocab_size(v))
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: the shards were made with vocabulary %016llx (%d tokens), not with "
                         "this one, %016llx (%lld tokens); tokenize the data again with this vocabulary", s->dir,
                         (unsigned long long)s->vocab_hash, s->vocab_size, (unsigned long long)v->hash,
                         (long long)scfm_vocab_size(v));
    return SCFM_OK;
}

void scfm_free_strings(char **strings, int n) {
    for (int i = 0; strings && i < n; i++) free(strings[i]);
    free(strings);
}

/* The categories in group (obs/<column> of the shard at path), compared with
 * (or, for the first shard, copied into) *categories. */
static scfm_status shard_categories(hid_t group, const char *path, const char *column, char ***categories, int *n,
                                    scfm_error *err) {
    scfm_names names = {0};
    scfm_status st = scfm_h5_read_strings(group, path, "categories", &names, err);
    if (st == SCFM_OK && !scfm_names_finish(&names)) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (st == SCFM_OK && *categories == NULL) {
        *categories = calloc((size_t)(names.n > 0 ? names.n : 1), sizeof(char *));
        for (int64_t i = 0; *categories && i < names.n; i++)
            if (((*categories)[i] = strdup(names.at[i]))) *n = (int)i + 1;
        if (!*categories || *n != names.n) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    } else if (st == SCFM_OK) {
        int same = names.n == *n;
        for (int64_t i = 0; same && i < names.n; i++) same = !strcmp(names.at[i], (*categories)[i]);
        if (!same)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs/%s/categories differ from the first shard's (a shard from "
                           "another set?)", path, column);
    }
    scfm_names_free(&names);
    return st;
}

scfm_status scfm_shards_obs(scfm_shards *s, const char *column, int32_t **codes, char ***categories,
                            int *n_categories, scfm_error *err) {
    *codes = NULL;
    *categories = NULL;
    *n_categories = 0;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)s->n_cells);
    scfm_status st = all ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the labels of %lld cells",
                                               (long long)s->n_cells);
    for (int i = 0; st == SCFM_OK && i < s->n_shards; i++) {
        const shard *sh = &s->shards[i];
        char path[512];
        snprintf(path, sizeof path, "obs/%s/codes", column);
        if (scfm_h5_kind(sh->file, path) != H5I_DATASET) {
            st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: no categorical obs column '%s' (tokenize keeps the columns "
                           "named by --obs; by default the categorical columns of the inputs)", sh->path, column);
            break;
        }
        snprintf(path, sizeof path, "obs/%s", column);
        hid_t g = H5Gopen2(sh->file, path, H5P_DEFAULT);
        st = g < 0 ? scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot open %s", sh->path, path)
                   : shard_categories(g, sh->path, column, categories, n_categories, err);
        hid_t d = g < 0 ? -1 : H5Dopen2(g, "codes", H5P_DEFAULT);
        if (st == SCFM_OK && (d < 0 || scfm_h5_dataset_length(d) != sh->n_cells ||
                              scfm_h5_read_slice(d, H5T_NATIVE_INT32, 0, sh->n_cells, all + sh->first_cell) < 0))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs/%s/codes must hold one code per cell", sh->path, column);
        if (d >= 0) H5Dclose(d);
        if (g >= 0) H5Gclose(g);
    }
    for (int64_t i = 0; st == SCFM_OK && i < s->n_cells; i++)
        if (all[i] < -1 || all[i] >= *n_categories)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs/%s: cell %lld has code %d outside [-1, %d)", s->dir, column,
                           (long long)i, all[i], *n_categories);
    if (st != SCFM_OK) {
        free(all);
        scfm_free_strings(*categories, *n_categories);
        *categories = NULL;
        *n_categories = 0;
        return st;
    }
    *codes = all;
    return SCFM_OK;
}
