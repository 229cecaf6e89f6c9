/* The BERT encoder with a masked-LM head, composed from the CPU kernels.
 *
 * Parameters, in buffer order, under their Hugging Face names:
 *   wte[V,C] wpe[P,C] ln_e{w,b}[C]
 *   per layer: w_qkv[3C,C] (query|key|value) b_qkv[3C] w_ao[C,C] b_ao[C] ln_a{w,b}[C]
 *              w_i[F,C] b_i[F] w_o[C,F] b_o[C] ln_f{w,b}[C]
 *   pre-LN only: ln_fin{w,b}[C]
 *   head: w_t[C,C] b_t[C] ln_t{w,b}[C] head_bias[V] (decoder tied to wte)
 *   num_labels K > 0 only: w_cls[K,C] b_cls[K] on the pooled cell embedding
 *   value_bins B > 0 only (docs/objectives.md): wve[B+1,C] after ln_e, the
 *   value head w_val[O,C] b_val[O] (O = B for "ce", 1 for "mse") and the MVC
 *   head w_q[C,C] b_q[C] w_mvc[C,C] after the classifier
 *   num_conditions > 0 only: wce[NC,C] after wve
 *   projection_dim P' > 0 only: w_p1[P',C] b_p1[P'] w_p2[P',P'] b_p2[P'] and,
 *     learned, log_tau[1]: the contrastive head (src/model/contrastive.c)
 * ln_a / ln_f are `attention.output.LayerNorm` / `output.LayerNorm`: after
 * the residual in post-LN (BERT), before attention / the FFN in pre-LN.
 *
 * A packed batch has T tokens in n cells, N masked targets and n_lab
 * labelled cells. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/vmath.h"
#include "model/model_impl.h"

/* ---- parameter layout --------------------------------------------------- */

float *scfm_model_place(scfm_layout_walk *lw, const char *name, int rows, int cols, int decay) {
    size_t size = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    if (lw->record) {
        scfm_tensor_info *ti = &lw->m->tensors[lw->m->n_tensors++];
        snprintf(ti->name, sizeof ti->name, "%.127s", name);
        ti->offset = lw->offset;
        ti->size = size;
        ti->ndim = cols > 0 ? 2 : 1;
        ti->shape[0] = rows;
        ti->shape[1] = cols > 0 ? cols : 0;
        ti->decay = decay;
    }
    float *p = lw->base ? lw->base + lw->offset : NULL;
    lw->offset += size;
    return p;
}

/* query, key and value are one [3C, C] matrix for a single sgemm, recorded as
 * three tensors so they keep their Hugging Face names. */
static float *place_qkv(scfm_layout_walk *lw, const char *prefix, const char *suffix, int C, int cols,
                        int decay) {
    static const char *parts[3] = {"query", "key", "value"};
    float *first = NULL;
    for (int i = 0; i < 3; i++) {
        char name[128];
        snprintf(name, sizeof name, "%.40s.attention.self.%s.%s", prefix, parts[i], suffix);
        float *p = scfm_model_place(lw, name, C, cols, decay);
        if (i == 0) first = p;
    }
    return first;
}

/* The value and condition embeddings sit with the other embeddings, so the
 * fine-tuning freeze and the gradient buckets treat them alike. */
static void place_value_embeddings(scfm_layout_walk *lw, weights *v) {
    const scfm_model *m = lw->m;
    v->wve = m->B > 0 ? scfm_model_place(lw, "bert.embeddings.value_embeddings.weight", m->B + 1, m->C, 1) : NULL;
    v->wce = m->NC > 0 ? scfm_model_place(lw, "bert.embeddings.condition_embeddings.weight", m->NC, m->C, 1) : NULL;
}

static void place_value_heads(scfm_layout_walk *lw, weights *v) {
    const scfm_model *m = lw->m;
    const int C = m->C;
    if (m->B == 0) {
        v->w_val = v->b_val = v->w_q = v->b_q = v->w_mvc = NULL;
        return;
    }
    v->w_val = scfm_model_place(lw, "cls.value.weight", m->O, C, 1);
    v->b_val = scfm_model_place(lw, "cls.value.bias", m->O, 0, 0);
    v->w_q = scfm_model_place(lw, "cls.mvc.gene2query.weight", C, C, 1);
    v->b_q = scfm_model_place(lw, "cls.mvc.gene2query.bias", C, 0, 0);
    v->w_mvc = scfm_model_place(lw, "cls.mvc.W.weight", C, C, 1);
}

/* The value fields of the model's shape, from its configuration. */
static void set_value_shape(scfm_model *m, const scfm_model_config *cfg) {
    m->B = cfg->value_bins;
    m->O = cfg->value_loss == SCFM_VALUE_MSE ? 1 : cfg->value_bins;
    m->NC = cfg->num_conditions;
}

static size_t walk_layout(scfm_model *m, float *base, weights *views, int record) {
    scfm_layout_walk lw = {m, base, 0, record};
    const int V = m->V, C = m->C, F = m->F;
    weights *v = views;
    v->wte = scfm_model_place(&lw, "bert.embeddings.word_embeddings.weight", V, C, 1);
    v->wpe = m->cfg.position == SCFM_POS_LEARNED
                 ? scfm_model_place(&lw, "bert.embeddings.position_embeddings.weight", m->P, C, 1)
                 : NULL;
    v->ln_e_w = scfm_model_place(&lw, "bert.embeddings.LayerNorm.weight", C, 0, 0);
    v->ln_e_b = scfm_model_place(&lw, "bert.embeddings.LayerNorm.bias", C, 0, 0);
    place_value_embeddings(&lw, v);
    for (int l = 0; l < m->NL; l++) {
        if (record) m->layer_begin[l] = lw.offset;
        layer_weights *L = &v->layers[l];
        char pre[40], name[128];
        snprintf(pre, sizeof pre, "bert.encoder.layer.%d", l);
#define NAMED(fmt) (snprintf(name, sizeof name, "%.39s." fmt, pre), name)
        L->w_qkv = place_qkv(&lw, pre, "weight", C, C, 1);
        L->b_qkv = place_qkv(&lw, pre, "bias", C, 0, 0);
        L->w_ao = scfm_model_place(&lw, NAMED("attention.output.dense.weight"), C, C, 1);
        L->b_ao = scfm_model_place(&lw, NAMED("attention.output.dense.bias"), C, 0, 0);
        L->ln_a_w = scfm_model_place(&lw, NAMED("attention.output.LayerNorm.weight"), C, 0, 0);
        L->ln_a_b = scfm_model_place(&lw, NAMED("attention.output.LayerNorm.bias"), C, 0, 0);
        L->w_i = scfm_model_place(&lw, NAMED("intermediate.dense.weight"), F, C, 1);
        L->b_i = scfm_model_place(&lw, NAMED("intermediate.dense.bias"), F, 0, 0);
        L->w_o = scfm_model_place(&lw, NAMED("output.dense.weight"), C, F, 1);
        L->b_o = scfm_model_place(&lw, NAMED("output.dense.bias"), C, 0, 0);
        L->ln_f_w = scfm_model_place(&lw, NAMED("output.LayerNorm.weight"), C, 0, 0);
        L->ln_f_b = scfm_model_place(&lw, NAMED("output.LayerNorm.bias"), C, 0, 0);
#undef NAMED
    }
    if (record) m->layer_begin[m->NL] = lw.offset;
    if (m->cfg.norm == SCFM_NORM_PRE) {
        v->ln_fin_w = scfm_model_place(&lw, "bert.encoder.final_layer_norm.weight", C, 0, 0);
        v->ln_fin_b = scfm_model_place(&lw, "bert.encoder.final_layer_norm.bias", C, 0, 0);
    } else {
        v->ln_fin_w = v->ln_fin_b = NULL;
    }
    v->w_t = scfm_model_place(&lw, "cls.predictions.transform.dense.weight", C, C, 1);
    v->b_t = scfm_model_place(&lw, "cls.predictions.transform.dense.bias", C, 0, 0);
    v->ln_t_w = scfm_model_place(&lw, "cls.predictions.transform.LayerNorm.weight", C, 0, 0);
    v->ln_t_b = scfm_model_place(&lw, "cls.predictions.transform.LayerNorm.bias", C, 0, 0);
    v->head_bias = scfm_model_place(&lw, "cls.predictions.bias", V, 0, 0);
    if (m->K > 0) {
        v->w_cls = scfm_model_place(&lw, "classifier.weight", m->K, C, 1);
        v->b_cls = scfm_model_place(&lw, "classifier.bias", m->K, 0, 0);
    } else {
        v->w_cls = v->b_cls = NULL;
    }
    place_value_heads(&lw, v);
    scfm_model_place_projection(&lw, v, C);
    return lw.offset;
}

