/* Gradient all-reduce under MPI, measured in one run against a plain
 * MPI_Allreduce loop of the same size:
 *   mpirun -np N bench_allreduce CONFIG [--reps R] [--set section.key=value]...
 * The model of CONFIG gives the buffer (its parameter count) and the buckets
 * (scfm_model_grad_ranges: what training reduces, layer by layer). Prints one
 * JSON line (rank 0): seconds and algorithm bandwidth (bytes / time) of
 *   plain:    MPI_Allreduce of the whole buffer, in place
 *   buckets:  scfm_comm_isum_f32 on every bucket, then wait (training's path,
 *             here without backward to hide behind)
 * medians of R repetitions, and their ratio. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "scfm/config.h"
#include "scfm/dist.h"
#include "scfm/model.h"

int main(int argc, char **argv) {
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) {
        fprintf(stderr, "bench_allreduce: %s\n", err.message);
        return 1;
    }
    int reps = 20, n_sets = 0;
    const char *config = NULL, *sets[64];
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_sets < 64) sets[n_sets++] = argv[++i];
        else config = argv[i];
    }
    scfm_config cfg;
    scfm_model *model = NULL;
    scfm_status st = config && reps >= 1 ? scfm_config_load(&cfg, config, sets, n_sets, &err) : SCFM_ERR_ARG;
    if (st == SCFM_OK && cfg.model.vocab_size == 0) cfg.model.vocab_size = 25426; /* Geneformer V1's dictionary */
    if (st == SCFM_OK) st = scfm_model_create(&cfg.model, &model, &err);
    if (st != SCFM_OK) {
        if (scfm_comm_rank(comm) == 0)
            fprintf(stderr, "usage: mpirun -np N bench_allreduce CONFIG [--reps R] [--set k=v]...%s%s\n",
                    err.message[0] ? "\n" : "", err.message);
        scfm_comm_finalize(comm);
        return 2;
    }
    const size_t n = scfm_model_num_params(model);
    const int n_buckets = scfm_model_grad_ranges(model, NULL, NULL);
    size_t offset[n_buckets], size[n_buckets];
    scfm_model_grad_ranges(model, offset, size);
    float *grads = scfm_model_grads(model);
    for (size_t i = 0; i < n; i++) grads[i] = 1e-3f * (float)(i % 97);
    double *plain = malloc(sizeof(double) * (size_t)reps), *buckets = malloc(sizeof(double) * (size_t)reps);
    scfm_comm_request **pending = malloc(sizeof *pending * (size_t)n_buckets);
    for (int r = -2; r < reps; r++) { /* two untimed warm-ups */
        scfm_comm_barrier(comm, &err);
        double t0 = MPI_Wtime();
        MPI_Allreduce(MPI_IN_PLACE, grads, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double t1 = MPI_Wtime();
        scfm_comm_barrier(comm, &err);
        double t2 = MPI_Wtime();
        for (int b = 0; b < n_buckets; b++) scfm_comm_isum_f32(comm, grads + offset[b], size[b], &pending[b], &err);
        for (int b = 0; b < n_buckets; b++) scfm_comm_wait(pending[b], &err);
        double t3 = MPI_Wtime();
        if (r >= 0) {
            plain[r] = t1 - t0;
            buckets[r] = t3 - t2;
        }
    }
    double mp = bench_median(plain, reps), mb = bench_median(buckets, reps), bytes = 4.0 * (double)n;
    if (scfm_comm_rank(comm) == 0)
        printf("{\"ranks\": %d, \"params\": %zu, \"buckets\": %d, \"bytes\": %.0f, \"plain_s\": %.6f, \"buckets_s\": %.6f, "
               "\"plain_GBps\": %.3f, \"buckets_GBps\": %.3f, \"buckets_over_plain_bandwidth\": %.3f}\n",
               scfm_comm_size(comm), n, n_buckets, bytes, mp, mb, bytes / mp / 1e9, bytes / mb / 1e9, mp / mb);
    free(plain);
    free(buckets);
    free(pending);
    scfm_model_free(model);
    scfm_comm_finalize(comm);
    return 0;
}
