/* The BERT encoder and its masked-LM head on the device: the forward and
 * backward of src/model/model.c, step for step, with the kernels of this
 * backend. The parameters and gradients are device copies of the host
 * model's buffers with the same layout (so a tensor's offset is the same on
 * both), plus a bf16 copy of the parameters that the Linear layers read;
 * the bf16 copies of activations that a Linear layer reads are kept for its
 * backward.
 *
 * What it covers: the transformer with the masked-gene loss, post- or
 * pre-LN, GELU or ReLU, learned or no positions, hidden and attention
 * dropout with the CPU's masks. The value, MVC, classifier and contrastive
 * heads, conditions and the count encoders stay on the CPU (train.c refuses
 * them with train.backend "cuda").
 *
 * Attention runs flash style (flash.cu: no probabilities stored, each row's
 * log-sum-exp in their place) for heads of width 16, 32 or 64, else as
 * batched GEMMs per cell length (attention.c); SCFM_CUDA_ATTENTION=batched
 * in the environment picks the latter always (the tests run both).
 *
 * A packed batch has T tokens in n cells and N masked targets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_backend.h"
#include "model/model_impl.h"

/* A layer's activations: the CPU's (layer_acts, placed by the same
 * function), and the bf16 copies its Linear layers read. */
typedef struct {
    layer_acts f;
    scfm_bf16 *attn_in16, *ctx16, *ffn_in16, *act16; /* [T,C] [T,C] [T,C] [T,F] */
} device_acts;

struct scfm_cuda_model {
    scfm_cuda_ctx *ctx;
    const scfm_model *host;
    int T, N, n_cells;            /* of the last forward */
    float *d_params, *d_grads;    /* [n_params] */
    scfm_bf16 *d_params16;        /* [n_params] */
    weights w, g;                 /* device views */
    layer_weights *w_layers, *g_layers;

    /* activations, sized for cap_T tokens, cap_N targets and cap_probs
     * attention probabilities per layer */
    int cap_T, cap_N;
    size_t cap_probs;
    void *d_arena;
    int32_t *d_tokens, *d_positions, *d_target_index, *d_target_label; /* [T] [T] [N] [N] */
    int32_t *d_token_cell;       /* [T] the cell of each token */
    uint64_t *d_site_keys;       /* [sites, n] each cell's dropout key at each site (n <= T slots a site) */
    float *emb, *ln_e_mean, *ln_e_rstd, *x0;
    device_acts *acts;
    float *fin, *fin_mean, *fin_rstd;
    float *g_in, *t1, *t2, *t3, *t_mean, *t_rstd, *logits, *dhead1, *dhead2; /* head: [N,C].. [N,V] */
    scfm_bf16 *g_in16, *t3_16;
    float *dres, *dtmp1, *dtmp2, *dqkv, *dff1, *dff2;

    /* host staging of the last forward */
    int32_t *h_positions, *h_token_cell;
    uint64_t *h_site_keys;
    int h_cap;
    int flash;                    /* attention: flash tiles, or batched GEMMs per length */
    scfm_cuda_varlen_plan plan;
    int have_plan;
    scfm_cuda_flash_plan tiles;
    int training, dropping;
    uint64_t seed;
    uint32_t epoch;
    const int64_t *cell_ids;
};

/* ---- layout ---- */

static float *on_device(const scfm_model *h, float *base, const float *p) {
    return p ? base + (p - h->params) : NULL;
}

/* The device views of host->w over `base` (params or grads). */
static void map_weights(const scfm_model *h, float *base, weights *v, layer_weights *layers) {
    const weights *w = &h->w;
#define MAP(f) (v->f = on_device(h, base, w->f))
    MAP(wte); MAP(wpe); MAP(ln_e_w); MAP(ln_e_b); MAP(ln_fin_w); MAP(ln_fin_b);
    MAP(w_t); MAP(b_t); MAP(ln_t_w); MAP(ln_t_b); MAP(head_bias);
    MAP(w_cls); MAP(b_cls); MAP(wve); MAP(wce); MAP(w_val); MAP(b_val); MAP(w_q); MAP(b_q); MAP(w_mvc);
    MAP(w_p1); MAP(b_p1); MAP(w_p2); MAP(b_p2); MAP(log_tau);
#undef MAP
    v->layers = layers;
    for (int l = 0; l < h->NL; l++) {
        const layer_weights *s = &w->layers[l];
        layer_weights *d = &layers[l];
#define MAPL(f) (d->f = on_device(h, base, s->f))
        MAPL(w_qkv); MAPL(b_qkv); MAPL(w_ao); MAPL(b_ao); MAPL(ln_a_w); MAPL(ln_a_b);
        MAPL(w_i); MAPL(b_i); MAPL(w_o); MAPL(b_o); MAPL(ln_f_w); MAPL(ln_f_b);
#undef MAPL
    }
}

/* The bf16 copy of a parameter tensor given by its fp32 device view. */
static const scfm_bf16 *bf16_of(const scfm_cuda_model *cm, const float *d_param) {
    return cm->d_params16 + (d_param - cm->d_params);
}

