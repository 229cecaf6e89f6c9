/* AnnData .h5ad (https://anndata.readthedocs.io/en/latest/fileformat-prose.html):
 * X dense or as a csr_matrix / csc_matrix group, obs and var dataframes whose
 * categorical columns are either groups of codes and categories (anndata >=
 * 0.8) or code datasets with the categories in <frame>/__categories/<column>
 * (anndata 0.7). The compound-dataset dataframes of anndata < 0.7 are
 * rejected. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"

enum { X_DENSE, X_CSR, X_CSC };

typedef struct {
    hid_t file;
    int layout;
    char x[8];             /* "X" or "raw/X" */
    hid_t dense;           /* X_DENSE */
    scfm_h5_sparse sparse; /* X_CSR, X_CSC */
    scfm_h5_array *codes;  /* [n_obs] */
} h5ad;

/* Codes [first, first + n) of a categorical with n_categories categories. */
static scfm_status read_codes(const scfm_h5_array *a, int64_t n_categories, int64_t first, int64_t n,
                              int32_t *codes, scfm_error *err) {
    scfm_status st = scfm_h5_array_read(a, H5T_NATIVE_INT32, first, n, codes, err);
    for (int64_t i = 0; st == SCFM_OK && i < n; i++)
        if (codes[i] < -1 || codes[i] >= n_categories)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s[%lld] = %d outside [-1, %lld)", a->file, a->name,
                           (long long)(first + i), codes[i], (long long)n_categories);
    return st;
}

/* Whether frame/col is categorical, and where its codes and categories are. */
static int categorical_paths(hid_t file, const char *frame, const char *col, char *codes, char *categories,
                             size_t cap) {
    char name[512], encoding[64];
    snprintf(name, sizeof name, "%s/%s", frame, col);
    H5I_type_t kind = scfm_h5_kind(file, name);
    if (kind == H5I_GROUP && scfm_h5_attr_string(file, name, "encoding-type", encoding, sizeof encoding) &&
        !strcmp(encoding, "categorical")) {
        snprintf(codes, cap, "%s/codes", name);
        snprintf(categories, cap, "%s/categories", name);
        return 1;
    }
    snprintf(categories, cap, "%s/__categories/%s", frame, col);
    snprintf(codes, cap, "%s", name);
    return kind == H5I_DATASET && scfm_h5_kind(file, categories) == H5I_DATASET;
}

/* Reads categories and opens the codes of a categorical of n entries. */
static scfm_status open_categorical(const scfm_matrix *m, const h5ad *h, const char *codes_name,
                                    const char *categories_name, int64_t n, scfm_names *categories,
                                    scfm_h5_array *codes, scfm_error *err) {
    scfm_status st = scfm_h5_read_strings(h->file, m->path, categories_name, categories, err);
    if (st == SCFM_OK && !scfm_names_finish(categories))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", m->path, categories_name);
    if (st == SCFM_OK) st = scfm_h5_array_open(h->file, m->path, codes_name, 1, codes, err);
    if (st == SCFM_OK && codes->length != n)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has %lld entries for %lld rows", m->path, codes_name,
                       (long long)codes->length, (long long)n);
    return st;
}

/* A dataframe column as text: strings (or numbers), or a categorical
 * decoded through its categories (missing values become ""). */
static scfm_status read_text_column(const scfm_matrix *m, const h5ad *h, const char *frame, const char *col,
                                    int64_t n, scfm_names *out, scfm_error *err) {
    char name[512], codes_name[1024], categories_name[1024];
    if (!categorical_paths(h->file, frame, col, codes_name, categories_name, sizeof codes_name)) {
        snprintf(name, sizeof name, "%s/%s", frame, col);
        return scfm_h5_read_strings(h->file, m->path, name, out, err);
    }
    scfm_names categories = {0};
    scfm_h5_array codes = {.id = H5I_INVALID_HID};
    int32_t *code = NULL;
    scfm_status st = open_categorical(m, h, codes_name, categories_name, n, &categories, &codes, err);
    if (st == SCFM_OK && !(code = malloc(sizeof *code * (size_t)(n ? n : 1))))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", m->path, codes_name);
    if (st == SCFM_OK) st = read_codes(&codes, categories.n, 0, n, code, err);
    for (int64_t i = 0; st == SCFM_OK && i < n; i++)
        if (!scfm_names_push(out, code[i] < 0 ? "" : categories.at[code[i]], SIZE_MAX))
            st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", m->path, codes_name);
    free(code);
    scfm_h5_array_close(&codes);
    scfm_names_free(&categories);
    return st;
}

