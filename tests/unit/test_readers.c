/* Count-matrix readers against tests/fixtures/counts (made by
 * tests/reference/make_count_fixtures.py): every layout must give exactly the
 * expected counts, gene ids and symbols, cell names and obs categoricals,
 * whatever the chunk size; every malformed file must give the expected status
 * and a message naming the file and the field. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "scfm/io.h"

#define COUNTS SCFM_TEST_SOURCE_DIR "/fixtures/counts/"

enum { N_CELLS = 40, N_GENES = 30, N_COLUMNS = 2, MAX_CATEGORIES = 8 };

static const char *const columns[N_COLUMNS] = {"cell_type", "batch"};

static struct {
    int loaded;
    int counts[N_CELLS][N_GENES];
    char gene_id[N_GENES][32], symbol[N_GENES][32], cell[N_CELLS][32];
    int n_categories[N_COLUMNS];
    char category[N_COLUMNS][MAX_CATEGORIES][32];
    int codes[N_COLUMNS][N_CELLS];
} want;

/* The next line of fp split at tabs into at most max fields; the count. */
static int read_fields(FILE *fp, char *line, size_t cap, char **fields, int max) {
    if (!fgets(line, (int)cap, fp)) return 0;
    line[strcspn(line, "\n")] = '\0';
    int n = 0;
    for (char *p = line; n < max;) {
        fields[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

static void copy_text(char *dst, const char *src) {
    CU_ASSERT_FATAL(strlen(src) < 32);
    strcpy(dst, src);
}

static FILE *open_expected(const char *name) {
    char path[512];
    snprintf(path, sizeof path, COUNTS "%s", name);
    FILE *fp = fopen(path, "r");
    if (!fp) fprintf(stderr, "\n  cannot open %s\n", path);
    CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
    return fp;
}

static void load_expected(void) {
    if (want.loaded) return;
    char line[1024], *f[N_GENES + 1];
    FILE *fp = open_expected("expected_counts.tsv");
    for (int c = 0; c < N_CELLS; c++) {
        CU_ASSERT_EQUAL_FATAL(read_fields(fp, line, sizeof line, f, N_GENES + 1), N_GENES);
        for (int g = 0; g < N_GENES; g++) want.counts[c][g] = atoi(f[g]);
    }
    fclose(fp);
    fp = open_expected("expected_genes.tsv");
    for (int g = 0; g < N_GENES; g++) {
        CU_ASSERT_EQUAL_FATAL(read_fields(fp, line, sizeof line, f, 2), 2);
        copy_text(want.gene_id[g], f[0]);
        copy_text(want.symbol[g], f[1]);
    }
    fclose(fp);
    fp = open_expected("expected_cells.tsv");
    for (int c = 0; c < N_CELLS; c++) {
        CU_ASSERT_EQUAL_FATAL(read_fields(fp, line, sizeof line, f, 1), 1);
        copy_text(want.cell[c], f[0]);
    }
    fclose(fp);
    fp = open_expected("expected_categories.tsv");
    while (read_fields(fp, line, sizeof line, f, 2) == 2) {
        int i = !strcmp(f[0], columns[0]) ? 0 : 1;
        CU_ASSERT_FATAL(want.n_categories[i] < MAX_CATEGORIES);
        copy_text(want.category[i][want.n_categories[i]++], f[1]);
    }
    fclose(fp);
    fp = open_expected("expected_codes.tsv");
    CU_ASSERT_EQUAL_FATAL(read_fields(fp, line, sizeof line, f, 2), 2);
    CU_ASSERT_STRING_EQUAL_FATAL(f[0], columns[0]);
    for (int c = 0; c < N_CELLS; c++) {
        CU_ASSERT_EQUAL_FATAL(read_fields(fp, line, sizeof line, f, 2), 2);
        for (int i = 0; i < N_COLUMNS; i++) want.codes[i][c] = atoi(f[i]);
    }
    fclose(fp);
    want.loaded = 1;
}

static scfm_matrix *open_fixture(const char *name, const scfm_matrix_options *opt) {
    char path[512];
    snprintf(path, sizeof path, COUNTS "%s", name);
    scfm_error err;
    scfm_error_clear(&err);
    scfm_matrix *m = NULL;
    scfm_status s = scfm_matrix_open(path, opt, &m, &err);
    if (s != SCFM_OK) fprintf(stderr, "\n  %s\n", err.message);
    CU_ASSERT_EQUAL_FATAL(s, SCFM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    return m;
}

/* Reads all cells in chunks of size and compares them with the expected
 * counts of the first n_genes genes. */
static void check_counts(scfm_matrix *m, int64_t size, int n_genes, scfm_cells_chunk *chunk) {
    int mismatches = 0;
    for (int64_t first = 0; first < N_CELLS; first += size) {
        int64_t n = N_CELLS - first < size ? N_CELLS - first : size;
        scfm_error err;
        scfm_error_clear(&err);
        scfm_status s = scfm_matrix_read(m, first, n, chunk, &err);
        if (s != SCFM_OK) fprintf(stderr, "\n  %s\n", err.message);
        CU_ASSERT_EQUAL_FATAL(s, SCFM_OK);
        CU_ASSERT_EQUAL(chunk->first, first);
        CU_ASSERT_EQUAL_FATAL(chunk->n_cells, n);
        CU_ASSERT_EQUAL(chunk->indptr[0], 0);
        for (int64_t i = 0; i < n; i++) {
            int row[N_GENES] = {0};
            for (int64_t k = chunk->indptr[i]; k < chunk->indptr[i + 1]; k++) {
                int g = chunk->genes[k];
                CU_ASSERT_FATAL(g >= 0 && g < n_genes);
                CU_ASSERT(k == chunk->indptr[i] || g > chunk->genes[k - 1]); /* sorted, no repeats */
                CU_ASSERT(chunk->values[k] != 0);                             /* explicit zeros dropped */
                row[g] = (int)chunk->values[k];
                if ((float)row[g] != chunk->values[k]) mismatches++;
            }
            for (int g = 0; g < n_genes; g++) mismatches += row[g] != want.counts[first + i][g];
        }
    }
    if (mismatches) fprintf(stderr, "\n  %d counts differ (chunks of %lld)\n", mismatches, (long long)size);
    CU_ASSERT_EQUAL(mismatches, 0);
}

static void check_obs(scfm_matrix *m) {
    CU_ASSERT_EQUAL_FATAL(scfm_matrix_num_obs_columns(m), N_COLUMNS);
    /* n_counts is numeric, not categorical, so it is not listed. */
    int seen[N_COLUMNS] = {0};
    for (int i = 0; i < N_COLUMNS; i++)
        for (int j = 0; j < N_COLUMNS; j++) seen[j] += !strcmp(scfm_matrix_obs_column(m, i), columns[j]);
    CU_ASSERT(seen[0] == 1 && seen[1] == 1);
    for (int i = 0; i < N_COLUMNS; i++) {
        scfm_error err;
        scfm_error_clear(&err);
        int n = 0;
        const char *const *cats = NULL;
        CU_ASSERT_EQUAL_FATAL(scfm_matrix_obs_categories(m, columns[i], &n, &cats, &err), SCFM_OK);
        CU_ASSERT_EQUAL_FATAL(n, want.n_categories[i]);
        for (int k = 0; k < n; k++) CU_ASSERT_STRING_EQUAL(cats[k], want.category[i][k]);
        int32_t codes[N_CELLS];
        for (int first = 0; first < N_CELLS; first += 7) {
            int count = N_CELLS - first < 7 ? N_CELLS - first : 7;
            CU_ASSERT_EQUAL_FATAL(scfm_matrix_obs_codes(m, columns[i], first, count, codes + first, &err), SCFM_OK);
        }
        for (int c = 0; c < N_CELLS; c++) CU_ASSERT_EQUAL(codes[c], want.codes[i][c]);
    }
}

enum { WITH_OBS = 1, WITH_CELL_NAMES = 2 };

/* Opens a fixture and checks everything it holds against the expected data
 * (n_genes: the first genes only). */
static void check_fixture(const char *name, const scfm_matrix_options *opt, scfm_matrix_format format, int n_genes,
                          int flags) {
    load_expected();
    scfm_matrix *m = open_fixture(name, opt);
    CU_ASSERT_EQUAL(scfm_matrix_get_format(m), format);
    CU_ASSERT(strstr(scfm_matrix_path(m), name) != NULL);
    CU_ASSERT_EQUAL_FATAL(scfm_matrix_num_cells(m), N_CELLS);
    CU_ASSERT_EQUAL_FATAL(scfm_matrix_num_genes(m), n_genes);
    for (int g = 0; g < n_genes; g++) {
        CU_ASSERT_STRING_EQUAL(scfm_matrix_gene_id(m, g), want.gene_id[g]);
        CU_ASSERT_STRING_EQUAL(scfm_matrix_gene_symbol(m, g), want.symbol[g]);
    }
    CU_ASSERT_PTR_NULL(scfm_matrix_gene_id(m, n_genes));
    CU_ASSERT_PTR_NULL(scfm_matrix_gene_symbol(m, -1));
    for (int c = 0; c < N_CELLS; c++) {
        const char *cell = scfm_matrix_cell_name(m, c);
        CU_ASSERT(flags & WITH_CELL_NAMES ? cell && !strcmp(cell, want.cell[c]) : cell == NULL);
    }
    if (flags & WITH_OBS) check_obs(m);
    else {
        CU_ASSERT_EQUAL(scfm_matrix_num_obs_columns(m), 0);
    }
    scfm_cells_chunk chunk = {0}; /* reused across the chunk sizes */
    const int64_t sizes[] = {1, 7, N_CELLS};
    for (int i = 0; i < 3; i++) check_counts(m, sizes[i], n_genes, &chunk);
    scfm_cells_chunk_free(&chunk);
    CU_ASSERT_PTR_NULL(chunk.indptr);
    scfm_matrix_close(m);
}

static const scfm_matrix_options counts_only = {SCFM_MATRIX_AUTO, 0, 1, 0};

static void check_h5ad(const char *name) {
    check_fixture(name, &counts_only, SCFM_MATRIX_H5AD, N_GENES, WITH_OBS | WITH_CELL_NAMES);
}

static void test_h5ad_csr(void) {
    check_h5ad("csr_int32.h5ad");
    check_h5ad("csr_int64.h5ad"); /* symbols as the var index, ids in var/gene_ids */
    check_h5ad("csr_float32.h5ad");
}

static void test_h5ad_csc(void) {
    check_h5ad("csc_int32.h5ad");
    check_h5ad("csc_int64.h5ad");
    check_h5ad("csc_float32.h5ad");
}

static void test_h5ad_dense(void) {
    check_h5ad("dense_int32.h5ad");
    check_h5ad("dense_int64.h5ad");
    check_h5ad("dense_float32.h5ad");
    check_h5ad("dense_float64.h5ad");
}

static void test_h5ad_legacy_categoricals(void) { check_h5ad("legacy.h5ad"); }

/* anndata's compression="gzip" and "lzf" on every array (lzf: h5py's own
 * filter, decoded by scfm) */
static void test_h5ad_compressed(void) {
    check_h5ad("csr_gzip.h5ad");
    check_h5ad("csr_lzf.h5ad");
    check_h5ad("dense_gzip.h5ad");
    check_h5ad("dense_lzf.h5ad");
}

static void test_h5ad_explicit_format(void) {
    const scfm_matrix_options opt = {SCFM_MATRIX_H5AD, 0, 0, 0};
    check_fixture("csr_int32.h5ad", &opt, SCFM_MATRIX_H5AD, N_GENES, WITH_OBS | WITH_CELL_NAMES);
    check_fixture("csr_int32.h5ad", NULL, SCFM_MATRIX_H5AD, N_GENES, WITH_OBS | WITH_CELL_NAMES);
}

static void test_h5ad_raw(void) {
    /* raw/X holds the counts of all 30 genes and raw/var their names. */
    const scfm_matrix_options raw = {SCFM_MATRIX_AUTO, 1, 1, 0};
    check_fixture("normalised_raw.h5ad", &raw, SCFM_MATRIX_H5AD, N_GENES, WITH_OBS | WITH_CELL_NAMES);
    /* X: log1p-normalised values over the first 20 genes. */
    scfm_matrix *m = open_fixture("normalised_raw.h5ad", NULL);
    CU_ASSERT_EQUAL(scfm_matrix_num_genes(m), 20);
    CU_ASSERT_STRING_EQUAL(scfm_matrix_gene_id(m, 19), want.gene_id[19]);
    scfm_cells_chunk chunk = {0};
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, 0, N_CELLS, &chunk, &err), SCFM_OK);
    int fractional = 0;
    for (int64_t k = 0; k < chunk.indptr[N_CELLS]; k++) fractional += chunk.values[k] != (float)(int)chunk.values[k];
    CU_ASSERT(fractional > 0);
    scfm_cells_chunk_free(&chunk);
    scfm_matrix_close(m);
}

static void test_tenx_h5(void) {
    check_fixture("tenx_v3.h5", &counts_only, SCFM_MATRIX_10X_H5, N_GENES, WITH_CELL_NAMES);
    check_fixture("tenx_v2.h5", &counts_only, SCFM_MATRIX_10X_H5, N_GENES, WITH_CELL_NAMES);
}

/* Cell names left unread (what vocab and tokenize ask for): counts and obs
 * as before, names NULL. */
static void test_skip_cell_names(void) {
    static const scfm_matrix_options skip = {SCFM_MATRIX_AUTO, 0, 1, 1};
    check_fixture("csr_int32.h5ad", &skip, SCFM_MATRIX_H5AD, N_GENES, WITH_OBS);
    check_fixture("tenx_v3.h5", &skip, SCFM_MATRIX_10X_H5, N_GENES, 0);
}

static void test_mtx(void) {
    /* A 10x directory (gzip, sorted by cell), the same through its matrix
     * file, and Cell Ranger 2 names with the entries in random order. */
    check_fixture("mtx_v3", &counts_only, SCFM_MATRIX_MTX, N_GENES, WITH_CELL_NAMES);
    check_fixture("mtx_v3/matrix.mtx.gz", &counts_only, SCFM_MATRIX_MTX, N_GENES, WITH_CELL_NAMES);
    check_fixture("mtx_v2/matrix.mtx", &counts_only, SCFM_MATRIX_MTX, N_GENES, WITH_CELL_NAMES);
    const scfm_matrix_options mtx = {SCFM_MATRIX_MTX, 0, 1, 0};
    check_fixture("mtx_v2", &mtx, SCFM_MATRIX_MTX, N_GENES, WITH_CELL_NAMES);
}

/* err must hold status and a message naming the fixture and containing
 * field and detail. */
static void expect_message(const scfm_error *err, scfm_status status, const char *name, const char *field,
                           const char *detail) {
    CU_ASSERT_EQUAL(err->status, status);
    int ok = strstr(err->message, name) && strstr(err->message, field) && strstr(err->message, detail);
    if (!ok) fprintf(stderr, "\n  message \"%s\" lacks \"%s\", \"%s\" or \"%s\"\n", err->message, name, field, detail);
    CU_ASSERT(ok);
}

static void expect_open_error(const char *name, const scfm_matrix_options *opt, scfm_status status,
                              const char *field, const char *detail) {
    char path[512];
    snprintf(path, sizeof path, COUNTS "%s", name);
    scfm_error err;
    scfm_error_clear(&err);
    scfm_matrix *m = (scfm_matrix *)1; /* must be reset to NULL */
    CU_ASSERT_EQUAL(scfm_matrix_open(path, opt, &m, &err), status);
    CU_ASSERT_PTR_NULL(m);
    expect_message(&err, status, name, field, detail);
}

/* The file opens but reading all of it fails; the chunk is left empty. */
static void expect_read_error(const char *name, const scfm_matrix_options *opt, const char *field,
                              const char *detail) {
    scfm_matrix *m = open_fixture(name, opt);
    scfm_cells_chunk chunk = {0};
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, 0, N_CELLS, &chunk, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_EQUAL(chunk.n_cells, 0);
    expect_message(&err, SCFM_ERR_FORMAT, name, field, detail);
    scfm_cells_chunk_free(&chunk);
    scfm_matrix_close(m);
}

/* The file reads without error (the fault needs require_counts). */
static void expect_read_ok(const char *name) {
    scfm_matrix *m = open_fixture(name, NULL);
    scfm_cells_chunk chunk = {0};
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, 0, N_CELLS, &chunk, &err), SCFM_OK);
    scfm_cells_chunk_free(&chunk);
    scfm_matrix_close(m);
}

