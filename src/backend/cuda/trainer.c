/* The training loop's device backend (src/train/device.h) on CUDA: the
 * model of model.c, its AdamW moments on the device, and the gradient sum
 * over ranks, by NCCL when every rank has a device of its own, otherwise
 * (ranks sharing a GPU, which NCCL refuses) through the host and the MPI
 * communicator. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cuda/cuda_backend.h"
#include "train/device.h"

struct scfm_device_trainer {
    scfm_comm *comm;
    const scfm_model *host;
    scfm_cuda_ctx *ctx;
    scfm_cuda_model *model;
    float *d_m, *d_v;           /* AdamW moments [n_params] */
    scfm_cuda_nccl *nccl;       /* NULL: sums through the host */
    float *h_grads;             /* host-path staging [n_params] */
    int started;                /* buckets whose sum this step's backward started */
    char description[400];
};

/* The rank's index among the ranks of its node, from the launcher. */
static int local_rank(int rank) {
    static const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v);
    }
    return rank;
}

/* A node and device, to find ranks that share a GPU. */
typedef struct {
    char node[64];
    int device;
} placement;

/* Whether any two ranks use the same device of the same node: each rank
 * looks for its own twin, then the ranks agree. Collective. */
static scfm_status ranks_share_a_device(scfm_comm *comm, int device, int *shared, scfm_error *err) {
    const int world = scfm_comm_size(comm), rank = scfm_comm_rank(comm);
    placement mine = {.device = device};
    gethostname(mine.node, sizeof mine.node - 1);
    placement *all = malloc(sizeof *all * (size_t)world);
    scfm_status st = all ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if ((st = scfm_comm_agree(comm, st, err)) == SCFM_OK) st = scfm_comm_allgather(comm, &mine, sizeof mine, all, err);
    int64_t twin = 0;
    for (int r = 0; st == SCFM_OK && r < world; r++)
        twin |= r != rank && all[r].device == device && strcmp(all[r].node, mine.node) == 0;
    free(all);
    if (st == SCFM_OK) st = scfm_comm_max_i64(comm, &twin, 1, err);
    *shared = twin != 0;
    return st;
}

static void trainer_destroy(scfm_device_trainer *t) {
    if (!t) return;
    scfm_cuda_nccl_free(t->nccl);
    scfm_cuda_model_free(t->model);
    scfm_cuda_free(t->d_m);
    scfm_cuda_free(t->d_v);
    scfm_cuda_ctx_free(t->ctx);
    free(t->h_grads);
    free(t);
}

static scfm_status trainer_create(scfm_comm *comm, const scfm_model *host, scfm_device_trainer **out,
                                  scfm_error *err) {
    *out = NULL;
    const int rank = scfm_comm_rank(comm), world = scfm_comm_size(comm);
    scfm_device_trainer *t = calloc(1, sizeof *t);
    scfm_status st = t ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    int devices = 0;
    if (st == SCFM_OK && (devices = scfm_cuda_device_count(err)) == 0) st = SCFM_ERR_CONFIG;
    const int device = devices > 0 ? local_rank(rank) % devices : 0;
    if (st == SCFM_OK) {
        t->comm = comm;
        t->host = host;
        st = scfm_cuda_ctx_create(device, &t->ctx, err);
    }
    if (st == SCFM_OK) st = scfm_cuda_model_create(t->ctx, host, &t->model, err);
    const size_t n = scfm_model_num_params(host);
    if (st == SCFM_OK) st = scfm_cuda_alloc((void **)&t->d_m, sizeof(float) * n, err);
    if (st == SCFM_OK) st = scfm_cuda_alloc((void **)&t->d_v, sizeof(float) * n, err);
    if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) {
        trainer_destroy(t);
        return st;
    }
    int shared = 0;
    if (world > 1) {
        st = ranks_share_a_device(comm, device, &shared, err);
        if (st == SCFM_OK && !shared) st = scfm_cuda_nccl_init(comm, device, &t->nccl, err);
        if (st == SCFM_OK && shared && !(t->h_grads = malloc(sizeof(float) * n)))
            st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the gradient sum");
        if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) {
            trainer_destroy(t);
            return st;
        }
    }
    struct cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) snprintf(prop.name, sizeof prop.name, "?");
    snprintf(t->description, sizeof t->description, "CUDA device %d (%.120s, sm_%d%d)%s", device, prop.name, prop.major,
             prop.minor,
             world == 1 ? "" : shared ? ", gradients summed through the host (ranks share a GPU)"
                                      : ", gradients summed over NCCL");
    *out = t;
    return SCFM_OK;
}

