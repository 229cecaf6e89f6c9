/* The model's state, shared by the transformer (model.c) and the count
 * encoders (fc.c): both keep their parameters, gradients and tensor table in
 * the same contiguous buffers, so the optimiser, checkpoints, safetensors and
 * the gradient reduction treat them alike. Private to src/model/. */
#ifndef SCFM_MODEL_IMPL_H
#define SCFM_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/model.h"

typedef struct scfm_fc scfm_fc;

typedef struct {
    float *w_qkv, *b_qkv, *w_ao, *b_ao, *ln_a_w, *ln_a_b;
    float *w_i, *b_i, *w_o, *b_o, *ln_f_w, *ln_f_b;
} layer_weights;

typedef struct {
    float *wte, *wpe, *ln_e_w, *ln_e_b;
    layer_weights *layers;
    float *ln_fin_w, *ln_fin_b;
    float *w_t, *b_t, *ln_t_w, *ln_t_b, *head_bias;
    float *w_cls, *b_cls;
    float *wve, *wce;                     /* value bins, conditions */
    float *w_val, *b_val, *w_q, *b_q, *w_mvc; /* value and MVC heads */
    float *w_p1, *b_p1, *w_p2, *b_p2, *log_tau;
} weights;

/* Activations of one layer for T tokens (see the forward passes). */
typedef struct {
    float *ln_a, *ln_a_mean, *ln_a_rstd; /* [T,C] [T] [T] */
    float *qkv;                          /* [T,3C] */
    float *ctx;                          /* [T,C] attention output before w_ao */
    float *probs;                        /* heads * sum L^2 */
    float *res1;                         /* [T,C] input + dropout(attention block) */
    float *ln_f, *ln_f_mean, *ln_f_rstd; /* [T,C] [T] [T] */
    float *f1, *act;                     /* [T,F] */
    float *res2;                         /* [T,C] */
} layer_acts;

/* Places one layer's activations for T tokens and `probs` floats of
 * attention probabilities at base + off floats (base NULL: counts only);
 * returns the offset after them. The CPU's arena and the CUDA backend's
 * share it. */
size_t scfm_layer_acts_place(layer_acts *a, float *base, size_t off, size_t T, size_t C, size_t F, size_t probs);

struct scfm_model {
    scfm_model_config cfg;
    int V, C, F, P, NL, NH, K;
    int first_gene;          /* tokens below it are special */
    int B, O, NC;            /* value bins, value head outputs, conditions */
    double w_mlm, w_value, w_mvc; /* objective weights */
    size_t n_params;
    float *params, *grads;
    weights w, g;
    scfm_tensor_info *tensors;
    int n_tensors;
    size_t *layer_begin;     /* [layers + 1]: where each layer's parameters start; the last is the head's */
    scfm_grad_ready_fn grad_ready;
    void *grad_ready_user;
    int n_deferred;                  /* lookup rows of the word-embedding gradient kept aside */
    const int32_t *deferred_tokens;  /* [n_deferred] */
    const float *deferred_rows;      /* [n_deferred, C] */

    /* activation arena, sized for cap_T tokens, cap_N targets, cap_cells
     * cells, cap_probs */
    int cap_T, cap_N, cap_cells;
    size_t cap_probs;
    float *arena;
    int32_t *positions, *token_cell; /* [T] */
    float *emb, *ln_e_mean, *ln_e_rstd, *x0;
    layer_acts *acts;
    float *fin, *fin_mean, *fin_rstd;                   /* pre-LN final norm */
    float *g_in, *t1, *t2, *t3, *t_mean, *t_rstd, *logits; /* head */
    float *dhead1, *dhead2;                             /* [N,C] head backward scratch */
    float *pooled, *cls_in, *cls_logits;                /* [n,C] [n_lab,C] [n_lab,K] classifier */
    int32_t *cls_cell, *cls_label;                      /* [n_lab] */
    int n_labelled;
    int32_t *token_cond;                                /* [T] condition code of each token's cell */
    float *v_in, *v_out, *dv_in;                        /* [Nv,C] [Nv,O] [Nv,C] value head */
    float *mvc_e, *mvc_q1, *mvc_q, *mvc_wq, *mvc_pred;  /* [Nv,C] x4, [Nv] MVC */
    float *mvc_cell, *mvc_dcell;                        /* [n,C] */
    int32_t *mvc_cell_of;                               /* [Nv] cell of each masked value */
    float *dres, *dtmp1, *dtmp2, *dqkv, *dff1, *dff2;   /* backward scratch */
    float *attn_scratch;
    int threads;

