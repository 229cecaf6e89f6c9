/* AnnData .h5ad writer, on-disk format 0.8 and later
 * (https://anndata.readthedocs.io/en/latest/fileformat-prose.html).
 *
 * Everything that grows with the cell count (X's CSR arrays, obs names and
 * codes, obsm) is an extendable chunked dataset appended a chunk of cells at
 * a time, so memory stays bounded however many cells are written. Attributes
 * are written the way h5py writes them for anndata: variable-length UTF-8
 * strings (fixed-length ones come back as bytes and anndata no longer
 * recognises the encoding), the FALSE/TRUE int8 enum that h5py reads as bool,
 * and an empty float64 array for an empty column-order. Object times are not
 * recorded, so the same calls give a byte-identical file. */
#include <errno.h>
#include <hdf5.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/h5util.h"
#include "scfm/io.h"

#define CHUNK_BYTES ((size_t)1 << 20)
#define DEFAULT_NAMES_BATCH 65536

/* A dataset of one row per cell: obs codes, obsm arrays. */
typedef struct {
    char *name;
    hid_t dset;
    int64_t rows;
    int width; /* categories of a categorical, columns of an obsm array */
} cell_rows;

struct scfm_h5ad_writer {
    char *path, *tmp;
    int64_t n_cells, n_genes;
    hid_t file, str_type, obs, obsm, varm;
    hid_t x_data, x_indices, x_indptr;
    int64_t x_cells, x_nnz;
    int64_t *indptr; /* scratch for one chunk's file offsets */
    int64_t indptr_cap;
    hid_t obs_names;
    int64_t obs_names_rows;
    cell_rows *columns, *arrays; /* obs categoricals in column order; obsm */
    int n_columns, n_arrays;
    int failed; /* a call failed: only finish (which then fails) or abort remain */
    int annotating; /* a copy of an existing file: X, var and obs names are there already */
    char **kept_order; /* annotating: the file's obs column-order, less the columns written again */
    int n_kept;
};

/* ---- HDF5 helpers: each returns < 0 on failure, and the caller names the object ---- */

static herr_t set_str_attr(hid_t obj, hid_t str_type, const char *name, const char *value) {
    return scfm_h5_write_attr(obj, name, str_type, str_type, -1, &value);
}

static herr_t set_encoding(hid_t obj, hid_t str_type, const char *type, const char *version) {
    if (set_str_attr(obj, str_type, "encoding-type", type) < 0) return -1;
    return set_str_attr(obj, str_type, "encoding-version", version);
}

/* A 1-D attribute of n strings; with none, h5py's empty float64 array, which
 * is what anndata itself writes for a dataframe without columns. */
static herr_t set_str_array_attr(hid_t obj, hid_t str_type, const char *name, const char *const *values,
                                 int n) {
    hid_t type = n > 0 ? str_type : H5T_IEEE_F64LE;
    return scfm_h5_write_attr(obj, name, type, type, n, values);
}

static herr_t set_bool_attr(hid_t obj, const char *name, int value) {
    hid_t type = H5Tenum_create(H5T_NATIVE_INT8);
    int8_t f = 0, t = 1, v = (int8_t)(value != 0);
    herr_t r = type < 0 ? -1 : 0;
    if (r >= 0) r = H5Tenum_insert(type, "FALSE", &f);
    if (r >= 0) r = H5Tenum_insert(type, "TRUE", &t);
    if (r >= 0) r = scfm_h5_write_attr(obj, name, type, type, -1, &v);
    if (type >= 0) H5Tclose(type);
    return r;
}

static hid_t create_group(hid_t loc, hid_t str_type, const char *name, const char *type, const char *version) {
    hid_t g = scfm_h5_create_group(loc, name, SCFM_H5_NO_TIMES);
    if (g >= 0 && set_encoding(g, str_type, type, version) < 0) {
        H5Gclose(g);
        return -1;
    }
    return g;
}

/* An empty dataset of rows of `width` elements (width 0: scalars, 1-D) that
 * grows along its first dimension. */