static const char *trainer_describe(const scfm_device_trainer *t) { return t->description; }

static scfm_status copy_in(void *d, const float *h, size_t n, scfm_error *err) {
    if (h) return scfm_cuda_upload(d, h, sizeof(float) * n, err);
    return scfm_cuda_check(cudaMemset(d, 0, sizeof(float) * n), "cudaMemset", err);
}

static scfm_status trainer_upload(scfm_device_trainer *t, const float *params, const float *adam_m,
                                  const float *adam_v, scfm_error *err) {
    const size_t n = scfm_model_num_params(t->host);
    scfm_status st = scfm_cuda_sync(t->ctx, err);
    if (st == SCFM_OK) st = copy_in(scfm_cuda_model_params(t->model), params, n, err);
    if (st == SCFM_OK) st = copy_in(t->d_m, adam_m, n, err);
    if (st == SCFM_OK) st = copy_in(t->d_v, adam_v, n, err);
    if (st == SCFM_OK) st = scfm_cuda_model_refresh_bf16(t->model, err);
    return st;
}

static scfm_status trainer_download(scfm_device_trainer *t, float *params, float *adam_m, float *adam_v,
                                    scfm_error *err) {
    const size_t bytes = sizeof(float) * scfm_model_num_params(t->host);
    scfm_status st = scfm_cuda_sync(t->ctx, err);
    if (st == SCFM_OK && params) st = scfm_cuda_download(params, scfm_cuda_model_params(t->model), bytes, err);
    if (st == SCFM_OK && adam_m) st = scfm_cuda_download(adam_m, t->d_m, bytes, err);
    if (st == SCFM_OK && adam_v) st = scfm_cuda_download(adam_v, t->d_v, bytes, err);
    return st;
}

static scfm_status trainer_download_grads(scfm_device_trainer *t, float *grads, scfm_error *err) {
    scfm_status st = scfm_cuda_sync(t->ctx, err);
    if (st == SCFM_OK)
        st = scfm_cuda_download(grads, scfm_cuda_model_grads(t->model), sizeof(float) * scfm_model_num_params(t->host), err);
    return st;
}

static scfm_status trainer_zero_grad(scfm_device_trainer *t, scfm_error *err) {
    t->started = 0;
    return scfm_cuda_check(cudaMemsetAsync(scfm_cuda_model_grads(t->model), 0, sizeof(float) * scfm_model_num_params(t->host),
                                           t->ctx->stream),
                           "zeroing the gradients", err);
}

static scfm_status trainer_forward(scfm_device_trainer *t, const scfm_batch *b, uint64_t seed, uint32_t epoch,
                                   float loss_scale, double *loss_sum, scfm_error *err) {
    return scfm_cuda_model_forward(t->model, b, 1, seed, epoch, loss_scale, loss_sum, err);
}

static scfm_status start_bucket(size_t offset, size_t size, void *user, scfm_error *err) {
    scfm_device_trainer *t = user;
    t->started++;
    return scfm_cuda_nccl_isum_f32(t->nccl, scfm_cuda_model_grads(t->model) + offset, size, t->ctx->stream, err);
}

static scfm_status trainer_backward(scfm_device_trainer *t, const scfm_batch *b, int reduce, scfm_error *err) {
    (void)b; /* the batch of the last forward, whose activations the model kept */
    return scfm_cuda_model_backward(t->model, reduce && t->nccl ? start_bucket : NULL, t, err);
}

