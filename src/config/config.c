/* Configuration: one table of key descriptors drives the defaults, the file
 * and --set parsers, validation, the writer and the reference documentation,
 * so adding a key is one line and the docs cannot drift from the code. */
#include "scfm/config.h"

#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef enum { T_INT, T_INT64, T_FLOAT, T_STRING, T_ENUM } key_type;

enum {
    F_MIN_OPEN = 1 << 0,  /* float lower bound is exclusive */
    F_MAX_OPEN = 1 << 1,  /* float upper bound is exclusive */
    F_ZERO_OK = 1 << 2,   /* 0 is a sentinel allowed outside [min, max] */
    F_RUN_NAME = 1 << 3,  /* string becomes a directory name: restricted characters */
};

typedef struct {
    const char *section, *key;
    key_type type;
    size_t offset;
    size_t size;  /* strings: capacity including the terminator */
    int64_t def_i, min_i, max_i;
    double def_f, min_f, max_f;
    const char *def_s;
    const char *const *choices;  /* enums: NULL-terminated, index = C enum value */
    unsigned flags;
    const char *doc;
} key_desc;

/* _Generic refuses to compile when a table row names a field of the wrong C
 * type, so the offset-based stores below cannot write the wrong width. */
#define OFF(ctype, field) _Generic(((scfm_config *)0)->field, ctype: offsetof(scfm_config, field))

#define INT(sec, k, field, def, lo, hi, fl, doc_) \
    {sec, k, T_INT, OFF(int, field), 0, def, lo, hi, 0, 0, 0, NULL, NULL, fl, doc_}
#define INT64(sec, k, field, def, lo, hi, doc_) \
    {sec, k, T_INT64, OFF(int64_t, field), 0, def, lo, hi, 0, 0, 0, NULL, NULL, 0, doc_}
#define FLOAT(sec, k, field, def, lo, hi, fl, doc_) \
    {sec, k, T_FLOAT, OFF(double, field), 0, 0, 0, 0, def, lo, hi, NULL, NULL, fl, doc_}
#define STRING(sec, k, field, def, fl, doc_)                                                \
    {sec, k, T_STRING, OFF(char *, field), sizeof(((scfm_config *)0)->field), 0, 0, 0, 0, 0, \
     0, def, NULL, fl, doc_}
#define ENUM(sec, k, etype, field, def, names, doc_) \
    {sec, k, T_ENUM, OFF(etype, field), 0, def, 0, 0, 0, 0, 0, NULL, names, 0, doc_}

/* Enum fields are stored and read through an int lvalue; that is only sound
 * while each enum has int's width (GCC picks unsigned int for these). */
_Static_assert(sizeof(scfm_activation) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_norm) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_position) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_schedule) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_pool) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_value_loss) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_encoder) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_count_repr) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_likelihood) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_condition_into) == sizeof(int), "enum width");
_Static_assert(sizeof(scfm_backend) == sizeof(int), "enum width");

static const char *const activation_names[] = {"gelu", "relu", NULL};
static const char *const norm_names[] = {"post", "pre", NULL};
static const char *const position_names[] = {"learned", "none", NULL};
static const char *const schedule_names[] = {"linear", "cosine", "constant", NULL};
static const char *const pool_names[] = {"mean", "cls", NULL};
static const char *const value_loss_names[] = {"ce", "mse", NULL};
static const char *const encoder_names[] = {"transformer", "mlp", "linear", NULL};
static const char *const count_repr_names[] = {"log1p", "raw", "rank", "bin", NULL};
static const char *const likelihood_names[] = {"nb", "zinb", "poisson", "mse", NULL};
static const char *const condition_into_names[] = {"encoder", "decoder", "both", NULL};
static const char *const backend_names[] = {"cpu", "cuda", NULL};

static const char *const sections[] = {"data", "model", "train", "checkpoint", "finetune", "objective"};
#define N_SECTIONS (sizeof sections / sizeof sections[0])