static hid_t create_rows(hid_t loc, const char *name, hid_t type, int width) {
    int rank = width > 0 ? 2 : 1;
    size_t row_bytes = H5Tget_size(type) * (size_t)(width > 0 ? width : 1);
    hsize_t dims[2] = {0, (hsize_t)width}, max_dims[2] = {H5S_UNLIMITED, (hsize_t)width};
    hsize_t chunk[2] = {row_bytes < CHUNK_BYTES ? CHUNK_BYTES / row_bytes : 1, (hsize_t)width};
    return scfm_h5_create_dataset(loc, name, type, rank, dims, max_dims, chunk, SCFM_H5_NO_TIMES);
}

/* Writes rows [start, start + n) of a create_rows dataset, extending it. */
static herr_t append_rows(hid_t d, hid_t mem_type, int64_t start, int64_t n, int width, const void *buf) {
    if (n == 0) return 0;
    hsize_t size[2] = {(hsize_t)(start + n), (hsize_t)width};
    if (H5Dset_extent(d, size) < 0) return -1;
    return scfm_h5_write_rows(d, H5P_DEFAULT, mem_type, start, n, width, buf);
}

/* A fixed-size dataset written whole, with its anndata encoding. */
static herr_t write_array(hid_t loc, hid_t str_type, const char *name, hid_t type, int rank, const hsize_t *dims,
                          const void *data, const char *encoding) {
    hid_t d = scfm_h5_create_dataset(loc, name, type, rank, dims, NULL, NULL, SCFM_H5_NO_TIMES);
    herr_t r = d < 0 ? -1 : H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (r >= 0) r = set_encoding(d, str_type, encoding, "0.2.0");
    if (d >= 0) H5Dclose(d);
    return r;
}

/* ---- argument checks ---- */

static int by_string(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every string present and no two equal: anndata refuses repeated categories
 * and warns about repeated gene ids. */
static scfm_status check_distinct(const char *path, const char *what, const char *const *s, int64_t n,
                                  scfm_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (!s[i]) return scfm_fail(err, SCFM_ERR_ARG, "%s: %s %lld is NULL", path, what, (long long)i);
    const char **sorted = malloc(sizeof(char *) * (size_t)(n > 0 ? n : 1));
    if (!sorted) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory checking %s", path, what);
    memcpy(sorted, s, sizeof(char *) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(char *), by_string);
    scfm_status st = SCFM_OK;
    for (int64_t i = 1; i < n && st == SCFM_OK; i++)
        if (!strcmp(sorted[i - 1], sorted[i]))
            st = scfm_fail(err, SCFM_ERR_ARG, "%s: %s '%s' appears twice", path, what, sorted[i]);
    free(sorted);
    return st;
}

/* Column and array names become HDF5 link names next to the index. */
static scfm_status check_key(const scfm_h5ad_writer *w, const char *what, const char *name, scfm_error *err) {
    if (!name || !*name || strchr(name, '/') || !strcmp(name, "_index") || !strcmp(name, "."))
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %s name '%s' is empty, \"_index\" or holds '/'", w->path, what,
                         name ? name : "(null)");
    return SCFM_OK;
}

static scfm_status check_rows(const scfm_h5ad_writer *w, const char *what, int64_t done, int64_t n,
                              scfm_error *err) {
    if (n < 0 || n > w->n_cells - done)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %s: %lld more cells after %lld exceed the %lld declared", w->path,
                         what, (long long)n, (long long)done, (long long)w->n_cells);
    return SCFM_OK;
}

static cell_rows *find_rows(cell_rows *list, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (!strcmp(list[i].name, name)) return &list[i];
    return NULL;
}

/* Adds an entry for a dataset just created; the list owns dset afterwards. */
static cell_rows *add_rows(cell_rows **list, int *n, const char *name, hid_t dset, int width) {
    cell_rows *grown = realloc(*list, sizeof(cell_rows) * (size_t)(*n + 1));
    char *copy = strdup(name);
    if (grown) *list = grown;
    if (!grown || !copy) {
        free(copy);
        H5Dclose(dset);
        return NULL;
    }
    cell_rows *r = &(*list)[(*n)++];
    *r = (cell_rows){copy, dset, 0, width};
    return r;
}

static scfm_status write_failed(const scfm_h5ad_writer *w, const char *object, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write %s", w->tmp, object);
}

