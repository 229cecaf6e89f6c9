/* The masked-gene training loop, data-parallel over MPI ranks. A step takes
 * `accumulate` masked micro-batches of whole cells (at most
 * micro_batch_tokens tokens each, at least one cell) from each rank's loader;
 * the loss is averaged over every masked token of the step on all ranks, so N
 * ranks give the update of one rank accumulating their micro-batches. The
 * gradient sum over ranks starts bucket by bucket while backward still runs
 * (scfm_model_set_grad_ready). Each micro-batch carries the epoch its cells
 * were drawn in, which keys their dropout; an epoch may end inside a step. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"
#include "scfm/dist.h"
#include "scfm/model.h"
#include "scfm/train.h"
#include "train/device.h"

static void write_metrics(FILE *f, const scfm_train_progress *p) {
    fprintf(f,
            "{\"step\": %lld, \"epoch\": %d, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
            "\"tokens\": %lld, \"targets\": %lld, \"tokens_per_s\": %.1f, \"cells\": %lld, \"cells_per_s\": %.1f, "
            "\"elapsed_s\": %.3f, "
            "\"compute_s\": %.4f, \"data_s\": %.4f, \"comm_s\": %.4f, \"reduce_wait_s\": %.4f, "
            "\"checkpoint_s\": %.4f, \"ranks\": %d",
            (long long)p->step, p->epoch, p->loss, p->lr, p->grad_norm, (long long)p->tokens,
            (long long)p->targets, p->tokens_per_s, (long long)p->cells, p->cells_per_s, p->elapsed_s, p->compute_s, p->data_s, p->comm_s,
            p->reduce_wait_s, p->checkpoint_s, p->world_size);
    if (p->views > 0)
        fprintf(f, ", \"mlm_loss\": %.6f, \"contrastive_loss\": %.6f, \"views\": %lld", p->mlm_loss,
                p->contrastive_loss, (long long)p->views);
    if (p->validated)
        fprintf(f, ", \"val_cells\": %lld, \"val_accuracy\": %.6f, \"val_macro_f1\": %.6f",
                (long long)p->val_cells, p->val_accuracy, p->val_macro_f1);
    fputs("}\n", f);
    fflush(f);
}

/* ---- fine-tuning: labels, the held-out cells and their evaluation ---- */

typedef struct {
    int32_t *labels;          /* [cells of the shards] */
    char **classes;
    int n_classes;
    scfm_batch *batches;      /* this rank's held-out labelled cells */
    int n_batches;
    float *probs;
    int cap_cells;
} validation;

static void validation_free(validation *v) {
    free(v->labels);
    scfm_free_strings(v->classes, v->n_classes);
    for (int i = 0; i < v->n_batches; i++) scfm_batch_free(&v->batches[i]);
    free(v->batches);
    free(v->probs);
}

/* Reads the label column and packs this rank's share of the held-out
 * labelled cells (positions rank, rank + world, ... among them) into batches
 * of at most `budget` tokens, kept in memory for the run. */
static scfm_status load_validation(const scfm_config *cfg, int rank, int world, validation *v, scfm_error *err) {
    scfm_shards *s = NULL;
    scfm_status st = scfm_shards_open(cfg->data.shards, &s, err);
    if (st == SCFM_OK) st = scfm_shards_obs(s, cfg->finetune.label, &v->labels, &v->classes, &v->n_classes, err);
    if (st == SCFM_OK && v->n_classes < 2)
        st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: obs column '%s' has %d class(es); classification needs 2 or more",
                       cfg->data.shards, cfg->finetune.label, v->n_classes);
    int64_t seen = 0;
    for (int64_t i = 0; st == SCFM_OK && i < scfm_shards_num_cells(s); i++) {
        if (v->labels[i] < 0 || !scfm_holdout_cell((uint64_t)cfg->train.seed, i, cfg->finetune.validation_fraction))
            continue;
        if (seen++ % world != rank) continue;
        const int32_t *tokens;
        int length;
        if ((st = scfm_shards_cell(s, i, &tokens, &length, err)) != SCFM_OK) break;
        if (length > cfg->model.max_len) length = cfg->model.max_len;
        if (length == 0) continue;
        scfm_batch *b = v->n_batches ? &v->batches[v->n_batches - 1] : NULL;
        if (!b || b->n_tokens + length > cfg->train.micro_batch_tokens) {
            scfm_batch *grown = realloc(v->batches, sizeof(scfm_batch) * (size_t)(v->n_batches + 1));
            if (!grown) {
                st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for the validation cells");
                break;
            }
            v->batches = grown;
            b = &v->batches[v->n_batches++];
            scfm_batch_init(b);
        }
        if ((st = scfm_batch_add_cell(b, i, tokens, length, err)) != SCFM_OK) break;
        b->labels[b->n_cells - 1] = v->labels[i];
        if (b->n_cells > v->cap_cells) v->cap_cells = b->n_cells;
    }
    scfm_shards_close(s);
    if (st == SCFM_OK && !(v->probs = malloc(sizeof(float) * (size_t)(v->cap_cells + 1) * v->n_classes)))
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    return st;
}

/* Accuracy and macro-F1 (over the classes that occur among the labels or the
 * predictions, as scikit-learn's f1_score(average="macro")) of the held-out
 * cells of every rank. Collective. */