void scfm_model_place_projection(scfm_layout_walk *lw, weights *v, int C) {
    const scfm_model *m = lw->m;
    v->w_p1 = v->b_p1 = v->w_p2 = v->b_p2 = v->log_tau = NULL;
    if (m->cfg.projection_dim > 0) {
        const int P = m->cfg.projection_dim;
        v->w_p1 = scfm_model_place(lw, "contrastive.projection.0.weight", P, C, 1);
        v->b_p1 = scfm_model_place(lw, "contrastive.projection.0.bias", P, 0, 0);
        v->w_p2 = scfm_model_place(lw, "contrastive.projection.2.weight", P, P, 1);
        v->b_p2 = scfm_model_place(lw, "contrastive.projection.2.bias", P, 0, 0);
        if (m->cfg.learn_temperature) v->log_tau = scfm_model_place(lw, "contrastive.log_temperature", 1, 0, 0);
    }
}

/* A count encoder (fc.c) in the model's buffers. */
static scfm_status create_fc(const scfm_model_config *cfg, scfm_model **out, scfm_error *err) {
    scfm_model *m = calloc(1, sizeof *m);
    if (!m) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
    m->cfg = *cfg;
    scfm_status st = scfm_fc_create(m, err);
    if (st != SCFM_OK) {
        scfm_model_free(m);
        return st;
    }
    *out = m;
    return SCFM_OK;
}

scfm_status scfm_model_create(const scfm_model_config *cfg, scfm_model **out, scfm_error *err) {
    *out = NULL;
    if (cfg->encoder != SCFM_ENCODER_TRANSFORMER) return create_fc(cfg, out, err);
    if (cfg->vocab_size < 3 || cfg->hidden < 1 || cfg->heads < 1 || cfg->hidden % cfg->heads ||
        cfg->layers < 1 || cfg->ffn < 1 || cfg->max_len < 1 || cfg->num_labels < 0 ||
        cfg->special_tokens < 0 || cfg->special_tokens >= cfg->vocab_size || cfg->value_bins < 0 ||
        cfg->value_bins == 1 || cfg->value_bins > 256 || cfg->num_conditions < 0 || cfg->projection_dim < 0 ||
        (cfg->projection_dim > 0 && !(cfg->temperature > 0.0)))
        return scfm_fail(err, SCFM_ERR_ARG,
                         "invalid model shape: vocab %d, hidden %d, heads %d, layers %d, ffn %d, "
                         "max_len %d, labels %d, special tokens %d, value bins %d, conditions %d",
                         cfg->vocab_size, cfg->hidden, cfg->heads, cfg->layers, cfg->ffn, cfg->max_len,
                         cfg->num_labels, cfg->special_tokens, cfg->value_bins, cfg->num_conditions);
    scfm_model *m = calloc(1, sizeof *m);
    if (!m) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
    m->cfg = *cfg;
    m->V = cfg->vocab_size;
    m->C = cfg->hidden;
    m->F = cfg->ffn;
    m->P = cfg->max_len;
    m->NL = cfg->layers;
    m->NH = cfg->heads;
    m->K = cfg->num_labels;
    m->first_gene = cfg->special_tokens > 0 ? cfg->special_tokens : SCFM_TOKEN_MASK + 1;
    set_value_shape(m, cfg);
    m->w_mlm = m->w_value = m->w_mvc = 1.0;
    m->w.layers = calloc((size_t)m->NL, sizeof(layer_weights));
    m->g.layers = calloc((size_t)m->NL, sizeof(layer_weights));
    m->acts = calloc((size_t)m->NL, sizeof(layer_acts));
    m->tensors = calloc((size_t)(16 * m->NL + 40), sizeof(scfm_tensor_info));
    m->layer_begin = calloc((size_t)m->NL + 1, sizeof(size_t));
    if (!m->w.layers || !m->g.layers || !m->acts || !m->tensors || !m->layer_begin) goto nomem;
    m->n_params = walk_layout(m, NULL, &m->w, 1);
    m->params = scfm_alloc(sizeof(float) * m->n_params);
    m->grads = scfm_alloc(sizeof(float) * m->n_params);
    if (!m->params || !m->grads) goto nomem;
    walk_layout(m, m->params, &m->w, 0);
    walk_layout(m, m->grads, &m->g, 0);
    *out = m;
    return SCFM_OK;
nomem:
    scfm_model_free(m);
    return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
}

size_t scfm_model_param_count(const scfm_model_config *cfg) {
    if (cfg->encoder != SCFM_ENCODER_TRANSFORMER) return scfm_fc_param_count(cfg);
    scfm_model m = {0};
    m.cfg = *cfg;
    m.V = cfg->vocab_size;
    m.C = cfg->hidden;
    m.F = cfg->ffn;
    m.P = cfg->max_len;
    m.NL = cfg->layers;
    m.K = cfg->num_labels;
    set_value_shape(&m, cfg);
    m.w.layers = calloc((size_t)m.NL, sizeof(layer_weights));
    if (!m.w.layers) return 0;
    size_t n = walk_layout(&m, NULL, &m.w, 0);
    free(m.w.layers);
    return n;
}

void scfm_model_free(scfm_model *m) {
    if (!m) return;
    scfm_free(m->params);
    scfm_free(m->grads);
    scfm_free(m->arena);
    free(m->positions);
    free(m->token_cell);
    free(m->cls_cell);
    free(m->cls_label);
    free(m->token_cond);
    free(m->mvc_cell_of);
    free(m->w.layers);
    free(m->g.layers);
    free(m->acts);
    free(m->tensors);
    free(m->layer_begin);
    scfm_projection_free(&m->proj);
    scfm_fc_free(m->fc);
    free(m);
}

const scfm_model_config *scfm_model_get_config(const scfm_model *m) { return &m->cfg; }
/* A count encoder has no layer to freeze (the configuration refuses
 * finetune.freeze_layers for it). */
