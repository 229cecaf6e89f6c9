/* The whole model against PyTorch: loss, final hidden states and every
 * parameter gradient of a tiny BERT on one packed batch, compared with
 * fixtures from tests/reference/make_hf_fixtures.py (transformers'
 * BertForMaskedLM for post-LN, a functional PyTorch model checked against it
 * for pre-LN; float64, stored as float32); and the value objectives (value
 * head, MVC, value and condition embeddings) against the functional PyTorch
 * model of tests/reference/make_value_fixture.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "scfm/data.h"
#include "scfm/io.h"
#include "scfm/model.h"

#define LOSS_TOL 1e-4
#define HIDDEN_TOL 1e-4
#define GRAD_TOL 1e-3
/* The key bias gets no gradient in exact arithmetic (softmax ignores a shift
 * shared by all keys), so its reference is rounding noise; errors are
 * measured against at least this fraction of the largest gradient. */
#define GRAD_FLOOR 1e-3

static int is_parameter(const char *name) {
    return strncmp(name, "grad.", 5) != 0 && strncmp(name, "input.", 6) != 0 &&
           strncmp(name, "output.", 7) != 0;
}

static int meta_long(const scfm_safetensors *f, const char *key, long *out) {
    const char *s = scfm_safetensors_meta(f, key);
    char *end;
    if (!s) {
        fprintf(stderr, "\n  %s: no metadata '%s'\n", scfm_safetensors_path(f), key);
        return 0;
    }
    *out = strtol(s, &end, 10);
    return end != s && *end == '\0';
}

static int config_from_metadata(const scfm_safetensors *f, scfm_model_config *cfg) {
    long v[6];
    const char *keys[6] = {"vocab_size", "hidden", "heads", "layers", "ffn", "max_len"};
    for (int i = 0; i < 6; i++)
        if (!meta_long(f, keys[i], &v[i])) return 0;
    const char *act = scfm_safetensors_meta(f, "activation");
    const char *norm = scfm_safetensors_meta(f, "norm");
    const char *eps = scfm_safetensors_meta(f, "layer_norm_eps");
    if (!act || !norm || !eps) return 0;
    memset(cfg, 0, sizeof *cfg);
    cfg->vocab_size = (int)v[0];
    cfg->hidden = (int)v[1];
    cfg->heads = (int)v[2];
    cfg->layers = (int)v[3];
    cfg->ffn = (int)v[4];
    cfg->max_len = (int)v[5];
    cfg->activation = strcmp(act, "relu") == 0 ? SCFM_ACT_RELU : SCFM_ACT_GELU;
    cfg->norm = strcmp(norm, "pre") == 0 ? SCFM_NORM_PRE : SCFM_NORM_POST;
    cfg->position = SCFM_POS_LEARNED;
    cfg->dropout = 0.0;
    cfg->attention_dropout = 0.0;
    cfg->layer_norm_eps = strtod(eps, NULL);
    cfg->init_std = 0.02;
    return (strcmp(act, "relu") == 0 || strcmp(act, "gelu") == 0) &&
           (strcmp(norm, "pre") == 0 || strcmp(norm, "post") == 0);
}

/* Copies every fixture parameter into m; both sides must name the same set
 * of tensors with the same shapes. Returns the number of mismatches. */
static int load_parameters(scfm_model *m, const scfm_safetensors *f) {
    int bad = 0;
    float *params = scfm_model_params(m);
    for (int i = 0; i < scfm_model_num_tensors(m); i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        const scfm_st_tensor *t = scfm_safetensors_find(f, ti->name);
        int same = t && t->dtype == SCFM_DTYPE_F32 && t->ndim == ti->ndim;
        for (int d = 0; same && d < ti->ndim; d++) same = t->shape[d] == ti->shape[d];
        if (!same) {
            fprintf(stderr, "\n  model tensor %s: %s in the fixture\n", ti->name,
                    t ? "different dtype or shape" : "absent");
            bad++;
            continue;
        }
        memcpy(params + ti->offset, t->data, sizeof(float) * ti->size);
    }
    for (int i = 0; i < scfm_safetensors_count(f); i++) {
        const char *name = scfm_safetensors_at(f, i)->name;
        if (is_parameter(name) && !scfm_model_find_tensor(m, name)) {
            fprintf(stderr, "\n  fixture parameter %s: absent from the model\n", name);
            bad++;
        }
    }
    return bad;
}

/* Packs the fixture's padded rows without padding; targets straight from the
 * labels (the fixture's corruption is already in input_ids). */