scfm_status scfm_cuda_model_create(scfm_cuda_ctx *ctx, const scfm_model *host, scfm_cuda_model **out,
                                   scfm_error *err) {
    *out = NULL;
    if (host->fc || host->B > 0 || host->NC > 0 || host->K > 0 || host->cfg.projection_dim > 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "the CUDA backend runs the transformer with its masked-gene head "
                         "only (no count encoder, value bins, conditions, classifier or contrastive head)");
    scfm_cuda_model *cm = calloc(1, sizeof *cm);
    if (!cm) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    cm->ctx = ctx;
    cm->host = host;
    cm->w_layers = calloc((size_t)host->NL, sizeof(layer_weights));
    cm->g_layers = calloc((size_t)host->NL, sizeof(layer_weights));
    cm->acts = calloc((size_t)host->NL, sizeof(device_acts));
    scfm_status st = cm->w_layers && cm->g_layers && cm->acts ? SCFM_OK
                                                               : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    const size_t n = host->n_params;
    if (st == SCFM_OK) st = scfm_cuda_alloc((void **)&cm->d_params, sizeof(float) * n, err);
    if (st == SCFM_OK) st = scfm_cuda_alloc((void **)&cm->d_grads, sizeof(float) * n, err);
    if (st == SCFM_OK) st = scfm_cuda_alloc((void **)&cm->d_params16, sizeof(scfm_bf16) * n, err);
    if (st != SCFM_OK) {
        scfm_cuda_model_free(cm);
        return st;
    }
    const char *attention = getenv("SCFM_CUDA_ATTENTION");
    cm->flash = scfm_cuda_flash_supported(host->C, host->NH) && !(attention && strcmp(attention, "batched") == 0);
    map_weights(host, cm->d_params, &cm->w, cm->w_layers);
    map_weights(host, cm->d_grads, &cm->g, cm->g_layers);
    *out = cm;
    return SCFM_OK;
}

void scfm_cuda_model_free(scfm_cuda_model *cm) {
    if (!cm) return;
    if (cm->ctx) cudaStreamSynchronize(cm->ctx->stream);
    scfm_cuda_free(cm->d_params);
    scfm_cuda_free(cm->d_grads);
    scfm_cuda_free(cm->d_params16);
    scfm_cuda_free(cm->d_arena);
    if (cm->have_plan) scfm_cuda_varlen_plan_free(&cm->plan);
    scfm_cuda_flash_plan_free(&cm->tiles);
    free(cm->h_positions);
    free(cm->h_token_cell);
    free(cm->h_site_keys);
    free(cm->w_layers);
    free(cm->g_layers);
    free(cm->acts);
    free(cm);
}

size_t scfm_cuda_model_num_params(const scfm_cuda_model *cm) { return cm->host->n_params; }
float *scfm_cuda_model_params(scfm_cuda_model *cm) { return cm->d_params; }
float *scfm_cuda_model_grads(scfm_cuda_model *cm) { return cm->d_grads; }

scfm_status scfm_cuda_model_refresh_bf16(scfm_cuda_model *cm, scfm_error *err) {
    return scfm_cuda_to_bf16(cm->ctx, cm->d_params16, cm->d_params, cm->host->n_params, err);
}

/* ---- activations ---- */

/* The hidden-dropout sites: the embeddings', then per layer its attention
 * output and its FFN output (attention's own masks come with its tasks). */
static int n_sites(const scfm_model *h) { return 3 * h->NL + 1; }

/* Lays the arena out for T tokens, N targets and `probs` floats of attention
 * per layer, in floats from base (NULL: counts only); arrays of other types
 * take the floats their bytes need, each array on a 64-byte boundary. */
static size_t layout_arena(scfm_cuda_model *cm, float *base, size_t T, size_t N, size_t probs) {
    const scfm_model *h = cm->host;
    const size_t C = (size_t)h->C, F = (size_t)h->F, V = (size_t)h->V;
    size_t off = 0;
#define TAKE(ptr, count) \
    ((ptr) = base ? (void *)(base + off) : NULL, off += ((count) * sizeof *(ptr) + 63) / 64 * 16)
    TAKE(cm->d_tokens, T);
    TAKE(cm->d_positions, T);
    TAKE(cm->d_target_index, N);
    TAKE(cm->d_target_label, N);
    TAKE(cm->d_token_cell, T);
    TAKE(cm->d_site_keys, T * (size_t)n_sites(h));
    TAKE(cm->emb, T * C);
    TAKE(cm->ln_e_mean, T);
    TAKE(cm->ln_e_rstd, T);
    TAKE(cm->x0, T * C);
    for (int l = 0; l < h->NL; l++) {
        device_acts *d = &cm->acts[l];
        off = scfm_layer_acts_place(&d->f, base, off, T, C, F, probs);
        TAKE(d->attn_in16, T * C);
        TAKE(d->ctx16, T * C);
        TAKE(d->ffn_in16, T * C);
        TAKE(d->act16, T * F);
    }
    TAKE(cm->fin, T * C);
    TAKE(cm->fin_mean, T);
    TAKE(cm->fin_rstd, T);
    TAKE(cm->g_in, N * C);
    TAKE(cm->t1, N * C);
    TAKE(cm->t2, N * C);
    TAKE(cm->t3, N * C);
    TAKE(cm->t_mean, N);
    TAKE(cm->t_rstd, N);
    TAKE(cm->logits, N * V);
    TAKE(cm->dhead1, N * C);
    TAKE(cm->dhead2, N * C);
    TAKE(cm->g_in16, N * C);
    TAKE(cm->t3_16, N * C);
    TAKE(cm->dres, T * C);
    TAKE(cm->dtmp1, T * C);
    TAKE(cm->dtmp2, T * C);
    TAKE(cm->dqkv, 3 * T * C);
    TAKE(cm->dff1, T * F);
    TAKE(cm->dff2, T * F);
#undef TAKE
    return off;
}

