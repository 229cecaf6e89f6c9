/* Every CUDA kernel against its CPU twin on the same random inputs (CTest
 * label "gpu"; exits 77, skipped, where no CUDA device is found).
 *
 * Tolerances, as |gpu - cpu| <= atol + rtol |cpu| for every element:
 *   exact (0, 0): embedding forward, ReLU, dropout masks (the same hash);
 *   fp32 (1e-5, 1e-4): LayerNorm, GELU, AdamW, cross-entropy (the GPU's
 *     expf/erff and a different summation order against the CPU's);
 *   attention (1e-5, 1e-3): fp32 cuBLAS products against OpenBLAS, through a
 *     softmax;
 *   embedding backward (1e-5, 1e-5): atomicAdd order;
 *   bf16 Linear (1e-4, 2e-3): the CPU runs on the same inputs rounded to
 *     bf16 in fp32, so only the accumulation order differs; against fp32
 *     inputs a bf16 product is off by up to 2^-8 relative per term.
 * These are first estimates: none of this has run on a GPU yet
 * (docs/cuda.md). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda_backend.h"
#include "harness.h"
#include "relative_l2.h"
#include "scfm/config.h"
#include "scfm/model.h"
#include "scfm/train.h"

static scfm_cuda_ctx *ctx;
static scfm_error err;
static uint64_t rng_state = 0x5CF3u;

static float uniform(float lo, float hi) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}

static float *random_floats(size_t n, float lo, float hi) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; x && i < n; i++) x[i] = uniform(lo, hi);
    return x;
}

/* A device copy of n host floats (or int32s, same width). */
static void *to_device(const void *host, size_t bytes) {
    void *d = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_alloc(&d, bytes, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_upload(d, host, bytes, &err), SCFM_OK);
    return d;
}

/* Checks the device array against the host one, and reports the worst error. */
static void expect_close(const char *what, const float *d_got, const float *want, size_t n, float atol, float rtol) {
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_sync(ctx, &err), SCFM_OK);
    float *got = malloc(sizeof(float) * (n ? n : 1));
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_download(got, d_got, sizeof(float) * n, &err), SCFM_OK);
    double worst = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)got[i] - want[i]), allowed = atol + rtol * fabs(want[i]);
        if (!(diff <= allowed)) bad++;
        if (diff > worst) worst = diff;
    }
    printf("\n    %s: %zu values, max |gpu - cpu| %.3g, %zu out of tolerance ", what, n, worst, bad);
    CU_ASSERT_EQUAL(bad, 0);
    free(got);
}

/* The value a bf16 copy holds, in fp32 (round to nearest even). */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void test_embedding(void) {
    const int T = 300, C = 48, V = 20, P = 64;
    int32_t tokens[300], positions[300];
    for (int t = 0; t < T; t++) {
        tokens[t] = (int32_t)(uniform(0, 1) * V) % V; /* repeats: the backward scatter adds up */
        positions[t] = t % P;
    }
    float *wte = random_floats((size_t)V * C, -1, 1), *wpe = random_floats((size_t)P * C, -1, 1);
    float *dout = random_floats((size_t)T * C, -1, 1), *out = malloc(sizeof(float) * T * C);
    float *dwte = calloc((size_t)V * C, sizeof(float)), *dwpe = calloc((size_t)P * C, sizeof(float));
    scfm_embedding_forward(out, tokens, positions, wte, wpe, T, C);
    scfm_embedding_backward(dwte, dwpe, dout, tokens, positions, T, C);
    int32_t *d_tok = to_device(tokens, sizeof tokens), *d_pos = to_device(positions, sizeof positions);
    float *d_wte = to_device(wte, sizeof(float) * V * C), *d_wpe = to_device(wpe, sizeof(float) * P * C);
    float *d_dout = to_device(dout, sizeof(float) * T * C), *d_out = NULL, *d_dwte = NULL, *d_dwpe = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * T * C, &err);
    scfm_cuda_alloc((void **)&d_dwte, sizeof(float) * V * C, &err);
    scfm_cuda_alloc((void **)&d_dwpe, sizeof(float) * P * C, &err);
    CU_ASSERT_EQUAL(scfm_cuda_embedding_forward(ctx, d_out, d_tok, d_pos, d_wte, d_wpe, T, C, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_embedding_backward(ctx, d_dwte, d_dwpe, d_dout, d_tok, d_pos, T, C, &err), SCFM_OK);
    expect_close("embedding forward", d_out, out, (size_t)T * C, 0, 0);
    expect_close("embedding backward (tokens)", d_dwte, dwte, (size_t)V * C, 1e-5f, 1e-5f);
    expect_close("embedding backward (positions)", d_dwpe, dwpe, (size_t)P * C, 1e-5f, 1e-5f);
    void *dev[] = {d_tok, d_pos, d_wte, d_wpe, d_dout, d_out, d_dwte, d_dwpe};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) scfm_cuda_free(dev[i]);
    free(wte), free(wpe), free(dout), free(out), free(dwte), free(dwpe);
}

