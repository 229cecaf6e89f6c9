/* The contrastive objective: InfoNCE (fixed and learned temperature), the
 * projection head and the whole model through them against finite
 * differences; the split of anchors across ranks; the views; and PyTorch's
 * projection + InfoNCE on the same inputs (tests/fixtures/contrastive_infonce,
 * from tests/reference/make_contrastive_fixture.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "harness.h"
#include "scfm/data.h"
#include "scfm/io.h"
#include "scfm/model.h"

static float pseudo(int i) { return (float)sin(1.7 * i + 0.3) * 0.8f; }

/* Rows of z[n,P] scaled to unit length. */
static void unit_rows(float *z, int n, int P) {
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int k = 0; k < P; k++) s += (double)z[i * P + k] * z[i * P + k];
        for (int k = 0; k < P; k++) z[i * P + k] = (float)(z[i * P + k] / sqrt(s));
    }
}

enum { N = 8, P = 5 };

static double infonce(const float *z, int lo, int n, float log_tau) {
    float sim[N * N], probs[N * N];
    return scfm_infonce_forward(sim, probs, z, N, P, lo, n, log_tau);
}

/* Anchors [2, 6) of 8 views: the gradient reaches every view's z (the loss
 * is defined for any z, so each entry is perturbed on its own) and, when
 * learned, log(tau). */
static void check_infonce(int learned) {
    float z[N * P], sim[N * N], probs[N * N], dz[N * P] = {0}, dt = 0.0f;
    for (int i = 0; i < N * P; i++) z[i] = pseudo(i);
    unit_rows(z, N, P);
    const int lo = 2, n = 4;
    const float log_tau = -1.2f, scale = 0.5f;
    scfm_infonce_forward(sim, probs, z, N, P, lo, n, log_tau);
    scfm_infonce_backward(dz, learned ? &dt : NULL, probs, sim, z, N, P, lo, n, log_tau, scale);
    const float h = 1e-3f;
    int bad = 0;
    for (int i = 0; i < N * P; i++) {
        float saved = z[i];
        z[i] = saved + h;
        double up = infonce(z, lo, n, log_tau);
        z[i] = saved - h;
        double down = infonce(z, lo, n, log_tau);
        z[i] = saved;
        double numeric = scale * (up - down) / (2.0 * h);
        if (fabs(numeric - dz[i]) > 2e-3 + 2e-3 * fabs(numeric) && bad++ < 5)
            fprintf(stderr, "\n  dz[%d]: analytic %g numeric %g", i, dz[i], numeric);
    }
    CU_ASSERT_EQUAL(bad, 0);
    if (learned) {
        double numeric = scale * (infonce(z, lo, n, log_tau + h) - infonce(z, lo, n, log_tau - h)) / (2.0 * h);
        CU_ASSERT_DOUBLE_EQUAL(dt, numeric, 2e-3 + 2e-3 * fabs(numeric));
        CU_ASSERT(fabs(numeric) > 1e-2); /* the check is not vacuous */
    } else {
        CU_ASSERT_EQUAL(dt, 0.0f);
    }
}

static void test_infonce_fixed(void) { check_infonce(0); }
static void test_infonce_learned(void) { check_infonce(1); }

/* Ranks holding anchors [0, 3) and [3, 8) (an odd cut splits a pair) give,
 * summed, the loss and gradient of one process holding all 8. */
static void test_infonce_split(void) {
    float z[N * P], sim[N * N], probs[N * N], whole[N * P] = {0}, parts[N * P] = {0}, t1 = 0, t2 = 0;
    for (int i = 0; i < N * P; i++) z[i] = pseudo(3 * i + 1);
    unit_rows(z, N, P);
    double all = scfm_infonce_forward(sim, probs, z, N, P, 0, N, 0.1f);
    scfm_infonce_backward(whole, &t1, probs, sim, z, N, P, 0, N, 0.1f, 1.0f);
    double split = 0.0;
    const int cut[3] = {0, 3, N};
    for (int r = 0; r < 2; r++) {
        split += scfm_infonce_forward(sim, probs, z, N, P, cut[r], cut[r + 1] - cut[r], 0.1f);
        scfm_infonce_backward(parts, &t2, probs, sim, z, N, P, cut[r], cut[r + 1] - cut[r], 0.1f, 1.0f);
    }
    CU_ASSERT_DOUBLE_EQUAL(split, all, 1e-5 * fabs(all));
    CU_ASSERT_DOUBLE_EQUAL(t2, t1, 1e-5);
    for (int i = 0; i < N * P; i++) CU_ASSERT_DOUBLE_EQUAL(parts[i], whole[i], 1e-5);
}