static const key_desc keys[] = {
    STRING("data", "shards", data.shards, "", 0,
           "directory of `shard_*.h5` token files (required by `scfm train`)"),
    STRING("data", "vocab", data.vocab, "", 0,
           "vocabulary directory of `scfm vocab`: training refuses shards made with another vocabulary "
           "and never masks its `<cls>`/`<eos>`; empty: no check, tokens below 2 are special"),

    INT("model", "vocab_size", model.vocab_size, 0, 3, INT_MAX, F_ZERO_OK,
        "token vocabulary size; 0 takes it from the shards"),
    INT("model", "max_len", model.max_len, 2048, 1, 65536, 0, "longest input, in tokens per cell"),
    INT("model", "layers", model.layers, 6, 1, 128, 0, "transformer encoder layers"),
    INT("model", "hidden", model.hidden, 256, 1, 16384, 0, "hidden (embedding) size"),
    INT("model", "heads", model.heads, 4, 1, 256, 0, "attention heads; must divide model.hidden"),
    INT("model", "ffn", model.ffn, 512, 1, 65536, 0, "feed-forward intermediate size"),
    ENUM("model", "activation", scfm_activation, model.activation, SCFM_ACT_RELU, activation_names,
         "feed-forward activation"),
    ENUM("model", "norm", scfm_norm, model.norm, SCFM_NORM_POST, norm_names,
         "layer norm after (post) or before (pre) each sublayer"),
    ENUM("model", "position", scfm_position, model.position, SCFM_POS_LEARNED, position_names,
         "learned absolute position embeddings, or none"),
    FLOAT("model", "dropout", model.dropout, 0.02, 0, 1, F_MAX_OPEN, "dropout on hidden states"),
    FLOAT("model", "attention_dropout", model.attention_dropout, 0.02, 0, 1, F_MAX_OPEN,
          "dropout on attention probabilities"),
    FLOAT("model", "layer_norm_eps", model.layer_norm_eps, 1e-12, 0, 1, F_MIN_OPEN | F_MAX_OPEN,
          "epsilon added to the variance in layer norm"),
    FLOAT("model", "init_std", model.init_std, 0.02, 0, 1, F_MIN_OPEN,
          "standard deviation of the normal weight initialisation"),
    INT("model", "special_tokens", model.special_tokens, 0, 2, 4, F_ZERO_OK,
        "token ids below this are special (`<pad>`, `<mask>`, and `<cls>`/`<eos>` when the vocabulary has "
        "them): never masked, left out of mean pooling; 0 takes it from data.vocab (2 without one)"),
    ENUM("model", "pool", scfm_pool, model.pool, SCFM_POOL_MEAN, pool_names,
         "cell embedding: mean of the gene tokens' final hidden states, or the `<cls>` token's"),
    INT("model", "num_labels", model.num_labels, 0, 0, 1000000, 0,
        "classes of the classification head on the cell embedding (`classifier.*`); 0: none; "
        "`scfm finetune` sets it from the label column"),
    INT("model", "value_bins", model.value_bins, 0, 2, 256, F_ZERO_OK,
        "expression-value bins B of the value input `bert.embeddings.value_embeddings.weight` [B+1, hidden] (row B: "
        "masked); 0: no value input, or the `bin` shards' bins when objective.value or objective.mvc is on"),
    ENUM("model", "value_loss", scfm_value_loss, model.value_loss, SCFM_VALUE_CE, value_loss_names,
         "value head `cls.value`: cross-entropy over the B bins, or squared error of the bin as a number"),
    STRING("model", "condition_column", model.condition_column, "", 0,
           "categorical obs column of the shards (e.g. `batch`) whose learned embedding "
           "`bert.embeddings.condition_embeddings.weight` is added to every token of a cell; empty: none"),
    INT("model", "num_conditions", model.num_conditions, 0, 1, 1000000, F_ZERO_OK,
        "rows of the condition embedding; 0: the column's categories in the shards"),
    INT("model", "value_log1p", model.value_log1p, 0, 0, 1, 0,
        "the value bins were made from log1p-normalised counts (`scfm tokenize --log1p`): set from the shards by "
        "training, and `scfm embed` bins a value model's input the same way"),

    ENUM("model", "encoder", scfm_encoder, model.encoder, SCFM_ENCODER_TRANSFORMER, encoder_names,
         "cell encoder: the transformer over gene tokens, or a fully connected (`mlp`) or `linear` "
         "encoder-decoder over the count vector of `counts` shards (docs/encoders.md)"),
    ENUM("model", "input", scfm_count_repr, model.input, SCFM_COUNTS_LOG1P, count_repr_names,
         "count encoders: the count vector as the encoder sees it: log1p of counts per 10,000, raw counts, "
         "per-cell ranks or quantile bins (model.value_bins of them; 0: 51, scGPT's)"),
    INT("model", "genes", model.genes, 0, 1, INT_MAX, F_ZERO_OK,
        "count encoders: width of the count vector (the shards' gene set); 0 takes it from the shards"),
    INT("model", "latent", model.latent, 10, 1, 65536, 0,
        "count encoders: width of the latent, which is the cell embedding"),
    INT("model", "fc_hidden", model.fc_hidden, 128, 1, 65536, 0,
        "`mlp` encoder: width of its hidden layers (the decoder mirrors it)"),
    INT("model", "fc_layers", model.fc_layers, 1, 1, 128, 0,
        "`mlp` encoder: hidden layers of the encoder and of the decoder: a Linear to model.fc_hidden, then "
        "residual blocks h + act(W h + b); no normalisation"),
    ENUM("model", "likelihood", scfm_likelihood, model.likelihood, SCFM_LIK_NB, likelihood_names,
         "count encoders: the reconstruction loss: negative log-likelihood of the raw counts under a negative "
         "binomial, zero-inflated NB or Poisson with mean library x softmax (scVI), or squared error against "
         "the input representation"),
    INT("model", "variational", model.variational, 1, 0, 1, 0,
        "count encoders: 1: a VAE (log-variance head, sampled latent, objective.kl); 0: a plain autoencoder"),
    ENUM("model", "condition_into", scfm_condition_into, model.condition_into, SCFM_COND_DECODER,
         condition_into_names,
         "count encoders with model.condition_column: where the condition one-hot enters (scVI: the decoder)"),

    INT64("train", "steps", train.steps, 1000, 1, INT64_MAX, "optimizer steps"),
    INT64("train", "micro_batch_tokens", train.micro_batch_tokens, 8192, 1, INT64_MAX,
          "token budget of one micro-batch (the transformer)"),
    INT("train", "micro_batch_cells", train.micro_batch_cells, 128, 1, 1 << 20, 0,
        "cells of one micro-batch of a count encoder (`model.encoder` mlp or linear; scvi-tools' batch_size)"),
    INT("train", "accumulate", train.accumulate, 1, 1, INT_MAX, 0,
        "micro-batches accumulated per optimizer step"),
    FLOAT("train", "lr", train.lr, 1e-3, 0, 1, F_MIN_OPEN, "peak learning rate"),
    INT64("train", "warmup_steps", train.warmup_steps, 100, 0, INT64_MAX,
          "steps of linear warm-up to train.lr; at most train.steps"),
    ENUM("train", "schedule", scfm_schedule, train.schedule, SCFM_SCHED_LINEAR, schedule_names,
         "learning-rate decay after warm-up"),
    FLOAT("train", "min_lr_ratio", train.min_lr_ratio, 0, 0, 1, 0,
          "final learning rate as a fraction of train.lr"),
    FLOAT("train", "weight_decay", train.weight_decay, 0.001, 0, 10, 0,
          "AdamW decoupled weight decay"),
    FLOAT("train", "beta1", train.beta1, 0.9, 0, 1, F_MAX_OPEN, "AdamW first-moment decay"),
    FLOAT("train", "beta2", train.beta2, 0.999, 0, 1, F_MAX_OPEN, "AdamW second-moment decay"),
    FLOAT("train", "adam_eps", train.adam_eps, 1e-8, 0, 1, F_MIN_OPEN | F_MAX_OPEN,
          "AdamW denominator epsilon"),
    FLOAT("train", "clip_norm", train.clip_norm, 1.0, 0, 1e6, 0,
          "global gradient-norm clip; 0 turns clipping off"),
    INT64("train", "seed", train.seed, 42, 0, INT64_MAX,
          "key of every random stream (init, masking, dropout, shuffling)"),
    FLOAT("train", "mask_prob", train.mask_prob, 0.15, 0, 1, F_MIN_OPEN | F_MAX_OPEN,
          "fraction of tokens selected for prediction"),
    FLOAT("train", "mask_token_prob", train.mask_token_prob, 0.8, 0, 1, 0,
          "of the selected, fraction replaced by `<mask>`"),
    FLOAT("train", "random_token_prob", train.random_token_prob, 0.1, 0, 1, 0,
          "of the selected, fraction replaced by a random gene"),
    INT("train", "zero1", train.zero1, 0, 0, 1, 0,
        "1: ZeRO stage 1, each rank keeps and updates 1/N of the AdamW moments (gradients reduce-scattered, "
        "parameters all-gathered); 0: every rank keeps all"),
    ENUM("train", "backend", scfm_backend, train.backend, SCFM_BACKEND_CPU, backend_names,
         "where training computes: the CPU kernels, or the CUDA backend (one GPU per rank, bf16 Linear layers; "
         "the transformer with the masked-gene loss only; built where the CUDA toolkit and NCCL are found, "
         "and not yet run on a GPU: docs/cuda.md)"),
    INT("train", "threads", train.threads, 0, 0, 1024, 0,
        "OpenMP threads per process; 0 keeps the OpenMP default"),
    FLOAT("train", "log_every_seconds", train.log_every_seconds, 5, 0, 86400, 0,
          "seconds between progress lines"),

    STRING("checkpoint", "dir", checkpoint.dir, "checkpoints", 0,
           "directory that holds one folder per run"),
    STRING("checkpoint", "run", checkpoint.run, "", F_RUN_NAME,
           "run name, outputs go to dir/run; empty: the config file's base name, or `run`"),
    INT64("checkpoint", "every", checkpoint.every, 0, 0, INT64_MAX,
          "steps between checkpoints; 0 saves only at the end"),
    INT("checkpoint", "keep", checkpoint.keep, 3, 1, INT_MAX, 0, "most recent checkpoints kept"),

    STRING("finetune", "label", finetune.label, "cell_type", 0,
           "`scfm finetune`: the categorical obs column of the shards to classify"),
    INT("finetune", "freeze_layers", finetune.freeze_layers, 0, 0, 128, 0,
        "`scfm finetune`: when > 0, the embeddings and this many first layers are not updated"),
    FLOAT("finetune", "validation_fraction", finetune.validation_fraction, 0.1, 0, 1, F_MAX_OPEN,
          "`scfm finetune`: fraction of the labelled cells held out for validation, drawn from train.seed"),

    FLOAT("objective", "mlm", objective.mlm, 1, 0, 1000, 0,
          "weight of the masked-gene loss (Geneformer); 0 masks no gene tokens"),
    FLOAT("objective", "value", objective.value, 0, 0, 1000, 0,
          "weight of the masked-value loss (scGPT): needs `bin` shards"),
    FLOAT("objective", "mvc", objective.mvc, 0, 0, 1000, 0,
          "weight of the masked values predicted from the cell embedding (scGPT's MVC): needs `bin` shards"),
    FLOAT("objective", "value_mask_prob", objective.value_mask_prob, 0.4, 0, 1, F_MIN_OPEN | F_MAX_OPEN,
          "fraction of gene tokens whose value is masked for objective.value and objective.mvc"),
    FLOAT("objective", "contrastive", objective.contrastive, 0, 0, 1e6, 0,
          "weight of the contrastive loss (mean InfoNCE over the step's views) between two gene-subset views "
          "of each cell, the views of every rank as negatives (docs/objectives.md); 0: off"),
    FLOAT("objective", "temperature", objective.temperature, 0.1, 0, 100, F_MIN_OPEN,
          "InfoNCE temperature; with objective.learn_temperature its starting value"),
    INT("objective", "learn_temperature", objective.learn_temperature, 0, 0, 1, 0,
        "1: learn log(temperature) (`contrastive.log_temperature`); 0: keep it fixed"),
    INT("objective", "projection_dim", objective.projection_dim, 128, 1, 65536, 0,
        "width of the projection head (Linear, activation, Linear; `contrastive.projection.*`) whose "
        "L2-normalised output enters InfoNCE"),
    FLOAT("objective", "view_fraction", objective.view_fraction, 0.5, 0, 0.5, F_MIN_OPEN,
          "share of a cell's gene tokens drawn into each of its two disjoint views; 0.5 splits them"),
    FLOAT("objective", "reconstruction", objective.reconstruction, 1, 0, 1000, 0,
          "count encoders: weight of the reconstruction loss (model.likelihood), summed over genes per cell"),
    FLOAT("objective", "kl", objective.kl, 1, 0, 1000, 0,
          "count encoders with model.variational: weight of KL(q(z|x) || N(0, I)) per cell"),
    INT64("objective", "kl_warmup_steps", objective.kl_warmup_steps, 400, 0, INT64_MAX,
          "the KL weight is objective.kl x min(1, step / this); 0: no warm-up"),
    FLOAT("objective", "mae_mask_prob", objective.mae_mask_prob, 0, 0, 1, F_MAX_OPEN,
          "count encoders (scMAE): fraction of each cell's genes whose input is set to 0, the squared error "
          "counted on them only; needs model.likelihood \"mse\"; 0: off"),
    FLOAT("objective", "aug_dropout", objective.aug_dropout, 0, 0, 1, F_MAX_OPEN,
          "count encoders with objective.contrastive (CLEAR): fraction of genes of each view set to 0"),
    FLOAT("objective", "aug_noise", objective.aug_noise, 0, 0, 100, 0,
          "count encoders with objective.contrastive: standard deviation of Gaussian noise added to each "
          "view's non-zero inputs"),
    FLOAT("objective", "aug_swap", objective.aug_swap, 0, 0, 1, 0,
          "count encoders with objective.contrastive: fraction of genes of each view whose input is swapped "
          "with a random gene's"),
};
#define N_KEYS (sizeof keys / sizeof keys[0])