static void test_layernorm(void) {
    const int T = 257, C = 96; /* rows past one 64-row chunk of the column sums */
    const size_t n = (size_t)T * C;
    float *x = random_floats(n, -2, 3), *w = random_floats(C, 0.5f, 1.5f), *b = random_floats(C, -1, 1);
    float *dout = random_floats(n, -1, 1), *out = malloc(sizeof(float) * n), *mean = malloc(sizeof(float) * T);
    float *rstd = malloc(sizeof(float) * T), *dinp = random_floats(n, -1, 1);
    float *dw = random_floats(C, -1, 1), *db = random_floats(C, -1, 1);
    float *d_x = to_device(x, sizeof(float) * n), *d_w = to_device(w, sizeof(float) * C),
          *d_b = to_device(b, sizeof(float) * C), *d_dout = to_device(dout, sizeof(float) * n),
          *d_dinp = to_device(dinp, sizeof(float) * n), *d_dw = to_device(dw, sizeof(float) * C),
          *d_db = to_device(db, sizeof(float) * C);
    float *d_out = NULL, *d_mean = NULL, *d_rstd = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * n, &err);
    scfm_cuda_alloc((void **)&d_mean, sizeof(float) * T, &err);
    scfm_cuda_alloc((void **)&d_rstd, sizeof(float) * T, &err);
    scfm_layernorm_forward(out, mean, rstd, x, w, b, T, C, 1e-12f);
    scfm_layernorm_backward(dinp, dw, db, dout, x, w, mean, rstd, T, C); /* accumulates into random starts */
    CU_ASSERT_EQUAL(scfm_cuda_layernorm_forward(ctx, d_out, d_mean, d_rstd, d_x, d_w, d_b, T, C, 1e-12f, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_layernorm_backward(ctx, d_dinp, d_dw, d_db, d_dout, d_x, d_w, d_mean, d_rstd, T, C, &err),
                    SCFM_OK);
    expect_close("LayerNorm forward", d_out, out, n, 1e-5f, 1e-4f);
    expect_close("LayerNorm mean", d_mean, mean, T, 1e-5f, 1e-4f);
    expect_close("LayerNorm rstd", d_rstd, rstd, T, 1e-5f, 1e-4f);
    expect_close("LayerNorm backward (input)", d_dinp, dinp, n, 1e-5f, 1e-4f);
    expect_close("LayerNorm backward (weight)", d_dw, dw, C, 1e-4f, 1e-4f);
    expect_close("LayerNorm backward (bias)", d_db, db, C, 1e-4f, 1e-4f);
    void *dev[] = {d_x, d_w, d_b, d_dout, d_dinp, d_dw, d_db, d_out, d_mean, d_rstd};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) scfm_cuda_free(dev[i]);
    free(x), free(w), free(b), free(dout), free(out), free(mean), free(rstd), free(dinp), free(dw), free(db);
}

