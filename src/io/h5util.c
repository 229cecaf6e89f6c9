#include "io/h5util.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

scfm_status scfm_h5_open_file(const char *path, hid_t *file, scfm_error *err) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported through err */
    scfm_h5_register_filters();
    *file = H5I_INVALID_HID;
    if (access(path, R_OK) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: %s", path, strerror(errno));
    *file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (*file < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot open as HDF5 (not HDF5, truncated or corrupt)", path);
    return SCFM_OK;
}

scfm_status scfm_h5_check_filters(hid_t d, const char *path, const char *name, scfm_error *err) {
    hid_t dcpl = H5Dget_create_plist(d);
    if (dcpl < 0) return SCFM_OK; /* the read will fail and say so */
    const int n = H5Pget_nfilters(dcpl);
    scfm_status st = SCFM_OK;
    for (int i = 0; st == SCFM_OK && i < n; i++) {
        unsigned flags = 0, config = 0;
        size_t n_params = 0;
        char filter[80] = "";
        const H5Z_filter_t id =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &n_params, NULL, sizeof filter, filter, &config);
        if (id >= 0 && H5Zfilter_avail(id) <= 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT,
                           "%s: %s is compressed with HDF5 filter %d%s%s%s, which scfm cannot decode (it reads "
                           "gzip, lzf, szip and shuffle): write the file again with compression \"gzip\" or "
                           "none, or put the filter's HDF5 plugin in HDF5_PLUGIN_PATH",
                           path, name, (int)id, filter[0] ? " (" : "", filter, filter[0] ? ")" : "");
    }
    H5Pclose(dcpl);
    return st;
}

H5I_type_t scfm_h5_kind(hid_t file, const char *name) {
    hid_t o = H5Oopen(file, name, H5P_DEFAULT);
    if (o < 0) return H5I_BADID;
    H5I_type_t kind = H5Iget_type(o);
    H5Oclose(o);
    return kind == H5I_GROUP || kind == H5I_DATASET ? kind : H5I_BADID;
}

/* The attribute if it exists, else -1. */
static hid_t open_attr(hid_t file, const char *name, const char *attr) {
    if (H5Aexists_by_name(file, name, attr, H5P_DEFAULT) <= 0) return H5I_INVALID_HID;
    return H5Aopen_by_name(file, name, attr, H5P_DEFAULT, H5P_DEFAULT);
}

/* Elements in a dataspace; -1 for more than one dimension. */
static int64_t space_length(hid_t space) {
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd == 0) return H5Sget_simple_extent_type(space) == H5S_SCALAR ? 1 : 0;
    if (nd != 1) return -1;
    hsize_t dims[1];
    H5Sget_simple_extent_dims(space, dims, NULL);
    return (int64_t)dims[0];
}

int scfm_h5_attr_string(hid_t file, const char *name, const char *attr, char *out, size_t cap) {
    hid_t a = open_attr(file, name, attr);
    if (a < 0) return 0;
    hid_t type = H5Aget_type(a), space = H5Aget_space(a), mem = H5I_INVALID_HID;
    int ok = 0;
    if (H5Tget_class(type) == H5T_STRING && space_length(space) == 1) {
        mem = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mem, H5Tget_cset(type));
        if (H5Tis_variable_str(type) > 0) {
            char *s = NULL;
            H5Tset_size(mem, H5T_VARIABLE);
            if (H5Aread(a, mem, &s) >= 0 && s) {
                ok = strlen(s) < cap;
                if (ok) strcpy(out, s);
                H5free_memory(s);
            }
        } else {
            size_t n = H5Tget_size(type);
            char *buf = malloc(n + 1);
            H5Tset_size(mem, n + 1); /* room for the terminator HDF5 writes */
            if (buf && H5Aread(a, mem, buf) >= 0) {
                buf[n] = '\0';
                ok = strlen(buf) < cap;
                if (ok) strcpy(out, buf);
            }
            free(buf);
        }
        H5Tclose(mem);
    }
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(a);
    return ok;
}