size_t scfm_model_layer_offset(const scfm_model *m, int l) { return m->fc ? 0 : m->layer_begin[l]; }
int scfm_model_embedding_width(const scfm_model *m) { return m->fc ? m->cfg.latent : m->C; }
void scfm_model_set_step(scfm_model *m, int64_t step) {
    if (m->fc) scfm_fc_set_step(m->fc, step);
}
size_t scfm_model_num_params(const scfm_model *m) { return m->n_params; }
float *scfm_model_params(scfm_model *m) { return m->params; }
float *scfm_model_grads(scfm_model *m) { return m->grads; }
int scfm_model_num_tensors(const scfm_model *m) { return m->n_tensors; }
const scfm_tensor_info *scfm_model_tensor(const scfm_model *m, int i) { return &m->tensors[i]; }

const scfm_tensor_info *scfm_model_find_tensor(const scfm_model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

static int is_layernorm_weight(const char *name) {
    return strstr(name, "LayerNorm.weight") != NULL || strstr(name, "layer_norm.weight") != NULL;
}

void scfm_model_init_weights(scfm_model *m, uint64_t seed) {
    for (int i = 0; i < m->n_tensors; i++) {
        const scfm_tensor_info *ti = &m->tensors[i];
        float *p = m->params + ti->offset;
        if (ti->ndim == 2) {
            /* a count encoder's layers have no normalisation: LeCun-normal
             * keeps their activations at scale whatever their width */
            const float std = m->fc ? 1.0f / sqrtf((float)ti->shape[1]) : (float)m->cfg.init_std;
            for (size_t j = 0; j < ti->size; j++) {
                uint64_t index = ti->offset + j;
                uint32_t ctr[4] = {(uint32_t)index, (uint32_t)(index >> 32), 0, SCFM_STREAM_INIT};
                uint32_t r[4];
                scfm_philox(seed, ctr, r);
                p[j] = std * scfm_normal(r[0], r[1]);
            }
        } else {
            float value = is_layernorm_weight(ti->name) ? 1.0f : 0.0f;
            if (p == m->w.log_tau) value = logf((float)m->cfg.temperature);
            for (size_t j = 0; j < ti->size; j++) p[j] = value;
        }
    }
}

void scfm_model_zero_grad(scfm_model *m) {
    memset(m->grads, 0, sizeof(float) * m->n_params);
    m->n_deferred = 0;
}

double scfm_model_flops(const scfm_model *m, const scfm_batch *b, int with_backward) {
    if (m->fc) return scfm_fc_flops(m, b, with_backward);
    const double C = m->C, F = m->F, V = m->V;
    double per_token = 2.0 * (4.0 * C * C + 2.0 * C * F) * m->NL;
    double attention = 0.0;
    for (int c = 0; c < b->n_cells; c++) {
        double L = b->cell_offsets[c + 1] - b->cell_offsets[c];
        attention += 4.0 * L * L * C * m->NL;
    }
    double head = 2.0 * (C * C + C * V) * b->n_targets;
    double forward = per_token * b->n_tokens + attention + head;
    return with_backward ? 3.0 * forward : forward;
}

/* ---- activations ---------------------------------------------------- */

/* Places an array of n floats at base + off (base NULL: counts only), each
 * on a 64-byte boundary. */
#define TAKE(ptr, n) ((ptr) = base ? base + off : NULL, off += ((n) + 15) & ~(size_t)15)

size_t scfm_layer_acts_place(layer_acts *a, float *base, size_t off, size_t T, size_t C, size_t F, size_t probs) {
    TAKE(a->ln_a, T * C);
    TAKE(a->ln_a_mean, T);
    TAKE(a->ln_a_rstd, T);
    TAKE(a->qkv, 3 * T * C);
    TAKE(a->ctx, T * C);
    TAKE(a->probs, probs);
    TAKE(a->res1, T * C);
    TAKE(a->ln_f, T * C);
    TAKE(a->ln_f_mean, T);
    TAKE(a->ln_f_rstd, T);
    TAKE(a->f1, T * F);
    TAKE(a->act, T * F);
    TAKE(a->res2, T * C);
    return off;
}

/* Lays the arena out for T tokens, N targets and probs floats of attention
 * per layer; with base == NULL only counts. */
static size_t layout_arena(scfm_model *m, float *base, size_t T, size_t N, size_t cells, size_t probs) {
    const size_t C = m->C, F = m->F, V = m->V, K = m->K;
    size_t off = 0;
    TAKE(m->emb, T * C);
    TAKE(m->ln_e_mean, T);
    TAKE(m->ln_e_rstd, T);
    TAKE(m->x0, T * C);
    for (int l = 0; l < m->NL; l++) off = scfm_layer_acts_place(&m->acts[l], base, off, T, C, F, probs);
    TAKE(m->fin, T * C);
    TAKE(m->fin_mean, T);
    TAKE(m->fin_rstd, T);
    TAKE(m->g_in, N * C);
    TAKE(m->t1, N * C);
    TAKE(m->t2, N * C);
    TAKE(m->t3, N * C);
    TAKE(m->t_mean, N);
    TAKE(m->t_rstd, N);
    TAKE(m->logits, N * V);
    TAKE(m->dhead1, N * C);
    TAKE(m->dhead2, N * C);
    TAKE(m->pooled, cells * C);
    TAKE(m->cls_in, K ? cells * C : 0);
    TAKE(m->cls_logits, cells * K);
    /* value heads: up to a masked value per token */
    const size_t VT = m->B > 0 ? T : 0, VC = m->B > 0 ? cells : 0;
    TAKE(m->v_in, VT * C);
    TAKE(m->v_out, VT * (size_t)m->O);
    TAKE(m->dv_in, VT * C);
    TAKE(m->mvc_e, VT * C);
    TAKE(m->mvc_q1, VT * C);
    TAKE(m->mvc_q, VT * C);
    TAKE(m->mvc_wq, VT * C);
    TAKE(m->mvc_pred, VT);
    TAKE(m->mvc_cell, VC * C);
    TAKE(m->mvc_dcell, VC * C);
    TAKE(m->dres, T * C);
    TAKE(m->dtmp1, T * C);
    TAKE(m->dtmp2, T * C);
    TAKE(m->dqkv, 3 * T * C);
    TAKE(m->dff1, T * F);
    TAKE(m->dff2, T * F);
    TAKE(m->attn_scratch, (size_t)m->threads * 2 * (size_t)m->P * (size_t)m->P);
    return off;
}

#undef TAKE

static scfm_status reserve_activations(scfm_model *m, const scfm_batch *b, scfm_error *err) {
    size_t probs = scfm_attention_probs_size(b->cell_offsets, b->n_cells, m->NH);
    if (b->n_tokens <= m->cap_T && b->n_targets <= m->cap_N && b->n_cells <= m->cap_cells && probs <= m->cap_probs)
        return SCFM_OK;
    /* Grow with headroom so a stream of similar batches allocates once. */
    int T = b->n_tokens > m->cap_T ? b->n_tokens + b->n_tokens / 4 : m->cap_T;
    int N = b->n_targets > m->cap_N ? b->n_targets + b->n_targets / 4 + 16 : m->cap_N;
    int cells = b->n_cells > m->cap_cells ? b->n_cells + b->n_cells / 4 + 4 : m->cap_cells;
    size_t P = probs > m->cap_probs ? probs + probs / 4 : m->cap_probs;
    m->threads = omp_get_max_threads();
    scfm_free(m->arena);
    free(m->positions);
    free(m->token_cell);
    free(m->cls_cell);
    free(m->cls_label);
    free(m->token_cond);
    free(m->mvc_cell_of);
    m->cap_T = m->cap_N = m->cap_cells = 0;
    m->cap_probs = 0;
    size_t floats = layout_arena(m, NULL, (size_t)T, (size_t)N, (size_t)cells, P);
    m->arena = scfm_alloc(sizeof(float) * floats);
    m->positions = malloc(sizeof(int32_t) * (size_t)T);
    m->token_cell = malloc(sizeof(int32_t) * (size_t)T);
    m->cls_cell = malloc(sizeof(int32_t) * (size_t)cells);
    m->cls_label = malloc(sizeof(int32_t) * (size_t)cells);
    m->token_cond = malloc(sizeof(int32_t) * (size_t)T);
    m->mvc_cell_of = malloc(sizeof(int32_t) * (size_t)T);
    if (!m->arena || !m->positions || !m->token_cell || !m->cls_cell || !m->cls_label || !m->token_cond ||
        !m->mvc_cell_of)
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for activations of %d tokens (%.1f GiB)",
                         T, (double)floats * 4.0 / (1 << 30));
    layout_arena(m, m->arena, (size_t)T, (size_t)N, (size_t)cells, P);
    m->cap_T = T;
    m->cap_N = N;
    m->cap_cells = cells;
    m->cap_probs = P;
    return SCFM_OK;
}

