/* scfm_comm over MPI. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/comm_mpi.h"

struct scfm_comm {
    MPI_Comm comm;
    int rank, size;
    int owns_mpi;
};

static scfm_status mpi_check(int rc, const char *what, scfm_error *err) {
    if (rc == MPI_SUCCESS) return SCFM_OK;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    return scfm_fail(err, SCFM_ERR_IO, "MPI %s failed: %s", what, text);
}

scfm_status scfm_comm_init(int *argc, char ***argv, scfm_comm **out, scfm_error *err) {
    *out = NULL;
    int initialised = 0, provided = 0;
    MPI_Initialized(&initialised);
    scfm_comm *c = calloc(1, sizeof *c);
    if (!c) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (!initialised) {
        if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            free(c);
            return scfm_fail(err, SCFM_ERR_IO, "MPI_Init_thread failed");
        }
        c->owns_mpi = 1;
    }
    /* Errors come back as codes, so they are reported like any other. */
    MPI_Comm_dup(MPI_COMM_WORLD, &c->comm);
    MPI_Comm_set_errhandler(c->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->comm, &c->rank);
    MPI_Comm_size(c->comm, &c->size);
    *out = c;
    return SCFM_OK;
}

void scfm_comm_finalize(scfm_comm *c) {
    if (!c) return;
    MPI_Comm_free(&c->comm);
    if (c->owns_mpi) MPI_Finalize();
    free(c);
}

MPI_Comm scfm_comm_mpi(const scfm_comm *c) { return c->comm; }
int scfm_comm_rank(const scfm_comm *c) { return c->rank; }
int scfm_comm_size(const scfm_comm *c) { return c->size; }

scfm_status scfm_comm_barrier(scfm_comm *c, scfm_error *err) {
    return mpi_check(MPI_Barrier(c->comm), "barrier", err);
}

static scfm_status allreduce(scfm_comm *c, void *values, size_t n, MPI_Datatype type, MPI_Op op,
                             scfm_error *err) {
    /* MPI counts are int: large buffers go in slices. */
    const size_t slice = 1u << 30;
    int size = 0;
    MPI_Type_size(type, &size);
    for (size_t done = 0; done < n; done += slice) {
        size_t count = n - done < slice ? n - done : slice;
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)values + done * (size_t)size, (int)count, type, op, c->comm);
        if (rc != MPI_SUCCESS) return mpi_check(rc, "allreduce", err);
    }
    return SCFM_OK;
}

scfm_status scfm_comm_sum_i64(scfm_comm *c, int64_t *values, size_t n, scfm_error *err) {
    return allreduce(c, values, n, MPI_INT64_T, MPI_SUM, err);
}
scfm_status scfm_comm_sum_f64(scfm_comm *c, double *values, size_t n, scfm_error *err) {
    return allreduce(c, values, n, MPI_DOUBLE, MPI_SUM, err);
}
scfm_status scfm_comm_sum_f32(scfm_comm *c, float *values, size_t n, scfm_error *err) {
    return allreduce(c, values, n, MPI_FLOAT, MPI_SUM, err);
}
scfm_status scfm_comm_max_i64(scfm_comm *c, int64_t *values, size_t n, scfm_error *err) {
    return allreduce(c, values, n, MPI_INT64_T, MPI_MAX, err);
}

scfm_status scfm_comm_exscan_i64(scfm_comm *c, int64_t value, int64_t *prefix, scfm_error *err) {
    *prefix = 0;
    int rc = MPI_Exscan(&value, prefix, 1, MPI_INT64_T, MPI_SUM, c->comm);
    if (c->rank == 0) *prefix = 0; /* MPI leaves rank 0's result undefined */
    return mpi_check(rc, "exscan", err);
}

scfm_status scfm_comm_bcast(scfm_comm *c, void *data, size_t bytes, int root, scfm_error *err) {
    if (bytes > (size_t)1 << 30) return scfm_fail(err, SCFM_ERR_ARG, "broadcast of %zu bytes is too large", bytes);
    return mpi_check(MPI_Bcast(data, (int)bytes, MPI_BYTE, root, c->comm), "broadcast", err);
}

scfm_status scfm_comm_allgather(scfm_comm *c, const void *data, size_t bytes, void *out, scfm_error *err) {
    if (bytes > (size_t)1 << 30) return scfm_fail(err, SCFM_ERR_ARG, "allgather of %zu bytes is too large", bytes);
    return mpi_check(MPI_Allgather(data, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, c->comm), "allgather", err);
}

/* A reduction larger than an int count is split into slices, each its own
 * MPI request. */
struct scfm_comm_request {
    int n;
    MPI_Request mpi[];
};

scfm_status scfm_comm_isum_f32(scfm_comm *c, float *values, size_t n, scfm_comm_request **req,
                               scfm_error *err) {
    const size_t slice = (size_t)1 << 30;
    int slices = n == 0 ? 0 : (int)((n + slice - 1) / slice);
    scfm_comm_request *r = malloc(sizeof *r + sizeof(MPI_Request) * (size_t)(slices > 0 ? slices : 1));
    if (!r) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a reduction request");
    r->n = slices;
    for (int i = 0; i < slices; i++) {
        size_t at = (size_t)i * slice, count = n - at < slice ? n - at : slice;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, values + at, (int)count, MPI_FLOAT, MPI_SUM, c->comm, &r->mpi[i]);
        if (rc != MPI_SUCCESS) {
            r->n = i;
            scfm_comm_wait(r, NULL);
            return mpi_check(rc, "iallreduce", err);
        }
    }
    *req = r;
    return SCFM_OK;
}

