/* scfm model: a BERT encoder over gene tokens with a masked-LM head and an
 * optional cell classification head, in fp32
 * on the CPU. Parameters are stored under the Hugging Face BertForMaskedLM
 * names, in one contiguous buffer; gradients mirror it in a second buffer.
 *
 * With model.encoder "mlp" or "linear" the same handle is a count encoder
 * (src/model/fc.c, docs/encoders.md): an encoder-decoder over each cell's
 * count vector (batches of `counts` shards: b->tokens are gene columns,
 * b->counts and b->library their raw counts), scVI-style, with its own
 * tensor names (encoder.*, decoder.*, px_r). Every function below takes
 * either; where they differ it says so. */
#ifndef SCFM_MODEL_H
#define SCFM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/data.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One named tensor inside the parameter buffer. */
typedef struct {
    char name[128];     /* Hugging Face name, e.g. "bert.encoder.layer.0.attention.self.query.weight" */
    size_t offset;      /* in floats, from the start of the buffer */
    size_t size;        /* in floats */
    int ndim;
    int shape[2];       /* row-major; Linear weights are [out, in] as in PyTorch */
    int decay;          /* 1: AdamW weight decay applies (not biases, not LayerNorm) */
} scfm_tensor_info;

typedef struct scfm_model scfm_model;

scfm_status scfm_model_create(const scfm_model_config *cfg, scfm_model **out, scfm_error *err);
void scfm_model_free(scfm_model *m);
/* Parameters a model of this shape has, without allocating it (0 when out of
 * memory). */
size_t scfm_model_param_count(const scfm_model_config *cfg);

const scfm_model_config *scfm_model_get_config(const scfm_model *m);
size_t scfm_model_num_params(const scfm_model *m);
float *scfm_model_params(scfm_model *m);
float *scfm_model_grads(scfm_model *m);
int scfm_model_num_tensors(const scfm_model *m);
const scfm_tensor_info *scfm_model_tensor(const scfm_model *m, int i);
/* NULL when no tensor has that name. */
const scfm_tensor_info *scfm_model_find_tensor(const scfm_model *m, const char *name);

/* BERT initialisation: weights ~ N(0, init_std), biases 0, LayerNorm weight 1,
 * drawn from Philox keyed by seed and each value's index. */
void scfm_model_init_weights(scfm_model *m, uint64_t seed);
/* Zeroes the gradients, and the embedding rows kept aside. */
void scfm_model_zero_grad(scfm_model *m);

/* Forward and backward floating-point operations per token of a batch (for
 * GFLOP/s reports): counts the matrix products and attention (a count
 * encoder: its matrix products). */
double scfm_model_flops(const scfm_model *m, const scfm_batch *b, int with_backward);

/* Runs the encoder and the heads on b: the MLM head on its masked targets
 * (tokens already masked), and with num_labels > 0 the classifier on its
 * labelled cells (b->labels >= 0). Returns the sum of both cross-entropies
 * over those terms in *loss_sum. training != 0 turns
 * on dropout, keyed by (seed, epoch, cell id, position). Activations needed by
 * backward are kept inside m. */
scfm_status scfm_model_forward(scfm_model *m, const scfm_batch *b, int training,
                               uint64_t seed, uint32_t epoch, double *loss_sum,
                               scfm_error *err);

/* Weights of the objectives in scfm_model_forward's loss (docs/objectives.md):
 * each MLM, value and MVC term enters times its weight; a weight of 0 skips
 * that head. A new model weighs every head it has by 1. */
void scfm_model_set_objective(scfm_model *m, const scfm_objective_config *o);

/* The terms loss_sum adds up for b: its masked targets (MLM weight > 0),
 * its labelled cells when the model has a classification head, and its
 * masked values when a value or MVC weight is > 0 (MVC's term and the value
 * head's at one masked value count once). */
int scfm_model_loss_terms(const scfm_model *m, const scfm_batch *b);

/* Count encoders: the loss of a forward is, summed over the batch's cells,
 * objective.reconstruction x the reconstruction loss (model.likelihood,
 * summed over genes; scMAE: over the masked genes) + objective.kl x
 * min(1, step / objective.kl_warmup_steps) x KL(q(z|x) || N(0, I)) when
 * variational, and scfm_model_loss_terms is the number of cells. Training
 * forwards sample z and apply dropout and, with objective.contrastive > 0,
 * CLEAR's augmentations of the input, all keyed by (seed, epoch, cell id);
 * evaluation forwards use z = mean. A new model weighs reconstruction and KL
 * by 1 without warm-up until scfm_model_set_objective. */
/* The optimiser step about to run, for the KL warm-up (the transformer
 * ignores it). */
void scfm_model_set_step(scfm_model *m, int64_t step);
/* Width of a cell embedding from scfm_model_pool: model.hidden for the
 * transformer, model.latent for a count encoder. */
int scfm_model_embedding_width(const scfm_model *m);

/* The encoder alone, for inference (no dropout, no heads): afterwards
 * scfm_model_hidden and scfm_model_layer_hidden hold b's hidden states. */