static void test_activations(void) {
    const size_t n = 10007;
    float *x = random_floats(n, -5, 5), *dout = random_floats(n, -1, 1);
    float *out = malloc(sizeof(float) * n), *dinp = malloc(sizeof(float) * n);
    float *d_x = to_device(x, sizeof(float) * n), *d_dout = to_device(dout, sizeof(float) * n), *d_out = NULL,
          *d_dinp = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * n, &err);
    scfm_cuda_alloc((void **)&d_dinp, sizeof(float) * n, &err);
    scfm_gelu_forward(out, x, n);
    scfm_gelu_backward(dinp, x, dout, n);
    CU_ASSERT_EQUAL(scfm_cuda_gelu_forward(ctx, d_out, d_x, n, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_gelu_backward(ctx, d_dinp, d_x, d_dout, n, &err), SCFM_OK);
    expect_close("GELU forward", d_out, out, n, 1e-5f, 1e-4f);
    expect_close("GELU backward", d_dinp, dinp, n, 1e-5f, 1e-4f);
    scfm_relu_forward(out, x, n);
    scfm_relu_backward(dinp, x, dout, n);
    CU_ASSERT_EQUAL(scfm_cuda_relu_forward(ctx, d_out, d_x, n, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_relu_backward(ctx, d_dinp, d_x, d_dout, n, &err), SCFM_OK);
    expect_close("ReLU forward", d_out, out, n, 0, 0);
    expect_close("ReLU backward", d_dinp, dinp, n, 0, 0);
    scfm_cuda_free(d_x), scfm_cuda_free(d_dout), scfm_cuda_free(d_out), scfm_cuda_free(d_dinp);
    free(x), free(dout), free(out), free(dinp);
}

/* 37 token rows of 5 cells (ids 1000..1004, positions restarting in each),
 * keyed on the GPU from one key per cell. */
static void test_dropout(void) {
    const int rows = 37, n = 129, cells = 5;
    const float p = 0.3f;
    float *x = random_floats((size_t)rows * n, -1, 1), *g = random_floats((size_t)rows * n, -1, 1);
    float *want = malloc(sizeof(float) * rows * n), *want_g = malloc(sizeof(float) * rows * n);
    memcpy(want_g, g, sizeof(float) * rows * n);
    int32_t token_cell[37], positions[37];
    uint64_t cell_keys[5];
    for (int c = 0; c < cells; c++) cell_keys[c] = scfm_dropout_cell_key(7, 2, 3, 1000 + c);
    for (int t = 0; t < rows; t++) {
        token_cell[t] = t * cells / rows;
        positions[t] = t - (token_cell[t] * rows + cells - 1) / cells;
        const uint64_t key = scfm_dropout_key(7, 2, 3, 1000 + token_cell[t], positions[t]);
        scfm_dropout_apply(want + (size_t)t * n, x + (size_t)t * n, want_g + (size_t)t * n, n, p, key);
    }
    float *d_x = to_device(x, sizeof(float) * rows * n), *d_g = to_device(g, sizeof(float) * rows * n), *d_out = NULL;
    uint64_t *d_keys = to_device(cell_keys, sizeof cell_keys);
    int32_t *d_cell = to_device(token_cell, sizeof token_cell), *d_pos = to_device(positions, sizeof positions);
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * rows * n, &err);
    CU_ASSERT_EQUAL(scfm_cuda_dropout_tokens(ctx, d_out, d_x, d_g, rows, n, p, d_keys, d_cell, d_pos, &err), SCFM_OK);
    expect_close("dropout (values)", d_out, want, (size_t)rows * n, 0, 0);
    expect_close("dropout (gradient)", d_g, want_g, (size_t)rows * n, 0, 0);
    scfm_cuda_free(d_x), scfm_cuda_free(d_g), scfm_cuda_free(d_out), scfm_cuda_free(d_keys), scfm_cuda_free(d_cell),
        scfm_cuda_free(d_pos);
    free(x), free(g), free(want), free(want_g);
}

