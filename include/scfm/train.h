/* scfm training: the optimiser (AdamW), the learning-rate schedule and the
 * masked-gene training loop. */
#ifndef SCFM_TRAIN_H
#define SCFM_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/dist.h"
#include "scfm/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Learning rate of optimiser step `step` (0-based): linear warm-up over
 * warmup_steps, then linear or cosine decay to lr * min_lr_ratio at steps. */
double scfm_lr_at(const scfm_train_config *t, int64_t step);

/* Global L2 norm of n gradients. */
double scfm_grad_norm(const float *grads, size_t n);

/* One AdamW step (decoupled weight decay, applied only to tensors with
 * decay set) over the model's contiguous buffers; m and v are the moment
 * buffers (n_params each) and t the 1-based step count. */
void scfm_adamw_step(scfm_model *model, float *m, float *v, int64_t t, double lr,
                     const scfm_train_config *cfg);
/* The same on parameters [lo, hi) only, with their gradients g and moments
 * m, v indexed from lo: the shard a rank updates under ZeRO-1. */
void scfm_adamw_update(scfm_model *model, const float *g, float *m, float *v, size_t lo, size_t hi, int64_t t,
                       double lr, const scfm_train_config *cfg);

/* ---- checkpoints -----------------------------------------------------
 * run_dir/step_NNNNNNN/ holds model.safetensors (weights), optimizer.safetensors
 * (AdamW moments and the state below), config.cfg, metrics.jsonl (the run's
 * metrics before this step's line, which records the checkpoint's time),
 * vocab.tsv (a copy of data.vocab, when set) and MANIFEST
 * (size and CRC-32 of each file). It is written as step_NNNNNNN.tmp, each file
 * and the directory fsynced, renamed into place, and only then run_dir/latest
 * names it; the newest checkpoint.keep are kept. Every random draw in scfm is
 * a function of (seed, epoch, cell, position), so this state is all a resumed
 * run needs to continue bit for bit. */
typedef struct {
    int64_t step;                    /* optimiser steps done */
    int64_t tokens_seen;
    int world_size;                  /* ranks that wrote it */
    scfm_loader_position *positions; /* [world_size]: where each rank's data stream resumes;
                                        scfm_checkpoint_read allocates it (free()) */
} scfm_checkpoint_state;

scfm_status scfm_checkpoint_write(const char *run_dir, const scfm_config *cfg, const scfm_model *model,
                                  const float *adam_m, const float *adam_v,
                                  const scfm_checkpoint_state *state, scfm_error *err);
/* A checkpoint of weights alone (what `scfm import` makes): DIR holds
 * model.safetensors, config.cfg, the vocabulary when cfg->data.vocab names
 * one, and MANIFEST; written as DIR.tmp and renamed. An existing DIR is an
 * error (SCFM_ERR_ARG) unless force. */
scfm_status scfm_checkpoint_write_model(const char *dir, const scfm_config *cfg, const scfm_model *model, int force,
                                        scfm_error *err);
/* The step directory a user's path means: a checkpoint directory itself (it
 * has a MANIFEST), or a run directory (its newest good checkpoint); verified. */
scfm_status scfm_checkpoint_resolve(const char *path, char *step_dir, size_t cap, scfm_error *err);
/* Checks MANIFEST against every file it lists; model.safetensors and
 * config.cfg must be among them. */
scfm_status scfm_checkpoint_verify(const char *step_dir, scfm_error *err);
/* The checkpoint to resume from: the one `latest` names when it verifies,
 * else the newest step directory that does (err is cleared then, and
 * *skipped names the bad one for a warning). SCFM_ERR_IO when there is none. */
scfm_status scfm_checkpoint_find(const char *run_dir, char *step_dir, size_t cap, char *skipped,
                                 size_t skipped_cap, scfm_error *err);
/* Loads weights, moments and state of a verified checkpoint into a model of
 * the same shape. */