static scfm_status validate(scfm_comm *comm, scfm_model *m, validation *v, scfm_train_progress *p, scfm_error *err) {
    const int K = v->n_classes;
    int64_t *confusion = calloc((size_t)K * K, sizeof(int64_t)); /* [label][prediction] */
    scfm_status st = confusion ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int i = 0; st == SCFM_OK && i < v->n_batches; i++) {
        const scfm_batch *b = &v->batches[i];
        st = scfm_model_encode(m, b, err);
        if (st == SCFM_OK) st = scfm_model_classify(m, b, v->probs, err);
        for (int c = 0; st == SCFM_OK && c < b->n_cells; c++) {
            const float *pr = v->probs + (size_t)c * K;
            int best = 0;
            for (int k = 1; k < K; k++)
                if (pr[k] > pr[best]) best = k;
            confusion[(size_t)b->labels[c] * K + best]++;
        }
    }
    if ((st = scfm_comm_agree(comm, st, err)) == SCFM_OK) st = scfm_comm_sum_i64(comm, confusion, K * K, err);
    if (st == SCFM_OK) {
        int64_t total = 0, correct = 0;
        double f1_sum = 0.0;
        int classes = 0;
        for (int k = 0; k < K; k++) {
            int64_t tp = confusion[(size_t)k * K + k], row = 0, col = 0;
            for (int j = 0; j < K; j++) {
                row += confusion[(size_t)k * K + j];
                col += confusion[(size_t)j * K + k];
            }
            total += row;
            correct += tp;
            if (row + col == 0) continue;
            classes++;
            f1_sum += 2.0 * (double)tp / (double)(row + col);
        }
        p->validated = 1;
        p->val_cells = total;
        p->val_accuracy = total ? (double)correct / (double)total : 0.0;
        p->val_macro_f1 = classes ? f1_sum / classes : 0.0;
    }
    free(confusion);
    return st;
}

