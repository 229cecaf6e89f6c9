/* The data loader: the per-epoch order is a bijection keyed by seed and
 * epoch, every number of ranks reads the same sequence, packing keeps the
 * token budget and masks by epoch, a saved position resumes exactly, errors
 * of the producer thread reach the caller, and memory does not grow with the
 * number of cells. Count shards: micro-batches of a fixed number of cells
 * carry every cell's counts and library unmasked, with the same guarantees. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"
#include "scfm/data.h"

#define N_CELLS 101    /* odd, so that 2 and 3 ranks get uneven shares */
#define MAX_LEN 8      /* the cells have 4..12 tokens: some are truncated */
#define BUDGET 30
#define SEED 7
#define MAX_BATCHES 2000

/* N_CELLS synthetic cells (or n_cells) in SCFM_TEST_BINARY_DIR/name. */
static const char *make_shards(const char *name, int64_t n_cells) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", SCFM_TEST_BINARY_DIR, name);
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_synthetic_tokens(dir, n_cells, 40, 3, 4, 12, 5, &err), SCFM_OK);
    return dir;
}

/* Count shards (mode "counts") of N_CELLS cells over COUNT_GENES columns in
 * two files, made with the writer: cell c has a count at column g when
 * (3c + 7g) % 5 < 2, of 1 + (c + g) % 9, and a library 1 + c % 4 above
 * their sum; every 17th cell has no count in the set. */
#define COUNT_GENES 20
#define COUNT_MICRO 8

static int count_at(int64_t c, int g) {
    return c % 17 != 0 && (3 * c + 7 * g) % 5 < 2 ? 1 + (int)((c + g) % 9) : 0;
}

static float count_library(int64_t c) {
    float sum = (float)(1 + c % 4);
    for (int g = 0; g < COUNT_GENES; g++) sum += (float)count_at(c, g);
    return sum;
}

static const char *make_count_shards(const char *name) {
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", SCFM_TEST_BINARY_DIR, name);
    mkdir(dir, 0755);
    int32_t genes[COUNT_GENES];
    const char *gene_ids[COUNT_GENES];
    char id_text[COUNT_GENES][16];
    for (int g = 0; g < COUNT_GENES; g++) {
        genes[g] = 3 + 2 * g;
        snprintf(id_text[g], sizeof id_text[g], "GENE%02d", g);
        gene_ids[g] = id_text[g];
    }
    const char *source = "counts.h5ad";
    const int64_t source_cells = N_CELLS;
    scfm_error err = {0};
    const int64_t half = N_CELLS / 2;
    for (int s = 0; s < 2; s++) {
        const int64_t lo = s ? half : 0, hi = s ? N_CELLS : half;
        int64_t offsets[N_CELLS + 1], ids[N_CELLS];
        int32_t tokens[N_CELLS * COUNT_GENES];
        float counts[N_CELLS * COUNT_GENES], library[N_CELLS];
        offsets[0] = 0;
        for (int64_t c = lo; c < hi; c++) {
            int64_t k = c - lo, n = offsets[k];
            for (int g = 0; g < COUNT_GENES; g++)
                if (count_at(c, g)) {
                    tokens[n] = g;
                    counts[n++] = (float)count_at(c, g);
                }
            offsets[k + 1] = n;
            ids[k] = c;
            library[k] = count_library(c);
        }
        scfm_shard_meta meta = {.mode = "counts", .vocab_size = 3 + 2 * COUNT_GENES, .vocab_hash = 42,
                                .max_length = COUNT_GENES, .normalisation = "test", .shard_index = s, .n_shards = 2,
                                .n_sources = 1, .sources = &source, .source_cells = &source_cells,
                                .n_genes = COUNT_GENES, .genes = genes, .gene_ids = gene_ids};
        scfm_shard_cells cells = {.n_cells = hi - lo, .offsets = offsets, .tokens = tokens, .cell_ids = ids,
                                  .counts = counts, .library = library};
        char path[1100];
        snprintf(path, sizeof path, "%s/shard_%05d.h5", dir, s);
        scfm_shard_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(scfm_shard_create(NULL, path, &meta, &w, &err), SCFM_OK);
        CU_ASSERT_EQUAL_FATAL(scfm_shard_append(w, &cells, &err), SCFM_OK);
        CU_ASSERT_EQUAL_FATAL(scfm_shard_finish(w, 0, &err), SCFM_OK);
    }
    return dir;
}

