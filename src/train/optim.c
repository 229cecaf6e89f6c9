/* AdamW and the learning-rate schedule. */
#include <math.h>
#include <omp.h>

#include "scfm/train.h"

double scfm_lr_at(const scfm_train_config *t, int64_t step) {
    if (step < t->warmup_steps) return t->lr * (double)(step + 1) / (double)t->warmup_steps;
    if (t->schedule == SCFM_SCHED_CONSTANT) return t->lr;
    int64_t decay_steps = t->steps - t->warmup_steps;
    double progress = decay_steps > 0 ? (double)(step - t->warmup_steps) / (double)decay_steps : 1.0;
    if (progress > 1.0) progress = 1.0;
    double shape = t->schedule == SCFM_SCHED_COSINE ? 0.5 * (1.0 + cos(M_PI * progress)) : 1.0 - progress;
    return t->lr * (t->min_lr_ratio + (1.0 - t->min_lr_ratio) * shape);
}

double scfm_grad_norm(const float *grads, size_t n) {
    /* Each thread sums a fixed slice; the slices are added in order, so the
     * norm does not depend on scheduling (a resumed run repeats exactly). */
    enum { MAX_SLICES = 256 };
    double partial[MAX_SLICES] = {0};
    int slices = 1;
#pragma omp parallel
    {
        int nth = omp_get_num_threads() < MAX_SLICES ? omp_get_num_threads() : MAX_SLICES;
        int id = omp_get_thread_num();
#pragma omp single
        slices = nth;
        if (id < nth) {
            size_t lo = n * (size_t)id / (size_t)nth, hi = n * (size_t)(id + 1) / (size_t)nth;
            double sum = 0.0;
            for (size_t i = lo; i < hi; i++) sum += (double)grads[i] * grads[i];
            partial[id] = sum;
        }
    }
    double total = 0.0;
    for (int i = 0; i < slices; i++) total += partial[i];
    return sqrt(total);
}

void scfm_adamw_update(scfm_model *model, const float *g, float *m, float *v, size_t lo, size_t hi, int64_t t,
                       double lr, const scfm_train_config *cfg) {
    float *p = scfm_model_params(model);
    const float b1 = (float)cfg->beta1, b2 = (float)cfg->beta2, eps = (float)cfg->adam_eps;
    const float step_size = (float)(lr / (1.0 - pow(cfg->beta1, (double)t)));
    const float v_correction = (float)(1.0 / sqrt(1.0 - pow(cfg->beta2, (double)t)));
    for (int k = 0; k < scfm_model_num_tensors(model); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(model, k);
        const float shrink = ti->decay ? (float)(1.0 - lr * cfg->weight_decay) : 1.0f;
        const size_t a = ti->offset > lo ? ti->offset : lo;
        const size_t b = ti->offset + ti->size < hi ? ti->offset + ti->size : hi;
#pragma omp parallel for schedule(static)
        for (size_t i = a; i < b; i++) {
            const size_t j = i - lo;
            m[j] = b1 * m[j] + (1.0f - b1) * g[j];
            v[j] = b2 * v[j] + (1.0f - b2) * g[j] * g[j];
            p[i] = p[i] * shrink - step_size * m[j] / (sqrtf(v[j]) * v_correction + eps);
        }
    }
}

void scfm_adamw_step(scfm_model *model, float *m, float *v, int64_t t, double lr,
                     const scfm_train_config *cfg) {
    scfm_adamw_update(model, scfm_model_grads(model), m, v, 0, scfm_model_num_params(model), t, lr, cfg);
}
