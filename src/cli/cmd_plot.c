/* scfm plot: learning curves of runs, or a scaling-law plot of a sweep,
 * drawn by gnuplot into a PNG. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "scfm/config.h"
#include "scfm/model.h"
#include "scfm/train.h"

static const char *plot_help =
    "usage: scfm plot RUN_DIR... -o OUT.png [--sweep]\n"
    "\n"
    "Draws, from each run directory's metrics.jsonl (checkpoint.dir/checkpoint.run of a\n"
    "training run):\n"
    "  default   the loss against the optimiser step and against training tokens,\n"
    "            one curve per run, in two panels\n"
    "  --sweep   a scaling-law plot: for every run, its final loss (mean over the last\n"
    "            10% of steps) against its training compute C = 6 x parameters x tokens\n"
    "            (parameters from the run's config.cfg), log-log, with the least-squares\n"
    "            power law L = a C^-b drawn and its exponent in the title\n"
    "\n"
    "  -o, --output OUT.png   the image to write (required)\n"
    "  -h, --help             this text\n"
    "\n"
    "Needs gnuplot (Debian: gnuplot-nox) on PATH.\n";

/* The run's directory name, the curve's title: "a/b/run1/" gives "run1". */
static void run_name(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = '\0';
    const char *slash = strrchr(out, '/');
    if (slash) memmove(out, slash + 1, strlen(slash + 1) + 1);
}

/* Writes a curve title as a double-quoted gnuplot string (shown with
 * noenhanced, so '_' stays literal). */
static void label(FILE *out, const char *path) {
    char text[256];
    run_name(path, text, sizeof text);
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', out);
        fputc(*p, out);
    }
}

static scfm_status run_compute(const char *run_dir, const scfm_metrics *m, double *compute, double *final_loss,
                               scfm_error *err) {
    char path[SCFM_PATH_MAX];
    scfm_config cfg;
    scfm_status st = scfm_path_join(path, sizeof path, run_dir, "config.cfg", err);
    if (st == SCFM_OK) st = scfm_config_load(&cfg, path, NULL, 0, err);
    if (st != SCFM_OK) return st;
    size_t params = scfm_model_param_count(&cfg.model);
    *compute = 6.0 * (double)params * m->tokens[m->n - 1];
    int64_t tail = m->n / 10 > 0 ? m->n / 10 : 1;
    double sum = 0.0;
    for (int64_t i = m->n - tail; i < m->n; i++) sum += m->loss[i];
    *final_loss = sum / (double)tail;
    return SCFM_OK;
}