/* ---- dropout sites ---------------------------------------------------- */

/* Applies (or, on a gradient, back-propagates) the hidden dropout of a site
 * to x[T, C]. */
static void dropout_tokens(const scfm_model *m, const scfm_batch *b, float *x, uint32_t site) {
    const float p = (float)m->cfg.dropout;
    if (!m->training || p <= 0.0f) return;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < b->n_tokens; t++) {
        uint64_t key = scfm_dropout_key(m->seed, m->epoch, site, b->cell_ids[m->token_cell[t]],
                                        m->positions[t]);
        scfm_dropout_row(x + (size_t)t * m->C, m->C, p, key);
    }
}

static scfm_attention_dropout attention_dropout(const scfm_model *m, const scfm_batch *b, int l) {
    scfm_attention_dropout d = {0.0f, m->seed, m->epoch, scfm_layer_site(l, SCFM_SITE_ATTN_PROBS), b->cell_ids};
    if (m->training) d.p = (float)m->cfg.attention_dropout;
    return d;
}

void scfm_model_activation_forward(const scfm_model *m, float *out, const float *inp, size_t n) {
    if (m->cfg.activation == SCFM_ACT_GELU)
        scfm_gelu_forward(out, inp, n);
    else
        scfm_relu_forward(out, inp, n);
}

void scfm_model_activation_backward(const scfm_model *m, float *dinp, const float *inp, const float *dout,
                                    size_t n) {
    if (m->cfg.activation == SCFM_ACT_GELU)
        scfm_gelu_backward(dinp, inp, dout, n);
    else
        scfm_relu_backward(dinp, inp, dout, n);
}

static void add_inplace(float *x, const float *y, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static const float *layer_output(const scfm_model *m, int l) {
    if (l < 0) return m->x0;
    return m->cfg.norm == SCFM_NORM_POST ? m->acts[l].ln_f : m->acts[l].res2;
}

const float *scfm_model_hidden(const scfm_model *m) {
    if (m->fc) return scfm_fc_latent(m);
    return m->cfg.norm == SCFM_NORM_PRE ? m->fin : layer_output(m, m->NL - 1);
}

/* ---- forward ---------------------------------------------------------- */

static scfm_status check_value_batch(const scfm_model *m, const scfm_batch *b, scfm_error *err) {
    for (int t = 0; m->B > 0 && t < b->n_tokens; t++)
        if (b->values[t] < 0 || b->values[t] > m->B)
            return scfm_fail(err, SCFM_ERR_ARG, "token %d has value %d; the model takes bins 0 to %d (%d: masked)", t,
                             b->values[t], m->B, m->B);
    for (int n = 0; m->B > 0 && n < b->n_value_targets; n++)
        if (b->value_index[n] < 0 || b->value_index[n] >= b->n_tokens || b->value_target[n] < 0 ||
            b->value_target[n] >= m->B)
            return scfm_fail(err, SCFM_ERR_ARG, "masked value %d is invalid", n);
    for (int c = 0; m->NC > 0 && c < b->n_cells; c++)
        if (b->conditions[c] < -1 || b->conditions[c] >= m->NC)
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has condition %d; the model has %d conditions",
                             (long long)b->cell_ids[c], b->conditions[c], m->NC);
    return SCFM_OK;
}

void scfm_model_token_places(const scfm_batch *b, int32_t *positions, int32_t *token_cell) {
    for (int c = 0; c < b->n_cells; c++)
        for (int t = b->cell_offsets[c]; t < b->cell_offsets[c + 1]; t++) {
            positions[t] = t - b->cell_offsets[c];
            token_cell[t] = c;
        }
}

scfm_status scfm_model_check_batch(const scfm_model *m, const scfm_batch *b, scfm_error *err) {
    for (int c = 0; c < b->n_cells; c++) {
        int L = b->cell_offsets[c + 1] - b->cell_offsets[c];
        if (L < 1 || L > m->P)
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has %d tokens; the model takes 1 to %d",
                             (long long)b->cell_ids[c], L, m->P);
    }
    for (int t = 0; t < b->n_tokens; t++)
        if (b->tokens[t] < 0 || b->tokens[t] >= m->V)
            return scfm_fail(err, SCFM_ERR_ARG, "token id %d outside the vocabulary of %d",
                             b->tokens[t], m->V);
    for (int n = 0; n < b->n_targets; n++)
        if (b->target_index[n] < 0 || b->target_index[n] >= b->n_tokens || b->target_label[n] < 0 ||
            b->target_label[n] >= m->V)
            return scfm_fail(err, SCFM_ERR_ARG, "masked target %d is invalid", n);
    for (int c = 0; m->K > 0 && c < b->n_cells; c++)
        if (b->labels[c] < -1 || b->labels[c] >= m->K)
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has label %d; the classifier has %d classes",
                             (long long)b->cell_ids[c], b->labels[c], m->K);
    return check_value_batch(m, b, err);
}

/* Post-LN (BERT):  res1 = x + drop(attn(x) w_ao);   h = LN_a(res1)
 *                  res2 = h + drop(act(h w_i) w_o); out = LN_f(res2)
 * Pre-LN:          res1 = x + drop(attn(LN_a(x)) w_ao)
 *                  out = res2 = res1 + drop(act(LN_f(res1) w_i) w_o)        */
