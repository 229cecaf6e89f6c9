/* Inference with a trained checkpoint over a count matrix: every rank
 * tokenizes its share of each round of cells with the checkpoint's own
 * vocabulary and medians (Geneformer's rank encoding, as `scfm tokenize
 * --mode rank`), encodes them in packed batches and reads off a cell
 * embedding (or class probabilities); rank 0 gathers each round and appends
 * it to a copy of the input .h5ad, renamed into place when complete. Memory
 * is bounded by the round size, not by the number of cells. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "scfm/data.h"
#include "scfm/dist.h"
#include "scfm/model.h"
#include "scfm/train.h"

#define ROUND_CELLS_PER_RANK 512

typedef struct {
    const scfm_infer_options *opt;
    scfm_comm *comm;
    int rank, world;
    char step_dir[SCFM_PATH_MAX];
    scfm_config cfg;
    scfm_vocab *vocab;
    scfm_model *model;
    char **classes;           /* predict: the head's class names */
    int n_classes;
    scfm_matrix *matrix;
    int32_t *gene_token;      /* [genes of the input]: its token, < 0 outside the vocabulary */
    scfm_cells_chunk chunk;
    scfm_batch batch;
    scfm_cell_entry *entries;
    int32_t *row_tokens, *encoded;
    uint8_t *encoded_values;  /* value models: the bin of each encoded token */
    float *row_counts;
    int64_t row_cap;
    float *mine, *all;        /* this round's output rows: this rank's, every rank's */
    float *probs;             /* predict: [cells of a batch, classes] */
    int32_t *codes;           /* predict, rank 0: argmax per cell of a round */
    int width;                /* floats per cell of output */
    int32_t condition;        /* the reference condition's code; -1: left out */
    int count_encoder;        /* model.encoder mlp or linear: cells enter as count vectors */
    int32_t *token_column;    /* count encoder: [vocabulary size] column of each token in the gene set, -1 */
    float *dense;             /* count encoder: [genes] one cell's counts by column */
    scfm_h5ad_writer *writer;
} infer_state;

static void free_state(infer_state *s) {
    scfm_h5ad_abort(s->writer);
    scfm_free_strings(s->classes, s->n_classes);
    scfm_vocab_free(s->vocab);
    scfm_model_free(s->model);
    scfm_matrix_close(s->matrix);
    free(s->gene_token);
    free(s->token_column);
    free(s->dense);
    scfm_cells_chunk_free(&s->chunk);
    scfm_batch_free(&s->batch);
    free(s->entries);
    free(s->row_tokens);
    free(s->encoded);
    free(s->encoded_values);
    free(s->row_counts);
    free(s->mine);
    free(s->all);
    free(s->probs);
    free(s->codes);
}

scfm_status scfm_read_names(const char *step_dir, const char *file, char ***classes, int *n, scfm_error *err) {
    char path[SCFM_PATH_MAX], line[1024];
    *classes = NULL;
    *n = 0;
    scfm_status st = scfm_path_join(path, sizeof path, step_dir, file, err);
    if (st != SCFM_OK) return st;
    FILE *f = fopen(path, "r");
    if (!f) return scfm_fail(err, SCFM_ERR_FORMAT, "%s: the checkpoint has no %s", step_dir, file);
    int cap = 0;
    while (st == SCFM_OK && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(*classes, sizeof(char *) * (size_t)cap);
            if (!grown) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
                break;
            }
            *classes = grown;
        }
        if (!((*classes)[*n] = strdup(line))) st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
        else (*n)++;
    }
    fclose(f);
    return st;
}

/* The code of the reference condition opt->condition among the categories
 * the model was trained with. */
static scfm_status find_condition(infer_state *s, scfm_error *err) {
    const char *column = s->cfg.model.condition_column;
    if (!column[0] || s->cfg.model.num_conditions == 0)
        return scfm_fail(err, SCFM_ERR_ARG, "--condition %s: the model of %s has no condition (model.condition_column "
                         "is empty)", s->opt->condition, s->step_dir);
    char **names = NULL;
    int n = 0;
    scfm_status st = scfm_read_names(s->step_dir, SCFM_CONDITIONS_FILE, &names, &n, err);
    for (int k = 0; st == SCFM_OK && k < n && s->condition < 0; k++)
        if (!strcmp(names[k], s->opt->condition)) s->condition = k;
    if (st == SCFM_OK && s->condition < 0) {
        char list[512] = "";
        for (int k = 0; k < n && strlen(list) + strlen(names[k]) + 8 < sizeof list; k++)
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s'%s'", k ? ", " : "", names[k]);
        st = scfm_fail(err, SCFM_ERR_ARG, "--condition %s: not a category of obs column '%s' the model of %s was "
                       "trained with (%s)", s->opt->condition, column, s->step_dir, list);
    }
    scfm_free_strings(names, n);
    return st;
}