/* The dataset named by a dataframe's _index attribute. */
static void index_column(hid_t file, const char *frame, char *out, size_t cap) {
    if (!scfm_h5_attr_string(file, frame, "_index", out, cap)) snprintf(out, cap, "_index");
}

static scfm_status reject_compound_frame(const scfm_matrix *m, hid_t file, const char *frame, scfm_error *err) {
    if (scfm_h5_kind(file, frame) != H5I_DATASET) return SCFM_OK;
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s is a compound dataset (anndata < 0.7): unsupported legacy "
                         "layout; rewrite the file with anndata >= 0.7", m->path, frame);
}

static scfm_status open_x(scfm_matrix *m, h5ad *h, scfm_error *err) {
    H5I_type_t kind = scfm_h5_kind(h->file, h->x);
    snprintf(m->entries_field, sizeof m->entries_field, "%s", h->x);
    if (kind == H5I_BADID)
        return scfm_fail(err, SCFM_ERR_FORMAT, m->opt.use_raw ? "%s: no raw/X (use_raw asks for it)"
                                                              : "%s: no X (the count matrix)", m->path);
    if (kind == H5I_DATASET) {
        h->layout = X_DENSE;
        h->dense = H5Dopen2(h->file, h->x, H5P_DEFAULT);
        hid_t type = H5Dget_type(h->dense), space = H5Dget_space(h->dense);
        H5T_class_t cls = H5Tget_class(type);
        hsize_t dims[2] = {0, 0};
        int nd = H5Sget_simple_extent_ndims(space);
        if (nd == 2) H5Sget_simple_extent_dims(space, dims, NULL);
        H5Sclose(space);
        H5Tclose(type);
        if (nd != 2 || (cls != H5T_INTEGER && cls != H5T_FLOAT))
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must be a 2-D numeric dataset or a sparse group", m->path,
                             h->x);
        m->n_cells = (int64_t)dims[0];
        m->n_genes = (int64_t)dims[1];
        return scfm_h5_check_filters(h->dense, m->path, h->x, err);
    }
    char encoding[64] = "";
    int64_t shape[2];
    if (scfm_h5_attr_string(h->file, h->x, "encoding-type", encoding, sizeof encoding)) {
        h->layout = !strcmp(encoding, "csr_matrix") ? X_CSR : !strcmp(encoding, "csc_matrix") ? X_CSC : -1;
    } else if (scfm_h5_attr_string(h->file, h->x, "h5sparse_format", encoding, sizeof encoding)) {
        h->layout = !strcmp(encoding, "csr") ? X_CSR : !strcmp(encoding, "csc") ? X_CSC : -1;
    } else {
        h->layout = -1;
    }
    m->small_reads = h->layout == X_CSR;
    if (h->layout < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s is a group of encoding \"%s\"; expected csr_matrix or "
                         "csc_matrix", m->path, h->x, encoding);
    if (scfm_h5_attr_ints(h->file, h->x, "shape", shape, 2) != 2 &&
        scfm_h5_attr_ints(h->file, h->x, "h5sparse_shape", shape, 2) != 2)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has no attribute shape of 2 integers", m->path, h->x);
    if (shape[0] < 0 || shape[1] < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has shape (%lld, %lld)", m->path, h->x, (long long)shape[0],
                         (long long)shape[1]);
    m->n_cells = shape[0];
    m->n_genes = shape[1];
    snprintf(m->entries_field, sizeof m->entries_field, "%s/indices", h->x);
    if (h->layout == X_CSR)
        return scfm_h5_sparse_open(h->file, m->path, h->x, m->n_cells, m->n_genes, "row", &h->sparse, err);
    return scfm_h5_sparse_open(h->file, m->path, h->x, m->n_genes, m->n_cells, "column", &h->sparse, err);
}

