/* The count encoders (docs/encoders.md): a fully connected ("mlp") or
 * linear encoder-decoder over a cell's count vector, scVI-style, composed
 * from the CPU kernels.
 *
 * n cells, G genes, NC conditions, H = fc_hidden, L = fc_layers (0 for the
 * linear encoder), D = latent. The encoder reads xin[n, Gx] = the count
 * vector in model.input's representation (augmented and masked as the
 * objective says) followed, when the condition goes into the encoder, by
 * its one-hot (Gx = G + NC, else G); the decoder reads zin[n, Dz] = the
 * latent z followed, when the condition goes into the decoder, by the
 * one-hot (Dz = D + NC, else D). A cell with condition -1 gets a zero
 * one-hot.
 *
 * Parameters, in buffer order (Linear weights [out, in]):
 *   encoder.fc.l.{weight,bias}  [H, Gx] for l = 0, [H, H] after
 *   encoder.mean.{weight,bias}  [D, E]   (E = H, or Gx for linear)
 *   encoder.logvar.{weight,bias} [D, E]  variational only
 *   decoder.fc.l.{weight,bias}  [H, Dz] for l = 0, [H, H] after
 *   decoder.scale.{weight,bias} [G, E']  (E' = H, or Dz for linear): the
 *     logits of rho = softmax over genes (nb, zinb, poisson), or
 *   decoder.output.{weight,bias} [G, E'] the predicted representation (mse)
 *   decoder.dropout.{weight,bias} [G, E'] zinb only: zero-inflation logits
 *   px_r [G]                   nb and zinb: log inverse dispersion per gene
 *   contrastive.projection.* (and log_temperature) on the latent mean, as
 *     the transformer's (contrastive.c)
 * Layer l of either MLP: h_0 = act(W_0 in + b_0), h_l = h_{l-1} +
 * act(W_l h_{l-1} + b_l); the encoder's h_l pass through dropout
 * (model.dropout) when training, the decoder's do not (scVI's decoder has
 * none). No normalisation layers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "model/model_impl.h"

typedef struct {
    float *w, *b;
} fc_linear;

typedef struct {
    fc_linear *enc, *dec; /* [L] */
    fc_linear mean, logvar, out, drop;
    float *px_r;
} fc_weights;

struct scfm_fc {
    int G, NC, L, H, D, Gx, Dz;
    int cond_enc, cond_dec;  /* the one-hot enters the encoder, the decoder */
    fc_weights w, g;
    /* objective weights and the step that ramps the KL weight up */
    double w_rec, w_kl, mae, aug_dropout, aug_noise, aug_swap;
    int contrastive;
    int64_t kl_warmup, step;
    /* the last forward */
    int n, with_loss, augmented;
    double kl_scale;
    /* activations for cap cells, in one arena */
    int cap;
    float *arena;
    float *counts, *target, *mask, *xin;     /* [n,G] x3, [n,Gx] */
    float **enc_pre, **enc_h, **dec_pre, **dec_h; /* [L] of [n,H] */
    float *mu, *logvar, *eps, *zin;           /* [n,D] x3, [n,Dz] */
    float *out, *pi, *px_mu;                  /* [n,G] */
    double *rec, *kl;                         /* [n] */
    float *dpx, *dout, *dpi, *dh, *dh2, *dz, *dmu, *dlv; /* [n,G] x3, [n,W] x2, [n,Dz], [n,D] x2 */
    float *dlt;                                         /* [n,G] NB: each term's d/dlog theta (forward) */
    double *nb_scratch;                                 /* [SCFM_NB_SCRATCH(G)] NB: per-gene terms, tables */
};

static int uses_theta(scfm_likelihood l) { return l == SCFM_LIK_NB || l == SCFM_LIK_ZINB; }

