/* The whole model: gradients against finite differences (post-LN and pre-LN,
 * with dropout on), packing invariance, masking determinism, and a tiny
 * model overfitting one batch. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "scfm/data.h"
#include "scfm/model.h"
#include "scfm/train.h"

static scfm_model_config tiny_config(scfm_norm norm, scfm_activation act, double dropout) {
    scfm_model_config c = {0};
    c.vocab_size = 23;
    c.max_len = 16;
    c.layers = 2;
    c.hidden = 16;
    c.heads = 4;
    c.ffn = 32;
    c.activation = act;
    c.norm = norm;
    c.position = SCFM_POS_LEARNED;
    c.dropout = dropout;
    c.attention_dropout = dropout;
    c.layer_norm_eps = 1e-5;
    c.init_std = 0.3;
    return c;
}

/* Three cells of lengths 7, 3 and 12 with ids 5, 900, 31. */
static void make_batch(scfm_batch *b, int vocab) {
    static const int lengths[3] = {7, 3, 12};
    static const int64_t ids[3] = {5, 900, 31};
    scfm_batch_init(b);
    scfm_error err = {0};
    for (int c = 0; c < 3; c++) {
        int32_t tokens[16];
        for (int t = 0; t < lengths[c]; t++) tokens[t] = 2 + (c * 7 + t * 5) % (vocab - 2);
        CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(b, ids[c], tokens, lengths[c], &err), SCFM_OK);
    }
    scfm_mask_config mc = {0.4, 0.8, 0.1, 2, vocab};
    scfm_batch_mask(b, &mc, 11, 0);
}

static double model_loss(scfm_model *m, const scfm_batch *b, int training) {
    double loss = 0.0;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_model_forward(m, b, training, 7, 1, &loss, &err), SCFM_OK);
    return loss / scfm_model_loss_terms(m, b);
}

/* Value bins (i*3 + t) % B, 35% of them masked, and conditions for the
 * first and last cell (the middle one left out), for value models. */
static void add_values(scfm_batch *b, const scfm_model_config *cfg) {
    for (int t = 0; t < b->n_tokens; t++) b->values[t] = (t * 3 + 1) % cfg->value_bins;
    scfm_batch_mask_values(b, 0.35, 2, cfg->value_bins, 13, 0);
    CU_ASSERT_FATAL(b->n_value_targets > 1);
}

static double training_loss(void *ctx) {
    const scfm_gradcheck_ctx *c = ctx;
    return model_loss(c->m, c->b, 1);
}

/* Central differences over a sample of every tensor, with GELU (ReLU kinks
 * make finite differences unreliable; the ReLU model is checked against
 * PyTorch in test_hf_reference). fp32 forward
 * passes limit the precision, so the check is relative to each tensor's
 * largest gradient. */
static void check_gradients_objective(const scfm_model_config *config, const scfm_objective_config *obj) {
    scfm_model_config cfg = *config;
    /* non-trivial LayerNorm weights and biases */
    scfm_model *m = scfm_gradcheck_model(&cfg, obj, 0.1f);
    scfm_batch b;
    make_batch(&b, cfg.vocab_size);
    CU_ASSERT_FATAL(b.n_targets > 0);
    if (cfg.num_labels > 0) { /* the middle cell unlabelled */
        b.labels[0] = 1;
        b.labels[2] = cfg.num_labels - 1;
    }
    if (cfg.value_bins > 0) add_values(&b, &cfg);
    if (cfg.num_conditions > 0) {
        b.conditions[0] = cfg.num_conditions - 1;
        b.conditions[2] = 0;
    }
    model_loss(m, &b, 1);
    scfm_model_zero_grad(m);
    scfm_model_backward(m, &b, 1.0f / (float)scfm_model_loss_terms(m, &b));
    const float *g = scfm_model_grads(m);
    /* A tensor whose gradient is zero in exact arithmetic (the key bias) is
     * measured against a floor that grows with the loss's scale: the squared
     * errors of the value objectives make the fp32 differences noisier. */
    double floor = 1e-3;
    for (size_t i = 0; i < scfm_model_num_params(m); i++) floor = fmax(floor, 1e-2 * fabs(g[i]));
    scfm_gradcheck_ctx ctx = {m, &b, NULL};
    scfm_gradcheck_result r = scfm_gradcheck(m, training_loss, &ctx, g, 40, floor, 3e-2);
    CU_ASSERT_EQUAL(r.bad, 0);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static void check_gradients(const scfm_model_config *config) { check_gradients_objective(config, NULL); }

/* scGPT-style: value cross-entropy and MVC with MLM at half weight, a
 * condition embedding, dropout on. */
static void test_gradients_value_ce(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.2);
    cfg.value_bins = 5;
    cfg.value_loss = SCFM_VALUE_CE;
    cfg.num_conditions = 3;
    scfm_objective_config obj = {.mlm = 0.5, .value = 1.0, .mvc = 0.7};
    check_gradients_objective(&cfg, &obj);
}

