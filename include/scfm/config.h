/* scfm configuration: one libconfig file per run, every key validated against
 * a table (types, ranges, choices) that also documents it. */
#ifndef SCFM_CONFIG_H
#define SCFM_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "scfm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SCFM_PATH_MAX 1024

typedef enum { SCFM_ACT_GELU = 0, SCFM_ACT_RELU = 1 } scfm_activation;
typedef enum { SCFM_NORM_POST = 0, SCFM_NORM_PRE = 1 } scfm_norm;
typedef enum { SCFM_POS_LEARNED = 0, SCFM_POS_NONE = 1 } scfm_position;
typedef enum { SCFM_SCHED_LINEAR = 0, SCFM_SCHED_COSINE = 1, SCFM_SCHED_CONSTANT = 2 } scfm_schedule;
typedef enum { SCFM_POOL_MEAN = 0, SCFM_POOL_CLS = 1 } scfm_pool;
typedef enum { SCFM_VALUE_CE = 0, SCFM_VALUE_MSE = 1 } scfm_value_loss;
/* The cell encoder: the transformer over gene tokens, or a fully connected
 * (mlp) or linear encoder-decoder over the count vector of `counts` shards. */
typedef enum { SCFM_ENCODER_TRANSFORMER = 0, SCFM_ENCODER_MLP = 1, SCFM_ENCODER_LINEAR = 2 } scfm_encoder;
/* How a count vector enters a count encoder (docs/encoders.md): counts
 * scaled to 10,000 per cell then log1p, raw counts, per-cell ranks, or
 * per-cell quantile bins. */
typedef enum { SCFM_COUNTS_LOG1P = 0, SCFM_COUNTS_RAW = 1, SCFM_COUNTS_RANK = 2, SCFM_COUNTS_BIN = 3 } scfm_count_repr;
/* What a count encoder's decoder models: the raw counts under a negative
 * binomial, zero-inflated negative binomial or Poisson (scVI), or the input
 * representation under squared error. */
typedef enum { SCFM_LIK_NB = 0, SCFM_LIK_ZINB = 1, SCFM_LIK_POISSON = 2, SCFM_LIK_MSE = 3 } scfm_likelihood;
/* Where a count encoder takes the condition one-hot. */
typedef enum { SCFM_COND_ENCODER = 0, SCFM_COND_DECODER = 1, SCFM_COND_BOTH = 2 } scfm_condition_into;
/* Where training computes: the CPU kernels, or the CUDA backend (built
 * where the toolkit is found, loaded at run time: docs/cuda.md). */
typedef enum { SCFM_BACKEND_CPU = 0, SCFM_BACKEND_CUDA = 1 } scfm_backend;

typedef struct {
    int vocab_size;          /* 0: taken from the token shards */
    int max_len;
    int layers, hidden, heads, ffn;
    scfm_activation activation;
    scfm_norm norm;
    scfm_position position;
    double dropout;          /* hidden dropout */
    double attention_dropout;
    double layer_norm_eps;
    double init_std;
    int special_tokens;      /* ids below it are special (never masked, left out of mean pooling); 0: from data.vocab */
    scfm_pool pool;          /* how a cell embedding is read off the encoder */
    int num_labels;          /* classes of the classification head; 0: none */
    /* scGPT-style expression values (docs/objectives.md) */
    int value_bins;          /* B: bins of the value input (embedding [B+1, C], row B = masked); 0: no values */
    scfm_value_loss value_loss; /* value head: classification over the B bins, or regression of the bin */
    char condition_column[256]; /* obs column of the shards whose code conditions every token; "": none */
    int num_conditions;      /* rows of the condition embedding; 0: from the shards' categories */
    int value_log1p;         /* the bins were made from log1p-normalised counts (set from the shards) */
    /* The contrastive head (contrastive.projection.*), set by scfm train from
     * the objective section rather than read from the model section: */
    int projection_dim;      /* width of the projection; 0: no contrastive head */
    int learn_temperature;   /* 1: contrastive.log_temperature is a parameter */
    double temperature;      /* the fixed temperature, or the learned one's start */
    /* The count encoders (docs/encoders.md); the transformer ignores these. */
    scfm_encoder encoder;
    scfm_count_repr input;   /* representation of the count vector fed to the encoder */
    int genes;               /* G: width of the count vector; 0: from the shards */
    int latent;              /* width of the latent (the cell embedding) */
    int fc_hidden, fc_layers;
    scfm_likelihood likelihood;
    int variational;         /* 1: a VAE (log-variance head, sampled latent, KL) */
    scfm_condition_into condition_into;
} scfm_model_config;

/* What pretraining optimises: each term of an objective enters the loss
 * times its weight (docs/objectives.md). */