/* run_dir/file: the names one per line (what scfm_read_names reads back). */
static scfm_status write_names(const char *run_dir, const char *file, char *const *names, int n, scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(path, sizeof path, run_dir, file, err);
    if (st != SCFM_OK) return st;
    FILE *f = fopen(path, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create", path);
    for (int k = 0; k < n; k++) {
        if (strchr(names[k], '\n')) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: name %d holds a line break", path, k);
        fprintf(f, "%s\n", names[k]);
    }
    if (fclose(f) != 0 && st == SCFM_OK) st = scfm_fail(err, SCFM_ERR_IO, "%s: write failed", path);
    return st;
}

typedef struct {
    scfm_loader *loader;
    scfm_model *model;
    float *adam_m, *adam_v;      /* this rank's moments: all, or its ZeRO-1 block */
    size_t shard_lo, shard_n;    /* the parameters this rank updates */
    int zero1;
    scfm_batch *batches;
    uint32_t *epochs;  /* of each micro-batch */
    scfm_contrastive *contrastive; /* objective.contrastive > 0: the views' loss across ranks */
    scfm_batch cells;              /* with it: the loader's cells, before they become views */
    int n_batches;
    FILE *metrics;
    const scfm_device_ops *dev;    /* train.backend "cuda": the model trains there */
    scfm_device_trainer *device;
} train_resources;

static void release(train_resources *r) {
    if (r->metrics) fclose(r->metrics);
    scfm_loader_close(r->loader);
    for (int i = 0; i < r->n_batches; i++) scfm_batch_free(&r->batches[i]);
    free(r->batches);
    free(r->epochs);
    scfm_contrastive_free(r->contrastive);
    scfm_batch_free(&r->cells);
    scfm_free(r->adam_m);
    scfm_free(r->adam_v);
    if (r->device) r->dev->destroy(r->device);
    scfm_model_free(r->model);
}

static scfm_status prepare_run_dir(const scfm_config *cfg, char *run_dir, size_t cap, FILE **metrics,
                                   scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_status st = scfm_path_join(run_dir, cap, cfg->checkpoint.dir, cfg->checkpoint.run, err);
    if (st == SCFM_OK) st = scfm_make_dirs(run_dir, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, run_dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_write(cfg, path, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, run_dir, "metrics.jsonl", err);
    if (st != SCFM_OK) return st;
    *metrics = fopen(path, "a");
    if (!*metrics) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return SCFM_OK;
}

/* Sums gradient buckets over ranks as backward finishes them. */
typedef struct {
    scfm_comm *comm;
    float *grads;
    scfm_comm_request **pending;
    int n_pending;
    scfm_status status;
    scfm_error *err;
} grad_reducer;

static void reduce_bucket(size_t offset, size_t size, void *user) {
    grad_reducer *g = user;
    scfm_comm_progress(g->pending, g->n_pending);
    if (g->status != SCFM_OK) return;
    g->status = scfm_comm_isum_f32(g->comm, g->grads + offset, size, &g->pending[g->n_pending], g->err);
    if (g->status == SCFM_OK) g->n_pending++;
}

/* Every rank's word-embedding lookup rows (kept aside by backward) are
 * gathered and added in rank order, so every replica gets the same sum: a
 * row per token is far less than the dense [vocab, hidden] tensor. */
static scfm_status exchange_embedding_rows(scfm_comm *comm, scfm_model *m, scfm_error *err) {
    const int world = scfm_comm_size(comm);
    const size_t C = (size_t)scfm_model_get_config(m)->hidden;
    const int32_t *tokens;
    const float *rows;
    int64_t mine = scfm_model_embedding_rows(m, &tokens, &rows), counts[world];
    scfm_status st = scfm_comm_allgather(comm, &mine, sizeof mine, counts, err);
    if (st != SCFM_OK) return st;
    size_t token_bytes[world], row_bytes[world], total = 0;
    for (int r = 0; r < world; r++) {
        token_bytes[r] = sizeof(int32_t) * (size_t)counts[r];
        row_bytes[r] = sizeof(float) * C * (size_t)counts[r];
        total += (size_t)counts[r];
    }
    int32_t *all_tokens = malloc(sizeof(int32_t) * (total ? total : 1));
    float *all_rows = malloc(sizeof(float) * C * (total ? total : 1));
    st = all_tokens && all_rows ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory gathering embedding rows");
    if ((st = scfm_comm_agree(comm, st, err)) == SCFM_OK) st = scfm_comm_allgatherv(comm, tokens, token_bytes, all_tokens, err);
    if (st == SCFM_OK) st = scfm_comm_allgatherv(comm, rows, row_bytes, all_rows, err);
    if (st == SCFM_OK) scfm_model_add_embedding_rows(m, all_tokens, all_rows, (int)total);
    free(all_tokens);
    free(all_rows);
    return st;
}

/* Waits for every bucket; a rank whose backward did not run (no tokens, or a
 * failed forward) still reduces every bucket, so all ranks issue the same
 * collectives in the same order. */
static scfm_status finish_reduction(grad_reducer *g, scfm_model *m, scfm_error *err) {
    if (g->n_pending == 0) {
        int n = scfm_model_grad_ranges(m, NULL, NULL);
        size_t offset[n], size[n];
        scfm_model_grad_ranges(m, offset, size);
        for (int i = 0; i < n; i++) reduce_bucket(offset[i], size[i], g);
    }
    scfm_status st = g->status;
    for (int i = 0; i < g->n_pending; i++) {
        scfm_status w = scfm_comm_wait(g->pending[i], err);
        if (st == SCFM_OK) st = w;
    }
    g->n_pending = 0;
    if (st == SCFM_OK) st = exchange_embedding_rows(g->comm, m, err);
    return st;
}

/* Where this rank's stream resumes. At the same world size each rank takes
 * its own saved position. At another, every rank restarts from the earliest
 * position any rank had reached, aligned to the new world size: the order of
 * cells is kept, and at most the cells between the ranks' positions are seen
 * twice. */
static scfm_loader_position resume_position(const scfm_checkpoint_state *s, int rank, int world, int64_t n_cells) {
    if (s->world_size == world) return s->positions[rank];
    scfm_loader_position first = s->positions[0];
    for (int r = 1; r < s->world_size; r++) {
        scfm_loader_position p = s->positions[r];
        if (p.epoch < first.epoch || (p.epoch == first.epoch && p.offset < first.offset)) first = p;
    }
    scfm_loader_position mine = {first.epoch, first.offset - first.offset % world + rank};
    if (mine.offset >= n_cells) mine = (scfm_loader_position){first.epoch + 1, rank};
    return mine;
}

/* What training needs to know of the shard set before the loader's thread
 * owns HDF5: its cells and vocabulary size; with data.vocab, it also refuses
 * shards made with another vocabulary and says where that vocabulary's genes
 * start (after <pad>, <mask> and any <cls>/<eos>), so masking never picks a
 * special token. */
typedef struct {
    int64_t n_cells;
    int vocab_size;
    int first_gene;
    int n_bins;               /* bin mode; 0 in rank mode */
    int log1p;                /* bin mode: binned from log1p-normalised counts */
    int32_t *conditions;      /* model.condition_column: a code per cell (-1: none) */
    char **condition_names;   /* [n_conditions] its categories */
    int n_conditions;
    int n_genes;              /* count shards: the gene set's columns; 0 for token shards */
    char **gene_ids;          /* count shards with data.vocab: the gene id of each column */
} shard_facts;

/* A value model needs bin shards with its number of bins, and a condition
 * column a code for every cell; the model's shape is resolved from them. */
static scfm_status read_value_facts(const scfm_config *cfg, scfm_shards *s, shard_facts *f, scfm_error *err) {
    const char *src = cfg->source[0] ? cfg->source : "config";
    const int wants_values = cfg->objective.value > 0.0 || cfg->objective.mvc > 0.0 || cfg->model.value_bins > 0;
    f->n_bins = scfm_shards_n_bins(s);
    f->log1p = strstr(scfm_shards_normalisation(s), "log1p(") != NULL;
    if (wants_values && strcmp(scfm_shards_mode(s), "bin") != 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: objective.value/objective.mvc (or model.value_bins) need expression "
                         "values, but data.shards (%s) were tokenized in %s mode: use `scfm tokenize --mode bin`", src,
                         cfg->data.shards, scfm_shards_mode(s));
    if (wants_values && cfg->model.value_bins != 0 && cfg->model.value_bins != f->n_bins)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.value_bins is %d, but data.shards (%s) hold %d bins", src,
                         cfg->model.value_bins, cfg->data.shards, f->n_bins);
    if (!cfg->model.condition_column[0]) return SCFM_OK;
    scfm_status st = scfm_shards_obs(s, cfg->model.condition_column, &f->conditions, &f->condition_names,
                                     &f->n_conditions, err);
    if (st == SCFM_OK && cfg->model.num_conditions != 0 && cfg->model.num_conditions < f->n_conditions)
        st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.num_conditions is %d, but obs column '%s' of data.shards has %d "
                       "categories", src, cfg->model.num_conditions, cfg->model.condition_column, f->n_conditions);
    return st;
}

/* A count encoder reads count shards, the transformer token shards; a count
 * encoder's width is the shards' gene set, whose gene ids go into the run
 * (genes.tsv) so that `scfm embed` can place an input's genes. */