static int pack_batch(const scfm_safetensors *f, scfm_batch *b, int max_len) {
    const scfm_st_tensor *ids, *mask, *labels;
    scfm_error err;
    scfm_error_clear(&err);
    if (scfm_safetensors_expect(f, "input.input_ids", SCFM_DTYPE_I32, -1, NULL, &ids, &err) ||
        scfm_safetensors_expect(f, "input.attention_mask", SCFM_DTYPE_I32, -1, NULL, &mask, &err) ||
        scfm_safetensors_expect(f, "input.labels", SCFM_DTYPE_I32, -1, NULL, &labels, &err) ||
        ids->ndim != 2 || ids->shape[1] != max_len ||
        scfm_st_tensor_numel(mask) != scfm_st_tensor_numel(ids) ||
        scfm_st_tensor_numel(labels) != scfm_st_tensor_numel(ids)) {
        fprintf(stderr, "\n  bad fixture inputs: %s\n", err.message);
        return 0;
    }
    const int32_t *id = ids->data, *am = mask->data, *lab = labels->data;
    const int rows = (int)ids->shape[0];
    for (int c = 0; c < rows; c++) {
        int length = 0;
        while (length < max_len && am[c * max_len + length]) length++;
        if (scfm_batch_add_cell(b, c, id + c * max_len, length, &err) != SCFM_OK) {
            fprintf(stderr, "\n  %s\n", err.message);
            return 0;
        }
    }
    /* scfm_batch_add_cell sizes the target arrays for every token. */
    if (!b->target_index || !b->target_label || b->cap_tokens < b->n_tokens) return 0;
    b->n_targets = 0;
    for (int c = 0; c < rows; c++) {
        for (int p = 0; p < max_len; p++) {
            int32_t label = lab[c * max_len + p];
            int real = p < b->cell_offsets[c + 1] - b->cell_offsets[c];
            if (label == -100) continue;
            if (!real) return 0;  /* a target on padding */
            b->target_index[b->n_targets] = b->cell_offsets[c] + p;
            b->target_label[b->n_targets] = label;
            b->n_targets++;
        }
    }
    return b->n_targets > 0;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

static double hidden_error(const scfm_model *m, const scfm_safetensors *f, const scfm_batch *b,
                           int max_len, int C) {
    const scfm_st_tensor *ref = scfm_safetensors_find(f, "output.hidden");
    if (!ref || ref->dtype != SCFM_DTYPE_F32 || scfm_st_tensor_numel(ref) != (int64_t)b->n_cells * max_len * C)
        return INFINITY;
    const float *h = scfm_model_hidden(m), *r = ref->data;
    double diff = 0, scale = 0;
    for (int c = 0; c < b->n_cells; c++) {
        for (int t = b->cell_offsets[c]; t < b->cell_offsets[c + 1]; t++) {
            const float *want = r + ((size_t)c * max_len + (size_t)(t - b->cell_offsets[c])) * C;
            for (int k = 0; k < C; k++) {
                diff = fmax(diff, fabs((double)h[(size_t)t * C + k] - want[k]));
                scale = fmax(scale, fabs((double)want[k]));
            }
        }
    }
    return diff / scale;
}

/* Largest per-tensor error max|g - ref| / max(max|ref|, floor); its tensor in *worst. */
static double gradient_error(scfm_model *m, const scfm_safetensors *f, const char **worst) {
    const float *grads = scfm_model_grads(m);
    char name[sizeof ((scfm_tensor_info *)0)->name + 8];
    double largest = 0;
    for (int i = 0; i < scfm_model_num_tensors(m); i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        snprintf(name, sizeof name, "grad.%s", ti->name);
        const scfm_st_tensor *ref = scfm_safetensors_find(f, name);
        if (!ref || ref->dtype != SCFM_DTYPE_F32 || scfm_st_tensor_numel(ref) != (int64_t)ti->size) {
            *worst = ti->name;
            return INFINITY;
        }
        largest = fmax(largest, max_abs(ref->data, ti->size));
    }
    double err_max = 0;
    for (int i = 0; i < scfm_model_num_tensors(m); i++) {
        const scfm_tensor_info *ti = scfm_model_tensor(m, i);
        snprintf(name, sizeof name, "grad.%s", ti->name);
        const float *ref = scfm_safetensors_find(f, name)->data;
        const float *g = grads + ti->offset;
        double diff = 0;
        for (size_t k = 0; k < ti->size; k++) diff = fmax(diff, fabs((double)g[k] - ref[k]));
        double e = diff / fmax(max_abs(ref, ti->size), GRAD_FLOOR * largest);
        if (i == 0 || e > err_max) {
            err_max = e;
            *worst = ti->name;
        }
    }
    return err_max;
}

/* Opens a fixture and creates the model its metadata describes (value and
 * condition fields from it too) with its parameters; NULL on failure. */
static scfm_model *open_fixture(const char *file, scfm_safetensors **fp, scfm_model_config *cfg) {
    char path[512];
    snprintf(path, sizeof path, "%s/fixtures/%s", SCFM_TEST_SOURCE_DIR, file);
    scfm_error err;
    scfm_error_clear(&err);
    scfm_safetensors *f;
    if (scfm_safetensors_open(path, &f, &err) != SCFM_OK) {
        fprintf(stderr, "\n  %s\n", err.message);
        CU_FAIL_FATAL("cannot open the fixture");
    }
    CU_ASSERT_FATAL(config_from_metadata(f, cfg));
    long bins = 0, conditions = 0;
    if (scfm_safetensors_meta(f, "value_bins")) {
        CU_ASSERT_FATAL(meta_long(f, "value_bins", &bins) && meta_long(f, "num_conditions", &conditions));
        const char *loss = scfm_safetensors_meta(f, "value_loss");
        cfg->value_loss = loss && strcmp(loss, "mse") == 0 ? SCFM_VALUE_MSE : SCFM_VALUE_CE;
    }
    cfg->value_bins = (int)bins;
    cfg->num_conditions = (int)conditions;
    scfm_model *m = NULL;
    if (scfm_model_create(cfg, &m, &err) != SCFM_OK) {
        fprintf(stderr, "\n  %s\n", err.message);
        scfm_safetensors_close(f);
        CU_FAIL_FATAL("scfm_model_create failed");
    }
    CU_ASSERT_EQUAL(load_parameters(m, f), 0);
    *fp = f;
    return m;
}

static void check_fixture(const char *file) {
    scfm_safetensors *f;
    scfm_model_config cfg;
    scfm_model *m = open_fixture(file, &f, &cfg);
    scfm_error err;
    scfm_error_clear(&err);

    scfm_batch b;
    scfm_batch_init(&b);
    CU_ASSERT_FATAL(pack_batch(f, &b, cfg.max_len));

    double loss_sum = NAN;
    if (scfm_model_forward(m, &b, 0, 0, 0, &loss_sum, &err) != SCFM_OK) {
        fprintf(stderr, "\n  %s\n", err.message);
        CU_FAIL_FATAL("scfm_model_forward failed");
    }
    double loss = loss_sum / b.n_targets;
    const scfm_st_tensor *ref_loss = scfm_safetensors_find(f, "output.loss");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref_loss);
    double want = *(const float *)ref_loss->data;
    double loss_err = fabs(loss - want) / fabs(want);
    double hid_err = hidden_error(m, f, &b, cfg.max_len, cfg.hidden);

    scfm_model_zero_grad(m);
    scfm_model_backward(m, &b, 1.0f / (float)b.n_targets);
    const char *worst = "";
    double grad_err = gradient_error(m, f, &worst);

    printf("\n    %s: loss %.7f (reference %.7f, rel. error %.2e), hidden error %.2e, "
           "worst gradient %s %.2e ",
           file, loss, want, loss_err, hid_err, worst, grad_err);
    CU_ASSERT(loss_err <= LOSS_TOL);
    CU_ASSERT(hid_err <= HIDDEN_TOL);
    CU_ASSERT(grad_err <= GRAD_TOL);

    scfm_batch_free(&b);
    scfm_model_free(m);
    scfm_safetensors_close(f);
}

