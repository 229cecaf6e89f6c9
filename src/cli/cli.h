/* Shared pieces of the scfm subcommands. Only the CLI prints; library calls
 * return an scfm_error that these helpers turn into a message and an exit
 * code: 0 success, 1 runtime failure, 2 usage or configuration error. */
#ifndef SCFM_CLI_H
#define SCFM_CLI_H

#include <stddef.h>

#include "scfm/core.h"

enum { SCFM_EXIT_RUNTIME = 1, SCFM_EXIT_USAGE = 2 };

/* 1 when -h or --help is among the arguments. */
int scfm_cli_wants_help(int argc, char **argv);
/* Prints "scfm: <message>", a blank line and the help text; returns 2. */
int scfm_cli_usage_error(const char *help, const char *fmt, const char *arg);
/* Prints "scfm: <err.message>"; returns the exit code for its status. */
int scfm_cli_fail(const scfm_error *err);
/* H:MM:SS or M:SS. */
void scfm_cli_format_duration(double seconds, char *out, size_t cap);

/* The subcommands: each takes the arguments after its name. */
int scfm_cmd_train(int argc, char **argv);
int scfm_cmd_plot(int argc, char **argv);
int scfm_cmd_simulate(int argc, char **argv);
int scfm_cmd_vocab(int argc, char **argv);
int scfm_cmd_tokenize(int argc, char **argv);

#endif