/* The shape fields of f from cfg. */
static void set_shape(scfm_fc *f, const scfm_model_config *cfg) {
    f->G = cfg->genes;
    f->NC = cfg->num_conditions;
    f->L = cfg->encoder == SCFM_ENCODER_MLP ? cfg->fc_layers : 0;
    f->H = cfg->fc_hidden;
    f->D = cfg->latent;
    f->cond_enc = f->NC > 0 && cfg->condition_into != SCFM_COND_DECODER;
    f->cond_dec = f->NC > 0 && cfg->condition_into != SCFM_COND_ENCODER;
    f->Gx = f->G + (f->cond_enc ? f->NC : 0);
    f->Dz = f->D + (f->cond_dec ? f->NC : 0);
}

/* ---- parameter layout ---- */

static fc_linear place_linear(scfm_layout_walk *lw, const char *name, int out, int in) {
    char full[128];
    fc_linear l;
    snprintf(full, sizeof full, "%.100s.weight", name);
    l.w = scfm_model_place(lw, full, out, in, 1);
    snprintf(full, sizeof full, "%.100s.bias", name);
    l.b = scfm_model_place(lw, full, out, 0, 0);
    return l;
}

/* Places f's tensors (v->enc, v->dec may be NULL: only counting) and the
 * contrastive head into head; returns the parameter count. */
static size_t walk_layout(scfm_model *m, const scfm_fc *f, float *base, fc_weights *v, weights *head, int record) {
    scfm_layout_walk lw = {m, base, 0, record};
    const scfm_model_config *cfg = &m->cfg;
    char name[64];
    for (int l = 0; l < f->L; l++) {
        snprintf(name, sizeof name, "encoder.fc.%d", l);
        fc_linear x = place_linear(&lw, name, f->H, l == 0 ? f->Gx : f->H);
        if (v->enc) v->enc[l] = x;
    }
    const int E = f->L > 0 ? f->H : f->Gx, Ed = f->L > 0 ? f->H : f->Dz;
    v->mean = place_linear(&lw, "encoder.mean", f->D, E);
    v->logvar = cfg->variational ? place_linear(&lw, "encoder.logvar", f->D, E) : (fc_linear){NULL, NULL};
    for (int l = 0; l < f->L; l++) {
        snprintf(name, sizeof name, "decoder.fc.%d", l);
        fc_linear x = place_linear(&lw, name, f->H, l == 0 ? f->Dz : f->H);
        if (v->dec) v->dec[l] = x;
    }
    v->out = place_linear(&lw, cfg->likelihood == SCFM_LIK_MSE ? "decoder.output" : "decoder.scale", f->G, Ed);
    v->drop = cfg->likelihood == SCFM_LIK_ZINB ? place_linear(&lw, "decoder.dropout", f->G, Ed) : (fc_linear){NULL, NULL};
    v->px_r = uses_theta(cfg->likelihood) ? scfm_model_place(&lw, "px_r", f->G, 0, 0) : NULL;
    scfm_model_place_projection(&lw, head, f->D);
    return lw.offset;
}

size_t scfm_fc_param_count(const scfm_model_config *cfg) {
    scfm_model m = {0};
    scfm_fc f = {0};
    weights head;
    m.cfg = *cfg;
    set_shape(&f, cfg);
    return walk_layout(&m, &f, NULL, &f.w, &head, 0);
}