static scfm_loader_config loader_config(int rank, int world, int64_t budget, int prefetch) {
    scfm_loader_config c = {0};
    c.seed = SEED;
    c.rank = rank;
    c.world = world;
    c.max_len = MAX_LEN;
    c.micro_batch_tokens = budget;
    c.prefetch = prefetch;
    c.mask = (scfm_mask_config){0.3, 0.8, 0.1, SCFM_TOKEN_MASK + 1, 0};
    return c;
}

/* What one scfm_loader_next gave, kept without copying: every call gets a
 * fresh batch to swap with. */
typedef struct {
    scfm_batch batch;
    uint32_t epoch;
    scfm_loader_position after;
} taken;

/* Takes micro-batches until one of epoch `until_epoch` or `max` of them;
 * returns how many were kept (the one of until_epoch is not). */
static int take(scfm_loader *l, taken *out, int max, uint32_t until_epoch) {
    scfm_error err = {0};
    for (int i = 0; i < max; i++) {
        scfm_batch_init(&out[i].batch);
        CU_ASSERT_EQUAL_FATAL(scfm_loader_next(l, &out[i].batch, &out[i].epoch, &err), SCFM_OK);
        out[i].after = scfm_loader_get_position(l);
        if (out[i].epoch >= until_epoch) {
            scfm_batch_free(&out[i].batch);
            return i;
        }
    }
    return max;
}

static void release(taken *t, int n) {
    for (int i = 0; i < n; i++) scfm_batch_free(&t[i].batch);
}

static int same_batch(const taken *a, const taken *b) {
    const scfm_batch *x = &a->batch, *y = &b->batch;
    if (a->epoch != b->epoch || a->after.epoch != b->after.epoch || a->after.offset != b->after.offset)
        return 0;
    if (x->n_cells != y->n_cells || x->n_tokens != y->n_tokens || x->n_targets != y->n_targets) return 0;
    if (x->n_cells == 0) return 1;
    return !memcmp(x->cell_ids, y->cell_ids, sizeof(int64_t) * x->n_cells) &&
           !memcmp(x->library, y->library, sizeof(float) * x->n_cells) &&
           !memcmp(x->counts, y->counts, sizeof(float) * x->n_tokens) &&
           !memcmp(x->cell_offsets, y->cell_offsets, sizeof(int32_t) * (x->n_cells + 1)) &&
           !memcmp(x->tokens, y->tokens, sizeof(int32_t) * x->n_tokens) &&
           !memcmp(x->target_index, y->target_index, sizeof(int32_t) * x->n_targets) &&
           !memcmp(x->target_label, y->target_label, sizeof(int32_t) * x->n_targets);
}

