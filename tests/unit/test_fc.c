/* The count encoders (src/model/fc.c, src/backend/cpu/counts.c): every loss
 * kernel and the whole model's gradients against finite differences, the
 * save/load round trip, the condition one-hot, and randomness keyed by cell
 * id. The likelihoods against scipy and the network against PyTorch are in
 * test_fc_reference.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "gradcheck.h"
#include "harness.h"
#include "scfm/data.h"
#include "scfm/io.h"
#include "scfm/model.h"

#define GENES 9

static scfm_model_config fc_config(scfm_encoder enc, scfm_likelihood lik, int variational, int conditions,
                                   scfm_condition_into into) {
    scfm_model_config c = {0};
    c.encoder = enc;
    c.input = SCFM_COUNTS_LOG1P;
    c.genes = GENES;
    c.latent = 3;
    c.fc_hidden = 6;
    c.fc_layers = 2;
    c.likelihood = lik;
    c.variational = variational;
    c.num_conditions = conditions;
    c.condition_into = into;
    c.activation = SCFM_ACT_GELU; /* ReLU kinks make finite differences unreliable */
    c.dropout = 0.2;
    c.init_std = 0.02;
    return c;
}

/* Four cells (ids 5, 900, 31, 77) of 4 to 7 gene columns with counts 0..11
 * (a zero among them), libraries 1.5x their sum; conditions 1, -1, 0, 1. */
static void make_batch(scfm_batch *b) {
    static const int64_t ids[4] = {5, 900, 31, 77};
    static const int32_t conditions[4] = {1, -1, 0, 1};
    scfm_batch_init(b);
    scfm_error err = {0};
    for (int c = 0; c < 4; c++) {
        int32_t tokens[GENES];
        float counts[GENES], sum = 0.0f;
        const int len = 4 + c;
        for (int t = 0; t < len; t++) {
            tokens[t] = (c * 2 + t * 4) % GENES;
            counts[t] = (float)((c * 5 + t * 7) % 12);
            sum += counts[t];
        }
        CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(b, ids[c], tokens, len, &err), SCFM_OK);
        scfm_batch_set_counts(b, counts, 1.5f * sum + 1.0f);
        b->conditions[c] = conditions[c];
    }
}

/* non-zero biases and dispersions */
static scfm_model *new_model(const scfm_model_config *cfg, const scfm_objective_config *obj) {
    return scfm_gradcheck_model(cfg, obj, 0.3f);
}

/* The objective the gradient checks use: weights away from 1, a KL warm-up
 * halfway (set_step 2 of 4). */
static scfm_objective_config objective(void) {
    scfm_objective_config o = {0};
    o.reconstruction = 0.8;
    o.kl = 1.3;
    o.kl_warmup_steps = 4;
    return o;
}

/* With a projection head: the loss adds sum(z . r) for fixed r, so its
 * gradient dz = r goes through scfm_model_contrastive_grad. */
static float contrastive_r(size_t i) { return (float)cos(0.7 * (double)i + 0.2); }

static double model_loss(scfm_model *m, const scfm_batch *b, float *dz) {
    double loss = 0.0;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_model_forward(m, b, 1, 7, 1, &loss, &err), SCFM_OK);
    const int P = scfm_model_get_config(m)->projection_dim;
    if (P > 0) {
        const float *z;
        CU_ASSERT_EQUAL(scfm_model_contrastive_forward(m, b, &z, &err), SCFM_OK);
        for (size_t i = 0; i < (size_t)b->n_cells * P; i++) {
            loss += (double)z[i] * contrastive_r(i);
            if (dz) dz[i] = contrastive_r(i) / (float)b->n_cells;
        }
    }
    return loss / scfm_model_loss_terms(m, b);
}

static double forward_loss(void *ctx) {
    const scfm_gradcheck_ctx *c = ctx;
    return model_loss(c->m, c->b, NULL);
}

/* Central differences over a sample of every tensor, relative to the
 * tensor's largest gradient (fp32 forward passes), for cfg under obj. */