static void test_bad_h5ad(void) {
    load_expected();
    expect_open_error("missing.h5ad", NULL, SCFM_ERR_IO, "missing.h5ad", "No such file");
    expect_open_error("bad_truncated.h5ad", NULL, SCFM_ERR_FORMAT, "HDF5", "truncated");
    expect_open_error("bad_no_x.h5ad", NULL, SCFM_ERR_FORMAT, "X", "no X");
    expect_open_error("csr_int32.h5ad", &(scfm_matrix_options){SCFM_MATRIX_AUTO, 1, 0, 0}, SCFM_ERR_FORMAT, "raw/X",
                      "no raw/X");
    expect_open_error("bad_shape.h5ad", NULL, SCFM_ERR_FORMAT, "var/_index", "30 entries for the 31 genes of X");
    expect_open_error("bad_dup_gene_ids.h5ad", NULL, SCFM_ERR_FORMAT, "var/_index", want.gene_id[5]);
    expect_open_error("bad_dup_gene_ids.h5ad", NULL, SCFM_ERR_FORMAT, "appears twice", "genes 5 and 12");
    expect_open_error("bad_compound_obs.h5ad", NULL, SCFM_ERR_FORMAT, "obs", "unsupported legacy layout");
    expect_read_error("bad_indptr.h5ad", NULL, "X/indptr", "decreases at row 17");
    expect_read_error("bad_index.h5ad", NULL, "X/indices", "[42] = 30 outside [0, 30)");
    expect_read_error("bad_nan.h5ad", NULL, "X/data[21]", "not finite");
    expect_read_error("bad_negative.h5ad", &counts_only, "X/data[20] = -3", "negative");
    expect_read_error("bad_fraction.h5ad", &counts_only, "X/data[22] = 2.5", "not an integer");
    expect_read_error("normalised_raw.h5ad", &counts_only, "X/data", "not an integer");
    expect_read_error("bad_csc_index.h5ad", NULL, "X/indices", "[3] = 40 outside [0, 40)");
    /* zstd (hdf5plugin): HDF5 has no decoder; the filter is named */
    expect_open_error("bad_zstd.h5ad", NULL, SCFM_ERR_FORMAT, "HDF5 filter 32015", "cannot decode");
    /* an lzf chunk that refers before the start of its output */
    expect_read_error("bad_lzf.h5ad", NULL, "X/data", "corrupt");
    expect_read_ok("bad_negative.h5ad");
    expect_read_ok("bad_fraction.h5ad");
}