typedef struct {
    double mlm;              /* masked gene tokens (Geneformer); 0 turns gene masking off */
    double value;            /* masked expression values (scGPT's masked value prediction) */
    double mvc;              /* each masked value from the cell embedding (scGPT's MVC/GEPC) */
    double value_mask_prob;  /* fraction of gene tokens whose value is masked */
    double contrastive;      /* InfoNCE between two views of each cell, negatives from every rank */
    double temperature;      /* InfoNCE temperature (the start when learned) */
    int learn_temperature;   /* 1: learn log(temperature) */
    int projection_dim;      /* output width of the projection head */
    double view_fraction;    /* of each cell's genes, the share each view draws (<= 0.5: disjoint) */
    /* count encoders only (docs/encoders.md) */
    double reconstruction;   /* the decoder's negative log-likelihood (or squared error) */
    double kl;               /* KL(q(z|x) || N(0, I)) of a variational model */
    int64_t kl_warmup_steps; /* the KL weight ramps linearly from 0 over these steps; 0: none */
    double mae_mask_prob;    /* scMAE: fraction of each cell's genes masked; the loss is on them only */
    double aug_dropout;      /* contrastive augmentations (CLEAR): genes set to 0, */
    double aug_noise;        /* Gaussian noise std on non-zero values, */
    double aug_swap;         /* fraction of genes swapping values with a random gene */
} scfm_objective_config;

typedef struct {
    char shards[SCFM_PATH_MAX];  /* directory of shard_*.h5 files */
    char vocab[SCFM_PATH_MAX];   /* "" or the vocabulary the shards were made with */
} scfm_data_config;

typedef struct {
    int64_t steps;
    int64_t micro_batch_tokens;
    int micro_batch_cells;   /* count encoders: cells per micro-batch (the transformer packs by tokens) */
    int accumulate;
    double lr;
    int64_t warmup_steps;
    scfm_schedule schedule;
    double min_lr_ratio;
    double weight_decay;
    double beta1, beta2, adam_eps;
    double clip_norm;        /* 0: no clipping */
    int64_t seed;
    double mask_prob;
    double mask_token_prob;  /* of the selected: replaced by <mask> */
    double random_token_prob;/* of the selected: replaced by a random gene */
    int threads;             /* 0: OpenMP default */
    int zero1;               /* 1: shard AdamW moments over ranks (ZeRO stage 1) */
    scfm_backend backend;
    double log_every_seconds;
} scfm_train_config;

typedef struct {
    char dir[SCFM_PATH_MAX];
    char run[256];           /* run name: outputs go to dir/run */
    int64_t every;           /* 0: only at the end */
    int keep;
} scfm_checkpoint_config;

typedef struct {
    char label[256];         /* obs column of the shards to predict */
    int freeze_layers;       /* the embeddings and this many first layers stay fixed */
    double validation_fraction; /* of the cells, held out (seeded by train.seed) */
} scfm_finetune_config;

typedef struct {
    char source[SCFM_PATH_MAX];  /* the file it was read from */
    scfm_data_config data;
    scfm_model_config model;
    scfm_train_config train;
    scfm_checkpoint_config checkpoint;
    scfm_finetune_config finetune;
    scfm_objective_config objective;
} scfm_config;

/* Fills every key with its documented default. */
void scfm_config_defaults(scfm_config *cfg);

/* Reads path (NULL: defaults only), then applies overrides "section.key=value"
 * in order, then checks cross-key constraints. An empty checkpoint.run becomes
 * the file's base name without extension ("run" without a file). Errors name
 * file:line and key; their status is SCFM_ERR_CONFIG (docs/config.md lists
 * the messages). */
scfm_status scfm_config_load(scfm_config *cfg, const char *path,
                             const char *const *overrides, int n_overrides,
                             scfm_error *err);

/* Checks a configuration filled in code (not read from a file) against the
 * same table and cross-key rules as scfm_config_load; errors are prefixed by
 * cfg->source. */
scfm_status scfm_config_validate(const scfm_config *cfg, scfm_error *err);

/* Writes the resolved configuration in libconfig syntax, every key, readable
 * by scfm_config_load into the same values; atomic (PATH.tmp, fsync, rename).
 * print writes the same text to out. */
scfm_status scfm_config_write(const scfm_config *cfg, const char *path, scfm_error *err);
void scfm_config_print(const scfm_config *cfg, FILE *out);

/* The name a configuration file gives value of the enum key
 * "section.key" (e.g. "model.encoder", SCFM_ENCODER_MLP: "mlp"), from the
 * same table the parser reads; "?" for another key or an out-of-range value. */
const char *scfm_config_choice(const char *key, int value);
/* Markdown table of every key (type, default, range, meaning), for docs. */
void scfm_config_print_reference(FILE *out);

#ifdef __cplusplus
}
#endif
#endif