static void check_gradients(scfm_model_config cfg, scfm_objective_config obj) {
    scfm_model *m = new_model(&cfg, &obj);
    scfm_model_set_step(m, 2);
    scfm_batch b;
    make_batch(&b);
    float dz[4 * 64];
    model_loss(m, &b, dz);
    scfm_model_zero_grad(m);
    if (cfg.projection_dim > 0) scfm_model_contrastive_grad(m, dz);
    scfm_model_backward(m, &b, 1.0f / (float)scfm_model_loss_terms(m, &b));
    scfm_gradcheck_ctx ctx = {m, &b, NULL};
    scfm_gradcheck_result r = scfm_gradcheck(m, forward_loss, &ctx, scfm_model_grads(m), 30, 1e-3, 2e-2);
    CU_ASSERT(r.checked > 50);
    CU_ASSERT_EQUAL(r.bad, 0);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

/* The count models under objective(), each with what it changes of fc_config. */
static void test_gradients_nb_vae(void) {
    check_gradients(fc_config(SCFM_ENCODER_MLP, SCFM_LIK_NB, 1, 2, SCFM_COND_DECODER), objective());
}

static void test_gradients_zinb_vae(void) {
    check_gradients(fc_config(SCFM_ENCODER_MLP, SCFM_LIK_ZINB, 1, 2, SCFM_COND_BOTH), objective());
}

static void test_gradients_poisson_ae(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_POISSON, 0, 3, SCFM_COND_ENCODER);
    cfg.input = SCFM_COUNTS_RAW;
    cfg.fc_layers = 1;
    check_gradients(cfg, objective());
}

static void test_gradients_mse(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_MSE, 1, 0, SCFM_COND_DECODER);
    cfg.fc_layers = 3;
    check_gradients(cfg, objective());
}

/* LDVAE-like: linear encoder and decoder, NB. */
static void test_gradients_linear(void) {
    check_gradients(fc_config(SCFM_ENCODER_LINEAR, SCFM_LIK_NB, 1, 2, SCFM_COND_BOTH), objective());
}

/* scMAE: masked squared error only. */
static void test_gradients_mae(void) {
    scfm_objective_config o = objective();
    o.mae_mask_prob = 0.4;
    check_gradients(fc_config(SCFM_ENCODER_MLP, SCFM_LIK_MSE, 0, 0, SCFM_COND_DECODER), o);
}

/* CLEAR: the projection head on the latent mean, augmented inputs, and the
 * reconstruction alongside. */
static void test_gradients_contrastive(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_NB, 1, 2, SCFM_COND_DECODER);
    cfg.projection_dim = 5;
    cfg.temperature = 0.2;
    scfm_objective_config o = objective();
    o.contrastive = 1.0;
    o.aug_dropout = 0.2;
    o.aug_noise = 0.3;
    o.aug_swap = 0.2;
    check_gradients(cfg, o);
}

/* ---- the loss kernels alone ---- */

/* Checks d(sum_c scale loss[c])/d(values[i]) against grad[i] for each of n
 * values, with loss from fn over the current values. */
typedef void (*loss_fn)(double *loss, void *ctx);
static void check_kernel(const char *what, loss_fn fn, void *ctx, float *values, const float *grad, int n,
                         int cells, float scale, double tol) {
    double loss[16];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const float saved = values[i], h = 1e-3f * fmaxf(1.0f, fabsf(saved));
        double up = 0.0, down = 0.0;
        values[i] = saved + h;
        fn(loss, ctx);
        for (int c = 0; c < cells; c++) up += scale * loss[c];
        values[i] = saved - h;
        fn(loss, ctx);
        for (int c = 0; c < cells; c++) down += scale * loss[c];
        values[i] = saved;
        const double numeric = (up - down) / (2.0 * h);
        if (fabs(numeric - grad[i]) > tol * fmax(1.0, fabs(numeric)) && bad++ < 5)
            fprintf(stderr, "\n  %s[%d]: analytic %g numeric %g", what, i, grad[i], numeric);
    }
    CU_ASSERT_EQUAL(bad, 0);
}

#define KC 3 /* cells */
#define KG 5 /* genes */
typedef struct {
    float x[KC * KG], mu[KC * KG], log_theta[KG], pi[KC * KG], logits[KC * KG], library[KC];
    float pred[KC * KG], target[KC * KG], mask[KC * KG], lv[KC * KG];
    int zi;
} kernel_ctx;

