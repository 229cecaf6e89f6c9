/* Tokenization without MPI: the rank and bin encoders against hand-computed
 * cells, the shard writer and reader round trip, the vocabulary file, and
 * the errors for shards made with another vocabulary. The whole pipeline
 * under mpirun, against numpy references, is tests/cli/tokenize.sh. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "scfm/data.h"

#define TMP_DIR SCFM_TEST_BINARY_DIR "/tokenize_tmp"

static const char *tmp_path(const char *name) { return scfm_test_tmp_path(TMP_DIR, name); }

/* ---- rank encoder ---- */

/* Medians of tokens 2..6 and one cell of total 40 whose values
 * count / 40 x 10^4 / median are 500 (tokens 4, 6) and 750 (2, 3, 5), equal
 * in floating point too (the counts differ by powers of two). */
static const double medians[] = {1.0, 2.0, 0.5, 1.0, 4.0};
static const int32_t cell_tokens[] = {6, 2, 4, 3, 5, 7};
static const float cell_counts[] = {8, 3, 1, 6, 3, 0};

static void test_rank_order_and_ties(void) {
    scfm_rank_params p = {medians, 2, 10000.0, 100, -1, -1};
    scfm_cell_entry scratch[12];
    int32_t out[8];
    int len = scfm_rank_encode(&p, cell_tokens, cell_counts, 6, 40.0, scratch, out);
    const int32_t expect[] = {2, 3, 5, 4, 6}; /* by value, ties by token id; the zero count left out */
    CU_ASSERT_EQUAL_FATAL(len, 5);
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(out[i], expect[i]);
}

static void test_rank_truncation_and_specials(void) {
    scfm_cell_entry scratch[12];
    int32_t out[8];
    scfm_rank_params cut = {medians, 2, 10000.0, 4, -1, -1};
    CU_ASSERT_EQUAL(scfm_rank_encode(&cut, cell_tokens, cell_counts, 6, 40.0, scratch, out), 4);
    CU_ASSERT_EQUAL(out[3], 4);
    /* <cls> and <eos> count against the length */
    scfm_rank_params special = {medians, 2, 10000.0, 5, 100, 101};
    CU_ASSERT_EQUAL_FATAL(scfm_rank_encode(&special, cell_tokens, cell_counts, 6, 40.0, scratch, out), 5);
    const int32_t expect[] = {100, 2, 3, 5, 101};
    for (int i = 0; i < 5; i++) CU_ASSERT_EQUAL(out[i], expect[i]);
    /* a cell without counts gives nothing, not a lone <cls> */
    const float zeros[] = {0, 0};
    CU_ASSERT_EQUAL(scfm_rank_encode(&special, cell_tokens, zeros, 2, 40.0, scratch, out), 0);
}

/* The rule written out plainly: qsort on (value descending, token). */
typedef struct {
    double value;
    int32_t token;
} ranked;

static int by_rank(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->value != y->value) return x->value > y->value ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* The encoder cuts keys to fit a word beside the entry's index and fixes the
 * runs that share a cut key; cells built to stress that: many exact ties
 * (a few count and median values), values one ulp apart, tokens in and out
 * of order, zero counts, and rows above 8,192 entries (four radix passes);
 * then cells like real ones (medians spread continuously, a few distinct
 * small counts and a tail of large ones: the values gather in narrow
 * ranges) cut to lengths from 1 to beyond the row. */
