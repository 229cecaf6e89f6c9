/* scfm vocab: the token dictionary and gene medians of a corpus, computed
 * across MPI ranks. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/data.h"

static const char *vocab_help =
    "usage: [mpirun -np N] scfm vocab INPUT... -o VOCAB_DIR [--special cls,eos] [--min-cells N]\n"
    "                                 [--use-raw] [--allow-non-integer] [--force] [--quiet]\n"
    "\n"
    "Builds the gene vocabulary of a corpus: the token dictionary (<pad> = 0,\n"
    "<mask> = 1, then <cls> and <eos> if asked, then the genes sorted by gene id)\n"
    "and each gene's median of its non-zero depth-normalised counts\n"
    "(count / cell total x 10,000) over all cells, as Geneformer's rank-value\n"
    "encoding needs. Each MPI rank reads an even share of the cells; the result\n"
    "does not depend on the number of ranks.\n"
    "\n"
    "  INPUT               count matrices: .h5ad, 10x Genomics .h5, Matrix Market\n"
    "                      (.mtx[.gz] or its directory); genes keyed by gene id\n"
    "  -o, --output DIR    the vocabulary directory (VOCAB_DIR/vocab.tsv)\n"
    "  --special LIST      special tokens after <pad> and <mask>: cls, eos, cls,eos\n"
    "                      (Geneformer V2) or none (V1, the default)\n"
    "  --min-cells N       keep genes counted in at least N cells (default 1)\n"
    SCFM_CLI_MATRIX_HELP
    "  --force             replace VOCAB_DIR if it exists (otherwise an error)\n"
    "  --quiet             no summary line\n"
    "  -h, --help          this text\n"
    "\n"
    "The file format and the medians' error bound (within 1.6% of the exact\n"
    "median) are in docs/formats.md. The directory is written as VOCAB_DIR.tmp\n"
    "and renamed when complete.\n";

static int parse_special(const char *list, int *cls, int *eos) {
    *cls = *eos = 0;
    if (!strcmp(list, "none")) return 1;
    if (!strcmp(list, "cls")) return *cls = 1;
    if (!strcmp(list, "eos")) return *eos = 1;
    if (!strcmp(list, "cls,eos")) return *cls = *eos = 1;
    return 0;
}

int scfm_cmd_vocab(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(vocab_help, stdout);
        return 0;
    }
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) return scfm_cli_fail(&err);
    const int rank = scfm_comm_rank(comm);
    scfm_vocab_options opt = {.min_cells = 1};
    scfm_cli_inputs in = scfm_cli_inputs_new(argc);
    const char *out = NULL, *usage = NULL, *bad = NULL;
    for (int i = 0; i < argc && !usage; i++) {
        const char *a = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value =
            !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--special") || !strcmp(a, "--min-cells");
        if (takes_value && !value) {
            usage = "vocab: %s needs a value", bad = a;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = argv[++i];
        } else if (!strcmp(a, "--special")) {
            if (!parse_special(argv[++i], &opt.cls, &opt.eos))
                usage = "vocab: --special takes cls, eos, cls,eos or none, not '%s'", bad = value;
        } else if (!strcmp(a, "--min-cells")) {
            char *end;
            errno = 0;
            opt.min_cells = strtoll(argv[++i], &end, 10);
            if (errno || *end || opt.min_cells < 1)
                usage = "vocab: --min-cells must be a positive integer, not '%s'", bad = value;
        } else if (!scfm_cli_inputs_take(&in, a)) {
            usage = "vocab: unexpected option '%s'", bad = a;
        }
    }
    opt.matrix = in.matrix;
    if (!usage && !in.n_inputs) usage = "%s", bad = "vocab: at least one INPUT is required";
    if (!usage && !out) usage = "%s", bad = "vocab: an output directory (-o VOCAB_DIR) is required";
    int code = 0;
    if (usage) {
        code = rank == 0 ? scfm_cli_usage_error(vocab_help, usage, bad) : SCFM_EXIT_USAGE;
    } else {
        scfm_vocab *vocab = NULL;
        scfm_vocab_report report;
        double start = scfm_now();
        scfm_status st = scfm_vocab_build(comm, in.inputs, in.n_inputs, &opt, &vocab, &report, &err);
        if (st == SCFM_OK && rank == 0) st = scfm_vocab_write(vocab, out, in.force, &err);
        st = scfm_comm_agree(comm, st, &err);
        /* Every rank has the same status; rank 0 reports it. */
        if (st != SCFM_OK)
            code = rank == 0 ? scfm_cli_fail(&err) : scfm_cli_exit_code(&err);
        else if (rank == 0 && !in.quiet)
            fprintf(stderr, "scfm vocab: %lld cells (%lld without counts), %lld genes, %lld kept (counted in >= %lld "
                    "cells) -> %s/%s, hash %016llx, %.1f s\n", (long long)report.cells, (long long)report.cells_empty,
                    (long long)report.genes_seen, (long long)report.genes_kept, (long long)opt.min_cells, out,
                    SCFM_VOCAB_FILE, (unsigned long long)vocab->hash, scfm_now() - start);
        scfm_vocab_free(vocab);
    }
    scfm_cli_inputs_free(&in);
    scfm_comm_finalize(comm);
    return code;
}