static void kernel_values(kernel_ctx *k) {
    for (int i = 0; i < KC * KG; i++) {
        k->x[i] = (float)((i * 7) % 9 == 0 ? 0 : (i * 5) % 13);
        k->mu[i] = 0.5f + (float)((i * 3) % 7);
        k->pi[i] = (float)sin(1.3 * i);
        k->logits[i] = (float)cos(0.9 * i);
        k->pred[i] = (float)sin(0.4 * i);
        k->target[i] = (float)cos(0.3 * i);
        k->mask[i] = (float)(i % 3 == 0);
        k->lv[i] = 0.5f * (float)sin(2.1 * i);
    }
    for (int j = 0; j < KG; j++) k->log_theta[j] = (float)(0.4 * j - 0.7);
    for (int c = 0; c < KC; c++) k->library[c] = 20.0f + 7.0f * c;
}

static void nb_loss(double *loss, void *ctx) {
    kernel_ctx *k = ctx;
    double scratch[SCFM_NB_SCRATCH(KG)];
    scfm_nb_forward(loss, NULL, NULL, NULL, k->x, k->mu, k->log_theta, k->zi ? k->pi : NULL, KC, KG, scratch);
}

static void check_nb(int zi) {
    kernel_ctx k;
    kernel_values(&k);
    k.zi = zi;
    float dmu[KC * KG], dpi[KC * KG], terms[KC * KG], dlt[KG] = {0};
    double loss[KC], scratch[SCFM_NB_SCRATCH(KG)];
    const float scale = 0.7f;
    scfm_nb_forward(loss, dmu, terms, zi ? dpi : NULL, k.x, k.mu, k.log_theta, zi ? k.pi : NULL, KC, KG, scratch);
    scfm_nb_backward(dmu, zi ? dpi : NULL, dlt, terms, KC, KG, scale);
    check_kernel("dmu", nb_loss, &k, k.mu, dmu, KC * KG, KC, scale, 1e-3);
    check_kernel("dlog_theta", nb_loss, &k, k.log_theta, dlt, KG, KC, scale, 1e-3);
    if (zi) check_kernel("dpi", nb_loss, &k, k.pi, dpi, KC * KG, KC, scale, 1e-3);
}

static void test_kernel_nb(void) { check_nb(0); }
static void test_kernel_zinb(void) { check_nb(1); }

static void poisson_loss(double *loss, void *ctx) {
    kernel_ctx *k = ctx;
    scfm_poisson_forward(loss, k->x, k->mu, KC, KG);
}

static void test_kernel_poisson(void) {
    kernel_ctx k;
    kernel_values(&k);
    float dmu[KC * KG];
    scfm_poisson_backward(dmu, k.x, k.mu, KC, KG, 1.3f);
    check_kernel("dmu", poisson_loss, &k, k.mu, dmu, KC * KG, KC, 1.3f, 1e-3);
}

/* The count mean's softmax with a loss of sum(mu * w): dlogits. */
static void mean_loss(double *loss, void *ctx) {
    kernel_ctx *k = ctx;
    float mu[KC * KG];
    scfm_count_mean_forward(mu, k->logits, k->library, KC, KG);
    for (int c = 0; c < KC; c++) {
        loss[c] = 0.0;
        for (int j = 0; j < KG; j++) loss[c] += (double)mu[c * KG + j] * k->pred[c * KG + j];
    }
}

static void test_kernel_count_mean(void) {
    kernel_ctx k;
    kernel_values(&k);
    float mu[KC * KG], dlogits[KC * KG];
    scfm_count_mean_forward(mu, k.logits, k.library, KC, KG);
    for (int c = 0; c < KC; c++) {
        double sum = 0.0;
        for (int j = 0; j < KG; j++) sum += mu[c * KG + j];
        CU_ASSERT_DOUBLE_EQUAL(sum, k.library[c], 1e-4 * k.library[c]);
    }
    scfm_count_mean_backward(dlogits, k.pred, mu, k.library, KC, KG);
    /* a sum of ~35 in fp32 differenced over 2e-3: noise near 1e-3 */
    check_kernel("dlogits", mean_loss, &k, k.logits, dlogits, KC * KG, KC, 1.0f, 5e-3);
}

static void sqerr_loss(double *loss, void *ctx) {
    kernel_ctx *k = ctx;
    scfm_sqerr_forward(loss, k->pred, k->target, k->zi ? k->mask : NULL, KC, KG);
}

/* Plain and masked (scMAE): a masked-out gene adds nothing. */
static void test_kernel_sqerr(void) {
    for (int masked = 0; masked < 2; masked++) {
        kernel_ctx k;
        kernel_values(&k);
        k.zi = masked;
        float d[KC * KG];
        scfm_sqerr_backward(d, k.pred, k.target, masked ? k.mask : NULL, KC, KG, 0.6f);
        check_kernel("dpred", sqerr_loss, &k, k.pred, d, KC * KG, KC, 0.6f, 1e-3);
        for (int i = 0; masked && i < KC * KG; i++)
            if (k.mask[i] == 0.0f) CU_ASSERT_EQUAL(d[i], 0.0f);
    }
}