/* A count encoder's columns: genes.tsv names the gene of each, in order. */
static scfm_status read_gene_set(infer_state *s, scfm_error *err) {
    char **ids = NULL;
    int n = 0;
    const int64_t V = scfm_vocab_size(s->vocab);
    scfm_status st = scfm_read_names(s->step_dir, SCFM_GENES_FILE, &ids, &n, err);
    if (st == SCFM_OK && n != s->cfg.model.genes)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s lists %d genes, the model reads %d", s->step_dir, SCFM_GENES_FILE,
                       n, s->cfg.model.genes);
    if (st == SCFM_OK && (!(s->token_column = malloc(sizeof(int32_t) * (size_t)V)) ||
                          !(s->dense = calloc((size_t)n, sizeof(float)))))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int64_t t = 0; st == SCFM_OK && t < V; t++) s->token_column[t] = -1;
    for (int c = 0; st == SCFM_OK && c < n; c++) {
        int32_t token = scfm_vocab_find(s->vocab, ids[c], 0);
        if (token < 0)
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: gene %s of %s (column %d) is not in the checkpoint's vocabulary",
                           s->step_dir, ids[c], SCFM_GENES_FILE, c);
        else s->token_column[token] = c;
    }
    scfm_free_strings(ids, n);
    return st;
}

/* Checkpoint, vocabulary and model, on every rank. */
static scfm_status load_checkpoint(infer_state *s, const char *checkpoint, scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_checkpoint_resolve(checkpoint, s->step_dir, sizeof s->step_dir, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, s->step_dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_load(&s->cfg, path, NULL, 0, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, s->step_dir, SCFM_VOCAB_FILE, err);
    struct stat sb;
    if (st == SCFM_OK && stat(path, &sb) != 0)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: the checkpoint has no %s (it was trained without data.vocab), so "
                       "its genes and medians are unknown", s->step_dir, SCFM_VOCAB_FILE);
    if (st == SCFM_OK) st = scfm_vocab_read(s->step_dir, &s->vocab, err);
    if (st == SCFM_OK && scfm_vocab_size(s->vocab) > s->cfg.model.vocab_size)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: the vocabulary has %lld tokens, the model %d", s->step_dir,
                       (long long)scfm_vocab_size(s->vocab), s->cfg.model.vocab_size);
    if (st == SCFM_OK && s->opt->predict) st = scfm_read_names(s->step_dir, SCFM_LABELS_FILE, &s->classes, &s->n_classes, err);
    if (st == SCFM_OK && s->opt->condition) st = find_condition(s, err);
    s->count_encoder = s->cfg.model.encoder != SCFM_ENCODER_TRANSFORMER;
    if (st == SCFM_OK && s->count_encoder) st = read_gene_set(s, err);
    if (st == SCFM_OK && s->opt->predict && s->n_classes != s->cfg.model.num_labels)
        st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s lists %d classes, the model's head has %d", s->step_dir,
                       SCFM_LABELS_FILE, s->n_classes, s->cfg.model.num_labels);
    if (st == SCFM_OK) st = scfm_model_create(&s->cfg.model, &s->model, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, s->step_dir, "model.safetensors", err);
    if (st == SCFM_OK) st = scfm_model_load(s->model, path, err);
    return st;
}

/* The input's genes against the vocabulary; too few matches is an error. */
static scfm_status open_input(infer_state *s, const char *input, scfm_infer_report *report, scfm_error *err) {
    scfm_matrix_options mo = {.require_counts = 1, .skip_cell_names = 1, .use_raw = s->opt->use_raw};
    scfm_status st = scfm_matrix_open(input, &mo, &s->matrix, err);
    if (st != SCFM_OK) return st;
    const int64_t n = scfm_matrix_num_genes(s->matrix);
    s->gene_token = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!s->gene_token) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if ((st = scfm_vocab_map_genes(s->vocab, s->matrix, s->opt->match_symbol, s->gene_token, err)) != SCFM_OK)
        return st;
    int64_t matched = 0;
    for (int64_t j = 0; j < n; j++) matched += s->gene_token[j] >= 0;
    report->cells = scfm_matrix_num_cells(s->matrix);
    report->genes = n;
    report->genes_matched = matched;
    if ((double)matched < s->opt->min_gene_match * (double)n || matched == 0)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: only %lld of its %lld genes are in the checkpoint's vocabulary "
                         "(%lld genes, %s): %lld unmatched; is this the right checkpoint, or should genes match by %s?",
                         input, (long long)matched, (long long)n, (long long)s->vocab->n_genes, s->step_dir,
                         (long long)(n - matched), s->opt->match_symbol ? "id" : "symbol (--match symbol)");
    return SCFM_OK;
}

