#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int scfm_cli_wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int scfm_cli_usage_error(const char *help, const char *fmt, const char *arg) {
    fprintf(stderr, "scfm: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", help);
    return SCFM_EXIT_USAGE;
}

int scfm_cli_exit_code(const scfm_error *err) {
    return err->status == SCFM_ERR_CONFIG || err->status == SCFM_ERR_ARG ? SCFM_EXIT_USAGE : SCFM_EXIT_RUNTIME;
}

int scfm_cli_fail(const scfm_error *err) {
    fprintf(stderr, "scfm: %s\n", err->message);
    return scfm_cli_exit_code(err);
}

void scfm_cli_format_duration(double seconds, char *out, size_t cap) {
    long t = seconds > 0 ? (long)(seconds + 0.5) : 0;
    if (t >= 3600)
        snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

scfm_cli_inputs scfm_cli_inputs_new(int argc) {
    /* vocab and tokenize never use cell names: leave them unread, so memory
     * does not grow with the cells of an input */
    return (scfm_cli_inputs){.matrix = {.require_counts = 1, .skip_cell_names = 1},
                             .inputs = calloc((size_t)argc + 1, sizeof(char *))};
}

int scfm_cli_inputs_take(scfm_cli_inputs *in, const char *arg) {
    if (!strcmp(arg, "--use-raw")) {
        in->matrix.use_raw = 1;
    } else if (!strcmp(arg, "--allow-non-integer")) {
        in->matrix.require_counts = 0;
    } else if (!strcmp(arg, "--force")) {
        in->force = 1;
    } else if (!strcmp(arg, "--quiet")) {
        in->quiet = 1;
    } else if (arg[0] == '-' && arg[1]) {
        return 0;
    } else {
        in->inputs[in->n_inputs++] = arg;
    }
    return 1;
}

void scfm_cli_inputs_free(scfm_cli_inputs *in) {
    free(in->inputs);
    in->inputs = NULL;
    in->n_inputs = 0;
}
