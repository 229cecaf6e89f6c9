/* The .h5ad writer: a complete file appears under its name only at finish,
 * with the CSR arrays and obs columns appended in chunks; abort and every
 * misuse (more cells than declared, too few, out-of-order or malformed
 * chunks, bad codes, repeated names) leave no file and an error that names
 * the path. anndata's side is checked by tests/cli/simulate.sh. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "scfm/io.h"

#define TMP_DIR SCFM_TEST_BINARY_DIR "/h5ad_write_tmp"

static const char *const GENES[] = {"g0", "g1", "g2", "g3"};
static const char *const TYPES[] = {"B", "T"};

/* A scratch path with no file there yet. */
static const char *tmp_path(const char *name) {
    const char *path = scfm_test_tmp_path(TMP_DIR, name);
    unlink(path);
    return path;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int tmp_exists(const char *path) {
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    return exists(tmp);
}

/* Three cells: {g1: 1, g3: 2}, {}, {g0: 5}, starting at cell `first`. */
static scfm_cells_chunk three_cells(int64_t first) {
    static int64_t indptr[] = {0, 2, 2, 3};
    static int32_t genes[] = {1, 3, 0};
    static float values[] = {1, 2, 5};
    return (scfm_cells_chunk){.first = first, .n_cells = 3, .indptr = indptr, .genes = genes, .values = values};
}

static scfm_h5ad_writer *create(const char *path, int64_t n_cells) {
    scfm_error err = {0};
    scfm_h5ad_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_h5ad_create(path, n_cells, 4, GENES, &w, &err), SCFM_OK);
    CU_ASSERT_FATAL(w != NULL);
    CU_ASSERT(tmp_exists(path));
    CU_ASSERT(!exists(path));
    return w;
}

/* A writer declared for n_cells that holds three_cells(0) already. */
static scfm_h5ad_writer *create_with_three(const char *path, int64_t n_cells) {
    scfm_h5ad_writer *w = create(path, n_cells);
    scfm_error err = {0};
    scfm_cells_chunk c = three_cells(0);
    CU_ASSERT_EQUAL(scfm_h5ad_append_x(w, &c, &err), SCFM_OK);
    return w;
}

/* The failed call's status and a message holding the path and want. */
static void expect_error(scfm_status got, const scfm_error *err, scfm_status want_status, const char *path,
                         const char *want) {
    CU_ASSERT_EQUAL(got, want_status);
    int ok = strstr(err->message, path) != NULL && strstr(err->message, want) != NULL;
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks the path or \"%s\"\n", err->message, want);
    CU_ASSERT(ok);
}

/* After a failed call, finish fails too and leaves nothing behind. */
static void expect_finish_fails(scfm_h5ad_writer *w, const char *path) {
    scfm_error err = {0};
    CU_ASSERT_NOT_EQUAL(scfm_h5ad_finish(w, &err), SCFM_OK);
    CU_ASSERT(!exists(path));
    CU_ASSERT(!tmp_exists(path));
}

static void read_i64(hid_t f, const char *name, int64_t *out) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    CU_ASSERT_FATAL(d >= 0);
    CU_ASSERT(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0);
    H5Dclose(d);
}

static size_t dataset_type_size(hid_t f, const char *name) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t t = H5Dget_type(d);
    size_t n = H5Tget_size(t);
    H5Tclose(t);
    H5Dclose(d);
    return n;
}