scfm_status scfm_fc_create(scfm_model *m, scfm_error *err) {
    const scfm_model_config *cfg = &m->cfg;
    if (cfg->genes < 1 || cfg->latent < 1 || cfg->fc_hidden < 1 || cfg->fc_layers < 1 || cfg->num_conditions < 0 ||
        cfg->num_labels != 0 || (cfg->value_bins != 0 && cfg->input != SCFM_COUNTS_BIN) || cfg->projection_dim < 0 ||
        (cfg->projection_dim > 0 && !(cfg->temperature > 0.0)))
        return scfm_fail(err, SCFM_ERR_ARG,
                         "invalid count encoder shape: genes %d, latent %d, fc_hidden %d, fc_layers %d, conditions %d, "
                         "labels %d (must be 0), value bins %d (only for model.input bin)",
                         cfg->genes, cfg->latent, cfg->fc_hidden, cfg->fc_layers, cfg->num_conditions,
                         cfg->num_labels, cfg->value_bins);
    scfm_fc *f = calloc(1, sizeof *f);
    if (!f) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
    m->fc = f;
    set_shape(f, cfg);
    f->w_rec = f->w_kl = 1.0;
    const size_t L = (size_t)(f->L > 0 ? f->L : 1);
    f->w.enc = calloc(L, sizeof(fc_linear));
    f->w.dec = calloc(L, sizeof(fc_linear));
    f->g.enc = calloc(L, sizeof(fc_linear));
    f->g.dec = calloc(L, sizeof(fc_linear));
    f->enc_pre = calloc(4 * L, sizeof(float *));
    m->tensors = calloc(4 * L + 24, sizeof(scfm_tensor_info));
    if (!f->w.enc || !f->w.dec || !f->g.enc || !f->g.dec || !f->enc_pre || !m->tensors)
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
    f->enc_h = f->enc_pre + L;
    f->dec_pre = f->enc_h + L;
    f->dec_h = f->dec_pre + L;
    m->n_params = walk_layout(m, f, NULL, &f->w, &m->w, 1);
    m->params = scfm_alloc(sizeof(float) * m->n_params);
    m->grads = scfm_alloc(sizeof(float) * m->n_params);
    if (!m->params || !m->grads) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory creating the model");
    walk_layout(m, f, m->params, &f->w, &m->w, 0);
    walk_layout(m, f, m->grads, &f->g, &m->g, 0);
    return SCFM_OK;
}

void scfm_fc_free(scfm_fc *f) {
    if (!f) return;
    scfm_free(f->arena);
    free(f->w.enc);
    free(f->w.dec);
    free(f->g.enc);
    free(f->g.dec);
    free(f->enc_pre);
    free(f);
}

void scfm_fc_set_objective(scfm_fc *f, const scfm_objective_config *o) {
    f->w_rec = o->reconstruction;
    f->w_kl = o->kl;
    f->kl_warmup = o->kl_warmup_steps;
    f->mae = o->mae_mask_prob;
    f->contrastive = o->contrastive > 0.0;
    f->aug_dropout = o->aug_dropout;
    f->aug_noise = o->aug_noise;
    f->aug_swap = o->aug_swap;
}

void scfm_fc_set_step(scfm_fc *f, int64_t step) { f->step = step; }

const float *scfm_fc_latent(const scfm_model *m) { return m->fc->mu; }

double scfm_fc_flops(const scfm_model *m, const scfm_batch *b, int with_backward) {
    /* two per weight of every Linear per cell; the heads' softmax and
     * likelihood are elementwise and left out */
    double weights = 0.0;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].ndim == 2 && strncmp(m->tensors[i].name, "contrastive.", 12) != 0)
            weights += (double)m->tensors[i].size;
    const double forward = 2.0 * weights * b->n_cells;
    return with_backward ? 3.0 * forward : forward;
}

/* ---- activations ---- */

