/* scfm train: masked-gene pretraining from a configuration file. */
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
    "Pretrains a BERT encoder with masked gene-identity prediction on the token\n"
    "shards named by data.shards (a directory of shard_*.h5 files), data-parallel\n"
    "over the MPI ranks it is started on: each rank streams its own cells and holds a\n"
    "replica; gradients are summed over ranks while backward runs.\n"
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
    "                  tokens, targets (global), tokens_per_s, elapsed_s, and the step's\n"
    "                  time split: compute_s, data_s (waiting for data), comm_s (waiting\n"
    "                  in collectives), reduce_wait_s (waiting for the gradient reduction\n"
    "                  after backward), checkpoint_s; ranks\n"
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
    fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.3e | grad %.3f | %.1fk tok/s | %s elapsed | ETA %s\n",
            (long long)p->step, (long long)p->steps, p->loss, p->lr, p->grad_norm, p->tokens_per_s / 1000.0,
            elapsed, eta);
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

int scfm_cmd_train(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(train_help, stdout);
        return 0;
    }
    const char *path = NULL;
    const char **overrides = calloc((size_t)argc + 1, sizeof(char *));
    int n_overrides = 0, quiet = 0, resume = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--set")) {
            if (i + 1 >= argc) {
                free(overrides);
                return scfm_cli_usage_error(train_help, "%s needs section.key=value", "--set");
            }
            overrides[n_overrides++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            overrides[n_overrides++] = argv[i] + 6;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (!strcmp(argv[i], "--resume")) {
            resume = 1;
        } else if (argv[i][0] == '-' || path) {
            free(overrides);
            return scfm_cli_usage_error(train_help, "train: unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        free(overrides);
        return scfm_cli_usage_error(train_help, "%s", "train: a CONFIG file is required");
    }
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) return scfm_cli_fail(&err);
    const int rank = scfm_comm_rank(comm);
    scfm_config cfg;
    scfm_status st = scfm_config_load(&cfg, path, overrides, n_overrides, &err);
    free(overrides);
    if (st == SCFM_OK) {
        progress_printer pp = {cfg.train.log_every_seconds, 0.0, quiet || rank != 0};
        if (!pp.quiet)
            fprintf(stderr, "scfm train: %s -> %s/%s on %d rank(s)%s\n", path, cfg.checkpoint.dir, cfg.checkpoint.run,
                    scfm_comm_size(comm), resume ? ", resuming" : "");
        /* Slurm sends SIGTERM (or the --signal of sbatch, e.g. USR1) before it
         * preempts: finish the step, checkpoint, and exit with code 3. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = request_stop;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        scfm_train_options opt = {comm, resume, &stop_requested, print_progress, print_notice, &pp};
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