int scfm_h5_attr_ints(hid_t file, const char *name, const char *attr, int64_t *out, int max) {
    hid_t a = open_attr(file, name, attr);
    if (a < 0) return -1;
    hid_t type = H5Aget_type(a), space = H5Aget_space(a);
    int64_t n = space_length(space);
    int count = -1;
    if (H5Tget_class(type) == H5T_INTEGER && n >= 1 && n <= max && H5Aread(a, H5T_NATIVE_INT64, out) >= 0)
        count = (int)n;
    H5Sclose(space);
    H5Tclose(type);
    H5Aclose(a);
    return count;
}

int64_t scfm_h5_dataset_length(hid_t d) {
    hid_t space = H5Dget_space(d);
    int64_t n = H5Sget_simple_extent_ndims(space) == 1 ? space_length(space) : -1;
    H5Sclose(space);
    return n;
}

scfm_status scfm_h5_array_open(hid_t file, const char *path, const char *name, int integer, scfm_h5_array *a,
                               scfm_error *err) {
    a->file = path;
    snprintf(a->name, sizeof a->name, "%s", name);
    a->length = 0;
    a->id = H5Dopen2(file, name, H5P_DEFAULT);
    if (a->id < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: no dataset %s", path, name);
    scfm_status st = scfm_h5_check_filters(a->id, path, name, err);
    if (st != SCFM_OK) return st;
    hid_t type = H5Dget_type(a->id);
    H5T_class_t cls = H5Tget_class(type);
    H5Tclose(type);
    a->length = scfm_h5_dataset_length(a->id);
    if (cls != H5T_INTEGER && (integer || cls != H5T_FLOAT))
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must hold %s", path, name,
                         integer ? "integers" : "numbers");
    if (a->length < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must be 1-D", path, name);
    return SCFM_OK;
}

void scfm_h5_array_close(scfm_h5_array *a) {
    if (a->id >= 0) H5Dclose(a->id);
    a->id = H5I_INVALID_HID;
}

herr_t scfm_h5_read_slice(hid_t dset, hid_t mem_type, int64_t start, int64_t count, void *out) {
    return scfm_h5_read_slice_xfer(dset, mem_type, H5P_DEFAULT, start, count, out);
}

herr_t scfm_h5_read_slice_xfer(hid_t dset, hid_t mem_type, hid_t xfer, int64_t start, int64_t count, void *out) {
    if (count == 0) return 0;
    hid_t fspace = H5Dget_space(dset);
    hsize_t off[1] = {(hsize_t)start}, cnt[1] = {(hsize_t)count};
    hid_t mspace = H5Screate_simple(1, cnt, NULL);
    herr_t r = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (r >= 0) r = H5Dread(dset, mem_type, mspace, fspace, xfer, out);
    H5Sclose(mspace);
    H5Sclose(fspace);
    return r;
}

scfm_status scfm_h5_array_read(const scfm_h5_array *a, hid_t mem_type, int64_t start, int64_t count, void *out,
                               scfm_error *err) {
    if (scfm_h5_read_slice(a->id, mem_type, start, count, out) < 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read %s[%lld, %lld) (truncated or corrupt file?)",
                         a->file, a->name, (long long)start, (long long)(start + count));
    return SCFM_OK;
}

/* Appends elements [start, start + count) of a string or numeric dataset;
 * buf holds count elements of the memory type. */
static scfm_status push_slice(hid_t d, hid_t type, int64_t start, int64_t count, void *buf, scfm_names *out,
                              const char *path, const char *name, scfm_error *err) {
    H5T_class_t cls = H5Tget_class(type);
    int vlen = cls == H5T_STRING && H5Tis_variable_str(type) > 0;
    size_t size = cls == H5T_STRING && !vlen ? H5Tget_size(type) : 0;
    hid_t mem;
    if (cls == H5T_STRING) {
        mem = H5Tcopy(H5T_C_S1);
        H5Tset_size(mem, vlen ? H5T_VARIABLE : size);
        H5Tset_strpad(mem, H5T_STR_NULLPAD); /* fixed length: no terminator when a string fills it */
        H5Tset_cset(mem, H5Tget_cset(type));
    } else {
        mem = H5Tcopy(cls == H5T_INTEGER ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE);
    }
    if (scfm_h5_read_slice(d, mem, start, count, buf) < 0) {
        H5Tclose(mem);
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: cannot read %s (truncated or corrupt file?)", path, name);
    }
    int ok = 1;
    for (int64_t i = 0; ok && i < count; i++) {
        char text[32];
        if (vlen) {
            const char *s = ((char **)buf)[i];
            ok = scfm_names_push(out, s ? s : "", SIZE_MAX);
        } else if (cls == H5T_STRING) {
            ok = scfm_names_push(out, (const char *)buf + (size_t)i * size, size);
        } else {
            int n = cls == H5T_INTEGER ? snprintf(text, sizeof text, "%lld", (long long)((int64_t *)buf)[i])
                                       : snprintf(text, sizeof text, "%.15g", ((double *)buf)[i]);
            ok = scfm_names_push(out, text, (size_t)n);
        }
    }
    if (vlen) {
        hsize_t cnt[1] = {(hsize_t)count};
        hid_t space = H5Screate_simple(1, cnt, NULL);
        H5Dvlen_reclaim(mem, space, H5P_DEFAULT, buf);
        H5Sclose(space);
    }
    H5Tclose(mem);
    return ok ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", path, name);
}

scfm_status scfm_h5_read_strings(hid_t file, const char *path, const char *name, scfm_names *out,
                                 scfm_error *err) {
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: no dataset %s", path, name);
    hid_t type = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(type);
    int64_t n = scfm_h5_dataset_length(d);
    scfm_status st = scfm_h5_check_filters(d, path, name, err);
    if (st == SCFM_OK && cls != H5T_STRING && cls != H5T_INTEGER && cls != H5T_FLOAT)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s holds neither strings nor numbers", path, name);
    else if (st == SCFM_OK && n < 0)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s must be 1-D", path, name);
    size_t elem = cls == H5T_STRING && H5Tis_variable_str(type) <= 0 ? H5Tget_size(type) : sizeof(int64_t);
    int64_t slice = SCFM_MATRIX_SLICE;
    void *buf = st == SCFM_OK && n > 0 ? malloc(elem * (size_t)(n < slice ? n : slice)) : NULL;
    if (st == SCFM_OK && n > 0 && !buf) st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", path, name);
    for (int64_t lo = 0; st == SCFM_OK && lo < n; lo += slice)
        st = push_slice(d, type, lo, n - lo < slice ? n - lo : slice, buf, out, path, name, err);
    free(buf);
    H5Tclose(type);
    H5Dclose(d);
    return st;
}

/* Whether the dataset's elements are of class cls and fit int32 (integers)
 * or are IEEE float32 (floats): then the chunk reader reads them straight
 * into the chunk, without the slice buffers and HDF5's conversions to
 * int64 and double. */
static int converts_exactly(hid_t d, H5T_class_t cls) {
    hid_t type = H5Dget_type(d);
    int yes = 0;
    if (type >= 0 && H5Tget_class(type) == cls) {
        size_t size = H5Tget_size(type);
        if (cls == H5T_INTEGER) yes = size < 4 || (size == 4 && H5Tget_sign(type) == H5T_SGN_2);
        else yes = H5Tequal(type, H5T_IEEE_F32LE) > 0 || H5Tequal(type, H5T_IEEE_F32BE) > 0;
    }
    if (type >= 0) H5Tclose(type);
    return yes;
}

scfm_status scfm_h5_sparse_open(hid_t file, const char *path, const char *group, int64_t n_major,
                                int64_t n_minor, const char *major, scfm_h5_sparse *s, scfm_error *err) {
    char name[256];
    s->n_major = n_major;
    s->n_minor = n_minor;
    s->major = major;
    s->ptr = NULL;
    s->data.id = s->indices.id = s->indptr.id = H5I_INVALID_HID;
    snprintf(name, sizeof name, "%s/data", group);
    scfm_status st = scfm_h5_array_open(file, path, name, 0, &s->data, err);
    snprintf(name, sizeof name, "%s/indices", group);
    if (st == SCFM_OK) st = scfm_h5_array_open(file, path, name, 1, &s->indices, err);
    snprintf(name, sizeof name, "%s/indptr", group);
    if (st == SCFM_OK) st = scfm_h5_array_open(file, path, name, 1, &s->indptr, err);
    if (st != SCFM_OK) return st;
    if (s->indptr.length != n_major + 1)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has %lld entries; the shape's %lld %ss need %lld", path,
                         s->indptr.name, (long long)s->indptr.length, (long long)n_major, major,
                         (long long)(n_major + 1));
    if (s->data.length != s->indices.length)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s has %lld entries but %s has %lld", path, s->data.name,
                         (long long)s->data.length, s->indices.name, (long long)s->indices.length);
    s->direct = converts_exactly(s->indices.id, H5T_INTEGER) && converts_exactly(s->data.id, H5T_FLOAT);
    int64_t ends[2];
    if ((st = scfm_h5_array_read(&s->indptr, H5T_NATIVE_INT64, 0, 1, &ends[0], err)) != SCFM_OK ||
        (st = scfm_h5_array_read(&s->indptr, H5T_NATIVE_INT64, n_major, 1, &ends[1], err)) != SCFM_OK)
        return st;
    if (ends[0] != 0 || ends[1] != s->indices.length)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s runs from %lld to %lld; it must run from 0 to the %lld entries",
                         path, s->indptr.name, (long long)ends[0], (long long)ends[1], (long long)s->indices.length);
    return SCFM_OK;
}