static void test_linear(void) {
    const int T = 133, C = 72, OC = 200;
    float *x = random_floats((size_t)T * C, -1, 1), *w = random_floats((size_t)OC * C, -0.2f, 0.2f);
    float *b = random_floats(OC, -1, 1), *dout = random_floats((size_t)T * OC, -1, 1);
    /* the CPU reference multiplies what the GPU multiplies: bf16 values */
    float *x16 = malloc(sizeof(float) * T * C), *w16 = malloc(sizeof(float) * OC * C), *dout16 = malloc(sizeof(float) * T * OC);
    for (int i = 0; i < T * C; i++) x16[i] = round_bf16(x[i]);
    for (int i = 0; i < OC * C; i++) w16[i] = round_bf16(w[i]);
    for (int i = 0; i < T * OC; i++) dout16[i] = round_bf16(dout[i]);
    float *out = malloc(sizeof(float) * T * OC), *dinp = malloc(sizeof(float) * T * C);
    float *dw = random_floats((size_t)OC * C, -1, 1), *db = random_floats(OC, -1, 1);
    float *d_dw = to_device(dw, sizeof(float) * OC * C), *d_db = to_device(db, sizeof(float) * OC);
    scfm_linear_forward(out, x16, w16, b, T, C, OC);
    scfm_linear_backward(dinp, dw, NULL, dout16, x16, w16, T, C, OC, 0);
    scfm_bias_backward(db, dout, T, OC); /* the bias gradient sums the fp32 dout */
    float *d_x = to_device(x, sizeof(float) * T * C), *d_w = to_device(w, sizeof(float) * OC * C),
          *d_b = to_device(b, sizeof(float) * OC), *d_dout = to_device(dout, sizeof(float) * T * OC);
    float *d_out = NULL, *d_dinp = NULL;
    scfm_bf16 *d_x16 = NULL, *d_w16 = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * T * OC, &err);
    scfm_cuda_alloc((void **)&d_dinp, sizeof(float) * T * C, &err);
    scfm_cuda_alloc((void **)&d_x16, sizeof(scfm_bf16) * T * C, &err);
    scfm_cuda_alloc((void **)&d_w16, sizeof(scfm_bf16) * OC * C, &err);
    CU_ASSERT_EQUAL(scfm_cuda_to_bf16(ctx, d_x16, d_x, (size_t)T * C, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_to_bf16(ctx, d_w16, d_w, (size_t)OC * C, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_linear_forward(ctx, d_out, d_x16, d_w16, d_b, T, C, OC, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_linear_backward(ctx, d_dinp, d_dw, d_db, d_dout, d_x16, d_w16, T, C, OC, 0, &err),
                    SCFM_OK);
    expect_close("Linear forward (bf16)", d_out, out, (size_t)T * OC, 1e-4f, 2e-3f);
    expect_close("Linear backward input (bf16)", d_dinp, dinp, (size_t)T * C, 1e-4f, 2e-3f);
    expect_close("Linear backward weight (bf16)", d_dw, dw, (size_t)OC * C, 1e-4f, 2e-3f);
    expect_close("Linear backward bias", d_db, db, OC, 1e-5f, 1e-4f);
    void *dev[] = {d_dw, d_db, d_x, d_w, d_b, d_dout, d_out, d_dinp, d_x16, d_w16};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) scfm_cuda_free(dev[i]);
    free(x), free(w), free(b), free(dout), free(x16), free(w16), free(dout16), free(out), free(dinp), free(dw),
        free(db);
}

static void test_crossentropy(void) {
    const int N = 57, V = 2003;
    const float scale = 1.0f / 57.0f;
    float *logits = random_floats((size_t)N * V, -6, 6), *want = malloc(sizeof(float) * N * V);
    int32_t labels[57];
    for (int n = 0; n < N; n++) labels[n] = (int32_t)(uniform(0, 1) * V) % V;
    memcpy(want, logits, sizeof(float) * N * V);
    double cpu_loss = scfm_crossentropy_forward(want, labels, N, V), gpu_loss = 0.0;
    scfm_crossentropy_backward(want, labels, N, V, scale);
    float *d_logits = to_device(logits, sizeof(float) * N * V);
    int32_t *d_labels = to_device(labels, sizeof labels);
    CU_ASSERT_EQUAL(scfm_cuda_crossentropy(ctx, d_logits, d_labels, N, V, scale, &gpu_loss, &err), SCFM_OK);
    printf("\n    cross-entropy loss: cpu %.9g gpu %.9g ", cpu_loss, gpu_loss);
    CU_ASSERT(fabs(gpu_loss - cpu_loss) <= 1e-5 * fabs(cpu_loss));
    expect_close("cross-entropy gradient", d_logits, want, (size_t)N * V, 1e-7f, 1e-4f);
    scfm_cuda_free(d_logits), scfm_cuda_free(d_labels);
    free(logits), free(want);
}

/* Cells of lengths with repeats (one batched group of several cells), a
 * length-1 cell and an empty one; with and without dropout. */
/* The CPU's attention over random q, k, v and output gradient: its output,
 * probabilities and input gradient. */
typedef struct {
    float *qkv, *dout, *out, *probs, *dqkv;
} attention_reference;

static void cpu_attention(attention_reference *r, const int32_t *offsets, int n_cells, int C, int heads,
                          const scfm_attention_dropout *drop, int max_len) {
    const int T = offsets[n_cells];
    const size_t np = scfm_attention_probs_size(offsets, n_cells, heads);
    r->qkv = random_floats((size_t)T * 3 * C, -1, 1);
    r->dout = random_floats((size_t)T * C, -1, 1);
    r->out = malloc(sizeof(float) * T * C);
    r->probs = malloc(sizeof(float) * np);
    r->dqkv = malloc(sizeof(float) * T * 3 * C);
    float *scratch = malloc(sizeof(float) * 2 * (size_t)max_len * max_len * 64); /* up to 64 OpenMP threads */
    scfm_attention_forward(r->out, r->probs, r->qkv, offsets, n_cells, C, heads, drop, scratch, max_len);
    scfm_attention_backward(r->dqkv, r->dout, r->qkv, r->probs, offsets, n_cells, C, heads, drop, scratch, max_len);
    free(scratch);
}

static void attention_reference_free(attention_reference *r) {
    free(r->qkv), free(r->dout), free(r->out), free(r->probs), free(r->dqkv);
}

static void attention_case(float p) {
    const int C = 64, heads = 4, n_cells = 6;
    const int32_t offsets[] = {0, 17, 40, 57, 58, 58, 91};
    const int64_t cell_ids[] = {11, 12, 13, 14, 15, 16};
    const int T = offsets[n_cells], max_len = 33;
    const scfm_attention_dropout drop = {p, 99, 1, 5, cell_ids};
    scfm_cuda_varlen_plan plan;
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_varlen_plan_build(&plan, offsets, n_cells, heads, &err), SCFM_OK);
    const size_t np = plan.probs_size;
    attention_reference r;
    cpu_attention(&r, offsets, n_cells, C, heads, &drop, max_len);
    const float *out = r.out, *probs = r.probs, *dqkv = r.dqkv;
    float *d_qkv = to_device(r.qkv, sizeof(float) * T * 3 * C), *d_dout = to_device(r.dout, sizeof(float) * T * C);
    float *d_out = NULL, *d_probs = NULL, *d_dqkv = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * T * C, &err);
    scfm_cuda_alloc((void **)&d_probs, sizeof(float) * np, &err);
    scfm_cuda_alloc((void **)&d_dqkv, sizeof(float) * T * 3 * C, &err);
    CU_ASSERT_EQUAL(scfm_cuda_attention_forward(ctx, d_out, d_probs, d_qkv, &plan, C, &drop, &err), SCFM_OK);
    CU_ASSERT_EQUAL(scfm_cuda_attention_backward(ctx, d_dqkv, d_dout, d_qkv, d_probs, &plan, C, &drop, &err), SCFM_OK);
    expect_close(p > 0 ? "attention probabilities (dropout 0.2)" : "attention probabilities", d_probs, probs, np,
                 1e-5f, 1e-3f);
    expect_close(p > 0 ? "attention output (dropout 0.2)" : "attention output", d_out, out, (size_t)T * C, 1e-5f,
                 1e-3f);
    expect_close(p > 0 ? "attention backward (dropout 0.2)" : "attention backward", d_dqkv, dqkv, (size_t)T * 3 * C,
                 1e-5f, 1e-3f);
    scfm_cuda_free(d_qkv), scfm_cuda_free(d_dout), scfm_cuda_free(d_out), scfm_cuda_free(d_probs),
        scfm_cuda_free(d_dqkv);
    attention_reference_free(&r);
    scfm_cuda_varlen_plan_free(&plan);
}