static scfm_status check_usable(const scfm_h5ad_writer *w, scfm_error *err) {
    if (w->failed) return scfm_fail(err, SCFM_ERR_ARG, "%s: an earlier write failed", w->path);
    return SCFM_OK;
}

/* After a failed call the file may hold half a chunk: only abort is left. */
static scfm_status mark(scfm_h5ad_writer *w, scfm_status st) {
    if (st != SCFM_OK) w->failed = 1;
    return st;
}

/* ---- the writer ---- */

static void close_all(scfm_h5ad_writer *w) {
    for (int i = 0; i < w->n_columns; i++) {
        H5Dclose(w->columns[i].dset);
        free(w->columns[i].name);
    }
    for (int i = 0; i < w->n_arrays; i++) {
        H5Dclose(w->arrays[i].dset);
        free(w->arrays[i].name);
    }
    hid_t objects[] = {w->x_data, w->x_indices, w->x_indptr, w->obs_names};
    for (size_t i = 0; i < sizeof objects / sizeof objects[0]; i++)
        if (objects[i] >= 0) H5Dclose(objects[i]);
    hid_t groups[] = {w->obs, w->obsm, w->varm};
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (groups[i] >= 0) H5Gclose(groups[i]);
    if (w->str_type >= 0) H5Tclose(w->str_type);
    free(w->columns);
    free(w->arrays);
    free(w->indptr);
    w->columns = w->arrays = NULL;
    w->n_columns = w->n_arrays = 0;
    w->indptr = NULL;
    w->x_data = w->x_indices = w->x_indptr = w->obs_names = w->obs = w->obsm = w->varm = w->str_type = -1;
}

static void free_writer(scfm_h5ad_writer *w) {
    for (int i = 0; i < w->n_kept; i++) free(w->kept_order[i]);
    free(w->kept_order);
    free(w->path);
    free(w->tmp);
    free(w);
}

void scfm_h5ad_abort(scfm_h5ad_writer *w) {
    if (!w) return;
    close_all(w);
    if (w->file >= 0) H5Fclose(w->file);
    unlink(w->tmp);
    free_writer(w);
}

/* The root's groups and attributes, var, and X's empty CSR arrays. */
static scfm_status write_layout(scfm_h5ad_writer *w, const char *const *gene_ids, scfm_error *err) {
    hid_t f = w->file, s = w->str_type;
    if (set_encoding(f, s, "anndata", "0.1.0") < 0) return write_failed(w, "the root attributes", err);
    static const char *const empty_dicts[] = {"layers", "obsp", "varp", "uns"};
    for (size_t i = 0; i < sizeof empty_dicts / sizeof empty_dicts[0]; i++) {
        hid_t g = create_group(f, s, empty_dicts[i], "dict", "0.1.0");
        if (g < 0) return write_failed(w, empty_dicts[i], err);
        H5Gclose(g);
    }
    w->obsm = create_group(f, s, "obsm", "dict", "0.1.0");
    w->varm = create_group(f, s, "varm", "dict", "0.1.0");
    if (w->obsm < 0 || w->varm < 0) return write_failed(w, "obsm and varm", err);

    w->obs = create_group(f, s, "obs", "dataframe", "0.2.0");
    if (w->obs < 0 || set_str_attr(w->obs, s, "_index", "_index") < 0) return write_failed(w, "obs", err);

    hid_t var = create_group(f, s, "var", "dataframe", "0.2.0");
    hsize_t n_genes = (hsize_t)w->n_genes;
    herr_t r = var < 0 ? -1 : set_str_attr(var, s, "_index", "_index");
    if (r >= 0) r = set_str_array_attr(var, s, "column-order", NULL, 0);
    if (r >= 0) r = write_array(var, s, "_index", s, 1, &n_genes, gene_ids, "string-array");
    if (var >= 0) H5Gclose(var);
    if (r < 0) return write_failed(w, "var", err);

    hid_t x = create_group(f, s, "X", "csr_matrix", "0.1.0");
    int64_t shape[2] = {w->n_cells, w->n_genes}, zero = 0;
    r = x < 0 ? -1 : scfm_h5_write_attr(x, "shape", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, shape);
    if (r >= 0) {
        w->x_data = create_rows(x, "data", H5T_IEEE_F32LE, 0);
        /* scipy needs indices and indptr of one type, wide enough for the
         * non-zeros; anndata hands them over as stored. */
        int narrow = w->n_genes == 0 || w->n_cells <= INT32_MAX / w->n_genes;
        hid_t index_type = narrow ? H5T_STD_I32LE : H5T_STD_I64LE;
        w->x_indices = create_rows(x, "indices", index_type, 0);
        w->x_indptr = create_rows(x, "indptr", index_type, 0);
        r = w->x_data < 0 || w->x_indices < 0 || w->x_indptr < 0 ? -1 : 0;
    }
    if (r >= 0) r = append_rows(w->x_indptr, H5T_NATIVE_INT64, 0, 1, 0, &zero);
    if (x >= 0) H5Gclose(x);
    if (r < 0) return write_failed(w, "X", err);
    return SCFM_OK;
}