/* The projection head: loss = sum(r * z) for fixed r, against finite
 * differences in x and every weight. */
static double projection_loss(scfm_projection_acts *a, float *const *w, const float *r, int n, int C, int Q,
                              scfm_activation act) {
    scfm_projection_forward(a, w[0], w[1], w[2], w[3], n, C, Q, act);
    double s = 0.0;
    for (int i = 0; i < n * Q; i++) s += (double)r[i] * a->z[i];
    return s;
}

static void test_projection(void) {
    enum { n = 4, C = 6, Q = 5 };
    float w1[Q * C], b1[Q], w2[Q * Q], b2[Q], r[n * Q], x[n * C];
    float dw1[Q * C] = {0}, db1[Q] = {0}, dw2[Q * Q] = {0}, db2[Q] = {0}, dx[n * C];
    float *w[4] = {w1, b1, w2, b2};
    const int sizes[4] = {Q * C, Q, Q * Q, Q};
    int seed = 0;
    for (int k = 0; k < 4; k++)
        for (int i = 0; i < sizes[k]; i++) w[k][i] = pseudo(seed++);
    for (int i = 0; i < n * Q; i++) r[i] = pseudo(seed++);
    for (int i = 0; i < n * C; i++) x[i] = pseudo(seed++);
    scfm_projection_acts a = {0};
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_projection_reserve(&a, n, C, Q, &err), SCFM_OK);
    memcpy(a.x, x, sizeof x);
    projection_loss(&a, w, r, n, C, Q, SCFM_ACT_GELU);
    scfm_projection_backward(&a, dx, dw1, db1, dw2, db2, r, w1, w2, n, C, Q, SCFM_ACT_GELU);
    const float h = 1e-3f;
    int bad = 0;
    float *all[5] = {w1, b1, w2, b2, x}, *grad[5] = {dw1, db1, dw2, db2, dx};
    const int count[5] = {Q * C, Q, Q * Q, Q, n * C};
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < count[k]; i++) {
            float saved = all[k][i];
            all[k][i] = saved + h;
            if (k == 4) memcpy(a.x, x, sizeof x);
            double up = projection_loss(&a, w, r, n, C, Q, SCFM_ACT_GELU);
            all[k][i] = saved - h;
            if (k == 4) memcpy(a.x, x, sizeof x);
            double down = projection_loss(&a, w, r, n, C, Q, SCFM_ACT_GELU);
            all[k][i] = saved;
            if (k == 4) memcpy(a.x, x, sizeof x);
            double numeric = (up - down) / (2.0 * h);
            if (fabs(numeric - grad[k][i]) > 2e-3 + 2e-3 * fabs(numeric) && bad++ < 5)
                fprintf(stderr, "\n  tensor %d [%d]: analytic %g numeric %g", k, i, grad[k][i], numeric);
        }
    CU_ASSERT_EQUAL(bad, 0);
    scfm_projection_free(&a);
}

/* Cells with a <cls> (token 2; genes from 4) of lengths 9, 14, 6, 11, a
 * value per token that depends on cell and position, condition c % 2. */
static void make_cells(scfm_batch *b, const int *which, int n) {
    static const int lengths[4] = {9, 14, 6, 11};
    static const int64_t ids[4] = {5, 900, 31, 77};
    scfm_batch_init(b);
    scfm_error err = {0};
    for (int k = 0; k < n; k++) {
        int c = which[k];
        int32_t tokens[16] = {2};
        for (int t = 1; t < lengths[c]; t++) tokens[t] = 4 + (c * 7 + t * 5) % 36;
        CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(b, ids[c], tokens, lengths[c], &err), SCFM_OK);
        b->labels[b->n_cells - 1] = c;
        b->conditions[b->n_cells - 1] = c % 2;
        for (int t = 0; t < lengths[c]; t++) b->values[b->cell_offsets[b->n_cells - 1] + t] = (3 * c + 5 * t) % 11;
    }
}

