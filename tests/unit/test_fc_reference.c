/* The count encoders against references (tests/reference/make_fc_fixtures.py):
 * the NB, ZINB and Poisson log-likelihood kernels against scipy.stats, and
 * the loss and every parameter gradient of a small mlp VAE (nb and zinb)
 * against the same network in PyTorch with the same weights. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "harness.h"
#include "scfm/io.h"
#include "scfm/model.h"

static scfm_safetensors *open_fixture(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/fixtures/%s", SCFM_TEST_SOURCE_DIR, name);
    scfm_safetensors *f = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_safetensors_open(path, &f, &err), SCFM_OK);
    return f;
}

static const void *data_of(scfm_safetensors *f, const char *name) {
    const scfm_st_tensor *t = scfm_safetensors_find(f, name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    return t->data;
}

/* Each element alone (one cell, one gene) so its theta is its own. */
static void test_likelihoods_vs_scipy(void) {
    scfm_safetensors *f = open_fixture("fc_likelihoods.safetensors");
    const int K = (int)scfm_st_tensor_numel(scfm_safetensors_find(f, "x"));
    const float *x = data_of(f, "x"), *mu = data_of(f, "mu"), *lt = data_of(f, "log_theta"), *pi = data_of(f, "pi");
    const double *nb = data_of(f, "nb"), *zinb = data_of(f, "zinb"), *poisson = data_of(f, "poisson");
    int bad = 0;
    for (int i = 0; i < K; i++) {
        double l[3], scratch[SCFM_NB_SCRATCH(1)];
        scfm_nb_forward(&l[0], NULL, NULL, NULL, &x[i], &mu[i], &lt[i], NULL, 1, 1, scratch);
        scfm_nb_forward(&l[1], NULL, NULL, NULL, &x[i], &mu[i], &lt[i], &pi[i], 1, 1, scratch);
        scfm_poisson_forward(&l[2], &x[i], &mu[i], 1, 1);
        const double ref[3] = {nb[i], zinb[i], poisson[i]};
        for (int k = 0; k < 3; k++)
            /* scVI's eps 1e-8 inside the logarithms: a relative 1e-8 shift */
            if (fabs(-l[k] - ref[k]) > 1e-6 * fmax(1.0, fabs(ref[k])) && bad++ < 5)
                fprintf(stderr, "\n  %d (%d): x %g mu %g: scfm %.10g scipy %.10g", i, k, x[i], mu[i], -l[k], ref[k]);
    }
    CU_ASSERT_EQUAL(bad, 0);
    scfm_safetensors_close(f);
}