static void test_rank_matches_plain_sort(void) {
    enum { VOCAB = 20000 };
    double *med = malloc(sizeof(double) * VOCAB);
    int32_t *tokens = malloc(sizeof(int32_t) * VOCAB), *out = malloc(sizeof(int32_t) * VOCAB);
    float *counts = malloc(sizeof(float) * VOCAB);
    ranked *want = malloc(sizeof(ranked) * VOCAB);
    scfm_cell_entry *scratch = malloc(sizeof(scfm_cell_entry) * 2 * VOCAB);
    CU_ASSERT_FATAL(med && tokens && out && counts && want && scratch);
    uint64_t state = 12345;
    for (int round = 0; round < 60; round++) {
        /* a 64-bit LCG: the same cells on every platform */
#define DRAW() (state = state * 6364136223846793005ull + 1442695040888963407ull, (uint32_t)(state >> 33))
        const int kinds = 1 + round % 4;
        const int real = round >= 40;
        for (int g = 0; g < VOCAB; g++) {
            double base = kinds == 1 ? 1.0 : 0.25 * (1 + DRAW() % 8);
            med[g] = round % 5 == 4 ? nextafter(base, 2.0 * (DRAW() % 2)) : base * (kinds == 4 ? 1 + DRAW() % 1000 : 1);
            if (real) med[g] = 0.5 + (double)DRAW() / 4294967296.0 * (round % 3 ? 2.0 : 200.0);
        }
        const int n = round < 30 || real ? 1 + (int)(DRAW() % 3000) : 8193 + (int)(DRAW() % 10000);
        const int max_length = real ? 1 + (int)(DRAW() % (uint32_t)(n + 10)) : 2048;
        for (int k = 0; k < n; k++) tokens[k] = 2 + k;
        if (round % 2) /* shuffled: the index order is not the token order */
            for (int k = n - 1; k > 0; k--) {
                int j = (int)(DRAW() % (uint32_t)(k + 1));
                int32_t t = tokens[k];
                tokens[k] = tokens[j];
                tokens[j] = t;
            }
        double total = 0;
        for (int k = 0; k < n; k++) {
            counts[k] = DRAW() % 7 == 0 ? 0.0f : (float)(1 + DRAW() % (kinds == 1 ? 3 : 200));
            if (real) /* mostly 1-4, one in 16 up to 300 */
                counts[k] = (float)(DRAW() % 16 ? 1 + DRAW() % 4 : 1 + DRAW() % 300);
            total += counts[k];
        }
        if (total == 0) continue;
        scfm_rank_params p = {med, 2, 10000.0, max_length, -1, -1};
        int m = 0;
        for (int k = 0; k < n; k++)
            if (counts[k] > 0)
                want[m++] = (ranked){(double)counts[k] / total * p.target_sum / med[tokens[k] - 2], tokens[k]};
        qsort(want, (size_t)m, sizeof *want, by_rank);
        int len = scfm_rank_encode(&p, tokens, counts, n, total, scratch, out);
        CU_ASSERT_EQUAL_FATAL(len, m < max_length ? m : max_length);
        int same = 1;
        for (int k = 0; k < len; k++) same &= out[k] == want[k].token;
        CU_ASSERT(same);
#undef DRAW
    }
    free(med);
    free(tokens);
    free(out);
    free(counts);
    free(want);
    free(scratch);
}

/* ---- bin encoder ---- */

static int bin_cell(const scfm_bin_params *p, int64_t cell_id, const int32_t *tokens, const float *counts, int n,
                    int32_t *out_tokens, uint8_t *out_values) {
    scfm_cell_entry scratch[128];
    return scfm_bin_encode(p, cell_id, tokens, counts, n, 100.0, scratch, out_tokens, out_values);
}

/* Raw counts 1..5 with B = 6: the edges are the quantiles 0, .25, .5, .75, 1,
 * that is 1, 2, 3, 4, 5, so count c is bin c; a zero count is bin 0. Tokens
 * come out in token order. */
static void test_bin_distinct_values(void) {
    scfm_bin_params p = {6, 0, 10000.0, 100, -1, -1, 7};
    const int32_t tokens[] = {14, 12, 10, 11, 13, 15};
    const float counts[] = {4, 2, 0, 1, 3, 5};
    int32_t t[8];
    uint8_t v[8];
    CU_ASSERT_EQUAL_FATAL(bin_cell(&p, 0, tokens, counts, 6, t, v), 6);
    const int32_t expect_t[] = {10, 11, 12, 13, 14, 15};
    const uint8_t expect_v[] = {0, 1, 2, 3, 4, 5};
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(t[i], expect_t[i]);
        CU_ASSERT_EQUAL(v[i], expect_v[i]);
    }
}

/* Counts 1 and 2 with B = 4: edges 1, 1.5 (linear interpolation), 2, so 1 is
 * bin 1 and 2 is bin 3. */
static void test_bin_interpolated_edge(void) {
    scfm_bin_params p = {4, 0, 10000.0, 100, -1, -1, 7};
    const int32_t tokens[] = {20, 21};
    const float counts[] = {1, 2};
    int32_t t[4];
    uint8_t v[4];
    CU_ASSERT_EQUAL_FATAL(bin_cell(&p, 0, tokens, counts, 2, t, v), 2);
    CU_ASSERT_EQUAL(v[0], 1);
    CU_ASSERT_EQUAL(v[1], 3);
}