/* Views: disjoint, together every gene once (fraction 0.5), <cls> first in
 * both, ids 2 id + v, labels and conditions kept, every token with its value; the same whatever else is in the batch;
 * another epoch splits differently. */
static void test_views(void) {
    const int all[4] = {0, 1, 2, 3}, one[1] = {1};
    scfm_batch cells, alone, v, w;
    make_cells(&cells, all, 4);
    make_cells(&alone, one, 1);
    scfm_batch_init(&v);
    scfm_batch_init(&w);
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&cells, &v, 0.5, 4, 9, 3, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(v.n_cells, 8);
    for (int c = 0; c < 4; c++) {
        const int32_t *orig = cells.tokens + cells.cell_offsets[c];
        int L = cells.cell_offsets[c + 1] - cells.cell_offsets[c], seen[64] = {0}, got = 0;
        for (int k = 0; k < 2; k++) {
            int vc = 2 * c + k;
            CU_ASSERT_EQUAL(v.cell_ids[vc], 2 * cells.cell_ids[c] + k);
            CU_ASSERT_EQUAL(v.labels[vc], c);
            CU_ASSERT_EQUAL(v.conditions[vc], c % 2);
            CU_ASSERT_EQUAL(v.tokens[v.cell_offsets[vc]], 2);
            CU_ASSERT_EQUAL(v.values[v.cell_offsets[vc]], cells.values[cells.cell_offsets[c]]);
            for (int t = v.cell_offsets[vc] + 1; t < v.cell_offsets[vc + 1]; t++) {
                seen[v.tokens[t]]++;
                got++;
                int p = 1;
                while (p < L && orig[p] != v.tokens[t]) p++;
                CU_ASSERT_FATAL(p < L);
                CU_ASSERT_EQUAL(v.values[t], cells.values[cells.cell_offsets[c] + p]);
            }
        }
        CU_ASSERT_EQUAL(got, L - 1);
        for (int t = 1; t < L; t++) CU_ASSERT_EQUAL(seen[orig[t]], 1); /* the genes are distinct */
    }
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&alone, &w, 0.5, 4, 9, 3, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(w.n_tokens, v.cell_offsets[4] - v.cell_offsets[2]);
    CU_ASSERT_EQUAL(memcmp(w.tokens, v.tokens + v.cell_offsets[2], sizeof(int32_t) * (size_t)w.n_tokens), 0);
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&alone, &w, 0.5, 4, 9, 4, &err), SCFM_OK);
    CU_ASSERT(w.cell_offsets[1] != v.cell_offsets[3] - v.cell_offsets[2] ||
              memcmp(w.tokens, v.tokens + v.cell_offsets[2], sizeof(int32_t) * (size_t)w.cell_offsets[1]) != 0);
    /* a small fraction leaves genes out; a view without genes drops the cell */
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&cells, &w, 0.2, 4, 9, 3, &err), SCFM_OK);
    CU_ASSERT(w.n_tokens < v.n_tokens);
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&cells, &w, 0.01, 4, 9, 3, &err), SCFM_OK);
    CU_ASSERT(w.n_cells < 8 && w.n_cells % 2 == 0);
    scfm_batch_free(&cells);
    scfm_batch_free(&alone);
    scfm_batch_free(&v);
    scfm_batch_free(&w);
}