void scfm_comm_progress(scfm_comm_request *const *reqs, int n) {
    for (int i = 0; i < n; i++) {
        int done = 0;
        if (reqs[i] && reqs[i]->n > 0) MPI_Testall(reqs[i]->n, reqs[i]->mpi, &done, MPI_STATUSES_IGNORE);
    }
}

scfm_status scfm_comm_wait(scfm_comm_request *req, scfm_error *err) {
    int rc = req->n > 0 ? MPI_Waitall(req->n, req->mpi, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    free(req);
    if (rc != MPI_SUCCESS && err) return mpi_check(rc, "waiting for a reduction", err);
    return rc == MPI_SUCCESS ? SCFM_OK : SCFM_ERR_IO;
}

size_t scfm_comm_block(const scfm_comm *c, size_t n, int rank, size_t *offset) {
    size_t block = (n + (size_t)c->size - 1) / (size_t)c->size;
    size_t lo = block * (size_t)rank < n ? block * (size_t)rank : n;
    size_t hi = lo + block < n ? lo + block : n;
    if (offset) *offset = lo;
    return hi - lo;
}

/* Counts and displacements of the blocks, as MPI's int arrays. */
static scfm_status block_layout(const scfm_comm *c, size_t n, int *counts, int *displs, scfm_error *err) {
    for (int r = 0; r < c->size; r++) {
        size_t offset, count = scfm_comm_block(c, n, r, &offset);
        if (count > (size_t)1 << 30 || offset > (size_t)INT32_MAX)
            return scfm_fail(err, SCFM_ERR_ARG, "ZeRO-1 blocks of %zu floats are too large for MPI's int counts", count);
        counts[r] = (int)count;
        displs[r] = (int)offset;
    }
    return SCFM_OK;
}

scfm_status scfm_comm_sum_scatter_f32(scfm_comm *c, float *values, size_t n, scfm_error *err) {
    int counts[c->size], displs[c->size];
    scfm_status st = block_layout(c, n, counts, displs, err);
    if (st != SCFM_OK) return st;
    return mpi_check(MPI_Reduce_scatter(MPI_IN_PLACE, values, counts, MPI_FLOAT, MPI_SUM, c->comm), "reduce-scatter", err);
}

scfm_status scfm_comm_gather_blocks_f32(scfm_comm *c, float *values, size_t n, scfm_error *err) {
    int counts[c->size], displs[c->size];
    scfm_status st = block_layout(c, n, counts, displs, err);
    if (st != SCFM_OK) return st;
    return mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, values, counts, displs, MPI_FLOAT, c->comm),
                     "allgather", err);
}

scfm_status scfm_comm_gather_blocks_to_f32(scfm_comm *c, const float *mine, float *full, size_t n, int root,
                                           scfm_error *err) {
    int counts[c->size], displs[c->size];
    scfm_status st = block_layout(c, n, counts, displs, err);
    if (st != SCFM_OK) return st;
    return mpi_check(MPI_Gatherv(mine, counts[c->rank], MPI_FLOAT, full, counts, displs, MPI_FLOAT, root, c->comm),
                     "gather", err);
}

scfm_status scfm_comm_allgatherv(scfm_comm *c, const void *data, const size_t *bytes, void *out,
                                 scfm_error *err) {
    int counts[c->size], displs[c->size];
    size_t total = 0;
    for (int r = 0; r < c->size; r++) {
        if (bytes[r] > (size_t)INT32_MAX || total > (size_t)INT32_MAX)
            return scfm_fail(err, SCFM_ERR_ARG, "allgather of %zu bytes is too large", total + bytes[r]);
        counts[r] = (int)bytes[r];
        displs[r] = (int)total;
        total += bytes[r];
    }
    return mpi_check(MPI_Allgatherv(data, counts[c->rank], MPI_BYTE, out, counts, displs, MPI_BYTE, c->comm),
                     "allgather", err);
}

scfm_status scfm_comm_agree(scfm_comm *c, scfm_status local, scfm_error *err) {
    /* The lowest failing rank reports: the maximum of (size - rank) picks it. */
    int64_t key = local != SCFM_OK ? (int64_t)(c->size - c->rank) : 0;
    if (MPI_Allreduce(MPI_IN_PLACE, &key, 1, MPI_INT64_T, MPI_MAX, c->comm) != MPI_SUCCESS)
        return scfm_fail(err, SCFM_ERR_IO, "MPI allreduce failed while agreeing on a status");
    if (key == 0) return SCFM_OK;
    int reporter = c->size - (int)key;
    char message[sizeof err->message] = {0};
    int32_t status = (int32_t)local;
    if (c->rank == reporter) snprintf(message, sizeof message, "%s", err->message);
    MPI_Bcast(message, (int)sizeof message, MPI_CHAR, reporter, c->comm);
    MPI_Bcast(&status, 1, MPI_INT32_T, reporter, c->comm);
    if (local != SCFM_OK) return local;
    return scfm_fail(err, (scfm_status)status, "rank %d failed: %s", reporter, message);
}