/* A writer of PATH through PATH.tmp, with no HDF5 object open yet; NULL when
 * out of memory. */
static scfm_h5ad_writer *new_writer(const char *path) {
    scfm_h5ad_writer *w = calloc(1, sizeof *w);
    size_t len = strlen(path);
    if (w) {
        w->path = strdup(path);
        w->tmp = malloc(len + 5);
    }
    if (!w || !w->path || !w->tmp) {
        if (w) free_writer(w);
        return NULL;
    }
    snprintf(w->tmp, len + 5, "%s.tmp", path);
    w->file = w->str_type = -1;
    w->x_data = w->x_indices = w->x_indptr = w->obs_names = w->obs = w->obsm = w->varm = -1;
    return w;
}

scfm_status scfm_h5ad_create(const char *path, int64_t n_cells, int64_t n_genes, const char *const *gene_ids,
                             scfm_h5ad_writer **out, scfm_error *err) {
    *out = NULL;
    if (n_cells < 0 || n_genes < 0 || n_genes > INT32_MAX || (n_genes > 0 && !gene_ids))
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %lld cells, %lld genes, gene ids %s: need cells >= 0, genes in "
                         "[0, 2^31) and the ids", path, (long long)n_cells, (long long)n_genes,
                         gene_ids ? "given" : "NULL");
    if (check_distinct(path, "gene id", gene_ids, n_genes, err) != SCFM_OK) return err->status;
    scfm_h5ad_writer *w = new_writer(path);
    if (!w) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    w->n_cells = n_cells;
    w->n_genes = n_genes;

    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported through err */
    /* A strong close releases every object still open, so abort cannot leak. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    w->file = fapl < 0 ? -1 : H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    w->str_type = H5Tcopy(H5T_C_S1);
    if (w->file < 0 || w->str_type < 0 || H5Tset_size(w->str_type, H5T_VARIABLE) < 0 ||
        H5Tset_cset(w->str_type, H5T_CSET_UTF8) < 0) {
        scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
        scfm_h5ad_abort(w);
        return err->status;
    }
    if (write_layout(w, gene_ids, err) != SCFM_OK) {
        scfm_h5ad_abort(w);
        return err->status;
    }
    *out = w;
    return SCFM_OK;
}

static scfm_status append_x(scfm_h5ad_writer *w, const scfm_cells_chunk *c, scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK) return err->status;
    if (c->first != w->x_cells)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: X: chunk starts at cell %lld, expected %lld",
                                               w->path, (long long)c->first, (long long)w->x_cells);
    if (check_rows(w, "X", w->x_cells, c->n_cells, err) != SCFM_OK) return err->status;
    if (c->n_cells == 0) return SCFM_OK;
    if (c->n_cells > w->indptr_cap) {
        int64_t *grown = realloc(w->indptr, sizeof(int64_t) * (size_t)c->n_cells);
        if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
        w->indptr = grown;
        w->indptr_cap = c->n_cells;
    }
    /* Sorted, in-range genes make a canonical CSR matrix for scipy. */
    if (c->indptr[0] != 0)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: X: chunk indptr[0] is %lld, not 0", w->path,
                                               (long long)c->indptr[0]);
    for (int64_t i = 0; i < c->n_cells; i++) {
        int64_t cell = c->first + i;
        if (c->indptr[i + 1] < c->indptr[i])
            return scfm_fail(err, SCFM_ERR_ARG, "%s: X: indptr decreases at cell %lld",
                                                   w->path, (long long)cell);
        for (int64_t k = c->indptr[i]; k < c->indptr[i + 1]; k++)
            if (c->genes[k] < 0 || c->genes[k] >= w->n_genes || (k > c->indptr[i] && c->genes[k] <= c->genes[k - 1]))
                return scfm_fail(err, SCFM_ERR_ARG,
                                                       "%s: X: cell %lld: gene %d out of range [0, %lld) or "
                                                       "not increasing", w->path, (long long)cell, c->genes[k],
                                                       (long long)w->n_genes);
        w->indptr[i] = w->x_nnz + c->indptr[i + 1];
    }
    int64_t nnz = c->indptr[c->n_cells];
    if (append_rows(w->x_data, H5T_NATIVE_FLOAT, w->x_nnz, nnz, 0, c->values) < 0)
        return write_failed(w, "X/data", err);
    if (append_rows(w->x_indices, H5T_NATIVE_INT32, w->x_nnz, nnz, 0, c->genes) < 0)
        return write_failed(w, "X/indices", err);
    if (append_rows(w->x_indptr, H5T_NATIVE_INT64, w->x_cells + 1, c->n_cells, 0, w->indptr) < 0)
        return write_failed(w, "X/indptr", err);
    w->x_cells += c->n_cells;
    w->x_nnz += nnz;
    return SCFM_OK;
}