static scfm_status read_gene_set(const scfm_config *cfg, scfm_shards *s, const scfm_vocab *v, shard_facts *f,
                                 scfm_error *err) {
    const char *src = cfg->source[0] ? cfg->source : "config";
    const int count_encoder = cfg->model.encoder != SCFM_ENCODER_TRANSFORMER;
    const int count_shards = strcmp(scfm_shards_mode(s), "counts") == 0;
    if (count_encoder != count_shards)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.encoder \"%s\" needs %s, but data.shards (%s) were "
                         "tokenized in %s mode", src, scfm_config_choice("model.encoder", (int)cfg->model.encoder),
                         count_encoder ? "count shards (`scfm tokenize --mode counts`)" : "token shards (--mode rank or bin)",
                         cfg->data.shards, scfm_shards_mode(s));
    if (!count_shards) return SCFM_OK;
    const int32_t *tokens;
    scfm_shards_gene_set(s, &tokens, &f->n_genes);
    if (cfg->model.genes != 0 && cfg->model.genes != f->n_genes)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.genes is %d, but data.shards (%s) hold %d genes per cell", src,
                         cfg->model.genes, cfg->data.shards, f->n_genes);
    if (!v) return SCFM_OK;
    if (!(f->gene_ids = calloc((size_t)f->n_genes, sizeof(char *)))) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    for (int c = 0; c < f->n_genes; c++)
        if (!(f->gene_ids[c] = strdup(v->gene_ids[tokens[c] - v->n_special])))
            return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    return SCFM_OK;
}

static scfm_status read_shard_facts(const scfm_config *cfg, shard_facts *f, scfm_error *err) {
    scfm_vocab *v = NULL;
    scfm_shards *s = NULL;
    f->first_gene = SCFM_TOKEN_MASK + 1;
    scfm_status st = cfg->data.vocab[0] ? scfm_vocab_read(cfg->data.vocab, &v, err) : SCFM_OK;
    if (st == SCFM_OK) st = scfm_shards_open(cfg->data.shards, &s, err);
    if (st == SCFM_OK && v) st = scfm_shards_expect_vocab(s, v, err);
    if (st == SCFM_OK) {
        f->n_cells = scfm_shards_num_cells(s);
        f->vocab_size = scfm_shards_vocab_size(s);
        if (v) f->first_gene = v->n_special;
        st = read_value_facts(cfg, s, f, err);
    }
    if (st == SCFM_OK) st = read_gene_set(cfg, s, v, f, err);
    scfm_shards_close(s);
    scfm_vocab_free(v);
    return st;
}

/* Rank 0 finds the checkpoint (and says which bad one it skipped); every rank
 * reads it. */
static scfm_status load_checkpoint(const scfm_train_options *opt, const char *run_dir, train_resources *r,
                                   scfm_checkpoint_state *state, scfm_error *err) {
    char dir[SCFM_PATH_MAX] = "", skipped[sizeof err->message] = "";
    scfm_status st = SCFM_OK;
    if (scfm_comm_rank(opt->comm) == 0) st = scfm_checkpoint_find(run_dir, dir, sizeof dir, skipped, sizeof skipped, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) return st;
    if ((st = scfm_comm_bcast(opt->comm, dir, sizeof dir, 0, err)) != SCFM_OK) return st;
    if (skipped[0] && opt->on_notice) {
        char message[sizeof skipped + 64];
        snprintf(message, sizeof message, "skipped a damaged checkpoint: %s", skipped);
        opt->on_notice(message, opt->user);
    }
    /* Checkpoints hold all moments, whatever the ranks that wrote them;
     * under ZeRO-1 each rank keeps its block. */
    size_t n = scfm_model_num_params(r->model);
    float *m = r->zero1 ? scfm_alloc(sizeof(float) * n) : r->adam_m;
    float *v = r->zero1 ? scfm_alloc(sizeof(float) * n) : r->adam_v;
    st = m && v ? scfm_checkpoint_read(dir, r->model, m, v, state, err) : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    if (st == SCFM_OK && r->zero1) {
        memcpy(r->adam_m, m + r->shard_lo, sizeof(float) * r->shard_n);
        memcpy(r->adam_v, v + r->shard_lo, sizeof(float) * r->shard_n);
    }
    if (r->zero1) {
        scfm_free(m);
        scfm_free(v);
    }
    if (scfm_comm_agree(opt->comm, st, err) != SCFM_OK) return err->status;
    if (opt->on_notice && scfm_comm_rank(opt->comm) == 0) {
        char message[SCFM_PATH_MAX + 128];
        snprintf(message, sizeof message, "resuming from %s (step %" PRId64 ", written by %d rank(s))", dir,
                 state->step, state->world_size);
        opt->on_notice(message, opt->user);
    }
    return SCFM_OK;
}

/* Gathers every rank's loader position (mine: where this rank's stream
 * resumes) and, under ZeRO-1, the moment blocks; rank 0 writes the
 * checkpoint. */
static scfm_status save_checkpoint(const scfm_train_options *opt, const scfm_config *cfg, const char *run_dir,
                                   const train_resources *r, int64_t step, int64_t tokens_seen,
                                   scfm_loader_position mine, scfm_error *err) {
    const int world = scfm_comm_size(opt->comm), root = scfm_comm_rank(opt->comm) == 0;
    const size_t n = scfm_model_num_params(r->model);
    scfm_loader_position *all = malloc(sizeof mine * (size_t)world);
    float *m = r->zero1 && root ? scfm_alloc(sizeof(float) * n) : r->adam_m;
    float *v = r->zero1 && root ? scfm_alloc(sizeof(float) * n) : r->adam_v;
    scfm_status st = all && m && v ? SCFM_OK : scfm_fail(err, SCFM_ERR_NOMEM, "out of memory writing a checkpoint");
    /* training on a device: its parameters and moments into the host model and r's moments first */
    if (st == SCFM_OK && r->device)
        st = r->dev->download(r->device, scfm_model_params(r->model), r->adam_m, r->adam_v, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) == SCFM_OK) st = scfm_comm_allgather(opt->comm, &mine, sizeof mine, all, err);
    if (st == SCFM_OK && r->zero1) st = scfm_comm_gather_blocks_to_f32(opt->comm, r->adam_m, m, n, 0, err);
    if (st == SCFM_OK && r->zero1) st = scfm_comm_gather_blocks_to_f32(opt->comm, r->adam_v, v, n, 0, err);
    if (st == SCFM_OK && root) {
        scfm_checkpoint_state state = {step, tokens_seen, world, all};
        st = scfm_checkpoint_write(run_dir, cfg, r->model, m, v, &state, err);
    }
    if (r->zero1 && root) {
        scfm_free(m);
        scfm_free(v);
    }
    free(all);
    return scfm_comm_agree(opt->comm, st, err);
}

