/* The scfm command line: dispatches to one subcommand per file
 * (src/cli/cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "scfm/core.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"simulate", scfm_cmd_simulate, "-o PATH [--cells N] [--genes G] ...   a synthetic atlas with known truth (.h5ad)"},
    {"vocab", scfm_cmd_vocab, "INPUT... -o VOCAB_DIR   gene vocabulary and medians (mpirun)"},
    {"tokenize", scfm_cmd_tokenize, "--mode rank|bin --vocab DIR INPUT... -o SHARD_DIR   token shards (mpirun)"},
    {"train", scfm_cmd_train, "CONFIG [--set section.key=value]... [--resume]   pretraining (mpirun)"},
    {"finetune", scfm_cmd_finetune, "CONFIG --from CHECKPOINT [--label COLUMN]   cell classification (mpirun)"},
    {"embed", scfm_cmd_embed, "CHECKPOINT IN.h5ad -o OUT.h5ad [--pool mean|cls] [--layer K]   cell embeddings into obsm (mpirun)"},
    {"predict", scfm_cmd_predict, "CHECKPOINT IN.h5ad -o OUT.h5ad   labels of a fine-tuned model into obs (mpirun)"},
    {"export", scfm_cmd_export, "CHECKPOINT --format hf -o DIR   a Hugging Face BertForMaskedLM directory"},
    {"import", scfm_cmd_import, "HF_DIR -o CHECKPOINT   a Hugging Face BERT as a checkpoint to fine-tune from"},
    {"eval", scfm_cmd_eval, "INPUT.h5ad --label COLUMN -o REPORT_DIR [--batch COLUMN]   embedding vs PCA metrics"},
    {"plot", scfm_cmd_plot, "RUN_DIR... -o OUT.png [--sweep]   learning curves, or a scaling-law plot"},
};

static void print_help(FILE *out) {
    fprintf(out, "usage: scfm <command> [options]\n\n"
                 "Pretrain single-cell foundation models (BERT over gene tokens) in C.\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\noptions:\n"
                 "  -h, --help      this text; `scfm <command> --help` describes a command\n"
                 "  --version       print the version\n\n"
                 "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,\n"
                 "3 training stopped by a signal after writing a checkpoint.\n"
                 "docs: docs/config.md (every configuration key), docs/objectives.md, docs/formats.md,\n"
                 "docs/downstream.md, docs/eval.md, docs/export.md, docs/launch.md, docs/architecture.md.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_help(stderr);
        return SCFM_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        print_help(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("scfm %s\n", SCFM_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name)) return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "scfm: unknown command '%s'\n\n", name);
    print_help(stderr);
    return SCFM_EXIT_USAGE;
}