static void check_bijection(uint64_t seed, uint32_t epoch, int64_t n) {
    unsigned char *seen = calloc((size_t)n, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
    int64_t bad = 0;
    for (int64_t p = 0; p < n; p++) {
        int64_t i = scfm_shuffle_index(seed, epoch, n, p);
        if (i < 0 || i >= n || seen[i]++) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    free(seen);
}

static int compare_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void test_shuffle_is_bijection(void) {
    static const int64_t sizes[] = {1, 2, 3, 4, 5, 17, 1000, 1023, 1025};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++)
        for (uint32_t epoch = 0; epoch < 3; epoch++) check_bijection(11, epoch, sizes[k]);
    check_bijection(42, 0, 1000000);
    /* too many cells to enumerate: distinct and in range on a sample */
    const int64_t n = 3000000000017LL;
    enum { SAMPLE = 4000 };
    int64_t *v = malloc(sizeof(int64_t) * SAMPLE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    int out_of_range = 0;
    for (int k = 0; k < SAMPLE; k++) {
        int64_t p = k < SAMPLE / 2 ? k : n - 1 - (k - SAMPLE / 2) * 7919;
        v[k] = scfm_shuffle_index(3, 5, n, p);
        out_of_range += v[k] < 0 || v[k] >= n;
    }
    qsort(v, SAMPLE, sizeof *v, compare_i64);
    int repeats = 0;
    for (int k = 1; k < SAMPLE; k++) repeats += v[k] == v[k - 1];
    CU_ASSERT_EQUAL(out_of_range, 0);
    CU_ASSERT_EQUAL(repeats, 0);
    free(v);
}

/* Positions where two orders of 1000 cells agree: about 1 for independent
 * permutations. */
static int agreements(uint64_t s1, uint32_t e1, uint64_t s2, uint32_t e2) {
    int same = 0;
    for (int64_t p = 0; p < 1000; p++)
        same += scfm_shuffle_index(s1, e1, 1000, p) == scfm_shuffle_index(s2, e2, 1000, p);
    return same;
}

static void test_shuffle_keys(void) {
    CU_ASSERT_EQUAL(agreements(1, 0, 1, 0), 1000);
    CU_ASSERT(agreements(1, 0, 1, 1) < 20);
    CU_ASSERT(agreements(1, 0, 2, 0) < 20);
    CU_ASSERT(agreements(1, 1, 2, 1) < 20);
    int fixed = 0;
    for (int64_t p = 0; p < 1000; p++) fixed += scfm_shuffle_index(1, 0, 1000, p) == p;
    CU_ASSERT(fixed < 20);
}

/* For 1, 2 and 3 ranks, the cells each rank reads in epochs 0 and 1, put
 * back at their sequence positions r + kW, give the epoch's order; the
 * position after every batch is where the rank's next cell sits. */
static void check_one_sequence(const char *dir, int micro_batch_cells) {
    taken *t = calloc(MAX_BATCHES, sizeof(taken));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    for (int world = 1; world <= 3; world++) {
        int64_t seq[2][N_CELLS];
        for (int e = 0; e < 2; e++)
            for (int p = 0; p < N_CELLS; p++) seq[e][p] = -1;
        for (int rank = 0; rank < world; rank++) {
            scfm_loader_config c = loader_config(rank, world, BUDGET, 0);
            c.micro_batch_cells = micro_batch_cells;
            scfm_loader *l = NULL;
            scfm_error err = {0};
            CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, NULL, &l, &err), SCFM_OK);
            CU_ASSERT_EQUAL(scfm_loader_num_cells(l), N_CELLS);
            scfm_loader_position before = scfm_loader_get_position(l);
            CU_ASSERT(before.epoch == 0 && before.offset == rank);
            int n = take(l, t, MAX_BATCHES, 2);
            scfm_loader_close(l);
            int64_t next[2] = {rank, rank};
            for (int i = 0; i < n; i++) {
                uint32_t e = t[i].epoch;
                for (int k = 0; k < t[i].batch.n_cells; k++) {
                    CU_ASSERT_FATAL(next[e] < N_CELLS);
                    seq[e][next[e]] = t[i].batch.cell_ids[k];
                    next[e] += world;
                }
                int ends_epoch = next[e] >= N_CELLS;
                CU_ASSERT_EQUAL(t[i].after.epoch, e + (uint32_t)ends_epoch);
                CU_ASSERT_EQUAL(t[i].after.offset, ends_epoch ? rank : next[e]);
            }
            release(t, n);
        }
        int wrong = 0;
        for (uint32_t e = 0; e < 2; e++)
            for (int64_t p = 0; p < N_CELLS; p++) wrong += seq[e][p] != scfm_shuffle_index(SEED, e, N_CELLS, p);
        CU_ASSERT_EQUAL(wrong, 0);
    }
    free(t);
}

static void test_ranks_read_one_sequence(void) { check_one_sequence(make_shards("loader_ranks", N_CELLS), 0); }

/* Count shards, cells without a count in the gene set included. */
static void test_ranks_read_one_sequence_counts(void) {
    check_one_sequence(make_count_shards("loader_ranks_counts"), COUNT_MICRO);
}

/* Every batch is within the budget, unless it holds one cell; it was closed
 * because the next cell did not fit or the epoch ended; and it holds the
 * cells truncated to max_len, masked with the seed and its epoch. */
