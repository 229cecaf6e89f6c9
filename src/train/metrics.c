/* Reading metrics.jsonl back for plots and sweeps. The writer is the training
 * loop; every line is a flat JSON object with numeric fields. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scfm/train.h"

/* The number after "key": in a flat JSON line; 0 when absent. */
static int field(const char *line, const char *key, double *value) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *p = strstr(line, pattern);
    if (!p) return 0;
    char *end;
    *value = strtod(p + strlen(pattern), &end);
    return end != p + strlen(pattern);
}

static int grow(scfm_metrics *m) {
    int64_t cap = m->cap ? 2 * m->cap : 1024;
    int64_t *step = realloc(m->step, sizeof(int64_t) * (size_t)cap);
    if (step) m->step = step;
    double *tokens = realloc(m->tokens, sizeof(double) * (size_t)cap);
    if (tokens) m->tokens = tokens;
    double *loss = realloc(m->loss, sizeof(double) * (size_t)cap);
    if (loss) m->loss = loss;
    if (!step || !tokens || !loss) return 0;
    m->cap = cap;
    return 1;
}

scfm_status scfm_metrics_read(const char *path, scfm_metrics *out, scfm_error *err) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char line[4096];
    int64_t lineno = 0;
    double total_tokens = 0.0;
    scfm_status st = SCFM_OK;
    while (st == SCFM_OK && fgets(line, sizeof line, f)) {
        lineno++;
        double step, tokens, loss;
        if (!field(line, "step", &step) || !field(line, "tokens", &tokens) || !field(line, "loss", &loss)) {
            st = scfm_fail(err, SCFM_ERR_FORMAT, "%s:%lld: expected \"step\", \"tokens\" and \"loss\"", path, (long long)lineno);
            break;
        }
        /* a resumed run rewrites the steps after its checkpoint */
        while (out->n > 0 && out->step[out->n - 1] >= (int64_t)step) {
            out->n--;
            total_tokens = out->n > 0 ? out->tokens[out->n - 1] : 0.0;
        }
        if (out->n == out->cap && !grow(out)) {
            st = scfm_fail(err, SCFM_ERR_NOMEM, "%s: out of memory", path);
            break;
        }
        total_tokens += tokens;
        out->step[out->n] = (int64_t)step;
        out->tokens[out->n] = total_tokens;
        out->loss[out->n] = loss;
        out->n++;
    }
    fclose(f);
    if (st == SCFM_OK && out->n == 0) st = scfm_fail(err, SCFM_ERR_FORMAT, "%s: no metrics", path);
    if (st != SCFM_OK) scfm_metrics_free(out);
    return st;
}

void scfm_metrics_free(scfm_metrics *m) {
    free(m->step);
    free(m->tokens);
    free(m->loss);
    memset(m, 0, sizeof *m);
}

scfm_status scfm_power_law_fit(const double *x, const double *y, int n, double *a, double *b, scfm_error *err) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        if (!(x[i] > 0) || !(y[i] > 0)) return scfm_fail(err, SCFM_ERR_ARG, "power-law fit: point %d is not positive", i);
        double lx = log(x[i]), ly = log(y[i]);
        sx += lx;
        sy += ly;
        sxx += lx * lx;
        sxy += lx * ly;
    }
    double denom = n * sxx - sx * sx;
    if (n < 2 || fabs(denom) < 1e-12)
        return scfm_fail(err, SCFM_ERR_ARG, "power-law fit: needs at least two distinct x values");
    double slope = (n * sxy - sx * sy) / denom;
    *b = -slope;
    *a = exp((sy - slope * sx) / n);
    return SCFM_OK;
}
