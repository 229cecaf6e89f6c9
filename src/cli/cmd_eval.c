/* scfm eval: metrics of an embedding (obsm) against cell labels and batches,
 * side by side with a PCA baseline of the counts; a report directory with
 * report.json, per-cell assignments and a gnuplot bar chart. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "scfm/config.h"
#include "scfm/eval.h"

#define EMBEDDING_CHUNK 4096 /* rows of obsm read at once */

static const char *eval_help =
    "usage: scfm eval INPUT.h5ad --label COLUMN -o REPORT_DIR [--batch COLUMN]\n"
    "                 [--embedding NAME] [--no-pca] [--k K] [--max-cells N] [--seed S]\n"
    "                 [--use-raw] [--force] [--quiet]\n"
    "\n"
    "Measures how well the embedding obsm/NAME of INPUT separates the cell labels of\n"
    "obs COLUMN, and mixes its batches, next to a PCA baseline computed from the\n"
    "counts in X of the same cells (definitions in docs/eval.md):\n"
    "  kNN accuracy   a k-nearest-neighbour classifier (Euclidean, majority vote),\n"
    "                 5-fold cross-validation stratified by label, pooled accuracy\n"
    "  k-means ARI,   k-means++ (10 restarts) with k = number of labels, against\n"
    "  k-means NMI    the labels (NMI with the arithmetic mean, as scikit-learn)\n"
    "  silhouette     of the labels, Euclidean (-1..1, as scikit-learn)\n"
    "  iLISI          with --batch: scib's integration LISI over 90 neighbours,\n"
    "                 perplexity 30, (median - 1) / (batches - 1), 0..1\n"
    "The baseline: counts scaled to 10,000 per cell, log1p, the 2000 genes of highest\n"
    "dispersion, centred, 50 components by randomized SVD.\n"
    "\n"
    "  --label COLUMN      categorical obs column of the cell labels (required);\n"
    "                      cells whose label is missing are left out\n"
    "  --batch COLUMN      categorical obs column of the batches: adds iLISI\n"
    "  --embedding NAME    the obsm key of the embedding (default X_scfm)\n"
    "  -o, --output DIR    the report directory (required)\n"
    "  --no-pca            no baseline (X is still opened but not read)\n"
    "  --k K               neighbours of the kNN classifier, 1..1000 (default 15)\n"
    "  --max-cells N       evaluate a seeded sample of N cells when there are more,\n"
    "                      100..1000000 (default 20000; the metrics cost O(N^2))\n"
    "  --seed S            seed of the sample, folds, k-means and SVD sketch (default 0)\n"
    "  --use-raw           the baseline reads raw/X and raw/var instead of X\n"
    "  --force             replace DIR if it exists (otherwise an error)\n"
    "  --quiet             no progress lines\n"
    "  -h, --help          this text\n"
    "\n"
    "DIR gets report.json (settings, cell counts, every metric; null where a metric\n"
    "is undefined), cells.tsv (each evaluated cell's row, label, batch, fold and\n"
    "k-means clusters), pca_genes.tsv (the baseline's genes), report.png (a bar\n"
    "chart, drawn by gnuplot) and report.gp with report.dat (to redraw it). It is\n"
    "written as DIR.tmp and renamed when complete. The table goes to standard\n"
    "output, progress to standard error.\n";

typedef struct {
    const char *input, *label, *batch, *embedding, *output;
    int no_pca, use_raw, force, quiet;
    unsigned long long k, max_cells, seed;
} eval_args;

/* "--flag value" or "--flag=value": the value of arg when it is flag, else
 * NULL; *i moves past a separate value. An empty value counts as missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *flag, int *missing) {
    size_t len = strlen(flag);
    const char *arg = argv[*i];
    if (strncmp(arg, flag, len) || (arg[len] && arg[len] != '=')) return NULL;
    const char *value = arg[len] == '=' ? arg + len + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    *missing = !value || !*value;
    return value;
}

/* A decimal in [lo, hi] with nothing after it. */
static int in_range(const char *text, unsigned long long lo, unsigned long long hi, unsigned long long *out) {
    char *end = NULL;
    errno = 0;
    if (*text < '0' || *text > '9') return 0;
    *out = strtoull(text, &end, 10);
    return !errno && !*end && *out >= lo && *out <= hi;
}