scfm_status scfm_model_encode(scfm_model *m, const scfm_batch *b, scfm_error *err);
/* Hidden states [n_tokens, hidden] after layer k of the last forward: 0 is
 * the embeddings' output, `layers` the final one (after the final norm of a
 * pre-LN model). */
const float *scfm_model_layer_hidden(const scfm_model *m, int k);
/* Cell embeddings out[n_cells, hidden] from layer k's hidden states: the
 * mean over each cell's gene tokens (ids >= model.special_tokens), or its
 * first token (<cls>). A count encoder gives its latent mean
 * out[n_cells, latent] whatever k and how (scfm_model_hidden and
 * scfm_model_layer_hidden return it too). */
void scfm_model_pool(const scfm_model *m, const scfm_batch *b, int layer, scfm_pool how, float *out);
/* After scfm_model_encode: class probabilities probs[n_cells, num_labels]
 * of the classification head (SCFM_ERR_ARG when the model has none). */
scfm_status scfm_model_classify(scfm_model *m, const scfm_batch *b, float *probs, scfm_error *err);

/* Adds d(loss_sum * loss_scale)/dparams to the gradient buffer, using the
 * activations of the last forward on the same batch. loss_scale is 1/(targets
 * of the whole optimiser step). */
void scfm_model_backward(scfm_model *m, const scfm_batch *b, float loss_scale);

/* Writes every parameter under its Hugging Face name, fp32, to a safetensors
 * file (atomically), with the model shape in the metadata. */
scfm_status scfm_model_save(const scfm_model *m, const char *path, scfm_error *err);
/* Reads every parameter of m from a file written by scfm_model_save (or any
 * file with the same names, dtypes and shapes); SCFM_ERR_FORMAT naming the
 * tensor when one is missing or shaped differently. */
scfm_status scfm_model_load(scfm_model *m, const char *path, scfm_error *err);
/* The same for fine-tuning: every tensor but the classification head
 * (classifier.*), which keeps its values (a pretrained checkpoint has none,
 * or one for other classes). */
scfm_status scfm_model_load_encoder(scfm_model *m, const char *path, scfm_error *err);
/* Where layer l's parameters start in the buffer (l = layers: the head's);
 * [0, offset(k)) are the embeddings and the first k layers. */
size_t scfm_model_layer_offset(const scfm_model *m, int l);

/* Called during scfm_model_backward as soon as the gradients of params
 * [offset, offset + size) are final for that pass, in the order the pass
 * finishes them: the head (with the final norm), the word embeddings, the
 * layers from last to first, then the rest of the embeddings.
 * Data-parallel training starts reducing each range there, overlapping
 * communication with the rest of backward. While a hook is set, the word
 * embeddings' range holds only the tied decoder's gradient: the input
 * lookup's part, one row per token, is kept aside (scfm_model_embedding_rows)
 * so that the largest tensor need not wait for the end of backward. NULL
 * turns the hook off and backward accumulates everything in place. */
typedef void (*scfm_grad_ready_fn)(size_t offset, size_t size, void *user);
void scfm_model_set_grad_ready(scfm_model *m, scfm_grad_ready_fn fn, void *user);
/* The ranges scfm_grad_ready_fn reports, in the same order (NULL arrays:
 * only the count, layers + 3). A count encoder reports one range, every
 * parameter, at the end of backward: its layers are small next to the
 * transformer's and run in well under the reduction's latency. */
int scfm_model_grad_ranges(const scfm_model *m, size_t *offset, size_t *size);
/* After a backward with a hook: the word-embedding gradient rows kept aside
 * (a token id and a hidden-sized row per token of the batch; 0 rows after a
 * backward without hook). Valid until the next forward. */
int scfm_model_embedding_rows(const scfm_model *m, const int32_t **tokens, const float **rows);
/* Adds rows to the word embeddings' gradient, in order (deterministic). */
void scfm_model_add_embedding_rows(scfm_model *m, const int32_t *tokens, const float *rows, int n);

/* Final hidden states of the last forward, [n_tokens, hidden]. */
const float *scfm_model_hidden(const scfm_model *m);

/* ---- contrastive objective (src/model/contrastive.c; docs/objectives.md) ----
 * A model created with projection_dim P > 0 carries a projection head on the
 * pooled cell embedding x[n,C] (model.pool):
 *   h1 = x w1^T + b1, a1 = act(h1), h2 = a1 w2^T + b2, z = h2 / |h2|
 * with w1 = contrastive.projection.0.weight [P,C], b1 = ...0.bias [P],
 * w2 = contrastive.projection.2.weight [P,P], b2 = ...2.bias [P] (the names
 * of a torch.nn.Sequential(Linear, act, Linear)), act the model's activation,
 * and with learn_temperature the scalar contrastive.log_temperature [1]. */

/* Activations of the projection head for up to `cap` cells. */
typedef struct {
    float *x;      /* [n,C] pooled embeddings */
    float *h1, *a1, *h2, *z; /* [n,P] */
    float *rnorm;  /* [n] 1 / |h2| */
    float *d1, *d2; /* [n,max(C,P)] backward scratch */
    int cap;
} scfm_projection_acts;