static size_t layout_arena(scfm_fc *f, float *base, size_t n) {
    const size_t G = f->G, H = f->H, D = f->D, W = (size_t)(f->H > f->Dz ? f->H : f->Dz);
    size_t off = 0;
#define TAKE(ptr, k) ((ptr) = base ? base + off : NULL, off += ((k) + 15) & ~(size_t)15)
    TAKE(f->counts, n * G);
    TAKE(f->target, n * G);
    TAKE(f->mask, n * G);
    TAKE(f->xin, n * (size_t)f->Gx);
    for (int l = 0; l < f->L; l++) {
        TAKE(f->enc_pre[l], n * H);
        TAKE(f->enc_h[l], n * H);
        TAKE(f->dec_pre[l], n * H);
        TAKE(f->dec_h[l], n * H);
    }
    TAKE(f->mu, n * D);
    TAKE(f->logvar, n * D);
    TAKE(f->eps, n * D);
    TAKE(f->zin, n * (size_t)f->Dz);
    TAKE(f->out, n * G);
    TAKE(f->pi, n * G);
    TAKE(f->px_mu, n * G);
    float *rec, *kl;
    TAKE(rec, 2 * n); /* doubles */
    TAKE(kl, 2 * n);
    f->rec = (double *)rec;
    f->kl = (double *)kl;
    TAKE(f->dpx, n * G);
    TAKE(f->dout, n * G);
    TAKE(f->dpi, n * G);
    TAKE(f->dlt, n * G);
    float *nb_scratch;
    TAKE(nb_scratch, 2 * SCFM_NB_SCRATCH(G)); /* doubles */
    f->nb_scratch = (double *)nb_scratch;
    TAKE(f->dh, n * W);
    TAKE(f->dh2, n * W);
    TAKE(f->dz, n * (size_t)f->Dz);
    TAKE(f->dmu, n * D);
    TAKE(f->dlv, n * D);
#undef TAKE
    return off;
}

static scfm_status reserve(scfm_fc *f, int n, scfm_error *err) {
    if (n <= f->cap) return SCFM_OK;
    const int cap = n + n / 4 + 4;
    scfm_free(f->arena);
    f->cap = 0;
    size_t floats = layout_arena(f, NULL, (size_t)cap);
    f->arena = scfm_alloc(sizeof(float) * floats);
    if (!f->arena)
        return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for activations of %d cells (%.1f GiB)", cap,
                         (double)floats * 4.0 / (1 << 30));
    layout_arena(f, f->arena, (size_t)cap);
    f->cap = cap;
    return SCFM_OK;
}

/* ---- input ---- */

static scfm_status check_batch(const scfm_model *m, const scfm_batch *b, scfm_error *err) {
    const scfm_fc *f = m->fc;
    for (int c = 0; c < b->n_cells; c++) {
        if (!(b->library[c] > 0.0f) || !isfinite(b->library[c]))
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has library size %g; the count encoders need counts > 0",
                             (long long)b->cell_ids[c], (double)b->library[c]);
        if (f->NC > 0 && (b->conditions[c] < -1 || b->conditions[c] >= f->NC))
            return scfm_fail(err, SCFM_ERR_ARG, "cell %lld has condition %d; the model has %d conditions",
                             (long long)b->cell_ids[c], b->conditions[c], f->NC);
    }
    /* the columns are checked by scfm_counts_dense as it places them */
    for (int t = 0; t < b->n_tokens; t++) {
        if (!(b->counts[t] >= 0.0f) || !isfinite(b->counts[t]))
            return scfm_fail(err, SCFM_ERR_ARG, "token %d has count %g", t, (double)b->counts[t]);
    }
    return SCFM_OK;
}

/* SCFM_COUNTS_BIN without model.value_bins: scGPT's 51 bins. */
#define DEFAULT_INPUT_BINS 51

/* counts[n,G] = the batch's raw counts, target[n,G] = their representation
 * model.input (scfm_counts_dense, data.h). */
static scfm_status densify(const scfm_model *m, scfm_fc *f, const scfm_batch *b, scfm_error *err) {
    const int bins = m->cfg.value_bins > 0 ? m->cfg.value_bins : DEFAULT_INPUT_BINS;
    scfm_status st = scfm_counts_dense(b, f->G, SCFM_COUNTS_RAW, bins, f->counts, err);
    if (st == SCFM_OK && m->cfg.input == SCFM_COUNTS_RAW)
        memcpy(f->target, f->counts, sizeof(float) * (size_t)b->n_cells * (size_t)f->G);
    else if (st == SCFM_OK)
        st = scfm_counts_dense(b, f->G, m->cfg.input, bins, f->target, err);
    return st;
}