/* Value regression and MVC alone (no MLM terms), pre-LN, <cls> pooling. */
static void test_gradients_value_mse(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_PRE, SCFM_ACT_GELU, 0.0);
    cfg.value_bins = 4;
    cfg.value_loss = SCFM_VALUE_MSE;
    cfg.pool = SCFM_POOL_CLS;
    scfm_objective_config obj = {.mlm = 0.0, .value = 1.0, .mvc = 1.0};
    check_gradients_objective(&cfg, &obj);
}

/* MVC alone: its gradient reaches the word embeddings through the gene query
 * and the encoder through pooling. */
static void test_gradients_mvc(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.0);
    cfg.value_bins = 3;
    cfg.num_conditions = 2;
    scfm_objective_config obj = {.mlm = 0.0, .value = 0.0, .mvc = 1.0};
    check_gradients_objective(&cfg, &obj);
}

static void check_model_gradients(scfm_norm norm, scfm_activation act, double dropout) {
    scfm_model_config cfg = tiny_config(norm, act, dropout);
    check_gradients(&cfg);
}

/* The classification head with the MLM head: mean pooling that leaves out
 * token 2 (special here), and <cls> pooling; one cell unlabelled. */
static void test_gradients_classifier_mean(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.2);
    cfg.num_labels = 3;
    cfg.special_tokens = 3;
    check_gradients(&cfg);
}
static void test_gradients_classifier_cls(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_PRE, SCFM_ACT_GELU, 0.0);
    cfg.num_labels = 4;
    cfg.pool = SCFM_POOL_CLS;
    check_gradients(&cfg);
}

/* Inference: encode gives the forward's hidden states without dropout, the
 * mean pool averages a cell's gene tokens only, and class probabilities are
 * a softmax. */
static void test_encode_pool_classify(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.3);
    cfg.num_labels = 5;
    cfg.special_tokens = 3;
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    scfm_model_init_weights(m, 4);
    scfm_batch b;
    make_batch(&b, cfg.vocab_size);
    double loss;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 1, 0, &loss, &err), SCFM_OK);
    const int T = b.n_tokens, C = cfg.hidden;
    float *hidden = malloc(sizeof(float) * (size_t)T * C), *pooled = malloc(sizeof(float) * 3 * (size_t)C);
    memcpy(hidden, scfm_model_hidden(m), sizeof(float) * (size_t)T * C);
    CU_ASSERT_EQUAL(scfm_model_encode(m, &b, &err), SCFM_OK);
    CU_ASSERT_EQUAL(memcmp(hidden, scfm_model_hidden(m), sizeof(float) * (size_t)T * C), 0);
    CU_ASSERT_PTR_EQUAL(scfm_model_layer_hidden(m, cfg.layers), scfm_model_hidden(m));
    scfm_model_pool(m, &b, cfg.layers, SCFM_POOL_MEAN, pooled);
    for (int c = 0; c < 3; c++) {
        int n = 0;
        double sum0 = 0.0;
        for (int t = b.cell_offsets[c]; t < b.cell_offsets[c + 1]; t++)
            if (b.tokens[t] >= 3) {
                n++;
                sum0 += hidden[(size_t)t * C];
            }
        CU_ASSERT_FATAL(n > 0);
        CU_ASSERT_DOUBLE_EQUAL(pooled[(size_t)c * C], sum0 / n, 1e-5);
    }
    scfm_model_pool(m, &b, 0, SCFM_POOL_CLS, pooled);
    CU_ASSERT_EQUAL(memcmp(pooled + C, scfm_model_layer_hidden(m, 0) + (size_t)b.cell_offsets[1] * C,
                           sizeof(float) * C), 0);
    float probs[3 * 5];
    CU_ASSERT_EQUAL(scfm_model_classify(m, &b, probs, &err), SCFM_OK);
    for (int c = 0; c < 3; c++) {
        double total = 0.0;
        for (int k = 0; k < 5; k++) total += probs[c * 5 + k];
        CU_ASSERT_DOUBLE_EQUAL(total, 1.0, 1e-5);
    }
    free(hidden);
    free(pooled);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static void test_gradients_post_gelu(void) { check_model_gradients(SCFM_NORM_POST, SCFM_ACT_GELU, 0.0); }