static void layer_forward(scfm_model *m, const scfm_batch *b, int l) {
    const int T = b->n_tokens, C = m->C, F = m->F;
    const float eps = (float)m->cfg.layer_norm_eps;
    const layer_weights *w = &m->w.layers[l];
    layer_acts *a = &m->acts[l];
    const float *x = layer_output(m, l - 1);
    const int post = m->cfg.norm == SCFM_NORM_POST;
    scfm_attention_dropout drop = attention_dropout(m, b, l);

    const float *attn_in = x;
    if (!post) {
        scfm_layernorm_forward(a->ln_a, a->ln_a_mean, a->ln_a_rstd, x, w->ln_a_w, w->ln_a_b, T, C, eps);
        attn_in = a->ln_a;
    }
    scfm_linear_forward(a->qkv, attn_in, w->w_qkv, w->b_qkv, T, C, 3 * C);
    scfm_attention_forward(a->ctx, a->probs, a->qkv, b->cell_offsets, b->n_cells, C, m->NH, &drop,
                           m->attn_scratch, m->P);
    scfm_linear_forward(a->res1, a->ctx, w->w_ao, w->b_ao, T, C, C);
    dropout_tokens(m, b, a->res1, scfm_layer_site(l, SCFM_SITE_ATTN_OUT));
    add_inplace(a->res1, x, (size_t)T * C);

    const float *ffn_in;
    if (post) {
        scfm_layernorm_forward(a->ln_a, a->ln_a_mean, a->ln_a_rstd, a->res1, w->ln_a_w, w->ln_a_b, T,
                               C, eps);
        ffn_in = a->ln_a;
    } else {
        scfm_layernorm_forward(a->ln_f, a->ln_f_mean, a->ln_f_rstd, a->res1, w->ln_f_w, w->ln_f_b, T,
                               C, eps);
        ffn_in = a->ln_f;
    }
    scfm_linear_forward(a->f1, ffn_in, w->w_i, w->b_i, T, C, F);
    scfm_model_activation_forward(m, a->act, a->f1, (size_t)T * F);
    scfm_linear_forward(a->res2, a->act, w->w_o, w->b_o, T, F, C);
    dropout_tokens(m, b, a->res2, scfm_layer_site(l, SCFM_SITE_FFN_OUT));
    add_inplace(a->res2, post ? a->ln_a : a->res1, (size_t)T * C);
    if (post)
        scfm_layernorm_forward(a->ln_f, a->ln_f_mean, a->ln_f_rstd, a->res2, w->ln_f_w, w->ln_f_b, T,
                               C, eps);
}

/* MLM head on the N targets only: g = hidden[target_index];
 * logits[N,V] = LN_t(act(g w_t + b_t)) wte^T + head_bias. */
static double head_forward(scfm_model *m, const scfm_batch *b) {
    const int N = b->n_targets, C = m->C, V = m->V;
    const float *hidden = scfm_model_hidden(m);
    for (int n = 0; n < N; n++)
        memcpy(m->g_in + (size_t)n * C, hidden + (size_t)b->target_index[n] * C, sizeof(float) * C);
    scfm_linear_forward(m->t1, m->g_in, m->w.w_t, m->w.b_t, N, C, C);
    scfm_model_activation_forward(m, m->t2, m->t1, (size_t)N * C);
    scfm_layernorm_forward(m->t3, m->t_mean, m->t_rstd, m->t2, m->w.ln_t_w, m->w.ln_t_b, N, C,
                           (float)m->cfg.layer_norm_eps);
    scfm_linear_forward(m->logits, m->t3, m->w.wte, m->w.head_bias, N, C, V);
    return scfm_crossentropy_forward(m->logits, b->target_label, N, V);
}

/* Embeddings, the layers and (pre-LN) the final norm; the result is
 * scfm_model_hidden. */
static scfm_status encoder_forward(scfm_model *m, const scfm_batch *b, int training, uint64_t seed, uint32_t epoch,
                                   scfm_error *err) {
    scfm_status st = scfm_model_check_batch(m, b, err);
    if (st == SCFM_OK) st = reserve_activations(m, b, err);
    if (st != SCFM_OK) return st;
    m->training = training;
    m->seed = seed;
    m->epoch = epoch;
    m->n_labelled = 0;
    m->proj_dz = NULL; /* a contrastive gradient belongs to the forward it followed */
    const int T = b->n_tokens, C = m->C;
    const float eps = (float)m->cfg.layer_norm_eps;
    scfm_model_token_places(b, m->positions, m->token_cell);
    scfm_embedding_forward(m->emb, b->tokens, m->positions, m->w.wte, m->w.wpe, T, C);
    if (m->B > 0) scfm_add_rows_forward(m->emb, b->values, m->w.wve, T, C);
    if (m->NC > 0) {
        for (int t = 0; t < T; t++) m->token_cond[t] = b->conditions[m->token_cell[t]];
        scfm_add_rows_forward(m->emb, m->token_cond, m->w.wce, T, C);
    }
    scfm_layernorm_forward(m->x0, m->ln_e_mean, m->ln_e_rstd, m->emb, m->w.ln_e_w, m->w.ln_e_b, T, C,
                           eps);
    dropout_tokens(m, b, m->x0, SCFM_SITE_EMBEDDING);
    for (int l = 0; l < m->NL; l++) layer_forward(m, b, l);
    if (m->cfg.norm == SCFM_NORM_PRE)
        scfm_layernorm_forward(m->fin, m->fin_mean, m->fin_rstd, layer_output(m, m->NL - 1),
                               m->w.ln_fin_w, m->w.ln_fin_b, T, C, eps);
    return SCFM_OK;
}

static void pool(const scfm_model *m, const scfm_batch *b, const float *hidden, scfm_pool how, float *out) {
    scfm_pool_forward(out, hidden, b->tokens, b->cell_offsets, b->n_cells, m->C, m->first_gene,
                      how == SCFM_POOL_CLS);
}

/* Classification head on the n_lab labelled cells: pooled[n,C] = pool(hidden);
 * logits[n_lab,K] = pooled[labelled] w_cls^T + b_cls, cross-entropy against
 * their labels. */
static double classifier_forward(scfm_model *m, const scfm_batch *b) {
    const int C = m->C;
    pool(m, b, scfm_model_hidden(m), m->cfg.pool, m->pooled);
    int n = 0;
    for (int c = 0; c < b->n_cells; c++) {
        if (b->labels[c] < 0) continue;
        memcpy(m->cls_in + (size_t)n * C, m->pooled + (size_t)c * C, sizeof(float) * C);
        m->cls_cell[n] = c;
        m->cls_label[n++] = b->labels[c];
    }
    m->n_labelled = n;
    scfm_linear_forward(m->cls_logits, m->cls_in, m->w.w_cls, m->w.b_cls, n, C, m->K);
    return scfm_crossentropy_forward(m->cls_logits, m->cls_label, n, m->K);
}

/* ---- the value objectives (docs/objectives.md) ---- */

static int value_active(const scfm_model *m, const scfm_batch *b) {
    return m->B > 0 && m->w_value > 0.0 && b->n_value_targets > 0;
}

static int mvc_active(const scfm_model *m, const scfm_batch *b) {
    return m->B > 0 && m->w_mvc > 0.0 && b->n_value_targets > 0;
}

/* Value head on the Nv masked values: v_in[Nv,C] = hidden[value_index];
 * v_out[Nv,O] = v_in w_val^T + b_val; cross-entropy against the bins, or
 * squared error of v_out[n,0] against the bin as a number. */
static double value_forward(scfm_model *m, const scfm_batch *b) {
    const int N = b->n_value_targets, C = m->C;
    const float *hidden = scfm_model_hidden(m);
    for (int n = 0; n < N; n++)
        memcpy(m->v_in + (size_t)n * C, hidden + (size_t)b->value_index[n] * C, sizeof(float) * C);
    scfm_linear_forward(m->v_out, m->v_in, m->w.w_val, m->w.b_val, N, C, m->O);
    if (m->cfg.value_loss == SCFM_VALUE_MSE) return scfm_mse_forward(m->v_out, b->value_target, N);
    return scfm_crossentropy_forward(m->v_out, b->value_target, N, m->O);
}