/* Locations prefix every message: "FILE:LINE" or "--set section.key=value". */
#define LOC_MAX (SCFM_PATH_MAX + 32)

static void *field(scfm_config *cfg, const key_desc *d) { return (char *)cfg + d->offset; }
static const void *cfield(const scfm_config *cfg, const key_desc *d) {
    return (const char *)cfg + d->offset;
}

static bool is_section(const char *name) {
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (strcmp(sections[i], name) == 0) return true;
    return false;
}

static bool span_is(const char *s, size_t len, const char *word) {
    return strlen(word) == len && strncmp(s, word, len) == 0;
}

/* Lengths rather than terminators, so an override's "section.key" is looked
 * up in place. */
static const key_desc *find_key(const char *section, size_t section_len, const char *key,
                                size_t key_len) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (span_is(section, section_len, keys[i].section) && span_is(key, key_len, keys[i].key))
            return &keys[i];
    return NULL;
}

/* Shortest %g text that reads back as exactly v: 0.02 rather than %.17g's
 * 0.020000000000000000416, and 10 rather than 1e+01, yet still lossless.
 * 17 significant digits always round-trip; only NaN, which equals nothing,
 * needs the fallback to the last candidate. */
static void format_double(char *buf, size_t n, double v) {
    char best[40] = "";
    for (int prec = 1; prec <= 17; prec++) {
        char text[40];
        snprintf(text, sizeof text, "%.*g", prec, v);
        if ((strtod(text, NULL) == v || prec == 17) && (!best[0] || strlen(text) < strlen(best)))
            strcpy(best, text);
    }
    snprintf(buf, n, "%s", best);
}