static int grow_row(infer_state *s, int64_t need) {
    if (need <= s->row_cap) return 1;
    int64_t cap = need + need / 2 + 64;
    int32_t *t = realloc(s->row_tokens, sizeof(int32_t) * (size_t)cap);
    if (t) s->row_tokens = t;
    float *c = realloc(s->row_counts, sizeof(float) * (size_t)cap);
    if (c) s->row_counts = c;
    scfm_cell_entry *e = realloc(s->entries, sizeof(scfm_cell_entry) * 2 * (size_t)cap);
    if (e) s->entries = e;
    if (!t || !c || !e) return 0;
    s->row_cap = cap;
    return 1;
}

/* Writes the outputs of the batch's cells to their rows of s->mine. */
static scfm_status encode_batch(infer_state *s, const int32_t *row_of_cell, scfm_error *err) {
    if (s->batch.n_cells == 0) return SCFM_OK;
    scfm_status st = scfm_model_encode(s->model, &s->batch, err);
    if (st != SCFM_OK) return st;
    const int n = s->batch.n_cells;
    float *out = s->probs;
    if (s->opt->predict) {
        st = scfm_model_classify(s->model, &s->batch, out, err);
    } else {
        int layer = s->opt->layer < 0 ? s->cfg.model.layers : s->opt->layer;
        scfm_model_pool(s->model, &s->batch, layer, s->opt->pool < 0 ? s->cfg.model.pool : (scfm_pool)s->opt->pool,
                        out);
    }
    for (int c = 0; st == SCFM_OK && c < n; c++)
        memcpy(s->mine + (size_t)row_of_cell[c] * s->width, out + (size_t)c * s->width, sizeof(float) * s->width);
    scfm_batch_clear(&s->batch);
    return st;
}

/* Encodes the n matched genes of a cell as training saw it: rank encoding,
 * or for a value model (model.value_bins > 0) scGPT's binning into the
 * model's bins (log1p-normalised as the training shards were), ties drawn
 * with train.seed. */
static int tokenize_cell(infer_state *s, int64_t cell, int n, double total) {
    const scfm_vocab *v = s->vocab;
    const scfm_model_config *mc = &s->cfg.model;
    if (mc->value_bins > 0) {
        scfm_bin_params p = {mc->value_bins, mc->value_log1p, v->target_sum, mc->max_len, v->cls, v->eos,
                             (uint64_t)s->cfg.train.seed};
        return scfm_bin_encode(&p, cell, s->row_tokens, s->row_counts, n, total, s->entries, s->encoded,
                               s->encoded_values);
    }
    scfm_rank_params p = {v->medians, (int32_t)v->n_special, v->target_sum, mc->max_len, v->cls, v->eos};
    return scfm_rank_encode(&p, s->row_tokens, s->row_counts, n, total, s->entries, s->encoded);
}

/* A count encoder's cell: the counts of its genes in the model's gene set, by
 * ascending column (a gene the input repeats adds up), as count shards hold
 * them; the library is the cell's total over all its genes. Returns the
 * columns with a count. */
static int count_cell(infer_state *s, const scfm_cells_chunk *ch, int64_t i, double *total) {
    int n = 0;
    *total = 0.0;
    for (int64_t e = ch->indptr[i]; e < ch->indptr[i + 1]; e++) {
        *total += ch->values[e];
        int32_t token = s->gene_token[ch->genes[e]];
        int32_t column = token >= 0 ? s->token_column[token] : -1;
        if (column >= 0) s->dense[column] += ch->values[e];
    }
    for (int c = 0; c < s->cfg.model.genes; c++) {
        if (s->dense[c] == 0.0f) continue;
        s->encoded[n] = c;
        s->row_counts[n++] = s->dense[c];
        s->dense[c] = 0.0f;
    }
    return n;
}