/* MVC (scGPT's masked value prediction from the cell embedding, inner-product
 * style): for each masked value n of gene token g in cell c,
 * q = sigmoid(wte[g] w_q^T + b_q), pred = (q w_mvc^T) . cell[c], where cell
 * is the pooled final hidden state (model.pool); squared error against the
 * bin. The gene token is the input one (an MLM-masked gene shows <mask>). */
static double mvc_forward(scfm_model *m, const scfm_batch *b) {
    const int N = b->n_value_targets, C = m->C;
    pool(m, b, scfm_model_hidden(m), m->cfg.pool, m->mvc_cell);
    for (int n = 0; n < N; n++) {
        const int t = b->value_index[n];
        memcpy(m->mvc_e + (size_t)n * C, m->w.wte + (size_t)b->tokens[t] * C, sizeof(float) * C);
        m->mvc_cell_of[n] = m->token_cell[t];
    }
    scfm_linear_forward(m->mvc_q1, m->mvc_e, m->w.w_q, m->w.b_q, N, C, C);
    scfm_sigmoid_forward(m->mvc_q, m->mvc_q1, (size_t)N * C);
    scfm_linear_forward(m->mvc_wq, m->mvc_q, m->w.w_mvc, NULL, N, C, C);
    scfm_rowdot_forward(m->mvc_pred, m->mvc_wq, m->mvc_cell, m->mvc_cell_of, N, C);
    return scfm_mse_forward(m->mvc_pred, b->value_target, N);
}

void scfm_model_set_objective(scfm_model *m, const scfm_objective_config *o) {
    if (m->fc) scfm_fc_set_objective(m->fc, o);
    m->w_mlm = o->mlm;
    m->w_value = o->value;
    m->w_mvc = o->mvc;
}

scfm_status scfm_model_forward(scfm_model *m, const scfm_batch *b, int training, uint64_t seed,
                               uint32_t epoch, double *loss_sum, scfm_error *err) {
    if (m->fc) return scfm_fc_forward(m, b, training, seed, epoch, loss_sum, err);
    scfm_status st = encoder_forward(m, b, training, seed, epoch, err);
    if (st != SCFM_OK) return st;
    *loss_sum = 0.0;
    if (b->n_targets > 0 && m->w_mlm > 0.0) *loss_sum += m->w_mlm * head_forward(m, b);
    if (m->K > 0) *loss_sum += classifier_forward(m, b);
    if (value_active(m, b)) *loss_sum += m->w_value * value_forward(m, b);
    if (mvc_active(m, b)) *loss_sum += m->w_mvc * mvc_forward(m, b);
    if (!isfinite(*loss_sum))
        return scfm_fail(err, SCFM_ERR_NUMERIC, "the loss is not finite (%g)", *loss_sum);
    return SCFM_OK;
}

int scfm_model_loss_terms(const scfm_model *m, const scfm_batch *b) {
    if (m->fc) return b->n_cells;
    int n = m->w_mlm > 0.0 ? b->n_targets : 0;
    for (int c = 0; m->K > 0 && c < b->n_cells; c++) n += b->labels[c] >= 0;
    if (value_active(m, b) || mvc_active(m, b)) n += b->n_value_targets;
    return n;
}

scfm_status scfm_model_encode(scfm_model *m, const scfm_batch *b, scfm_error *err) {
    if (m->fc) return scfm_fc_forward(m, b, 0, 0, 0, NULL, err);
    return encoder_forward(m, b, 0, 0, 0, err);
}

const float *scfm_model_layer_hidden(const scfm_model *m, int k) {
    if (m->fc) return scfm_fc_latent(m);
    return k >= m->NL ? scfm_model_hidden(m) : layer_output(m, k - 1);
}

void scfm_model_pool(const scfm_model *m, const scfm_batch *b, int layer, scfm_pool how, float *out) {
    if (m->fc) {
        memcpy(out, scfm_fc_latent(m), sizeof(float) * (size_t)b->n_cells * (size_t)m->cfg.latent);
        return;
    }
    pool(m, b, scfm_model_layer_hidden(m, layer), how, out);
}

scfm_status scfm_model_classify(scfm_model *m, const scfm_batch *b, float *probs, scfm_error *err) {
    if (m->K == 0) return scfm_fail(err, SCFM_ERR_ARG, "the model has no classification head (model.num_labels 0)");
    const int n = b->n_cells, K = m->K;
    pool(m, b, scfm_model_hidden(m), m->cfg.pool, m->pooled);
    scfm_linear_forward(probs, m->pooled, m->w.w_cls, m->w.b_cls, n, m->C, K);
    float mx, sum;
    for (int c = 0; c < n; c++) scfm_softmax_row(probs + (size_t)c * K, K, &mx, &sum);
    return SCFM_OK;
}

/* ---- backward --------------------------------------------------------- */

/* Adds the MLM head's d(loss)/d(hidden) into dhidden[T,C]. */
static void head_backward(scfm_model *m, const scfm_batch *b, float scale, float *dhidden) {
    const int N = b->n_targets, C = m->C, V = m->V;
    weights *g = &m->g;
    scfm_crossentropy_backward(m->logits, b->target_label, N, V, scale);
    scfm_linear_backward(m->dhead1, g->wte, g->head_bias, m->logits, m->t3, m->w.wte, N, C, V, 0);
    memset(m->dhead2, 0, sizeof(float) * (size_t)N * C);
    scfm_layernorm_backward(m->dhead2, g->ln_t_w, g->ln_t_b, m->dhead1, m->t2, m->w.ln_t_w, m->t_mean,
                            m->t_rstd, N, C);
    scfm_model_activation_backward(m, m->dhead1, m->t1, m->dhead2, (size_t)N * C);
    scfm_linear_backward(m->dhead2, g->w_t, g->b_t, m->dhead1, m->g_in, m->w.w_t, N, C, C, 0);
    for (int n = 0; n < N; n++) {
        float *d = dhidden + (size_t)b->target_index[n] * C;
        const float *s = m->dhead2 + (size_t)n * C;
        for (int i = 0; i < C; i++) d[i] += s[i];
    }
}

/* Adds the classifier's d(loss)/d(hidden) into dhidden[T,C]: through the
 * linear layer to the labelled cells' embeddings, then through pooling
 * (unlabelled cells get zero). */
static void classifier_backward(scfm_model *m, const scfm_batch *b, float scale, float *dhidden) {
    const int n = m->n_labelled, C = m->C;
    scfm_crossentropy_backward(m->cls_logits, m->cls_label, n, m->K, scale);
    /* d(labelled embeddings) -> pooled[n_lab,C], scattered to cls_in[n,C] */
    scfm_linear_backward(m->pooled, m->g.w_cls, m->g.b_cls, m->cls_logits, m->cls_in, m->w.w_cls, n, C, m->K, 0);
    memset(m->cls_in, 0, sizeof(float) * (size_t)b->n_cells * C);
    for (int i = 0; i < n; i++)
        memcpy(m->cls_in + (size_t)m->cls_cell[i] * C, m->pooled + (size_t)i * C, sizeof(float) * C);
    scfm_pool_backward(dhidden, m->cls_in, b->tokens, b->cell_offsets, b->n_cells, C, m->first_gene,
                       m->cfg.pool == SCFM_POOL_CLS);
}