static void test_gradients_pre_gelu(void) { check_model_gradients(SCFM_NORM_PRE, SCFM_ACT_GELU, 0.0); }
static void test_gradients_post_dropout(void) { check_model_gradients(SCFM_NORM_POST, SCFM_ACT_GELU, 0.2); }
static void test_gradients_pre_dropout(void) { check_model_gradients(SCFM_NORM_PRE, SCFM_ACT_GELU, 0.2); }

static void test_without_positions(void) {
    /* position = "none": no position tensor, and a cell's hidden states do not
     * depend on the order of its tokens beyond what attention sees */
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.0);
    cfg.position = SCFM_POS_NONE;
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    CU_ASSERT_PTR_NULL(scfm_model_find_tensor(m, "bert.embeddings.position_embeddings.weight"));
    scfm_model_init_weights(m, 5);
    int32_t forward_order[4] = {5, 9, 2, 7}, reversed[4] = {7, 2, 9, 5};
    scfm_batch a, b;
    scfm_batch_init(&a);
    scfm_batch_init(&b);
    scfm_batch_add_cell(&a, 0, forward_order, 4, &err);
    scfm_batch_add_cell(&b, 0, reversed, 4, &err);
    double loss;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &a, 0, 0, 0, &loss, &err), SCFM_OK);
    float first[16];
    memcpy(first, scfm_model_hidden(m), sizeof first); /* token 5's hidden state */
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 0, 0, &loss, &err), SCFM_OK);
    const float *h = scfm_model_hidden(m) + 3 * 16;   /* token 5 is last in b */
    double worst = 0.0;
    for (int i = 0; i < 16; i++) worst = fmax(worst, fabs(h[i] - first[i]));
    CU_ASSERT(worst < 1e-5);
    scfm_batch_free(&a);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

/* Packed cells give the hidden states and per-target losses of each cell
 * run alone, dropout included (its masks are keyed by cell, not batch). */
static void check_packing(double dropout) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, dropout);
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    scfm_model_init_weights(m, 4);
    scfm_batch packed;
    make_batch(&packed, cfg.vocab_size);
    double packed_loss = 0.0;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &packed, 1, 9, 2, &packed_loss, &err), SCFM_OK);
    size_t hidden_floats = (size_t)packed.n_tokens * cfg.hidden;
    float *hidden = malloc(sizeof(float) * hidden_floats);
    memcpy(hidden, scfm_model_hidden(m), sizeof(float) * hidden_floats);
    double alone_sum = 0.0, worst = 0.0;
    for (int c = 0; c < packed.n_cells; c++) {
        scfm_batch one;
        scfm_batch_init(&one);
        int start = packed.cell_offsets[c], len = packed.cell_offsets[c + 1] - start;
        CU_ASSERT_EQUAL(scfm_batch_add_cell(&one, packed.cell_ids[c], packed.tokens + start, len, &err), SCFM_OK);
        one.n_targets = 0;
        for (int n = 0; n < packed.n_targets; n++)
            if (packed.target_index[n] >= start && packed.target_index[n] < start + len) {
                one.target_index[one.n_targets] = packed.target_index[n] - start;
                one.target_label[one.n_targets++] = packed.target_label[n];
            }
        double loss = 0.0;
        CU_ASSERT_EQUAL(scfm_model_forward(m, &one, 1, 9, 2, &loss, &err), SCFM_OK);
        alone_sum += loss;
        const float *h = scfm_model_hidden(m);
        for (size_t i = 0; i < (size_t)len * cfg.hidden; i++)
            worst = fmax(worst, fabs(h[i] - hidden[(size_t)start * cfg.hidden + i]));
        scfm_batch_free(&one);
    }
    CU_ASSERT(worst < 1e-5);
    CU_ASSERT_DOUBLE_EQUAL(alone_sum, packed_loss, 1e-4 * fabs(packed_loss));
    free(hidden);
    scfm_batch_free(&packed);
    scfm_model_free(m);
}
static void test_packing(void) { check_packing(0.0); }
static void test_packing_dropout(void) { check_packing(0.1); }