/* The contrastive objective's micro-batch: the loader's cells as pairs of
 * views, masked (genes when the masked-gene loss is on, values when a value
 * loss is) as cells of their own. value_bins: the model's B, the masked bin. */
static scfm_status make_views(const scfm_config *cfg, const scfm_mask_config *mask, int value_bins,
                              const scfm_batch *cells, scfm_batch *views, uint32_t epoch, scfm_error *err) {
    const uint64_t seed = (uint64_t)cfg->train.seed;
    scfm_status st = scfm_batch_views(cells, views, cfg->objective.view_fraction, mask->first_gene_token, seed,
                                      epoch, err);
    if (st == SCFM_OK && cfg->objective.mlm > 0.0) scfm_batch_mask(views, mask, seed, epoch);
    if (st == SCFM_OK && value_bins > 0 && cfg->objective.value + cfg->objective.mvc > 0.0)
        scfm_batch_mask_values(views, cfg->objective.value_mask_prob, mask->first_gene_token, value_bins, seed,
                               epoch);
    return st;
}

/* train.backend "cuda" trains the transformer with the masked-gene loss
 * (docs/cuda.md); it refuses what only the CPU backend has rather than
 * silently training on the CPU, and loads the backend. */
static scfm_status check_backend(const scfm_config *cfg, const scfm_train_options *opt, const scfm_device_ops **ops,
                                 scfm_error *err) {
    *ops = NULL;
    if (cfg->train.backend == SCFM_BACKEND_CPU) return SCFM_OK;
    const char *where = cfg->source[0] ? cfg->source : "config";
    const scfm_objective_config *o = &cfg->objective;
    const char *cpu_only = cfg->model.encoder != SCFM_ENCODER_TRANSFORMER ? "model.encoder (a count encoder)"
                           : opt->finetune                              ? "scfm finetune"
                           : o->contrastive > 0.0                       ? "objective.contrastive"
                           : o->value > 0.0 || o->mvc > 0.0             ? "objective.value / objective.mvc"
                           : cfg->model.condition_column[0]             ? "model.condition_column"
                           : cfg->train.zero1                           ? "train.zero1"
                           : !(o->mlm > 0.0)                            ? "objective.mlm 0"
                                                                        : NULL;
    if (cpu_only)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: train.backend \"cuda\" trains the transformer with the masked-gene "
                         "loss; %s runs on the CPU backend only (docs/cuda.md)", where, cpu_only);
    scfm_error why = {0};
    if (scfm_device_ops_load(ops, &why) != SCFM_OK)
        return scfm_fail(err, why.status, "%s: train.backend \"cuda\": %s", where, why.message);
    if ((*ops)->devices(&why) == 0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: train.backend \"cuda\": %s", where, why.message);
    return SCFM_OK;
}

/* What the step optimises, and refusals of what cannot be trained. */
static scfm_status check_objective(const scfm_config *cfg, const scfm_train_options *opt, scfm_error *err) {
    const scfm_objective_config *o = &cfg->objective;
    if (opt->finetune && cfg->model.encoder != SCFM_ENCODER_TRANSFORMER)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: scfm finetune trains a classification head on the transformer; "
                         "model.encoder is a count encoder", cfg->source[0] ? cfg->source : "config");
    if (opt->finetune && o->contrastive > 0.0)
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: objective.contrastive applies to pretraining, not scfm finetune",
                         cfg->source[0] ? cfg->source : "config");
    return SCFM_OK;
}