/* Adds the value head's d(loss)/d(hidden) into dhidden[T,C]. */
static void value_backward(scfm_model *m, const scfm_batch *b, float scale, float *dhidden) {
    const int N = b->n_value_targets, C = m->C;
    if (m->cfg.value_loss == SCFM_VALUE_MSE)
        scfm_mse_backward(m->v_out, m->v_out, b->value_target, N, scale);
    else
        scfm_crossentropy_backward(m->v_out, b->value_target, N, m->O, scale);
    scfm_linear_backward(m->dv_in, m->g.w_val, m->g.b_val, m->v_out, m->v_in, m->w.w_val, N, C, m->O, 0);
    for (int n = 0; n < N; n++) {
        float *d = dhidden + (size_t)b->value_index[n] * C;
        const float *s = m->dv_in + (size_t)n * C;
        for (int i = 0; i < C; i++) d[i] += s[i];
    }
}

/* Adds MVC's d(loss)/d(hidden) into dhidden[T,C] (through pooling) and its
 * gene-embedding part into the word embeddings' gradient. */
static void mvc_backward(scfm_model *m, const scfm_batch *b, float scale, float *dhidden) {
    const int N = b->n_value_targets, C = m->C;
    scfm_mse_backward(m->mvc_pred, m->mvc_pred, b->value_target, N, scale);
    memset(m->mvc_dcell, 0, sizeof(float) * (size_t)b->n_cells * C);
    scfm_rowdot_backward(m->dv_in, m->mvc_dcell, m->mvc_pred, m->mvc_wq, m->mvc_cell, m->mvc_cell_of, N, C);
    scfm_linear_backward(m->mvc_wq, m->g.w_mvc, NULL, m->dv_in, m->mvc_q, m->w.w_mvc, N, C, C, 0);
    scfm_sigmoid_backward(m->mvc_q1, m->mvc_q, m->mvc_wq, (size_t)N * C);
    scfm_linear_backward(m->dv_in, m->g.w_q, m->g.b_q, m->mvc_q1, m->mvc_e, m->w.w_q, N, C, C, 0);
    for (int n = 0; n < N; n++) {
        float *d = m->g.wte + (size_t)b->tokens[b->value_index[n]] * C;
        const float *s = m->dv_in + (size_t)n * C;
        for (int i = 0; i < C; i++) d[i] += s[i];
    }
    scfm_pool_backward(dhidden, m->mvc_dcell, b->tokens, b->cell_offsets, b->n_cells, C, m->first_gene,
                       m->cfg.pool == SCFM_POOL_CLS);
}

/* Adds the contrastive head's d(loss)/d(hidden) into dhidden[T,C], from the
 * d(loss)/dz that scfm_model_contrastive_grad handed over: through the
 * projection head, then pooling. */
static void contrastive_backward(scfm_model *m, const scfm_batch *b, float *dhidden) {
    const int n = b->n_cells, C = m->C;
    float *dx = m->dtmp2; /* [n,C] of the [T,C] scratch, free until the layers' backward */
    scfm_projection_backward(&m->proj, dx, m->g.w_p1, m->g.b_p1, m->g.w_p2, m->g.b_p2, m->proj_dz,
                             m->w.w_p1, m->w.w_p2, n, C, m->cfg.projection_dim, m->cfg.activation);
    scfm_pool_backward(dhidden, dx, b->tokens, b->cell_offsets, b->n_cells, C, m->first_gene,
                       m->cfg.pool == SCFM_POOL_CLS);
    m->proj_dz = NULL;
}

/* Fills m->dres with d(loss)/d(output of the last layer) at every token. */
static void heads_backward(scfm_model *m, const scfm_batch *b, float scale) {
    const int T = b->n_tokens, C = m->C;
    const int pre = m->cfg.norm == SCFM_NORM_PRE;
    float *dhidden = pre ? m->dtmp1 : m->dres;
    memset(dhidden, 0, sizeof(float) * (size_t)T * C);
    if (b->n_targets > 0 && m->w_mlm > 0.0) head_backward(m, b, scale * (float)m->w_mlm, dhidden);
    if (m->n_labelled > 0) classifier_backward(m, b, scale, dhidden);
    if (value_active(m, b)) value_backward(m, b, scale * (float)m->w_value, dhidden);
    if (mvc_active(m, b)) mvc_backward(m, b, scale * (float)m->w_mvc, dhidden);
    if (m->proj_dz) contrastive_backward(m, b, dhidden);
    if (pre) {
        memset(m->dres, 0, sizeof(float) * (size_t)T * C);
        scfm_layernorm_backward(m->dres, m->g.ln_fin_w, m->g.ln_fin_b, dhidden, layer_output(m, m->NL - 1),
                                m->w.ln_fin_w, m->fin_mean, m->fin_rstd, T, C);
    }
}

/* dst = drop(src): the gradient through a dropout site. */
static void copy_dropped(const scfm_model *m, const scfm_batch *b, float *dst, const float *src,
                         uint32_t site) {
    memcpy(dst, src, sizeof(float) * (size_t)b->n_tokens * m->C);
    dropout_tokens(m, b, dst, site);
}