/* Codes are as narrow as the categories allow, as pandas stores them. */
static hid_t code_type(int n_categories) {
    return n_categories <= INT8_MAX ? H5T_STD_I8LE : n_categories <= INT16_MAX ? H5T_STD_I16LE : H5T_STD_I32LE;
}

static scfm_status start_categorical(scfm_h5ad_writer *w, const char *column, const char *const *categories,
                                     int n_categories, cell_rows **out, scfm_error *err) {
    char object[600];
    snprintf(object, sizeof object, "obs/%s", column);
    if (n_categories < 1)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %s: no categories", w->path, object);
    if (check_distinct(w->path, "category", categories, n_categories, err) != SCFM_OK)
        return err->status;
    if (w->annotating && H5Lexists(w->obs, column, H5P_DEFAULT) > 0 && H5Ldelete(w->obs, column, H5P_DEFAULT) < 0)
        return write_failed(w, object, err);
    hid_t g = create_group(w->obs, w->str_type, column, "categorical", "0.2.0");
    hsize_t n = (hsize_t)n_categories;
    herr_t r = g < 0 ? -1 : set_bool_attr(g, "ordered", 0);
    if (r >= 0) r = write_array(g, w->str_type, "categories", w->str_type, 1, &n, categories, "string-array");
    hid_t codes = r < 0 ? -1 : create_rows(g, "codes", code_type(n_categories), 0);
    if (codes >= 0 && set_encoding(codes, w->str_type, "array", "0.2.0") < 0) {
        H5Dclose(codes);
        codes = -1;
    }
    if (g >= 0) H5Gclose(g);
    if (codes < 0) return write_failed(w, object, err);
    *out = add_rows(&w->columns, &w->n_columns, column, codes, n_categories);
    if (!*out) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
    return SCFM_OK;
}

static scfm_status append_categorical(scfm_h5ad_writer *w, const char *column, const char *const *categories,
                                      int n_categories, const int32_t *codes, int64_t n_rows, scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK) return err->status;
    if (check_key(w, "obs column", column, err) != SCFM_OK) return err->status;
    cell_rows *col = find_rows(w->columns, w->n_columns, column);
    if (col && col->width != n_categories)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: obs/%s: %d categories, earlier %d", w->path,
                                               column, n_categories, col->width);
    if (!col && start_categorical(w, column, categories, n_categories, &col, err) != SCFM_OK) return err->status;
    if (check_rows(w, column, col->rows, n_rows, err) != SCFM_OK) return err->status;
    for (int64_t i = 0; i < n_rows; i++)
        if (codes[i] < -1 || codes[i] >= n_categories)
            return scfm_fail(err, SCFM_ERR_ARG, "%s: obs/%s: cell %lld has code %d, not in "
                                                   "[-1, %d)", w->path, column, (long long)(col->rows + i),
                                                   codes[i], n_categories);
    if (append_rows(col->dset, H5T_NATIVE_INT32, col->rows, n_rows, 0, codes) < 0)
        return write_failed(w, column, err);
    col->rows += n_rows;
    return SCFM_OK;
}

