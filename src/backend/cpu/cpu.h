/* CPU kernels of the encoder: forward/backward pairs over packed token
 * streams, fp32, OpenBLAS sgemm for the matrix products and OpenMP across
 * tokens, rows or (cell, head) pairs. Backward kernels accumulate (+=) into
 * parameter gradients and, where they say so, into input gradients. */
#ifndef SCFM_BACKEND_CPU_H
#define SCFM_BACKEND_CPU_H

#include <stddef.h>
#include <stdint.h>

/* Dropout masks are regenerated, not stored: a row of the stream (one token
 * at one dropout site, or one row of attention probabilities) is keyed by
 * this value, derived from (seed, epoch, site, cell id, position). */
uint64_t scfm_dropout_key(uint64_t seed, uint32_t epoch, uint32_t site, int64_t cell_id,
                          int32_t position);
/* The key less its position: scfm_dropout_key is scfm_mix64 of this plus
 * (uint32_t)position, so a GPU kernel derives row keys from one per cell. */
uint64_t scfm_dropout_cell_key(uint64_t seed, uint32_t epoch, uint32_t site, int64_t cell_id);
/* x[i] *= keep(i) / (1 - p) for i < n; the same key gives the same mask, so
 * applying it to the gradient is the backward pass. */
void scfm_dropout_row(float *x, int n, float p, uint64_t row_key);
/* dst = src * mask and, when grad != NULL, grad *= mask, from one draw of the
 * mask (dst may equal src). */
void scfm_dropout_apply(float *dst, const float *src, float *grad, int n, float p, uint64_t row_key);

/* out[T,C] = wte[tokens[t]] + wpe[positions[t]] (wpe may be NULL). */
void scfm_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                            const float *wte, const float *wpe, int T, int C);
/* dwte[V,C] += scatter(dout), dwpe[P,C] += scatter(dout) (either may be NULL). */
void scfm_embedding_backward(float *dwte, float *dwpe, const float *dout, const int32_t *tokens,
                             const int32_t *positions, int T, int C);

/* out[T,C] = (inp - mean) * rstd * w + b, saving mean[T], rstd[T]. */
void scfm_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *w, const float *b, int T, int C, float eps);
/* dinp[T,C] += ..., dw[C] += ..., db[C] += ... */
void scfm_layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *mean,
                             const float *rstd, int T, int C);

/* out[T,OC] = inp[T,C] @ w[OC,C]^T + b[OC] (b may be NULL). */
void scfm_linear_forward(float *out, const float *inp, const float *w, const float *b, int T,
                         int C, int OC);
/* dinp[T,C] (= or += by accumulate_dinp; NULL: skipped), dw[OC,C] +=, db[OC] += */
void scfm_linear_backward(float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int T, int C, int OC,
                          int accumulate_dinp);

/* Elementwise activations over n values. GELU is the exact erf form. */
void scfm_gelu_forward(float *out, const float *inp, size_t n);
void scfm_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
void scfm_relu_forward(float *out, const float *inp, size_t n);
void scfm_relu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Dropout bookkeeping of one attention call; p == 0 disables it. */
typedef struct {
    float p;
    uint64_t seed;
    uint32_t epoch;
    uint32_t site;
    const int64_t *cell_ids;  /* [n_cells] */
} scfm_attention_dropout;

/* Bidirectional multi-head attention within each cell of a packed stream.
 * qkv[T,3C] holds q | k | v for every token, heads contiguous inside each;
 * out[T,C]; probs holds, per cell c and head h, the L_c x L_c softmax (before
 * dropout) at probs_offset(c) + h*L_c*L_c, for backward. scratch is
 * threads * max_len^2 floats. */
void scfm_attention_forward(float *out, float *probs, const float *qkv,
                            const int32_t *cell_offsets, int n_cells, int C, int heads,
                            const scfm_attention_dropout *drop, float *scratch, int max_len);
/* dqkv[T,3C] = d(out)/d(qkv) (overwritten). scratch: threads * 2 * max_len^2. */
void scfm_attention_backward(float *dqkv, const float *dout, const float *qkv,
                             const float *probs, const int32_t *cell_offsets, int n_cells,
                             int C, int heads, const scfm_attention_dropout *drop,
                             float *scratch, int max_len);
/* Floats of probs for a batch: heads * sum_c L_c^2. */
size_t scfm_attention_probs_size(const int32_t *cell_offsets, int n_cells, int heads);

/* Softmax cross-entropy of logits[N,V] against labels[N]: returns the loss
 * summed over the N rows and replaces logits by their softmax. */
double scfm_crossentropy_forward(float *logits, const int32_t *labels, int N, int V);
/* probs[N,V] (from forward) becomes d(scale * loss)/d(logits), in place. */
void scfm_crossentropy_backward(float *probs, const int32_t *labels, int N, int V, float scale);

/* Cell embeddings of a packed stream: out[n_cells,C] is, per cell, the mean
 * of hidden[T,C] over its tokens with id >= first_gene (over all of them when
 * it has none), or with cls set its first token's row. */
void scfm_pool_forward(float *out, const float *hidden, const int32_t *tokens, const int32_t *cell_offsets,
                       int n_cells, int C, int first_gene, int cls);