/* Counts 1, 1, 1, 1, 5 with B = 6: edges 1, 1, 1, 1, 5. A 1 equals four edges,
 * so scGPT draws its bin from 1..4; 5 is bin 5. The draws are a function of
 * (seed, cell id, token) only. */
static void test_bin_ties_are_drawn(void) {
    scfm_bin_params p = {6, 0, 10000.0, 100, -1, -1, 7};
    const int32_t tokens[] = {30, 31, 32, 33, 34};
    const float counts[] = {1, 1, 1, 1, 5};
    int32_t t[8], t2[8];
    uint8_t v[8], v2[8];
    int seen[6] = {0};
    for (int64_t cell = 0; cell < 200; cell++) {
        CU_ASSERT_EQUAL_FATAL(bin_cell(&p, cell, tokens, counts, 5, t, v), 5);
        for (int i = 0; i < 4; i++) {
            CU_ASSERT(v[i] >= 1 && v[i] <= 4);
            seen[v[i]]++;
        }
        CU_ASSERT_EQUAL(v[4], 5);
        CU_ASSERT_EQUAL(bin_cell(&p, cell, tokens, counts, 5, t2, v2), 5);
        CU_ASSERT_EQUAL(memcmp(v, v2, 5), 0);
    }
    for (int b = 1; b <= 4; b++) CU_ASSERT(seen[b] > 100); /* 800 draws, about 200 each */
}

/* More genes than max_length allows: a seeded subset, in token order, with
 * <cls> first and <eos> last at value 0. */
static void test_bin_sampling(void) {
    scfm_bin_params p = {51, 1, 10000.0, 10, 2, 3, 11};
    int32_t tokens[40];
    float counts[40];
    for (int i = 0; i < 40; i++) {
        tokens[i] = 100 + (i * 7) % 40;
        counts[i] = (float)(1 + i % 9);
    }
    int32_t t[16], t2[16];
    uint8_t v[16], v2[16];
    CU_ASSERT_EQUAL_FATAL(bin_cell(&p, 5, tokens, counts, 40, t, v), 10);
    CU_ASSERT_EQUAL(t[0], 2);
    CU_ASSERT_EQUAL(t[9], 3);
    CU_ASSERT_EQUAL(v[0], 0);
    CU_ASSERT_EQUAL(v[9], 0);
    for (int i = 1; i < 9; i++) {
        CU_ASSERT(t[i] >= 100 && t[i] < 140);
        CU_ASSERT(v[i] >= 1 && v[i] <= 50);
        if (i > 1) CU_ASSERT(t[i] > t[i - 1]);
    }
    CU_ASSERT_EQUAL(bin_cell(&p, 5, tokens, counts, 40, t2, v2), 10);
    CU_ASSERT_EQUAL(memcmp(t, t2, sizeof(int32_t) * 10), 0);
    CU_ASSERT_EQUAL(bin_cell(&p, 6, tokens, counts, 40, t2, v2), 10);
    CU_ASSERT_NOT_EQUAL(memcmp(t, t2, sizeof(int32_t) * 10), 0); /* another cell, another subset */
}

/* ---- vocabulary ---- */

static scfm_vocab *small_vocab(double first_median) {
    const char *ids[] = {"ENSG3", "ENSG1", "ENSG2"};
    const char *symbols[] = {"A", "B", "A"};
    const double med[] = {first_median, 2.5, 0.125};
    const int64_t nonzero[] = {10, 20, 30};
    scfm_vocab *v = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_vocab_create(1, 1, 3, ids, symbols, med, nonzero, 40, &v, &err), SCFM_OK);
    return v;
}

static void test_vocab_tokens_and_lookup(void) {
    scfm_vocab *v = small_vocab(1.5);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(scfm_vocab_size(v), 7);
    CU_ASSERT_EQUAL(v->cls, 2);
    CU_ASSERT_EQUAL(v->eos, 3);
    CU_ASSERT_STRING_EQUAL(v->gene_ids[0], "ENSG1"); /* sorted by id: ENSG1 is token 4 */
    CU_ASSERT_EQUAL(v->medians[2], 1.5);
    CU_ASSERT_EQUAL(scfm_vocab_find(v, "ENSG2", 0), 5);
    CU_ASSERT_EQUAL(scfm_vocab_find(v, "B", 1), 4);
    CU_ASSERT_EQUAL(scfm_vocab_find(v, "A", 1), -2); /* two genes share it */
    CU_ASSERT_EQUAL(scfm_vocab_find(v, "ENSG9", 0), -1);
    scfm_vocab_free(v);
}