int scfm_cmd_plot(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(plot_help, stdout);
        return 0;
    }
    const char *output = NULL;
    int sweep = 0, n_runs = 0;
    const char **runs = calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            if (i + 1 >= argc) {
                free(runs);
                return scfm_cli_usage_error(plot_help, "%s needs a file name", argv[i]);
            }
            output = argv[++i];
        } else if (!strcmp(argv[i], "--sweep")) {
            sweep = 1;
        } else if (argv[i][0] == '-') {
            free(runs);
            return scfm_cli_usage_error(plot_help, "plot: unknown option '%s'", argv[i]);
        } else {
            runs[n_runs++] = argv[i];
        }
    }
    if (!output || n_runs == 0) {
        free(runs);
        return scfm_cli_usage_error(plot_help, "%s", "plot: at least one RUN_DIR and -o OUT.png are required");
    }
    if (sweep && n_runs < 2) {
        free(runs);
        return scfm_cli_usage_error(plot_help, "%s", "plot --sweep: a power law needs at least two runs");
    }

    char tmp_dir[] = "/tmp/scfm-plot-XXXXXX";
    if (!mkdtemp(tmp_dir)) {
        free(runs);
        fprintf(stderr, "scfm: cannot create a temporary directory: %s\n", strerror(errno));
        return SCFM_EXIT_RUNTIME;
    }
    scfm_error err = {0};
    scfm_status st = SCFM_OK;
    char script_path[128], data_path[SCFM_PATH_MAX], path[SCFM_PATH_MAX];
    snprintf(script_path, sizeof script_path, "%s/plot.gp", tmp_dir);
    double *compute = calloc((size_t)n_runs, sizeof(double)), *final_loss = calloc((size_t)n_runs, sizeof(double));
    for (int r = 0; r < n_runs && st == SCFM_OK; r++) {
        scfm_metrics m;
        st = scfm_path_join(path, sizeof path, runs[r], "metrics.jsonl", &err);
        if (st == SCFM_OK) st = scfm_metrics_read(path, &m, &err);
        if (st != SCFM_OK) break;
        if (sweep) st = run_compute(runs[r], &m, &compute[r], &final_loss[r], &err);
        snprintf(data_path, sizeof data_path, "%s/run%d.dat", tmp_dir, r);
        FILE *d = fopen(data_path, "w");
        if (!d) st = scfm_fail(&err, SCFM_ERR_IO, "%s: cannot create: %s", data_path, strerror(errno));
        for (int64_t i = 0; d && i < m.n; i++) fprintf(d, "%lld %.6g %.6g\n", (long long)m.step[i], m.tokens[i], m.loss[i]);
        if (d) fclose(d);
        scfm_metrics_free(&m);
    }
    double a = 0.0, b = 0.0;
    if (st == SCFM_OK && sweep) st = scfm_power_law_fit(compute, final_loss, n_runs, &a, &b, &err);

    FILE *gp = st == SCFM_OK ? fopen(script_path, "w") : NULL;
    if (st == SCFM_OK && !gp) st = scfm_fail(&err, SCFM_ERR_IO, "%s: cannot create: %s", script_path, strerror(errno));
    if (gp) {
        fprintf(gp, "set terminal pngcairo size %d,600 font ',10'\nset output '%s.tmp.png'\nset grid\nset key top right\n",
                sweep ? 800 : 1400, output);
        if (sweep) {
            FILE *d = NULL;
            snprintf(data_path, sizeof data_path, "%s/sweep.dat", tmp_dir);
            d = fopen(data_path, "w");
            for (int r = 0; d && r < n_runs; r++) fprintf(d, "%.6g %.6g\n", compute[r], final_loss[r]);
            if (d) fclose(d);
            fprintf(gp, "set logscale xy\nset xlabel 'training compute C (FLOP = 6 x params x tokens)'\n"
                        "set ylabel 'final loss'\nset title 'L = %.4g C^{%.4f}'\n"
                        "plot '%s' using 1:2 with points pt 7 ps 1.5 title 'runs', %.10g*x**(%.10g) with lines lw 2 title 'power-law fit'\n",
                    a, -b, data_path, a, -b);
        } else {
            fprintf(gp, "set multiplot layout 1,2\nset xlabel 'step'\nset ylabel 'loss'\nplot ");
            for (int r = 0; r < n_runs; r++) {
                fprintf(gp, "%s'%s/run%d.dat' using 1:3 with lines lw 2 title \"", r ? ", " : "", tmp_dir, r);
                label(gp, runs[r]);
                fputs("\" noenhanced", gp);
            }
            fprintf(gp, "\nset xlabel 'training tokens'\nset format x '%%.0s%%c'\nplot ");
            for (int r = 0; r < n_runs; r++) {
                fprintf(gp, "%s'%s/run%d.dat' using 2:3 with lines lw 2 title \"", r ? ", " : "", tmp_dir, r);
                label(gp, runs[r]);
                fputs("\" noenhanced", gp);
            }
            fprintf(gp, "\nunset multiplot\n");
        }
        fclose(gp);
        char command[SCFM_PATH_MAX + 256], tmp_png[SCFM_PATH_MAX + 16];
        snprintf(command, sizeof command, "gnuplot '%s' 2>'%s/gnuplot.err'", script_path, tmp_dir);
        snprintf(tmp_png, sizeof tmp_png, "%s.tmp.png", output);
        int rc = system(command);
        if (rc != 0) {
            st = scfm_fail(&err, SCFM_ERR_IO, "gnuplot failed (exit %d; is gnuplot-nox installed?) drawing %s", rc, output);
            remove(tmp_png);
        } else if (rename(tmp_png, output) != 0) {
            st = scfm_fail(&err, SCFM_ERR_IO, "%s: cannot write: %s", output, strerror(errno));
        }
    }
    char cleanup[200];
    snprintf(cleanup, sizeof cleanup, "rm -rf '%s'", tmp_dir);
    if (system(cleanup) != 0) fprintf(stderr, "scfm: could not remove %s\n", tmp_dir);
    free(compute);
    free(final_loss);
    free(runs);
    if (st != SCFM_OK) return scfm_cli_fail(&err);
    if (sweep) printf("scfm plot: %d runs, L = %.4g C^%.4f -> %s\n", n_runs, a, -b, output);
    else printf("scfm plot: %d run(s) -> %s\n", n_runs, output);
    return 0;
}