/* The type column of the reference table. */
static const char *const reference_type_names[] = {
    [T_INT] = "int",       [T_INT64] = "int64", [T_FLOAT] = "float",
    [T_STRING] = "string", [T_ENUM] = "enum",
};

/* The libconfig type a key expects, as errors name it. */
static const char *type_name(key_type t) {
    switch (t) {
    case T_INT:
    case T_INT64: return "integer";
    case T_FLOAT: return "float";
    case T_STRING:
    case T_ENUM: return "string";
    }
    return "?";
}

static const char *setting_type_name(const config_setting_t *s) {
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64: return "integer";
    case CONFIG_TYPE_FLOAT: return "float";
    case CONFIG_TYPE_STRING: return "string";
    case CONFIG_TYPE_GROUP: return "group";
    case CONFIG_TYPE_LIST: return "list";
    case CONFIG_TYPE_ARRAY: return "array";
    case CONFIG_TYPE_BOOL: return "boolean";
    }
    return "nothing";
}

static void format_range(const key_desc *d, char *buf, size_t n) {
    if (d->type == T_FLOAT) {
        char lo[32], hi[32];
        format_double(lo, sizeof lo, d->min_f);
        format_double(hi, sizeof hi, d->max_f);
        snprintf(buf, n, "%c%s, %s%c", (d->flags & F_MIN_OPEN) ? '(' : '[', lo, hi,
                 (d->flags & F_MAX_OPEN) ? ')' : ']');
    } else {
        snprintf(buf, n, "[%" PRId64 ", %" PRId64 "]", d->min_i, d->max_i);
    }
}

