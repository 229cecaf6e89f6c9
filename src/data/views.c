/* Two views of every cell for the contrastive objective: disjoint random
 * subsets of its gene tokens for the transformer (scfm_batch_views), or two
 * copies for a count encoder to augment (scfm_batch_pairs; data.h). */
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

/* Which view gene token `position` of cell `id` joins: 0, 1, or -1 (neither,
 * when fraction < 0.5). */
static int view_of(uint64_t seed, uint32_t epoch, int64_t id, int position, double fraction) {
    uint32_t counter[4] = {(uint32_t)id, (uint32_t)((uint64_t)id >> 32), (uint32_t)position,
                           (uint32_t)SCFM_STREAM_VIEW << 24 | (epoch & 0xFFFFFFu)};
    uint32_t r[4];
    scfm_philox(seed, counter, r);
    double u = scfm_u01(r[0]);
    return u < fraction ? 0 : u >= 1.0 - fraction ? 1 : -1;
}

scfm_status scfm_batch_views(const scfm_batch *cells, scfm_batch *views, double fraction, int first_gene,
                             uint64_t seed, uint32_t epoch, scfm_error *err) {
    scfm_batch_clear(views);
    int longest = 0;
    for (int c = 0; c < cells->n_cells; c++) {
        int L = cells->cell_offsets[c + 1] - cells->cell_offsets[c];
        if (L > longest) longest = L;
    }
    /* tokens of the two views, then their values */
    int32_t *buf = malloc(sizeof(int32_t) * 4 * (size_t)(longest > 0 ? longest : 1));
    if (!buf) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory splitting cells into views");
    scfm_status st = SCFM_OK;
    for (int c = 0; c < cells->n_cells && st == SCFM_OK; c++) {
        const int32_t *tok = cells->tokens + cells->cell_offsets[c];
        const int32_t *val = cells->values + cells->cell_offsets[c];
        const int L = cells->cell_offsets[c + 1] - cells->cell_offsets[c];
        const int64_t id = cells->cell_ids[c];
        int32_t *view[2] = {buf, buf + longest}, *value[2] = {buf + 2 * longest, buf + 3 * longest};
        int len[2] = {0, 0}, genes[2] = {0, 0};
        for (int t = 0; t < L; t++) {
            if (tok[t] < first_gene) {
                value[0][len[0]] = value[1][len[1]] = val[t];
                view[0][len[0]++] = view[1][len[1]++] = tok[t];
                continue;
            }
            int v = view_of(seed, epoch, id, t, fraction);
            if (v < 0) continue;
            value[v][len[v]] = val[t];
            view[v][len[v]++] = tok[t];
            genes[v]++;
        }
        if (genes[0] == 0 || genes[1] == 0) continue;
        for (int v = 0; v < 2 && st == SCFM_OK; v++) {
            st = scfm_batch_add_cell(views, 2 * id + v, view[v], len[v], err);
            if (st != SCFM_OK) break;
            const int k = views->n_cells - 1;
            views->labels[k] = cells->labels[c];
            views->conditions[k] = cells->conditions[c];
            memcpy(views->values + views->cell_offsets[k], value[v], sizeof(int32_t) * (size_t)len[v]);
        }
    }
    free(buf);
    return st;
}

scfm_status scfm_batch_pairs(const scfm_batch *cells, scfm_batch *pairs, scfm_error *err) {
    scfm_batch_clear(pairs);
    scfm_status st = SCFM_OK;
    for (int c = 0; c < cells->n_cells && st == SCFM_OK; c++) {
        const int lo = cells->cell_offsets[c], L = cells->cell_offsets[c + 1] - lo;
        for (int v = 0; v < 2 && st == SCFM_OK; v++) {
            if ((st = scfm_batch_add_cell(pairs, 2 * cells->cell_ids[c] + v, cells->tokens + lo, L, err)) != SCFM_OK)
                break;
            const int k = pairs->n_cells - 1, at = pairs->cell_offsets[k];
            pairs->labels[k] = cells->labels[c];
            pairs->conditions[k] = cells->conditions[c];
            memcpy(pairs->values + at, cells->values + lo, sizeof(int32_t) * (size_t)L);
            scfm_batch_set_counts(pairs, cells->counts + lo, cells->library[c]);
        }
    }
    return st;
}
