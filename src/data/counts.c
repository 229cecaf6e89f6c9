/* Count batches as dense vectors, the input of the count encoders
 * (docs/formats.md, "Representations"). The rank and bin representations
 * come from the tokenizers' own encoders, scfm_rank_encode and
 * scfm_bin_encode, run on a cell's columns: a count vector is ordered and
 * binned exactly as a cell is tokenized. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"

#define MAX_BINS 256 /* scfm_bin_encode's values are uint8 */

/* One cell's row of x in representation repr; scratch holds what the rank
 * and bin encoders need for the longest cell. */
static void cell_row(const scfm_batch *b, int c, scfm_count_repr repr, int n_bins, const double *ones,
                     scfm_cell_entry *scratch, int32_t *order, uint8_t *bins, float *row) {
    const int first = b->cell_offsets[c], n = b->cell_offsets[c + 1] - first;
    const int32_t *columns = b->tokens + first;
    const float *counts = b->counts + first;
    const double library = b->library[c];
    if (repr == SCFM_COUNTS_RAW || repr == SCFM_COUNTS_LOG1P) {
        for (int k = 0; k < n; k++)
            row[columns[k]] = repr == SCFM_COUNTS_RAW || counts[k] <= 0.0f
                                  ? counts[k]
                                  : (float)log1p((double)counts[k] / library * SCFM_VOCAB_TARGET_SUM);
    } else if (repr == SCFM_COUNTS_RANK) {
        /* by count, descending, ties by column: medians of 1 and a total of 1 leave the counts as they are */
        scfm_rank_params p = {ones, 0, 1.0, n, -1, -1};
        const int m = scfm_rank_encode(&p, columns, counts, n, 1.0, scratch, order);
        for (int r = 0; r < m; r++) row[order[r]] = (float)((double)(m - r) / (double)m);
    } else {
        scfm_bin_params p = {n_bins, 1, SCFM_VOCAB_TARGET_SUM, n, -1, -1, 0};
        const int m = scfm_bin_encode(&p, b->cell_ids[c], columns, counts, n, library, scratch, order, bins);
        for (int k = 0; k < m; k++) row[order[k]] = (float)bins[k];
    }
}

scfm_status scfm_counts_dense(const scfm_batch *b, int n_genes, scfm_count_repr repr, int n_bins, float *x,
                              scfm_error *err) {
    if (repr == SCFM_COUNTS_BIN && (n_bins < 2 || n_bins > MAX_BINS))
        return scfm_fail(err, SCFM_ERR_ARG, "count bins %d: must be in [2, %d]", n_bins, MAX_BINS);
    int longest = 0;
    for (int c = 0; c < b->n_cells; c++) {
        const int first = b->cell_offsets[c], n = b->cell_offsets[c + 1] - first;
        longest = n > longest ? n : longest;
        for (int k = first; k < first + n; k++)
            if (b->tokens[k] < 0 || b->tokens[k] >= n_genes)
                return scfm_fail(err, SCFM_ERR_ARG, "cell %lld: column %d outside the %d genes",
                                 (long long)b->cell_ids[c], b->tokens[k], n_genes);
        if (n > 0 && !(b->library[c] > 0.0f) && (repr == SCFM_COUNTS_LOG1P || repr == SCFM_COUNTS_BIN))
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has counts but no library size",
                             (long long)b->cell_ids[c]);
    }
    const int ordered = repr == SCFM_COUNTS_RANK || repr == SCFM_COUNTS_BIN;
    double *ones = NULL;
    scfm_cell_entry *scratch = NULL;
    int32_t *order = NULL;
    uint8_t *bins = NULL;
    if (ordered) {
        ones = malloc(sizeof(double) * (size_t)n_genes);
        scratch = malloc(2 * sizeof(scfm_cell_entry) * (size_t)(longest + 1));
        order = malloc(sizeof(int32_t) * (size_t)(longest + 1));
        bins = malloc((size_t)longest + 1);
        if (!ones || !scratch || !order || !bins) {
            free(ones), free(scratch), free(order), free(bins);
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the count representation of %d genes", longest);
        }
        for (int g = 0; g < n_genes; g++) ones[g] = 1.0;
    }
    memset(x, 0, sizeof(float) * (size_t)b->n_cells * (size_t)n_genes);
    for (int c = 0; c < b->n_cells; c++)
        cell_row(b, c, repr, n_bins, ones, scratch, order, bins, x + (size_t)c * (size_t)n_genes);
    free(ones);
    free(scratch);
    free(order);
    free(bins);
    return SCFM_OK;
}
