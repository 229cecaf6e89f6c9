/* scfm dist: the communicator behind every collective call, so library code
 * never includes mpi.h and a CUDA backend can put NCCL behind the same calls.
 * With one process (no mpirun) every call works and is trivial. */
#ifndef SCFM_DIST_H
#define SCFM_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct scfm_comm scfm_comm;

/* Initialises MPI (thread level FUNNELED) unless it is already initialised,
 * and returns the world communicator. scfm_comm_finalize finalises MPI only if
 * scfm_comm_init initialised it. */
scfm_status scfm_comm_init(int *argc, char ***argv, scfm_comm **out, scfm_error *err);
void scfm_comm_finalize(scfm_comm *c);

int scfm_comm_rank(const scfm_comm *c);
int scfm_comm_size(const scfm_comm *c);

scfm_status scfm_comm_barrier(scfm_comm *c, scfm_error *err);
/* In-place element-wise sums and maxima over all ranks. */
scfm_status scfm_comm_sum_i64(scfm_comm *c, int64_t *values, size_t n, scfm_error *err);
scfm_status scfm_comm_sum_f64(scfm_comm *c, double *values, size_t n, scfm_error *err);
scfm_status scfm_comm_sum_f32(scfm_comm *c, float *values, size_t n, scfm_error *err);
scfm_status scfm_comm_max_i64(scfm_comm *c, int64_t *values, size_t n, scfm_error *err);
/* Exclusive prefix sum of one value: rank r gets the sum over ranks < r. */
scfm_status scfm_comm_exscan_i64(scfm_comm *c, int64_t value, int64_t *prefix, scfm_error *err);
scfm_status scfm_comm_bcast(scfm_comm *c, void *data, size_t bytes, int root, scfm_error *err);
/* Every rank contributes `bytes` bytes; out receives size * bytes, by rank. */
scfm_status scfm_comm_allgather(scfm_comm *c, const void *data, size_t bytes, void *out,
                                scfm_error *err);

/* Every rank contributes bytes[rank] bytes (all ranks pass the same bytes
 * array, e.g. from scfm_comm_allgather); out receives them by rank. */
scfm_status scfm_comm_allgatherv(scfm_comm *c, const void *data, const size_t *bytes, void *out,
                                 scfm_error *err);

/* Non-blocking in-place sum of n floats over all ranks: the data-parallel
 * gradient reduction, started while backward still runs. The values must
 * not be touched until scfm_comm_wait returns. */
typedef struct scfm_comm_request scfm_comm_request;
scfm_status scfm_comm_isum_f32(scfm_comm *c, float *values, size_t n, scfm_comm_request **req,
                               scfm_error *err);
/* Lets pending reductions advance (MPI moves non-blocking collectives only
 * inside MPI calls); cheap, call it between pieces of work. */
void scfm_comm_progress(scfm_comm_request *const *reqs, int n);
/* Waits for a request and frees it. */
scfm_status scfm_comm_wait(scfm_comm_request *req, scfm_error *err);

/* ZeRO-1 collectives over n floats cut in blocks of ceil(n / size), block r
 * belonging to rank r (the last may be shorter): */
size_t scfm_comm_block(const scfm_comm *c, size_t n, int rank, size_t *offset);
/* sums values[0, n) over ranks and leaves this rank's block of the sum at
 * values[0, block) (the rest is scratch); */
scfm_status scfm_comm_sum_scatter_f32(scfm_comm *c, float *values, size_t n, scfm_error *err);
/* every rank's block, at its place in values[0, n), to every rank; */
scfm_status scfm_comm_gather_blocks_f32(scfm_comm *c, float *values, size_t n, scfm_error *err);
/* every rank's `mine` (its block's length) to root's full[0, n). */
scfm_status scfm_comm_gather_blocks_to_f32(scfm_comm *c, const float *mine, float *full, size_t n, int root,
                                           scfm_error *err);

/* Collective: the worst status over all ranks. When this rank succeeded but
 * another failed, err gets "rank R failed: <its message>", so every rank
 * stops together and reports the cause. */
scfm_status scfm_comm_agree(scfm_comm *c, scfm_status local, scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
