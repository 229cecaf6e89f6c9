/* scfm simulate: a synthetic atlas with known truth, as an .h5ad. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/data.h"

#define PROGRESS_EVERY_S 5.0

static const char *simulate_help =
    "usage: scfm simulate -o PATH [--cells N] [--genes G] [--types K] [--batches B]\n"
    "                     [--seed S] [--force] [--quiet]\n"
    "\n"
    "Writes a synthetic single-cell atlas with known truth as an AnnData .h5ad\n"
    "(read by anndata and scanpy): negative-binomial counts from K cell-type gene\n"
    "programmes (shared baseline plus up-regulated marker genes), B batches with\n"
    "gene-wise effects and library-size shifts, log-normal library sizes around\n"
    "5,000 counts and dropout. The model is in docs/simulate.md.\n"
    "\n"
    "  -o, --output PATH   the .h5ad to write (required)\n"
    "  --cells N           cells, 1..10000000000 (default 10000)\n"
    "  --genes G           genes, 1..100000 (default 2000)\n"
    "  --types K           cell types, 1..1000 (default 8)\n"
    "  --batches B         batches, 1..1000 (default 2)\n"
    "  --seed S            random seed, 0..18446744073709551615 (default 0); the same\n"
    "                      seed and sizes give the same file on any thread count\n"
    "  --force             replace PATH if it exists (otherwise an error)\n"
    "  --quiet             no progress lines\n"
    "  -h, --help          this text\n"
    "\n"
    "The file holds X (counts, CSR float32), obs cell_type (type_0..) and batch\n"
    "(batch_0..) as categoricals, obs names cell_0.., var index ENSG00000000000..,\n"
    "and the truth: varm type_fold [genes, types] (marker fold, 1 elsewhere) and\n"
    "varm batch_effect [genes, batches]. Cells are generated and written in chunks,\n"
    "so memory stays bounded for any cell count; the file is written as PATH.tmp\n"
    "and renamed when complete.\n"
    "\n"
    "Progress: every few seconds, a line with cells done, cells/s and ETA on\n"
    "standard error.\n";

typedef struct {
    double last;
    int quiet;
} progress_printer;

static void print_progress(const scfm_simulate_progress *p, void *user) {
    progress_printer *pp = user;
    double now = scfm_now();
    if (pp->quiet || p->cells_done == p->cells || now - pp->last < PROGRESS_EVERY_S) return;
    pp->last = now;
    char eta[32], elapsed[32];
    scfm_cli_format_duration(p->eta_s, eta, sizeof eta);
    scfm_cli_format_duration(p->elapsed_s, elapsed, sizeof elapsed);
    fprintf(stderr, "cells %lld/%lld (%.1f%%) | %.0f cells/s | %s elapsed | ETA %s\n", (long long)p->cells_done,
            (long long)p->cells, 100.0 * (double)p->cells_done / (double)p->cells, p->cells_per_s, elapsed,
            eta);
}

/* A decimal integer in [lo, hi]: digits only, no sign, no trailing text. */
static int parse_count(const char *text, unsigned long long lo, unsigned long long hi, unsigned long long *out) {
    if (text[0] < '0' || text[0] > '9') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

typedef struct {
    const char *flag;
    unsigned long long lo, hi;
    unsigned long long value;
} count_option;

int scfm_cmd_simulate(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(simulate_help, stdout);
        return 0;
    }
    scfm_simulate_options o;
    scfm_simulate_defaults(&o);
    count_option counts[] = {
        {"--cells", 1, SCFM_SIMULATE_MAX_CELLS, (unsigned long long)o.cells},
        {"--genes", 1, SCFM_SIMULATE_MAX_GENES, (unsigned long long)o.genes},
        {"--types", 1, SCFM_SIMULATE_MAX_TYPES, (unsigned long long)o.types},
        {"--batches", 1, SCFM_SIMULATE_MAX_BATCHES, (unsigned long long)o.batches},
        {"--seed", 0, UINT64_MAX, o.seed},
    };
    const int n_counts = (int)(sizeof counts / sizeof counts[0]);
    const char *path = NULL;
    int force = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--force")) {
            force = 1;
            continue;
        }
        if (!strcmp(arg, "--quiet")) {
            quiet = 1;
            continue;
        }
        /* "--flag value" or "--flag=value" */
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *value = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : NULL;
        int c = 0;
        while (c < n_counts && (strlen(counts[c].flag) != name_len || strncmp(arg, counts[c].flag, name_len))) c++;
        int is_output = (name_len == 2 && !strncmp(arg, "-o", 2)) || (name_len == 8 && !strncmp(arg, "--output", 8));
        if (c == n_counts && !is_output)
            return scfm_cli_usage_error(simulate_help, "simulate: unexpected argument '%s'", arg);
        if (!value || !*value)
            return scfm_cli_usage_error(simulate_help, "simulate: %s needs a value", arg);
        if (!eq) i++;
        if (is_output) {
            path = value;
        } else if (!parse_count(value, counts[c].lo, counts[c].hi, &counts[c].value)) {
            char message[512];
            snprintf(message, sizeof message, "simulate: %s must be an integer in [%llu, %llu], not '%.200s'",
                     counts[c].flag, counts[c].lo, counts[c].hi, value);
            return scfm_cli_usage_error(simulate_help, "%s", message);
        }
    }
    if (!path) return scfm_cli_usage_error(simulate_help, "%s", "simulate: an output path (-o PATH) is required");
    o.cells = (int64_t)counts[0].value;
    o.genes = (int)counts[1].value;
    o.types = (int)counts[2].value;
    o.batches = (int)counts[3].value;
    o.seed = (uint64_t)counts[4].value;

    if (!quiet)
        fprintf(stderr, "scfm simulate: %lld cells x %d genes, %d types, %d batches, seed %llu -> %s\n",
                (long long)o.cells, o.genes, o.types, o.batches, (unsigned long long)o.seed, path);
    progress_printer pp = {scfm_now(), quiet};
    scfm_error err = {0};
    double start = scfm_now();
    if (scfm_simulate(&o, path, force, print_progress, &pp, &err) != SCFM_OK) return scfm_cli_fail(&err);
    double seconds = scfm_now() - start;
    if (!quiet)
        fprintf(stderr, "scfm simulate: wrote %s in %.1f s (%.0f cells/s)\n", path, seconds,
                seconds > 0 ? (double)o.cells / seconds : 0.0);
    return 0;
}