/* Cell i of the chunk (global cell `cell`) as the model reads it: its
 * tokens in s->encoded, with bins in s->encoded_values (value models) or
 * counts in s->row_counts (count encoders), and its total count in *total.
 * Returns the number of tokens, or -1 for a cell the model cannot read (no
 * count; for the transformer, none in the vocabulary's genes either). */
static int input_cell(infer_state *s, const scfm_cells_chunk *ch, int64_t i, int64_t cell, double *total) {
    if (s->count_encoder) {
        /* a cell with counts but none in the gene set is encoded, as count shards keep it */
        int len = count_cell(s, ch, i, total);
        return *total > 0.0 ? len : -1;
    }
    int n = 0;
    *total = 0.0;
    for (int64_t e = ch->indptr[i]; e < ch->indptr[i + 1]; e++) {
        *total += ch->values[e];
        int32_t token = s->gene_token[ch->genes[e]];
        if (token < 0) continue;
        s->row_tokens[n] = token;
        s->row_counts[n++] = ch->values[e];
    }
    int len = n > 0 && *total > 0.0 ? tokenize_cell(s, cell, n, *total) : 0;
    return len > 0 ? len : -1;
}

/* This rank's cells [lo, hi) of the input, into s->mine (zeros for a cell
 * with no count in the vocabulary's genes). */
static scfm_status encode_cells(infer_state *s, int64_t lo, int64_t hi, scfm_infer_report *report,
                                scfm_error *err) {
    const int64_t budget = s->opt->batch_tokens > 0 ? s->opt->batch_tokens : 16384;
    memset(s->mine, 0, sizeof(float) * (size_t)(hi - lo) * s->width);
    if (hi <= lo) return SCFM_OK;
    scfm_status st = scfm_matrix_read(s->matrix, lo, hi - lo, &s->chunk, err);
    int32_t rows[ROUND_CELLS_PER_RANK];
    for (int64_t i = 0; st == SCFM_OK && i < hi - lo; i++) {
        const scfm_cells_chunk *ch = &s->chunk;
        int64_t nnz = ch->indptr[i + 1] - ch->indptr[i];
        if (!grow_row(s, nnz + 1)) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
        double total;
        int len = input_cell(s, ch, i, lo + i, &total);
        if (len < 0) {
            report->cells_without_genes++;
            continue;
        }
        if (s->batch.n_tokens + len > budget && (st = encode_batch(s, rows, err)) != SCFM_OK) break;
        rows[s->batch.n_cells] = (int32_t)i;
        st = scfm_batch_add_cell(&s->batch, lo + i, s->encoded, len, err);
        if (st == SCFM_OK && s->count_encoder) scfm_batch_set_counts(&s->batch, s->row_counts, (float)total);
        else if (st == SCFM_OK && s->encoded_values) scfm_batch_set_values(&s->batch, s->encoded_values);
        if (st == SCFM_OK) s->batch.conditions[s->batch.n_cells - 1] = s->condition;
    }
    if (st == SCFM_OK) st = encode_batch(s, rows, err);
    return st;
}

static int argmax(const float *p, int n) {
    int best = 0;
    for (int k = 1; k < n; k++)
        if (p[k] > p[best]) best = k;
    return best;
}

/* Rank 0 appends a gathered round of n cells. */
static scfm_status append_round(infer_state *s, int64_t n, scfm_error *err) {
    if (!s->opt->predict) return scfm_h5ad_append_obsm(s->writer, s->opt->key, s->width, s->all, n, err);
    for (int64_t i = 0; i < n; i++) s->codes[i] = argmax(s->all + i * s->width, s->width);
    scfm_status st = scfm_h5ad_append_obsm(s->writer, s->opt->key, s->width, s->all, n, err);
    if (st == SCFM_OK)
        st = scfm_h5ad_append_obs_categorical(s->writer, s->opt->obs_column, (const char *const *)s->classes,
                                              s->n_classes, s->codes, n, err);
    return st;
}