static scfm_status trainer_reduce(scfm_device_trainer *t, scfm_error *err) {
    const size_t n = scfm_model_num_params(t->host);
    float *grads = scfm_cuda_model_grads(t->model);
    scfm_status st = SCFM_OK;
    if (scfm_comm_size(t->comm) == 1) return SCFM_OK;
    if (t->nccl) {
        /* the same buckets in the same order on every rank, started here
         * where this rank's backward did not */
        const int n_buckets = scfm_cuda_model_buckets(t->model, NULL, NULL);
        size_t offset[n_buckets], size[n_buckets];
        scfm_cuda_model_buckets(t->model, offset, size);
        for (int i = t->started; st == SCFM_OK && i < n_buckets; i++) st = start_bucket(offset[i], size[i], t, err);
        if (st == SCFM_OK) st = scfm_cuda_nccl_wait(t->nccl, t->ctx->stream, err);
        t->started = 0;
        return st;
    }
    st = scfm_cuda_sync(t->ctx, err);
    if (st == SCFM_OK) st = scfm_cuda_download(t->h_grads, grads, sizeof(float) * n, err);
    /* every rank takes part in the sum even when its own part failed */
    st = scfm_comm_agree(t->comm, st, err);
    if (st == SCFM_OK) st = scfm_comm_sum_f32(t->comm, t->h_grads, n, err);
    if (st == SCFM_OK) st = scfm_cuda_upload(grads, t->h_grads, sizeof(float) * n, err);
    return st;
}

static scfm_status trainer_grad_norm(scfm_device_trainer *t, double *norm, scfm_error *err) {
    float result = 0.0f;
    scfm_status st = scfm_cuda_check_blas(cublasSnrm2(t->ctx->blas, (int)scfm_model_num_params(t->host),
                                                      scfm_cuda_model_grads(t->model), 1, &result),
                                          "gradient norm", err);
    *norm = result;
    return st;
}

static scfm_status trainer_update(scfm_device_trainer *t, float clip_scale, int64_t step, double lr,
                                  const scfm_train_config *tc, size_t frozen, scfm_error *err) {
    const scfm_model *h = t->host;
    float *p = scfm_cuda_model_params(t->model), *g = scfm_cuda_model_grads(t->model);
    scfm_status st = SCFM_OK;
    if (clip_scale != 1.0f)
        st = scfm_cuda_check_blas(cublasSscal(t->ctx->blas, (int)scfm_model_num_params(h), &clip_scale, g, 1), "gradient clip",
                                  err);
    /* the arithmetic of scfm_adamw_update, tensor by tensor for the decay */
    scfm_cuda_adamw_args a = {(float)tc->beta1, (float)tc->beta2, (float)tc->adam_eps, 1.0f,
                              (float)(lr / (1.0 - pow(tc->beta1, (double)step))),
                              (float)(1.0 / sqrt(1.0 - pow(tc->beta2, (double)step)))};
    for (int k = 0; st == SCFM_OK && k < scfm_model_num_tensors(h); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(h, k);
        const size_t lo = ti->offset > frozen ? ti->offset : frozen, hi = ti->offset + ti->size;
        if (lo >= hi) continue;
        a.shrink = ti->decay ? (float)(1.0 - lr * tc->weight_decay) : 1.0f;
        st = scfm_cuda_adamw(t->ctx, p + lo, g + lo, t->d_m + lo, t->d_v + lo, hi - lo, &a, err);
    }
    if (st == SCFM_OK) st = scfm_cuda_model_refresh_bf16(t->model, err);
    return st;
}

static const scfm_device_ops cuda_ops = {
    .create = trainer_create,
    .destroy = trainer_destroy,
    .devices = scfm_cuda_device_count,
    .describe = trainer_describe,
    .upload = trainer_upload,
    .download = trainer_download,
    .download_grads = trainer_download_grads,
    .zero_grad = trainer_zero_grad,
    .forward = trainer_forward,
    .backward = trainer_backward,
    .reduce = trainer_reduce,
    .grad_norm = trainer_grad_norm,
    .update = trainer_update,
};

const scfm_device_ops *scfm_cuda_device_ops(void) { return &cuda_ops; }