static void test_vocab_file(void) {
    const char *dir = tmp_path("vocab");
    char file[600];
    snprintf(file, sizeof file, "%s/vocab.tsv", dir);
    scfm_vocab *v = small_vocab(1.0 / 3.0), *back = NULL;
    scfm_error err = {0};
    scfm_output_dir_discard(dir);
    remove(file);
    rmdir(dir);
    CU_ASSERT_EQUAL_FATAL(scfm_vocab_write(v, dir, 0, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_vocab_read(dir, &back, &err), SCFM_OK);
    CU_ASSERT_EQUAL(back->hash, v->hash);
    CU_ASSERT_EQUAL(back->n_genes, 3);
    CU_ASSERT_EQUAL(back->eos, 3);
    CU_ASSERT_EQUAL(back->n_cells, 40);
    for (int g = 0; g < 3; g++) {
        CU_ASSERT_STRING_EQUAL(back->gene_ids[g], v->gene_ids[g]);
        CU_ASSERT_STRING_EQUAL(back->symbols[g], v->symbols[g]);
        CU_ASSERT_EQUAL(back->medians[g], v->medians[g]); /* %.17g round-trips exactly */
        CU_ASSERT_EQUAL(back->n_nonzero[g], v->n_nonzero[g]);
    }
    scfm_vocab_free(back);
    /* an existing directory needs force */
    CU_ASSERT_EQUAL(scfm_vocab_write(v, dir, 0, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "--force"));
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_vocab_write(v, dir, 1, &err), SCFM_OK);
    /* an edited file no longer matches its hash */
    FILE *f = fopen(file, "r+");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    char *median = strstr(text, "0.33333");
    CU_ASSERT_PTR_NOT_NULL_FATAL(median);
    median[2] = '4';
    rewind(f);
    fwrite(text, 1, n, f);
    fclose(f);
    back = NULL;
    CU_ASSERT_EQUAL(scfm_vocab_read(dir, &back, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "hash"));
    CU_ASSERT_PTR_NULL(back);
    scfm_vocab_free(v);
}

/* ---- shards ---- */

/* Writes a one-shard set of three cells (tokens 5..7 and a large id) into
 * name, made with vocabulary v; bin mode adds values. */
