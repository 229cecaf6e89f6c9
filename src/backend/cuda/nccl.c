/* Gradient reduction over NCCL, set up through the MPI communicator: the
 * reductions run on a stream of their own, each ordered after the compute
 * stream's work by an event, so backward keeps computing the next buckets
 * while earlier ones reduce. */
#include <nccl.h>
#include <stdlib.h>

#include "backend/cuda/cuda_backend.h"

struct scfm_cuda_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t ready, done;
};

static scfm_status nccl_check(ncclResult_t rc, const char *what, scfm_error *err) {
    if (rc == ncclSuccess) return SCFM_OK;
    return scfm_fail(err, SCFM_ERR_IO, "NCCL %s failed: %s", what, ncclGetErrorString(rc));
}

void scfm_cuda_nccl_free(scfm_cuda_nccl *n) {
    if (!n) return;
    if (n->stream) cudaStreamSynchronize(n->stream);
    if (n->comm) ncclCommDestroy(n->comm);
    if (n->ready) cudaEventDestroy(n->ready);
    if (n->done) cudaEventDestroy(n->done);
    if (n->stream) cudaStreamDestroy(n->stream);
    free(n);
}

scfm_status scfm_cuda_nccl_init(scfm_comm *comm, int device, scfm_cuda_nccl **out, scfm_error *err) {
    *out = NULL;
    ncclUniqueId id;
    scfm_status st = SCFM_OK;
    if (scfm_comm_rank(comm) == 0) st = nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", err);
    /* every rank learns whether rank 0 got an id before waiting for it */
    st = scfm_comm_agree(comm, st, err);
    if (st == SCFM_OK) st = scfm_comm_bcast(comm, &id, sizeof id, 0, err);
    if (st != SCFM_OK) return st;
    scfm_cuda_nccl *n = calloc(1, sizeof *n);
    if (!n) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    st = scfm_cuda_check(cudaSetDevice(device), "cudaSetDevice", err);
    if (st == SCFM_OK)
        st = scfm_cuda_check(cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking), "stream creation", err);
    if (st == SCFM_OK)
        st = scfm_cuda_check(cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming), "event creation", err);
    if (st == SCFM_OK)
        st = scfm_cuda_check(cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming), "event creation", err);
    if (st == SCFM_OK)
        st = nccl_check(ncclCommInitRank(&n->comm, scfm_comm_size(comm), id, scfm_comm_rank(comm)), "ncclCommInitRank",
                        err);
    /* one rank failing must not leave the others waiting in NCCL calls */
    st = scfm_comm_agree(comm, st, err);
    if (st != SCFM_OK) {
        scfm_cuda_nccl_free(n);
        return st;
    }
    *out = n;
    return SCFM_OK;
}

scfm_status scfm_cuda_nccl_isum_f32(scfm_cuda_nccl *n, float *d_values, size_t count, cudaStream_t compute,
                                    scfm_error *err) {
    scfm_status st = scfm_cuda_check(cudaEventRecord(n->ready, compute), "cudaEventRecord", err);
    if (st == SCFM_OK) st = scfm_cuda_check(cudaStreamWaitEvent(n->stream, n->ready, 0), "cudaStreamWaitEvent", err);
    if (st == SCFM_OK)
        st = nccl_check(ncclAllReduce(d_values, d_values, count, ncclFloat32, ncclSum, n->comm, n->stream),
                        "ncclAllReduce", err);
    return st;
}

scfm_status scfm_cuda_nccl_wait(scfm_cuda_nccl *n, cudaStream_t compute, scfm_error *err) {
    scfm_status st = scfm_cuda_check(cudaEventRecord(n->done, n->stream), "cudaEventRecord", err);
    if (st == SCFM_OK) st = scfm_cuda_check(cudaStreamWaitEvent(compute, n->done, 0), "cudaStreamWaitEvent", err);
    return st;
}
