/* scfm tokenize: count matrices to token shards, written by all MPI ranks
 * with parallel HDF5. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/data.h"

#define PROGRESS_EVERY_S 10.0

static const char *tokenize_help =
    "usage: [mpirun -np N] scfm tokenize --mode rank|bin|counts --vocab VOCAB_DIR INPUT... -o SHARD_DIR\n"
    "                                    [options]\n"
    "\n"
    "Turns count matrices into the token shards that scfm train reads. Cells are\n"
    "numbered in input order; each MPI rank encodes an even share of every shard\n"
    "and all ranks write it together, so the shards do not depend on the number\n"
    "of ranks. Within a rank, OMP_NUM_THREADS OpenMP threads encode the cells of\n"
    "each read while the main thread reads the next cells; the shards do not\n"
    "depend on the number of threads either. A rank uses no more threads than\n"
    "the cores it may run on, and Open MPI binds a rank to one core by default:\n"
    "give each rank its cores (mpirun --bind-to none, or --map-by slot:PE=T).\n"
    "\n"
    "  --mode rank         Geneformer's rank-value encoding: count / cell total x\n"
    "                      10,000 / the gene's median (from the vocabulary), genes\n"
    "                      with a count sorted by that value, descending, ties by\n"
    "                      token id, cut to --max-length with <cls>/<eos> if the\n"
    "                      vocabulary has them\n"
    "  --mode bin          scGPT's value binning: each cell's non-zero values in\n"
    "                      --bins quantile bins of that cell (zero is bin 0); gene\n"
    "                      tokens in token order plus a value per token, sampled\n"
    "                      down to --max-length with the seeded generator\n"
    "  --mode counts       the raw counts of the count encoders: per cell, the column\n"
    "                      of each gene of a gene set with a count (ascending), its\n"
    "                      count and the cell's library size (total count over all\n"
    "                      genes of its input); the set is every vocabulary gene, or\n"
    "                      with --hvg the most variable ones. Cells with a library\n"
    "                      but no count in the set are kept (all zeros)\n"
    "  --vocab DIR         the vocabulary from scfm vocab (its hash goes into every\n"
    "                      shard; training checks it)\n"
    "  INPUT               .h5ad, 10x Genomics .h5, Matrix Market (.mtx[.gz] or dir)\n"
    "  -o, --output DIR    the shard directory (shard_00000.h5, ...)\n"
    "\n"
    "options:\n"
    "  --max-length N      rank and bin modes: tokens per cell, <cls>/<eos> included\n"
    "                      (default 2048; Geneformer V2 uses 4096)\n"
    "  --match id|symbol   match genes to the vocabulary by gene id (default) or by\n"
    "                      symbol; a symbol that the file or the vocabulary repeats\n"
    "                      matches nothing\n"
    "  --cells-per-shard N input cells per shard file (default 1000000)\n"
    "  --obs LIST          categorical obs columns to copy, comma-separated, or none\n"
    "                      (default: every categorical column all inputs have)\n"
    "  --bins B            bin mode: bins, 2..256 (default 51)\n"
    "  --bin-input KIND    bin mode: log1p (log1p of count / cell total x 10,000,\n"
    "                      the default) or raw (the counts)\n"
    "  --hvg N             bin and counts modes: only the N most variable genes\n"
    "                      (scanpy's flavor \"seurat\", ties at the cut kept; one\n"
    "                      extra pass over the inputs); N from 1 to the vocabulary's\n"
    "                      genes\n"
    "  --include-zeros     bin mode with --hvg: every kept gene, zeros in bin 0\n"
    "  --seed S            bin mode: seed of the tie and sampling draws (default 0)\n"
    SCFM_CLI_MATRIX_HELP
    "  --force             replace SHARD_DIR if it exists (otherwise an error)\n"
    "  --quiet             no progress or summary lines\n"
    "  -h, --help          this text\n"
    "\n"
    "Genes outside the vocabulary are left out and counted per input; cells without\n"
    "counts, or (rank and bin modes) without counts in vocabulary genes, are\n"
    "skipped and counted. The set is written as SHARD_DIR.tmp and renamed when\n"
    "complete; on any rank's error every rank stops and SHARD_DIR.tmp is removed.\n"
    "Format: docs/formats.md.\n";

typedef struct {
    double start, last;
} progress_printer;

static void print_progress(int64_t done, int64_t total, void *user) {
    progress_printer *pp = user;
    double now = scfm_now();
    if (done == total || now - pp->last < PROGRESS_EVERY_S) return;
    pp->last = now;
    double rate = (double)done / (now - pp->start);
    char eta[32], elapsed[32];
    scfm_cli_format_duration(rate > 0 ? (double)(total - done) / rate : 0.0, eta, sizeof eta);
    scfm_cli_format_duration(now - pp->start, elapsed, sizeof elapsed);
    fprintf(stderr, "cells %lld/%lld (%.1f%%) | %.0f cells/s | %s elapsed | ETA %s\n", (long long)done,
            (long long)total, 100.0 * (double)done / (double)total, rate, elapsed, eta);
}

/* The modes an option applies to. */
enum { RANK = 1, BIN = 2, COUNTS = 4, ANY_MODE = 7 };