void scfm_h5_sparse_close(scfm_h5_sparse *s) {
    scfm_h5_array_close(&s->data);
    scfm_h5_array_close(&s->indices);
    scfm_h5_array_close(&s->indptr);
    free(s->ptr);
    s->ptr = NULL;
}

/* ptr[0, n] must not decrease; ptr[0] is element `base` of indptr. */
static scfm_status check_indptr(const scfm_h5_sparse *s, const int64_t *ptr, int64_t base, int64_t n,
                                scfm_error *err) {
    for (int64_t i = 0; i < n; i++)
        if (ptr[i + 1] < ptr[i])
            return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s decreases at %s %lld", s->indptr.file, s->indptr.name,
                             s->major, (long long)(base + i));
    if (ptr[0] < 0 || ptr[n] > s->indices.length)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s leaves [0, %lld] between %ss %lld and %lld", s->indptr.file,
                         s->indptr.name, (long long)s->indices.length, s->major, (long long)base,
                         (long long)(base + n));
    return SCFM_OK;
}

static scfm_status bad_index(const scfm_h5_sparse *s, int64_t k, int64_t value, int64_t bound, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s[%lld] = %lld outside [0, %lld)", s->indices.file, s->indices.name,
                     (long long)k, (long long)value, (long long)bound);
}