/* Parses argv into a; returns 0 or the usage error's exit code. */
static int parse_args(int argc, char **argv, eval_args *a) {
    *a = (eval_args){.embedding = "X_scfm", .k = 15, .max_cells = 20000};
    const struct {
        const char *flag;
        const char **text;
    } strings[] = {{"--label", &a->label}, {"--batch", &a->batch}, {"--embedding", &a->embedding},
                   {"--output", &a->output}, {"-o", &a->output}};
    const struct {
        const char *flag;
        unsigned long long lo, hi, *value;
    } numbers[] = {{"--k", 1, 1000, &a->k},
                   {"--max-cells", 100, 1000000, &a->max_cells},
                   {"--seed", 0, UINT64_MAX, &a->seed}};
    const struct {
        const char *flag;
        int *on;
    } switches[] = {{"--no-pca", &a->no_pca}, {"--use-raw", &a->use_raw}, {"--force", &a->force}, {"--quiet", &a->quiet}};
    char message[512];
    for (int i = 0; i < argc; i++) {
        int taken = 0, missing = 0;
        for (size_t s = 0; !taken && s < sizeof switches / sizeof switches[0]; s++)
            if (!strcmp(argv[i], switches[s].flag)) taken = *switches[s].on = 1;
        for (size_t s = 0; !taken && s < sizeof strings / sizeof strings[0]; s++) {
            const char *flag = argv[i], *value = flag_value(argc, argv, &i, strings[s].flag, &missing);
            if (!value && !missing) continue;
            if (missing) return scfm_cli_usage_error(eval_help, "eval: %s needs a value", flag);
            *strings[s].text = value;
            taken = 1;
        }
        for (size_t s = 0; !taken && s < sizeof numbers / sizeof numbers[0]; s++) {
            const char *flag = argv[i], *value = flag_value(argc, argv, &i, numbers[s].flag, &missing);
            if (!value && !missing) continue;
            if (missing) return scfm_cli_usage_error(eval_help, "eval: %s needs a value", flag);
            unsigned long long v;
            if (!in_range(value, numbers[s].lo, numbers[s].hi, &v)) {
                snprintf(message, sizeof message, "eval: %s must be an integer in [%llu, %llu], not '%.200s'",
                         numbers[s].flag, numbers[s].lo, numbers[s].hi, value);
                return scfm_cli_usage_error(eval_help, "%s", message);
            }
            *numbers[s].value = v;
            taken = 1;
        }
        if (taken) continue;
        if (argv[i][0] == '-' || a->input) return scfm_cli_usage_error(eval_help, "eval: unexpected argument '%s'", argv[i]);
        a->input = argv[i];
    }
    if (!a->input) return scfm_cli_usage_error(eval_help, "%s", "eval: an INPUT.h5ad is required");
    if (!a->label) return scfm_cli_usage_error(eval_help, "%s", "eval: --label COLUMN is required");
    if (!a->output) return scfm_cli_usage_error(eval_help, "%s", "eval: an output directory (-o DIR) is required");
    return 0;
}

/* The categories of obs column, or an error that lists the categorical
 * columns the file has. */
static scfm_status obs_column(scfm_matrix *m, const char *column, const char *flag, int *n,
                              const char *const **names, scfm_error *err) {
    for (int i = 0; i < scfm_matrix_num_obs_columns(m); i++)
        if (!strcmp(scfm_matrix_obs_column(m, i), column)) return scfm_matrix_obs_categories(m, column, n, names, err);
    char present[512] = "";
    for (int i = 0; i < scfm_matrix_num_obs_columns(m); i++) {
        size_t used = strlen(present);
        snprintf(present + used, sizeof present - used, "%s%s", i ? ", " : "", scfm_matrix_obs_column(m, i));
    }
    return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %s: no categorical column obs/%s (categorical obs columns: %s)",
                     scfm_matrix_path(m), flag, column, present[0] ? present : "none");
}

