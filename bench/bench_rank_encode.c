/* The rank tokenizer's two per-cell stages on one thread, apart from MPI,
 * the shard writer and start-up.
 *
 *   bench_rank_encode INPUT.h5ad VOCAB_DIR [--cells N] [--runs R] [--max-length L]
 *
 * 1. Read: the first N cells (default 8192) in reads of 512 cells, as
 *    scfm tokenize reads CSR .h5ad and 10x inputs (scfm_matrix_read).
 * 2. Encode: scfm_rank_encode of each of those cells (tokens gathered and
 *    totals summed beforehand, untimed), cut to L tokens (default 2048).
 *
 * Each stage runs R times (default 7); prints one line of JSON on stdout with
 * the minimum and median microseconds per cell of each and a checksum of the
 * tokens (the same for every build that encodes the same). The input should
 * be in the page cache (read it once first). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "scfm/data.h"
#include "scfm/io.h"

#define READ_CELLS 512

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: bench_rank_encode INPUT.h5ad VOCAB_DIR [--cells N] [--runs R] [--max-length L]\n");
        return 2;
    }
    int64_t cells = 8192;
    int runs = 7, max_length = 2048;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--cells")) cells = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs")) runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-length")) max_length = atoi(argv[i + 1]);
    }
    runs = runs < 1 ? 1 : runs;
    scfm_error err = {0};
    scfm_vocab *vocab = NULL;
    scfm_matrix *m = NULL;
    scfm_matrix_options opt = {.require_counts = 1, .skip_cell_names = 1};
    if (scfm_vocab_read(argv[2], &vocab, &err) != SCFM_OK || scfm_matrix_open(argv[1], &opt, &m, &err) != SCFM_OK) {
        fprintf(stderr, "bench_rank_encode: %s\n", err.message);
        return 1;
    }
    if (cells > scfm_matrix_num_cells(m)) cells = scfm_matrix_num_cells(m);
    int32_t *gene_token = malloc(sizeof(int32_t) * (size_t)scfm_matrix_num_genes(m));
    double *read_us = malloc(sizeof(double) * (size_t)runs), *encode_us = malloc(sizeof(double) * (size_t)runs);
    scfm_cells_chunk chunk = {0};
    if (!gene_token || !read_us || !encode_us ||
        scfm_vocab_map_genes(vocab, m, 0, gene_token, &err) != SCFM_OK) {
        fprintf(stderr, "bench_rank_encode: %s\n", err.status ? err.message : "out of memory");
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        for (int64_t first = 0; first < cells; first += READ_CELLS) {
            int64_t n = cells - first < READ_CELLS ? cells - first : READ_CELLS;
            if (scfm_matrix_read(m, first, n, &chunk, &err) != SCFM_OK) {
                fprintf(stderr, "bench_rank_encode: %s\n", err.message);
                return 1;
            }
        }
        read_us[r] = (now_s() - t0) / (double)cells * 1e6;
    }
    /* every cell at once for the encoder, tokens and totals ready */
    if (scfm_matrix_read(m, 0, cells, &chunk, &err) != SCFM_OK) {
        fprintf(stderr, "bench_rank_encode: %s\n", err.message);
        return 1;
    }
    const int64_t nnz = chunk.indptr[cells];
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(nnz + 1)), *out = malloc(sizeof(int32_t) * (size_t)max_length);
    double *total = calloc((size_t)cells, sizeof(double));
    int64_t widest = 1;
    for (int64_t i = 0; i < cells; i++)
        if (chunk.indptr[i + 1] - chunk.indptr[i] > widest) widest = chunk.indptr[i + 1] - chunk.indptr[i];
    scfm_cell_entry *scratch = malloc(sizeof(scfm_cell_entry) * 2 * (size_t)widest);
    if (!tokens || !out || !total || !scratch) {
        fprintf(stderr, "bench_rank_encode: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < cells; i++)
        for (int64_t e = chunk.indptr[i]; e < chunk.indptr[i + 1]; e++) {
            tokens[e] = gene_token[chunk.genes[e]];
            total[i] += chunk.values[e];
            if (tokens[e] < 0) {
                fprintf(stderr, "bench_rank_encode: the input has genes outside the vocabulary\n");
                return 1;
            }
        }
    scfm_rank_params p = {vocab->medians, (int32_t)vocab->n_special, vocab->target_sum, max_length, vocab->cls,
                          vocab->eos};
    uint64_t checksum = 0;
    for (int r = 0; r < runs; r++) {
        uint64_t sum = 0;
        double t0 = now_s();
        for (int64_t i = 0; i < cells; i++) {
            const int64_t at = chunk.indptr[i];
            int len = scfm_rank_encode(&p, tokens + at, chunk.values + at, (int)(chunk.indptr[i + 1] - at), total[i],
                                       scratch, out);
            for (int j = 0; j < len; j++) sum = sum * 1000003u + (uint64_t)out[j];
        }
        encode_us[r] = (now_s() - t0) / (double)cells * 1e6;
        checksum = sum;
    }
    double read_med = bench_median(read_us, runs), encode_med = bench_median(encode_us, runs);
    bench_sort(read_us, runs);
    bench_sort(encode_us, runs);
    printf("{\"cells\": %lld, \"nnz_per_cell\": %.1f, \"runs\": %d, \"read_us_per_cell\": {\"min\": %.2f, "
           "\"median\": %.2f}, \"encode_us_per_cell\": {\"min\": %.2f, \"median\": %.2f}, \"checksum\": \"%016llx\"}\n",
           (long long)cells, (double)nnz / (double)cells, runs, read_us[0], read_med, encode_us[0], encode_med,
           (unsigned long long)checksum);
    free(tokens);
    free(out);
    free(total);
    free(scratch);
    free(gene_token);
    free(read_us);
    free(encode_us);
    scfm_cells_chunk_free(&chunk);
    scfm_matrix_close(m);
    scfm_vocab_free(vocab);
    return 0;
}