static void kl_loss(double *loss, void *ctx) {
    kernel_ctx *k = ctx;
    scfm_kl_normal_forward(loss, k->pred, k->lv, KC, KG);
}

static void test_kernel_kl(void) {
    kernel_ctx k;
    kernel_values(&k);
    float dmu[KC * KG] = {0}, dlv[KC * KG] = {0};
    scfm_kl_normal_backward(dmu, dlv, k.pred, k.lv, KC, KG, 0.9f);
    check_kernel("dmu", kl_loss, &k, k.pred, dmu, KC * KG, KC, 0.9f, 1e-3);
    check_kernel("dlogvar", kl_loss, &k, k.lv, dlv, KC * KG, KC, 0.9f, 1e-3);
    /* the prior itself: KL 0 */
    double loss[KC];
    float zero[KC * KG] = {0};
    scfm_kl_normal_forward(loss, zero, zero, KC, KG);
    CU_ASSERT_DOUBLE_EQUAL(loss[0], 0.0, 1e-12);
}

/* ---- model behaviour ---- */

static void latent_of(scfm_model *m, const scfm_batch *b, float *out) {
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_encode(m, b, &err), SCFM_OK);
    scfm_model_pool(m, b, 0, SCFM_POOL_MEAN, out);
}

static void test_save_load(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_ZINB, 1, 2, SCFM_COND_BOTH);
    scfm_model *a = new_model(&cfg, NULL), *b = NULL;
    scfm_error err = {0};
    const char *path = scfm_test_tmp_path(SCFM_TEST_BINARY_DIR "/fc_tmp", "fc.safetensors");
    CU_ASSERT_EQUAL_FATAL(scfm_model_save(a, path, &err), SCFM_OK);
    scfm_safetensors *st = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &st, &err), SCFM_OK);
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(st, "encoder"), "mlp");
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(st, "genes"), "9");
    CU_ASSERT_STRING_EQUAL(scfm_safetensors_meta(st, "likelihood"), "zinb");
    CU_ASSERT_PTR_NULL(scfm_safetensors_meta(st, "vocab_size"));
    scfm_safetensors_close(st);
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &b, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_model_load(b, path, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_model_num_params(a), scfm_model_param_count(&cfg));
    CU_ASSERT_EQUAL(memcmp(scfm_model_params(a), scfm_model_params(b), sizeof(float) * scfm_model_num_params(a)), 0);
    CU_ASSERT_PTR_NOT_NULL(scfm_model_find_tensor(b, "encoder.fc.1.weight"));
    CU_ASSERT_PTR_NOT_NULL(scfm_model_find_tensor(b, "decoder.dropout.bias"));
    const scfm_tensor_info *w = scfm_model_find_tensor(b, "encoder.fc.0.weight");
    CU_ASSERT_EQUAL(w->shape[0], 6);
    CU_ASSERT_EQUAL(w->shape[1], GENES + 2); /* the one-hot's columns */
    CU_ASSERT_EQUAL(scfm_model_find_tensor(b, "px_r")->shape[0], GENES);
    scfm_batch batch;
    make_batch(&batch);
    double la, lb;
    CU_ASSERT_EQUAL(scfm_model_forward(a, &batch, 1, 3, 0, &la, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_model_forward(b, &batch, 1, 3, 0, &lb, &err), SCFM_OK);
    CU_ASSERT_EQUAL(la, lb);
    /* another shape is refused by name */
    scfm_model_config other = cfg;
    other.likelihood = SCFM_LIK_NB;
    scfm_model *c = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&other, &c, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_model_load(c, path, &err), SCFM_ERR_FORMAT);
    scfm_model_free(c);
    scfm_batch_free(&batch);
    scfm_model_free(a);
    scfm_model_free(b);
}

/* Into the encoder, the condition moves the latent; -1 is the zero one-hot
 * (the same latent as any condition once the one-hot's weights are 0); into
 * the decoder only, it leaves the latent and changes the loss. */