static void test_pairs(void) {
    const int all[3] = {0, 1, 2};
    scfm_batch cells, p;
    make_cells(&cells, all, 3);
    scfm_batch_init(&p);
    for (int t = 0; t < cells.n_tokens; t++) cells.counts[t] = (float)(3 * t + 1);
    for (int c = 0; c < 3; c++) cells.library[c] = (float)(100 + c);
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_batch_pairs(&cells, &p, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(p.n_cells, 6);
    CU_ASSERT_EQUAL(p.n_tokens, 2 * cells.n_tokens);
    for (int c = 0; c < 3; c++) {
        const int lo = cells.cell_offsets[c], L = cells.cell_offsets[c + 1] - lo;
        for (int k = 0; k < 2; k++) {
            const int pc = 2 * c + k, at = p.cell_offsets[pc];
            CU_ASSERT_EQUAL_FATAL(p.cell_offsets[pc + 1] - at, L);
            CU_ASSERT_EQUAL(p.cell_ids[pc], 2 * cells.cell_ids[c] + k);
            CU_ASSERT_EQUAL(p.labels[pc], cells.labels[c]);
            CU_ASSERT_EQUAL(p.conditions[pc], cells.conditions[c]);
            CU_ASSERT_EQUAL(p.library[pc], cells.library[c]);
            CU_ASSERT_EQUAL(memcmp(p.tokens + at, cells.tokens + lo, sizeof(int32_t) * (size_t)L), 0);
            CU_ASSERT_EQUAL(memcmp(p.values + at, cells.values + lo, sizeof(int32_t) * (size_t)L), 0);
            CU_ASSERT_EQUAL(memcmp(p.counts + at, cells.counts + lo, sizeof(float) * (size_t)L), 0);
        }
    }
    scfm_batch_free(&cells);
    scfm_batch_free(&p);
}

/* The whole model: masked genes on the views plus InfoNCE over them through
 * the projection head (learned temperature), pooling and the encoder, each
 * loss a mean over its terms as scfm train weights them. */
static double model_loss(scfm_model *m, const scfm_batch *b, float *dz, int backward) {
    scfm_error err = {0};
    double mlm = 0.0;
    CU_ASSERT_EQUAL(scfm_model_forward(m, b, 1, 7, 1, &mlm, &err), SCFM_OK);
    const float *z;
    CU_ASSERT_EQUAL(scfm_model_contrastive_forward(m, b, &z, &err), SCFM_OK);
    const int n = b->n_cells, Q = scfm_model_get_config(m)->projection_dim;
    float *sim = malloc(sizeof(float) * n * n), *probs = malloc(sizeof(float) * n * n);
    const float lt = scfm_model_log_temperature(m), w_con = 0.7f;
    double con = scfm_infonce_forward(sim, probs, z, n, Q, 0, n, lt);
    if (backward) {
        memset(dz, 0, sizeof(float) * n * Q);
        scfm_infonce_backward(dz, scfm_model_log_temperature_grad(m), probs, sim, z, n, Q, 0, n, lt, w_con / n);
        scfm_model_contrastive_grad(m, dz);
    }
    free(sim);
    free(probs);
    return mlm / b->n_targets + w_con * con / n;
}

/* The loss alone, for the finite differences. */
static double forward_loss(void *ctx) {
    const scfm_gradcheck_ctx *c = ctx;
    return model_loss(c->m, c->b, c->dz, 0);
}

static void check_model(scfm_pool pool) {
    scfm_model_config c = {0};
    c.vocab_size = 40;
    c.max_len = 16;
    c.layers = 1;
    c.hidden = 8;
    c.heads = 2;
    c.ffn = 16;
    c.activation = SCFM_ACT_GELU;
    c.dropout = c.attention_dropout = 0.1;
    c.layer_norm_eps = 1e-5;
    c.init_std = 0.3;
    c.special_tokens = 4;
    c.pool = pool;
    c.projection_dim = 6;
    c.learn_temperature = 1;
    c.temperature = 0.5;
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&c, &m, &err), SCFM_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(scfm_model_find_tensor(m, "contrastive.projection.2.weight"));
    scfm_model_init_weights(m, 3);
    CU_ASSERT_DOUBLE_EQUAL(scfm_model_log_temperature(m), log(0.5), 1e-6);
    const int all[4] = {0, 1, 2, 3};
    scfm_batch cells, b;
    make_cells(&cells, all, 4);
    scfm_batch_init(&b);
    CU_ASSERT_EQUAL_FATAL(scfm_batch_views(&cells, &b, 0.5, 4, 9, 1, &err), SCFM_OK);
    scfm_mask_config mc = {0.3, 0.8, 0.1, 4, 40};
    scfm_batch_mask(&b, &mc, 11, 1);
    CU_ASSERT_FATAL(b.n_targets > 0);
    float dz[8 * 6];
    scfm_model_zero_grad(m);
    model_loss(m, &b, dz, 1);
    scfm_model_backward(m, &b, 1.0f / (float)b.n_targets);
    scfm_gradcheck_ctx ctx = {m, &b, dz};
    scfm_gradcheck_result r = scfm_gradcheck(m, forward_loss, &ctx, scfm_model_grads(m), 30, 1e-3, 3e-2);
    CU_ASSERT(r.checked > 100);
    CU_ASSERT_EQUAL(r.bad, 0);
    scfm_batch_free(&cells);
    scfm_batch_free(&b);
    scfm_model_free(m);
}