static scfm_status range_error(const key_desc *d, const char *loc, const char *value,
                               scfm_error *err) {
    char range[96];
    format_range(d, range, sizeof range);
    return scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s.%s: value %s out of range %s%s", loc,
                     d->section, d->key, value, range, (d->flags & F_ZERO_OK) ? " (or 0)" : "");
}

static scfm_status set_int(scfm_config *cfg, const key_desc *d, int64_t v, const char *loc,
                           scfm_error *err) {
    if ((v < d->min_i || v > d->max_i) && !(v == 0 && (d->flags & F_ZERO_OK))) {
        char text[32];
        snprintf(text, sizeof text, "%" PRId64, v);
        return range_error(d, loc, text, err);
    }
    if (d->type == T_INT)
        *(int *)field(cfg, d) = (int)v;
    else
        *(int64_t *)field(cfg, d) = v;
    return SCFM_OK;
}

static scfm_status set_float(scfm_config *cfg, const key_desc *d, double v, const char *loc,
                             scfm_error *err) {
    /* Written so that NaN fails every test. */
    bool above_min = (d->flags & F_MIN_OPEN) ? v > d->min_f : v >= d->min_f;
    bool below_max = (d->flags & F_MAX_OPEN) ? v < d->max_f : v <= d->max_f;
    if (!above_min || !below_max) {
        char text[32];
        format_double(text, sizeof text, v);
        return range_error(d, loc, text, err);
    }
    *(double *)field(cfg, d) = v;
    return SCFM_OK;
}

static bool run_name_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static scfm_status set_string(scfm_config *cfg, const key_desc *d, const char *v, const char *loc,
                              scfm_error *err) {
    size_t len = strlen(v);
    if (d->type == T_ENUM) {
        for (int i = 0; d->choices[i]; i++) {
            if (strcmp(d->choices[i], v) == 0) {
                *(int *)field(cfg, d) = i;
                return SCFM_OK;
            }
        }
        char list[128] = "";
        for (int i = 0; d->choices[i]; i++) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", d->choices[i]);
        }
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s.%s: '%s' is not one of %s", loc, d->section,
                         d->key, v, list);
    }
    if (len >= d->size)
        return scfm_fail(err, SCFM_ERR_CONFIG,
                         "%s: %s.%s: string too long (%zu bytes, at most %zu)", loc, d->section,
                         d->key, len, d->size - 1);
    if (d->flags & F_RUN_NAME) {
        bool ok = strcmp(v, ".") != 0 && strcmp(v, "..") != 0;
        for (size_t i = 0; ok && i < len; i++) ok = run_name_char(v[i]);
        /* "." and ".." pass the character test but would escape checkpoint.dir. */
        if (!ok)
            return scfm_fail(err, SCFM_ERR_CONFIG,
                             "%s: %s.%s: '%s' is not a run name (letters, digits, '.', '_', '-'; "
                             "not '.' or '..')",
                             loc, d->section, d->key, v);
    }
    memcpy(field(cfg, d), v, len + 1);
    return SCFM_OK;
}

static scfm_status set_from_setting(scfm_config *cfg, const key_desc *d, const config_setting_t *s,
                                    const char *loc, scfm_error *err) {
    int t = config_setting_type(s);
    bool is_int = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
    switch (d->type) {
    case T_INT:
    case T_INT64:
        if (is_int) return set_int(cfg, d, config_setting_get_int64(s), loc, err);
        break;
    case T_FLOAT:
        if (is_int) return set_float(cfg, d, (double)config_setting_get_int64(s), loc, err);
        if (t == CONFIG_TYPE_FLOAT) return set_float(cfg, d, config_setting_get_float(s), loc, err);
        break;
    case T_STRING:
    case T_ENUM:
        if (t == CONFIG_TYPE_STRING)
            return set_string(cfg, d, config_setting_get_string(s), loc, err);
        break;
    }
    return scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s.%s: expected %s, got %s", loc, d->section,
                     d->key, type_name(d->type), setting_type_name(s));
}