static void test_bad_tenx(void) {
    expect_open_error("bad_tenx_genomes.h5", NULL, SCFM_ERR_FORMAT, "GRCh38", "mm10");
    expect_read_error("bad_tenx_index.h5", NULL, "matrix/indices", "[7] = 30000 outside [0, 30)");
}

static void test_bad_mtx(void) {
    load_expected();
    expect_open_error("bad_mtx/bad_header.mtx", NULL, SCFM_ERR_FORMAT, "line 1", "header");
    expect_open_error("bad_mtx/bad_size.mtx", NULL, SCFM_ERR_FORMAT, "genes.tsv", "31 x 40");
    expect_open_error("bad_mtx/bad_entry.mtx", NULL, SCFM_ERR_FORMAT, "line 4", "outside the 30 x 40 matrix");
    expect_open_error("bad_mtx/short.mtx", NULL, SCFM_ERR_FORMAT, "entries", "the size line declares");
    expect_open_error("bad_mtx/negative.mtx", &counts_only, SCFM_ERR_FORMAT, "line 4", "-2 is negative");
    expect_open_error("bad_mtx_dup_genes", NULL, SCFM_ERR_FORMAT, "genes.tsv", want.gene_id[5]);
    expect_read_ok("bad_mtx/negative.mtx");
}

