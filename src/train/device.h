/* The training loop's interface to a backend that keeps the model on a
 * device (train.backend = "cuda", docs/cuda.md). The host scfm_model stays
 * the reference copy of the layout, the configuration and, at checkpoints,
 * of the parameters; between checkpoints the device holds the parameters,
 * their gradients and the AdamW moments, and the loop calls these entry
 * points in the order of the CPU step: zero_grad, forward and backward per
 * micro-batch, reduce, grad_norm, update.
 *
 * The backend lives in its own shared library (libscfm_cuda.so), loaded
 * when a run asks for it, so that CPU runs never load the CUDA libraries.
 * Private to src/train and src/backend. */
#ifndef SCFM_TRAIN_DEVICE_H
#define SCFM_TRAIN_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/data.h"
#include "scfm/dist.h"
#include "scfm/model.h"
#include "scfm/train.h"

typedef struct scfm_device_trainer scfm_device_trainer;

typedef struct {
    /* Collective over comm: picks this rank's device (its local rank modulo
     * the devices of its node), mirrors `host`'s parameter layout there and
     * sets up the gradient sum over ranks (NCCL, or through the host and
     * comm when ranks share a device, which NCCL refuses). */
    scfm_status (*create)(scfm_comm *comm, const scfm_model *host, scfm_device_trainer **out, scfm_error *err);
    void (*destroy)(scfm_device_trainer *t);
    /* Devices this process sees; 0 with the reason in *why. */
    int (*devices)(scfm_error *why);
    /* A short description of the device, for the run's log line. */
    const char *(*describe)(const scfm_device_trainer *t);
    /* Host parameters and AdamW moments (NULL: zero) onto the device, or back. */
    scfm_status (*upload)(scfm_device_trainer *t, const float *params, const float *adam_m, const float *adam_v,
                          scfm_error *err);
    scfm_status (*download)(scfm_device_trainer *t, float *params, float *adam_m, float *adam_v, scfm_error *err);
    scfm_status (*download_grads)(scfm_device_trainer *t, float *grads, scfm_error *err);
    scfm_status (*zero_grad)(scfm_device_trainer *t, scfm_error *err);
    /* Forward of one masked micro-batch. The fused cross-entropy leaves the
     * gradient of loss_scale * (objective.mlm * loss) in place of the
     * logits, so the scale comes now rather than at backward. *loss_sum is
     * objective.mlm times the summed loss, as scfm_model_forward's. */
    scfm_status (*forward)(scfm_device_trainer *t, const scfm_batch *b, uint64_t seed, uint32_t epoch,
                           float loss_scale, double *loss_sum, scfm_error *err);
    /* Adds this micro-batch's gradient; with reduce set (the step's last
     * micro-batch on a multi-rank run) each finished bucket starts its sum
     * over ranks while backward goes on. */
    scfm_status (*backward)(scfm_device_trainer *t, const scfm_batch *b, int reduce, scfm_error *err);
    /* Completes the sum over ranks (starting every bucket when no backward
     * started them on this rank). Collective; a no-op on one rank. */
    scfm_status (*reduce)(scfm_device_trainer *t, scfm_error *err);
    scfm_status (*grad_norm)(scfm_device_trainer *t, double *norm, scfm_error *err);
    /* Scales the gradient by clip_scale (1: none), then one AdamW step of
     * scfm_adamw_update over the parameters from `frozen` on. */
    scfm_status (*update)(scfm_device_trainer *t, float clip_scale, int64_t step, double lr,
                          const scfm_train_config *tc, size_t frozen, scfm_error *err);
} scfm_device_ops;

/* The entry point that libscfm_cuda.so exports. */
typedef const scfm_device_ops *(*scfm_device_ops_fn)(void);
#define SCFM_DEVICE_OPS_SYMBOL "scfm_cuda_device_ops"
const scfm_device_ops *scfm_cuda_device_ops(void);

/* Loads the CUDA backend: the library SCFM_CUDA_LIBRARY names, else
 * libscfm_cuda.so beside libscfm, then the loader's search path; an error
 * says why it cannot. */
scfm_status scfm_device_ops_load(const scfm_device_ops **ops, scfm_error *err);

#endif