static scfm_status read_file(scfm_config *cfg, const char *path, scfm_error *err) {
    /* Opened here rather than by config_read_file so that a missing file
     * reports errno instead of libconfig's generic "file I/O error". */
    FILE *f = fopen(path, "r");
    if (!f) return scfm_fail(err, SCFM_ERR_CONFIG, "%s: cannot read: %s", path, strerror(errno));
    /* A directory opens fine but makes libconfig's scanner exit the process. */
    struct stat info;
    if (fstat(fileno(f), &info) == 0 && S_ISDIR(info.st_mode)) {
        fclose(f);
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: cannot read: %s", path, strerror(EISDIR));
    }
    config_t lc;
    config_init(&lc);
    int ok = config_read(&lc, f);
    fclose(f);
    if (!ok) {
        const char *file = config_error_file(&lc) ? config_error_file(&lc) : path;
        scfm_fail(err, SCFM_ERR_CONFIG, "%s:%d: syntax error: %s", file, config_error_line(&lc),
                  config_error_text(&lc));
        config_destroy(&lc);
        return SCFM_ERR_CONFIG;
    }
    scfm_status st = SCFM_OK;
    config_setting_t *root = config_root_setting(&lc);
    for (int i = 0; st == SCFM_OK && i < config_setting_length(root); i++) {
        config_setting_t *sec = config_setting_get_elem(root, i);
        const char *sec_name = config_setting_name(sec);
        char loc[LOC_MAX];
        snprintf(loc, sizeof loc, "%s:%d", path, config_setting_source_line(sec));
        if (!is_section(sec_name)) {
            st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: unknown section '%s'", loc, sec_name);
        } else if (config_setting_type(sec) != CONFIG_TYPE_GROUP) {
            st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s: expected group, got %s", loc, sec_name,
                           setting_type_name(sec));
        }
        for (int j = 0; st == SCFM_OK && j < config_setting_length(sec); j++) {
            config_setting_t *s = config_setting_get_elem(sec, j);
            const char *key = config_setting_name(s);
            snprintf(loc, sizeof loc, "%s:%d", path, config_setting_source_line(s));
            const key_desc *d = find_key(sec_name, strlen(sec_name), key, strlen(key));
            if (!d)
                st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: unknown key '%s.%s'", loc, sec_name, key);
            else
                st = set_from_setting(cfg, d, s, loc, err);
        }
    }
    config_destroy(&lc);
    return st;
}

static scfm_status apply_override(scfm_config *cfg, const char *text, scfm_error *err) {
    char loc[LOC_MAX];
    snprintf(loc, sizeof loc, "--set %s", text);
    const char *eq = strchr(text, '=');
    const char *dot = strchr(text, '.');
    if (!eq || !dot || dot > eq || dot == text || dot + 1 == eq)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: malformed override, expected section.key=value",
                         loc);
    const char *value = eq + 1;
    const key_desc *d = find_key(text, (size_t)(dot - text), dot + 1, (size_t)(eq - dot - 1));
    if (!d)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: unknown key '%.*s'", loc, (int)(eq - text),
                         text);

    char *end;
    errno = 0;
    switch (d->type) {
    case T_INT:
    case T_INT64: {
        long long v = strtoll(value, &end, 10);
        if (end == value || *end != '\0') break;
        if (errno == ERANGE) return range_error(d, loc, value, err);
        return set_int(cfg, d, v, loc, err);
    }
    case T_FLOAT: {
        double v = strtod(value, &end);
        if (end == value || *end != '\0') break;
        return set_float(cfg, d, v, loc, err);
    }
    case T_STRING:
    case T_ENUM: return set_string(cfg, d, value, loc, err);
    }
    return scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s.%s: expected %s, got '%s'", loc, d->section,
                     d->key, type_name(d->type), value);
}

/* An unnamed run takes the config file's base name, with characters a run
 * name may not hold replaced, so each config gets its own output folder. */
static void default_run_name(scfm_config *cfg) {
    char *run = cfg->checkpoint.run;
    const char *base = strrchr(cfg->source, '/');
    base = base ? base + 1 : cfg->source;
    const char *ext = strrchr(base, '.');
    size_t len = ext ? (size_t)(ext - base) : strlen(base);
    if (len >= sizeof cfg->checkpoint.run) len = sizeof cfg->checkpoint.run - 1;
    for (size_t i = 0; i < len; i++) run[i] = run_name_char(base[i]) ? base[i] : '_';
    run[len] = '\0';
    if (len == 0 || strcmp(run, ".") == 0 || strcmp(run, "..") == 0) strcpy(run, "run");
}

/* The count encoders' own rules: they read count vectors, so the token
 * objectives' value and MVC weights are refused; objective.mlm is ignored
 * (its default is 1; gene masking is objective.mae_mask_prob there). */
static scfm_status check_count_encoder(const scfm_config *cfg, const char *loc, scfm_error *err) {
    const scfm_model_config *m = &cfg->model;
    const scfm_objective_config *o = &cfg->objective;
    const char *name = scfm_config_choice("model.encoder", (int)m->encoder);
    if (o->value > 0.0 || o->mvc > 0.0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.value and objective.mvc need the transformer; "
                         "model.encoder \"%s\" reconstructs the count vector instead (objective.reconstruction)",
                         loc, name);
    if (m->num_labels > 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%smodel.num_labels needs the transformer, not model.encoder \"%s\"",
                         loc, name);
    if (m->value_bins > 0 && m->input != SCFM_COUNTS_BIN)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%smodel.value_bins with model.encoder \"%s\" is the bins of "
                         "model.input \"bin\", and model.input is not \"bin\"", loc, name);
    if (cfg->finetune.freeze_layers > 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sfinetune.freeze_layers needs the transformer, not "
                         "model.encoder \"%s\"", loc, name);
    if (o->mae_mask_prob > 0.0 && m->likelihood != SCFM_LIK_MSE)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.mae_mask_prob > 0 (scMAE) needs model.likelihood "
                         "\"mse\": the loss is the squared error at the masked genes", loc);
    if (o->contrastive <= 0.0 && (o->aug_dropout > 0.0 || o->aug_noise > 0.0 || o->aug_swap > 0.0))
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.aug_* augment the views of the contrastive "
                         "objective: objective.contrastive is 0", loc);
    double kl = m->variational ? o->kl : 0.0;
    if (o->reconstruction + kl + o->contrastive <= 0.0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.reconstruction, objective.kl (with "
                         "model.variational) and objective.contrastive are all 0: nothing to train", loc);
    return SCFM_OK;
}

