/* Epoch 0 of count shards as the loader gives it, in micro-batches of
 * CELLS cells, with every count representation, for the numpy check of
 * tests/reference/check_count_batches.py:
 *   count_batches SHARD_DIR CELLS N_BINS OUT_DIR
 * writes, in batch order, OUT_DIR/batch_cells.i32 (cells of each batch),
 * cell_id.i64, library.f32 and log1p.f32, raw.f32, rank.f32, bin.f32 (the
 * dense rows, n_genes floats each, from scfm_counts_dense). */
#include <stdio.h>
#include <stdlib.h>

#include "scfm/data.h"

static const char *const names[] = {"log1p", "raw", "rank", "bin"};
static const scfm_count_repr reprs[] = {SCFM_COUNTS_LOG1P, SCFM_COUNTS_RAW, SCFM_COUNTS_RANK, SCFM_COUNTS_BIN};
enum { N_REPRS = 4, N_FILES = N_REPRS + 3 };

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: count_batches SHARD_DIR CELLS N_BINS OUT_DIR\n");
        return 2;
    }
    scfm_loader_config c = {.seed = 1, .world = 1, .max_len = 1, .micro_batch_cells = atoi(argv[2])};
    const int n_bins = atoi(argv[3]);
    scfm_error err = {0};
    scfm_loader *l = NULL;
    if (scfm_loader_open(argv[1], &c, NULL, &l, &err) != SCFM_OK) {
        fprintf(stderr, "count_batches: %s\n", err.message);
        return 1;
    }
    const int n_genes = scfm_loader_n_genes(l);
    FILE *out[N_FILES];
    const char *files[N_FILES] = {"batch_cells.i32", "cell_id.i64", "library.f32"};
    for (int r = 0; r < N_REPRS; r++) files[3 + r] = names[r];
    int ok = n_genes > 0;
    for (int f = 0; f < N_FILES; f++) {
        char path[4096];
        snprintf(path, sizeof path, f < 3 ? "%s/%s" : "%s/%s.f32", argv[4], files[f]);
        out[f] = fopen(path, "wb");
        ok &= out[f] != NULL;
    }
    scfm_batch b;
    scfm_batch_init(&b);
    float *x = NULL;
    uint32_t epoch = 0;
    while (ok && scfm_loader_next(l, &b, &epoch, &err) == SCFM_OK && epoch == 0) {
        free(x);
        x = malloc(sizeof(float) * (size_t)b.n_cells * (size_t)n_genes + 1);
        ok = x && b.n_targets == 0;
        fwrite(&b.n_cells, sizeof(int), 1, out[0]);
        fwrite(b.cell_ids, sizeof(int64_t), (size_t)b.n_cells, out[1]);
        fwrite(b.library, sizeof(float), (size_t)b.n_cells, out[2]);
        for (int r = 0; ok && r < N_REPRS; r++) {
            ok = scfm_counts_dense(&b, n_genes, reprs[r], n_bins, x, &err) == SCFM_OK;
            fwrite(x, sizeof(float), (size_t)b.n_cells * (size_t)n_genes, out[3 + r]);
        }
    }
    if (err.message[0]) fprintf(stderr, "count_batches: %s\n", err.message);
    for (int f = 0; f < N_FILES; f++)
        if (out[f]) ok &= fclose(out[f]) == 0;
    free(x);
    scfm_batch_free(&b);
    scfm_loader_close(l);
    if (!ok) fprintf(stderr, "count_batches: failed (no gene set, a masked batch, or an output error)\n");
    return ok ? 0 : 1;
}