/* The fixture's packed batch with values, masked values and conditions. */
static int pack_value_batch(const scfm_safetensors *f, scfm_batch *b) {
    const scfm_st_tensor *tok, *off, *val, *idx, *tgt, *cond;
    scfm_error err;
    scfm_error_clear(&err);
    if (scfm_safetensors_expect(f, "input.tokens", SCFM_DTYPE_I32, -1, NULL, &tok, &err) ||
        scfm_safetensors_expect(f, "input.cell_offsets", SCFM_DTYPE_I32, -1, NULL, &off, &err) ||
        scfm_safetensors_expect(f, "input.values", SCFM_DTYPE_I32, 1, tok->shape, &val, &err) ||
        scfm_safetensors_expect(f, "input.value_index", SCFM_DTYPE_I32, -1, NULL, &idx, &err) ||
        scfm_safetensors_expect(f, "input.value_target", SCFM_DTYPE_I32, 1, idx->shape, &tgt, &err) ||
        scfm_safetensors_expect(f, "input.conditions", SCFM_DTYPE_I32, -1, NULL, &cond, &err) ||
        tok->ndim != 1 || off->ndim != 1 || idx->ndim != 1 || cond->ndim != 1 || cond->shape[0] + 1 != off->shape[0]) {
        fprintf(stderr, "\n  bad fixture inputs: %s\n", err.message);
        return 0;
    }
    const int32_t *offsets = off->data;
    for (int c = 0; c + 1 < (int)off->shape[0]; c++) {
        if (scfm_batch_add_cell(b, c, (const int32_t *)tok->data + offsets[c], offsets[c + 1] - offsets[c], &err)) {
            fprintf(stderr, "\n  %s\n", err.message);
            return 0;
        }
        b->conditions[c] = ((const int32_t *)cond->data)[c];
    }
    memcpy(b->values, val->data, sizeof(int32_t) * (size_t)b->n_tokens);
    b->n_value_targets = (int)idx->shape[0];
    memcpy(b->value_index, idx->data, sizeof(int32_t) * (size_t)b->n_value_targets);
    memcpy(b->value_target, tgt->data, sizeof(int32_t) * (size_t)b->n_value_targets);
    return b->n_value_targets > 0;
}