scfm_status scfm_train(const scfm_config *cfg, const scfm_train_options *opt, scfm_error *err) {
    const scfm_train_config *tc = &cfg->train;
    const int rank = scfm_comm_rank(opt->comm), world = scfm_comm_size(opt->comm);
    train_resources r = {0};
    scfm_status st = check_backend(cfg, opt, &r.dev, err);
    if (st != SCFM_OK) return st;
    if (cfg->data.shards[0] == '\0')
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: data.shards is not set", cfg->source[0] ? cfg->source : "config");
    if (tc->threads > 0) omp_set_num_threads(tc->threads);

    if ((st = check_objective(cfg, opt, err)) != SCFM_OK) return st;
    const int contrastive = cfg->objective.contrastive > 0.0;
    const int count_encoder = cfg->model.encoder != SCFM_ENCODER_TRANSFORMER;
    shard_facts facts = {0};
    st = read_shard_facts(cfg, &facts, err);
    /* The model takes the shards' vocabulary unless the config names a larger one. */
    scfm_model_config mc = cfg->model;
    if (st == SCFM_OK && mc.vocab_size == 0) mc.vocab_size = facts.vocab_size;
    if (mc.special_tokens == 0) mc.special_tokens = facts.first_gene;
    if (mc.value_bins == 0 && (cfg->objective.value > 0.0 || cfg->objective.mvc > 0.0)) mc.value_bins = facts.n_bins;
    if (mc.value_bins > 0) mc.value_log1p = facts.log1p;
    if (mc.condition_column[0] && mc.num_conditions == 0) mc.num_conditions = facts.n_conditions;
    if (count_encoder) mc.genes = facts.n_genes;
    if (contrastive) {
        mc.projection_dim = cfg->objective.projection_dim;
        mc.learn_temperature = cfg->objective.learn_temperature;
        mc.temperature = cfg->objective.temperature;
    }
    validation val = {0};
    if (st == SCFM_OK && opt->finetune) st = load_validation(cfg, rank, world, &val, err);
    if (st == SCFM_OK && opt->finetune) {
        if (mc.num_labels != 0 && mc.num_labels != val.n_classes)
            st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.num_labels is %d, but obs column '%s' has %d classes",
                           cfg->source, mc.num_labels, cfg->finetune.label, val.n_classes);
        mc.num_labels = val.n_classes;
    }
    if (st == SCFM_OK && mc.vocab_size < facts.vocab_size)
        st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.vocab_size (%d) is smaller than the shards' vocabulary (%d)",
                       cfg->source, mc.vocab_size, facts.vocab_size);
    if (st == SCFM_OK) st = scfm_model_create(&mc, &r.model, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out;
    scfm_model_init_weights(r.model, (uint64_t)tc->seed);
    scfm_model_set_objective(r.model, &cfg->objective);
    if (opt->init_from) {
        char path[SCFM_PATH_MAX];
        st = scfm_path_join(path, sizeof path, opt->init_from, "model.safetensors", err);
        if (st == SCFM_OK) st = scfm_model_load_encoder(r.model, path, err);
        if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out;
    }
    /* Fine-tuning may leave the embeddings and the first layers as they are. */
    const size_t frozen = opt->finetune && cfg->finetune.freeze_layers > 0
                              ? scfm_model_layer_offset(r.model, cfg->finetune.freeze_layers)
                              : 0;
    size_t n_params = scfm_model_num_params(r.model);
    r.zero1 = tc->zero1 && world > 1;
    r.shard_lo = 0;
    r.shard_n = r.zero1 ? scfm_comm_block(opt->comm, n_params, rank, &r.shard_lo) : n_params;
    r.adam_m = scfm_alloc(sizeof(float) * r.shard_n);
    r.adam_v = scfm_alloc(sizeof(float) * r.shard_n);
    r.n_batches = tc->accumulate;
    r.batches = calloc((size_t)tc->accumulate, sizeof(scfm_batch));
    r.epochs = calloc((size_t)tc->accumulate, sizeof(uint32_t));
    int n_buckets = scfm_model_grad_ranges(r.model, NULL, NULL);
    scfm_comm_request **pending = calloc((size_t)n_buckets, sizeof(scfm_comm_request *));
    if (!r.adam_m || !r.adam_v || !r.batches || !r.epochs || !pending)
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for optimiser state of %zu parameters", n_params);
    if (st == SCFM_OK && contrastive) st = scfm_contrastive_create(&r.contrastive, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out_pending;

    char run_dir[SCFM_PATH_MAX];
    scfm_config resolved = *cfg;
    resolved.model.vocab_size = mc.vocab_size;
    resolved.model.special_tokens = mc.special_tokens;
    resolved.model.num_labels = mc.num_labels;
    resolved.model.value_bins = mc.value_bins;
    resolved.model.value_log1p = mc.value_log1p;
    resolved.model.num_conditions = mc.num_conditions;
    resolved.model.genes = mc.genes;
    if (rank == 0) st = prepare_run_dir(&resolved, run_dir, sizeof run_dir, &r.metrics, err);
    else st = scfm_path_join(run_dir, sizeof run_dir, cfg->checkpoint.dir, cfg->checkpoint.run, err);
    if (st == SCFM_OK && rank == 0 && opt->finetune)
        st = write_names(run_dir, SCFM_LABELS_FILE, val.classes, val.n_classes, err);
    if (st == SCFM_OK && rank == 0 && mc.num_conditions > 0)
        st = write_names(run_dir, SCFM_CONDITIONS_FILE, facts.condition_names, facts.n_conditions, err);
    if (st == SCFM_OK && rank == 0 && facts.gene_ids)
        st = write_names(run_dir, SCFM_GENES_FILE, facts.gene_ids, facts.n_genes, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out_pending;

    int64_t first_step = 0, tokens_seen = 0;
    scfm_loader_position start = {0, rank};
    if (opt->resume) {
        scfm_checkpoint_state state = {0};
        st = load_checkpoint(opt, run_dir, &r, &state, err);
        if (st == SCFM_OK) {
            first_step = state.step;
            tokens_seen = state.tokens_seen;
            start = resume_position(&state, rank, world, facts.n_cells);
        }
        free(state.positions);
        if (st != SCFM_OK) goto out_pending;
    }
    if (r.dev) {
        /* collective: every rank gets its device and the gradient sum is set up */
        st = r.dev->create(opt->comm, r.model, &r.device, err);
        if (st == SCFM_OK)
            st = r.dev->upload(r.device, scfm_model_params(r.model), opt->resume ? r.adam_m : NULL,
                               opt->resume ? r.adam_v : NULL, err);
        if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out_pending;
        if (rank == 0 && opt->on_notice) {
            char message[480];
            snprintf(message, sizeof message, "training on %s", r.dev->describe(r.device));
            opt->on_notice(message, opt->user);
        }
    }
    /* Random replacement tokens come from the model's vocabulary. */
    scfm_loader_config lc = {
        .seed = (uint64_t)tc->seed,
        .rank = rank,
        .world = world,
        .max_len = cfg->model.max_len,
        .micro_batch_tokens = tc->micro_batch_tokens,
        .micro_batch_cells = count_encoder ? tc->micro_batch_cells : 0,
        .mask = {opt->finetune || contrastive || cfg->objective.mlm <= 0.0 ? 0.0 : tc->mask_prob, tc->mask_token_prob,
                 tc->random_token_prob, mc.special_tokens, mc.vocab_size},
        .labels = opt->finetune ? val.labels : NULL,
        .holdout_fraction = opt->finetune ? cfg->finetune.validation_fraction : 0.0,
        .value_bins = count_encoder ? 0 : mc.value_bins,
        .value_mask_prob = opt->finetune || contrastive || cfg->objective.value + cfg->objective.mvc <= 0.0
                               ? 0.0 : cfg->objective.value_mask_prob,
        .conditions = facts.conditions,
    };
    /* The contrastive objective masks the views (genes and values), not the
     * loader's cells. */
    scfm_mask_config view_mask = lc.mask;
    view_mask.mask_prob = tc->mask_prob;
    st = scfm_loader_open(cfg->data.shards, &lc, &start, &r.loader, err);
    if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) goto out_pending;

    grad_reducer reducer = {opt->comm, scfm_model_grads(r.model), pending, 0, SCFM_OK, err};
    uint32_t validated_epoch = start.epoch;
    const double start_time = scfm_now();
    int64_t run_tokens = 0, run_cells = 0;
    for (int64_t step = first_step; step < tc->steps; step++) {
        /* data_s is the time spent waiting for the loader, not its work. */
        scfm_status local = SCFM_OK;
        const scfm_loader_position step_start = scfm_loader_get_position(r.loader);
        /* masked-gene (or classification) loss terms, tokens, stop requested, failed, ranks in a new epoch,
         * contrastive anchors (views) */
        int64_t counts[7] = {0, 0, 0, 0, 0, 0, 0};
        double data_s = 0.0, comm_s = 0.0, checkpoint_s = 0.0;
        for (int a = 0; a < r.n_batches && local == SCFM_OK; a++) {
            double t0 = scfm_now();
            local = scfm_loader_next(r.loader, contrastive ? &r.cells : &r.batches[a], &r.epochs[a], err);
            data_s += scfm_now() - t0;
            if (local == SCFM_OK && contrastive)
                local = count_encoder ? scfm_batch_pairs(&r.cells, &r.batches[a], err)
                                      : make_views(cfg, &view_mask, mc.value_bins, &r.cells, &r.batches[a], r.epochs[a], err);
            if (local != SCFM_OK) break;
            counts[0] += scfm_model_loss_terms(r.model, &r.batches[a]);
            counts[1] += r.batches[a].n_tokens;
            counts[5] += contrastive ? r.batches[a].n_cells : 0;
            counts[6] += r.batches[a].n_cells;
        }
        counts[2] = opt->stop && *opt->stop;
        counts[3] = local != SCFM_OK;
        counts[4] = local == SCFM_OK && r.epochs[r.n_batches - 1] > validated_epoch;
        double t1 = scfm_now();
        if ((st = scfm_comm_sum_i64(opt->comm, counts, 7, err)) != SCFM_OK) break;
        comm_s += scfm_now() - t1;
        if (counts[3]) {
            st = scfm_comm_agree(opt->comm, local, err);
            break;
        }
        if (counts[2]) {
            double t = scfm_now();
            /* This step's micro-batches are already drawn: the checkpoint
             * resumes the stream where the step started. */
            if ((st = save_checkpoint(opt, &resolved, run_dir, &r, step, tokens_seen, step_start, err)) == SCFM_OK)
                st = scfm_fail(err, SCFM_ERR_INTERRUPTED, "stopped by a signal before step %" PRId64
                               "; checkpoint %s/step_%07" PRId64 " written (%.1f s); continue with --resume",
                               step + 1, run_dir, step, scfm_now() - t);
            break;
        }
        const int64_t global_targets = counts[0], global_tokens = counts[1], global_views = counts[5];
        double compute_t0 = scfm_now(), loss_sum = 0.0, contrastive_sum = 0.0;
        if (r.device) local = r.dev->zero_grad(r.device, err);
        else scfm_model_zero_grad(r.model);
        scfm_model_set_step(r.model, step);
        /* Each loss is a mean over the whole step on all ranks: the masked-gene
         * loss over its masked tokens, the contrastive loss over its views. The
         * contrastive loss is collective per micro-batch index, so with it
         * every rank visits every index and the gradient hook goes on the last
         * one everywhere: all ranks issue their collectives in one order. */
        int last = contrastive ? r.n_batches - 1 : -1;
        for (int a = 0; !contrastive && a < r.n_batches; a++)
            if (r.batches[a].n_tokens > 0) last = a;
        /* the model weighs its token-level terms by objective.* itself */
        const float terms_scale = global_targets > 0 ? 1.0f / (float)global_targets : 0.0f;
        const float contrastive_scale =
            global_views > 0 ? (float)cfg->objective.contrastive / (float)global_views : 0.0f;
        for (int a = 0; a <= last && global_targets + global_views > 0 && local == SCFM_OK; a++) {
            const scfm_batch *b = &r.batches[a];
            double part = 0.0;
            if (b->n_tokens > 0)
                local = r.device ? r.dev->forward(r.device, b, (uint64_t)tc->seed, r.epochs[a], terms_scale, &part, err)
                                 : scfm_model_forward(r.model, b, 1, (uint64_t)tc->seed, r.epochs[a], &part, err);
            if (contrastive)
                local = scfm_contrastive_step(r.contrastive, opt->comm, r.model, b->n_tokens > 0 ? b : NULL, local,
                                              contrastive_scale, &contrastive_sum, err);
            if (local != SCFM_OK || b->n_tokens == 0) continue;
            if (r.device) {
                local = r.dev->backward(r.device, b, a == last && world > 1, err);
            } else {
                if (a == last && world > 1 && !r.zero1) scfm_model_set_grad_ready(r.model, reduce_bucket, &reducer);
                scfm_model_backward(r.model, b, terms_scale);
                scfm_model_set_grad_ready(r.model, NULL, NULL);
            }
            loss_sum += part;
        }
        /* Only the wait is counted as communication: reductions that finished
         * during backward were hidden behind it. */
        double comm_t0 = scfm_now();
        double sums[3] = {loss_sum, local != SCFM_OK, contrastive_sum};
        float *grads = scfm_model_grads(r.model); /* under ZeRO-1: this rank's block of the sum */
        if (r.device) st = r.dev->reduce(r.device, err);
        else if (r.zero1) st = scfm_comm_sum_scatter_f32(opt->comm, grads, n_params, err);
        else if (world > 1) st = finish_reduction(&reducer, r.model, err);
        const double reduce_wait_s = scfm_now() - comm_t0;
        if (st == SCFM_OK && world > 1) st = scfm_comm_sum_f64(opt->comm, sums, 3, err);
        if (st != SCFM_OK) break;
        double comm_t1 = scfm_now();
        comm_s += comm_t1 - comm_t0;
        if (sums[1] != 0.0) {
            st = scfm_comm_agree(opt->comm, local, err);
            break;
        }
        double norm = 0.0;
        if (r.device) {
            if ((st = scfm_comm_agree(opt->comm, r.dev->grad_norm(r.device, &norm, err), err)) != SCFM_OK) break;
        } else {
            norm = scfm_grad_norm(grads, r.shard_n);
        }
        if (r.zero1) {
            double squares = norm * norm;
            if ((st = scfm_comm_sum_f64(opt->comm, &squares, 1, err)) != SCFM_OK) break;
            norm = sqrt(squares);
        }
        if (!isfinite(norm) || !isfinite(sums[0])) {
            st = scfm_fail(err, SCFM_ERR_NUMERIC, "step %" PRId64 ": the loss or the gradient norm is not finite", step + 1);
            break;
        }
        const float clip = tc->clip_norm > 0.0 && norm > tc->clip_norm ? (float)(tc->clip_norm / norm) : 1.0f;
        double lr = scfm_lr_at(tc, step);
        if (r.device) {
            if (global_targets > 0) st = r.dev->update(r.device, clip, step + 1, lr, tc, frozen, err);
            if ((st = scfm_comm_agree(opt->comm, st, err)) != SCFM_OK) break;
        } else if (clip != 1.0f) {
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < r.shard_n; i++) grads[i] *= clip;
        }
        if (!r.device && global_targets + global_views > 0) {
            const size_t skip = frozen > r.shard_lo ? (frozen < r.shard_lo + r.shard_n ? frozen - r.shard_lo : r.shard_n) : 0;
            scfm_adamw_update(r.model, grads + skip, r.adam_m + skip, r.adam_v + skip, r.shard_lo + skip,
                              r.shard_lo + r.shard_n, step + 1, lr, tc);
            if (r.zero1) {
                double t = scfm_now();
                if ((st = scfm_comm_gather_blocks_f32(opt->comm, scfm_model_params(r.model), n_params, err)) != SCFM_OK)
                    break;
                comm_s += scfm_now() - t;
            }
        }
        double t2 = scfm_now();
        run_tokens += global_tokens;
        run_cells += counts[6];
        tokens_seen += global_tokens;
        int due = cfg->checkpoint.every > 0 && (step + 1) % cfg->checkpoint.every == 0;
        if (due || step + 1 == tc->steps) {
            if ((st = save_checkpoint(opt, &resolved, run_dir, &r, step + 1, tokens_seen,
                                      scfm_loader_get_position(r.loader), err)) != SCFM_OK)
                break;
            checkpoint_s = scfm_now() - t2;
        }
        scfm_train_progress p = {0};
        /* Held-out cells are scored once every rank has entered a new epoch,
         * and at the end. */
        if (opt->finetune && (counts[4] == world || step + 1 == tc->steps)) {
            if ((st = validate(opt->comm, r.model, &val, &p, err)) != SCFM_OK) break;
            validated_epoch = r.epochs[r.n_batches - 1];
        }
        if (rank == 0) {
            p.step = step + 1;
            p.steps = tc->steps;
            p.mlm_loss = global_targets > 0 ? sums[0] / (double)global_targets : 0.0;
            p.contrastive_loss = global_views > 0 ? sums[2] / (double)global_views : 0.0;
            p.loss = p.mlm_loss + cfg->objective.contrastive * p.contrastive_loss;
            p.views = global_views;
            p.lr = lr;
            p.grad_norm = norm;
            p.tokens = global_tokens;
            p.targets = global_targets;
            p.elapsed_s = scfm_now() - start_time;
            p.tokens_per_s = (double)run_tokens / p.elapsed_s;
            p.cells = counts[6];
            p.cells_per_s = (double)run_cells / p.elapsed_s;
            p.eta_s = p.elapsed_s / (double)(p.step - first_step) * (double)(tc->steps - p.step);
            p.compute_s = (comm_t0 - compute_t0) + (t2 - comm_t1);
            p.data_s = data_s;
            p.comm_s = comm_s;
            p.reduce_wait_s = reduce_wait_s;
            p.checkpoint_s = checkpoint_s;
            p.world_size = world;
            p.epoch = (int)r.epochs[r.n_batches - 1];
            write_metrics(r.metrics, &p);
            if (opt->on_step) opt->on_step(&p, opt->user);
        }
    }
out_pending:
    free(pending);
out:
    /* The loader's producer thread reads the labels and conditions until it
     * is closed: release first. */
    release(&r);
    free(facts.conditions);
    scfm_free_strings(facts.condition_names, facts.n_conditions);
    scfm_free_strings(facts.gene_ids, facts.gene_ids ? facts.n_genes : 0);
    validation_free(&val);
    return st;
}