/* The Philox words of gene j of cell id on stream (second draw: sub = 1). */
static void gene_draw(uint64_t seed, uint32_t epoch, uint32_t stream, int64_t id, int j, uint32_t sub,
                      uint32_t r[4]) {
    uint32_t counter[4] = {(uint32_t)id, (uint32_t)((uint64_t)id >> 32), (uint32_t)j | sub << 31,
                           stream << 24 | (epoch & 0xFFFFFFu)};
    scfm_philox(seed, counter, r);
}

/* CLEAR's augmentations of one cell's input x[G], keyed by its cell id: each
 * gene swaps its value with a random gene's with probability aug_swap (in
 * gene order), then is set to 0 with probability aug_dropout, else gets
 * N(0, aug_noise^2) added when non-zero. */
static void augment(const scfm_fc *f, float *x, uint64_t seed, uint32_t epoch, int64_t id) {
    uint32_t r[4], s[4];
    for (int j = 0; f->aug_swap > 0.0 && j < f->G; j++) {
        gene_draw(seed, epoch, SCFM_STREAM_AUGMENT, id, j, 0, r);
        if (scfm_u01(r[0]) >= f->aug_swap) continue;
        const int k = (int)(r[1] % (uint32_t)f->G);
        const float t = x[j];
        x[j] = x[k];
        x[k] = t;
    }
    for (int j = 0; j < f->G; j++) {
        gene_draw(seed, epoch, SCFM_STREAM_AUGMENT, id, j, 0, r);
        if (scfm_u01(r[2]) < f->aug_dropout) {
            x[j] = 0.0f;
        } else if (f->aug_noise > 0.0 && x[j] != 0.0f) {
            gene_draw(seed, epoch, SCFM_STREAM_AUGMENT, id, j, 1, s);
            x[j] += (float)f->aug_noise * scfm_normal(s[0], s[1]);
        }
    }
}

/* scMAE: mask[G] = 1 at a fraction mae of the genes, whose input becomes 0. */
static void mask_genes(const scfm_fc *f, float *x, float *mask, uint64_t seed, uint32_t epoch, int64_t id) {
    uint32_t r[4];
    for (int j = 0; j < f->G; j++) {
        gene_draw(seed, epoch, SCFM_STREAM_GENE_MASK, id, j, 0, r);
        mask[j] = scfm_u01(r[0]) < f->mae ? 1.0f : 0.0f;
        if (mask[j] != 0.0f) x[j] = 0.0f;
    }
}

/* row[NC] = the one-hot of condition (all 0 for -1). */
static void one_hot(float *row, int NC, int condition) {
    memset(row, 0, sizeof(float) * (size_t)NC);
    if (condition >= 0) row[condition] = 1.0f;
}

/* xin[n,Gx] from target: augmented when training with the contrastive
 * objective, masked for scMAE when there is a loss, then the one-hot. */
static void build_input(scfm_model *m, const scfm_batch *b) {
    scfm_fc *f = m->fc;
    const int G = f->G, Gx = f->Gx;
    for (int c = 0; c < b->n_cells; c++) {
        float *x = f->xin + (size_t)c * Gx;
        memcpy(x, f->target + (size_t)c * G, sizeof(float) * (size_t)G);
        if (f->augmented) augment(f, x, m->seed, m->epoch, b->cell_ids[c]);
        if (f->with_loss && f->mae > 0.0) mask_genes(f, x, f->mask + (size_t)c * G, m->seed, m->epoch, b->cell_ids[c]);
        if (f->cond_enc) one_hot(x + G, f->NC, b->conditions[c]);
    }
}

/* ---- layers ---- */

/* One MLP of L layers over in[n, in_w]: pre[l] = h_{l-1} W_l^T + b_l,
 * h_l = (l > 0 ? h_{l-1} : 0) + drop(act(pre[l])), dropout at site l when
 * the model trains and drop is set. Returns h_{L-1} (in when L = 0). */