static void test_conditions(void) {
    scfm_error err = {0};
    scfm_batch b;
    make_batch(&b);
    float base[4 * 3], moved[4 * 3];
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_NB, 1, 2, SCFM_COND_ENCODER);
    scfm_model *m = new_model(&cfg, NULL);
    latent_of(m, &b, base);
    b.conditions[0] = -1;
    latent_of(m, &b, moved);
    CU_ASSERT_NOT_EQUAL(memcmp(base, moved, sizeof(float) * 3), 0);
    CU_ASSERT_EQUAL(memcmp(base + 3, moved + 3, sizeof(float) * 9), 0);
    const scfm_tensor_info *w = scfm_model_find_tensor(m, "encoder.fc.0.weight");
    float *p = scfm_model_params(m) + w->offset;
    for (int r = 0; r < w->shape[0]; r++)
        for (int j = GENES; j < GENES + 2; j++) p[r * w->shape[1] + j] = 0.0f;
    latent_of(m, &b, base);
    b.conditions[0] = 1;
    latent_of(m, &b, moved);
    CU_ASSERT_EQUAL(memcmp(base, moved, sizeof base), 0);
    scfm_model_free(m);

    cfg.condition_into = SCFM_COND_DECODER;
    m = new_model(&cfg, NULL);
    double l0, l1;
    latent_of(m, &b, base);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &l0, &err), SCFM_OK);
    b.conditions[0] = 0;
    latent_of(m, &b, moved);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &l1, &err), SCFM_OK);
    CU_ASSERT_EQUAL(memcmp(base, moved, sizeof base), 0);
    CU_ASSERT(l0 != l1);
    b.conditions[0] = 2;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &l1, &err), SCFM_ERR_ARG);
    scfm_model_free(m);
    scfm_batch_free(&b);
}

/* Dropout, latent noise, augmentations and the scMAE mask depend on (seed,
 * epoch, cell id) only: a cell alone gets what it got inside a batch, two
 * copies of a cell under the ids of a view pair get different ones, and
 * training forwards differ from evaluation. */
static void test_keyed_randomness(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_MLP, SCFM_LIK_MSE, 1, 2, SCFM_COND_DECODER);
    cfg.projection_dim = 4;
    cfg.temperature = 0.1;
    scfm_objective_config o = objective();
    o.contrastive = 1.0;
    o.aug_dropout = 0.3;
    o.aug_noise = 0.5;
    o.aug_swap = 0.3;
    o.mae_mask_prob = 0.3;
    scfm_model *m = new_model(&cfg, &o);
    scfm_error err = {0};
    scfm_batch all, one, pair;
    make_batch(&all);
    scfm_batch_init(&one);
    scfm_batch_init(&pair);
    const int c = 2, len = all.cell_offsets[c + 1] - all.cell_offsets[c];
    const int32_t *tok = all.tokens + all.cell_offsets[c];
    const float *cnt = all.counts + all.cell_offsets[c];
    CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(&one, all.cell_ids[c], tok, len, &err), SCFM_OK);
    scfm_batch_set_counts(&one, cnt, all.library[c]);
    for (int v = 0; v < 2; v++) {
        CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(&pair, 2 * all.cell_ids[c] + v, tok, len, &err), SCFM_OK);
        scfm_batch_set_counts(&pair, cnt, all.library[c]);
    }
    double loss, again;
    float in_batch[3], alone[3], eval[3];
    CU_ASSERT_EQUAL(scfm_model_forward(m, &all, 1, 9, 2, &loss, &err), SCFM_OK);
    memcpy(in_batch, scfm_model_hidden(m) + 3 * c, sizeof in_batch);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &all, 1, 9, 2, &again, &err), SCFM_OK);
    CU_ASSERT_EQUAL(loss, again);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &one, 1, 9, 2, &loss, &err), SCFM_OK);
    memcpy(alone, scfm_model_hidden(m), sizeof alone);
    CU_ASSERT_EQUAL(memcmp(in_batch, alone, sizeof alone), 0);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &one, 0, 9, 2, &loss, &err), SCFM_OK);
    memcpy(eval, scfm_model_hidden(m), sizeof eval);
    CU_ASSERT_NOT_EQUAL(memcmp(eval, alone, sizeof eval), 0);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &pair, 1, 9, 2, &loss, &err), SCFM_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(scfm_model_hidden(m), scfm_model_hidden(m) + 3, sizeof(float) * 3), 0);
    /* another epoch, another draw */
    CU_ASSERT_EQUAL(scfm_model_forward(m, &one, 1, 9, 3, &again, &err), SCFM_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(scfm_model_hidden(m), alone, sizeof alone), 0);
    scfm_batch_free(&all);
    scfm_batch_free(&one);
    scfm_batch_free(&pair);
    scfm_model_free(m);
}