static void test_bad_arguments(void) {
    scfm_matrix *m = open_fixture("tenx_v3.h5", NULL);
    scfm_cells_chunk chunk = {0};
    scfm_error err;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, -1, 2, &chunk, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, 35, 6, &chunk, &err), SCFM_ERR_ARG);
    expect_message(&err, SCFM_ERR_ARG, "tenx_v3.h5", "[35, 41)", "40 cells");
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_read(m, 40, 0, &chunk, &err), SCFM_OK); /* empty, at the end */
    CU_ASSERT_EQUAL(chunk.n_cells, 0);
    int n;
    const char *const *cats;
    int32_t codes[1];
    CU_ASSERT_EQUAL(scfm_matrix_obs_categories(m, "cell_type", &n, &cats, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_obs_codes(m, "cell_type", 0, 1, codes, &err), SCFM_ERR_ARG);
    scfm_matrix_close(m);
    scfm_cells_chunk_free(&chunk);

    m = open_fixture("csr_int32.h5ad", NULL);
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_obs_codes(m, "batch", 39, 2, codes, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_matrix_obs_categories(m, "n_counts", &n, &cats, &err), SCFM_ERR_ARG);
    expect_message(&err, SCFM_ERR_ARG, "csr_int32.h5ad", "n_counts", "no categorical obs column");
    scfm_matrix_close(m);

    /* Codes are checked as they are read. */
    m = open_fixture("bad_obs_code.h5ad", NULL);
    scfm_error_clear(&err);
    int32_t all[N_CELLS];
    CU_ASSERT_EQUAL(scfm_matrix_obs_codes(m, "cell_type", 0, N_CELLS, all, &err), SCFM_ERR_FORMAT);
    expect_message(&err, SCFM_ERR_FORMAT, "bad_obs_code.h5ad", "obs/cell_type/codes[3]", "= 9 outside [-1, 4)");
    scfm_matrix_close(m);
    scfm_matrix_close(NULL);
    scfm_cells_chunk_free(NULL);
}

int main(void) {
    CU_TestInfo tests[] = {
        {"h5ad CSR int32/int64/float32", test_h5ad_csr},
        {"h5ad CSC int32/int64/float32", test_h5ad_csc},
        {"h5ad dense int32/int64/float32/float64", test_h5ad_dense},
        {"h5ad legacy categoricals (anndata < 0.8)", test_h5ad_legacy_categoricals},
        {"h5ad compressed with gzip and lzf", test_h5ad_compressed},
        {"h5ad explicit format and default options", test_h5ad_explicit_format},
        {"h5ad raw/X with normalised X", test_h5ad_raw},
        {"10x h5 v3 and v2", test_tenx_h5},
        {"cell names left unread on request", test_skip_cell_names},
        {"Matrix Market directories and files", test_mtx},
        {"malformed h5ad", test_bad_h5ad},
        {"malformed 10x h5", test_bad_tenx},
        {"malformed Matrix Market", test_bad_mtx},
        {"bad arguments", test_bad_arguments},
        CU_TEST_INFO_NULL,
    };
    return scfm_test_run("readers", tests);
}