static scfm_status read_var(scfm_matrix *m, h5ad *h, scfm_error *err) {
    const char *var = m->opt.use_raw ? "raw/var" : "var";
    char index[256], name[512];
    scfm_status st = reject_compound_frame(m, h->file, var, err);
    if (st != SCFM_OK) return st;
    if (scfm_h5_kind(h->file, var) != H5I_GROUP)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: no %s (the gene names)", m->path, var);
    index_column(h->file, var, index, sizeof index);
    snprintf(name, sizeof name, "%s/gene_ids", var);
    const char *id_column = scfm_h5_kind(h->file, name) != H5I_BADID ? "gene_ids" : index;
    snprintf(m->gene_id_field, sizeof m->gene_id_field, "%s/%s", var, id_column);
    st = read_text_column(m, h, var, id_column, m->n_genes, &m->gene_ids, err);
    if (st == SCFM_OK)
        st = scfm_names_check(m->path, &m->gene_ids, m->gene_id_field, m->n_genes, "genes", h->x, err);
    snprintf(name, sizeof name, "%s/feature_name", var);
    const char *symbol_column = scfm_h5_kind(h->file, name) != H5I_BADID ? "feature_name"
                                : id_column != index ? index : NULL;
    if (st != SCFM_OK || !symbol_column) return st;
    snprintf(name, sizeof name, "%s/%s", var, symbol_column);
    st = read_text_column(m, h, var, symbol_column, m->n_genes, &m->gene_symbols, err);
    if (st == SCFM_OK) st = scfm_names_check(m->path, &m->gene_symbols, name, m->n_genes, "genes", h->x, err);
    return st;
}

/* Adds obs column `col` when it is categorical. */
static scfm_status add_obs_column(scfm_matrix *m, h5ad *h, const char *col, scfm_error *err) {
    char codes_name[1024], categories_name[1024];
    if (!categorical_paths(h->file, "obs", col, codes_name, categories_name, sizeof codes_name)) return SCFM_OK;
    scfm_obs_column c = {0};
    scfm_h5_array codes = {.id = H5I_INVALID_HID};
    scfm_status st = open_categorical(m, h, codes_name, categories_name, m->n_cells, &c.categories, &codes, err);
    if (st == SCFM_OK && c.categories.n > INT32_MAX)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has more than %d categories", m->path, categories_name, INT32_MAX);
    scfm_obs_column *obs = st == SCFM_OK ? realloc(m->obs, sizeof *obs * (size_t)(m->n_obs + 1)) : NULL;
    if (obs) m->obs = obs;
    scfm_h5_array *all = obs ? realloc(h->codes, sizeof *all * (size_t)(m->n_obs + 1)) : NULL;
    if (all) h->codes = all;
    if (st == SCFM_OK && (!all || !(c.name = strdup(col))))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading obs", m->path);
    if (st != SCFM_OK) {
        scfm_h5_array_close(&codes);
        scfm_names_free(&c.categories);
        return st;
    }
    h->codes[m->n_obs] = codes;
    m->obs[m->n_obs++] = c;
    return SCFM_OK;
}

static scfm_status read_obs(scfm_matrix *m, h5ad *h, scfm_error *err) {
    char index[256], name[512];
    scfm_status st = reject_compound_frame(m, h->file, "obs", err);
    if (st != SCFM_OK || scfm_h5_kind(h->file, "obs") != H5I_GROUP) return st; /* no obs: no names */
    index_column(h->file, "obs", index, sizeof index);
    if (!m->opt.skip_cell_names) {
        snprintf(name, sizeof name, "obs/%s", index);
        st = scfm_h5_read_strings(h->file, m->path, name, &m->cell_names, err);
        if (st == SCFM_OK) st = scfm_names_check(m->path, &m->cell_names, name, m->n_cells, "cells", h->x, err);
        if (st != SCFM_OK) return st;
    }
    hid_t g = H5Gopen2(h->file, "obs", H5P_DEFAULT);
    H5G_info_t info;
    memset(&info, 0, sizeof info);
    if (g < 0 || H5Gget_info(g, &info) < 0) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot list obs", m->path);
    for (hsize_t i = 0; st == SCFM_OK && i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof name)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: obs column %llu has an unreadable or over-long name", m->path,
                           (unsigned long long)i);
        else if (strcmp(name, index) && strcmp(name, "__categories"))
            st = add_obs_column(m, h, name, err);
    }
    if (g >= 0) H5Gclose(g);
    return st;
}