static scfm_status bad_value(const scfm_h5_sparse *s, int64_t k, double v, const char *why, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s[%lld] = %g %s", s->data.file, s->data.name, (long long)k, v, why);
}

/* Scratch for one slice of indices and values. */
typedef struct {
    int64_t *index;
    double *value;
} slice_buf;

static scfm_status slice_alloc(slice_buf *b, int64_t n, const char *path, scfm_error *err) {
    size_t count = (size_t)(n < SCFM_MATRIX_SLICE ? n : SCFM_MATRIX_SLICE);
    b->index = malloc(sizeof(int64_t) * (count ? count : 1));
    b->value = malloc(sizeof(double) * (count ? count : 1));
    if (!b->index || !b->value) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for a read slice", path);
    return SCFM_OK;
}

static void slice_free(slice_buf *b) {
    free(b->index);
    free(b->value);
}

/* The chunk's cnt entries, read as int32 and float32 from entry `at` on,
 * checked as scfm_h5_sparse_read_major's slices check them: first a pass
 * without branches, which the compiler vectorises, then, only when it finds
 * a problem, the entry-by-entry search for the first one. Floating-point
 * exception flags are not read, and saying so lets the compiler vectorise
 * the comparisons. */
__attribute__((optimize("no-trapping-math")))
static scfm_status read_direct(scfm_h5_sparse *s, int require_counts, int64_t at, int64_t cnt, scfm_cells_chunk *c,
                               scfm_error *err) {
    scfm_status st = scfm_h5_array_read(&s->indices, H5T_NATIVE_INT32, at, cnt, c->genes, err);
    if (st == SCFM_OK) st = scfm_h5_array_read(&s->data, H5T_NATIVE_FLOAT, at, cnt, c->values, err);
    if (st != SCFM_OK) return st;
    /* as unsigned, a negative index is at least 2^31, past any valid one */
    const uint32_t n_minor = s->n_minor < ((int64_t)1 << 31) ? (uint32_t)s->n_minor : (uint32_t)1 << 31;
    const int32_t *g = c->genes;
    const float *v = c->values;
    int bad = 0;
    for (int64_t k = 0; k < cnt; k++) bad |= (uint32_t)g[k] >= n_minor;
    for (int64_t k = 0; k < cnt; k++)
        bad |= ((fabsf(v[k]) <= FLT_MAX) == 0) | (require_counts & ((v[k] < 0.0f) | (v[k] != truncf(v[k]))));
    for (int64_t k = 0; bad && k < cnt; k++) {
        const char *why = scfm_value_problem(v[k], require_counts);
        if (g[k] < 0 || g[k] >= s->n_minor) return bad_index(s, at + k, g[k], s->n_minor, err);
        if (why) return bad_value(s, at + k, v[k], why, err);
    }
    return SCFM_OK;
}

