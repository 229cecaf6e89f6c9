/* Training throughput of scfm on synthetic cells, with an OpenBLAS sgemm
 * reference measured in the same process.
 *
 *   bench_train CONFIG --cells-per-batch B --cell-len L --vocab V
 *               --steps S --warmup W [--set section.key=value]...
 *               [--sgemm-reps R] [--no-sgemm] [--print-config] [--cuda]
 *
 * Loads CONFIG (scfm_config_load, then the --set overrides), sets
 * model.vocab_size = V and model.max_len >= L, builds B cells of L random gene
 * tokens (ids 2..V-1, fixed seed), masks them once with the configured
 * masking (15%, 80/10/10 by default) and times full training steps:
 * zero grad, forward (training, so the configured dropout is on), backward,
 * global grad norm + clip, AdamW. With objective.contrastive > 0 the cells
 * become their two views (scfm_batch_views), masked when objective.mlm > 0,
 * and each step adds the projection head and InfoNCE over all views (one
 * process: what scfm_contrastive_step computes at one rank); tokens are the
 * views' tokens. With model.value_bins = B > 0 (set it: there are no shards
 * to take it from) every token gets a random bin in [0, B) as its value and
 * objective.value_mask_prob of them are masked (scfm_batch_mask_values); the
 * loss weighs MLM, value and MVC terms by their objective weights over
 * scfm_model_loss_terms, as scfm train does. W untimed warm-up steps, then S timed
 * ones. Prints one line of JSON on stdout. --print-config prints the resolved
 * model/train settings as JSON and exits (train_vs_pytorch.py and
 * pytorch_train.py use it so that PyTorch runs the very same configuration).
 *
 * --cuda runs the same steps on the CUDA backend (train.backend "cuda",
 * through the trainer interface scfm train uses: masked genes only), with
 * the device synchronised at the end of forward, backward and the update
 * so that the parts are timed; no sgemm reference (the PyTorch side
 * measures the GPU's matrix-product rate).
 *
 * Threads: OMP_NUM_THREADS from the environment (2 when unset). OpenBLAS
 * reads OPENBLAS_CORETYPE when it loads; the value is reported. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/vmath.h"
#include "bench_util.h"
#include "scfm/config.h"
#include "scfm/data.h"
#include "scfm/model.h"
#include "scfm/train.h"
#include "train/device.h"

#define MAX_SETS 64

typedef struct {
    const char *config;
    int cells, cell_len, vocab, steps, warmup, sgemm_reps;
    int no_sgemm, print_config, cuda;
    const char *sets[MAX_SETS];
    int n_sets;
} options;

static void usage(FILE *out) {
    fputs("usage: bench_train CONFIG --cells-per-batch B --cell-len L --vocab V --steps S "
          "--warmup W\n"
          "                   [--set section.key=value]... [--sgemm-reps R] [--no-sgemm] "
          "[--print-config] [--cuda]\n",
          out);
}

static int parse_int(const char *flag, const char *s, int lo, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > 1000000000L) {
        fprintf(stderr, "bench_train: %s expects an integer >= %d, got '%s'\n", flag, lo, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->cells = 2;
    o->cell_len = 2048;
    o->vocab = 25426;
    o->steps = 5;
    o->warmup = 1;
    o->sgemm_reps = 5;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--no-sgemm") == 0) {
            o->no_sgemm = 1;
            continue;
        } else if (strcmp(a, "--print-config") == 0) {
            o->print_config = 1;
            continue;
        } else if (strcmp(a, "--cuda") == 0) {
            o->cuda = o->no_sgemm = 1;
            continue;
        } else if (a[0] == '-' && a[1] == '-') {
            if (!v) {
                fprintf(stderr, "bench_train: %s needs a value\n", a);
                return 0;
            }
            if (strcmp(a, "--cells-per-batch") == 0)
                ok = parse_int(a, v, 1, &o->cells);
            else if (strcmp(a, "--cell-len") == 0)
                ok = parse_int(a, v, 1, &o->cell_len);
            else if (strcmp(a, "--vocab") == 0)
                ok = parse_int(a, v, 3, &o->vocab);
            else if (strcmp(a, "--steps") == 0)
                ok = parse_int(a, v, 1, &o->steps);
            else if (strcmp(a, "--warmup") == 0)
                ok = parse_int(a, v, 0, &o->warmup);
            else if (strcmp(a, "--sgemm-reps") == 0)
                ok = parse_int(a, v, 1, &o->sgemm_reps);
            else if (strcmp(a, "--set") == 0) {
                if (o->n_sets == MAX_SETS) {
                    fprintf(stderr, "bench_train: at most %d --set\n", MAX_SETS);
                    return 0;
                }
                o->sets[o->n_sets++] = v;
            } else {
                fprintf(stderr, "bench_train: unknown option %s\n", a);
                return 0;
            }
            if (!ok) return 0;
            i++;
        } else if (!o->config) {
            o->config = a;
        } else {
            fprintf(stderr, "bench_train: unexpected argument %s\n", a);
            return 0;
        }
    }
    if (!o->config) {
        usage(stderr);
        return 0;
    }
    return 1;
}

/* SplitMix64: the library's mixer over a Weyl sequence. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t r = scfm_mix64(*state);
    *state += 0x9E3779B97F4A7C15ull;
    return r;
}

typedef struct {
    int m, n, k;
    double gflops;
} sgemm_result;

/* C[M,N] = A[M,K] B[N,K]^T, the layout of scfm_linear_forward; median
 * GFLOP/s of reps calls after one untimed call. */