static const float *mlp_forward(scfm_model *m, const scfm_batch *b, const fc_linear *w, float **pre, float **h,
                                const float *in, int in_w, int drop) {
    const scfm_fc *f = m->fc;
    const int n = b->n_cells, H = f->H;
    const float p = (float)m->cfg.dropout;
    for (int l = 0; l < f->L; l++) {
        scfm_linear_forward(pre[l], l == 0 ? in : h[l - 1], w[l].w, w[l].b, n, l == 0 ? in_w : H, H);
        scfm_model_activation_forward(m, h[l], pre[l], (size_t)n * H);
        for (int c = 0; drop && m->training && p > 0.0f && c < n; c++)
            scfm_dropout_row(h[l] + (size_t)c * H, H, p, scfm_dropout_key(m->seed, m->epoch, (uint32_t)l, b->cell_ids[c], 0));
        if (l > 0)
            for (size_t i = 0; i < (size_t)n * H; i++) h[l][i] += h[l - 1][i];
    }
    return f->L > 0 ? h[f->L - 1] : in;
}

/* On entry dh[n,H] = d h_{L-1}; accumulates the layers' parameter gradients
 * and, when din is not NULL, writes din[n, in_w] = d in. Uses f->dh2. */
static void mlp_backward(scfm_model *m, const scfm_batch *b, const fc_linear *w, fc_linear *g, float **pre, float **h,
                         const float *in, int in_w, int drop, float *dh, float *din) {
    const scfm_fc *f = m->fc;
    const int n = b->n_cells, H = f->H;
    const float p = (float)m->cfg.dropout;
    for (int l = f->L - 1; l >= 0; l--) {
        memcpy(f->dh2, dh, sizeof(float) * (size_t)n * H);
        for (int c = 0; drop && m->training && p > 0.0f && c < n; c++)
            scfm_dropout_row(f->dh2 + (size_t)c * H, H, p,
                             scfm_dropout_key(m->seed, m->epoch, (uint32_t)l, b->cell_ids[c], 0));
        scfm_model_activation_backward(m, f->dh2, pre[l], f->dh2, (size_t)n * H);
        if (l > 0) /* the residual keeps dh; the layer adds its share */
            scfm_linear_backward(dh, g[l].w, g[l].b, f->dh2, h[l - 1], w[l].w, n, H, H, 1);
        else
            scfm_linear_backward(din, g[0].w, g[0].b, f->dh2, in, w[0].w, n, in_w, H, 0);
    }
}

/* zin[n,Dz] = mu + exp(logvar / 2) eps (eps ~ N(0, 1) keyed by (seed, epoch,
 * cell id, dimension) when a variational model trains, else 0), then the
 * decoder's one-hot. */
static void sample_latent(scfm_model *m, const scfm_batch *b) {
    scfm_fc *f = m->fc;
    const int D = f->D, sample = m->cfg.variational && m->training;
    for (int c = 0; c < b->n_cells; c++) {
        float *z = f->zin + (size_t)c * f->Dz, *e = f->eps + (size_t)c * D;
        const float *mu = f->mu + (size_t)c * D, *lv = f->logvar + (size_t)c * D;
        for (int k = 0; k < D; k++) {
            e[k] = 0.0f;
            if (sample) {
                uint32_t r[4];
                gene_draw(m->seed, m->epoch, SCFM_STREAM_LATENT, b->cell_ids[c], k / 2, 0, r);
                e[k] = k % 2 ? scfm_normal(r[2], r[3]) : scfm_normal(r[0], r[1]);
            }
            z[k] = sample ? mu[k] + expf(0.5f * lv[k]) * e[k] : mu[k];
        }
        if (f->cond_dec) one_hot(z + D, f->NC, b->conditions[c]);
    }
}