static void test_model_mean(void) { check_model(SCFM_POOL_MEAN); }
static void test_model_cls(void) { check_model(SCFM_POOL_CLS); }

static const float *fixture_tensor(scfm_safetensors *f, const char *name, int64_t numel) {
    const scfm_st_tensor *t = scfm_safetensors_find(f, name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL_FATAL(scfm_st_tensor_numel(t), numel);
    return t->data;
}

/* The same inputs through scfm and PyTorch (float64 there): loss and every
 * gradient within fp32 rounding. */
static void test_pytorch(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/contrastive_infonce.safetensors", SCFM_TEST_SOURCE_DIR);
    scfm_safetensors *f = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    enum { n = 10, C = 12, Q = 6 };
    const char *names[4] = {"contrastive.projection.0.weight", "contrastive.projection.0.bias",
                            "contrastive.projection.2.weight", "contrastive.projection.2.bias"};
    const int64_t sizes[4] = {Q * C, Q, Q * Q, Q};
    const float *w[4], *want[4];
    float *grad[4];
    for (int k = 0; k < 4; k++) {
        char gname[96];
        snprintf(gname, sizeof gname, "grad.%s", names[k]);
        w[k] = fixture_tensor(f, names[k], sizes[k]);
        want[k] = fixture_tensor(f, gname, sizes[k]);
        grad[k] = calloc((size_t)sizes[k], sizeof(float));
    }
    const float log_tau = *fixture_tensor(f, "log_temperature", 1);
    scfm_projection_acts a = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_projection_reserve(&a, n, C, Q, &err), SCFM_OK);
    memcpy(a.x, fixture_tensor(f, "x", n * C), sizeof(float) * n * C);
    scfm_projection_forward(&a, w[0], w[1], w[2], w[3], n, C, Q, SCFM_ACT_GELU);
    float sim[n * n], probs[n * n], dz[n * Q] = {0}, dx[n * C], dt = 0.0f;
    double loss = scfm_infonce_forward(sim, probs, a.z, n, Q, 0, n, log_tau);
    scfm_infonce_backward(dz, &dt, probs, sim, a.z, n, Q, 0, n, log_tau, 1.0f);
    scfm_projection_backward(&a, dx, grad[0], grad[1], grad[2], grad[3], dz, w[0], w[2], n, C, Q, SCFM_ACT_GELU);
    double want_loss = *fixture_tensor(f, "loss", 1);
    CU_ASSERT_DOUBLE_EQUAL(loss, want_loss, 1e-5 * fabs(want_loss));
    CU_ASSERT_DOUBLE_EQUAL(dt, *fixture_tensor(f, "grad.log_temperature", 1), 1e-4);
    const float *want_dx = fixture_tensor(f, "grad.x", n * C);
    double worst = 0.0;
    for (int i = 0; i < n * C; i++) worst = fmax(worst, fabs(dx[i] - want_dx[i]));
    for (int k = 0; k < 4; k++)
        for (int64_t i = 0; i < sizes[k]; i++) worst = fmax(worst, fabs(grad[k][i] - want[k][i]));
    fprintf(stderr, "\n  loss %.6f (PyTorch %.6f), largest gradient difference %.2g", loss, want_loss, worst);
    CU_ASSERT(worst < 1e-4);
    for (int k = 0; k < 4; k++) free(grad[k]);
    scfm_projection_free(&a);
    scfm_safetensors_close(f);
}

int main(void) {
    CU_TestInfo tests[] = {
        {"InfoNCE gradient = finite differences (fixed temperature)", test_infonce_fixed},
        {"InfoNCE gradient = finite differences (learned temperature)", test_infonce_learned},
        {"InfoNCE over anchors split in two = over all", test_infonce_split},
        {"projection head gradient = finite differences", test_projection},
        {"views: disjoint, complete, keyed by cell, not by batch", test_views},
        {"pairs: each cell twice, ids 2 id and 2 id + 1, counts kept", test_pairs},
        {"model + projection + InfoNCE + MLM gradients = finite differences (mean pool)", test_model_mean},
        {"model + projection + InfoNCE + MLM gradients = finite differences (cls pool)", test_model_cls},
        {"projection + InfoNCE = PyTorch", test_pytorch},
        CU_TEST_INFO_NULL,
    };
    return scfm_test_run("contrastive", tests);
}