scfm_status scfm_checkpoint_read(const char *step_dir, scfm_model *model, float *adam_m, float *adam_v,
                                 scfm_checkpoint_state *state, scfm_error *err);

/* ---- metrics -----------------------------------------------------------
 * A run's metrics.jsonl read back: one entry per step (the last line wins
 * when a resumed run wrote a step twice). */
typedef struct {
    int64_t n, cap;
    int64_t *step;
    double *tokens;   /* cumulative tokens up to and including the step */
    double *loss;
} scfm_metrics;

scfm_status scfm_metrics_read(const char *path, scfm_metrics *out, scfm_error *err);
void scfm_metrics_free(scfm_metrics *m);

/* Least-squares fit of log(y) = log(a) - b log(x) over n points (x, y > 0). */
scfm_status scfm_power_law_fit(const double *x, const double *y, int n, double *a, double *b, scfm_error *err);

/* What the loop reports after every step. */
typedef struct {
    int64_t step, steps;
    double loss;          /* mlm_loss + objective.contrastive x contrastive_loss */
    double mlm_loss;      /* the token-level heads' loss (masked genes, values, MVC, classifier), each
                             term times its objective.* weight, averaged over the step's loss terms */
    double contrastive_loss; /* contrastive objective: mean InfoNCE over the step's views */
    int64_t views;        /* contrastive objective: views (2 per cell) in the step; 0 without it */
    double lr, grad_norm;
    int64_t tokens;       /* tokens this step (count encoders: the genes with a count) */
    int64_t cells;        /* cells this step (contrastive: 2 views per cell) */
    double cells_per_s;   /* over the whole run so far */
    int64_t targets;
    double tokens_per_s;  /* over the whole run so far */
    double elapsed_s, eta_s;
    double compute_s, data_s; /* this step: compute, waiting for the loader */
    double comm_s;            /* this step: in collectives (step-start agreement, which also waits
                                 for the slowest rank, gradient reduction, loss sum, ZeRO-1 gather) */
    double reduce_wait_s;     /* this step: waiting after backward for the gradient reduction,
                                 the part of it not hidden behind backward */
    double checkpoint_s;      /* this step: writing a checkpoint */
    int world_size;
    int epoch;
    int validated;            /* fine-tuning: the held-out cells were scored after this step */
    int64_t val_cells;
    double val_accuracy, val_macro_f1;
} scfm_train_progress;

typedef void (*scfm_progress_fn)(const scfm_train_progress *p, void *user);

typedef struct {
    scfm_comm *comm;                    /* the ranks training together (one replica each) */
    int resume;                         /* continue from the run directory's newest good checkpoint */
    const volatile sig_atomic_t *stop;  /* set (by a signal handler) to checkpoint and stop at the next step */
    scfm_progress_fn on_step;           /* rank 0, after every step; may be NULL */
    void (*on_notice)(const char *message, void *user); /* rank 0: things worth a warning; may be NULL */
    void *user;
    int finetune;                       /* classify cfg->finetune.label: a head with one class per category
                                           of that obs column of the shards, no masking, held-out cells
                                           scored as the epochs pass, labels.tsv in the run and checkpoints */
    const char *init_from;              /* a checkpoint directory whose encoder starts the run; NULL: random */
} scfm_train_options;

/* Trains from cfg (data, model, optimiser) data-parallel over opt->comm:
 * every rank streams its own cells; gradients are summed over ranks in
 * buckets started during backward; the loss is averaged over the masked
 * tokens of the whole step on all ranks. Rank 0 writes the resolved
 * configuration, metrics.jsonl and checkpoints into
 * checkpoint.dir/checkpoint.run. Collective: every rank returns the same
 * status; SCFM_ERR_INTERRUPTED after a stop request was honoured (a
 * checkpoint was written). */
scfm_status scfm_train(const scfm_config *cfg, const scfm_train_options *opt, scfm_error *err);

/* ---- the contrastive objective across ranks (src/train/contrastive.c) ----
 * The views of micro-batch a of every rank form one global batch: each view's
 * positive is its pair, its negatives every other view of micro-batch a on
 * every rank (docs/objectives.md). */
