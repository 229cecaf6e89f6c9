/* The masked-gene training loop on one process. A step takes `accumulate`
 * masked micro-batches of whole cells (at most micro_batch_tokens tokens
 * each, at least one cell) from the loader and averages the loss over every
 * masked token of the step. Each micro-batch carries the epoch its cells were
 * drawn in, which keys their dropout; an epoch may end inside a step. */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/data.h"
#include "scfm/model.h"
#include "scfm/train.h"

/* run_dir/step_NNNNNNN/{model.safetensors,config.cfg}; only the newest
 * `keep` step directories stay. Resumable checkpoints (optimiser state, the
 * data position from scfm_loader_get_position) are the distributed issue's
 * work. */
static scfm_status save_step(const scfm_config *cfg, const char *run_dir, const scfm_model *model,
                             int64_t step, scfm_error *err) {
    char name[32], dir[SCFM_PATH_MAX], path[SCFM_PATH_MAX];
    snprintf(name, sizeof name, "step_%07lld", (long long)step);
    scfm_status st = scfm_path_join(dir, sizeof dir, run_dir, name, err);
    if (st == SCFM_OK) st = scfm_make_dirs(dir, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, dir, "model.safetensors", err);
    if (st == SCFM_OK) st = scfm_model_save(model, path, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_write(cfg, path, err);
    if (st != SCFM_OK) return st;
    int64_t old = step - (int64_t)cfg->checkpoint.keep * cfg->checkpoint.every;
    if (cfg->checkpoint.every > 0 && old > 0) {
        snprintf(name, sizeof name, "step_%07lld", (long long)old);
        static const char *files[] = {"model.safetensors", "config.cfg"};
        if (scfm_path_join(dir, sizeof dir, run_dir, name, err) != SCFM_OK) return err->status;
        for (int i = 0; i < 2; i++)
            if (scfm_path_join(path, sizeof path, dir, files[i], err) == SCFM_OK) remove(path);
        remove(dir);
    }
    return SCFM_OK;
}

static void write_metrics(FILE *f, const scfm_train_progress *p) {
    fprintf(f,
            "{\"step\": %lld, \"epoch\": %d, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
            "\"tokens\": %lld, \"targets\": %lld, \"tokens_per_s\": %.1f, \"elapsed_s\": %.3f, "
            "\"compute_s\": %.4f, \"data_s\": %.4f}\n",
            (long long)p->step, p->epoch, p->loss, p->lr, p->grad_norm, (long long)p->tokens,
            (long long)p->targets, p->tokens_per_s, p->elapsed_s, p->compute_s, p->data_s);
    fflush(f);
}

typedef struct {
    scfm_loader *loader;
    scfm_model *model;
    float *adam_m, *adam_v;
    scfm_batch *batches;
    uint32_t *epochs;  /* of each micro-batch */
    int n_batches;
    FILE *metrics;
} train_resources;

static void release(train_resources *r) {
    if (r->metrics) fclose(r->metrics);
    scfm_loader_close(r->loader);
    for (int i = 0; i < r->n_batches; i++) scfm_batch_free(&r->batches[i]);
    free(r->batches);
    free(r->epochs);
    scfm_free(r->adam_m);
    scfm_free(r->adam_v);
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

/* Refuses shards made with another vocabulary than data.vocab, and tells
 * where its genes start (after <pad>, <mask> and any <cls>/<eos>), so
 * masking never picks a special token. Runs before the loader's thread owns
 * HDF5. */
static scfm_status check_vocabulary(const scfm_config *cfg, int *first_gene, scfm_error *err) {
    scfm_vocab *v = NULL;
    scfm_shards *s = NULL;
    scfm_status st = scfm_vocab_read(cfg->data.vocab, &v, err);
    if (st == SCFM_OK) st = scfm_shards_open(cfg->data.shards, &s, err);
    if (st == SCFM_OK) st = scfm_shards_expect_vocab(s, v, err);
    if (st == SCFM_OK) *first_gene = v->n_special;
    scfm_shards_close(s);
    scfm_vocab_free(v);
    return st;
}

scfm_status scfm_train(const scfm_config *cfg, scfm_progress_fn on_step, void *user, scfm_error *err) {
    const scfm_train_config *tc = &cfg->train;
    train_resources r = {0};
    scfm_status st = SCFM_OK;
    if (cfg->data.shards[0] == '\0')
        return scfm_fail(err, SCFM_ERR_CONFIG, "%s: data.shards is not set", cfg->source[0] ? cfg->source : "config");
    if (tc->threads > 0) omp_set_num_threads(tc->threads);

    int first_gene = SCFM_TOKEN_MASK + 1;
    if (cfg->data.vocab[0] && (st = check_vocabulary(cfg, &first_gene, err)) != SCFM_OK) return st;
    /* Random replacement tokens come from the model's vocabulary (0: the
     * shards', which the model then takes too). */
    scfm_loader_config lc = {
        .seed = (uint64_t)tc->seed,
        .rank = 0,
        .world = 1,
        .max_len = cfg->model.max_len,
        .micro_batch_tokens = tc->micro_batch_tokens,
        .mask = {tc->mask_prob, tc->mask_token_prob, tc->random_token_prob, first_gene, cfg->model.vocab_size},
    };
    if ((st = scfm_loader_open(cfg->data.shards, &lc, NULL, &r.loader, err)) != SCFM_OK) goto out;
    scfm_model_config mc = cfg->model;
    int data_vocab = scfm_loader_vocab_size(r.loader);
    if (mc.vocab_size == 0) mc.vocab_size = data_vocab;
    if (mc.vocab_size < data_vocab) {
        st = scfm_fail(err, SCFM_ERR_CONFIG, "%s: model.vocab_size (%d) is smaller than the shards' vocabulary (%d)",
                       cfg->source, mc.vocab_size, data_vocab);
        goto out;
    }
    if ((st = scfm_model_create(&mc, &r.model, err)) != SCFM_OK) goto out;
    scfm_model_init_weights(r.model, (uint64_t)tc->seed);
    size_t n_params = scfm_model_num_params(r.model);
    r.adam_m = scfm_alloc(sizeof(float) * n_params);
    r.adam_v = scfm_alloc(sizeof(float) * n_params);
    r.n_batches = tc->accumulate;
    r.batches = calloc((size_t)tc->accumulate, sizeof(scfm_batch));
    r.epochs = calloc((size_t)tc->accumulate, sizeof(uint32_t));
    if (!r.adam_m || !r.adam_v || !r.batches || !r.epochs) {
        st = scfm_fail(err, SCFM_ERR_NOMEM, "out of memory for optimiser state of %zu parameters", n_params);
        goto out;
    }
    char run_dir[SCFM_PATH_MAX];
    scfm_config resolved = *cfg;
    resolved.model.vocab_size = mc.vocab_size;
    if ((st = prepare_run_dir(&resolved, run_dir, sizeof run_dir, &r.metrics, err)) != SCFM_OK) goto out;

    const double start = scfm_now();
    int64_t total_tokens = 0;
    for (int64_t step = 0; step < tc->steps; step++) {
        /* data_s is the time spent waiting for the loader, not its work. */
        int64_t step_targets = 0, step_tokens = 0;
        double data_s = 0.0;
        for (int a = 0; a < r.n_batches; a++) {
            double t0 = scfm_now();
            if ((st = scfm_loader_next(r.loader, &r.batches[a], &r.epochs[a], err)) != SCFM_OK) goto out;
            data_s += scfm_now() - t0;
            step_targets += r.batches[a].n_targets;
            step_tokens += r.batches[a].n_tokens;
        }
        double t1 = scfm_now();
        double loss_sum = 0.0;
        scfm_model_zero_grad(r.model);
        for (int a = 0; a < r.n_batches && step_targets > 0; a++) {
            if (r.batches[a].n_targets == 0) continue;
            double part = 0.0;
            st = scfm_model_forward(r.model, &r.batches[a], 1, (uint64_t)tc->seed, r.epochs[a], &part, err);
            if (st != SCFM_OK) goto out;
            scfm_model_backward(r.model, &r.batches[a], 1.0f / (float)step_targets);
            loss_sum += part;
        }
        double norm = scfm_grad_norm(scfm_model_grads(r.model), n_params);
        if (!isfinite(norm)) {
            st = scfm_fail(err, SCFM_ERR_NUMERIC, "step %lld: the gradient norm is not finite", (long long)step + 1);
            goto out;
        }
        if (tc->clip_norm > 0.0 && norm > tc->clip_norm) {
            float s = (float)(tc->clip_norm / norm);
            float *g = scfm_model_grads(r.model);
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n_params; i++) g[i] *= s;
        }
        double lr = scfm_lr_at(tc, step);
        if (step_targets > 0) scfm_adamw_step(r.model, r.adam_m, r.adam_v, step + 1, lr, tc);
        double t2 = scfm_now();
        total_tokens += step_tokens;
        scfm_train_progress p = {0};
        p.step = step + 1;
        p.steps = tc->steps;
        p.loss = step_targets > 0 ? loss_sum / (double)step_targets : 0.0;
        p.lr = lr;
        p.grad_norm = norm;
        p.tokens = step_tokens;
        p.targets = step_targets;
        p.elapsed_s = t2 - start;
        p.tokens_per_s = (double)total_tokens / p.elapsed_s;
        p.eta_s = p.elapsed_s / (double)p.step * (double)(tc->steps - p.step);
        p.compute_s = t2 - t1;
        p.data_s = data_s;
        p.epoch = (int)r.epochs[r.n_batches - 1];
        write_metrics(r.metrics, &p);
        if (on_step) on_step(&p, user);
        int due = cfg->checkpoint.every > 0 && (step + 1) % cfg->checkpoint.every == 0;
        if (due || step + 1 == tc->steps)
            if ((st = save_step(&resolved, run_dir, r.model, step + 1, err)) != SCFM_OK) goto out;
    }
out:
    release(&r);
    return st;
}