static void test_mask_rule(void) {
    enum { L = 2000 };
    int32_t tokens[L];
    for (int t = 0; t < L; t++) tokens[t] = t % 5 == 0 ? 0 : 2 + t % 97; /* some pads: never selected */
    scfm_batch b, again;
    scfm_error err = {0};
    scfm_batch_init(&b);
    scfm_batch_init(&again);
    scfm_batch_add_cell(&b, 77, tokens, L, &err);
    scfm_batch_add_cell(&again, 3, tokens, 5, &err); /* another cell first: packing must not matter */
    scfm_batch_add_cell(&again, 77, tokens, L, &err);
    scfm_mask_config mc = {0.15, 0.8, 0.1, 2, 99};
    scfm_batch_mask(&b, &mc, 5, 0);
    scfm_batch_mask(&again, &mc, 5, 0);
    int masked = 0, random_or_kept = 0, special = 0, matches = 0;
    for (int n = 0; n < b.n_targets; n++) {
        int t = b.target_index[n];
        if (tokens[t] < 2) special++;
        if (b.tokens[t] == SCFM_TOKEN_MASK) masked++;
        else random_or_kept++;
        CU_ASSERT_EQUAL(b.target_label[n], tokens[t]);
    }
    for (int n = 0; n < again.n_targets; n++)
        if (again.target_index[n] >= 5) matches += b.tokens[again.target_index[n] - 5] == again.tokens[again.target_index[n]];
    double selected = b.n_targets / (double)(L * 4 / 5);
    CU_ASSERT(fabs(selected - 0.15) < 0.03);
    CU_ASSERT(fabs(masked / (double)b.n_targets - 0.8) < 0.06);
    CU_ASSERT(random_or_kept > 0);
    CU_ASSERT_EQUAL(special, 0);
    CU_ASSERT_EQUAL(matches, b.n_targets);
    /* another epoch draws another mask */
    scfm_batch_clear(&again);
    scfm_batch_add_cell(&again, 77, tokens, L, &err);
    scfm_batch_mask(&again, &mc, 5, 1);
    CU_ASSERT(memcmp(again.target_index, b.target_index, sizeof(int32_t) * 20) != 0);
    scfm_batch_free(&b);
    scfm_batch_free(&again);
}

static void test_overfit_one_batch(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_GELU, 0.0);
    cfg.init_std = 0.02;
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    scfm_model_init_weights(m, 1);
    scfm_batch b;
    make_batch(&b, cfg.vocab_size);
    size_t n = scfm_model_num_params(m);
    float *am = calloc(n, sizeof(float)), *av = calloc(n, sizeof(float));
    scfm_train_config tc = {0};
    tc.beta1 = 0.9;
    tc.beta2 = 0.999;
    tc.adam_eps = 1e-8;
    tc.weight_decay = 0.0;
    double first = 0.0, last = 0.0;
    for (int step = 0; step < 300; step++) {
        double loss = 0.0;
        CU_ASSERT_EQUAL_FATAL(scfm_model_forward(m, &b, 1, 1, 0, &loss, &err), SCFM_OK);
        scfm_model_zero_grad(m);
        scfm_model_backward(m, &b, 1.0f / b.n_targets);
        scfm_adamw_step(m, am, av, step + 1, 3e-3, &tc);
        if (step == 0) first = loss / b.n_targets;
        last = loss / b.n_targets;
    }
    CU_ASSERT(first > 2.0);
    CU_ASSERT(last < 0.05);
    free(am);
    free(av);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static void test_lr_schedule(void) {
    scfm_train_config t = {0};
    t.lr = 1.0;
    t.steps = 110;
    t.warmup_steps = 10;
    t.schedule = SCFM_SCHED_LINEAR;
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 0), 0.1, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 9), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 60), 0.5, 1e-12);
    t.schedule = SCFM_SCHED_COSINE;
    t.min_lr_ratio = 0.1;
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 60), 0.55, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 110), 0.1, 1e-12);
    t.schedule = SCFM_SCHED_CONSTANT;
    CU_ASSERT_DOUBLE_EQUAL(scfm_lr_at(&t, 100), 1.0, 1e-12);
}

