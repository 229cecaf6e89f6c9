/* scfm train and scfm finetune: masked-gene pretraining, and cell
 * classification from a pretrained checkpoint, from a configuration file. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/config.h"
#include "scfm/dist.h"
#include "scfm/train.h"

static const char *train_help =
    "usage: [mpirun -np N | srun] scfm train CONFIG [--set section.key=value]... [--resume] [--quiet]\n"
    "\n"
    "Pretrains a BERT encoder on the token shards named by data.shards (a directory\n"
    "of shard_*.h5 files) with the objectives the objective section weighs: masked\n"
    "gene identities (Geneformer), masked expression values and MVC (scGPT, on bin\n"
    "shards), a contrastive loss between two views of each cell (docs/objectives.md);\n"
    "or, with model.encoder \"mlp\" or \"linear\", a count encoder (scVI-, scMAE-,\n"
    "CLEAR- or GLM-PCA-like) on the count shards of `scfm tokenize --mode counts`, in\n"
    "micro-batches of train.micro_batch_cells cells (docs/encoders.md);\n"
    "data-parallel over the MPI ranks it is started on: each rank streams its own\n"
    "cells and holds a replica; gradients are summed over ranks while backward runs.\n"
    "With --set train.backend=cuda the transformer's masked-gene training runs on\n"
    "the GPUs, one per rank (docs/cuda.md).\n"
    "\n"
    "  CONFIG                 a libconfig file (see configs/ and docs/config.md)\n"
    "  --set section.key=V    override one key, e.g. --set train.steps=500; repeatable\n"
    "  --resume               continue from the newest good checkpoint of the run\n"
    "                         (checkpoint.dir/checkpoint.run); the losses after it equal an\n"
    "                         uninterrupted run's at the same number of ranks\n"
    "  --quiet                no progress lines (metrics are still written)\n"
    "  -h, --help             this text\n"
    "\n"
    "Every key is validated: an unknown key, a wrong type or an out-of-range value\n"
    "stops with FILE:LINE and the key, exit code 2.\n"
    "\n"
    "Outputs, in checkpoint.dir/checkpoint.run/ (the run name defaults to the\n"
    "config file's name), written by rank 0:\n"
    "  config.cfg      the resolved configuration\n"
    "  metrics.jsonl   one JSON line per step: step, epoch, loss, lr, grad_norm,\n"
    "                  tokens, targets (global), tokens_per_s, cells, cells_per_s,\n"
    "                  elapsed_s, and the step's time split: compute_s, data_s\n"
    "                  (waiting for data), comm_s (waiting in collectives),\n"
    "                  reduce_wait_s (waiting for the gradient reduction after\n"
    "                  backward), checkpoint_s; ranks\n"
    "  step_NNNNNNN/   a checkpoint every checkpoint.every steps and at the end: weights\n"
    "                  (model.safetensors, Hugging Face BertForMaskedLM names), AdamW\n"
    "                  moments and data positions (optimizer.safetensors), config.cfg and\n"
    "                  a MANIFEST of checksums; the newest checkpoint.keep are kept and\n"
    "                  `latest` names the newest\n"
    "\n"
    "SIGTERM or SIGUSR1 (Slurm preemption): the run finishes its step, writes a\n"
    "checkpoint and exits with code 3; start it again with --resume.\n"
    "\n"
    "Progress: every train.log_every_seconds, a line with step, loss, lr, gradient\n"
    "norm, global tokens/s and ETA on standard error (rank 0).\n"
    "\n"
    "Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error,\n"
    "3 stopped by a signal after writing a checkpoint.\n";

static const char *finetune_help =
    "usage: [mpirun -np N | srun] scfm finetune CONFIG --from CHECKPOINT [--label COLUMN]\n"
    "                             [--freeze K] [--set section.key=value]... [--resume] [--quiet]\n"
    "\n"
    "Fine-tunes a pretrained encoder to classify cells by a categorical obs column of\n"
    "the token shards (data.shards; `scfm tokenize` keeps the inputs' categorical obs\n"
    "columns). A linear head (classifier.weight/bias, one output per category) reads\n"
    "the cell embedding (model.pool: mean of the gene tokens, or <cls>); the loss is\n"
    "the cross-entropy over labelled cells. Distributed, checkpointed, resumable and\n"
    "stoppable like `scfm train`.\n"
    "\n"
    "  CONFIG             data, train, checkpoint and finetune sections (configs/finetune.cfg);\n"
    "                     the model section comes from the checkpoint (--set model.KEY=V\n"
    "                     changes it, e.g. model.dropout); data.vocab defaults to the\n"
    "                     checkpoint's vocabulary, and shards made with another are refused\n"
    "  --from CHECKPOINT  a checkpoint directory, a run directory (its newest checkpoint), or one\n"
    "                     made by `scfm import`; its classifier, if any, is replaced\n"
    "  --label COLUMN     the obs column to predict (finetune.label, default cell_type)\n"
    "  --freeze K         keep the embeddings and the first K layers fixed (finetune.freeze_layers)\n"
    "  --set, --resume, --quiet, -h   as for `scfm train`\n"
    "\n"
    "A seeded finetune.validation_fraction of the labelled cells (train.seed) is held\n"
    "out: every time all ranks enter a new epoch, and at the end, their accuracy and\n"
    "macro-F1 are printed and written to metrics.jsonl (val_accuracy, val_macro_f1).\n"
    "Checkpoints also hold labels.tsv, the class names in head order, for\n"
    "`scfm predict`.\n"
    "\n"
    "Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error,\n"
    "3 stopped by a signal after writing a checkpoint.\n";

typedef struct {
    double every, last;
    int quiet;
} progress_printer;

static void print_progress(const scfm_train_progress *p, void *user) {
    progress_printer *pp = user;
    if (pp->quiet) return;
    double now = scfm_now();
    if (p->step != 1 && p->step != p->steps && now - pp->last < pp->every) return;
    pp->last = now;
    char eta[32], elapsed[32];
    scfm_cli_format_duration(p->eta_s, eta, sizeof eta);
    scfm_cli_format_duration(p->elapsed_s, elapsed, sizeof elapsed);
    fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.3e | grad %.3f | %.1fk tok/s | %.0f cells/s | %s elapsed | "
            "ETA %s\n", (long long)p->step, (long long)p->steps, p->loss, p->lr, p->grad_norm,
            p->tokens_per_s / 1000.0, p->cells_per_s, elapsed, eta);
}

static void print_step(const scfm_train_progress *p, void *user) {
    print_progress(p, user);
    const progress_printer *pp = user;
    if (p->validated && !pp->quiet)
        fprintf(stderr, "step %lld: validation %lld cells | accuracy %.4f | macro-F1 %.4f\n", (long long)p->step,
                (long long)p->val_cells, p->val_accuracy, p->val_macro_f1);
}

static volatile sig_atomic_t stop_requested;

static void request_stop(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

static void print_notice(const char *message, void *user) {
    const progress_printer *pp = user;
    if (!pp->quiet) fprintf(stderr, "scfm train: %s\n", message);
}

/* The fine-tuning configuration: CONFIG with the checkpoint's model section
 * (the model.* overrides applied to it) and, unless CONFIG names one, the
 * checkpoint's vocabulary. */