static void check_packing(int64_t budget) {
    const char *dir = make_shards("loader_packing", N_CELLS);
    taken *t = calloc(MAX_BATCHES, sizeof(taken));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    scfm_loader_config c = loader_config(0, 1, budget, 3);
    scfm_loader *l = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, NULL, &l, &err), SCFM_OK);
    int n = take(l, t, MAX_BATCHES, 2);
    scfm_loader_close(l);
    CU_ASSERT(n > 2);
    /* the loader is closed: this thread may read the shards now */
    scfm_shards *shards = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_shards_open(dir, &shards, &err), SCFM_OK);
    scfm_mask_config mask = c.mask;
    mask.vocab_size = scfm_shards_vocab_size(shards);
    int truncated = 0, cells = 0;
    for (int i = 0; i < n; i++) {
        const scfm_batch *b = &t[i].batch;
        CU_ASSERT(b->n_cells >= 1);
        CU_ASSERT(b->n_tokens <= budget || b->n_cells == 1);
        if (i + 1 < n && t[i + 1].epoch == t[i].epoch) {
            const scfm_batch *nb = &t[i + 1].batch;
            CU_ASSERT(b->n_tokens + nb->cell_offsets[1] > budget);
        }
        scfm_batch expect;
        scfm_batch_init(&expect);
        for (int k = 0; k < b->n_cells; k++) {
            const int32_t *tokens;
            int length;
            CU_ASSERT_EQUAL_FATAL(scfm_shards_cell(shards, b->cell_ids[k], &tokens, &length, &err), SCFM_OK);
            truncated += length > MAX_LEN;
            if (length > MAX_LEN) length = MAX_LEN;
            CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(&expect, b->cell_ids[k], tokens, length, &err), SCFM_OK);
        }
        cells += b->n_cells;
        scfm_batch_mask(&expect, &mask, SEED, t[i].epoch);
        taken e = {expect, t[i].epoch, t[i].after};
        CU_ASSERT(same_batch(&t[i], &e));
        scfm_batch_free(&expect);
    }
    CU_ASSERT_EQUAL(cells, 2 * N_CELLS);
    CU_ASSERT(truncated > 0);
    scfm_shards_close(shards);
    release(t, n);
    free(t);
}

static void test_packing(void) { check_packing(BUDGET); }

/* A budget below max_len: cells that do not fit come alone. */
static void test_packing_small_budget(void) { check_packing(5); }

/* A loader opened at the position saved after batch k gives batches
 * k+1, k+2, ... of the uninterrupted loader, with any prefetch depth. */
static void check_restore(const char *dir, int micro_batch_cells) {
    enum { RUN = 60 };
    taken full[RUN], resumed[RUN];
    scfm_loader_config c = loader_config(1, 2, BUDGET, 0);
    c.micro_batch_cells = micro_batch_cells;
    scfm_loader *l = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, NULL, &l, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(take(l, full, RUN, UINT32_MAX), RUN);
    scfm_loader_close(l);
    CU_ASSERT(full[RUN - 1].epoch >= 2);
    /* a batch mid-epoch and the last batch of epoch 0 */
    int saves[2] = {20, 0};
    while (full[saves[1]].after.epoch == 0) saves[1]++;
    for (int s = 0; s < 2; s++) {
        int k = saves[s];
        for (int prefetch = 1; prefetch <= 4; prefetch += 3) {
            c.prefetch = prefetch;
            CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, &full[k].after, &l, &err), SCFM_OK);
            scfm_loader_position p = scfm_loader_get_position(l);
            CU_ASSERT(p.epoch == full[k].after.epoch && p.offset == full[k].after.offset);
            int n = RUN - k - 1;
            CU_ASSERT_EQUAL_FATAL(take(l, resumed, n, UINT32_MAX), n);
            scfm_loader_close(l);
            int differ = 0;
            for (int i = 0; i < n; i++) differ += !same_batch(&full[k + 1 + i], &resumed[i]);
            CU_ASSERT_EQUAL(differ, 0);
            release(resumed, n);
        }
    }
    release(full, RUN);
}

static void test_restore_position(void) { check_restore(make_shards("loader_restore", N_CELLS), 0); }

static void test_restore_position_counts(void) {
    check_restore(make_count_shards("loader_restore_counts"), COUNT_MICRO);
}

