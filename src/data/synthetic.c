/* The built-in token set of the quick start and the tests: rank-ordered
 * cells whose order follows their type's gene programme, so a model that
 * learns the programmes predicts masked genes far better than chance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "scfm/data.h"

typedef struct {
    float key;
    int32_t gene;
} ranked_gene;

static int by_key(const void *a, const void *b) {
    float x = ((const ranked_gene *)a)->key, y = ((const ranked_gene *)b)->key;
    return (x > y) - (x < y);
}

static uint32_t draw(uint64_t seed, uint32_t a, uint32_t b, uint32_t c, int word) {
    uint32_t ctr[4] = {a, b, c, 0x5EED0000u}, r[4];
    scfm_philox(seed, ctr, r);
    return r[word];
}

/* The synthetic set's own vocabulary, for the hash its shard records. */
static scfm_status synthetic_vocab(int n_genes, scfm_vocab **out, scfm_error *err) {
    char **ids = calloc((size_t)n_genes, sizeof(char *));
    double *medians = malloc(sizeof(double) * (size_t)n_genes);
    int64_t *nonzero = calloc((size_t)n_genes, sizeof(int64_t));
    scfm_status st =
        ids && medians && nonzero ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "synthetic tokens: out of memory");
    for (int g = 0; st == SCFM_OK && g < n_genes; g++) {
        medians[g] = 1.0;
        if (!(ids[g] = malloc(16))) st = scfm_fail(err, SCFM_ERR_NOMEM, "synthetic tokens: out of memory");
        else snprintf(ids[g], 16, "SYNTH%05d", g);
    }
    if (st == SCFM_OK)
        st = scfm_vocab_create(0, 0, n_genes, (const char *const *)ids, NULL, medians, nonzero, 0, out, err);
    for (int g = 0; ids && g < n_genes; g++) free(ids[g]);
    free(ids);
    free(medians);
    free(nonzero);
    return st;
}

scfm_status scfm_synthetic_tokens(const char *dir, int64_t n_cells, int n_genes, int n_types,
                                  int min_len, int max_len, uint64_t seed, scfm_error *err) {
    if (n_cells < 1 || n_genes < 2 || n_types < 1 || min_len < 1 || max_len < min_len || max_len > n_genes)
        return scfm_fail(err, SCFM_ERR_ARG, "synthetic tokens: invalid sizes");
    /* Genes are SYNTH00000, SYNTH00001, ...: sorted by id, gene g is token first_gene + g. */
    const int first_gene = SCFM_TOKEN_MASK + 1;
    /* programme[k][g]: the expected rank of gene g in type k */
    float *programme = malloc(sizeof(float) * (size_t)n_types * n_genes);
    ranked_gene *cell = malloc(sizeof(ranked_gene) * (size_t)n_genes);
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(n_cells + 1));
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n_cells * max_len);
    int64_t *cell_ids = malloc(sizeof(int64_t) * (size_t)n_cells);
    int32_t *types = malloc(sizeof(int32_t) * (size_t)n_cells);
    char **type_names = calloc((size_t)n_types, sizeof(char *));
    scfm_vocab *vocab = NULL;
    scfm_shard_writer *w = NULL;
    scfm_status st = SCFM_OK;
    if (!programme || !cell || !offsets || !tokens || !cell_ids || !types || !type_names) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "synthetic tokens: out of memory");
        goto done;
    }
    for (int k = 0; k < n_types; k++) {
        if (!(type_names[k] = malloc(16))) {
            st = scfm_fail(err, SCFM_ERR_NOMEM, "synthetic tokens: out of memory");
            goto done;
        }
        snprintf(type_names[k], 16, "type%d", k);
        for (int g = 0; g < n_genes; g++)
            programme[(size_t)k * n_genes + g] = scfm_u01(draw(seed, 1, (uint32_t)k, (uint32_t)g, 0)) * n_genes;
    }
    offsets[0] = 0;
    for (int64_t i = 0; i < n_cells; i++) {
        int k = (int)(i % n_types);
        int len = min_len + (int)(draw(seed, 2, (uint32_t)i, 0, 0) % (uint32_t)(max_len - min_len + 1));
        for (int g = 0; g < n_genes; g++) {
            uint32_t w0 = draw(seed, 3, (uint32_t)i, (uint32_t)g, 0), w1 = draw(seed, 3, (uint32_t)i, (uint32_t)g, 1);
            cell[g].key = programme[(size_t)k * n_genes + g] + 0.02f * n_genes * scfm_normal(w0, w1);
            cell[g].gene = first_gene + g;
        }
        qsort(cell, (size_t)n_genes, sizeof *cell, by_key);
        for (int t = 0; t < len; t++) tokens[offsets[i] + t] = cell[t].gene;
        offsets[i + 1] = offsets[i] + len;
        cell_ids[i] = i;
        types[i] = k;
    }
    if ((st = synthetic_vocab(n_genes, &vocab, err)) != SCFM_OK) goto done;
    const char *source = "synthetic";
    const char *column = "cell_type";
    const char *const *categories = (const char *const *)type_names;
    const int32_t *codes = types;
    scfm_shard_meta meta = {
        .mode = "rank",
        .vocab_size = scfm_vocab_size(vocab),
        .vocab_hash = vocab->hash,
        .max_length = max_len,
        .normalisation = "synthetic: each cell is a noisy ranking of its cell type's genes",
        .shard_index = 0,
        .n_shards = 1,
        .n_sources = 1,
        .sources = &source,
        .source_cells = &n_cells,
        .n_obs = 1,
        .obs_columns = &column,
        .obs_n_categories = &n_types,
        .obs_categories = &categories,
    };
    scfm_shard_cells part = {n_cells, offsets, tokens, NULL, cell_ids, &codes, NULL, NULL};
    char path[4200];
    snprintf(path, sizeof path, "%s.tmp/shard_00000.h5", dir);
    /* The set replaces an earlier one in dir, and appears whole or not at all. */
    if ((st = scfm_output_dir_begin(dir, 1, err)) != SCFM_OK) goto done;
    st = scfm_shard_create(NULL, path, &meta, &w, err);
    if (st == SCFM_OK) st = scfm_shard_append(w, &part, err);
    if (st == SCFM_OK) st = scfm_shard_finish(w, 0, err);
    else scfm_shard_abort(w);
    if (st == SCFM_OK) st = scfm_output_dir_commit(dir, err);
    else scfm_output_dir_discard(dir);
done:
    scfm_vocab_free(vocab);
    for (int k = 0; type_names && k < n_types; k++) free(type_names[k]);
    free(type_names);
    free(types);
    free(cell_ids);
    free(programme);
    free(cell);
    free(offsets);
    free(tokens);
    return st;
}