static void check_vae(const char *name) {
    scfm_safetensors *f = open_fixture(name);
    scfm_model_config cfg = {0};
    cfg.encoder = SCFM_ENCODER_MLP;
    cfg.input = SCFM_COUNTS_LOG1P;
    cfg.genes = atoi(scfm_safetensors_meta(f, "genes"));
    cfg.fc_hidden = atoi(scfm_safetensors_meta(f, "fc_hidden"));
    cfg.fc_layers = atoi(scfm_safetensors_meta(f, "fc_layers"));
    cfg.latent = atoi(scfm_safetensors_meta(f, "latent"));
    cfg.num_conditions = atoi(scfm_safetensors_meta(f, "num_conditions"));
    cfg.variational = 1;
    cfg.dropout = 0.1; /* off in an evaluation forward */
    const char *into = scfm_safetensors_meta(f, "condition_into");
    cfg.condition_into = !strcmp(into, "both") ? SCFM_COND_BOTH : !strcmp(into, "encoder") ? SCFM_COND_ENCODER
                                                                                             : SCFM_COND_DECODER;
    cfg.likelihood = !strcmp(scfm_safetensors_meta(f, "likelihood"), "zinb") ? SCFM_LIK_ZINB : SCFM_LIK_NB;
    cfg.activation = !strcmp(scfm_safetensors_meta(f, "activation"), "gelu") ? SCFM_ACT_GELU : SCFM_ACT_RELU;
    scfm_model *m = NULL;
    scfm_error err = {0};
    CU_ASSERT_EQUAL_FATAL(scfm_model_create(&cfg, &m, &err), SCFM_OK);
    float *p = scfm_model_params(m);
    for (int k = 0; k < scfm_model_num_tensors(m); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, k);
        const scfm_st_tensor *t = scfm_safetensors_find(f, ti->name);
        CU_ASSERT_PTR_NOT_NULL_FATAL(t);
        CU_ASSERT_EQUAL_FATAL((size_t)scfm_st_tensor_numel(t), ti->size);
        memcpy(p + ti->offset, t->data, sizeof(float) * ti->size);
    }
    /* the dense counts as a batch of gene columns, zeros left out */
    const scfm_st_tensor *ct = scfm_safetensors_find(f, "input.counts");
    const int n = (int)ct->shape[0], G = cfg.genes;
    const float *counts = ct->data, *library = data_of(f, "input.library");
    const int32_t *conditions = data_of(f, "input.conditions");
    scfm_batch b;
    scfm_batch_init(&b);
    for (int c = 0; c < n; c++) {
        int32_t tokens[64];
        float values[64];
        int len = 0;
        for (int j = 0; j < G; j++)
            if (counts[c * G + j] > 0.0f) {
                tokens[len] = j;
                values[len++] = counts[c * G + j];
            }
        CU_ASSERT_EQUAL_FATAL(scfm_batch_add_cell(&b, 100 + c, tokens, len, &err), SCFM_OK);
        scfm_batch_set_counts(&b, values, library[c]);
        b.conditions[c] = conditions[c];
    }
    double loss = 0.0;
    CU_ASSERT_EQUAL_FATAL(scfm_model_forward(m, &b, 0, 1, 0, &loss, &err), SCFM_OK);
    const double ref = *(const float *)data_of(f, "loss");
    CU_ASSERT(fabs(loss - ref) <= 1e-4 * fabs(ref));
    if (fabs(loss - ref) > 1e-4 * fabs(ref)) fprintf(stderr, "\n  loss %.8g, PyTorch %.8g", loss, ref);
    scfm_model_zero_grad(m);
    scfm_model_backward(m, &b, 1.0f);
    const float *g = scfm_model_grads(m);
    double largest = 0.0;
    for (int k = 0; k < scfm_safetensors_count(f); k++) {
        const scfm_st_tensor *t = scfm_safetensors_at(f, k);
        if (strncmp(t->name, "grad.", 5)) continue;
        for (int64_t i = 0; i < scfm_st_tensor_numel(t); i++) largest = fmax(largest, fabs(((const float *)t->data)[i]));
    }
    for (int k = 0; k < scfm_model_num_tensors(m); k++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, k);
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", ti->name);
        const float *r = data_of(f, gname);
        double diff = 0.0, scale = 1e-3 * largest;
        for (size_t i = 0; i < ti->size; i++) {
            diff = fmax(diff, fabs(g[ti->offset + i] - r[i]));
            scale = fmax(scale, fabs(r[i]));
        }
        CU_ASSERT(diff <= 1e-3 * scale);
        if (diff > 1e-3 * scale) fprintf(stderr, "\n  %s: max difference %g of %g", ti->name, diff, scale);
    }
    scfm_batch_free(&b);
    scfm_model_free(m);
    scfm_safetensors_close(f);
}

static void test_nb_vae_vs_pytorch(void) { check_vae("fc_vae_nb.safetensors"); }
static void test_zinb_vae_vs_pytorch(void) { check_vae("fc_vae_zinb.safetensors"); }

static CU_TestInfo tests[] = {
    {"NB, ZINB, Poisson log-likelihoods vs scipy", test_likelihoods_vs_scipy},
    {"mlp NB VAE vs PyTorch", test_nb_vae_vs_pytorch},
    {"mlp ZINB VAE vs PyTorch", test_zinb_vae_vs_pytorch},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("fc_reference", tests); }