/* Count shards in micro-batches of COUNT_MICRO cells, with labels (some
 * cells without one), conditions and held-out cells: two epochs give every
 * wanted cell once each, COUNT_MICRO to a batch but the last of an epoch,
 * with its columns, counts and library as written, its label and condition,
 * and nothing masked. */
static void test_count_batches(void) {
    const char *dir = make_count_shards("loader_counts");
    int32_t labels[N_CELLS], conditions[N_CELLS];
    for (int c = 0; c < N_CELLS; c++) {
        labels[c] = c % 5 == 0 ? -1 : c % 3;
        conditions[c] = c % 2;
    }
    scfm_loader_config c = loader_config(0, 1, 0, 2);
    c.micro_batch_cells = COUNT_MICRO;
    c.max_len = 1; /* counts mode never cuts a cell: its tokens are columns */
    c.labels = labels;
    c.conditions = conditions;
    c.holdout_fraction = 0.2;
    int wanted = 0, empty_wanted = 0;
    for (int i = 0; i < N_CELLS; i++) {
        const int w = labels[i] >= 0 && !scfm_holdout_cell(SEED, i, c.holdout_fraction);
        wanted += w;
        empty_wanted += w && i % 17 == 0;
    }
    CU_ASSERT(wanted > 40 && wanted < N_CELLS);
    CU_ASSERT(empty_wanted > 0);
    taken *t = calloc(MAX_BATCHES, sizeof(taken));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    scfm_loader *l = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, NULL, &l, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_loader_n_genes(l), COUNT_GENES);
    const int n = take(l, t, MAX_BATCHES, 2);
    scfm_loader_close(l);
    int seen[2][N_CELLS] = {{0}}, wrong = 0, wrong_size = 0;
    for (int i = 0; i < n; i++) {
        const scfm_batch *b = &t[i].batch;
        const int last = i + 1 == n || t[i + 1].epoch != t[i].epoch;
        wrong_size += last ? b->n_cells < 1 || b->n_cells > COUNT_MICRO : b->n_cells != COUNT_MICRO;
        wrong += b->n_targets != 0;
        for (int k = 0; k < b->n_cells; k++) {
            const int64_t id = b->cell_ids[k];
            seen[t[i].epoch][id]++;
            wrong += b->labels[k] != labels[id] || b->conditions[k] != conditions[id];
            wrong += b->library[k] != count_library(id);
            int m = b->cell_offsets[k];
            for (int g = 0; g < COUNT_GENES; g++)
                if (count_at(id, g)) {
                    wrong += m >= b->cell_offsets[k + 1] || b->tokens[m] != g || b->counts[m] != (float)count_at(id, g);
                    m++;
                }
            wrong += m != b->cell_offsets[k + 1];
        }
    }
    CU_ASSERT_EQUAL(wrong, 0);
    CU_ASSERT_EQUAL(wrong_size, 0);
    int missed = 0;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < N_CELLS; i++)
            missed += seen[e][i] != (labels[i] >= 0 && !scfm_holdout_cell(SEED, i, c.holdout_fraction));
    CU_ASSERT_EQUAL(missed, 0);
    /* the shard accessors give the same, and nothing to token-shard questions */
    scfm_shards *s = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_shards_open(dir, &s, &err), SCFM_OK);
    const int32_t *genes;
    int n_genes = 0;
    scfm_shards_gene_set(s, &genes, &n_genes);
    CU_ASSERT_EQUAL(n_genes, COUNT_GENES);
    CU_ASSERT(genes[0] == 3 && genes[COUNT_GENES - 1] == 3 + 2 * (COUNT_GENES - 1));
    CU_ASSERT_STRING_EQUAL(scfm_shards_mode(s), "counts");
    const float *counts;
    const uint8_t *values;
    int length = -1;
    CU_ASSERT_EQUAL(scfm_shards_cell_counts(s, 17, &counts, &length, &err), SCFM_OK);
    CU_ASSERT_EQUAL(length, 0);
    CU_ASSERT_EQUAL(scfm_shards_cell_library(s, 17), count_library(17));
    CU_ASSERT_EQUAL(scfm_shards_cell_values(s, 1, &values, &length, &err), SCFM_ERR_ARG);
    scfm_shards_close(s);
    release(t, n);
    free(t);
}