static scfm_status reserve(scfm_cuda_model *cm, const scfm_batch *b, size_t probs, scfm_error *err) {
    if (b->n_tokens > cm->h_cap) {
        const int cap = b->n_tokens + b->n_tokens / 4;
        free(cm->h_positions);
        free(cm->h_token_cell);
        free(cm->h_site_keys);
        cm->h_positions = malloc(sizeof(int32_t) * (size_t)cap);
        cm->h_token_cell = malloc(sizeof(int32_t) * (size_t)cap);
        cm->h_site_keys = malloc(sizeof(uint64_t) * (size_t)cap * (size_t)n_sites(cm->host));
        cm->h_cap = cm->h_positions && cm->h_token_cell && cm->h_site_keys ? cap : 0;
        if (!cm->h_cap) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for a batch of %d tokens", b->n_tokens);
    }
    if (b->n_tokens <= cm->cap_T && b->n_targets <= cm->cap_N && probs <= cm->cap_probs) return SCFM_OK;
    /* Headroom, so that a stream of similar batches allocates once. */
    const int T = b->n_tokens > cm->cap_T ? b->n_tokens + b->n_tokens / 4 : cm->cap_T;
    const int N = b->n_targets > cm->cap_N ? b->n_targets + b->n_targets / 4 + 16 : cm->cap_N;
    const size_t P = probs > cm->cap_probs ? probs + probs / 4 : cm->cap_probs;
    scfm_status st = scfm_cuda_sync(cm->ctx, err); /* the old arena may still be read */
    if (st != SCFM_OK) return st;
    scfm_cuda_free(cm->d_arena);
    cm->d_arena = NULL;
    cm->cap_T = cm->cap_N = 0;
    cm->cap_probs = 0;
    const size_t bytes = sizeof(float) * layout_arena(cm, NULL, (size_t)T, (size_t)N, P);
    scfm_error why = {0};
    if (scfm_cuda_alloc(&cm->d_arena, bytes, &why) != SCFM_OK)
        return scfm_fail(err, SCFM_ERR_NOMEM, "device memory for the activations of %d tokens (%.2f GiB): %s", T,
                         (double)bytes / (1 << 30), why.message);
    layout_arena(cm, (float *)cm->d_arena, (size_t)T, (size_t)N, P);
    cm->cap_T = T;
    cm->cap_N = N;
    cm->cap_probs = P;
    return SCFM_OK;
}

/* ---- small steps ---- */

static scfm_status activation_forward(const scfm_cuda_model *cm, float *out, const float *inp, size_t n,
                                      scfm_error *err) {
    return cm->host->cfg.activation == SCFM_ACT_GELU ? scfm_cuda_gelu_forward(cm->ctx, out, inp, n, err)
                                                     : scfm_cuda_relu_forward(cm->ctx, out, inp, n, err);
}

static scfm_status activation_backward(const scfm_cuda_model *cm, float *dinp, const float *inp, const float *dout,
                                       size_t n, scfm_error *err) {
    return cm->host->cfg.activation == SCFM_ACT_GELU ? scfm_cuda_gelu_backward(cm->ctx, dinp, inp, dout, n, err)
                                                     : scfm_cuda_relu_backward(cm->ctx, dinp, inp, dout, n, err);
}

/* x[n] += y[n] */
static scfm_status add_inplace(const scfm_cuda_model *cm, float *x, const float *y, size_t n, scfm_error *err) {
    const float one = 1.0f;
    return scfm_cuda_check_blas(cublasSaxpy(cm->ctx->blas, (int)n, &one, y, 1, x, 1), "residual add", err);
}

static scfm_status zero(const scfm_cuda_model *cm, void *d, size_t bytes, scfm_error *err) {
    return scfm_cuda_check(cudaMemsetAsync(d, 0, bytes, cm->ctx->stream), "memset", err);
}

static scfm_status copy(const scfm_cuda_model *cm, void *dst, const void *src, size_t bytes, scfm_error *err) {
    return scfm_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cm->ctx->stream), "copy", err);
}