static scfm_status append_names(scfm_h5ad_writer *w, const char *const *names, int64_t n_rows,
                                scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK) return err->status;
    if (check_rows(w, "obs names", w->obs_names_rows, n_rows, err) != SCFM_OK)
        return err->status;
    for (int64_t i = 0; i < n_rows; i++)
        if (!names[i])
            return scfm_fail(err, SCFM_ERR_ARG, "%s: obs name of cell %lld is NULL", w->path,
                                                   (long long)(w->obs_names_rows + i));
    if (w->obs_names < 0) {
        w->obs_names = create_rows(w->obs, "_index", w->str_type, 0);
        if (w->obs_names < 0 || set_encoding(w->obs_names, w->str_type, "string-array", "0.2.0") < 0)
            return write_failed(w, "obs/_index", err);
    }
    if (append_rows(w->obs_names, w->str_type, w->obs_names_rows, n_rows, 0, names) < 0)
        return write_failed(w, "obs/_index", err);
    w->obs_names_rows += n_rows;
    return SCFM_OK;
}

static scfm_status append_obsm(scfm_h5ad_writer *w, const char *name, int dim, const float *rows,
                               int64_t n_rows, scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK) return err->status;
    if (check_key(w, "obsm", name, err) != SCFM_OK) return err->status;
    cell_rows *a = find_rows(w->arrays, w->n_arrays, name);
    if (dim < 1 || (a && a->width != dim))
        return scfm_fail(err, SCFM_ERR_ARG, "%s: obsm/%s: dimension %d, expected %d", w->path,
                                               name, dim, a ? a->width : 1);
    if (check_rows(w, name, a ? a->rows : 0, n_rows, err) != SCFM_OK) return err->status;
    if (!a) {
        if (w->annotating && H5Lexists(w->obsm, name, H5P_DEFAULT) > 0 && H5Ldelete(w->obsm, name, H5P_DEFAULT) < 0)
            return write_failed(w, "obsm", err);
        hid_t d = create_rows(w->obsm, name, H5T_IEEE_F32LE, dim);
        if (d < 0 || set_encoding(d, w->str_type, "array", "0.2.0") < 0) {
            if (d >= 0) H5Dclose(d);
            return write_failed(w, "obsm", err);
        }
        a = add_rows(&w->arrays, &w->n_arrays, name, d, dim);
        if (!a) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
    }
    if (append_rows(a->dset, H5T_NATIVE_FLOAT, a->rows, n_rows, dim, rows) < 0) return write_failed(w, name, err);
    a->rows += n_rows;
    return SCFM_OK;
}

static scfm_status write_varm(scfm_h5ad_writer *w, const char *name, int dim, const float *values,
                              scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK) return err->status;
    if (check_key(w, "varm", name, err) != SCFM_OK) return err->status;
    if (dim < 1 || H5Lexists(w->varm, name, H5P_DEFAULT) > 0)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: varm/%s: dimension %d below 1 or written "
                                               "twice", w->path, name, dim);
    hsize_t dims[2] = {(hsize_t)w->n_genes, (hsize_t)dim};
    if (write_array(w->varm, w->str_type, name, H5T_IEEE_F32LE, 2, dims, values, "array") < 0)
        return write_failed(w, name, err);
    return SCFM_OK;
}

scfm_status scfm_h5ad_append_x(scfm_h5ad_writer *w, const scfm_cells_chunk *chunk, scfm_error *err) {
    return mark(w, append_x(w, chunk, err));
}