scfm_status scfm_infer(scfm_comm *comm, const char *checkpoint, const char *input, const char *output,
                       const scfm_infer_options *opt, scfm_infer_report *report, scfm_error *err) {
    infer_state s = {0};
    s.condition = -1;
    s.opt = opt;
    s.comm = comm;
    s.rank = scfm_comm_rank(comm);
    s.world = scfm_comm_size(comm);
    memset(report, 0, sizeof *report);
    scfm_batch_init(&s.batch);
    scfm_status st = load_checkpoint(&s, checkpoint, err);
    if (st == SCFM_OK && s.count_encoder && (opt->layer >= 0 || opt->pool >= 0))
        st = scfm_fail(err, SCFM_ERR_ARG, "--layer and --pool read the transformer's hidden states; the embedding of "
                       "%s (model.encoder \"%s\") is its latent mean", s.step_dir,
                       scfm_config_choice("model.encoder", (int)s.cfg.model.encoder));
    if (st == SCFM_OK && !s.count_encoder && opt->layer > s.cfg.model.layers)
        st = scfm_fail(err, SCFM_ERR_ARG, "--layer %d: the model has layers 0 (embeddings) to %d", opt->layer,
                       s.cfg.model.layers);
    const int cls = opt->pool < 0 ? s.cfg.model.pool == SCFM_POOL_CLS : opt->pool == SCFM_POOL_CLS;
    if (st == SCFM_OK && !s.count_encoder && !opt->predict && cls && s.vocab->cls < 0)
        st = scfm_fail(err, SCFM_ERR_ARG, "%s: cls pooling needs a <cls> token, and this vocabulary has none "
                       "(use --pool mean)", s.step_dir);
    if (st == SCFM_OK) st = open_input(&s, input, report, err);
    struct stat sb;
    if (st == SCFM_OK && !opt->force && stat(output, &sb) == 0)
        st = scfm_fail(err, SCFM_ERR_ARG, "%s exists; choose another path or pass --force", output);
    if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) goto out;

    s.width = opt->predict ? s.n_classes : scfm_model_embedding_width(s.model);
    report->width = s.width;
    const int64_t n_cells = report->cells, round = (int64_t)ROUND_CELLS_PER_RANK * s.world;
    s.mine = malloc(sizeof(float) * ROUND_CELLS_PER_RANK * (size_t)s.width);
    s.probs = malloc(sizeof(float) * ROUND_CELLS_PER_RANK * (size_t)(s.width > 0 ? s.width : 1));
    s.encoded = malloc(sizeof(int32_t) * (size_t)(s.count_encoder ? s.cfg.model.genes : s.cfg.model.max_len));
    if (s.cfg.model.value_bins > 0) s.encoded_values = malloc((size_t)s.cfg.model.max_len);
    s.all = malloc(sizeof(float) * (size_t)round * s.width);
    s.codes = malloc(sizeof(int32_t) * (size_t)round);
    st = s.mine && s.probs && s.encoded && s.all && s.codes && (s.cfg.model.value_bins == 0 || s.encoded_values)
             ? SCFM_OK
             : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    const char *replace[1] = {opt->obs_column};
    if (st == SCFM_OK && s.rank == 0)
        st = scfm_h5ad_annotate(input, output, n_cells, replace, opt->predict ? 1 : 0, &s.writer, err);
    if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) goto out;

    const double start = scfm_now();
    for (int64_t base = 0; base < n_cells; base += round) {
        int64_t lo = base + (int64_t)s.rank * ROUND_CELLS_PER_RANK, hi = lo + ROUND_CELLS_PER_RANK;
        if (lo > n_cells) lo = n_cells;
        if (hi > n_cells) hi = n_cells;
        st = encode_cells(&s, lo, hi, report, err);
        if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) goto out;
        size_t bytes[s.world];
        for (int r = 0; r < s.world; r++) {
            int64_t a = base + (int64_t)r * ROUND_CELLS_PER_RANK, b = a + ROUND_CELLS_PER_RANK;
            a = a > n_cells ? n_cells : a;
            b = b > n_cells ? n_cells : b;
            bytes[r] = sizeof(float) * (size_t)(b - a) * s.width;
        }
        /* every rank's rows in cell order (an all-gather: the communicator
         * has no plain gather, and a round is small) */
        st = scfm_comm_allgatherv(comm, s.mine, bytes, s.all, err);
        int64_t n = (base + round > n_cells ? n_cells : base + round) - base;
        if (st == SCFM_OK && s.rank == 0) st = append_round(&s, n, err);
        if ((st = scfm_comm_agree(comm, st, err)) != SCFM_OK) goto out;
        if (s.rank == 0 && opt->progress) opt->progress(base + n, n_cells, scfm_now() - start, opt->progress_user);
    }
    if (s.rank == 0) {
        st = scfm_h5ad_finish(s.writer, err);
        s.writer = NULL;
    }
    st = scfm_comm_agree(comm, st, err);
    int64_t empty = report->cells_without_genes;
    if (st == SCFM_OK && (st = scfm_comm_sum_i64(comm, &empty, 1, err)) == SCFM_OK) report->cells_without_genes = empty;
out:
    free_state(&s);
    return st;
}
