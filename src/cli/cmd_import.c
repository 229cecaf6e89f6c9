/* scfm import: a Hugging Face BertForMaskedLM directory (an `scfm export`,
 * or a BERT like Geneformer's) as an scfm checkpoint to fine-tune from
 * (docs/export.md). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "scfm/model.h"
#include "scfm/train.h"

static const char *import_help =
    "usage: scfm import HF_DIR -o CHECKPOINT [--force] [--quiet]\n"
    "\n"
    "Reads a transformers BertForMaskedLM directory (config.json, model.safetensors\n"
    "in F32, F16 or BF16, and when present token_dictionary.json with\n"
    "gene_median_dictionary.json, gene_name_id_dict.json or vocab.tsv) and writes\n"
    "a weights-only scfm checkpoint: model.safetensors, config.cfg, vocab.tsv\n"
    "and MANIFEST. Importing an `scfm export` gives back the same tensors.\n"
    "\n"
    "  HF_DIR              the Hugging Face model directory\n"
    "  -o, --output DIR    the checkpoint directory, written as DIR.tmp and renamed\n"
    "  --force             replace DIR if it exists (otherwise an error)\n"
    "  --quiet             no summary\n"
    "  -h, --help          this text\n"
    "\n"
    "A model scfm cannot compute exactly is refused with the file and the key or\n"
    "tensor at fault: model_type other than bert, relative positions, an\n"
    "activation other than gelu or relu, an untied decoder, unknown tensors,\n"
    "sizes that disagree with the tensors. The pooler is dropped and a non-zero\n"
    "token-type row 0 is folded into the position embeddings (docs/export.md).\n";

/* The vocabulary is staged as OUT/vocab.tsv so that the checkpoint's
 * config.cfg can name OUT itself as data.vocab (the checkpoint carries its
 * vocabulary); the checkpoint writer then builds OUT.tmp from it and renames
 * it over OUT. */
static scfm_status write_checkpoint(const char *out, scfm_model *model, const scfm_vocab *vocab, int force,
                                    scfm_error *err) {
    scfm_config cfg;
    scfm_config_defaults(&cfg);
    cfg.model = *scfm_model_get_config(model);
    struct stat sb;
    if (stat(out, &sb) == 0 && !force)
        return scfm_fail(err, SCFM_ERR_ARG, "%s exists; choose another path or pass --force", out);
    if (!vocab) return scfm_checkpoint_write_model(out, &cfg, model, force, err);
    if (strlen(out) >= sizeof cfg.data.vocab) return scfm_fail(err, SCFM_ERR_ARG, "%s: path too long", out);
    strcpy(cfg.data.vocab, out);
    scfm_status st = stat(out, &sb) == 0 ? scfm_remove_dir(out, err) : SCFM_OK;
    if (st == SCFM_OK) st = scfm_vocab_write(vocab, out, 0, err);
    if (st == SCFM_OK) st = scfm_checkpoint_write_model(out, &cfg, model, 1, err);
    if (st != SCFM_OK && stat(out, &sb) == 0) {
        scfm_error ignored = {0};
        scfm_remove_dir(out, &ignored);
    }
    return st;
}

static void print_notes(const char *in, const char *out, const scfm_model *model, const scfm_vocab *vocab,
                        const scfm_hf_import_notes *n) {
    const scfm_model_config *c = scfm_model_get_config(model);
    fprintf(stderr, "scfm import: %s -> %s (%d layers, hidden %d, %d heads, ffn %d, vocabulary %d, %s, positions %s)\n",
            in, out, c->layers, c->hidden, c->heads, c->ffn, c->vocab_size,
            scfm_config_choice("model.activation", (int)c->activation),
            scfm_config_choice("model.position", (int)c->position));
    if (n->dtype != SCFM_DTYPE_F32) fprintf(stderr, "  weights widened from %s to F32\n", scfm_dtype_name(n->dtype));
    if (n->pooler_dropped) fprintf(stderr, "  bert.pooler dropped: scfm has no pooler\n");
    if (n->token_type_folded) fprintf(stderr, "  token_type_embeddings row 0 added into the position embeddings\n");
    if (n->token_type_rows_dropped > 0)
        fprintf(stderr, "  %d token_type_embeddings row(s) past the first dropped: scfm inputs are one segment\n",
                n->token_type_rows_dropped);
    if (!vocab)
        fprintf(stderr, "  no token_dictionary.json: no vocabulary; tokenize with one of %d tokens in this order\n",
                c->vocab_size);
    else
        fprintf(stderr, "  vocabulary of %lld genes from %s%s\n", (long long)vocab->n_genes,
                n->vocab_from_tsv ? "vocab.tsv" : "the JSON dictionaries (no cell counts behind the medians)",
                n->tokens_reordered ? "; tokens renumbered into scfm's order (genes sorted by id)" : "");
}

int scfm_cmd_import(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(import_help, stdout);
        return 0;
    }
    const char *in = NULL, *out = NULL;
    int force = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (i + 1 >= argc) return scfm_cli_usage_error(import_help, "import: %s needs a value", a);
            out = argv[++i];
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' || in) {
            return scfm_cli_usage_error(import_help, "import: unexpected argument '%s'", a);
        } else {
            in = a;
        }
    }
    if (!in) return scfm_cli_usage_error(import_help, "%s", "import: an HF_DIR is required");
    if (!out) return scfm_cli_usage_error(import_help, "%s", "import: -o CHECKPOINT is required");
    scfm_error err = {0};
    struct stat sb;
    if (!force && stat(out, &sb) == 0) {
        scfm_fail(&err, SCFM_ERR_ARG, "%s exists; choose another path or pass --force", out);
        return scfm_cli_fail(&err);
    }
    scfm_model *model = NULL;
    scfm_vocab *vocab = NULL;
    scfm_hf_import_notes notes;
    scfm_status st = scfm_hf_import(in, &model, &vocab, &notes, &err);
    if (st == SCFM_OK) st = write_checkpoint(out, model, vocab, force, &err);
    if (st == SCFM_OK && !quiet) print_notes(in, out, model, vocab, &notes);
    scfm_vocab_free(vocab);
    scfm_model_free(model);
    return st == SCFM_OK ? 0 : scfm_cli_fail(&err);
}
