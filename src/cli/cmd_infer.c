/* scfm embed and scfm predict: a trained checkpoint applied to an .h5ad,
 * written as a copy of it with the results added. One parser serves both. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/dist.h"
#include "scfm/train.h"

static const char *embed_help =
    "usage: [mpirun -np N] scfm embed CHECKPOINT INPUT.h5ad -o OUT.h5ad [options]\n"
    "\n"
    "Cell embeddings from a trained encoder. Every cell of INPUT is tokenized with the\n"
    "checkpoint's own vocabulary and gene medians (Geneformer's rank encoding, as\n"
    "`scfm tokenize --mode rank`, or for a value model scGPT's bins as `--mode bin`;\n"
    "cut to model.max_len), encoded, and pooled; for a count encoder (model.encoder\n"
    "mlp or linear) each cell is its count vector over the checkpoint's genes.tsv and\n"
    "the embedding its latent mean. OUT is a\n"
    "copy of INPUT (obs, var, X and everything else unchanged) with the embedding in\n"
    "obsm['X_scfm'] (float32, cells x hidden or latent), which anndata and scanpy read\n"
    "(e.g. sc.pp.neighbors(adata, use_rep='X_scfm')). Under mpirun each rank encodes\n"
    "its share of every round of cells; memory does not grow with the cell count.\n"
    "\n"
    "  CHECKPOINT          a checkpoint directory (step_NNNNNNN, or one made by\n"
    "                      `scfm import`) or a run directory (its newest checkpoint); it\n"
    "                      must hold vocab.tsv (runs with data.vocab set copy it in)\n"
    "  -o, --output PATH   the .h5ad to write (required); written as PATH.tmp and renamed\n"
    "  --pool mean|cls     mean of the gene tokens' hidden states (default: the model's\n"
    "                      model.pool), or the <cls> token's (the vocabulary needs <cls>)\n"
    "  --layer K           hidden states after layer K (0: the embeddings; default: the last);\n"
    "                      --pool and --layer apply to the transformer only\n"
    "  --key NAME          obsm key (default X_scfm)\n"
    "  --condition VALUE   a model conditioned on an obs column (model.condition_column,\n"
    "                      e.g. batch): encode every cell as if it came from category VALUE\n"
    "                      (a reference batch; the checkpoint's conditions.tsv lists them);\n"
    "                      default: the condition is left out\n"
    "  --match id|symbol   match INPUT's genes to the vocabulary by gene id (default) or symbol\n"
    "  --min-gene-match F  fail when fewer than this fraction of INPUT's genes are in the\n"
    "                      vocabulary (default 0.5)\n"
    "  --use-raw           read raw/X instead of X\n"
    "  --batch-tokens N    tokens per encoder batch (default 16384)\n"
    "  --force             replace an existing OUT\n"
    "  --quiet             no progress lines\n"
    "  -h, --help          this text\n"
    "\n"
    "Cells without a count in the vocabulary's genes get a row of zeros (counted in the\n"
    "summary). Exit codes: 0 done, 1 runtime failure (bad input, vocabulary mismatch),\n"
    "2 usage error.\n";

static const char *predict_help =
    "usage: [mpirun -np N] scfm predict CHECKPOINT INPUT.h5ad -o OUT.h5ad [options]\n"
    "\n"
    "Cell labels from a checkpoint fine-tuned by `scfm finetune`. Cells are tokenized and\n"
    "encoded as by `scfm embed`; OUT is a copy of INPUT with the class probabilities in\n"
    "obsm['scfm_probabilities'] (float32, cells x classes, classes in the order of the\n"
    "checkpoint's labels.tsv) and the most probable class in the categorical column\n"
    "obs['scfm_prediction'].\n"
    "\n"
    "  CHECKPOINT          a fine-tuned checkpoint or its run directory (holds labels.tsv)\n"
    "  -o, --output PATH   the .h5ad to write (required)\n"
    "  --key NAME          obsm key of the probabilities (default scfm_probabilities)\n"
    "  --column NAME       obs column of the prediction (default scfm_prediction)\n"
    "  --condition VALUE, --match id|symbol, --min-gene-match F, --use-raw,\n"
    "  --batch-tokens N, --force, --quiet\n"
    "                      as for `scfm embed`\n"
    "  -h, --help          this text\n"
    "\n"
    "Exit codes: 0 done, 1 runtime failure, 2 usage error.\n";

static void print_progress(int64_t done, int64_t cells, double elapsed, void *user) {
    const char *command = user;
    char eta[32];
    scfm_cli_format_duration(done > 0 ? elapsed / (double)done * (double)(cells - done) : 0.0, eta, sizeof eta);
    fprintf(stderr, "scfm %s: %lld/%lld cells | %.0f cells/s | ETA %s\n", command, (long long)done, (long long)cells,
            elapsed > 0 ? (double)done / elapsed : 0.0, eta);
}

static int run(int argc, char **argv, int predict) {
    const char *help = predict ? predict_help : embed_help, *command = predict ? "predict" : "embed";
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(help, stdout);
        return 0;
    }
    scfm_infer_options opt = {.predict = predict,
                              .key = predict ? "scfm_probabilities" : "X_scfm",
                              .obs_column = "scfm_prediction",
                              .layer = -1,
                              .min_gene_match = 0.5};
    const char *positional[2] = {NULL, NULL}, *output = NULL, *pool = NULL;
    int n_positional = 0, quiet = 0;
    char message[256];
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int takes_value = !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--key") ||
                          !strcmp(a, "--match") || !strcmp(a, "--min-gene-match") || !strcmp(a, "--batch-tokens") || !strcmp(a, "--condition") ||
                          (!predict && (!strcmp(a, "--pool") || !strcmp(a, "--layer"))) ||
                          (predict && !strcmp(a, "--column"));
        if (takes_value && i + 1 >= argc) {
            snprintf(message, sizeof message, "%s: %%s needs a value", command);
            return scfm_cli_usage_error(help, message, a);
        }
        const char *value = takes_value ? argv[++i] : NULL;
        char *end = NULL;
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            output = value;
        } else if (!strcmp(a, "--key")) {
            opt.key = value;
        } else if (!strcmp(a, "--condition")) {
            opt.condition = value;
        } else if (!strcmp(a, "--column")) {
            opt.obs_column = value;
        } else if (!strcmp(a, "--pool")) {
            pool = value;
            if (strcmp(value, "mean") && strcmp(value, "cls"))
                return scfm_cli_usage_error(help, "embed: --pool is mean or cls, not '%s'", value);
        } else if (!strcmp(a, "--layer")) {
            long layer = strtol(value, &end, 10);
            if (*end || end == value || layer < 0 || layer > 128)
                return scfm_cli_usage_error(help, "embed: --layer must be an integer in [0, 128], not '%s'", value);
            opt.layer = (int)layer;
        } else if (!strcmp(a, "--match")) {
            if (strcmp(value, "id") && strcmp(value, "symbol")) {
                snprintf(message, sizeof message, "%s: --match is id or symbol, not '%%s'", command);
                return scfm_cli_usage_error(help, message, value);
            }
            opt.match_symbol = !strcmp(value, "symbol");
        } else if (!strcmp(a, "--min-gene-match")) {
            opt.min_gene_match = strtod(value, &end);
            if (*end || end == value || !(opt.min_gene_match >= 0.0 && opt.min_gene_match <= 1.0)) {
                snprintf(message, sizeof message, "%s: --min-gene-match must be a number in [0, 1], not '%%s'", command);
                return scfm_cli_usage_error(help, message, value);
            }
        } else if (!strcmp(a, "--batch-tokens")) {
            long long n = strtoll(value, &end, 10);
            if (*end || end == value || n < 1) {
                snprintf(message, sizeof message, "%s: --batch-tokens must be a positive integer, not '%%s'", command);
                return scfm_cli_usage_error(help, message, value);
            }
            opt.batch_tokens = n;
        } else if (!strcmp(a, "--use-raw")) {
            opt.use_raw = 1;
        } else if (!strcmp(a, "--force")) {
            opt.force = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] != '-' && n_positional < 2) {
            positional[n_positional++] = a;
        } else {
            snprintf(message, sizeof message, "%s: unexpected argument '%%s'", command);
            return scfm_cli_usage_error(help, message, a);
        }
    }
    if (n_positional < 2) {
        snprintf(message, sizeof message, "%s: CHECKPOINT and INPUT.h5ad are required", command);
        return scfm_cli_usage_error(help, "%s", message);
    }
    if (!output) {
        snprintf(message, sizeof message, "%s: an output file (-o OUT.h5ad) is required", command);
        return scfm_cli_usage_error(help, "%s", message);
    }
    scfm_comm *comm = NULL;
    scfm_error err = {0};
    if (scfm_comm_init(&argc, &argv, &comm, &err) != SCFM_OK) return scfm_cli_fail(&err);
    const int rank = scfm_comm_rank(comm);
    if (!quiet && rank == 0) {
        opt.progress = print_progress;
        opt.progress_user = (void *)command;
    }
    scfm_infer_report report;
    /* --pool given: it overrides the model's; otherwise the model's is used (-1). */
    opt.pool = pool ? (!strcmp(pool, "cls") ? SCFM_POOL_CLS : SCFM_POOL_MEAN) : -1;
    scfm_status st = scfm_infer(comm, positional[0], positional[1], output, &opt, &report, &err);
    int code = 0;
    if (st != SCFM_OK) {
        code = rank == 0 ? scfm_cli_fail(&err) : scfm_cli_exit_code(&err);
    } else if (rank == 0 && !quiet) {
        fprintf(stderr, "scfm %s: %lld cells, %lld of %lld genes in the vocabulary", command, (long long)report.cells,
                (long long)report.genes_matched, (long long)report.genes);
        if (report.cells_without_genes)
            fprintf(stderr, "; %lld cells without a vocabulary gene got zeros", (long long)report.cells_without_genes);
        fprintf(stderr, " -> %s obsm['%s'] (%d per cell)%s%s%s\n", output, opt.key, report.width,
                predict ? ", obs['" : "", predict ? opt.obs_column : "", predict ? "']" : "");
    }
    scfm_comm_finalize(comm);
    return code;
}

int scfm_cmd_embed(int argc, char **argv) { return run(argc, argv, 0); }
int scfm_cmd_predict(int argc, char **argv) { return run(argc, argv, 1); }