static const char *write_set(const char *name, const scfm_vocab *v, int64_t vocab_size, int bin, int index,
                             int n_shards) {
    static char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s", tmp_path(name));
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, index);
    const char *source = "cells.h5ad", *column = "cell_type";
    const char *cats[] = {"B cell", "γδ T cell"};
    const char *const *categories = cats;
    const int n_cats = 2;
    const int64_t source_cells = 4;
    scfm_shard_meta meta = {bin ? "bin" : "rank", vocab_size, v->hash, 8, bin ? 51 : 0, "test", index, n_shards,
                            1, &source, &source_cells, 1, &column, &n_cats, &categories, 0, NULL, NULL};
    scfm_error err = {0};
    scfm_shard_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_shard_create(NULL, path, &meta, &w, &err), SCFM_OK);
    /* two appends: cells 0 and 2 of the input, then cell 3 */
    const int64_t off1[] = {0, 3, 4}, off2[] = {0, 2};
    const int32_t tok1[] = {5, 6, 7, 7}, tok2[] = {(int32_t)(vocab_size - 1), 5};
    const uint8_t val1[] = {1, 2, 3, 50}, val2[] = {9, 0};
    const int64_t ids1[] = {0, 2}, ids2[] = {3};
    const int32_t codes1[] = {1, -1}, codes2[] = {0};
    const int32_t *c1 = codes1, *c2 = codes2;
    scfm_shard_cells a = {2, off1, tok1, bin ? val1 : NULL, ids1, &c1, NULL, NULL};
    scfm_shard_cells b = {1, off2, tok2, bin ? val2 : NULL, ids2, &c2, NULL, NULL};
    CU_ASSERT_EQUAL_FATAL(scfm_shard_append(w, &a, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_shard_append(w, &b, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_shard_finish(w, 1, &err), SCFM_OK);
    return dir;
}

static void round_trip(const char *name, int64_t vocab_size, int bin) {
    scfm_vocab *v = small_vocab(1.5);
    const char *dir = write_set(name, v, vocab_size, bin, 0, 1);
    scfm_shards *s = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_shards_open(dir, &s, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_shards_num_cells(s), 3);
    CU_ASSERT_EQUAL(scfm_shards_num_tokens(s), 6);
    CU_ASSERT_EQUAL(scfm_shards_vocab_size(s), vocab_size);
    CU_ASSERT_EQUAL(scfm_shards_max_length(s), 3);
    CU_ASSERT_EQUAL(scfm_shards_vocab_hash(s), v->hash);
    CU_ASSERT_STRING_EQUAL(scfm_shards_mode(s), bin ? "bin" : "rank");
    const int32_t expect[][3] = {{5, 6, 7}, {7}, {(int32_t)(vocab_size - 1), 5}};
    const uint8_t expect_values[][3] = {{1, 2, 3}, {50}, {9, 0}};
    const int lengths[] = {3, 1, 2};
    const int64_t ids[] = {0, 2, 3};
    for (int c = 0; c < 3; c++) {
        const int32_t *tokens;
        const uint8_t *values;
        int length = 0;
        CU_ASSERT_EQUAL_FATAL(scfm_shards_cell(s, c, &tokens, &length, &err), SCFM_OK);
        CU_ASSERT_EQUAL_FATAL(length, lengths[c]);
        for (int i = 0; i < length; i++) CU_ASSERT_EQUAL(tokens[i], expect[c][i]);
        CU_ASSERT_EQUAL(scfm_shards_cell_id(s, c), ids[c]);
        if (bin) {
            CU_ASSERT_EQUAL_FATAL(scfm_shards_cell_values(s, c, &values, &length, &err), SCFM_OK);
            for (int i = 0; i < length; i++) CU_ASSERT_EQUAL(values[i], expect_values[c][i]);
        }
    }
    if (!bin) {
        const uint8_t *values;
        int length;
        CU_ASSERT_EQUAL(scfm_shards_cell_values(s, 0, &values, &length, &err), SCFM_ERR_ARG);
    }
    scfm_shards_close(s);
    scfm_vocab_free(v);
}

static void test_shard_round_trip_rank_uint16(void) { round_trip("set_u16", 300, 0); }
static void test_shard_round_trip_bin_uint32(void) { round_trip("set_u32", 70000, 1); }

/* Shards of one vocabulary against another: a clear error naming both
 * hashes, both from the training check and within one directory. */
static void test_vocab_mismatch(void) {
    scfm_vocab *a = small_vocab(1.5), *b = small_vocab(2.5);
    CU_ASSERT_NOT_EQUAL(a->hash, b->hash);
    const char *dir = write_set("set_a", a, scfm_vocab_size(a), 0, 0, 1);
    scfm_shards *s = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_shards_open(dir, &s, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_shards_expect_vocab(s, a, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_shards_expect_vocab(s, b, &err), SCFM_ERR_CONFIG);
    char hex[32];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)b->hash);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, hex));
    scfm_shards_close(s);
    /* a set whose two shards come from two vocabularies */
    write_set("set_mixed", a, scfm_vocab_size(a), 0, 0, 2);
    dir = write_set("set_mixed", b, scfm_vocab_size(b), 0, 1, 2);
    scfm_error_clear(&err);
    s = NULL;
    CU_ASSERT_EQUAL(scfm_shards_open(dir, &s, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "one vocabulary"));
    CU_ASSERT_PTR_NULL(s);
    scfm_vocab_free(a);
    scfm_vocab_free(b);
}

/* A set that misses a shard is refused. */
static void test_missing_shard(void) {
    scfm_vocab *a = small_vocab(1.5);
    const char *dir = write_set("set_gap", a, scfm_vocab_size(a), 0, 1, 2);
    scfm_shards *s = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_shards_open(dir, &s, &err), SCFM_ERR_FORMAT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "missing"));
    scfm_vocab_free(a);
}

/* ---- count representations ---- */

/* Cell 0: columns 0, 2, 3 with counts 5, 1, 5 of a library of 20; cell 1:
 * no count in the set, a library of 4. */
