/* scfm training: the optimiser (AdamW), the learning-rate schedule and the
 * masked-gene training loop. */
#ifndef SCFM_TRAIN_H
#define SCFM_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Learning rate of optimiser step `step` (0-based): linear warm-up over
 * warmup_steps, then linear or cosine decay to lr * min_lr_ratio at steps. */
double scfm_lr_at(const scfm_train_config *t, int64_t step);

/* Global L2 norm of n gradients. */
double scfm_grad_norm(const float *grads, size_t n);

/* One AdamW step (decoupled weight decay, applied only to tensors with
 * decay set) over the model's contiguous buffers; m and v are the moment
 * buffers (n_params each) and t the 1-based step count. */
void scfm_adamw_step(scfm_model *model, float *m, float *v, int64_t t, double lr,
                     const scfm_train_config *cfg);

/* What the loop reports after every step. */
typedef struct {
    int64_t step, steps;
    double loss;          /* mean cross-entropy over the step's masked tokens */
    double lr, grad_norm;
    int64_t tokens;       /* tokens this step */
    int64_t targets;
    double tokens_per_s;  /* over the whole run so far */
    double elapsed_s, eta_s;
    double compute_s, data_s; /* this step */
    int epoch;
} scfm_train_progress;

typedef void (*scfm_progress_fn)(const scfm_train_progress *p, void *user);

/* Trains from cfg (data, model, optimiser) on one process. Writes the
 * resolved configuration, metrics.jsonl and model weights into
 * checkpoint.dir/checkpoint.run. on_step is called after every step. */
scfm_status scfm_train(const scfm_config *cfg, scfm_progress_fn on_step, void *user,
                       scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