scfm_status scfm_h5ad_append_obs_categorical(scfm_h5ad_writer *w, const char *column,
                                             const char *const *categories, int n_categories,
                                             const int32_t *codes, int64_t n_rows, scfm_error *err) {
    return mark(w, append_categorical(w, column, categories, n_categories, codes, n_rows, err));
}

scfm_status scfm_h5ad_append_obs_names(scfm_h5ad_writer *w, const char *const *names, int64_t n_rows,
                                       scfm_error *err) {
    return mark(w, append_names(w, names, n_rows, err));
}

scfm_status scfm_h5ad_append_obsm(scfm_h5ad_writer *w, const char *name, int dim, const float *rows,
                                  int64_t n_rows, scfm_error *err) {
    return mark(w, append_obsm(w, name, dim, rows, n_rows, err));
}

scfm_status scfm_h5ad_write_varm(scfm_h5ad_writer *w, const char *name, int dim, const float *values,
                                 scfm_error *err) {
    return mark(w, write_varm(w, name, dim, values, err));
}

/* anndata's default obs names: the row numbers. */
static scfm_status write_default_names(scfm_h5ad_writer *w, scfm_error *err) {
    char *text = malloc((size_t)DEFAULT_NAMES_BATCH * 21);
    const char **names = malloc(sizeof(char *) * DEFAULT_NAMES_BATCH);
    scfm_status st = text && names ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
    /* Once even without cells: anndata needs the index dataset. */
    for (int64_t first = 0; st == SCFM_OK && (first == 0 || first < w->n_cells); first += DEFAULT_NAMES_BATCH) {
        int64_t n = w->n_cells - first < DEFAULT_NAMES_BATCH ? w->n_cells - first : DEFAULT_NAMES_BATCH;
        for (int64_t i = 0; i < n; i++) {
            names[i] = text + i * 21;
            snprintf(text + i * 21, 21, "%lld", (long long)(first + i));
        }
        st = append_names(w, names, n, err);
    }
    free(text);
    free(names);
    return st;
}

static scfm_status check_complete(scfm_h5ad_writer *w, const char *what, int64_t rows, scfm_error *err) {
    if (rows != w->n_cells)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: %s has %lld of the %lld declared cells", w->path, what,
                         (long long)rows, (long long)w->n_cells);
    return SCFM_OK;
}