static int sgemm_reference(int M, int N, int K, int reps, sgemm_result *r) {
    float *A = scfm_alloc(sizeof(float) * (size_t)M * K);
    float *B = scfm_alloc(sizeof(float) * (size_t)N * K);
    float *C = scfm_alloc(sizeof(float) * (size_t)M * N);
    double *t = malloc(sizeof(double) * (size_t)reps);
    int ok = A && B && C && t;
    if (ok) {
        uint64_t s = 7;
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f - 0.5f;
        for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(splitmix64(&s) >> 40) * 0x1p-24f - 0.5f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N);
        for (int i = 0; i < reps; i++) {
            double t0 = scfm_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C,
                        N);
            t[i] = scfm_now() - t0;
        }
        r->m = M;
        r->n = N;
        r->k = K;
        r->gflops = 2.0 * M * N * K / bench_median(t, reps) / 1e9;
    }
    scfm_free(A);
    scfm_free(B);
    scfm_free(C);
    free(t);
    return ok;
}

static void print_json_string(const char *s) {
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_array(const char *name, const double *v, int n) {
    printf("\"%s\": [", name);
    for (int i = 0; i < n; i++) printf("%s%.6f", i ? ", " : "", v[i]);
    printf("]");
}

static void print_config_json(const scfm_config *cfg, const options *o) {
    const scfm_model_config *m = &cfg->model;
    const scfm_train_config *t = &cfg->train;
    static const char *act[] = {"gelu", "relu"}, *norm[] = {"post", "pre"},
                      *pos[] = {"learned", "none"};
    printf("{\"config\": ");
    print_json_string(o->config);
    printf(", \"vocab_size\": %d, \"max_len\": %d, \"layers\": %d, \"hidden\": %d, \"heads\": %d, "
           "\"ffn\": %d, \"activation\": \"%s\", \"norm\": \"%s\", \"position\": \"%s\", "
           "\"dropout\": %.17g, \"attention_dropout\": %.17g, \"layer_norm_eps\": %.17g, "
           "\"init_std\": %.17g, \"lr\": %.17g, \"beta1\": %.17g, \"beta2\": %.17g, "
           "\"adam_eps\": %.17g, \"weight_decay\": %.17g, \"clip_norm\": %.17g, \"seed\": %lld, "
           "\"mask_prob\": %.17g, \"mask_token_prob\": %.17g, \"random_token_prob\": %.17g, "
           "\"mlm\": %.17g, \"contrastive\": %.17g, \"temperature\": %.17g, \"learn_temperature\": %d, "
           "\"projection_dim\": %d, \"view_fraction\": %.17g, \"value\": %.17g, \"mvc\": %.17g, "
           "\"value_mask_prob\": %.17g, \"value_bins\": %d, \"value_loss\": \"%s\"}\n",
           m->vocab_size, m->max_len, m->layers, m->hidden, m->heads, m->ffn, act[m->activation],
           norm[m->norm], pos[m->position], m->dropout, m->attention_dropout, m->layer_norm_eps,
           m->init_std, t->lr, t->beta1, t->beta2, t->adam_eps, t->weight_decay, t->clip_norm,
           (long long)t->seed, t->mask_prob, t->mask_token_prob, t->random_token_prob, cfg->objective.mlm,
           cfg->objective.contrastive, cfg->objective.temperature, cfg->objective.learn_temperature,
           cfg->objective.projection_dim, cfg->objective.view_fraction, cfg->objective.value, cfg->objective.mvc,
           cfg->objective.value_mask_prob, m->value_bins, m->value_loss == SCFM_VALUE_MSE ? "mse" : "ce");
}

/* Each step's time, split (forward; backward; clipping and AdamW), and its
 * loss, with a line on stderr. */
typedef struct {
    double *step, *forward, *backward, *optimizer, *loss;
    int total, warmup;
    const char *where;
} step_record;

static void record_step(step_record *r, int s, double t0, double t1, double t2, double t3, double loss) {
    r->step[s] = t3 - t0;
    r->forward[s] = t1 - t0;
    r->backward[s] = t2 - t1;
    r->optimizer[s] = t3 - t2;
    r->loss[s] = loss;
    fprintf(stderr, "bench_train: step %d/%d%s%s: %.4f s, loss %.4f\n", s + 1, r->total,
            s < r->warmup ? " (warm-up)" : "", r->where, r->step[s], loss);
}

int main(int argc, char **argv) {
    options o;
    if (!parse_args(argc, argv, &o)) return 2;

    scfm_config cfg;
    scfm_error err;
    scfm_error_clear(&err);
    if (scfm_config_load(&cfg, o.config, o.sets, o.n_sets, &err) != SCFM_OK) {
        fprintf(stderr, "bench_train: %s\n", err.message);
        return 1;
    }
    cfg.model.vocab_size = o.vocab;
    if (cfg.model.max_len < o.cell_len) cfg.model.max_len = o.cell_len;
    if (o.print_config) {
        print_config_json(&cfg, &o);
        return 0;
    }

    /* Threads: OMP_NUM_THREADS, or 2; OpenBLAS is told the same. */
    const char *env_threads = getenv("OMP_NUM_THREADS");
    int threads = env_threads && atoi(env_threads) > 0 ? atoi(env_threads) : 2;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    if (!coretype || !*coretype)
        fprintf(stderr, "bench_train: warning: OPENBLAS_CORETYPE is not set (these machines need "
                        "OPENBLAS_CORETYPE=Haswell)\n");

    /* The batch: B cells of L random genes, masked once. */
    scfm_batch batch;
    scfm_batch_init(&batch);
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)o.cell_len);
    if (!tokens) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    uint64_t rng = 12345;
    const int bins = cfg.model.value_bins;
    for (int c = 0; c < o.cells; c++) {
        for (int i = 0; i < o.cell_len; i++)
            tokens[i] = 2 + (int32_t)(splitmix64(&rng) % (uint64_t)(o.vocab - 2));
        if (scfm_batch_add_cell(&batch, c, tokens, o.cell_len, &err) != SCFM_OK) {
            fprintf(stderr, "bench_train: %s\n", err.message);
            return 1;
        }
        for (int i = 0; bins > 0 && i < o.cell_len; i++)
            batch.values[batch.cell_offsets[c] + i] = (int32_t)(splitmix64(&rng) % (uint64_t)bins);
    }
    free(tokens);
    const scfm_train_config *tc = &cfg.train;
    scfm_mask_config mask = {tc->mask_prob, tc->mask_token_prob, tc->random_token_prob,
                             SCFM_TOKEN_MASK + 1, o.vocab};
    const int contrastive = cfg.objective.contrastive > 0.0;
    if (contrastive) {
        scfm_batch cells = batch;
        scfm_batch_init(&batch);
        scfm_status st = scfm_batch_views(&cells, &batch, cfg.objective.view_fraction, SCFM_TOKEN_MASK + 1,
                                          (uint64_t)tc->seed, 0, &err);
        scfm_batch_free(&cells);
        if (st != SCFM_OK) {
            fprintf(stderr, "bench_train: %s\n", err.message);
            return 1;
        }
        cfg.model.projection_dim = cfg.objective.projection_dim;
        cfg.model.learn_temperature = cfg.objective.learn_temperature;
        cfg.model.temperature = cfg.objective.temperature;
    }
    if (cfg.objective.mlm > 0.0) scfm_batch_mask(&batch, &mask, (uint64_t)tc->seed, 0);
    if (bins > 0)
        scfm_batch_mask_values(&batch, cfg.objective.value_mask_prob, SCFM_TOKEN_MASK + 1, bins, (uint64_t)tc->seed,
                               0);
    if (batch.n_targets + batch.n_value_targets == 0 && (!contrastive || cfg.objective.mlm > 0.0)) {
        fprintf(stderr, "bench_train: the mask selected no token; use longer cells\n");
        return 1;
    }

    scfm_model *model;
    if (scfm_model_create(&cfg.model, &model, &err) != SCFM_OK) {
        fprintf(stderr, "bench_train: %s\n", err.message);
        return 1;
    }
    scfm_model_init_weights(model, (uint64_t)tc->seed);
    scfm_model_set_objective(model, &cfg.objective);
    const size_t n_params = scfm_model_num_params(model);
    float *adam_m = scfm_alloc(sizeof(float) * n_params);
    float *adam_v = scfm_alloc(sizeof(float) * n_params);
    const int total = o.warmup + o.steps;
    double *step_s = malloc(sizeof(double) * (size_t)total);
    double *fwd_s = malloc(sizeof(double) * (size_t)total);
    double *bwd_s = malloc(sizeof(double) * (size_t)total);
    double *opt_s = malloc(sizeof(double) * (size_t)total);
    double *losses = malloc(sizeof(double) * (size_t)total);
    if (!adam_m || !adam_v || !step_s || !fwd_s || !bwd_s || !opt_s || !losses) {
        fprintf(stderr, "bench_train: out of memory for %zu parameters\n", n_params);
        return 1;
    }

    /* --cuda: the model's copy on the device */
    const scfm_device_ops *dev = NULL;
    scfm_device_trainer *gpu = NULL;
    scfm_comm *comm = NULL;
    if (o.cuda) {
        scfm_status st = contrastive || bins > 0
                             ? scfm_fail(&err, SCFM_ERR_CONFIG, "--cuda runs the masked-gene objective only")
                             : scfm_comm_init(&argc, &argv, &comm, &err);
        if (st == SCFM_OK) st = scfm_device_ops_load(&dev, &err);
        if (st == SCFM_OK) st = dev->create(comm, model, &gpu, &err);
        if (st == SCFM_OK) st = dev->upload(gpu, scfm_model_params(model), NULL, NULL, &err);
        if (st != SCFM_OK) {
            fprintf(stderr, "bench_train: %s\n", err.message);
            return 1;
        }
    }
    const int terms = scfm_model_loss_terms(model, &batch);
    const float loss_scale = terms > 0 ? 1.0f / (float)terms : 0.0f;
    const int n_views = batch.n_cells, P = cfg.model.projection_dim;
    const float con_scale = contrastive ? (float)cfg.objective.contrastive / (float)n_views : 0.0f;
    float *sim = contrastive ? malloc(sizeof(float) * (size_t)n_views * n_views) : NULL;
    float *probs = contrastive ? malloc(sizeof(float) * (size_t)n_views * n_views) : NULL;
    float *dz = contrastive ? malloc(sizeof(float) * (size_t)n_views * P) : NULL;
    if (contrastive && (!sim || !probs || !dz)) {
        fprintf(stderr, "bench_train: out of memory\n");
        return 1;
    }
    float *grads = scfm_model_grads(model);
    step_record rec = {step_s, fwd_s, bwd_s, opt_s, losses, total, o.warmup, gpu ? " on the GPU" : ""};
    for (int s = 0; gpu && s < total; s++) {
        double loss_sum = 0.0, norm = 0.0, t0 = scfm_now(), t1 = 0.0, t2 = 0.0;
        scfm_status st = dev->zero_grad(gpu, &err);
        if (st == SCFM_OK) st = dev->forward(gpu, &batch, (uint64_t)tc->seed, (uint32_t)s, loss_scale, &loss_sum, &err);
        t1 = scfm_now();
        if (st == SCFM_OK) st = dev->backward(gpu, &batch, 0, &err);
        if (st == SCFM_OK) st = dev->download(gpu, NULL, NULL, NULL, &err); /* waits for the device */
        t2 = scfm_now();
        if (st == SCFM_OK) st = dev->reduce(gpu, &err);
        if (st == SCFM_OK) st = dev->grad_norm(gpu, &norm, &err);
        const float clip = tc->clip_norm > 0.0 && norm > tc->clip_norm ? (float)(tc->clip_norm / norm) : 1.0f;
        if (st == SCFM_OK) st = dev->update(gpu, clip, s + 1, tc->lr, tc, 0, &err);
        if (st == SCFM_OK) st = dev->download(gpu, NULL, NULL, NULL, &err);
        if (st != SCFM_OK) {
            fprintf(stderr, "bench_train: step %d: %s\n", s, err.message);
            return 1;
        }
        record_step(&rec, s, t0, t1, t2, scfm_now(), terms > 0 ? loss_sum / terms : 0.0);
    }
    for (int s = 0; !gpu && s < total; s++) {
        double t0 = scfm_now();
        scfm_model_zero_grad(model);
        double loss_sum = 0.0;
        if (scfm_model_forward(model, &batch, 1, (uint64_t)tc->seed, (uint32_t)s, &loss_sum, &err) !=
            SCFM_OK) {
            fprintf(stderr, "bench_train: step %d: %s\n", s, err.message);
            return 1;
        }
        double loss = terms > 0 ? loss_sum / terms : 0.0;
        if (contrastive) {
            const float *z;
            if (scfm_model_contrastive_forward(model, &batch, &z, &err) != SCFM_OK) {
                fprintf(stderr, "bench_train: step %d: %s\n", s, err.message);
                return 1;
            }
            const float lt = scfm_model_log_temperature(model);
            loss += con_scale * scfm_infonce_forward(sim, probs, z, n_views, P, 0, n_views, lt);
            memset(dz, 0, sizeof(float) * (size_t)n_views * P);
            scfm_infonce_backward(dz, scfm_model_log_temperature_grad(model), probs, sim, z, n_views, P, 0, n_views,
                                  lt, con_scale);
            scfm_model_contrastive_grad(model, dz);
        }
        double t1 = scfm_now();
        scfm_model_backward(model, &batch, loss_scale);
        double t2 = scfm_now();
        double norm = scfm_grad_norm(grads, n_params);
        if (tc->clip_norm > 0.0 && norm > tc->clip_norm) {
            float scale = (float)(tc->clip_norm / norm);
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < n_params; i++) grads[i] *= scale;
        }
        scfm_adamw_step(model, adam_m, adam_v, s + 1, tc->lr, tc);
        record_step(&rec, s, t0, t1, t2, scfm_now(), loss);
    }

    const double *timed = step_s + o.warmup;
    const double step_med = bench_median(timed, o.steps);
    double step_min = timed[0];
    for (int i = 1; i < o.steps; i++) step_min = timed[i] < step_min ? timed[i] : step_min;
    const double flops = scfm_model_flops(model, &batch, 1);
    const double model_gflops = flops / step_med / 1e9;

    sgemm_result lin = {0}, sq = {0};
    if (!o.no_sgemm) {
        if (!sgemm_reference(batch.n_tokens, cfg.model.hidden, cfg.model.hidden, o.sgemm_reps, &lin) ||
            !sgemm_reference(2048, 2048, 2048, o.sgemm_reps, &sq)) {
            fprintf(stderr, "bench_train: out of memory for the sgemm reference\n");
            return 1;
        }
    }

    printf("{\"impl\": \"scfm\", \"config\": ");
    print_json_string(o.config);
    printf(", \"cells_per_batch\": %d, \"cell_len\": %d, \"vocab\": %d, \"tokens_per_step\": %d, "
           "\"targets_per_step\": %d, \"value_targets_per_step\": %d, \"params\": %zu, \"threads\": %d, \"openblas_coretype\": ",
           o.cells, o.cell_len, o.vocab, batch.n_tokens, batch.n_targets, batch.n_value_targets, n_params, threads);
    print_json_string(coretype ? coretype : "");
    printf(", \"openblas_corename\": ");
    print_json_string(openblas_get_corename());
    printf(", \"openblas_config\": ");
    print_json_string(openblas_get_config());
    printf(", \"warmup\": %d, \"steps\": %d, ", o.warmup, o.steps);
    printf("\"tokens_per_s\": %.3f, \"step_s\": %.6f, \"step_s_min\": %.6f, \"forward_s\": %.6f, "
           "\"backward_s\": %.6f, \"optimizer_s\": %.6f, ",
           batch.n_tokens / step_med, step_med, step_min,
           bench_median(fwd_s + o.warmup, o.steps), bench_median(bwd_s + o.warmup, o.steps),
           bench_median(opt_s + o.warmup, o.steps));
    print_array("step_s_all", timed, o.steps);
    printf(", \"flops_per_step\": %.6e, \"model_gflops\": %.3f, ", flops, model_gflops);
    if (o.no_sgemm)
        printf("\"sgemm\": null, ");
    else
        printf("\"sgemm\": {\"linear\": {\"m\": %d, \"n\": %d, \"k\": %d, \"gflops\": %.3f}, "
               "\"square\": {\"m\": %d, \"n\": %d, \"k\": %d, \"gflops\": %.3f}}, "
               "\"sgemm_gflops\": %.3f, \"fraction_of_sgemm\": %.4f, ",
               lin.m, lin.n, lin.k, lin.gflops, sq.m, sq.n, sq.k, sq.gflops, sq.gflops,
               model_gflops / sq.gflops);
    printf("\"device\": ");
    print_json_string(gpu ? dev->describe(gpu) : "cpu");
    printf(", \"loss_first\": %.6f, \"loss_last\": %.6f}\n", losses[0], losses[total - 1]);
    fflush(stdout);

    free(sim);
    free(probs);
    free(dz);
    free(step_s);
    free(fwd_s);
    free(bwd_s);
    free(opt_s);
    free(losses);
    scfm_free(adam_m);
    scfm_free(adam_v);
    if (gpu) dev->destroy(gpu);
    if (comm) scfm_comm_finalize(comm);
    scfm_model_free(model);
    scfm_batch_free(&batch);
    return 0;
}
