/* obsm arrays of an AnnData .h5ad: obsm/<name> as a dense 2-D float dataset
 * [cells, dim], read by rows; HDF5 converts float64 to float32. Kept apart
 * from the count-matrix reader (h5ad.c) because an embedding is read on its
 * own, by name, and X need not be opened for it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5util.h"

struct scfm_obsm {
    hid_t file, dataset;
    char *path;
    char name[256]; /* "obsm/X_scfm", for messages */
    int64_t rows;
    int dim;
};

static scfm_status missing(const scfm_obsm *o, scfm_error *err) {
    if (scfm_h5_kind(o->file, "obsm") != H5I_GROUP)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: no %s (the file has no obsm group)", o->path, o->name);
    /* the keys the file has, which the user may have meant */
    char keys[512] = "", key[256];
    hid_t g = H5Gopen2(o->file, "obsm", H5P_DEFAULT);
    H5G_info_t info;
    memset(&info, 0, sizeof info);
    if (g >= 0 && H5Gget_info(g, &info) < 0) info.nlinks = 0;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, key, sizeof key, H5P_DEFAULT);
        size_t used = strlen(keys);
        if (len > 0 && (size_t)len < sizeof key) snprintf(keys + used, sizeof keys - used, "%s%s", used ? ", " : "", key);
    }
    if (g >= 0) H5Gclose(g);
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: no %s (obsm keys present: %s)", o->path, o->name,
                     keys[0] ? keys : "none");
}

static scfm_status open_dataset(scfm_obsm *o, scfm_error *err) {
    H5I_type_t kind = scfm_h5_kind(o->file, o->name);
    if (kind == H5I_BADID) return missing(o, err);
    if (kind != H5I_DATASET)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s is a group (a dataframe or sparse matrix); expected a "
                         "dense 2-D float array", o->path, o->name);
    o->dataset = H5Dopen2(o->file, o->name, H5P_DEFAULT);
    if (o->dataset < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot open %s", o->path, o->name);
    hid_t type = H5Dget_type(o->dataset), space = H5Dget_space(o->dataset);
    hsize_t dims[H5S_MAX_RANK];
    int is_float = H5Tget_class(type) == H5T_FLOAT, rank = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    H5Tclose(type);
    if (rank != 2 || !is_float)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must be a 2-D float32 or float64 dataset", o->path, o->name);
    if (dims[1] < 1 || dims[1] > (1u << 20))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has %llu columns; expected 1 to %u", o->path, o->name,
                         (unsigned long long)dims[1], 1u << 20);
    o->rows = (int64_t)dims[0];
    o->dim = (int)dims[1];
    return SCFM_OK;
}

scfm_status scfm_obsm_open(const char *path, const char *name, scfm_obsm **out, scfm_error *err) {
    *out = NULL;
    scfm_obsm *o = calloc(1, sizeof *o);
    if (!o || !(o->path = strdup(path))) {
        free(o);
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
    }
    o->file = o->dataset = H5I_INVALID_HID;
    int n = snprintf(o->name, sizeof o->name, "obsm/%s", name);
    scfm_status st = SCFM_OK;
    if (!name[0] || strchr(name, '/') || n < 0 || (size_t)n >= sizeof o->name)
        st = scfm_fail(err, SCFM_ERR_ARG, "%s: invalid obsm key \"%s\"", path, name);
    if (st == SCFM_OK) st = scfm_h5_open_file(path, &o->file, err);
    if (st == SCFM_OK) st = open_dataset(o, err);
    if (st != SCFM_OK) {
        scfm_obsm_close(o);
        return st;
    }
    *out = o;
    return SCFM_OK;
}

void scfm_obsm_close(scfm_obsm *o) {
    if (!o) return;
    if (o->dataset >= 0) H5Dclose(o->dataset);
    if (o->file >= 0) H5Fclose(o->file);
    free(o->path);
    free(o);
}

int64_t scfm_obsm_rows(const scfm_obsm *o) { return o->rows; }
int scfm_obsm_dim(const scfm_obsm *o) { return o->dim; }

scfm_status scfm_obsm_read(scfm_obsm *o, int64_t first, int64_t n, float *rows, scfm_error *err) {
    if (first < 0 || n < 0 || first > o->rows - n)
        return scfm_fail(err, SCFM_ERR_ARG, "%s: rows [%lld, %lld) of %s are outside its %lld rows", o->path,
                         (long long)first, (long long)(first + n), o->name, (long long)o->rows);
    if (n == 0) return SCFM_OK;
    hsize_t off[2] = {(hsize_t)first, 0}, cnt[2] = {(hsize_t)n, (hsize_t)o->dim};
    hid_t fspace = H5Dget_space(o->dataset), mspace = H5Screate_simple(2, cnt, NULL);
    herr_t rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (rc >= 0) rc = H5Dread(o->dataset, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, rows);
    H5Sclose(mspace);
    H5Sclose(fspace);
    if (rc < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read %s rows [%lld, %lld) (truncated or corrupt file?)",
                         o->path, o->name, (long long)first, (long long)(first + n));
    /* float64 values beyond float32's range become Inf here and fail too */
    for (int64_t i = 0; i < n * o->dim; i++)
        if (!isfinite(rows[i]))
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s[%lld, %lld] = %g is not finite", o->path, o->name,
                             (long long)(first + i / o->dim), (long long)(i % o->dim), (double)rows[i]);
    return SCFM_OK;
}