static void test_attention(void) {
    attention_case(0.0f);
    attention_case(0.2f);
}

/* ||gpu - cpu|| / ||cpu|| over n values below tol, reported. */
static void expect_relative_l2(const char *what, const float *d_got, const float *want, size_t n, double tol) {
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_sync(ctx, &err), SCFM_OK);
    float *got = malloc(sizeof(float) * (n ? n : 1));
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_download(got, d_got, sizeof(float) * n, &err), SCFM_OK);
    const double e = scfm_test_relative_l2(got, want, n, 0.0);
    printf("\n  %s: relative L2 error %.3e (tolerance %.0e)", what, e, tol);
    CU_ASSERT(e < tol);
    free(got);
}

/* Flash attention against the CPU's attention: cells of 3 tiles (the last
 * partial), exactly one tile, one token, none, and 4 tiles, heads of width
 * 16, 32 and 64, with and without dropout (the CPU's masks). bf16 products:
 * the output within 1e-2 and the gradient within 2e-2 relative L2. */
static void flash_case(int C, int heads, float p) {
    const int n_cells = 6;
    const int32_t offsets[] = {0, 130, 194, 195, 195, 272, 472};
    const int64_t cell_ids[] = {21, 22, 23, 24, 25, 26};
    const int T = offsets[n_cells], max_len = 200;
    const uint32_t site = 4;
    const scfm_attention_dropout drop = {p, 99, 1, site, cell_ids};
    attention_reference r;
    cpu_attention(&r, offsets, n_cells, C, heads, &drop, max_len);
    uint64_t keys[6];
    for (int c = 0; c < n_cells; c++) keys[c] = scfm_dropout_cell_key(99, 1, site, cell_ids[c]);
    scfm_cuda_flash_plan plan = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_flash_plan_build(&plan, offsets, n_cells, &err), SCFM_OK);
    CU_ASSERT_EQUAL_FATAL(scfm_cuda_flash_plan_upload(ctx, &plan, &err), SCFM_OK);
    float *d_qkv = to_device(r.qkv, sizeof(float) * T * 3 * C), *d_dout = to_device(r.dout, sizeof(float) * T * C);
    uint64_t *d_keys = to_device(keys, sizeof keys);
    float *d_out = NULL, *d_lse = NULL, *d_dqkv = NULL;
    scfm_cuda_alloc((void **)&d_out, sizeof(float) * T * C, &err);
    scfm_cuda_alloc((void **)&d_lse, sizeof(float) * T * heads, &err);
    scfm_cuda_alloc((void **)&d_dqkv, sizeof(float) * T * 3 * C, &err);
    CU_ASSERT_EQUAL(scfm_cuda_flash_forward(ctx, d_out, d_lse, d_qkv, &plan, C, heads, d_keys, p, &err), SCFM_OK);
    CU_ASSERT_EQUAL(
        scfm_cuda_flash_backward(ctx, d_dqkv, d_dout, d_qkv, d_out, d_lse, &plan, C, heads, d_keys, p, &err),
        SCFM_OK);
    char what[96];
    snprintf(what, sizeof what, "flash output, head width %d, dropout %.1f", C / heads, p);
    expect_relative_l2(what, d_out, r.out, (size_t)T * C, 1e-2);
    snprintf(what, sizeof what, "flash backward, head width %d, dropout %.1f", C / heads, p);
    expect_relative_l2(what, d_dqkv, r.dqkv, (size_t)T * 3 * C, 2e-2);
    scfm_cuda_free(d_qkv), scfm_cuda_free(d_dout), scfm_cuda_free(d_keys), scfm_cuda_free(d_out),
        scfm_cuda_free(d_lse), scfm_cuda_free(d_dqkv);
    attention_reference_free(&r);
    scfm_cuda_flash_plan_free(&plan);
}

