/* The whole model's gradients against central differences, shared by
 * test_model.c, test_contrastive.c and test_fc.c. Header-only like
 * harness.h: each unit test is built from its one test_*.c file. */
#ifndef SCFM_TEST_GRADCHECK_H
#define SCFM_TEST_GRADCHECK_H

#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>

#include "scfm/data.h"
#include "scfm/model.h"

/* A model from cfg with weights from seed 3, obj as its objective when not
 * NULL, and every 1-D tensor (biases, norms, dispersions) moved off its
 * initial value by bias * sin(1 + i + k), so that their gradients are not
 * checked at a special point. */
static inline scfm_model *scfm_gradcheck_model(const scfm_model_config *cfg, const scfm_objective_config *obj,
                                               float bias) {
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(cfg, &m, &err), SCFM_OK);
    scfm_model_init_weights(m, 3);
    if (obj) scfm_model_set_objective(m, obj);
    float *p = scfm_model_params(m);
    for (int k = 0; k < scfm_model_num_tensors(m); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, k);
        if (ti->ndim == 1)
            for (size_t i = 0; i < ti->size; i++) p[ti->offset + i] += bias * (float)sin(1.0 + i + k);
    }
    return m;
}

/* What the three tests' loss callbacks need: the model, its batch and, for
 * the contrastive ones, a buffer for dloss/dz (NULL where unused). */
typedef struct {
    scfm_model *m;
    const scfm_batch *b;
    float *dz;
} scfm_gradcheck_ctx;

typedef struct {
    int checked; /* entries compared */
    int bad;     /* entries outside the tolerance */
} scfm_gradcheck_result;

/* Central differences (h = 1e-2, fp32 parameters) of loss(ctx) at about
 * `samples` evenly strided entries of every tensor of m (every entry of a
 * tensor of at most `samples`), against the analytic gradient grad (indexed
 * like scfm_model_params). fp32 forward passes limit the precision, so an
 * entry is bad when |numeric - analytic| > tol * gmax, gmax being the
 * tensor's largest |gradient| and at least gmin. The first five bad
 * entries are printed to stderr. */
static inline scfm_gradcheck_result scfm_gradcheck(scfm_model *m, double (*loss)(void *ctx), void *ctx,
                                                   const float *grad, int samples, double gmin, double tol) {
    scfm_gradcheck_result r = {0, 0};
    float *p = scfm_model_params(m);
    for (int k = 0; k < scfm_model_num_tensors(m); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, k);
        double gmax = gmin;
        for (size_t i = 0; i < ti->size; i++) gmax = fmax(gmax, fabs(grad[ti->offset + i]));
        size_t stride = ti->size > (size_t)samples ? ti->size / (size_t)samples : 1;
        for (size_t i = 0; i < ti->size; i += stride) {
            size_t at = ti->offset + i;
            float saved = p[at];
            const float h = 1e-2f;
            p[at] = saved + h;
            double up = loss(ctx);
            p[at] = saved - h;
            double down = loss(ctx);
            p[at] = saved;
            double numeric = (up - down) / (2.0 * h);
            r.checked++;
            if (fabs(numeric - grad[at]) > tol * gmax && r.bad++ < 5)
                fprintf(stderr, "\n  %s[%zu]: analytic %g numeric %g", ti->name, i, grad[at], numeric);
        }
    }
    return r;
}

#endif
