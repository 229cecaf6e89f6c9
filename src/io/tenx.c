/* 10x Genomics feature-barcode matrix .h5
 * (https://www.10xgenomics.com/support/software/cell-ranger/latest/analysis/outputs/cr-outputs-h5-matrices):
 * genes x cells in CSC form, so each cell is one column and a chunk of cells
 * one contiguous slice of indices and data. Cell Ranger >= 3 writes /matrix
 * with features/{id,name}; Cell Ranger 2 one group per genome with genes and
 * gene_names. All features are read, whatever their feature_type. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"

typedef struct {
    hid_t file;
    scfm_h5_sparse sparse;
} tenx;

/* The Cell Ranger 2 genome group: the one top-level group with an indptr.
 * Several genomes are an error rather than a silent choice. */
static scfm_status find_genome(const scfm_matrix *m, hid_t file, char *group, size_t cap, scfm_error *err) {
    H5G_info_t info;
    if (H5Gget_info(file, &info) < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot list the root group", m->path);
    char found[512] = "", name[256], indptr[300];
    int n = 0;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (len < 0 || (size_t)len >= sizeof name) continue;
        snprintf(indptr, sizeof indptr, "%s/indptr", name);
        if (scfm_h5_kind(file, indptr) != H5I_DATASET) continue;
        size_t used = strlen(found);
        snprintf(found + used, sizeof found - used, "%s%s", n ? ", " : "", name);
        if (n++ == 0) snprintf(group, cap, "%s", name);
    }
    if (n == 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: neither h5ad (no X) nor 10x h5 (no /matrix and no genome group "
                         "with indptr)", m->path);
    if (n > 1)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %d genome groups (%s); scfm reads one genome per file", m->path,
                         n, found);
    return SCFM_OK;
}

static scfm_status tenx_read(scfm_matrix *m, int64_t first, int64_t n, scfm_cells_chunk *c, scfm_error *err) {
    tenx *t = m->impl;
    return scfm_h5_sparse_read_major(&t->sparse, m->opt.require_counts, first, n, c, err);
}

static void tenx_close(scfm_matrix *m) {
    tenx *t = m->impl;
    if (!t) return;
    scfm_h5_sparse_close(&t->sparse);
    if (t->file >= 0) H5Fclose(t->file);
    free(t);
}

static const scfm_matrix_ops tenx_ops = {tenx_read, NULL, tenx_close};

/* Reads the strings at group/name when present, one per each of want genes
 * or cells. */
static scfm_status read_names(scfm_matrix *m, const tenx *t, const char *group, const char *name, int64_t want,
                              const char *what, int required, scfm_names *out, scfm_error *err) {
    char path[512], shape[300];
    snprintf(path, sizeof path, "%s/%s", group, name);
    if (!required && scfm_h5_kind(t->file, path) == H5I_BADID) return SCFM_OK;
    snprintf(shape, sizeof shape, "%s/shape", group);
    scfm_status st = scfm_h5_read_strings(t->file, m->path, path, out, err);
    return st == SCFM_OK ? scfm_names_check(m->path, out, path, want, what, shape, err) : st;
}

scfm_status scfm_tenx_open(scfm_matrix *m, scfm_error *err) {
    tenx *t = calloc(1, sizeof *t);
    if (!t) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", m->path);
    t->file = H5I_INVALID_HID;
    t->sparse.data.id = t->sparse.indices.id = t->sparse.indptr.id = H5I_INVALID_HID;
    m->impl = t;
    m->ops = &tenx_ops;
    m->small_reads = 1;
    char group[256] = "matrix", name[300];
    scfm_status st = scfm_h5_open_file(m->path, &t->file, err);
    if (st != SCFM_OK) return st;
    int v3 = scfm_h5_kind(t->file, "matrix") == H5I_GROUP;
    if (!v3 && (st = find_genome(m, t->file, group, sizeof group, err)) != SCFM_OK) return st;

    scfm_h5_array shape_array;
    int64_t shape[2] = {0, 0};
    snprintf(name, sizeof name, "%s/shape", group);
    st = scfm_h5_array_open(t->file, m->path, name, 1, &shape_array, err);
    if (st == SCFM_OK && shape_array.length != 2)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must hold 2 integers (genes, cells)", m->path, name);
    if (st == SCFM_OK) st = scfm_h5_array_read(&shape_array, H5T_NATIVE_INT64, 0, 2, shape, err);
    scfm_h5_array_close(&shape_array);
    if (st == SCFM_OK && (shape[0] < 0 || shape[1] < 0))
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s is (%lld, %lld)", m->path, name, (long long)shape[0],
                       (long long)shape[1]);
    if (st != SCFM_OK) return st;
    m->n_genes = shape[0];
    m->n_cells = shape[1];

    const char *ids = v3 ? "features/id" : "genes", *symbols = v3 ? "features/name" : "gene_names";
    snprintf(m->gene_id_field, sizeof m->gene_id_field, "%s/%s", group, ids);
    snprintf(m->entries_field, sizeof m->entries_field, "%s/indices", group);
    st = read_names(m, t, group, ids, m->n_genes, "genes", 1, &m->gene_ids, err);
    if (st == SCFM_OK) st = read_names(m, t, group, symbols, m->n_genes, "genes", 0, &m->gene_symbols, err);
    if (st == SCFM_OK && !m->opt.skip_cell_names)
        st = read_names(m, t, group, "barcodes", m->n_cells, "cells", 0, &m->cell_names, err);
    if (st == SCFM_OK)
        st = scfm_h5_sparse_open(t->file, m->path, group, m->n_cells, m->n_genes, "column", &t->sparse, err);
    return st;
}