static scfm_status check_cross_keys(const scfm_config *cfg, scfm_error *err) {
    char loc[LOC_MAX] = "";
    if (cfg->source[0]) snprintf(loc, sizeof loc, "%s: ", cfg->source);
    const scfm_model_config *m = &cfg->model;
    const scfm_train_config *t = &cfg->train;
    if (m->hidden % m->heads != 0)
        return scfm_fail(err, SCFM_ERR_CONFIG,
                         "%smodel.hidden (%d) must be divisible by model.heads (%d)", loc,
                         m->hidden, m->heads);
    if (t->mask_token_prob + t->random_token_prob > 1.0) {
        char a[32], b[32];
        format_double(a, sizeof a, t->mask_token_prob);
        format_double(b, sizeof b, t->random_token_prob);
        return scfm_fail(err, SCFM_ERR_CONFIG,
                         "%strain.mask_token_prob (%s) + train.random_token_prob (%s) must be <= 1",
                         loc, a, b);
    }
    if (t->warmup_steps > t->steps)
        return scfm_fail(err, SCFM_ERR_CONFIG,
                         "%strain.warmup_steps (%" PRId64 ") must be <= train.steps (%" PRId64 ")",
                         loc, t->warmup_steps, t->steps);
    const scfm_objective_config *o = &cfg->objective;
    if (m->encoder != SCFM_ENCODER_TRANSFORMER) return check_count_encoder(cfg, loc, err);
    if (o->mlm + o->value + o->mvc + o->contrastive <= 0.0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.mlm, objective.value, objective.mvc and "
                         "objective.contrastive are all 0: nothing to train", loc);
    if (o->mae_mask_prob > 0.0 || o->aug_dropout > 0.0 || o->aug_noise > 0.0 || o->aug_swap > 0.0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sobjective.mae_mask_prob and objective.aug_* apply to count "
                         "encoders only (model.encoder \"mlp\" or \"linear\")", loc);
    if (cfg->finetune.freeze_layers > m->layers)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%sfinetune.freeze_layers (%d) must be <= model.layers (%d)", loc,
                         cfg->finetune.freeze_layers, m->layers);
    return SCFM_OK;
}

scfm_status scfm_config_validate(const scfm_config *cfg, scfm_error *err) {
    /* Each value goes through the setter that would have taken it from a
     * file, into a scratch copy, so the two checks cannot differ. */
    scfm_config scratch = *cfg;
    const char *loc = cfg->source[0] ? cfg->source : "config";
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_desc *d = &keys[i];
        const void *v = cfield(cfg, d);
        scfm_status st = SCFM_OK;
        switch (d->type) {
        case T_INT: st = set_int(&scratch, d, *(const int *)v, loc, err); break;
        case T_INT64: st = set_int(&scratch, d, *(const int64_t *)v, loc, err); break;
        case T_FLOAT: st = set_float(&scratch, d, *(const double *)v, loc, err); break;
        case T_STRING: st = set_string(&scratch, d, (const char *)v, loc, err); break;
        case T_ENUM: {
            int n = 0, index = *(const int *)v;
            while (d->choices[n]) n++;
            if (index < 0 || index >= n)
                st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: %s.%s: %d is not a choice", loc, d->section, d->key, index);
            break;
        }
        }
        if (st != SCFM_OK) return st;
    }
    return check_cross_keys(cfg, err);
}

void scfm_config_defaults(scfm_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_desc *d = &keys[i];
        switch (d->type) {
        case T_INT:
        case T_ENUM: *(int *)field(cfg, d) = (int)d->def_i; break;
        case T_INT64: *(int64_t *)field(cfg, d) = d->def_i; break;
        case T_FLOAT: *(double *)field(cfg, d) = d->def_f; break;
        case T_STRING: snprintf(field(cfg, d), d->size, "%s", d->def_s); break;
        }
    }
}

scfm_status scfm_config_load(scfm_config *cfg, const char *path,
                             const char *const *overrides, int n_overrides,
                             scfm_error *err) {
    scfm_config_defaults(cfg);
    if (path) {
        if (strlen(path) >= sizeof cfg->source)
            return scfm_fail(err, SCFM_ERR_CONFIG, "%s: path too long", path);
        strcpy(cfg->source, path);
        scfm_status st = read_file(cfg, path, err);
        if (st != SCFM_OK) return st;
    }
    for (int i = 0; i < n_overrides; i++) {
        scfm_status st = apply_override(cfg, overrides[i], err);
        if (st != SCFM_OK) return st;
    }
    if (cfg->checkpoint.run[0] == '\0') default_run_name(cfg);
    return check_cross_keys(cfg, err);
}