/* dhidden[T,C] += d(out)/d(hidden) applied to dout[n_cells,C]. */
void scfm_pool_backward(float *dhidden, const float *dout, const int32_t *tokens, const int32_t *cell_offsets,
                        int n_cells, int C, int first_gene, int cls);
/* out[i] = sum over rows of inp[T,C] column i, added to out. */
void scfm_bias_backward(float *db, const float *dout, int T, int C);

/* ---- expression-value objectives (value.c) ---- */

/* out[T,C] += table[index[t]] for index[t] >= 0 (value bins, conditions). */
void scfm_add_rows_forward(float *out, const int32_t *index, const float *table, int T, int C);
/* dtable[rows,C] += scatter(dout[T,C]) by index (rows with index < 0 skipped). */
void scfm_add_rows_backward(float *dtable, const float *dout, const int32_t *index, int T, int C);
/* Sum over n < N of (pred[n] - target[n])^2. */
double scfm_mse_forward(const float *pred, const int32_t *target, int N);
/* dpred[N] = d(scale * that sum)/d(pred) (overwritten). */
void scfm_mse_backward(float *dpred, const float *pred, const int32_t *target, int N, float scale);
/* out[n] = 1 / (1 + exp(-inp[n])); backward from the output: dinp = dout out (1 - out) (overwritten). */
void scfm_sigmoid_forward(float *out, const float *inp, size_t n);
void scfm_sigmoid_backward(float *dinp, const float *out, const float *dout, size_t n);
/* out[N] = a[n,:] . cells[cell_of[n],:], a[N,C], cells[n_cells,C]. */
void scfm_rowdot_forward(float *out, const float *a, const float *cells, const int32_t *cell_of, int N, int C);
/* da[N,C] = dout[n] cells[cell_of[n]] (overwritten); dcells[n_cells,C] += dout[n] a[n]. */
void scfm_rowdot_backward(float *da, float *dcells, const float *dout, const float *a, const float *cells,
                          const int32_t *cell_of, int N, int C);

/* ---- the count encoders' losses (counts.c; docs/encoders.md) ----
 * n cells of G genes: x[n,G] raw counts, mu[n,G] their modelled means, loss[n]
 * per cell summed over genes. Backward kernels overwrite the per-element
 * gradients (dmu, dpi, dpred) and add into per-gene or per-cell ones. */

/* mu[n,G] = library[c] softmax(logits[c,:]) (scVI's px_rate). */
void scfm_count_mean_forward(float *mu, const float *logits, const float *library, int n, int G);
/* dlogits[n,G] = d/dlogits of the loss whose gradient at mu is dmu (library > 0). */
void scfm_count_mean_backward(float *dlogits, const float *dmu, const float *mu, const float *library, int n,
                              int G);
/* -log NB(x; mu, theta = exp(log_theta[G])), and with pi[n,G] (dropout
 * logits; NULL: plain NB) the zero-inflated NB with dropout probability
 * sigmoid(pi), as scVI's log_nb_positive / log_zinb_positive (eps 1e-8). */
/* With dmu not NULL, the forward also leaves each term's derivatives (one
 * pass over the logarithms serves the loss and the gradient): dmu[n,G] in
 * mu, dlt[n,G] in log theta, and with pi dpi[n,G] in pi. scratch:
 * SCFM_NB_SCRATCH(G) doubles (per-gene terms and tables of the small
 * counts, a table of log x!). */
#define SCFM_NB_LOG_FACTORIALS 256
#define SCFM_NB_SMALL_COUNTS 8
#define SCFM_NB_GENE_TERMS (5 + 2 * SCFM_NB_SMALL_COUNTS)
#define SCFM_NB_SCRATCH(G) (SCFM_NB_GENE_TERMS * (size_t)(G) + SCFM_NB_LOG_FACTORIALS)
void scfm_nb_forward(double *loss, float *dmu, float *dlt, float *dpi, const float *x, const float *mu,
                     const float *log_theta, const float *pi, int n, int G, double *scratch);
/* After a forward with derivatives: dmu and dpi (NULL without pi) times
 * scale in place, and dlog_theta[G] += scale x the sum of dlt over cells. */
void scfm_nb_backward(float *dmu, float *dpi, float *dlog_theta, const float *dlt, int n, int G, float scale);
/* -log Poisson(x; mu) (eps 1e-8 in the logarithm); dmu[n,G] = scale d/dmu. */
void scfm_poisson_forward(double *loss, const float *x, const float *mu, int n, int G);
void scfm_poisson_backward(float *dmu, const float *x, const float *mu, int n, int G, float scale);
/* sum_j mask (pred - target)^2 per cell (mask[n,G] of 0/1; NULL: every gene);
 * dpred[n,G] = scale d/dpred. */
void scfm_sqerr_forward(double *loss, const float *pred, const float *target, const float *mask, int n, int G);
void scfm_sqerr_backward(float *dpred, const float *pred, const float *target, const float *mask, int n, int G,
                         float scale);
/* KL(N(mu, exp(logvar)) || N(0, I)) per cell of mu[n,D], logvar[n,D];
 * backward adds scale d/dmu and scale d/dlogvar. */
void scfm_kl_normal_forward(double *loss, const float *mu, const float *logvar, int n, int D);
void scfm_kl_normal_backward(float *dmu, float *dlogvar, const float *mu, const float *logvar, int n, int D,
                             float scale);

#endif