scfm_status scfm_h5_sparse_read_major(scfm_h5_sparse *s, int require_counts, int64_t first, int64_t n,
                                      scfm_cells_chunk *c, scfm_error *err) {
    int64_t *ip = c->indptr;
    scfm_status st = scfm_h5_array_read(&s->indptr, H5T_NATIVE_INT64, first, n + 1, ip, err);
    if (st == SCFM_OK) st = check_indptr(s, ip, first, n, err);
    if (st != SCFM_OK) return st;
    int64_t lo = ip[0], hi = ip[n];
    slice_buf b = {0};
    st = scfm_chunk_reserve_nnz(c, hi - lo, s->data.file, err);
    if (st == SCFM_OK && s->direct) st = read_direct(s, require_counts, lo, hi - lo, c, err);
    else if (st == SCFM_OK) st = slice_alloc(&b, hi - lo, s->data.file, err);
    /* The entries of the chunk are contiguous: convert them slice by slice
     * into genes and values, then rebase indptr to start at 0. */
    for (int64_t at = lo; st == SCFM_OK && !s->direct && at < hi; at += SCFM_MATRIX_SLICE) {
        int64_t cnt = hi - at < SCFM_MATRIX_SLICE ? hi - at : SCFM_MATRIX_SLICE;
        st = scfm_h5_array_read(&s->indices, H5T_NATIVE_INT64, at, cnt, b.index, err);
        if (st == SCFM_OK) st = scfm_h5_array_read(&s->data, H5T_NATIVE_DOUBLE, at, cnt, b.value, err);
        for (int64_t k = 0; st == SCFM_OK && k < cnt; k++) {
            const char *why = scfm_value_problem(b.value[k], require_counts);
            if (b.index[k] < 0 || b.index[k] >= s->n_minor) st = bad_index(s, at + k, b.index[k], s->n_minor, err);
            else if (why) st = bad_value(s, at + k, b.value[k], why, err);
            c->genes[at - lo + k] = (int32_t)b.index[k];
            c->values[at - lo + k] = (float)b.value[k];
        }
    }
    slice_free(&b);
    for (int64_t i = 0; st == SCFM_OK && i <= n; i++) ip[i] -= lo;
    return st;
}