typedef struct {
    const char *flag;
    long long lo, hi;
    long long value;
    unsigned modes;
} number_option;

static void print_report(const scfm_tokenize_report *r, const scfm_tokenize_options *o, const char *out,
                         const char *const *inputs, double seconds) {
    for (int k = 0; k < r->n_inputs; k++) {
        const scfm_tokenize_input_report *in = &r->inputs[k];
        fprintf(stderr, "scfm tokenize: %s: %lld cells, %lld genes, %lld not in the vocabulary", inputs[k],
                (long long)in->cells, (long long)in->genes, (long long)in->genes_outside);
        if (o->match_symbol) fprintf(stderr, ", %lld with an ambiguous symbol", (long long)in->genes_ambiguous);
        fprintf(stderr, ": %.2f%% of the counts left out\n", 100.0 * in->counts_outside);
    }
    if (o->hvg) fprintf(stderr, "scfm tokenize: %d highly variable genes\n", r->hvg_genes);
    if (o->mode == SCFM_TOKENIZE_COUNTS)
        fprintf(stderr, "scfm tokenize: %lld cells: %lld written (%lld without a count in the gene set), %lld "
                "skipped without counts\n", (long long)r->cells, (long long)r->cells_written,
                (long long)r->cells_zero_in_set, (long long)r->cells_empty);
    else
        fprintf(stderr, "scfm tokenize: %lld cells: %lld written, %lld skipped without counts, %lld skipped without "
                "counts in vocabulary genes; %lld had more genes than %d tokens allow\n", (long long)r->cells,
                (long long)r->cells_written, (long long)r->cells_empty, (long long)r->cells_empty_in_vocab,
                (long long)r->cells_cut, o->max_length);
    fprintf(stderr, "scfm tokenize: %lld tokens in %d shard%s -> %s, %.1f s (%.0f cells/s)\n",
            (long long)r->tokens_written, r->n_shards, r->n_shards == 1 ? "" : "s", out, seconds,
            seconds > 0 ? (double)r->cells / seconds : 0.0);
}