/* Rows cells[n] (ascending) of the embedding into x[n, dim]. */
static scfm_status read_embedding(scfm_obsm *o, const int64_t *cells, int64_t n, float *x, scfm_error *err) {
    int dim = scfm_obsm_dim(o);
    int64_t total = scfm_obsm_rows(o);
    float *buf = malloc(sizeof *buf * (size_t)EMBEDDING_CHUNK * (size_t)dim);
    if (!buf) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory reading the embedding");
    scfm_status st = SCFM_OK;
    for (int64_t row = 0; st == SCFM_OK && row < n;) {
        int64_t first = cells[row], count = total - first < EMBEDDING_CHUNK ? total - first : EMBEDDING_CHUNK;
        st = scfm_obsm_read(o, first, count, buf, err);
        for (; st == SCFM_OK && row < n && cells[row] < first + count; row++)
            memcpy(x + (size_t)row * dim, buf + (size_t)(cells[row] - first) * dim, sizeof *x * (size_t)dim);
    }
    free(buf);
    return st;
}

typedef struct {
    eval_args args;
    scfm_matrix *matrix;
    scfm_obsm *obsm;
    int64_t *cells;
    int32_t *all_labels, *all_batches, *labels, *batches, *fold, *clusters, *pca_clusters;
    float *x;
    scfm_pca pca;
} eval_state;

static void free_state(eval_state *s) {
    scfm_matrix_close(s->matrix);
    scfm_obsm_close(s->obsm);
    free(s->cells), free(s->all_labels), free(s->all_batches), free(s->labels), free(s->batches), free(s->fold);
    free(s->clusters), free(s->pca_clusters), free(s->x);
    scfm_pca_free(&s->pca);
}

/* Runs gnuplot on dir/report.gp inside dir (so the script's file names are
 * relative and it can be rerun there); its first error line goes to err. */