/* The cells' dropout keys at a site (scfm_dropout_cell_key). */
static const uint64_t *site_keys(const scfm_cuda_model *cm, uint32_t site) {
    return cm->d_site_keys + (size_t)site * (size_t)cm->n_cells;
}

/* dst = drop(src) at a hidden-dropout site (dst may be src); a copy when
 * no dropout runs. */
static scfm_status dropout(const scfm_cuda_model *cm, float *dst, const float *src, uint32_t site, scfm_error *err) {
    const size_t TC = (size_t)cm->T * (size_t)cm->host->C;
    if (!cm->dropping) return dst == src ? SCFM_OK : copy(cm, dst, src, sizeof(float) * TC, err);
    return scfm_cuda_dropout_tokens(cm->ctx, dst, src, NULL, cm->T, cm->host->C, (float)cm->host->cfg.dropout,
                                    site_keys(cm, site), cm->d_token_cell, cm->d_positions, err);
}

static scfm_attention_dropout attention_dropout(const scfm_cuda_model *cm, int l) {
    scfm_attention_dropout d = {0.0f, cm->seed, cm->epoch, scfm_layer_site(l, SCFM_SITE_ATTN_PROBS), cm->cell_ids};
    if (cm->training) d.p = (float)cm->host->cfg.attention_dropout;
    return d;
}

/* A Linear layer on an fp32 input: its bf16 copy (kept for backward) first. */
static scfm_status linear_forward(const scfm_cuda_model *cm, float *out, scfm_bf16 *inp16, const float *inp,
                                  const float *w, const float *b, int T, int C, int OC, scfm_error *err) {
    scfm_status st = scfm_cuda_to_bf16(cm->ctx, inp16, inp, (size_t)T * (size_t)C, err);
    if (st != SCFM_OK) return st;
    return scfm_cuda_linear_forward(cm->ctx, out, inp16, bf16_of(cm, w), b, T, C, OC, err);
}

static const float *layer_output(const scfm_cuda_model *cm, int l) {
    if (l < 0) return cm->x0;
    return cm->host->cfg.norm == SCFM_NORM_POST ? cm->acts[l].f.ln_f : cm->acts[l].f.res2;
}

static const float *hidden(const scfm_cuda_model *cm) {
    return cm->host->cfg.norm == SCFM_NORM_PRE ? cm->fin : layer_output(cm, cm->host->NL - 1);
}

/* Attention of layer l: ctx[T,C] from qkv, keeping the probabilities (or,
 * flash, each row's log-sum-exp) in probs; and back to dqkv from dtmp2. */
static const uint64_t *cell_keys(const scfm_cuda_model *cm, int l) {
    return site_keys(cm, scfm_layer_site(l, SCFM_SITE_ATTN_PROBS));
}

static scfm_status attention_forward(scfm_cuda_model *cm, int l, layer_acts *a, const scfm_attention_dropout *drop,
                                     scfm_error *err) {
    if (!cm->flash) return scfm_cuda_attention_forward(cm->ctx, a->ctx, a->probs, a->qkv, &cm->plan, cm->host->C, drop, err);
    return scfm_cuda_flash_forward(cm->ctx, a->ctx, a->probs, a->qkv, &cm->tiles, cm->host->C, cm->host->NH,
                                   cell_keys(cm, l), drop->p, err);
}

static scfm_status attention_backward(scfm_cuda_model *cm, int l, layer_acts *a, const scfm_attention_dropout *drop,
                                      scfm_error *err) {
    if (!cm->flash)
        return scfm_cuda_attention_backward(cm->ctx, cm->dqkv, cm->dtmp2, a->qkv, a->probs, &cm->plan, cm->host->C,
                                            drop, err);
    return scfm_cuda_flash_backward(cm->ctx, cm->dqkv, cm->dtmp2, a->qkv, a->ctx, a->probs, &cm->tiles, cm->host->C,
                                    cm->host->NH, cell_keys(cm, l), drop->p, err);
}

/* ---- forward ---- */

/* Post-LN:  res1 = x + drop(attn(x) w_ao);   h = LN_a(res1)
 *           res2 = h + drop(act(h w_i) w_o); out = LN_f(res2)
 * Pre-LN:   res1 = x + drop(attn(LN_a(x)) w_ao)
 *           out = res2 = res1 + drop(act(LN_f(res1) w_i) w_o) */
