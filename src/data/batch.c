/* Packed batches and the masked-gene corruption (BERT's 80/10/10 rule). */
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

void scfm_batch_init(scfm_batch *b) { memset(b, 0, sizeof *b); }

void scfm_batch_free(scfm_batch *b) {
    free(b->tokens);
    free(b->cell_offsets);
    free(b->cell_ids);
    free(b->labels);
    free(b->target_index);
    free(b->target_label);
    free(b->values);
    free(b->conditions);
    free(b->value_index);
    free(b->value_target);
    free(b->counts);
    free(b->library);
    scfm_batch_init(b);
}

void scfm_batch_clear(scfm_batch *b) {
    b->n_cells = 0;
    b->n_tokens = 0;
    b->n_targets = 0;
    b->n_value_targets = 0;
}

static int next_capacity(int cap, int need) {
    if (cap < 64) cap = 64;
    while (cap < need) cap *= 2;
    return cap;
}

static int resize(void *pp, size_t elem, int n) {
    void **p = pp;
    void *q = realloc(*p, elem * (size_t)n);
    if (!q) return 0;
    *p = q;
    return 1;
}

scfm_status scfm_batch_add_cell(scfm_batch *b, int64_t cell_id, const int32_t *tokens, int length,
                                scfm_error *err) {
    int cells = b->n_cells + 1, toks = b->n_tokens + length;
    /* A capacity is recorded only once every array of its group has grown. */
    if (cells + 1 > b->cap_cells) {
        int cap = next_capacity(b->cap_cells, cells + 1);
        if (!resize(&b->cell_ids, sizeof(int64_t), cap) || !resize(&b->labels, sizeof(int32_t), cap) ||
            !resize(&b->cell_offsets, sizeof(int32_t), cap) || !resize(&b->conditions, sizeof(int32_t), cap) ||
            !resize(&b->library, sizeof(float), cap))
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory packing a batch of %d cells", cells);
        b->cap_cells = cap;
    }
    if (toks > b->cap_tokens || b->cap_tokens == 0) { /* allocated even for a first cell of no tokens (counts) */
        int cap = next_capacity(b->cap_tokens, toks);
        if (!resize(&b->tokens, sizeof(int32_t), cap) ||
            !resize(&b->target_index, sizeof(int32_t), cap) ||
            !resize(&b->target_label, sizeof(int32_t), cap) || !resize(&b->values, sizeof(int32_t), cap) ||
            !resize(&b->value_index, sizeof(int32_t), cap) || !resize(&b->value_target, sizeof(int32_t), cap) ||
            !resize(&b->counts, sizeof(float), cap))
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory packing a batch of %d tokens", toks);
        b->cap_tokens = cap;
    }
    if (b->n_cells == 0) b->cell_offsets[0] = 0;
    memcpy(b->tokens + b->n_tokens, tokens, sizeof(int32_t) * (size_t)length);
    memset(b->values + b->n_tokens, 0, sizeof(int32_t) * (size_t)length);
    memset(b->counts + b->n_tokens, 0, sizeof(float) * (size_t)length);
    b->cell_ids[b->n_cells] = cell_id;
    b->labels[b->n_cells] = -1;
    b->conditions[b->n_cells] = -1;
    b->library[b->n_cells] = 0;
    b->n_cells = cells;
    b->n_tokens = toks;
    b->cell_offsets[cells] = toks;
    return SCFM_OK;
}

void scfm_batch_set_values(scfm_batch *b, const uint8_t *values) {
    const int first = b->cell_offsets[b->n_cells - 1];
    for (int t = first; t < b->n_tokens; t++) b->values[t] = values[t - first];
}

void scfm_batch_set_counts(scfm_batch *b, const float *counts, float library) {
    const int first = b->cell_offsets[b->n_cells - 1];
    memcpy(b->counts + first, counts, sizeof(float) * (size_t)(b->n_tokens - first));
    b->library[b->n_cells - 1] = library;
}

/* The four Philox words of a cell's token at `position` on `stream`. */
static void token_draw(uint64_t seed, uint32_t epoch, uint32_t stream, int64_t id, int32_t position, uint32_t r[4]) {
    uint32_t counter[4] = {(uint32_t)id, (uint32_t)((uint64_t)id >> 32), (uint32_t)position,
                           stream << 24 | (epoch & 0xFFFFFFu)};
    scfm_philox(seed, counter, r);
}

void scfm_batch_mask_values(scfm_batch *b, double prob, int first_gene, int32_t mask_bin, uint64_t seed,
                            uint32_t epoch) {
    b->n_value_targets = 0;
    for (int c = 0; c < b->n_cells; c++)
        for (int t = b->cell_offsets[c]; t < b->cell_offsets[c + 1]; t++) {
            if (b->tokens[t] < first_gene) continue;
            uint32_t r[4];
            token_draw(seed, epoch, SCFM_STREAM_VALUE_MASK, b->cell_ids[c], t - b->cell_offsets[c], r);
            if (scfm_u01(r[0]) >= prob) continue;
            b->value_index[b->n_value_targets] = t;
            b->value_target[b->n_value_targets++] = b->values[t];
            b->values[t] = mask_bin;
        }
}

void scfm_batch_mask(scfm_batch *b, const scfm_mask_config *mc, uint64_t seed, uint32_t epoch) {
    const int n_genes = mc->vocab_size - mc->first_gene_token;
    b->n_targets = 0;
    for (int c = 0; c < b->n_cells; c++) {
        int64_t id = b->cell_ids[c];
        for (int t = b->cell_offsets[c]; t < b->cell_offsets[c + 1]; t++) {
            int32_t tok = b->tokens[t];
            if (tok < mc->first_gene_token) continue;
            uint32_t r[4];
            token_draw(seed, epoch, SCFM_STREAM_MASK, id, t - b->cell_offsets[c], r);
            if (scfm_u01(r[0]) >= mc->mask_prob) continue;
            b->target_index[b->n_targets] = t;
            b->target_label[b->n_targets] = tok;
            b->n_targets++;
            float action = scfm_u01(r[1]);
            if (action < mc->mask_token_prob)
                b->tokens[t] = SCFM_TOKEN_MASK;
            else if (action < mc->mask_token_prob + mc->random_token_prob)
                b->tokens[t] = mc->first_gene_token + (int32_t)(r[2] % (uint32_t)n_genes);
        }
    }
}