typedef struct scfm_contrastive scfm_contrastive;

scfm_status scfm_contrastive_create(scfm_contrastive **out, scfm_error *err);
void scfm_contrastive_free(scfm_contrastive *c);

/* Collective, once per micro-batch index on every rank. local: this rank's
 * status so far (a failure, or b NULL for no cells, contributes no views; a
 * failure anywhere fails every rank). After scfm_model_forward on b, gathers
 * the unit projections of all ranks' views in rank order, adds to *loss_sum
 * the InfoNCE losses of this rank's views as anchors against all of them,
 * and hands the model d(scale x the loss of every rank's anchors)/dz of its
 * own views, summed over ranks, for the next scfm_model_backward on b; this
 * rank's anchors' part of the log-temperature gradient goes into the
 * gradient buffer, which the data-parallel reduction sums. So N ranks compute
 * exactly the gradient of one process holding the same global batch. */
scfm_status scfm_contrastive_step(scfm_contrastive *c, scfm_comm *comm, scfm_model *m, const scfm_batch *b,
                                  scfm_status local, float scale, double *loss_sum, scfm_error *err);

/* ---- inference (src/train/infer.c) ---------------------------------- */

/* A fine-tuned checkpoint's class names, one per line, in head order. */
#define SCFM_LABELS_FILE "labels.tsv"
/* A conditioned model's categories of model.condition_column, one per line,
 * in code order (row k of the condition embedding is the k-th line). */
#define SCFM_CONDITIONS_FILE "conditions.tsv"
/* A count encoder's gene set: the gene id of each column of its input, one
 * per line, in column order. */
#define SCFM_GENES_FILE "genes.tsv"
/* The lines of step_dir/file (SCFM_LABELS_FILE or SCFM_CONDITIONS_FILE) as
 * strings (scfm_free_strings); SCFM_ERR_FORMAT when the file is absent. */
scfm_status scfm_read_names(const char *step_dir, const char *file, char ***names, int *n, scfm_error *err);

typedef struct {
    int predict;              /* 0: embed into obsm[key]; 1: class probabilities into obsm[key] and the
                                 most probable class into the categorical obs[obs_column] */
    const char *key;          /* obsm key */
    const char *obs_column;   /* predict */
    int pool;                 /* embed: SCFM_POOL_MEAN or SCFM_POOL_CLS; -1: the model's model.pool */
    int layer;                /* embed: hidden states after this layer (0: embeddings); -1: the last */
    const char *condition;    /* a conditioned model: every cell gets this category of model.condition_column
                                 (a reference batch); NULL: the condition is left out */
    int match_symbol;         /* match the input's genes by symbol instead of gene id */
    int use_raw;              /* h5ad: read raw/X */
    double min_gene_match;    /* fewer of the input's genes in the vocabulary than this fraction is an error */
    int64_t batch_tokens;     /* tokens per encoder batch; 0: 16384 */
    int force;                /* replace an existing output */
    void (*progress)(int64_t cells_done, int64_t cells, double elapsed_s, void *user); /* rank 0 */
    void *progress_user;
} scfm_infer_options;

typedef struct {
    int64_t cells, genes, genes_matched;
    int64_t cells_without_genes;  /* no count in the vocabulary's genes: a row of zeros */
    int width;                    /* floats per cell written to obsm */
} scfm_infer_report;

/* Collective: encodes every cell of the count matrix `input` with the
 * checkpoint (a checkpoint directory or a run directory; it must hold
 * vocab.tsv), tokenized as `scfm tokenize --mode rank` with the checkpoint's
 * vocabulary and medians and model.max_len, and writes `output`: a copy of
 * the input (an .h5ad) with the results added. */
scfm_status scfm_infer(scfm_comm *comm, const char *checkpoint, const char *input, const char *output,
                       const scfm_infer_options *opt, scfm_infer_report *report, scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