static scfm_status read_dense(scfm_matrix *m, h5ad *h, int64_t first, int64_t n, scfm_cells_chunk *c,
                              scfm_error *err) {
    int64_t genes = m->n_genes, w = 0;
    int64_t rows = genes > 0 && genes < SCFM_MATRIX_SLICE ? SCFM_MATRIX_SLICE / genes : 1;
    double *buf = malloc(sizeof *buf * (size_t)(rows * genes + 1));
    if (!buf) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", m->path, h->x);
    hid_t fspace = H5Dget_space(h->dense);
    scfm_status st = SCFM_OK;
    for (int64_t r0 = first; st == SCFM_OK && r0 < first + n; r0 += rows) {
        int64_t count = first + n - r0 < rows ? first + n - r0 : rows;
        hsize_t off[2] = {(hsize_t)r0, 0}, cnt[2] = {(hsize_t)count, (hsize_t)genes};
        hsize_t mcnt[1] = {(hsize_t)(count * genes)};
        hid_t mspace = H5Screate_simple(1, mcnt, NULL);
        if (genes > 0 && (H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, cnt, NULL) < 0 ||
                          H5Dread(h->dense, H5T_NATIVE_DOUBLE, mspace, fspace, H5P_DEFAULT, buf) < 0))
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read %s rows [%lld, %lld) (truncated or corrupt file?)",
                           m->path, h->x, (long long)r0, (long long)(r0 + count));
        H5Sclose(mspace);
        for (int64_t r = 0; st == SCFM_OK && r < count; r++) {
            st = scfm_chunk_reserve_nnz(c, w + genes, m->path, err);
            for (int64_t j = 0; st == SCFM_OK && j < genes; j++) {
                double v = buf[r * genes + j];
                const char *why = v == 0 ? NULL : scfm_value_problem(v, m->opt.require_counts);
                if (why)
                    st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s[%lld, %lld] = %g %s", m->path, h->x,
                                   (long long)(r0 + r), (long long)j, v, why);
                else if (v != 0) {
                    c->genes[w] = (int32_t)j;
                    c->values[w++] = (float)v;
                }
            }
            c->indptr[r0 + r - first + 1] = w;
        }
    }
    H5Sclose(fspace);
    free(buf);
    return st;
}

static scfm_status h5ad_read(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *c, scfm_error *err) {
    h5ad *h = m->impl;
    int rc = m->opt.require_counts;
    if (h->layout == X_CSR) return scfm_h5_sparse_read_major(&h->sparse, rc, first, n, c, err);
    if (h->layout == X_CSC) return scfm_h5_sparse_read_minor(&h->sparse, rc, first, n, c, err);
    return read_dense(m, h, first, n, c, err);
}

static scfm_status h5ad_obs_codes(scfm_matrix *m, int column, int64_t first, int64_t n, int32_t *codes,
                                  scfm_error *err) {
    h5ad *h = m->impl;
    return read_codes(&h->codes[column], m->obs[column].categories.n, first, n, codes, err);
}

static void h5ad_close(scfm_matrix *m) {
    h5ad *h = m->impl;
    if (!h) return;
    for (int i = 0; i < m->n_obs; i++) scfm_h5_array_close(&h->codes[i]);
    free(h->codes);
    scfm_h5_sparse_close(&h->sparse);
    if (h->dense >= 0) H5Dclose(h->dense);
    if (h->file >= 0) H5Fclose(h->file);
    free(h);
}

static const scfm_matrix_ops h5ad_ops = {h5ad_read, h5ad_obs_codes, h5ad_close};

scfm_status scfm_h5ad_open(scfm_matrix *m, scfm_error *err) {
    h5ad *h = calloc(1, sizeof *h);
    if (!h) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", m->path);
    h->file = h->dense = H5I_INVALID_HID;
    h->sparse.data.id = h->sparse.indices.id = h->sparse.indptr.id = H5I_INVALID_HID;
    snprintf(h->x, sizeof h->x, "%s", m->opt.use_raw ? "raw/X" : "X");
    m->impl = h;
    m->ops = &h5ad_ops;
    scfm_status st = scfm_h5_open_file(m->path, &h->file, err);
    if (st == SCFM_OK) st = open_x(m, h, err);
    if (st == SCFM_OK) st = read_obs(m, h, err);
    if (st == SCFM_OK) st = read_var(m, h, err);
    return st;
}