/* On entry m->dres = d/d(layer output); on exit d/d(layer input). */
static void layer_backward(scfm_model *m, const scfm_batch *b, int l) {
    const int T = b->n_tokens, C = m->C, F = m->F;
    const size_t TC = (size_t)T * C;
    const layer_weights *w = &m->w.layers[l];
    layer_weights *g = &m->g.layers[l];
    layer_acts *a = &m->acts[l];
    const float *x = layer_output(m, l - 1);
    scfm_attention_dropout drop = attention_dropout(m, b, l);

    if (m->cfg.norm == SCFM_NORM_POST) {
        /* dtmp1 = d res2 */
        memset(m->dtmp1, 0, sizeof(float) * TC);
        scfm_layernorm_backward(m->dtmp1, g->ln_f_w, g->ln_f_b, m->dres, a->res2, w->ln_f_w,
                                a->ln_f_mean, a->ln_f_rstd, T, C);
        memcpy(m->dtmp2, m->dtmp1, sizeof(float) * TC); /* d h, residual path */
        dropout_tokens(m, b, m->dtmp1, scfm_layer_site(l, SCFM_SITE_FFN_OUT));
        scfm_linear_backward(m->dff1, g->w_o, g->b_o, m->dtmp1, a->act, w->w_o, T, F, C, 0);
        scfm_model_activation_backward(m, m->dff2, a->f1, m->dff1, (size_t)T * F);
        scfm_linear_backward(m->dtmp2, g->w_i, g->b_i, m->dff2, a->ln_a, w->w_i, T, C, F, 1);
        /* dres = d res1 */
        memset(m->dres, 0, sizeof(float) * TC);
        scfm_layernorm_backward(m->dres, g->ln_a_w, g->ln_a_b, m->dtmp2, a->res1, w->ln_a_w,
                                a->ln_a_mean, a->ln_a_rstd, T, C);
        copy_dropped(m, b, m->dtmp1, m->dres, scfm_layer_site(l, SCFM_SITE_ATTN_OUT));
        scfm_linear_backward(m->dtmp2, g->w_ao, g->b_ao, m->dtmp1, a->ctx, w->w_ao, T, C, C, 0);
        scfm_attention_backward(m->dqkv, m->dtmp2, a->qkv, a->probs, b->cell_offsets, b->n_cells, C,
                                m->NH, &drop, m->attn_scratch, m->P);
        scfm_linear_backward(m->dres, g->w_qkv, g->b_qkv, m->dqkv, x, w->w_qkv, T, C, 3 * C, 1);
    } else {
        copy_dropped(m, b, m->dtmp1, m->dres, scfm_layer_site(l, SCFM_SITE_FFN_OUT));
        scfm_linear_backward(m->dff1, g->w_o, g->b_o, m->dtmp1, a->act, w->w_o, T, F, C, 0);
        scfm_model_activation_backward(m, m->dff2, a->f1, m->dff1, (size_t)T * F);
        scfm_linear_backward(m->dtmp2, g->w_i, g->b_i, m->dff2, a->ln_f, w->w_i, T, C, F, 0);
        scfm_layernorm_backward(m->dres, g->ln_f_w, g->ln_f_b, m->dtmp2, a->res1, w->ln_f_w,
                                a->ln_f_mean, a->ln_f_rstd, T, C);
        copy_dropped(m, b, m->dtmp1, m->dres, scfm_layer_site(l, SCFM_SITE_ATTN_OUT));
        scfm_linear_backward(m->dtmp2, g->w_ao, g->b_ao, m->dtmp1, a->ctx, w->w_ao, T, C, C, 0);
        scfm_attention_backward(m->dqkv, m->dtmp2, a->qkv, a->probs, b->cell_offsets, b->n_cells, C,
                                m->NH, &drop, m->attn_scratch, m->P);
        scfm_linear_backward(m->dtmp1, g->w_qkv, g->b_qkv, m->dqkv, a->ln_a, w->w_qkv, T, C, 3 * C, 0);
        scfm_layernorm_backward(m->dres, g->ln_a_w, g->ln_a_b, m->dtmp1, x, w->ln_a_w, a->ln_a_mean,
                                a->ln_a_rstd, T, C);
    }
}

void scfm_model_set_grad_ready(scfm_model *m, scfm_grad_ready_fn fn, void *user) {
    m->grad_ready = fn;
    m->grad_ready_user = user;
}

int scfm_model_grad_ranges(const scfm_model *m, size_t *offset, size_t *size) {
    if (m->fc) {
        if (offset) {
            offset[0] = 0;
            size[0] = m->n_params;
        }
        return 1;
    }
    const size_t wte = (size_t)m->V * (size_t)m->C;
    int n = 0;
    size_t begin[m->NL + 3], end[m->NL + 3];
    begin[n] = m->layer_begin[m->NL];
    end[n++] = m->n_params;
    begin[n] = 0;
    end[n++] = wte;
    for (int l = m->NL - 1; l >= 0; l--) {
        begin[n] = m->layer_begin[l];
        end[n++] = m->layer_begin[l + 1];
    }
    begin[n] = wte;
    end[n++] = m->layer_begin[0];
    for (int i = 0; offset && i < n; i++) {
        offset[i] = begin[i];
        size[i] = end[i] - begin[i];
    }
    return n;
}

int scfm_model_embedding_rows(const scfm_model *m, const int32_t **tokens, const float **rows) {
    *tokens = m->deferred_tokens;
    *rows = m->deferred_rows;
    return m->n_deferred;
}

void scfm_model_add_embedding_rows(scfm_model *m, const int32_t *tokens, const float *rows, int n) {
    const int C = m->C;
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)C * id / nth), hi = (int)((long)C * (id + 1) / nth);
        for (int t = 0; t < n; t++) {
            float *e = m->g.wte + (size_t)tokens[t] * C;
            const float *d = rows + (size_t)t * C;
            for (int i = lo; i < hi; i++) e[i] += d[i];
        }
    }
}

static void grads_ready(const scfm_model *m, size_t begin, size_t end) {
    if (m->grad_ready) m->grad_ready(begin, end - begin, m->grad_ready_user);
}

void scfm_model_backward(scfm_model *m, const scfm_batch *b, float loss_scale) {
    if (m->fc) {
        scfm_fc_backward(m, b, loss_scale);
        return;
    }
    const int T = b->n_tokens, C = m->C;
    const size_t wte = (size_t)m->V * (size_t)C;
    /* With a hook, the word embeddings' gradient is reported in two parts:
     * the tied decoder's (dense, final after the head) right away, and the
     * input lookup's (a row per token) kept aside for the caller. */
    const int deferring = m->grad_ready != NULL;
    heads_backward(m, b, loss_scale);
    grads_ready(m, m->layer_begin[m->NL], m->n_params); /* final norm and heads */
    grads_ready(m, 0, wte);
    for (int l = m->NL - 1; l >= 0; l--) {
        layer_backward(m, b, l);
        grads_ready(m, m->layer_begin[l], m->layer_begin[l + 1]);
    }
    /* dres = d x0 -> through dropout and the embedding LayerNorm */
    dropout_tokens(m, b, m->dres, SCFM_SITE_EMBEDDING);
    memset(m->dtmp1, 0, sizeof(float) * (size_t)T * C);
    scfm_layernorm_backward(m->dtmp1, m->g.ln_e_w, m->g.ln_e_b, m->dres, m->emb, m->w.ln_e_w,
                            m->ln_e_mean, m->ln_e_rstd, T, C);
    scfm_embedding_backward(deferring ? NULL : m->g.wte, m->g.wpe, m->dtmp1, b->tokens, m->positions, T, C);
    if (m->B > 0) scfm_add_rows_backward(m->g.wve, m->dtmp1, b->values, T, C);
    if (m->NC > 0) scfm_add_rows_backward(m->g.wce, m->dtmp1, m->token_cond, T, C);
    m->n_deferred = deferring ? T : 0;
    m->deferred_tokens = b->tokens;
    m->deferred_rows = m->dtmp1;
    grads_ready(m, wte, m->layer_begin[0]);
}

/* ---- the contrastive head's entry points (layers in src/model/contrastive.c) ---- */

scfm_status scfm_model_contrastive_forward(scfm_model *m, const scfm_batch *b, const float **z, scfm_error *err) {
    const int P = m->cfg.projection_dim, n = b->n_cells, C = scfm_model_embedding_width(m);
    if (P == 0) return scfm_fail(err, SCFM_ERR_ARG, "the model has no contrastive head (projection_dim 0)");
    scfm_status st = scfm_projection_reserve(&m->proj, n, C, P, err);
    if (st != SCFM_OK) return st;
    scfm_model_pool(m, b, m->NL, m->cfg.pool, m->proj.x);
    scfm_projection_forward(&m->proj, m->w.w_p1, m->w.b_p1, m->w.w_p2, m->w.b_p2, n, C, P, m->cfg.activation);
    m->proj_dz = NULL;
    *z = m->proj.z;
    return SCFM_OK;
}

void scfm_model_contrastive_grad(scfm_model *m, const float *dz) { m->proj_dz = dz; }

float scfm_model_log_temperature(const scfm_model *m) {
    return m->w.log_tau ? *m->w.log_tau : logf((float)m->cfg.temperature);
}

float *scfm_model_log_temperature_grad(scfm_model *m) { return m->g.log_tau; }