static scfm_status open_status(const char *dir, const scfm_loader_config *c, const scfm_loader_position *start,
                               scfm_error *err) {
    scfm_loader *l = (scfm_loader *)1;
    scfm_status st = scfm_loader_open(dir, c, start, &l, err);
    CU_ASSERT((st == SCFM_OK) == (l != NULL));
    scfm_loader_close(l);
    return st;
}

/* Failures of the producer thread (opening the shards, checking the
 * position against them) and bad arguments come back as scfm_error. */
static void test_errors(void) {
    const char *dir = make_shards("loader_errors", N_CELLS);
    scfm_loader_config c = loader_config(0, 1, BUDGET, 0);
    scfm_error err = {0};
    const char *missing = SCFM_TEST_BINARY_DIR "/loader_no_such_dir";
    CU_ASSERT_EQUAL(open_status(missing, &c, NULL, &err), SCFM_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, missing));
    scfm_error_clear(&err);
    scfm_loader_position past = {0, N_CELLS};
    CU_ASSERT_EQUAL(open_status(dir, &c, &past, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    scfm_loader_config many = loader_config(0, N_CELLS + 1, BUDGET, 0);
    CU_ASSERT_EQUAL(open_status(dir, &many, NULL, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    scfm_loader_config r2 = loader_config(2, 2, BUDGET, 0);
    CU_ASSERT_EQUAL(open_status(dir, &r2, NULL, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    scfm_loader_config r1 = loader_config(1, 2, BUDGET, 0);
    scfm_loader_position other_rank = {0, 2};
    CU_ASSERT_EQUAL(open_status(dir, &r1, &other_rank, &err), SCFM_ERR_ARG);
    scfm_error_clear(&err);
    /* closing at once, with the producer still filling the ring */
    CU_ASSERT_EQUAL(open_status(dir, &c, NULL, &err), SCFM_OK);
}

static size_t heap_in_use(void) {
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}

/* Heap the loader holds beyond what the shard reader itself holds, while it
 * streams 300 batches. */
static long loader_overhead(const char *dir) {
    scfm_error err = {0};
    size_t base = heap_in_use();
    scfm_shards *shards = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_shards_open(dir, &shards, &err), SCFM_OK);
    long reader = (long)(heap_in_use() - base);
    scfm_shards_close(shards);
    base = heap_in_use();
    scfm_loader_config c = loader_config(0, 1, BUDGET, 0);
    scfm_loader *l = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_loader_open(dir, &c, NULL, &l, &err), SCFM_OK);
    scfm_batch b;
    scfm_batch_init(&b);
    uint32_t epoch;
    for (int i = 0; i < 300; i++) CU_ASSERT_EQUAL_FATAL(scfm_loader_next(l, &b, &epoch, &err), SCFM_OK);
    long loader = (long)(heap_in_use() - base);
    scfm_loader_close(l);
    scfm_batch_free(&b);
    return loader - reader;
}

/* No memory in proportion to the cells: an array of 100,000 cell ids alone
 * would be 800 kB. */
static void test_bounded_memory(void) {
    long small = loader_overhead(make_shards("loader_memory_small", 100));
    long large = loader_overhead(make_shards("loader_memory_large", 100000));
    CU_ASSERT(small < 256 * 1024);
    CU_ASSERT(large < 256 * 1024);
}

static CU_TestInfo tests[] = {
    {"the epoch order is a bijection of [0, n)", test_shuffle_is_bijection},
    {"the epoch order depends on seed and epoch", test_shuffle_keys},
    {"1, 2 and 3 ranks read one sequence", test_ranks_read_one_sequence},
    {"packing keeps the token budget and masks by epoch", test_packing},
    {"a cell over the budget comes alone", test_packing_small_budget},
    {"a saved position resumes the same batches", test_restore_position},
    {"counts: 1, 2 and 3 ranks read one sequence", test_ranks_read_one_sequence_counts},
    {"counts: a saved position resumes the same batches", test_restore_position_counts},
    {"counts: cells, counts, library, labels, holdout, no mask", test_count_batches},
    {"errors reach the caller", test_errors},
    {"memory does not grow with the cells", test_bounded_memory},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("loader", tests); }