/* The latent is the embedding: width model.latent; one gradient range;
 * the KL warm-up scales the KL term. */
static void test_interface(void) {
    scfm_model_config cfg = fc_config(SCFM_ENCODER_LINEAR, SCFM_LIK_POISSON, 1, 0, SCFM_COND_DECODER);
    scfm_model *m = new_model(&cfg, NULL);
    CU_ASSERT_EQUAL(scfm_model_embedding_width(m), 3);
    size_t off[2], size[2];
    CU_ASSERT_EQUAL(scfm_model_grad_ranges(m, off, size), 1);
    CU_ASSERT_EQUAL(off[0], 0);
    CU_ASSERT_EQUAL(size[0], scfm_model_num_params(m));
    scfm_batch b;
    make_batch(&b);
    CU_ASSERT_EQUAL(scfm_model_loss_terms(m, &b), 4);
    scfm_error err = {0};
    double full, none, half;
    scfm_objective_config o = {.reconstruction = 1.0, .kl = 1.0, .kl_warmup_steps = 10};
    scfm_model_set_objective(m, &o);
    scfm_model_set_step(m, 0);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &none, &err), SCFM_OK);
    scfm_model_set_step(m, 5);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &half, &err), SCFM_OK);
    scfm_model_set_step(m, 50);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &full, &err), SCFM_OK);
    CU_ASSERT(full > none);
    CU_ASSERT_DOUBLE_EQUAL(half - none, 0.5 * (full - none), 1e-5 * full);
    /* rank and bin inputs (scfm_counts_dense) change what the encoder sees,
     * not the counts the decoder models; bins only with the bin input */
    const scfm_count_repr inputs[2] = {SCFM_COUNTS_RANK, SCFM_COUNTS_BIN};
    for (int k = 0; k < 2; k++) {
        scfm_model_config ci = cfg;
        ci.input = inputs[k];
        scfm_model *r = NULL;
        double loss = 0.0;
        CU_ASSERT_EQUAL_FATAL(scfm_model_create(&ci, &r, &err), SCFM_OK);
        scfm_model_init_weights(r, 1);
        scfm_model_set_objective(r, &o);
        scfm_model_set_step(r, 50);
        CU_ASSERT_EQUAL(scfm_model_forward(r, &b, 0, 1, 0, &loss, &err), SCFM_OK);
        CU_ASSERT(isfinite(loss) && loss > 0.0 && fabs(loss - full) > 1e-6 * full);
        scfm_model_free(r);
    }
    scfm_model *r = NULL;
    cfg.value_bins = 11;
    CU_ASSERT_EQUAL(scfm_model_create(&cfg, &r, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NULL(r);
    cfg.value_bins = 0;
    /* a column outside the gene set, and a cell without a library size, are refused */
    const int32_t column = b.tokens[0];
    b.tokens[0] = cfg.genes;
    scfm_error_clear(&err);
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &full, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "outside the"));
    b.tokens[0] = column;
    b.library[1] = 0.0f;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &full, &err), SCFM_ERR_ARG);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static CU_TestInfo tests[] = {
    {"kernel: NB", test_kernel_nb},
    {"kernel: ZINB", test_kernel_zinb},
    {"kernel: Poisson", test_kernel_poisson},
    {"kernel: count mean", test_kernel_count_mean},
    {"kernel: squared error, masked", test_kernel_sqerr},
    {"kernel: KL", test_kernel_kl},
    {"gradients: mlp NB VAE", test_gradients_nb_vae},
    {"gradients: mlp ZINB VAE, condition in both", test_gradients_zinb_vae},
    {"gradients: mlp Poisson AE, condition in encoder", test_gradients_poisson_ae},
    {"gradients: mlp MSE VAE, 3 layers", test_gradients_mse},
    {"gradients: linear NB VAE", test_gradients_linear},
    {"gradients: scMAE", test_gradients_mae},
    {"gradients: contrastive with augmentations", test_gradients_contrastive},
    {"save and load", test_save_load},
    {"conditions", test_conditions},
    {"randomness keyed by cell id", test_keyed_randomness},
    {"interface", test_interface},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("fc", tests); }