static void test_finish_renames(void) {
    const char *path = tmp_path("complete.h5ad");
    scfm_h5ad_writer *w = create(path, 6);
    scfm_error err = {0};
    scfm_cells_chunk a = three_cells(0), b = three_cells(3);
    int32_t codes[6] = {0, 1, -1, 1, 1, 0};
    float rows[6 * 2] = {0};
    CU_ASSERT_EQUAL(scfm_h5ad_append_x(w, &a, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_categorical(w, "cell_type", TYPES, 2, codes, 4, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_append_x(w, &b, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_categorical(w, "cell_type", NULL, 2, codes + 4, 2, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obsm(w, "X_emb", 2, rows, 6, &err), SCFM_OK);
    float fold[4] = {1, 2, 3, 4};
    CU_ASSERT_EQUAL(scfm_h5ad_write_varm(w, "fold", 1, fold, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_finish(w, &err), SCFM_OK);
    CU_ASSERT(exists(path));
    CU_ASSERT(!tmp_exists(path));

    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    int64_t indptr[7], shape[2];
    read_i64(f, "X/indptr", indptr);
    int64_t want[7] = {0, 2, 2, 3, 5, 5, 6};
    CU_ASSERT(!memcmp(indptr, want, sizeof want));
    hid_t a_shape = H5Aopen_by_name(f, "X", "shape", H5P_DEFAULT, H5P_DEFAULT);
    CU_ASSERT(H5Aread(a_shape, H5T_NATIVE_INT64, shape) >= 0);
    H5Aclose(a_shape);
    CU_ASSERT(shape[0] == 6 && shape[1] == 4);
    CU_ASSERT_EQUAL(dataset_type_size(f, "obs/cell_type/codes"), 1);
    CU_ASSERT(H5Lexists(f, "obs/_index", H5P_DEFAULT) > 0); /* default names */
    CU_ASSERT(H5Lexists(f, "obsm/X_emb", H5P_DEFAULT) > 0);
    CU_ASSERT(H5Lexists(f, "varm/fold", H5P_DEFAULT) > 0);
    H5Fclose(f);
}

static void test_finish_replaces(void) {
    const char *path = tmp_path("replaced.h5ad");
    FILE *fp = fopen(path, "w");
    CU_ASSERT_FATAL(fp != NULL);
    fputs("old", fp);
    fclose(fp);
    scfm_error err = {0};
    scfm_h5ad_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_h5ad_create(path, 0, 4, GENES, &w, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_finish(w, &err), SCFM_OK);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    CU_ASSERT(H5Lexists(f, "obs/_index", H5P_DEFAULT) > 0); /* anndata needs it even empty */
    H5Fclose(f);
}

static void test_wide_codes(void) {
    const char *path = tmp_path("wide.h5ad");
    static char text[200][16];
    const char *categories[200];
    for (int i = 0; i < 200; i++) {
        snprintf(text[i], sizeof text[i], "c%d", i);
        categories[i] = text[i];
    }
    scfm_h5ad_writer *w = create_with_three(path, 3);
    scfm_error err = {0};
    int32_t codes[3] = {199, 0, 150};
    const char *names[3] = {"x", "y", "z"};
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_categorical(w, "label", categories, 200, codes, 3, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_names(w, names, 3, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_h5ad_finish(w, &err), SCFM_OK);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0);
    CU_ASSERT_EQUAL(dataset_type_size(f, "obs/label/codes"), 2);
    H5Fclose(f);
}

static void test_abort_removes(void) {
    const char *path = tmp_path("aborted.h5ad");
    scfm_h5ad_writer *w = create_with_three(path, 3);
    scfm_h5ad_abort(w);
    CU_ASSERT(!exists(path));
    CU_ASSERT(!tmp_exists(path));
    scfm_h5ad_abort(NULL);
}

static void test_too_many_cells(void) {
    const char *path = tmp_path("too_many.h5ad");
    scfm_h5ad_writer *w = create_with_three(path, 5);
    scfm_error err = {0};
    scfm_cells_chunk b = three_cells(3);
    expect_error(scfm_h5ad_append_x(w, &b, &err), &err, SCFM_ERR_ARG, path, "exceed the 5 declared");
    scfm_error later = {0};
    expect_error(scfm_h5ad_append_x(w, &b, &later), &later, SCFM_ERR_ARG, path, "earlier write failed");
    expect_finish_fails(w, path);
}

static void test_too_few_cells(void) {
    const char *path = tmp_path("too_few.h5ad");
    scfm_h5ad_writer *w = create_with_three(path, 4);
    scfm_error err = {0};
    expect_error(scfm_h5ad_finish(w, &err), &err, SCFM_ERR_ARG, path, "X has 3 of the 4 declared cells");
    CU_ASSERT(!exists(path));
    CU_ASSERT(!tmp_exists(path));

    path = tmp_path("short_column.h5ad");
    w = create_with_three(path, 3);
    int32_t codes[1] = {0};
    scfm_error err2 = {0};
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_categorical(w, "cell_type", TYPES, 2, codes, 1, &err2), SCFM_OK);
    expect_error(scfm_h5ad_finish(w, &err2), &err2, SCFM_ERR_ARG, path, "cell_type has 1 of the 3");
    CU_ASSERT(!tmp_exists(path));
}

static void test_bad_chunks(void) {
    const char *path = tmp_path("bad_chunk.h5ad");
    scfm_error err = {0};
    scfm_h5ad_writer *w = create(path, 6);
    scfm_cells_chunk c = three_cells(1);
    expect_error(scfm_h5ad_append_x(w, &c, &err), &err, SCFM_ERR_ARG, path, "starts at cell 1, expected 0");
    expect_finish_fails(w, path);

    int64_t indptr[] = {0, 2};
    int32_t unsorted[] = {3, 1}, outside[] = {0, 4};
    float values[] = {1, 1};
    const int32_t *bad[] = {unsorted, outside};
    for (int i = 0; i < 2; i++) {
        scfm_error e = {0};
        w = create(path, 6);
        scfm_cells_chunk one = {.first = 0, .n_cells = 1, .indptr = indptr, .genes = (int32_t *)bad[i],
                                .values = values};
        expect_error(scfm_h5ad_append_x(w, &one, &e), &e, SCFM_ERR_ARG, path, "cell 0: gene");
        scfm_h5ad_abort(w);
    }
    CU_ASSERT(!tmp_exists(path));
}

static void test_bad_columns(void) {
    const char *path = tmp_path("bad_column.h5ad");
    int32_t codes[3] = {0, 2, 1};
    const char *repeated[] = {"B", "B"};
    struct {
        const char *column;
        const char *const *categories;
        int n;
        const char *want;
    } cases[] = {
        {"cell_type", TYPES, 2, "cell 1 has code 2"},
        {"cell_type", repeated, 2, "category 'B' appears twice"},
        {"_index", TYPES, 2, "obs column name '_index'"},
        {"a/b", TYPES, 2, "obs column name 'a/b'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        scfm_error err = {0};
        scfm_h5ad_writer *w = create(path, 3);
        scfm_status s = scfm_h5ad_append_obs_categorical(w, cases[i].column, cases[i].categories, cases[i].n, codes,
                                                         3, &err);
        expect_error(s, &err, SCFM_ERR_ARG, path, cases[i].want);
        expect_finish_fails(w, path);
    }
    scfm_error err = {0};
    scfm_h5ad_writer *w = create(path, 3);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obs_categorical(w, "cell_type", TYPES, 2, codes, 1, &err), SCFM_OK);
    expect_error(scfm_h5ad_append_obs_categorical(w, "cell_type", TYPES, 3, codes, 1, &err), &err, SCFM_ERR_ARG,
                 path, "3 categories, earlier 2");
    scfm_h5ad_abort(w);

    scfm_error e2 = {0};
    float rows[6] = {0};
    w = create(path, 3);
    CU_ASSERT_EQUAL(scfm_h5ad_append_obsm(w, "X_emb", 2, rows, 1, &e2), SCFM_OK);
    expect_error(scfm_h5ad_append_obsm(w, "X_emb", 3, rows, 1, &e2), &e2, SCFM_ERR_ARG, path,
                 "dimension 3, expected 2");
    expect_finish_fails(w, path);
}

static void test_create_errors(void) {
    const char *path = tmp_path("repeated_genes.h5ad");
    const char *genes[] = {"g0", "g1", "g0"};
    scfm_error err = {0};
    scfm_h5ad_writer *w = (scfm_h5ad_writer *)1;
    expect_error(scfm_h5ad_create(path, 1, 3, genes, &w, &err), &err, SCFM_ERR_ARG, path,
                 "gene id 'g0' appears twice");
    CU_ASSERT_PTR_NULL(w);
    CU_ASSERT(!tmp_exists(path));

    const char *missing = TMP_DIR "/no/such/dir/x.h5ad";
    scfm_error e2 = {0};
    expect_error(scfm_h5ad_create(missing, 1, 4, GENES, &w, &e2), &e2, SCFM_ERR_IO, missing, "cannot create");
    CU_ASSERT_PTR_NULL(w);
}

int main(void) {
    CU_TestInfo tests[] = {
        {"finish renames a complete file", test_finish_renames},
        {"finish replaces an existing file", test_finish_replaces},
        {"200 categories take int16 codes", test_wide_codes},
        {"abort leaves no file", test_abort_removes},
        {"more cells than declared", test_too_many_cells},
        {"fewer cells than declared", test_too_few_cells},
        {"out-of-order and malformed chunks", test_bad_chunks},
        {"bad categorical and obsm columns", test_bad_columns},
        {"repeated gene ids, missing directory", test_create_errors},
        CU_TEST_INFO_NULL,
    };
    return scfm_test_run("h5ad_write", tests);
}
