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

scfm_status scfm_synthetic_tokens(const char *dir, int64_t n_cells, int n_genes, int n_types,
                                  int min_len, int max_len, uint64_t seed, scfm_error *err) {
    if (n_cells < 1 || n_genes < 2 || n_types < 1 || min_len < 1 || max_len < min_len || max_len > n_genes)
        return scfm_fail(err, SCFM_ERR_ARG, "synthetic tokens: invalid sizes");
    if (scfm_make_dirs(dir, err) != SCFM_OK) return err->status;
    const int first_gene = SCFM_TOKEN_MASK + 1;
    /* programme[k][g]: the expected rank of gene g in type k */
    float *programme = malloc(sizeof(float) * (size_t)n_types * n_genes);
    ranked_gene *cell = malloc(sizeof(ranked_gene) * (size_t)n_genes);
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)(n_cells + 1));
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)n_cells * max_len);
    scfm_status st = SCFM_OK;
    if (!programme || !cell || !offsets || !tokens) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "synthetic tokens: out of memory");
        goto done;
    }
    for (int k = 0; k < n_types; k++)
        for (int g = 0; g < n_genes; g++)
            programme[(size_t)k * n_genes + g] = scfm_u01(draw(seed, 1, (uint32_t)k, (uint32_t)g, 0)) * n_genes;
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
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/shard_00000.h5", dir);
    st = scfm_shard_write(path, tokens, offsets, n_cells, first_gene + n_genes, err);
done:
    free(programme);
    free(cell);
    free(offsets);
    free(tokens);
    return st;
}