static void test_flash_attention(void) {
    for (int d = 16; d <= 64; d *= 2) {
        CU_ASSERT(scfm_cuda_flash_supported(4 * d, 4));
        flash_case(4 * d, 4, 0.0f);
        flash_case(4 * d, 4, 0.2f);
    }
    CU_ASSERT(!scfm_cuda_flash_supported(96, 4)); /* width 24 */
}

/* AdamW over a small model's buffer, tensor by tensor (decay per tensor). */
static void test_adamw(void) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    cfg.model.vocab_size = 50, cfg.model.layers = 1, cfg.model.hidden = 16, cfg.model.heads = 2;
    cfg.model.ffn = 32, cfg.model.max_len = 16;
    scfm_model *model = NULL;
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg.model, &model, &err), SCFM_OK);
    scfm_model_init_weights(model, 3);
    const size_t n = scfm_model_num_params(model);
    float *g = scfm_model_grads(model);
    for (size_t i = 0; i < n; i++) g[i] = uniform(-1, 1);
    float *m = random_floats(n, -0.1f, 0.1f), *v = random_floats(n, 0, 0.01f);
    float *d_p = to_device(scfm_model_params(model), sizeof(float) * n), *d_g = to_device(g, sizeof(float) * n),
          *d_m = to_device(m, sizeof(float) * n), *d_v = to_device(v, sizeof(float) * n);
    const int64_t t = 7;
    const double lr = 1e-3;
    scfm_adamw_update(model, g, m, v, 0, n, t, lr, &cfg.train);
    /* the coefficients scfm_adamw_update derives from the configuration */
    const scfm_train_config *tc = &cfg.train;
    for (int k = 0; k < scfm_model_num_tensors(model); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(model, k);
        scfm_cuda_adamw_args a = {(float)tc->beta1, (float)tc->beta2, (float)tc->adam_eps,
                                  ti->decay ? (float)(1.0 - lr * tc->weight_decay) : 1.0f,
                                  (float)(lr / (1.0 - pow(tc->beta1, (double)t))),
                                  (float)(1.0 / sqrt(1.0 - pow(tc->beta2, (double)t)))};
        CU_ASSERT_EQUAL(scfm_cuda_adamw(ctx, d_p + ti->offset, d_g + ti->offset, d_m + ti->offset, d_v + ti->offset,
                                        ti->size, &a, &err),
                        SCFM_OK);
    }
    expect_close("AdamW parameters", d_p, scfm_model_params(model), n, 1e-7f, 1e-5f);
    expect_close("AdamW first moments", d_m, m, n, 1e-8f, 1e-5f);
    expect_close("AdamW second moments", d_v, v, n, 1e-10f, 1e-5f);
    scfm_cuda_free(d_p), scfm_cuda_free(d_g), scfm_cuda_free(d_m), scfm_cuda_free(d_v);
    free(m), free(v);
    scfm_model_free(model);
}

static CU_TestInfo tests[] = {
    {"embedding", test_embedding},
    {"LayerNorm", test_layernorm},
    {"GELU and ReLU", test_activations},
    {"dropout masks", test_dropout},
    {"Linear (bf16 GEMM)", test_linear},
    {"fused cross-entropy", test_crossentropy},
    {"varlen attention", test_attention},
    {"flash attention", test_flash_attention},
    {"AdamW", test_adamw},
    CU_TEST_INFO_NULL,
};

int main(void) {
    scfm_error why = {0};
    if (scfm_cuda_device_count(&why) == 0) {
        printf("skipped: no CUDA device (%s)\n", why.message);
        return 77;
    }
    if (scfm_cuda_ctx_create(0, &ctx, &err) != SCFM_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int rc = scfm_test_run("cuda_kernels", tests);
    if (rc == 0 && err.status != SCFM_OK) {
        fprintf(stderr, "a CUDA call failed: %s\n", err.message);
        rc = 1;
    }
    scfm_cuda_ctx_free(ctx);
    return rc;
}