static scfm_status layer_forward(scfm_cuda_model *cm, int l, scfm_error *err) {
    const scfm_model *h = cm->host;
    const int T = cm->T, C = h->C, F = h->F, post = h->cfg.norm == SCFM_NORM_POST;
    const float eps = (float)h->cfg.layer_norm_eps;
    const layer_weights *w = &cm->w.layers[l];
    device_acts *d = &cm->acts[l];
    layer_acts *a = &d->f;
    const float *x = layer_output(cm, l - 1);
    const size_t TC = (size_t)T * C;
    scfm_attention_dropout drop = attention_dropout(cm, l);
    scfm_status st = SCFM_OK;
    const float *attn_in = x;
    if (!post) {
        st = scfm_cuda_layernorm_forward(cm->ctx, a->ln_a, a->ln_a_mean, a->ln_a_rstd, x, w->ln_a_w, w->ln_a_b, T, C,
                                         eps, err);
        attn_in = a->ln_a;
    }
    if (st == SCFM_OK) st = linear_forward(cm, a->qkv, d->attn_in16, attn_in, w->w_qkv, w->b_qkv, T, C, 3 * C, err);
    if (st == SCFM_OK) st = attention_forward(cm, l, a, &drop, err);
    if (st == SCFM_OK) st = linear_forward(cm, a->res1, d->ctx16, a->ctx, w->w_ao, w->b_ao, T, C, C, err);
    if (st == SCFM_OK) st = dropout(cm, a->res1, a->res1, scfm_layer_site(l, SCFM_SITE_ATTN_OUT), err);
    if (st == SCFM_OK) st = add_inplace(cm, a->res1, x, TC, err);
    float *ffn_in = post ? a->ln_a : a->ln_f;
    float *ffn_mean = post ? a->ln_a_mean : a->ln_f_mean, *ffn_rstd = post ? a->ln_a_rstd : a->ln_f_rstd;
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_forward(cm->ctx, ffn_in, ffn_mean, ffn_rstd, a->res1, post ? w->ln_a_w : w->ln_f_w,
                                         post ? w->ln_a_b : w->ln_f_b, T, C, eps, err);
    if (st == SCFM_OK) st = linear_forward(cm, a->f1, d->ffn_in16, ffn_in, w->w_i, w->b_i, T, C, F, err);
    if (st == SCFM_OK) st = activation_forward(cm, a->act, a->f1, (size_t)T * F, err);
    if (st == SCFM_OK) st = linear_forward(cm, a->res2, d->act16, a->act, w->w_o, w->b_o, T, F, C, err);
    if (st == SCFM_OK) st = dropout(cm, a->res2, a->res2, scfm_layer_site(l, SCFM_SITE_FFN_OUT), err);
    if (st == SCFM_OK) st = add_inplace(cm, a->res2, post ? a->ln_a : a->res1, TC, err);
    if (st == SCFM_OK && post)
        st = scfm_cuda_layernorm_forward(cm->ctx, a->ln_f, a->ln_f_mean, a->ln_f_rstd, a->res2, w->ln_f_w, w->ln_f_b,
                                         T, C, eps, err);
    return st;
}

/* The batch's host-side part: positions, the attention plan, the dropout
 * keys, and the uploads. */
static scfm_status stage_batch(scfm_cuda_model *cm, const scfm_batch *b, scfm_error *err) {
    const scfm_model *h = cm->host;
    const int T = b->n_tokens;
    scfm_model_token_places(b, cm->h_positions, cm->h_token_cell);
    scfm_status st = SCFM_OK;
    if (cm->flash) {
        st = scfm_cuda_flash_plan_build(&cm->tiles, b->cell_offsets, b->n_cells, err);
        if (st == SCFM_OK) st = scfm_cuda_flash_plan_upload(cm->ctx, &cm->tiles, err);
    } else {
        if (cm->have_plan) scfm_cuda_varlen_plan_free(&cm->plan);
        cm->have_plan = 0;
        st = scfm_cuda_varlen_plan_build(&cm->plan, b->cell_offsets, b->n_cells, h->NH, err);
        cm->have_plan = st == SCFM_OK;
    }
    if (st != SCFM_OK) return st;
    /* One key per cell and dropout site; the kernels derive each row's, as
     * scfm_dropout_key does, from it and the row's position. */
    const int keyed = cm->dropping || (cm->flash && cm->training && h->cfg.attention_dropout > 0.0);
    const size_t n = (size_t)b->n_cells, sites = (size_t)n_sites(h);
    for (size_t site = 0; keyed && site < sites; site++)
        for (size_t c = 0; c < n; c++)
            cm->h_site_keys[site * n + c] = scfm_dropout_cell_key(cm->seed, cm->epoch, (uint32_t)site, b->cell_ids[c]);
    struct {
        void *dst;
        const void *src;
        size_t bytes;
    } up[] = {
        {cm->d_tokens, b->tokens, sizeof(int32_t) * (size_t)T},
        {cm->d_positions, cm->h_positions, sizeof(int32_t) * (size_t)T},
        {cm->d_target_index, b->target_index, sizeof(int32_t) * (size_t)b->n_targets},
        {cm->d_target_label, b->target_label, sizeof(int32_t) * (size_t)b->n_targets},
        {cm->d_token_cell, cm->h_token_cell, keyed ? sizeof(int32_t) * (size_t)T : 0},
        {cm->d_site_keys, cm->h_site_keys, keyed ? sizeof(uint64_t) * n * sites : 0},
    };
    for (size_t i = 0; st == SCFM_OK && i < sizeof up / sizeof up[0]; i++)
        if (up[i].bytes)
            st = scfm_cuda_check(cudaMemcpyAsync(up[i].dst, up[i].src, up[i].bytes, cudaMemcpyHostToDevice,
                                                 cm->ctx->stream),
                                 "batch upload", err);
    return st;
}