static void test_adamw_matches_formula(void) {
    /* one AdamW step on a known gradient, decay on weights only */
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_RELU, 0.0);
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    scfm_model_init_weights(m, 2);
    size_t n = scfm_model_num_params(m);
    float *p = scfm_model_params(m), *g = scfm_model_grads(m);
    float *before = malloc(sizeof(float) * n), *am = calloc(n, sizeof(float)), *av = calloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = (float)((int)(i % 7) - 3) * 0.1f;
    memcpy(before, p, sizeof(float) * n);
    scfm_train_config tc = {0};
    tc.beta1 = 0.9;
    tc.beta2 = 0.99;
    tc.adam_eps = 1e-8;
    tc.weight_decay = 0.1;
    scfm_adamw_step(m, am, av, 1, 0.01, &tc);
    const scfm_tensor_info *w = scfm_model_find_tensor(m, "bert.encoder.layer.0.intermediate.dense.weight");
    const scfm_tensor_info *bias = scfm_model_find_tensor(m, "bert.encoder.layer.0.intermediate.dense.bias");
    CU_ASSERT_PTR_NOT_NULL_FATAL(w);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bias);
    CU_ASSERT(w->decay && !bias->decay);
    for (size_t i = 0; i < 16; i++) {
        size_t a = w->offset + i, c = bias->offset + i;
        double sign_a = g[a] > 0 ? 1.0 : g[a] < 0 ? -1.0 : 0.0, sign_c = g[c] > 0 ? 1.0 : g[c] < 0 ? -1.0 : 0.0;
        /* at t=1 the bias-corrected update is lr * g/|g| */
        CU_ASSERT_DOUBLE_EQUAL(p[a], before[a] * (1 - 0.01 * 0.1) - 0.01 * sign_a, 1e-6);
        CU_ASSERT_DOUBLE_EQUAL(p[c], before[c] - 0.01 * sign_c, 1e-6);
    }
    free(before);
    free(am);
    free(av);
    scfm_model_free(m);
}

static void test_bad_batch_rejected(void) {
    scfm_model_config cfg = tiny_config(SCFM_NORM_POST, SCFM_ACT_RELU, 0.0);
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    scfm_batch b;
    scfm_batch_init(&b);
    int32_t tokens[20] = {2, 3, 99};
    scfm_batch_add_cell(&b, 0, tokens, 3, &err);
    double loss;
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 0, 0, &loss, &err), SCFM_ERR_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.message, "token id 99"));
    scfm_batch_clear(&b);
    scfm_error_clear(&err);
    scfm_batch_add_cell(&b, 0, tokens, 20, &err); /* longer than max_len 16 */
    CU_ASSERT_EQUAL(scfm_model_forward(m, &b, 0, 0, 0, &loss, &err), SCFM_ERR_ARG);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static CU_TestInfo tests[] = {
    {"model gradients = finite differences (post-LN, GELU)", test_gradients_post_gelu},
    {"model gradients = finite differences (pre-LN, GELU)", test_gradients_pre_gelu},
    {"model gradients = finite differences (post-LN, dropout)", test_gradients_post_dropout},
    {"model gradients = finite differences (pre-LN, dropout)", test_gradients_pre_dropout},
    {"classifier gradients = finite differences (mean pool, dropout)", test_gradients_classifier_mean},
    {"classifier gradients = finite differences (cls pool, pre-LN)", test_gradients_classifier_cls},
    {"value CE + MVC + condition gradients = finite differences", test_gradients_value_ce},
    {"value MSE + MVC gradients = finite differences (pre-LN, cls pool)", test_gradients_value_mse},
    {"MVC gradients = finite differences", test_gradients_mvc},
    {"encode, pooling and class probabilities", test_encode_pool_classify},
    {"position = none: permutation-equivariant encoder", test_without_positions},
    {"packed cells = each cell alone", test_packing},
    {"packed cells = each cell alone, with dropout", test_packing_dropout},
    {"masking follows 15% and 80/10/10, keyed by cell", test_mask_rule},
    {"a tiny model overfits one batch", test_overfit_one_batch},
    {"learning-rate schedules", test_lr_schedule},
    {"AdamW step and decay groups", test_adamw_matches_formula},
    {"invalid batches are rejected", test_bad_batch_rejected},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("model", tests); }