/* Loads and checks the whole indptr once: O(genes) for a CSC matrix. */
static scfm_status load_ptr(scfm_h5_sparse *s, scfm_error *err) {
    if (s->ptr) return SCFM_OK;
    int64_t *ptr = malloc(sizeof(int64_t) * (size_t)(s->n_major + 1));
    if (!ptr) return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for %s", s->indptr.file, s->indptr.name);
    scfm_status st = scfm_h5_array_read(&s->indptr, H5T_NATIVE_INT64, 0, s->n_major + 1, ptr, err);
    if (st == SCFM_OK) st = check_indptr(s, ptr, 0, s->n_major, err);
    if (st != SCFM_OK) {
        free(ptr);
        return st;
    }
    s->ptr = ptr;
    return SCFM_OK;
}

/* Entries of the chunk in scan order (major, then file order). */
typedef struct {
    int64_t *cell;
    int32_t *gene;
    float *value;
    int64_t n, cap;
} triplets;

static int triplets_push(triplets *t, int64_t cell, int32_t gene, float value) {
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 1024;
        int64_t *c = realloc(t->cell, sizeof *c * (size_t)cap);
        if (c) t->cell = c;
        int32_t *g = realloc(t->gene, sizeof *g * (size_t)cap);
        if (g) t->gene = g;
        float *v = realloc(t->value, sizeof *v * (size_t)cap);
        if (v) t->value = v;
        if (!c || !g || !v) return 0;
        t->cap = cap;
    }
    t->cell[t->n] = cell;
    t->gene[t->n] = gene;
    t->value[t->n] = value;
    t->n++;
    return 1;
}

scfm_status scfm_h5_sparse_read_minor(scfm_h5_sparse *s, int require_counts, int64_t first, int64_t n,
                                      scfm_cells_chunk *c, scfm_error *err) {
    scfm_status st = load_ptr(s, err);
    int64_t nnz = s->indices.length, major = 0;
    slice_buf b = {0};
    triplets t = {0};
    if (st == SCFM_OK) st = slice_alloc(&b, nnz, s->data.file, err);
    for (int64_t at = 0; st == SCFM_OK && at < nnz; at += SCFM_MATRIX_SLICE) {
        int64_t cnt = nnz - at < SCFM_MATRIX_SLICE ? nnz - at : SCFM_MATRIX_SLICE, hit_lo = cnt, hit_hi = 0;
        st = scfm_h5_array_read(&s->indices, H5T_NATIVE_INT64, at, cnt, b.index, err);
        for (int64_t k = 0; st == SCFM_OK && k < cnt; k++) {
            if (b.index[k] < 0 || b.index[k] >= s->n_minor) st = bad_index(s, at + k, b.index[k], s->n_minor, err);
            if (b.index[k] >= first && b.index[k] < first + n) {
                if (hit_lo == cnt) hit_lo = k;
                hit_hi = k + 1;
            }
        }
        if (st != SCFM_OK || hit_lo == cnt) continue;
        st = scfm_h5_array_read(&s->data, H5T_NATIVE_DOUBLE, at + hit_lo, hit_hi - hit_lo, b.value, err);
        for (int64_t k = hit_lo; st == SCFM_OK && k < hit_hi; k++) {
            if (b.index[k] < first || b.index[k] >= first + n) continue;
            while (s->ptr[major + 1] <= at + k) major++;
            double v = b.value[k - hit_lo];
            const char *why = scfm_value_problem(v, require_counts);
            if (why) st = bad_value(s, at + k, v, why, err);
            else if (!triplets_push(&t, b.index[k] - first, (int32_t)major, (float)v))
                st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory reading %s", s->data.file, s->data.name);
        }
    }
    slice_free(&b);
    /* Counting sort by cell; scanning by major kept each cell's genes in order. */
    int64_t *ip = c->indptr;
    if (st == SCFM_OK) st = scfm_chunk_reserve_nnz(c, t.n, s->data.file, err);
    if (st == SCFM_OK) {
        memset(ip, 0, sizeof(int64_t) * (size_t)(n + 1));
        for (int64_t k = 0; k < t.n; k++) ip[t.cell[k] + 1]++;
        for (int64_t i = 0; i < n; i++) ip[i + 1] += ip[i];
        for (int64_t k = 0; k < t.n; k++) {
            int64_t w = ip[t.cell[k]]++;
            c->genes[w] = t.gene[k];
            c->values[w] = t.value[k];
        }
        for (int64_t i = n; i > 0; i--) ip[i] = ip[i - 1];
        ip[0] = 0;
    }
    free(t.cell);
    free(t.gene);
    free(t.value);
    return st;
}