/* Grows acts to n cells of widths C and P. */
scfm_status scfm_projection_reserve(scfm_projection_acts *a, int n, int C, int P, scfm_error *err);
void scfm_projection_free(scfm_projection_acts *a);
/* a->z[n,P] from a->x[n,C] as above (act: SCFM_ACT_GELU or SCFM_ACT_RELU). */
void scfm_projection_forward(scfm_projection_acts *a, const float *w1, const float *b1, const float *w2,
                             const float *b2, int n, int C, int P, scfm_activation act);
/* dx[n,C] = d/dx, and dw1[P,C], db1[P], dw2[P,P], db2[P] += d/dparams, of
 * the loss whose gradient at z is dz[n,P]; uses the activations of the last
 * forward (a->d1, a->d2 are overwritten). */
void scfm_projection_backward(scfm_projection_acts *a, float *dx, float *dw1, float *db1, float *dw2, float *db2,
                              const float *dz, const float *w1, const float *w2, int n, int C, int P,
                              scfm_activation act);

/* Symmetric InfoNCE (SimCLR's NT-Xent) over N views z_all[N,P] (unit rows),
 * where views 2k and 2k + 1 are a positive pair and every other view is a
 * negative: for the anchors i in [lo, lo + n),
 *   s_ij = z_i . z_j / tau (j != i),  l_i = -s_i,pair(i) + log sum_{j != i} exp(s_ij),
 * tau = exp(log_tau). Returns sum_i l_i; keeps sim[n,N] = s (the diagonal
 * unused) and probs[n,N] = softmax_j s_ij (0 on the diagonal) for backward. */
double scfm_infonce_forward(float *sim, float *probs, const float *z_all, int N, int P, int lo, int n,
                            float log_tau);
/* dz_all[N,P] += scale * d(sum_i l_i)/dz_all: every row, since an anchor's
 * loss reaches all views; *dlog_tau += the same for log(tau) (dlog_tau may
 * be NULL). probs is overwritten. */
void scfm_infonce_backward(float *dz_all, float *dlog_tau, float *probs, const float *sim, const float *z_all,
                           int N, int P, int lo, int n, float log_tau, float scale);

/* After scfm_model_forward on b (a model with a projection head): the unit
 * projections z[n_cells, P] of b's cells, valid until the next forward. A
 * count encoder projects its latent mean (C = model.latent above). */
scfm_status scfm_model_contrastive_forward(scfm_model *m, const scfm_batch *b, const float **z, scfm_error *err);
/* d(loss)/dz[n_cells, P] (already scaled) for the next scfm_model_backward on
 * the same batch, which takes it through the projection head and pooling
 * into the encoder; dz must stay valid until then, and is used once. */
void scfm_model_contrastive_grad(scfm_model *m, const float *dz);
/* log(temperature): the parameter when learned, else log of the fixed one;
 * the gradient slot is NULL when it is fixed. */
float scfm_model_log_temperature(const scfm_model *m);
float *scfm_model_log_temperature_grad(scfm_model *m);

/* ---- Hugging Face transformers format (src/model/hf.c; docs/export.md) ----
 * A directory that transformers.BertForMaskedLM.from_pretrained loads:
 * config.json, model.safetensors (F32, the names above plus a zero
 * token_type_embeddings row, and zero position embeddings when the model has
 * none), and with a vocabulary token_dictionary.json, gene_median_dictionary.json,
 * gene_name_id_dict.json (Geneformer's dictionaries, as JSON) and vocab.tsv. */

/* Writes m (and v's dictionaries unless v is NULL) to dir, built as dir.tmp
 * and renamed; an existing dir is an error (SCFM_ERR_ARG) unless force.
 * Pre-LN models are refused (SCFM_ERR_ARG): BERT has no final LayerNorm. */
scfm_status scfm_hf_export(const scfm_model *m, const scfm_vocab *v, const char *dir, int force, scfm_error *err);

/* What scfm_hf_import changed or left out on the way in. */
typedef struct {
    scfm_dtype dtype;          /* of the weights file; F16 and BF16 are widened to F32 */
    int pooler_dropped;        /* bert.pooler.* was there: scfm has no pooler */
    int token_type_folded;     /* token_type_embeddings row 0 was non-zero and is now added into the
                                  position embeddings (what BERT adds to every token) */
    int token_type_rows_dropped; /* rows past the first, unreachable with one segment */
    int vocab_from_tsv;        /* the vocabulary came from vocab.tsv (exact), not the JSON dictionaries */
    int tokens_reordered;      /* the dictionary's order differs from scfm's: embedding rows permuted */
} scfm_hf_import_notes;

/* Reads a BertForMaskedLM directory: config.json (model_type "bert", the
 * sizes, activation gelu or relu, absolute positions), model.safetensors
 * (F32, F16 or BF16) and, when token_dictionary.json is there, the
 * vocabulary (*vocab, else NULL). Sizes must fit scfm's configuration and
 * agree with every tensor; errors (SCFM_ERR_FORMAT) name the file and the
 * key or tensor. */
scfm_status scfm_hf_import(const char *dir, scfm_model **model, scfm_vocab **vocab, scfm_hf_import_notes *notes,
                           scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