static scfm_status run_gnuplot(const char *dir, scfm_error *err) {
    char log[SCFM_PATH_MAX + 32];
    snprintf(log, sizeof log, "%s/gnuplot.err", dir);
    pid_t pid = fork();
    if (pid < 0) return scfm_fail(err, SCFM_ERR_IO, "cannot start gnuplot: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0 || chdir(dir) != 0) _exit(126);
        execlp("gnuplot", "gnuplot", "report.gp", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    char first[256] = "";
    FILE *f = fopen(log, "r");
    if (f && !fgets(first, sizeof first, f)) first[0] = '\0';
    if (f) fclose(f);
    remove(log);
    first[strcspn(first, "\n")] = '\0';
    if (code == 127) return scfm_fail(err, SCFM_ERR_IO, "gnuplot not found (Debian: apt install gnuplot-nox); "
                                      "needed for %s/report.png", dir);
    if (code != 0) return scfm_fail(err, SCFM_ERR_IO, "gnuplot failed (exit %d) drawing %s/report.png: %s", code, dir,
                                    first);
    return SCFM_OK;
}

/* Writes the value, or '-' (gnuplot's missing value) for NaN. */
static void dat_value(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "\t%.6f", v);
    else fputs("\t-", f);
}

static const char *const metric_names[] = {"kNN accuracy", "k-means ARI", "k-means NMI", "silhouette", "iLISI"};
enum { N_METRICS = 5 };

static void metric_values(const scfm_eval_metrics *m, double *v) {
    v[0] = m->knn_accuracy, v[1] = m->ari, v[2] = m->nmi, v[3] = m->silhouette, v[4] = m->ilisi;
}

/* text as a double-quoted gnuplot string */
static void gp_string(FILE *f, const char *text) {
    fputc('"', f);
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

/* report.dat and report.gp, then gnuplot draws report.png: one group of bars
 * per metric, the embedding's and the baseline's side by side. */
static scfm_status draw_chart(const char *dir, const eval_state *s, int64_t n, const scfm_eval_metrics *emb,
                              const scfm_eval_metrics *pca, scfm_error *err) {
    char path[SCFM_PATH_MAX + 32], title[SCFM_PATH_MAX];
    double ve[N_METRICS], vp[N_METRICS], low = 0.0;
    metric_values(emb, ve);
    if (pca) metric_values(pca, vp);
    snprintf(path, sizeof path, "%s/report.dat", dir);
    FILE *f = fopen(path, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    for (int i = 0; i < N_METRICS; i++) {
        fprintf(f, "\"%s\"", metric_names[i]);
        dat_value(f, ve[i]);
        if (pca) dat_value(f, vp[i]);
        fputc('\n', f);
        if (isfinite(ve[i])) low = fmin(low, ve[i]);
        if (pca && isfinite(vp[i])) low = fmin(low, vp[i]);
    }
    if (fclose(f) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    snprintf(path, sizeof path, "%s/report.gp", dir);
    if (!(f = fopen(path, "w"))) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f, "set terminal pngcairo size 900,500 font ',10' noenhanced\nset output 'report.png'\n"
               "set datafile missing '-'\nset style data histograms\nset style histogram clustered gap 1\n"
               "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset grid ytics\nset key top right\n"
               "set yrange [%.1f:1.1]\nset ylabel 'score'\nset title ",
            low < 0 ? floor(low * 10.0) / 10.0 : 0.0);
    snprintf(title, sizeof title, "%lld cells of %s; labels obs/%s%s%s", (long long)n, s->args.input, s->args.label,
             s->args.batch ? ", batches obs/" : "", s->args.batch ? s->args.batch : "");
    gp_string(f, title);
    fputs("\nplot 'report.dat' using 2:xtic(1) title ", f);
    gp_string(f, s->args.embedding);
    if (pca) fputs(", '' using 3 title 'PCA baseline'", f);
    fputc('\n', f);
    if (fclose(f) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return run_gnuplot(dir, err);
}

/* DIR.tmp, empty: a stale one from an interrupted run is removed first. */
static scfm_status fresh_tmp_dir(const char *tmp, scfm_error *err) {
    struct stat sb;
    if (stat(tmp, &sb) == 0) {
        scfm_status st = S_ISDIR(sb.st_mode) ? scfm_remove_dir(tmp, err) : remove(tmp) == 0 ? SCFM_OK
                         : scfm_fail(err, SCFM_ERR_IO, "%s: cannot remove: %s", tmp, strerror(errno));
        if (st != SCFM_OK) return st;
    }
    if (mkdir(tmp, 0755) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    return SCFM_OK;
}

/* Moves the complete DIR.tmp over DIR (which --force allowed to exist). */
static scfm_status publish(const char *tmp, const char *dir, scfm_error *err) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
        scfm_status st = S_ISDIR(sb.st_mode) ? scfm_remove_dir(dir, err) : remove(dir) == 0 ? SCFM_OK
                         : scfm_fail(err, SCFM_ERR_IO, "%s: cannot remove: %s", dir, strerror(errno));
        if (st != SCFM_OK) return st;
    }
    if (rename(tmp, dir) != 0) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
    return SCFM_OK;
}

static void print_row(const char *name, double emb, const scfm_eval_metrics *pca, double pca_value) {
    printf("%-34s", name);
    if (isfinite(emb)) printf(" %12.4f", emb);
    else printf(" %12s", "-");
    if (pca && isfinite(pca_value)) printf(" %12.4f", pca_value);
    else if (pca) printf(" %12s", "-");
    printf("\n");
}

static void print_table(const eval_state *s, int64_t n, const scfm_eval_metrics *emb, const scfm_eval_metrics *pca) {
    double ve[N_METRICS], vp[N_METRICS] = {0};
    char name[N_METRICS][64];
    metric_values(emb, ve);
    if (pca) metric_values(pca, vp);
    snprintf(name[0], sizeof name[0], "kNN accuracy (k=%llu, 5-fold CV)", s->args.k);
    snprintf(name[1], sizeof name[1], "k-means ARI");
    snprintf(name[2], sizeof name[2], "k-means NMI");
    snprintf(name[3], sizeof name[3], "silhouette (labels)");
    snprintf(name[4], sizeof name[4], "iLISI (batches, scib scaled)");
    printf("scfm eval: %lld cells, labels obs/%s\n%-34s %12.12s", (long long)n, s->args.label, "metric",
           s->args.embedding);
    if (pca) printf(" %12s", "PCA");
    printf("\n");
    for (int i = 0; i < N_METRICS; i++) print_row(name[i], ve[i], pca, vp[i]);
}

static scfm_status evaluate(eval_state *s, scfm_error *err) {
    const eval_args *a = &s->args;
    scfm_matrix_options opt = {.require_counts = 1, .skip_cell_names = 1, .use_raw = a->use_raw};
    int n_labels = 0, n_batches = 0;
    const char *const *label_names = NULL, *const *batch_names = NULL;
    scfm_status st = scfm_matrix_open(a->input, &opt, &s->matrix, err);
    if (st == SCFM_OK) st = obs_column(s->matrix, a->label, "--label", &n_labels, &label_names, err);
    if (st == SCFM_OK && a->batch) st = obs_column(s->matrix, a->batch, "--batch", &n_batches, &batch_names, err);
    if (st == SCFM_OK) st = scfm_obsm_open(a->input, a->embedding, &s->obsm, err);
    if (st != SCFM_OK) return st;
    int64_t total = scfm_matrix_num_cells(s->matrix), n = 0;
    int dim = scfm_obsm_dim(s->obsm);
    if (scfm_obsm_rows(s->obsm) != total)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: obsm/%s has %lld rows for %lld cells", a->input, a->embedding,
                         (long long)scfm_obsm_rows(s->obsm), (long long)total);
    size_t cells = (size_t)(total ? total : 1);
    s->cells = malloc(sizeof *s->cells * cells);
    s->all_labels = malloc(sizeof *s->all_labels * cells);
    s->all_batches = a->batch ? malloc(sizeof *s->all_batches * cells) : NULL;
    if (!s->cells || !s->all_labels || (a->batch && !s->all_batches))
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for the labels of %lld cells", a->input, (long long)total);
    st = scfm_matrix_obs_codes(s->matrix, a->label, 0, total, s->all_labels, err);
    if (st == SCFM_OK && a->batch) st = scfm_matrix_obs_codes(s->matrix, a->batch, 0, total, s->all_batches, err);
    if (st != SCFM_OK) return st;
    scfm_eval_select(s->all_labels, s->all_batches, total, (int64_t)a->max_cells, a->seed, s->cells, &n);
    if (n < 2)
        return scfm_fail(err, SCFM_ERR_FORMAT, "%s: %lld of the %lld cells have a label in obs/%s%s%s; at least 2 "
                         "are needed", a->input, (long long)n, (long long)total, a->label,
                         a->batch ? " and a batch in obs/" : "", a->batch ? a->batch : "");
    if (!a->quiet)
        fprintf(stderr, "scfm eval: %s: %lld cells, %lld evaluated; obsm/%s has %d dimensions\n", a->input,
                (long long)total, (long long)n, a->embedding, dim);

    s->x = malloc(sizeof *s->x * (size_t)n * (size_t)dim);
    s->labels = malloc(sizeof *s->labels * (size_t)n);
    s->batches = a->batch ? malloc(sizeof *s->batches * (size_t)n) : NULL;
    s->fold = malloc(sizeof *s->fold * (size_t)n);
    s->clusters = malloc(sizeof *s->clusters * (size_t)n);
    s->pca_clusters = a->no_pca ? NULL : malloc(sizeof *s->pca_clusters * (size_t)n);
    if (!s->x || !s->labels || (a->batch && !s->batches) || !s->fold || !s->clusters || (!a->no_pca && !s->pca_clusters))
        return scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory for %lld cells x %d dimensions", a->input,
                         (long long)n, dim);
    for (int64_t i = 0; i < n; i++) {
        s->labels[i] = s->all_labels[s->cells[i]];
        if (s->batches) s->batches[i] = s->all_batches[s->cells[i]];
    }
    scfm_eval_options o;
    scfm_eval_defaults(&o);
    o.k = (int)a->k;
    o.seed = a->seed;
    st = scfm_eval_folds(s->labels, n, n_labels, o.folds, o.seed, s->fold, err);
    if (st == SCFM_OK) st = read_embedding(s->obsm, s->cells, n, s->x, err);
    double start = scfm_now();
    scfm_eval_metrics emb, pca_metrics;
    if (st == SCFM_OK)
        st = scfm_eval_embedding(s->x, n, dim, s->labels, n_labels, s->batches, n_batches, s->fold, &o, &emb,
                                 s->clusters, err);
    if (st == SCFM_OK && !a->quiet) fprintf(stderr, "scfm eval: obsm/%s metrics in %.1f s\n", a->embedding, scfm_now() - start);

    scfm_pca_options po;
    scfm_pca_defaults(&po);
    po.seed = a->seed;
    if (st == SCFM_OK && !a->no_pca) {
        start = scfm_now();
        st = scfm_pca_baseline(s->matrix, s->cells, n, &po, &s->pca, err);
        if (st == SCFM_OK)
            st = scfm_eval_embedding(s->pca.scores, n, s->pca.n_components, s->labels, n_labels, s->batches,
                                     n_batches, s->fold, &o, &pca_metrics, s->pca_clusters, err);
        if (st == SCFM_OK && !a->quiet)
            fprintf(stderr, "scfm eval: PCA baseline (%d genes, %d components) and its metrics in %.1f s\n",
                    s->pca.n_hvg, s->pca.n_components, scfm_now() - start);
    }
    if (st != SCFM_OK) return st;

    char tmp[SCFM_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", a->output);
    scfm_eval_report r = {.input = a->input, .label = a->label, .batch = a->batch, .embedding = a->embedding,
                          .cells_total = total, .max_cells = (int64_t)a->max_cells, .n = n, .cells = s->cells,
                          .labels = s->labels, .batches = s->batches, .fold = s->fold, .n_labels = n_labels,
                          .n_batches = n_batches, .label_names = label_names, .embedding_dim = dim, .options = &o,
                          .embedding_metrics = &emb, .embedding_clusters = s->clusters,
                          .pca = a->no_pca ? NULL : &s->pca, .pca_options = &po, .pca_metrics = &pca_metrics,
                          .pca_clusters = s->pca_clusters, .matrix = s->matrix};
    for (int64_t i = 0; i < total; i++) r.cells_eligible += s->all_labels[i] >= 0 && (!a->batch || s->all_batches[i] >= 0);
    st = fresh_tmp_dir(tmp, err);
    if (st != SCFM_OK) return st;
    st = scfm_eval_write_report(tmp, &r, err);
    if (st == SCFM_OK) st = draw_chart(tmp, s, n, &emb, a->no_pca ? NULL : &pca_metrics, err);
    if (st == SCFM_OK) st = publish(tmp, a->output, err);
    if (st != SCFM_OK) {
        scfm_error ignored = {0};
        scfm_remove_dir(tmp, &ignored);
        return st;
    }
    print_table(s, n, &emb, a->no_pca ? NULL : &pca_metrics);
    if (!a->quiet) fprintf(stderr, "scfm eval: wrote %s/report.json and %s/report.png\n", a->output, a->output);
    return SCFM_OK;
}

int scfm_cmd_eval(int argc, char **argv) {
    if (scfm_cli_wants_help(argc, argv)) {
        fputs(eval_help, stdout);
        return 0;
    }
    eval_state s = {0};
    int rc = parse_args(argc, argv, &s.args);
    if (rc != 0) return rc;
    scfm_error err = {0};
    if (strlen(s.args.output) >= SCFM_PATH_MAX - 64) {
        scfm_fail(&err, SCFM_ERR_ARG, "%s: path too long", s.args.output);
        return scfm_cli_fail(&err);
    }
    struct stat sb;
    if (!s.args.force && stat(s.args.output, &sb) == 0) {
        scfm_fail(&err, SCFM_ERR_ARG, "%s: already exists (--force replaces it)", s.args.output);
        return scfm_cli_fail(&err);
    }
    scfm_status st = evaluate(&s, &err);
    free_state(&s);
    return st == SCFM_OK ? 0 : scfm_cli_fail(&err);
}