static void count_batch(scfm_batch *b) {
    scfm_error err = {0};
    const int32_t columns[] = {0, 2, 3};
    const float counts[] = {5, 1, 5};
    scfm_batch_init(b);
    CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(b, 7, columns, 3, &err), SCFM_OK);
    scfm_batch_set_counts(b, counts, 20);
    CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(b, 8, columns, 0, &err), SCFM_OK);
    scfm_batch_set_counts(b, counts, 4);
}

static void expect_rows(const scfm_batch *b, scfm_count_repr repr, int n_bins, const float want[2][4]) {
    float x[2][4];
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_counts_dense(b, 4, repr, n_bins, &x[0][0], &err), SCFM_OK);
    for (int c = 0; c < 2; c++)
        for (int g = 0; g < 4; g++) CU_ASSERT_DOUBLE_EQUAL(x[c][g], want[c][g], 1e-6 * (1 + fabsf(want[c][g])));
}

/* Each representation by hand: log1p of the depth-normalised counts, the
 * counts, ranks from 1 down to 1/n with ties by column, and bins (3 bins:
 * the edges are the smallest and largest value, the largest takes bin 2);
 * the empty cell is all zeros. */
static void test_counts_dense(void) {
    scfm_batch b;
    count_batch(&b);
    const float l5 = (float)log1p(2500.0), l1 = (float)log1p(500.0);
    expect_rows(&b, SCFM_COUNTS_RAW, 0, (const float[2][4]){{5, 0, 1, 5}, {0}});
    expect_rows(&b, SCFM_COUNTS_LOG1P, 0, (const float[2][4]){{l5, 0, l1, l5}, {0}});
    expect_rows(&b, SCFM_COUNTS_RANK, 0, (const float[2][4]){{1, 0, 1.0f / 3, 2.0f / 3}, {0}});
    expect_rows(&b, SCFM_COUNTS_BIN, 3, (const float[2][4]){{2, 0, 1, 2}, {0}});
    scfm_batch_free(&b);
}

/* A column outside the gene set, bins outside [2, 256], and a depth
 * normalisation without a library are refused. */
static void test_counts_dense_errors(void) {
    scfm_batch b;
    count_batch(&b);
    float x[2][4];
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_counts_dense(&b, 3, SCFM_COUNTS_RAW, 0, &x[0][0], &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "column 3 outside the 3 genes"));
    CU_ASSERT_EQUAL(scfm_counts_dense(&b, 4, SCFM_COUNTS_BIN, 1, &x[0][0], &err), SCFM_ERR_ARG);
    CU_ASSERT_EQUAL(scfm_counts_dense(&b, 4, SCFM_COUNTS_BIN, 257, &x[0][0], &err), SCFM_ERR_ARG);
    b.library[0] = 0;
    CU_ASSERT_EQUAL(scfm_counts_dense(&b, 4, SCFM_COUNTS_LOG1P, 0, &x[0][0], &err), SCFM_ERR_ARG);
    CU_ASSERT_EQUAL(scfm_counts_dense(&b, 4, SCFM_COUNTS_RAW, 0, &x[0][0], &err), SCFM_OK);
    scfm_batch_free(&b);
}

static CU_TestInfo tests[] = {
    {"rank: order by normalised value, ties by token id", test_rank_order_and_ties},
    {"rank: truncation and <cls>/<eos>", test_rank_truncation_and_specials},
    {"rank: random cells against a plain sort", test_rank_matches_plain_sort},
    {"bin: distinct values take their quantile bins", test_bin_distinct_values},
    {"bin: linear interpolation between values", test_bin_interpolated_edge},
    {"bin: values on several edges draw their bin", test_bin_ties_are_drawn},
    {"bin: seeded sampling to max_length", test_bin_sampling},
    {"vocab: tokens, sorting and lookups", test_vocab_tokens_and_lookup},
    {"vocab: file round trip, --force, hash check", test_vocab_file},
    {"shards: round trip, rank mode, uint16 tokens", test_shard_round_trip_rank_uint16},
    {"shards: round trip, bin mode, uint32 tokens", test_shard_round_trip_bin_uint32},
    {"shards: another vocabulary is a clear error", test_vocab_mismatch},
    {"shards: a missing shard is refused", test_missing_shard},
    {"counts: log1p, raw, rank and bin rows", test_counts_dense},
    {"counts: bad columns, bins and libraries", test_counts_dense_errors},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("tokenize", tests); }