/* The decoder's output heads and the reconstruction loss per cell, rec[n]. */
static void reconstruction_forward(scfm_model *m, const scfm_batch *b, const float *last, int last_w) {
    scfm_fc *f = m->fc;
    const int n = b->n_cells, G = f->G;
    const scfm_likelihood lik = m->cfg.likelihood;
    scfm_linear_forward(f->out, last, f->w.out.w, f->w.out.b, n, last_w, G);
    if (lik == SCFM_LIK_MSE) {
        scfm_sqerr_forward(f->rec, f->out, f->target, f->mae > 0.0 ? f->mask : NULL, n, G);
        return;
    }
    scfm_count_mean_forward(f->px_mu, f->out, b->library, n, G);
    if (lik == SCFM_LIK_POISSON) {
        scfm_poisson_forward(f->rec, f->counts, f->px_mu, n, G);
        return;
    }
    if (lik == SCFM_LIK_ZINB) scfm_linear_forward(f->pi, last, f->w.drop.w, f->w.drop.b, n, last_w, G);
    const int zinb = lik == SCFM_LIK_ZINB;
    scfm_nb_forward(f->rec, f->dpx, f->dlt, zinb ? f->dpi : NULL, f->counts, f->px_mu, f->w.px_r, zinb ? f->pi : NULL,
                    n, G, f->nb_scratch);
}

/* dh[n, last_w] = d(scale * rec)/d(last), and the heads' gradients. */
static void reconstruction_backward(scfm_model *m, const scfm_batch *b, const float *last, int last_w, float scale) {
    scfm_fc *f = m->fc;
    const int n = b->n_cells, G = f->G;
    const scfm_likelihood lik = m->cfg.likelihood;
    const int zinb = lik == SCFM_LIK_ZINB;
    if (lik == SCFM_LIK_MSE) {
        scfm_sqerr_backward(f->dout, f->out, f->target, f->mae > 0.0 ? f->mask : NULL, n, G, scale);
    } else {
        if (lik == SCFM_LIK_POISSON)
            scfm_poisson_backward(f->dpx, f->counts, f->px_mu, n, G, scale);
        else
            scfm_nb_backward(f->dpx, zinb ? f->dpi : NULL, f->g.px_r, f->dlt, n, G, scale);
        scfm_count_mean_backward(f->dout, f->dpx, f->px_mu, b->library, n, G);
    }
    scfm_linear_backward(f->dh, f->g.out.w, f->g.out.b, f->dout, last, f->w.out.w, n, last_w, G, 0);
    if (zinb) scfm_linear_backward(f->dh, f->g.drop.w, f->g.drop.b, f->dpi, last, f->w.drop.w, n, last_w, G, 1);
}

/* ---- forward and backward ---- */

scfm_status scfm_fc_forward(scfm_model *m, const scfm_batch *b, int training, uint64_t seed, uint32_t epoch,
                            double *loss_sum, scfm_error *err) {
    scfm_fc *f = m->fc;
    scfm_status st = check_batch(m, b, err);
    if (st == SCFM_OK) st = reserve(f, b->n_cells, err);
    if (st != SCFM_OK) return st;
    const int n = b->n_cells, D = f->D;
    m->training = loss_sum ? training : 0;
    m->seed = seed;
    m->epoch = epoch;
    m->proj_dz = NULL; /* a contrastive gradient belongs to the forward it followed */
    f->n = n;
    f->with_loss = loss_sum != NULL;
    f->augmented = m->training && f->contrastive && (f->aug_dropout > 0.0 || f->aug_noise > 0.0 || f->aug_swap > 0.0);
    if ((st = densify(m, f, b, err)) != SCFM_OK) return st;
    build_input(m, b);
    const float *h = mlp_forward(m, b, f->w.enc, f->enc_pre, f->enc_h, f->xin, f->Gx, 1);
    const int E = f->L > 0 ? f->H : f->Gx;
    scfm_linear_forward(f->mu, h, f->w.mean.w, f->w.mean.b, n, E, D);
    if (m->cfg.variational) scfm_linear_forward(f->logvar, h, f->w.logvar.w, f->w.logvar.b, n, E, D);
    if (!loss_sum) return SCFM_OK;

    sample_latent(m, b);
    const float *d = mlp_forward(m, b, f->w.dec, f->dec_pre, f->dec_h, f->zin, f->Dz, 0);
    reconstruction_forward(m, b, d, f->L > 0 ? f->H : f->Dz);
    const double warm = f->kl_warmup > 0 ? fmin(1.0, (double)f->step / (double)f->kl_warmup) : 1.0;
    f->kl_scale = m->cfg.variational ? f->w_kl * warm : 0.0;
    if (m->cfg.variational) scfm_kl_normal_forward(f->kl, f->mu, f->logvar, n, D);
    double total = 0.0;
    for (int c = 0; c < n; c++) total += f->w_rec * f->rec[c] + (f->kl_scale > 0.0 ? f->kl_scale * f->kl[c] : 0.0);
    *loss_sum = total;
    if (!isfinite(total)) return scfm_fail(err, SCFM_ERR_NUMERIC, "the loss is not finite (%g)", total);
    return SCFM_OK;
}