/* MLM head on the N targets: g = hidden[target_index];
 * logits[N,V] = LN_t(act(g w_t + b_t)) wte^T + head_bias; the fused
 * cross-entropy leaves d(scale * loss)/d(logits) in their place. */
static scfm_status head_forward(scfm_cuda_model *cm, float scale, double *loss, scfm_error *err) {
    const scfm_model *h = cm->host;
    const int N = cm->N, C = h->C, V = h->V;
    scfm_status st = scfm_cuda_gather_rows(cm->ctx, cm->g_in, hidden(cm), cm->d_target_index, N, C, err);
    if (st == SCFM_OK) st = linear_forward(cm, cm->t1, cm->g_in16, cm->g_in, cm->w.w_t, cm->w.b_t, N, C, C, err);
    if (st == SCFM_OK) st = activation_forward(cm, cm->t2, cm->t1, (size_t)N * C, err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_forward(cm->ctx, cm->t3, cm->t_mean, cm->t_rstd, cm->t2, cm->w.ln_t_w, cm->w.ln_t_b,
                                         N, C, (float)h->cfg.layer_norm_eps, err);
    if (st == SCFM_OK)
        st = linear_forward(cm, cm->logits, cm->t3_16, cm->t3, cm->w.wte, cm->w.head_bias, N, C, V, err);
    if (st == SCFM_OK) st = scfm_cuda_crossentropy(cm->ctx, cm->logits, cm->d_target_label, N, V, scale, loss, err);
    return st;
}

scfm_status scfm_cuda_model_forward(scfm_cuda_model *cm, const scfm_batch *b, int training, uint64_t seed,
                                    uint32_t epoch, float loss_scale, double *loss_sum, scfm_error *err) {
    const scfm_model *h = cm->host;
    *loss_sum = 0.0;
    scfm_status st = scfm_model_check_batch(h, b, err);
    const size_t probs = cm->flash ? (size_t)h->NH * (size_t)b->n_tokens
                                   : scfm_attention_probs_size(b->cell_offsets, b->n_cells, h->NH);
    if (st == SCFM_OK) st = reserve(cm, b, probs, err);
    if (st != SCFM_OK) return st;
    cm->T = b->n_tokens;
    cm->n_cells = b->n_cells;
    cm->N = h->w_mlm > 0.0 ? b->n_targets : 0;
    cm->training = training;
    cm->dropping = training && h->cfg.dropout > 0.0;
    cm->seed = seed;
    cm->epoch = epoch;
    cm->cell_ids = b->cell_ids;
    const int T = cm->T, C = h->C;
    const float eps = (float)h->cfg.layer_norm_eps;
    st = stage_batch(cm, b, err);
    if (st == SCFM_OK)
        st = scfm_cuda_embedding_forward(cm->ctx, cm->emb, cm->d_tokens, cm->d_positions, cm->w.wte, cm->w.wpe, T, C,
                                         err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_forward(cm->ctx, cm->x0, cm->ln_e_mean, cm->ln_e_rstd, cm->emb, cm->w.ln_e_w,
                                         cm->w.ln_e_b, T, C, eps, err);
    if (st == SCFM_OK) st = dropout(cm, cm->x0, cm->x0, SCFM_SITE_EMBEDDING, err);
    for (int l = 0; st == SCFM_OK && l < h->NL; l++) st = layer_forward(cm, l, err);
    if (st == SCFM_OK && h->cfg.norm == SCFM_NORM_PRE)
        st = scfm_cuda_layernorm_forward(cm->ctx, cm->fin, cm->fin_mean, cm->fin_rstd, layer_output(cm, h->NL - 1),
                                         cm->w.ln_fin_w, cm->w.ln_fin_b, T, C, eps, err);
    double loss = 0.0;
    if (st == SCFM_OK && cm->N > 0) st = head_forward(cm, loss_scale * (float)h->w_mlm, &loss, err);
    if (st != SCFM_OK) return st;
    *loss_sum = h->w_mlm * loss;
    if (!isfinite(*loss_sum)) return scfm_fail(err, SCFM_ERR_NUMERIC, "the loss is not finite (%g)", *loss_sum);
    return SCFM_OK;
}

/* ---- backward ---- */

/* d(loss)/d(hidden) into dhidden[T,C] (zeroed first), from the gradient the
 * cross-entropy left in the logits. */
static scfm_status head_backward(scfm_cuda_model *cm, float *dhidden, scfm_error *err) {
    const scfm_model *h = cm->host;
    const int N = cm->N, C = h->C, V = h->V;
    weights *g = &cm->g;
    scfm_status st = zero(cm, dhidden, sizeof(float) * (size_t)cm->T * C, err);
    if (N == 0 || st != SCFM_OK) return st;
    st = scfm_cuda_linear_backward(cm->ctx, cm->dhead1, g->wte, g->head_bias, cm->logits, cm->t3_16,
                                   bf16_of(cm, cm->w.wte), N, C, V, 0, err);
    if (st == SCFM_OK) st = zero(cm, cm->dhead2, sizeof(float) * (size_t)N * C, err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_backward(cm->ctx, cm->dhead2, g->ln_t_w, g->ln_t_b, cm->dhead1, cm->t2, cm->w.ln_t_w,
                                          cm->t_mean, cm->t_rstd, N, C, err);
    if (st == SCFM_OK) st = activation_backward(cm, cm->dhead1, cm->t1, cm->dhead2, (size_t)N * C, err);
    if (st == SCFM_OK)
        st = scfm_cuda_linear_backward(cm->ctx, cm->dhead2, g->w_t, g->b_t, cm->dhead1, cm->g_in16,
                                       bf16_of(cm, cm->w.w_t), N, C, C, 0, err);
    if (st == SCFM_OK) st = scfm_cuda_scatter_add_rows(cm->ctx, dhidden, cm->dhead2, cm->d_target_index, N, C, err);
    return st;
}

/* On entry dres = d/d(layer output); on exit d/d(layer input). */
static scfm_status layer_backward(scfm_cuda_model *cm, int l, scfm_error *err) {
    const scfm_model *h = cm->host;
    const int T = cm->T, C = h->C, F = h->F;
    const size_t TC = (size_t)T * C;
    const layer_weights *w = &cm->w.layers[l];
    layer_weights *g = &cm->g.layers[l];
    device_acts *d = &cm->acts[l];
    layer_acts *a = &d->f;
    const float *x = layer_output(cm, l - 1);
    scfm_attention_dropout drop = attention_dropout(cm, l);
    scfm_cuda_ctx *ctx = cm->ctx;
    scfm_status st = SCFM_OK;
    if (h->cfg.norm == SCFM_NORM_POST) {
        /* dtmp1 = d res2; dtmp2 = its residual path into d h */
        st = zero(cm, cm->dtmp1, sizeof(float) * TC, err);
        if (st == SCFM_OK)
            st = scfm_cuda_layernorm_backward(ctx, cm->dtmp1, g->ln_f_w, g->ln_f_b, cm->dres, a->res2, w->ln_f_w,
                                              a->ln_f_mean, a->ln_f_rstd, T, C, err);
        if (st == SCFM_OK) st = copy(cm, cm->dtmp2, cm->dtmp1, sizeof(float) * TC, err);
        if (st == SCFM_OK) st = dropout(cm, cm->dtmp1, cm->dtmp1, scfm_layer_site(l, SCFM_SITE_FFN_OUT), err);
        if (st == SCFM_OK)
            st = scfm_cuda_linear_backward(ctx, cm->dff1, g->w_o, g->b_o, cm->dtmp1, d->act16, bf16_of(cm, w->w_o), T,
                                           F, C, 0, err);
        if (st == SCFM_OK) st = activation_backward(cm, cm->dff2, a->f1, cm->dff1, (size_t)T * F, err);
        if (st == SCFM_OK)
            st = scfm_cuda_linear_backward(ctx, cm->dtmp2, g->w_i, g->b_i, cm->dff2, d->ffn_in16, bf16_of(cm, w->w_i),
                                           T, C, F, 1, err);
        /* dres = d res1 */
        if (st == SCFM_OK) st = zero(cm, cm->dres, sizeof(float) * TC, err);
        if (st == SCFM_OK)
            st = scfm_cuda_layernorm_backward(ctx, cm->dres, g->ln_a_w, g->ln_a_b, cm->dtmp2, a->res1, w->ln_a_w,
                                              a->ln_a_mean, a->ln_a_rstd, T, C, err);
        if (st == SCFM_OK) st = dropout(cm, cm->dtmp1, cm->dres, scfm_layer_site(l, SCFM_SITE_ATTN_OUT), err);
        if (st == SCFM_OK)
            st = scfm_cuda_linear_backward(ctx, cm->dtmp2, g->w_ao, g->b_ao, cm->dtmp1, d->ctx16,
                                           bf16_of(cm, w->w_ao), T, C, C, 0, err);
        if (st == SCFM_OK) st = attention_backward(cm, l, a, &drop, err);
        if (st == SCFM_OK)
            st = scfm_cuda_linear_backward(ctx, cm->dres, g->w_qkv, g->b_qkv, cm->dqkv, d->attn_in16,
                                           bf16_of(cm, w->w_qkv), T, C, 3 * C, 1, err);
        return st;
    }
    st = dropout(cm, cm->dtmp1, cm->dres, scfm_layer_site(l, SCFM_SITE_FFN_OUT), err);
    if (st == SCFM_OK)
        st = scfm_cuda_linear_backward(ctx, cm->dff1, g->w_o, g->b_o, cm->dtmp1, d->act16, bf16_of(cm, w->w_o), T, F,
                                       C, 0, err);
    if (st == SCFM_OK) st = activation_backward(cm, cm->dff2, a->f1, cm->dff1, (size_t)T * F, err);
    if (st == SCFM_OK)
        st = scfm_cuda_linear_backward(ctx, cm->dtmp2, g->w_i, g->b_i, cm->dff2, d->ffn_in16, bf16_of(cm, w->w_i), T,
                                       C, F, 0, err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_backward(ctx, cm->dres, g->ln_f_w, g->ln_f_b, cm->dtmp2, a->res1, w->ln_f_w,
                                          a->ln_f_mean, a->ln_f_rstd, T, C, err);
    if (st == SCFM_OK) st = dropout(cm, cm->dtmp1, cm->dres, scfm_layer_site(l, SCFM_SITE_ATTN_OUT), err);
    if (st == SCFM_OK)
        st = scfm_cuda_linear_backward(ctx, cm->dtmp2, g->w_ao, g->b_ao, cm->dtmp1, d->ctx16, bf16_of(cm, w->w_ao), T,
                                       C, C, 0, err);
    if (st == SCFM_OK) st = attention_backward(cm, l, a, &drop, err);
    if (st == SCFM_OK)
        st = scfm_cuda_linear_backward(ctx, cm->dtmp1, g->w_qkv, g->b_qkv, cm->dqkv, d->attn_in16,
                                       bf16_of(cm, w->w_qkv), T, C, 3 * C, 0, err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_backward(ctx, cm->dres, g->ln_a_w, g->ln_a_b, cm->dtmp1, x, w->ln_a_w, a->ln_a_mean,
                                          a->ln_a_rstd, T, C, err);
    return st;
}

int scfm_cuda_model_buckets(const scfm_cuda_model *cm, size_t *offset, size_t *size) {
    const scfm_model *h = cm->host;
    int n = 0;
    size_t begin[h->NL + 2], end[h->NL + 2];
    begin[n] = h->layer_begin[h->NL];
    end[n++] = h->n_params;
    for (int l = h->NL - 1; l >= 0; l--) {
        begin[n] = h->layer_begin[l];
        end[n++] = h->layer_begin[l + 1];
    }
    begin[n] = 0;
    end[n++] = h->layer_begin[0];
    for (int i = 0; offset && i < n; i++) {
        offset[i] = begin[i];
        size[i] = end[i] - begin[i];
    }
    return n;
}

/* Reports the next bucket of backward's order. */
static scfm_status bucket_done(scfm_cuda_bucket_fn bucket_ready, void *user, const size_t *offset, const size_t *size,
                               int *bucket, scfm_error *err) {
    const int i = (*bucket)++;
    return bucket_ready ? bucket_ready(offset[i], size[i], user, err) : SCFM_OK;
}

scfm_status scfm_cuda_model_backward(scfm_cuda_model *cm, scfm_cuda_bucket_fn bucket_ready, void *user,
                                     scfm_error *err) {
    const scfm_model *h = cm->host;
    const int T = cm->T, C = h->C, pre = h->cfg.norm == SCFM_NORM_PRE;
    size_t offset[h->NL + 2], size[h->NL + 2];
    scfm_cuda_model_buckets(cm, offset, size);
    int bucket = 0;
    float *dhidden = pre ? cm->dtmp1 : cm->dres;
    scfm_status st = head_backward(cm, dhidden, err);
    if (st == SCFM_OK && pre) {
        st = zero(cm, cm->dres, sizeof(float) * (size_t)T * C, err);
        if (st == SCFM_OK)
            st = scfm_cuda_layernorm_backward(cm->ctx, cm->dres, cm->g.ln_fin_w, cm->g.ln_fin_b, dhidden,
                                              layer_output(cm, h->NL - 1), cm->w.ln_fin_w, cm->fin_mean, cm->fin_rstd,
                                              T, C, err);
    }
    if (st == SCFM_OK) st = bucket_done(bucket_ready, user, offset, size, &bucket, err);
    for (int l = h->NL - 1; l >= 0 && st == SCFM_OK; l--) {
        st = layer_backward(cm, l, err);
        if (st == SCFM_OK) st = bucket_done(bucket_ready, user, offset, size, &bucket, err);
    }
    if (st == SCFM_OK) st = dropout(cm, cm->dres, cm->dres, SCFM_SITE_EMBEDDING, err);
    if (st == SCFM_OK) st = zero(cm, cm->dtmp1, sizeof(float) * (size_t)T * C, err);
    if (st == SCFM_OK)
        st = scfm_cuda_layernorm_backward(cm->ctx, cm->dtmp1, cm->g.ln_e_w, cm->g.ln_e_b, cm->dres, cm->emb,
                                          cm->w.ln_e_w, cm->ln_e_mean, cm->ln_e_rstd, T, C, err);
    if (st == SCFM_OK)
        st = scfm_cuda_embedding_backward(cm->ctx, cm->g.wte, cm->g.wpe, cm->dtmp1, cm->d_tokens, cm->d_positions, T,
                                          C, err);
    if (st == SCFM_OK) st = bucket_done(bucket_ready, user, offset, size, &bucket, err);
    return st;
}
