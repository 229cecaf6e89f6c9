/* scfm train: masked-gene pretraining from a configuration file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/config.h"
#include "scfm/train.h"

static const char *train_help =
    "usage: scfm train CONFIG [--set section.key=value]... [--quiet]\n"
    "\n"
    "Pretrains a BERT encoder with masked gene-identity prediction on the token\n"
    "shards named by data.shards (a directory of shard_*.h5 files).\n"
    "\n"
    "  CONFIG                 a libconfig file (see configs/ and docs/config.md)\n"
    "  --set section.key=V    override one key, e.g. --set train.steps=500; repeatable\n"
    "  --quiet                no progress lines (metrics are still written)\n"
    "  -h, --help             this text\n"
    "\n"
    "Every key is validated: an unknown key, a wrong type or an out-of-range value\n"
    "stops with FILE:LINE and the key, exit code 2.\n"
    "\n"
    "Outputs, in checkpoint.dir/checkpoint.run/ (the run name defaults to the\n"
    "config file's name):\n"
    "  config.cfg      the resolved configuration\n"
    "  metrics.jsonl   one JSON line per step: step, epoch, loss, lr, grad_norm,\n"
    "                  tokens, targets, tokens_per_s, elapsed_s, compute_s, data_s\n"
    "  step_NNNNNNN/   model.safetensors (weights under the Hugging Face BertForMaskedLM\n"
    "                  names) and config.cfg, every checkpoint.every steps and at the\n"
    "                  end; the newest checkpoint.keep are kept\n"
    "\n"
    "Progress: every train.log_every_seconds, a line with step, loss, lr, gradient\n"
    "norm, tokens/s and ETA on standard error.\n";

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

int scfm_cmd_train(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(train_help, stdout);
        return 0;
    }
    const char *path = NULL;
    const char **overrides = calloc((size_t)argc + 1, sizeof(char *));
    int n_overrides = 0, quiet = 0;
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
    scfm_config cfg;
    scfm_error err = {0};
    scfm_status st = scfm_config_load(&cfg, path, overrides, n_overrides, &err);
    free(overrides);
    if (st == SCFM_OK) {
        progress_printer pp = {cfg.train.log_every_seconds, 0.0, quiet};
        if (!quiet)
            fprintf(stderr, "scfm train: %s -> %s/%s\n", path, cfg.checkpoint.dir, cfg.checkpoint.run);
        st = scfm_train(&cfg, print_progress, &pp, &err);
    }
    return st == SCFM_OK ? 0 : scfm_cli_fail(&err);
}