/* Loss and every gradient of the value objectives (no MLM term). */
static void check_value_fixture(const char *file) {
    scfm_safetensors *f;
    scfm_model_config cfg;
    scfm_model *m = open_fixture(file, &f, &cfg);
    const char *wv = scfm_safetensors_meta(f, "w_value"), *wm = scfm_safetensors_meta(f, "w_mvc");
    CU_ASSERT_FATAL(wv && wm);
    scfm_objective_config obj = {.mlm = 0.0, .value = strtod(wv, NULL), .mvc = strtod(wm, NULL)};
    scfm_model_set_objective(m, &obj);
    scfm_batch b;
    scfm_batch_init(&b);
    CU_ASSERT_FATAL(pack_value_batch(f, &b));
    scfm_error err;
    scfm_error_clear(&err);
    double loss_sum = NAN;
    CU_ASSERT_EQUAL_FATAL(scfm_model_forward(m, &b, 0, 0, 0, &loss_sum, &err), SCFM_OK);
    const int terms = scfm_model_loss_terms(m, &b);
    CU_ASSERT_EQUAL(terms, b.n_value_targets);
    double want = *(const float *)scfm_safetensors_find(f, "output.loss")->data;
    double loss_err = fabs(loss_sum / terms - want) / fabs(want);
    scfm_model_zero_grad(m);
    scfm_model_backward(m, &b, 1.0f / (float)terms);
    const char *worst = "";
    double grad_err = gradient_error(m, f, &worst);
    printf("\n    %s: loss %.7f (reference %.7f, rel. error %.2e), worst gradient %s %.2e ", file,
           loss_sum / terms, want, loss_err, worst, grad_err);
    CU_ASSERT(loss_err <= LOSS_TOL);
    CU_ASSERT(grad_err <= GRAD_TOL);
    scfm_batch_free(&b);
    scfm_model_free(m);
    scfm_safetensors_close(f);
}

static void test_value_ce(void) { check_value_fixture("value_ce.safetensors"); }
static void test_value_mse(void) { check_value_fixture("value_mse.safetensors"); }

static void test_post_ln_gelu(void) { check_fixture("hf_post_ln_gelu.safetensors"); }
static void test_post_ln_relu(void) { check_fixture("hf_post_ln_relu.safetensors"); }
static void test_pre_ln_gelu(void) { check_fixture("hf_pre_ln_gelu.safetensors"); }

static CU_TestInfo tests[] = {
    {"post-LN GELU vs transformers", test_post_ln_gelu},
    {"post-LN ReLU vs transformers", test_post_ln_relu},
    {"pre-LN GELU vs PyTorch", test_pre_ln_gelu},
    {"value cross-entropy + MVC + condition vs PyTorch", test_value_ce},
    {"value squared error + MVC + condition vs PyTorch", test_value_mse},
    CU_TEST_INFO_NULL,
};

int main(void) { return scfm_test_run("hf_reference", tests); }
