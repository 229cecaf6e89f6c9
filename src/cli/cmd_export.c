/* scfm export: a checkpoint as a Hugging Face transformers BertForMaskedLM
 * directory (docs/export.md). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "scfm/model.h"
#include "scfm/train.h"

static const char *export_help =
    "usage: scfm export CHECKPOINT --format hf -o DIR [--force] [--quiet]\n"
    "\n"
    "Writes a checkpoint as a directory that transformers loads with\n"
    "BertForMaskedLM.from_pretrained(DIR) or BertModel.from_pretrained(DIR,\n"
    "add_pooling_layer=False): config.json, model.safetensors (fp32, Hugging Face\n"
    "names) and, when the checkpoint holds its vocabulary, Geneformer's token\n"
    "dictionary, gene medians and symbols as JSON plus scfm's vocab.tsv.\n"
    "\n"
    "  CHECKPOINT          a checkpoint directory (step_NNNNNNN/) or a run directory\n"
    "                      (its newest good checkpoint)\n"
    "  --format hf         the only format: Hugging Face transformers\n"
    "  -o, --output DIR    the export directory, written as DIR.tmp and renamed\n"
    "  --force             replace DIR if it exists (otherwise an error)\n"
    "  --quiet             no summary line\n"
    "  -h, --help          this text\n"
    "\n"
    "Pre-LN models are refused: BERT has no final LayerNorm. docs/export.md lists\n"
    "the files, the tensor names and what the config's \"scfm\" object records.\n";

/* config.cfg may leave model.vocab_size at 0 (the shards' size): the word
 * embeddings say what it was. */
static scfm_status vocab_size_of(const char *weights, int *vocab_size, scfm_error *err) {
    scfm_safetensors *f = NULL;
    scfm_status st = scfm_safetensors_open(weights, &f, err);
    if (st != SCFM_OK) return st;
    const scfm_st_tensor *t = scfm_safetensors_find(f, "bert.embeddings.word_embeddings.weight");
    if (t && t->ndim == 2) *vocab_size = (int)t->shape[0];
    else st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: no bert.embeddings.word_embeddings.weight matrix", weights);
    scfm_safetensors_close(f);
    return st;
}

static scfm_status run_export(const char *checkpoint, const char *out, int force, int quiet, scfm_error *err) {
    char step[SCFM_PATH_MAX], config[SCFM_PATH_MAX], weights[SCFM_PATH_MAX], vocab_file[SCFM_PATH_MAX];
    scfm_config cfg;
    scfm_model *model = NULL;
    scfm_vocab *vocab = NULL;
    struct stat sb;
    scfm_status st = scfm_checkpoint_resolve(checkpoint, step, sizeof step, err);
    if (st == SCFM_OK) st = scfm_path_join(config, sizeof config, step, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_path_join(weights, sizeof weights, step, "model.safetensors", err);
    if (st == SCFM_OK) st = scfm_path_join(vocab_file, sizeof vocab_file, step, SCFM_VOCAB_FILE, err);
    if (st == SCFM_OK) st = scfm_config_load(&cfg, config, NULL, 0, err);
    if (st == SCFM_OK && cfg.model.vocab_size == 0) st = vocab_size_of(weights, &cfg.model.vocab_size, err);
    if (st == SCFM_OK) st = scfm_model_create(&cfg.model, &model, err);
    if (st == SCFM_OK) st = scfm_model_load(model, weights, err);
    if (st == SCFM_OK && stat(vocab_file, &sb) == 0) st = scfm_vocab_read(step, &vocab, err);
    if (st == SCFM_OK) st = scfm_hf_export(model, vocab, out, force, err);
    if (st == SCFM_OK && !quiet)
        fprintf(stderr, "scfm export: %s -> %s (BertForMaskedLM, %zu parameters, %s)\n", step, out,
                scfm_model_num_params(model),
                vocab ? "with its vocabulary" : "no vocabulary in the checkpoint: weights and config only");
    scfm_vocab_free(vocab);
    scfm_model_free(model);
    return st;
}

int scfm_cmd_export(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(export_help, stdout);
        return 0;
    }
    const char *checkpoint = NULL, *out = NULL, *format = NULL;
    int force = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--format")) {
            if (i + 1 >= argc) return scfm_cli_usage_error(export_help, "export: %s needs a value", a);
            *(!strcmp(a, "--format") ? &format : &out) = argv[++i];
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (a[0] == '-' || checkpoint) {
            return scfm_cli_usage_error(export_help, "export: unexpected argument '%s'", a);
        } else {
            checkpoint = a;
        }
    }
    if (!checkpoint) return scfm_cli_usage_error(export_help, "%s", "export: a CHECKPOINT is required");
    if (!out) return scfm_cli_usage_error(export_help, "%s", "export: -o DIR is required");
    if (!format || strcmp(format, "hf") != 0)
        return scfm_cli_usage_error(export_help, "export: --format must be hf, not '%s'", format ? format : "(none)");
    scfm_error err = {0};
    return run_export(checkpoint, out, force, quiet, &err) == SCFM_OK ? 0 : scfm_cli_fail(&err);
}