static scfm_status complete(scfm_h5ad_writer *w, scfm_error *err) {
    if (check_usable(w, err) != SCFM_OK || check_complete(w, "X", w->x_cells, err) != SCFM_OK) return err->status;
    for (int i = 0; i < w->n_columns; i++)
        if (check_complete(w, w->columns[i].name, w->columns[i].rows, err) != SCFM_OK) return err->status;
    for (int i = 0; i < w->n_arrays; i++)
        if (check_complete(w, w->arrays[i].name, w->arrays[i].rows, err) != SCFM_OK) return err->status;
    if (w->obs_names < 0 && !w->annotating && write_default_names(w, err) != SCFM_OK) return err->status;
    if (check_complete(w, "obs names", w->obs_names_rows, err) != SCFM_OK) return err->status;
    const int n_order = w->n_kept + w->n_columns;
    const char **order = malloc(sizeof(char *) * (size_t)(n_order > 0 ? n_order : 1));
    if (!order) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
    for (int i = 0; i < w->n_kept; i++) order[i] = w->kept_order[i];
    for (int i = 0; i < w->n_columns; i++) order[w->n_kept + i] = w->columns[i].name;
    herr_t r = H5Aexists(w->obs, "column-order") > 0 ? H5Adelete(w->obs, "column-order") : 0;
    if (r >= 0) r = set_str_array_attr(w->obs, w->str_type, "column-order", order, n_order);
    free(order);
    if (r < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write obs column-order", w->tmp);
    close_all(w);
    r = H5Fclose(w->file);
    w->file = -1;
    if (r < 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot close", w->tmp);
    /* Durable before the rename makes it visible under its name, and the
     * rename itself durable after. */
    if (scfm_fsync_path(w->tmp, err) != SCFM_OK) return err->status;
    if (rename(w->tmp, w->path) != 0)
        return scfm_fail(err, SCFM_ERR_IO, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    char *dir = strdup(w->path);
    scfm_status st =
        dir ? scfm_fsync_path(dirname(dir), err) : scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", w->path);
    free(dir);
    return st;
}

/* The obs column-order of an existing file (a 1-D string attribute, or
 * h5py's empty float64 array for none), except the columns in skip. */
static scfm_status read_column_order(scfm_h5ad_writer *w, const char *const *skip, int n_skip, scfm_error *err) {
    if (H5Aexists(w->obs, "column-order") <= 0) return SCFM_OK;
    hid_t a = H5Aopen(w->obs, "column-order", H5P_DEFAULT);
    hid_t type = a < 0 ? -1 : H5Aget_type(a), space = a < 0 ? -1 : H5Aget_space(a);
    hssize_t n = space < 0 ? -1 : H5Sget_simple_extent_npoints(space);
    scfm_status st = a < 0 || n < 0 ? scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs: unreadable column-order", w->path)
                                    : SCFM_OK;
    if (st == SCFM_OK && n > 0 && H5Tget_class(type) == H5T_STRING) {
        char **names = calloc((size_t)n, sizeof(char *));
        w->kept_order = calloc((size_t)n, sizeof(char *));
        if (!names || !w->kept_order || H5Aread(a, w->str_type, names) < 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs: cannot read column-order as strings", w->path);
        for (hssize_t i = 0; st == SCFM_OK && i < n; i++) {
            int skipped = 0;
            for (int k = 0; k < n_skip; k++) skipped |= !strcmp(names[i], skip[k]);
            if (skipped) continue;
            if (!(w->kept_order[w->n_kept] = strdup(names[i]))) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
            else w->n_kept++;
        }
        if (names && st == SCFM_OK) H5Dvlen_reclaim(w->str_type, space, H5P_DEFAULT, names);
        free(names);
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (a >= 0) H5Aclose(a);
    return st;
}

scfm_status scfm_h5ad_annotate(const char *input, const char *path, int64_t n_cells, const char *const *replace,
                               int n_replace, scfm_h5ad_writer **out, scfm_error *err) {
    *out = NULL;
    scfm_h5ad_writer *w = new_writer(path);
    if (!w) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    w->annotating = 1;
    w->n_cells = w->x_cells = w->obs_names_rows = n_cells;
    if (scfm_copy_file(input, w->tmp, err) != SCFM_OK) {
        scfm_h5ad_abort(w);
        return err->status;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    w->file = fapl < 0 ? -1 : H5Fopen(w->tmp, H5F_ACC_RDWR, fapl);
    if (fapl >= 0) H5Pclose(fapl);
    w->str_type = H5Tcopy(H5T_C_S1);
    scfm_status st = SCFM_OK;
    if (w->file < 0 || w->str_type < 0 || H5Tset_size(w->str_type, H5T_VARIABLE) < 0 ||
        H5Tset_cset(w->str_type, H5T_CSET_UTF8) < 0)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot open a copy for writing (not HDF5?)", input);
    if (st == SCFM_OK && scfm_h5_kind(w->file, "obs") != H5I_GROUP)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: no obs group: not an AnnData file", input);
    if (st == SCFM_OK) {
        w->obs = H5Gopen2(w->file, "obs", H5P_DEFAULT);
        w->obsm = scfm_h5_kind(w->file, "obsm") == H5I_GROUP ? H5Gopen2(w->file, "obsm", H5P_DEFAULT)
                                                             : create_group(w->file, w->str_type, "obsm", "dict",
                                                                            "0.1.0");
        if (w->obs < 0 || w->obsm < 0) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot open obs and obsm", input);
    }
    if (st == SCFM_OK) st = read_column_order(w, replace, n_replace, err);
    if (st != SCFM_OK) {
        scfm_h5ad_abort(w);
        return st;
    }
    *out = w;
    return SCFM_OK;
}

scfm_status scfm_h5ad_finish(scfm_h5ad_writer *w, scfm_error *err) {
    scfm_status st = complete(w, err);
    if (st != SCFM_OK) {
        scfm_h5ad_abort(w);
        return st;
    }
    free_writer(w);
    return SCFM_OK;
}
