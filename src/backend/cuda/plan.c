/* The varlen attention plan: the batch's cells grouped by length, on the
 * host, so that one batched GEMM per length covers all cells of it. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"

typedef struct {
    int len, cell;
} cell_length;

/* Longest first; equal lengths keep batch order (a total order, so the
 * grouping does not depend on qsort's stability). */
static int by_length(const void *a, const void *b) {
    const cell_length *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->cell > y->cell) - (x->cell < y->cell);
}

void scfm_cuda_varlen_plan_free(scfm_cuda_varlen_plan *plan) {
    free(plan->group_len);
    free(plan->group_start);
    free(plan->order);
    free(plan->cell_offsets);
    free(plan->probs_offset);
    memset(plan, 0, sizeof *plan);
}

scfm_status scfm_cuda_varlen_plan_build(scfm_cuda_varlen_plan *plan, const int32_t *cell_offsets, int n_cells,
                                        int heads, scfm_error *err) {
    memset(plan, 0, sizeof *plan);
    if (n_cells < 0 || heads < 1) return scfm_fail(err, SCFM_ERR_ARG, "attention plan: %d cells, %d heads", n_cells, heads);
    for (int c = 0; c < n_cells; c++)
        if (cell_offsets[c + 1] < cell_offsets[c])
            return scfm_fail(err, SCFM_ERR_ARG, "attention plan: cell %d ends before it starts", c);
    size_t cells = (size_t)n_cells;
    plan->n_cells = n_cells;
    plan->heads = heads;
    plan->group_len = malloc(sizeof(int) * (cells ? cells : 1));
    plan->group_start = malloc(sizeof(int) * (cells + 1));
    plan->order = malloc(sizeof(int) * (cells ? cells : 1));
    plan->cell_offsets = malloc(sizeof(int32_t) * (cells + 1));
    plan->probs_offset = malloc(sizeof(size_t) * (cells ? cells : 1));
    if (!plan->group_len || !plan->group_start || !plan->order || !plan->cell_offsets || !plan->probs_offset) {
        scfm_cuda_varlen_plan_free(plan);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for an attention plan of %d cells", n_cells);
    }
    memcpy(plan->cell_offsets, cell_offsets, sizeof(int32_t) * (cells + 1));
    cell_length *sorted = malloc(sizeof *sorted * (cells ? cells : 1));
    if (!sorted) {
        scfm_cuda_varlen_plan_free(plan);
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for an attention plan of %d cells", n_cells);
    }
    size_t total = 0;
    int kept = 0;
    for (int c = 0; c < n_cells; c++) {
        int L = cell_offsets[c + 1] - cell_offsets[c];
        plan->probs_offset[c] = total;
        total += (size_t)L * (size_t)L * (size_t)heads;
        if (L > 0) sorted[kept++] = (cell_length){L, c}; /* an empty cell has no attention to compute */
    }
    plan->probs_size = total;
    qsort(sorted, (size_t)kept, sizeof *sorted, by_length);
    for (int i = 0; i < kept; i++) {
        int L = sorted[i].len;
        plan->order[i] = sorted[i].cell;
        if (plan->n_groups == 0 || plan->group_len[plan->n_groups - 1] != L) {
            plan->group_len[plan->n_groups] = L;
            plan->group_start[plan->n_groups++] = i;
        }
    }
    plan->group_start[plan->n_groups] = kept;
    free(sorted);
    return SCFM_OK;
}

/* ---- the flash attention tiles ---- */

void scfm_cuda_flash_plan_free(scfm_cuda_flash_plan *plan) {
    free(plan->tiles);
    scfm_cuda_free(plan->d_tiles);
    memset(plan, 0, sizeof *plan);
}

scfm_status scfm_cuda_flash_plan_build(scfm_cuda_flash_plan *plan, const int32_t *cell_offsets, int n_cells,
                                       scfm_error *err) {
    if (n_cells < 0) return scfm_fail(err, SCFM_ERR_ARG, "attention tiles: %d cells", n_cells);
    int n = 0;
    for (int c = 0; c < n_cells; c++) {
        const int L = cell_offsets[c + 1] - cell_offsets[c];
        if (L < 0) return scfm_fail(err, SCFM_ERR_ARG, "attention tiles: cell %d ends before it starts", c);
        n += (L + SCFM_CUDA_FLASH_TILE - 1) / SCFM_CUDA_FLASH_TILE;
    }
    if (n > plan->cap) {
        scfm_cuda_flash_tile *grown = realloc(plan->tiles, sizeof *grown * (size_t)n);
        if (!grown) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for %d attention tiles", n);
        plan->tiles = grown;
        plan->cap = n;
    }
    plan->n_tiles = 0;
    for (int c = 0; c < n_cells; c++) {
        const int start = cell_offsets[c], L = cell_offsets[c + 1] - start;
        for (int first = 0; first < L; first += SCFM_CUDA_FLASH_TILE)
            plan->tiles[plan->n_tiles++] = (scfm_cuda_flash_tile){start, L, first, c};
    }
    plan->n_tokens = n_cells > 0 ? cell_offsets[n_cells] : 0;
    return SCFM_OK;
}

scfm_status scfm_cuda_flash_plan_upload(scfm_cuda_ctx *ctx, scfm_cuda_flash_plan *plan, scfm_error *err) {
    scfm_status st = SCFM_OK;
    if (plan->n_tiles > plan->d_cap) {
        /* the old tiles may still be read by work in flight */
        if ((st = scfm_cuda_sync(ctx, err)) != SCFM_OK) return st;
        scfm_cuda_free(plan->d_tiles);
        plan->d_tiles = NULL;
        plan->d_cap = 0;
        if ((st = scfm_cuda_alloc((void **)&plan->d_tiles, sizeof *plan->d_tiles * (size_t)plan->cap, err)) != SCFM_OK)
            return st;
        plan->d_cap = plan->cap;
    }
    if (plan->n_tiles == 0) return SCFM_OK;
    return scfm_cuda_check(cudaMemcpyAsync(plan->d_tiles, plan->tiles, sizeof *plan->tiles * (size_t)plan->n_tiles,
                                           cudaMemcpyHostToDevice, ctx->stream),
                           "upload of attention tiles", err);
}