static void write_string_literal(FILE *out, const char *s) {
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* libconfig reads "1" as an integer; a float keeps a '.' or an exponent so a
 * written file holds the type the key is checked as, and the reference
 * shows which keys take floats. */
static void format_float_literal(char *buf, size_t n, double v) {
    format_double(buf, n, v);
    if (!strpbrk(buf, ".eE")) snprintf(buf + strlen(buf), n - strlen(buf), ".0");
}

void scfm_config_print(const scfm_config *cfg, FILE *out) {
    fputs("# scfm resolved configuration\n# source: ", out);
    if (cfg->source[0])
        for (const char *p = cfg->source; *p; p++) fputc(*p == '\n' || *p == '\r' ? '?' : *p, out);
    else
        fputs("(none: defaults and --set overrides)", out);
    fputc('\n', out);
    for (size_t s = 0; s < N_SECTIONS; s++) {
        fprintf(out, "\n%s = {\n", sections[s]);
        for (size_t i = 0; i < N_KEYS; i++) {
            const key_desc *d = &keys[i];
            if (strcmp(d->section, sections[s]) != 0) continue;
            fprintf(out, "  %s = ", d->key);
            const void *p = cfield(cfg, d);
            switch (d->type) {
            case T_INT: fprintf(out, "%d", *(const int *)p); break;
            case T_INT64: {
                /* libconfig 1.5 silently truncates an unsuffixed integer
                 * beyond 32 bits; the L suffix keeps all 64. */
                int64_t v = *(const int64_t *)p;
                fprintf(out, "%" PRId64 "%s", v, (v > INT_MAX || v < INT_MIN) ? "L" : "");
                break;
            }
            case T_FLOAT: {
                char text[40];
                format_float_literal(text, sizeof text, *(const double *)p);
                fputs(text, out);
                break;
            }
            case T_STRING: write_string_literal(out, p); break;
            case T_ENUM: write_string_literal(out, d->choices[*(const int *)p]); break;
            }
            fputs(";\n", out);
        }
        fputs("};\n", out);
    }
}

scfm_status scfm_config_write(const scfm_config *cfg, const char *path, scfm_error *err) {
    char tmp[SCFM_PATH_MAX + 8];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp)
        return scfm_fail(err, SCFM_ERR_IO, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", tmp, strerror(errno));
    scfm_config_print(cfg, f);
    /* Flushed to disk before the rename so a crash leaves either the old
     * file or the complete new one, never a torn config next to a checkpoint. */
    bool failed = fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int saved = errno;
    if (fclose(f) != 0 && !failed) {
        failed = true;
        saved = errno;
    }
    if (!failed && rename(tmp, path) != 0) {
        failed = true;
        saved = errno;
    }
    if (failed) {
        remove(tmp);
        return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", path, strerror(saved));
    }
    return SCFM_OK;
}

const char *scfm_config_choice(const char *key, int value) {
    const char *dot = strchr(key, '.');
    const key_desc *d = dot ? find_key(key, (size_t)(dot - key), dot + 1, strlen(dot + 1)) : NULL;
    if (!d || d->type != T_ENUM || value < 0) return "?";
    for (int k = 0; d->choices[k]; k++)
        if (k == value) return d->choices[k];
    return "?";
}

void scfm_config_print_reference(FILE *out) {
    fputs("| key | type | default | allowed | meaning |\n", out);
    fputs("|---|---|---|---|---|\n", out);
    for (size_t i = 0; i < N_KEYS; i++) {
        const key_desc *d = &keys[i];
        char def[64], allowed[128];
        switch (d->type) {
        case T_INT:
        case T_INT64:
            snprintf(def, sizeof def, "%" PRId64, d->def_i);
            if (d->max_i == (d->type == T_INT ? INT_MAX : INT64_MAX))
                snprintf(allowed, sizeof allowed, "%s>= %" PRId64,
                         (d->flags & F_ZERO_OK) ? "0 or " : "", d->min_i);
            else
                format_range(d, allowed, sizeof allowed);
            break;
        case T_FLOAT:
            format_float_literal(def, sizeof def, d->def_f);
            format_range(d, allowed, sizeof allowed);
            break;
        case T_STRING:
            snprintf(def, sizeof def, "\"%s\"", d->def_s);
            snprintf(allowed, sizeof allowed, "%s",
                     (d->flags & F_RUN_NAME) ? "letters, digits, `.`, `_`, `-`" : "any path");
            break;
        case T_ENUM: {
            snprintf(def, sizeof def, "\"%s\"", d->choices[d->def_i]);
            allowed[0] = '\0';
            for (int c = 0; d->choices[c]; c++) {
                size_t used = strlen(allowed);
                snprintf(allowed + used, sizeof allowed - used, "%s`%s`", c ? ", " : "",
                         d->choices[c]);
            }
            break;
        }
        }
        fprintf(out, "| `%s.%s` | %s | `%s` | %s | %s |\n", d->section, d->key,
                reference_type_names[d->type], def,
                allowed, d->doc);
    }
}
