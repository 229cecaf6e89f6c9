/* Shared pieces of the scfm subcommands. Only the CLI prints; library calls
 * return an scfm_error that these helpers turn into a message and an exit
 * code: 0 success, 1 runtime failure, 2 usage or configuration error. */
#ifndef SCFM_CLI_H
#define SCFM_CLI_H

#include <stddef.h>

#include "scfm/core.h"
#include "scfm/io.h"

enum { SCFM_EXIT_RUNTIME = 1, SCFM_EXIT_USAGE = 2, SCFM_EXIT_STOPPED = 3 };

/* 1 when -h or --help is among the arguments. */
int scfm_cli_wants_help(int argc, char **argv);
/* Prints "scfm: <message>", a blank line and the help text; returns 2. */
int scfm_cli_usage_error(const char *help, const char *fmt, const char *arg);
/* Prints "scfm: <err.message>"; returns the exit code for its status. */
int scfm_cli_fail(const scfm_error *err);
/* The exit code for a failure, without printing (ranks other than 0). */
int scfm_cli_exit_code(const scfm_error *err);
/* H:MM:SS or M:SS. */
void scfm_cli_format_duration(double seconds, char *out, size_t cap);

/* What the commands that read count matrices (vocab, tokenize) share: the
 * INPUT arguments and the options below; each command documents --force and
 * --quiet in its own words. */
#define SCFM_CLI_MATRIX_HELP                                                     \
    "  --use-raw           h5ad: read raw/X and raw/var instead of X\n"          \
    "  --allow-non-integer accept non-integer counts (they must still be >= 0)\n"

typedef struct {
    scfm_matrix_options matrix; /* --use-raw, --allow-non-integer */
    int force, quiet;           /* --force, --quiet */
    const char **inputs;        /* the INPUT arguments in order */
    int n_inputs;
} scfm_cli_inputs;

/* Counts required, no flags, and room for the inputs among argc arguments. */
scfm_cli_inputs scfm_cli_inputs_new(int argc);
/* Takes arg when it is one of the shared options or an INPUT (an argument
 * that does not start with '-', or "-" itself): 1 when taken, 0 when it is
 * another option. */
int scfm_cli_inputs_take(scfm_cli_inputs *in, const char *arg);
void scfm_cli_inputs_free(scfm_cli_inputs *in);

/* The subcommands: each takes the arguments after its name. */
int scfm_cmd_train(int argc, char **argv);
int scfm_cmd_finetune(int argc, char **argv);
int scfm_cmd_plot(int argc, char **argv);
int scfm_cmd_simulate(int argc, char **argv);
int scfm_cmd_vocab(int argc, char **argv);
int scfm_cmd_tokenize(int argc, char **argv);
int scfm_cmd_embed(int argc, char **argv);
int scfm_cmd_predict(int argc, char **argv);
int scfm_cmd_export(int argc, char **argv);
int scfm_cmd_import(int argc, char **argv);
int scfm_cmd_eval(int argc, char **argv);

#endif