int scfm_cmd_tokenize(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(tokenize_help, stdout);
        return 0;
    }
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) return scfm_cli_fail(&err);
    const int rank = scfm_comm_rank(comm);
    number_option numbers[] = {
        {"--max-length", 1, 1 << 20, 2048, RANK | BIN}, {"--cells-per-shard", 1, (long long)1 << 40, 1000000, ANY_MODE},
        {"--bins", 2, 256, 51, BIN},                    {"--hvg", 1, 1 << 30, 0, BIN | COUNTS},
        {"--seed", 0, LLONG_MAX, 0, BIN},
    };
    const int n_numbers = (int)(sizeof numbers / sizeof numbers[0]);
    scfm_tokenize_options opt = {.log1p = 1};
    scfm_cli_inputs in = scfm_cli_inputs_new(argc);
    const char *out = NULL, *vocab_dir = NULL, *mode = NULL, *usage = NULL, *bad = NULL;
    char message[512];
    /* excluder[m]: the first option given that does not apply to mode bit m */
    const char *excluder[3] = {NULL, NULL, NULL};
    for (int i = 0; i < argc && !usage; i++) {
        const char *a = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        int number = 0;
        while (number < n_numbers && strcmp(a, numbers[number].flag)) number++;
        int takes_value = number < n_numbers || !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--vocab") ||
                          !strcmp(a, "--mode") || !strcmp(a, "--match") || !strcmp(a, "--obs") ||
                          !strcmp(a, "--bin-input");
        if (takes_value && !value) {
            usage = "tokenize: %s needs a value", bad = a;
            break;
        }
        if (takes_value) i++;
        unsigned modes = number < n_numbers ? numbers[number].modes : ANY_MODE;
        if (!strcmp(a, "--bin-input") || !strcmp(a, "--include-zeros")) modes = BIN;
        for (int m = 0; m < 3; m++)
            if (!(modes & (1u << m)) && !excluder[m]) excluder[m] = a;
        if (number < n_numbers) {
            char *end;
            errno = 0;
            long long v = strtoll(value, &end, 10);
            if (errno || *end || end == value || v < numbers[number].lo || v > numbers[number].hi) {
                snprintf(message, sizeof message, "tokenize: %s must be an integer in [%lld, %lld], not '%.200s'",
                         a, numbers[number].lo, numbers[number].hi, value);
                usage = "%s", bad = message;
            }
            numbers[number].value = v;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = value;
        } else if (!strcmp(a, "--vocab")) {
            vocab_dir = value;
        } else if (!strcmp(a, "--mode")) {
            mode = value;
            if (strcmp(mode, "rank") && strcmp(mode, "bin") && strcmp(mode, "counts"))
                usage = "tokenize: --mode is rank, bin or counts, not '%s'", bad = value;
        } else if (!strcmp(a, "--match")) {
            opt.match_symbol = !strcmp(value, "symbol");
            if (!opt.match_symbol && strcmp(value, "id"))
                usage = "tokenize: --match is id or symbol, not '%s'", bad = value;
        } else if (!strcmp(a, "--obs")) {
            opt.obs = strcmp(value, "none") ? value : "";
        } else if (!strcmp(a, "--bin-input")) {
            opt.log1p = !strcmp(value, "log1p");
            if (!opt.log1p && strcmp(value, "raw"))
                usage = "tokenize: --bin-input is log1p or raw, not '%s'", bad = value;
        } else if (!strcmp(a, "--include-zeros")) {
            opt.include_zeros = 1;
        } else if (!scfm_cli_inputs_take(&in, a)) {
            usage = "tokenize: unexpected option '%s'", bad = a;
        }
    }
    opt.matrix = in.matrix;
    opt.force = in.force;
    if (!usage && !mode) usage = "%s", bad = "tokenize: --mode rank|bin|counts is required";
    if (!usage && !vocab_dir) usage = "%s", bad = "tokenize: --vocab VOCAB_DIR is required";
    if (!usage && !in.n_inputs) usage = "%s", bad = "tokenize: at least one INPUT is required";
    if (!usage && !out) usage = "%s", bad = "tokenize: an output directory (-o SHARD_DIR) is required";
    const int mode_bit = !mode ? 0 : !strcmp(mode, "rank") ? 0 : !strcmp(mode, "bin") ? 1 : 2;
    if (!usage && excluder[mode_bit]) {
        snprintf(message, sizeof message, "tokenize: %s does not apply to --mode %s", excluder[mode_bit], mode);
        usage = "%s", bad = message;
    }
    if (!usage && opt.include_zeros && numbers[3].value == 0)
        usage = "%s", bad = "tokenize: --include-zeros needs --hvg";
    int code = 0;
    if (usage) {
        code = rank == 0 ? scfm_cli_usage_error(tokenize_help, usage, bad) : SCFM_EXIT_USAGE;
    } else {
        opt.mode = (scfm_tokenize_mode)mode_bit; /* the enum's order */
        if (opt.mode != SCFM_TOKENIZE_BIN) opt.log1p = 0;
        opt.max_length = (int)numbers[0].value;
        opt.cells_per_shard = numbers[1].value;
        opt.n_bins = (int)numbers[2].value;
        opt.hvg = (int)numbers[3].value;
        opt.seed = (uint64_t)numbers[4].value;
        progress_printer pp = {scfm_now(), scfm_now()};
        if (!in.quiet) {
            opt.progress = print_progress;
            opt.progress_user = &pp;
        }
        scfm_vocab *vocab = NULL;
        scfm_tokenize_report report = {0};
        scfm_status st = scfm_vocab_read(vocab_dir, &vocab, &err);
        st = scfm_comm_agree(comm, st, &err);
        if (st == SCFM_OK) st = scfm_tokenize(comm, vocab, in.inputs, in.n_inputs, out, &opt, &report, &err);
        /* Every rank has the same status; rank 0 reports it. */
        if (st != SCFM_OK)
            code = rank == 0 ? scfm_cli_fail(&err) : scfm_cli_exit_code(&err);
        else if (rank == 0 && !in.quiet)
            print_report(&report, &opt, out, in.inputs, scfm_now() - pp.start);
        scfm_tokenize_report_free(&report);
        scfm_vocab_free(vocab);
    }
    scfm_cli_inputs_free(&in);
    scfm_comm_finalize(comm);
    return code;
}