static scfm_status finetune_config(scfm_config *cfg, const char *from, char *step_dir, size_t cap,
                                   const char *const *overrides, int n_overrides, scfm_error *err) {
    const char **model_overrides = calloc((size_t)n_overrides + 1, sizeof(char *));
    if (!model_overrides) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    int n = 0;
    for (int i = 0; i < n_overrides; i++)
        if (!strncmp(overrides[i], "model.", 6)) model_overrides[n++] = overrides[i];
    char path[SCFM_PATH_MAX];
    scfm_config pretrained;
    scfm_status st = scfm_checkpoint_resolve(from, step_dir, cap, err);
    if (st == SCFM_OK) st = scfm_path_join(path, sizeof path, step_dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_load(&pretrained, path, model_overrides, n, err);
    free(model_overrides);
    if (st != SCFM_OK) return st;
    cfg->model = pretrained.model;
    cfg->model.num_labels = 0;
    if (cfg->finetune.freeze_layers > cfg->model.layers)
        return scfm_fail(err, SCFM_ERR_CONFIG, "finetune.freeze_layers (%d) must be <= the checkpoint's model.layers (%d)",
                         cfg->finetune.freeze_layers, cfg->model.layers);
    if (!cfg->data.vocab[0]) snprintf(cfg->data.vocab, sizeof cfg->data.vocab, "%s", step_dir);
    return SCFM_OK;
}

static int run(int argc, char **argv, int finetune) {
    const char *help = finetune ? finetune_help : train_help, *command = finetune ? "finetune" : "train";
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(help, stdout);
        return 0;
    }
    const char *path = NULL, *from = NULL;
    const char **overrides = calloc((size_t)argc + 3, sizeof(char *));
    int n_overrides = 0, quiet = 0, resume = 0;
    char label_override[300], freeze_override[64], message[128];
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int takes_value = !strcmp(a, "--set") || (finetune && (!strcmp(a, "--from") || !strcmp(a, "--label") ||
                                                               !strcmp(a, "--freeze")));
        if (takes_value && i + 1 >= argc) {
            free(overrides);
            snprintf(message, sizeof message, "%s: %%s needs a value", command);
            return scfm_cli_usage_error(help, message, a);
        }
        if (!strcmp(a, "--set")) {
            overrides[n_overrides++] = argv[++i];
        } else if (!strncmp(a, "--set=", 6)) {
            overrides[n_overrides++] = a + 6;
        } else if (finetune && !strcmp(a, "--from")) {
            from = argv[++i];
        } else if (finetune && !strcmp(a, "--label")) {
            snprintf(label_override, sizeof label_override, "finetune.label=%s", argv[++i]);
            overrides[n_overrides++] = label_override;
        } else if (finetune && !strcmp(a, "--freeze")) {
            snprintf(freeze_override, sizeof freeze_override, "finetune.freeze_layers=%.40s", argv[++i]);
            overrides[n_overrides++] = freeze_override;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--resume")) {
            resume = 1;
        } else if (a[0] == '-' || path) {
            free(overrides);
            snprintf(message, sizeof message, "%s: unexpected argument '%%s'", command);
            return scfm_cli_usage_error(help, message, a);
        } else {
            path = a;
        }
    }
    if (!path || (finetune && !from)) {
        free(overrides);
        return scfm_cli_usage_error(help, "%s", finetune ? "finetune: CONFIG and --from CHECKPOINT are required"
                                                         : "train: a CONFIG file is required");
    }
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) return scfm_cli_fail(&err);
    const int rank = scfm_comm_rank(comm);
    scfm_config cfg;
    char step_dir[SCFM_PATH_MAX] = "";
    /* model.* overrides go to the checkpoint's model section when fine-tuning */
    scfm_status st = scfm_config_load(&cfg, path, overrides, n_overrides, &err);
    if (st == SCFM_OK && finetune)
        st = finetune_config(&cfg, from, step_dir, sizeof step_dir, overrides, n_overrides, &err);
    free(overrides);
    if (st == SCFM_OK) {
        progress_printer pp = {cfg.train.log_every_seconds, 0.0, quiet || rank != 0};
        if (!pp.quiet)
            fprintf(stderr, "scfm %s: %s%s%s -> %s/%s on %d rank(s)%s\n", command, path, finetune ? " from " : "",
                    finetune ? step_dir : "", cfg.checkpoint.dir, cfg.checkpoint.run, scfm_comm_size(comm),
                    resume ? ", resuming" : "");
        /* Slurm sends SIGTERM (or the --signal of sbatch, e.g. USR1) before it
         * preempts: finish the step, checkpoint, and exit with code 3. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = request_stop;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        scfm_train_options opt = {comm,          resume,     &stop_requested, print_step, print_notice, &pp,
                                  finetune,      finetune ? step_dir : NULL};
        st = scfm_train(&cfg, &opt, &err);
    }
    int code = 0;
    if (st == SCFM_ERR_INTERRUPTED) {
        if (rank == 0) fprintf(stderr, "scfm: %s\n", err.message);
        code = SCFM_EXIT_STOPPED;
    } else if (st != SCFM_OK) {
        code = rank == 0 ? scfm_cli_fail(&err) : scfm_cli_exit_code(&err);
    }
    scfm_comm_finalize(comm);
    return code;
}

int scfm_cmd_train(int argc, char **argv) { return run(argc, argv, 0); }
int scfm_cmd_finetune(int argc, char **argv) { return run(argc, argv, 1); }