/* ---- writing ---- */

static hid_t create_plist(hid_t cls, unsigned flags) {
    hid_t p = H5Pcreate(cls);
    herr_t r = p < 0 ? -1 : 0;
    if (r >= 0 && (flags & SCFM_H5_NO_TIMES)) r = H5Pset_obj_track_times(p, 0);
    if (r >= 0 && (flags & SCFM_H5_NO_FILL)) r = H5Pset_fill_time(p, H5D_FILL_TIME_NEVER);
    if (r < 0 && p >= 0) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

hid_t scfm_h5_create_group(hid_t loc, const char *name, unsigned flags) {
    hid_t gcpl = create_plist(H5P_GROUP_CREATE, flags);
    hid_t g = gcpl < 0 ? -1 : H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    if (gcpl >= 0) H5Pclose(gcpl);
    return g;
}

hid_t scfm_h5_create_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims,
                             const hsize_t *max_dims, const hsize_t *chunk, unsigned flags) {
    hid_t space = H5Screate_simple(rank, dims, max_dims);
    hid_t dcpl = create_plist(H5P_DATASET_CREATE, flags);
    herr_t r = space < 0 || dcpl < 0 ? -1 : 0;
    if (r >= 0 && chunk) r = H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = r < 0 ? -1 : H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    return d;
}

herr_t scfm_h5_write_attr(hid_t obj, const char *name, hid_t type, hid_t mem_type, int64_t n, const void *buf) {
    hsize_t dims[1] = {(hsize_t)(n > 0 ? n : 0)};
    hid_t space = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    hid_t a = space < 0 ? -1 : H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : n != 0 ? H5Awrite(a, mem_type, buf) : 0;
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    return r;
}

herr_t scfm_h5_write_rows(hid_t d, hid_t dxpl, hid_t mem_type, int64_t start, int64_t n, int width,
                          const void *buf) {
    int rank = width > 0 ? 2 : 1;
    hsize_t offset[2] = {(hsize_t)start, 0}, count[2] = {(hsize_t)(n > 0 ? n : 1), (hsize_t)width};
    hid_t file_space = H5Dget_space(d);
    hid_t mem_space = H5Screate_simple(rank, count, NULL);
    herr_t r = file_space < 0 || mem_space < 0 ? -1 : 0;
    if (r >= 0 && n > 0) r = H5Sselect_hyperslab(file_space, H5S_SELECT_SET, offset, NULL, count, NULL);
    else if (r >= 0 && (H5Sselect_none(file_space) < 0 || H5Sselect_none(mem_space) < 0)) r = -1;
    if (r >= 0) r = H5Dwrite(d, mem_type, mem_space, file_space, dxpl, buf);
    if (mem_space >= 0) H5Sclose(mem_space);
    if (file_space >= 0) H5Sclose(file_space);
    return r;
}
