/* The scfm command line: parses arguments, calls the library, prints what
 * it returns. Exit codes: 0 success, 1 runtime failure, 2 usage or
 * configuration error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/config.h"
#include "scfm/core.h"
#include "scfm/train.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static const char *main_help =
    "usage: scfm <command> [options]\n"
    "\n"
    "Pretrain single-cell foundation models (BERT over gene tokens) in C.\n"
    "\n"
    "commands:\n"
    "  train CONFIG [--set section.key=value]...   masked-gene pretraining from token shards\n"
    "\n"
    "options:\n"
    "  -h, --help      this text; `scfm <command> --help` describes a command\n"
    "  --version       print the version\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.\n"
    "docs: docs/config.md (every configuration key), docs/architecture.md.\n";

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

static void format_duration(double s, char *out, size_t cap) {
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

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
    format_duration(p->eta_s, eta, sizeof eta);
    format_duration(p->elapsed_s, elapsed, sizeof elapsed);
    fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.3e | grad %.3f | %.1fk tok/s | %s elapsed | ETA %s\n",
            (long long)p->step, (long long)p->steps, p->loss, p->lr, p->grad_norm, p->tokens_per_s / 1000.0,
            elapsed, eta);
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

static int usage_error(const char *help, const char *fmt, const char *arg) {
    fprintf(stderr, "scfm: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", help);
    return EXIT_USAGE;
}

static int exit_code(const scfm_error *err) {
    return err->status == SCFM_ERR_CONFIG || err->status == SCFM_ERR_ARG ? EXIT_USAGE : EXIT_RUNTIME;
}

static int cmd_train(int argc, char **argv) {
    if (wants_help(argc, argv)) {
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
                return usage_error(train_help, "%s needs section.key=value", "--set");
            }
            overrides[n_overrides++] = argv[++i];
        } else if (!strncmp(argv[i], "--set=", 6)) {
            overrides[n_overrides++] = argv[i] + 6;
        } else if (!strcmp(argv[i], "--quiet")) {
            quiet = 1;
        } else if (argv[i][0] == '-' || path) {
            free(overrides);
            return usage_error(train_help, "train: unexpected argument '%s'", argv[i]);
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        free(overrides);
        return usage_error(train_help, "%s", "train: a CONFIG file is required");
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
    if (st != SCFM_OK) {
        fprintf(stderr, "scfm: %s\n", err.message);
        return exit_code(&err);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(main_help, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("scfm %s\n", SCFM_VERSION_STRING);
        return 0;
    }
    if (!strcmp(cmd, "train")) return cmd_train(argc - 2, argv + 2);
    return usage_error(main_help, "unknown command '%s'", cmd);
}