    /* the last forward */
    int training;
    uint64_t seed;
    uint32_t epoch;

    /* the contrastive head's activations, and d(loss)/dz for the next backward */
    scfm_projection_acts proj;
    const float *proj_dz;

    /* the count encoders' network and activations (fc.c); NULL: the transformer */
    scfm_fc *fc;
};

/* Walks the layout once: with add_tensor it records names and offsets, and
 * with a base pointer it returns each tensor's place in that buffer (params or grads). */
typedef struct {
    scfm_model *m;
    float *base;
    size_t offset;
    int record;
} scfm_layout_walk;

/* Records (with lw->record) and places the next tensor of the layout: a
 * [rows, cols] matrix, or a [rows] vector when cols is 0; decay 1 puts it in
 * AdamW's weight-decay group. */
float *scfm_model_place(scfm_layout_walk *lw, const char *name, int rows, int cols, int decay);
/* Places the contrastive head (contrastive.projection.*, contrastive.log_temperature)
 * on embeddings of width C when lw->m->cfg asks for one; v's head views
 * are set (NULL without). */
void scfm_model_place_projection(scfm_layout_walk *lw, weights *v, int C);
/* The transformer's dropout sites, which key its masks (scfm_dropout_key):
 * the embeddings', then three per layer. */
enum { SCFM_SITE_EMBEDDING = 0, SCFM_SITES_PER_LAYER = 3, SCFM_SITE_ATTN_PROBS = 1, SCFM_SITE_ATTN_OUT = 2,
       SCFM_SITE_FFN_OUT = 3 };
static inline uint32_t scfm_layer_site(int layer, int which) {
    return (uint32_t)(layer * SCFM_SITES_PER_LAYER + which);
}
/* Each token's position in its cell and its cell's index in the batch
 * ([n_tokens] each). */
void scfm_model_token_places(const scfm_batch *b, int32_t *positions, int32_t *token_cell);
/* Refuses a batch the transformer cannot take (cell lengths, token ids,
 * targets, labels, values, conditions), naming what is wrong. */
scfm_status scfm_model_check_batch(const scfm_model *m, const scfm_batch *b, scfm_error *err);
/* model.activation over n values, and its gradient (dinp may equal dout). */
void scfm_model_activation_forward(const scfm_model *m, float *out, const float *inp, size_t n);
void scfm_model_activation_backward(const scfm_model *m, float *dinp, const float *inp, const float *dout, size_t n);

/* ---- the count encoders (fc.c; docs/encoders.md) ----
 * scfm_model_* dispatch here when m->fc is set. */

/* Lays out the network of m->cfg (encoder mlp or linear) into m's buffers,
 * the contrastive head's views into m->w/m->g; m->cfg is set, the rest zero. */
scfm_status scfm_fc_create(scfm_model *m, scfm_error *err);
size_t scfm_fc_param_count(const scfm_model_config *cfg);
void scfm_fc_free(scfm_fc *fc);
void scfm_fc_set_objective(scfm_fc *fc, const scfm_objective_config *o);
void scfm_fc_set_step(scfm_fc *fc, int64_t step);
/* With loss_sum NULL: the encoder alone (no augmentation, masking, sampling
 * or dropout), for inference. */
scfm_status scfm_fc_forward(scfm_model *m, const scfm_batch *b, int training, uint64_t seed, uint32_t epoch,
                            double *loss_sum, scfm_error *err);
void scfm_fc_backward(scfm_model *m, const scfm_batch *b, float loss_scale);
/* The latent mean [n_cells, latent] of the last forward or encode. */
const float *scfm_fc_latent(const scfm_model *m);
double scfm_fc_flops(const scfm_model *m, const scfm_batch *b, int with_backward);

#endif