void scfm_fc_backward(scfm_model *m, const scfm_batch *b, float loss_scale) {
    scfm_fc *f = m->fc;
    const int n = b->n_cells, D = f->D, Dz = f->Dz;
    const int last_w = f->L > 0 ? f->H : Dz;
    const float *last = f->L > 0 ? f->dec_h[f->L - 1] : f->zin;
    reconstruction_backward(m, b, last, last_w, loss_scale * (float)f->w_rec);
    /* d zin: through the decoder's layers, or the heads' gradient itself */
    const float *dzin = f->dh;
    if (f->L > 0) {
        mlp_backward(m, b, f->w.dec, f->g.dec, f->dec_pre, f->dec_h, f->zin, Dz, 0, f->dh, f->dz);
        dzin = f->dz;
    }
    for (int c = 0; c < n; c++)
        for (int k = 0; k < D; k++) {
            const size_t at = (size_t)c * D + k;
            const float dz = dzin[(size_t)c * Dz + k];
            f->dmu[at] = dz;
            f->dlv[at] = m->cfg.variational ? dz * 0.5f * expf(0.5f * f->logvar[at]) * f->eps[at] : 0.0f;
        }
    if (f->kl_scale > 0.0)
        scfm_kl_normal_backward(f->dmu, f->dlv, f->mu, f->logvar, n, D, loss_scale * (float)f->kl_scale);
    if (m->proj_dz) {
        float *dx = f->dh2; /* [n,D], free until the encoder's layers */
        scfm_projection_backward(&m->proj, dx, m->g.w_p1, m->g.b_p1, m->g.w_p2, m->g.b_p2, m->proj_dz, m->w.w_p1,
                                 m->w.w_p2, n, D, m->cfg.projection_dim, m->cfg.activation);
        for (size_t i = 0; i < (size_t)n * D; i++) f->dmu[i] += dx[i];
        m->proj_dz = NULL;
    }
    const int E = f->L > 0 ? f->H : f->Gx;
    const float *h = f->L > 0 ? f->enc_h[f->L - 1] : f->xin;
    float *dh = f->L > 0 ? f->dh : NULL; /* the input needs no gradient */
    scfm_linear_backward(dh, f->g.mean.w, f->g.mean.b, f->dmu, h, f->w.mean.w, n, E, D, 0);
    if (m->cfg.variational) scfm_linear_backward(dh, f->g.logvar.w, f->g.logvar.b, f->dlv, h, f->w.logvar.w, n, E, D, 1);
    mlp_backward(m, b, f->w.enc, f->g.enc, f->enc_pre, f->enc_h, f->xin, f->Gx, 1, f->dh, NULL);
    if (m->grad_ready) m->grad_ready(0, m->n_params, m->grad_ready_user);
}
