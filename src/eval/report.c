/* The files of an scfm eval report directory (docs/eval.md): report.json,
 * cells.tsv and pca_genes.tsv. The caller writes them into a temporary
 * directory and renames it, so a reader never sees half a report. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/json.h"
#include "scfm/eval.h"

/* A number, or null for NaN (JSON has no NaN). */
static void json_number(scfm_strbuf *b, double v) {
    if (isfinite(v)) scfm_strbuf_printf(b, "%.10g", v);
    else scfm_strbuf_printf(b, "null");
}

static void json_metrics(scfm_strbuf *b, const scfm_eval_metrics *m) {
    const struct {
        const char *name;
        double value;
    } fields[] = {{"knn_accuracy", m->knn_accuracy}, {"kmeans_ari", m->ari},      {"kmeans_nmi", m->nmi},
                  {"silhouette", m->silhouette},     {"ilisi", m->ilisi},         {"kmeans_inertia", m->kmeans_inertia}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        scfm_strbuf_printf(b, ", \"%s\": ", fields[i].name);
        json_number(b, fields[i].value);
    }
}

static scfm_status write_text(const char *dir, const char *name, const char *text, size_t len, scfm_error *err) {
    char path[4096];
    scfm_status st = scfm_path_join(path, sizeof path, dir, name, err);
    if (st != SCFM_OK) return st;
    FILE *f = fopen(path, "w");
    if (!f) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    size_t wrote = fwrite(text, 1, len, f);
    if (fclose(f) != 0 || wrote != len) return scfm_fail(err, SCFM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return SCFM_OK;
}

static void json_report(scfm_strbuf *b, const scfm_eval_report *r) {
    const scfm_eval_options *o = r->options;
    scfm_strbuf_printf(b, "{\n  \"input\": ");
    scfm_strbuf_json_string(b, r->input);
    scfm_strbuf_printf(b, ",\n  \"label\": ");
    scfm_strbuf_json_string(b, r->label);
    scfm_strbuf_printf(b, ",\n  \"batch\": ");
    if (r->batch) scfm_strbuf_json_string(b, r->batch);
    else scfm_strbuf_printf(b, "null");
    scfm_strbuf_printf(b, ",\n  \"embedding\": ");
    scfm_strbuf_json_string(b, r->embedding);
    scfm_strbuf_printf(b, ",\n  \"cells\": {\"in_file\": %lld, \"labelled\": %lld, \"evaluated\": %lld, "
                       "\"max_cells\": %lld},\n  \"label_categories\": [",
                       (long long)r->cells_total, (long long)r->cells_eligible, (long long)r->n,
                       (long long)r->max_cells);
    for (int l = 0; l < r->n_labels; l++) {
        if (l) scfm_strbuf_printf(b, ", ");
        scfm_strbuf_json_string(b, r->label_names[l]);
    }
    scfm_strbuf_printf(b, "],\n  \"settings\": {\"seed\": %llu, \"knn_k\": %d, \"folds\": %d, \"kmeans_n_init\": %d, "
                       "\"kmeans_max_iter\": %d, \"lisi_k\": %d",
                       (unsigned long long)o->seed, o->k, o->folds, o->kmeans_n_init, o->kmeans_max_iter, o->lisi_k);
    if (r->pca)
        scfm_strbuf_printf(b, ", \"pca_hvg\": %d, \"pca_components\": %d, \"pca_oversample\": %d, "
                           "\"pca_power_iter\": %d", r->pca_options->n_hvg, r->pca_options->n_components,
                           r->pca_options->oversample, r->pca_options->power_iter);
    scfm_strbuf_printf(b, "},\n  \"results\": {\n    \"embedding\": {\"name\": ");
    scfm_strbuf_json_string(b, r->embedding);
    scfm_strbuf_printf(b, ", \"dim\": %d", r->embedding_dim);
    json_metrics(b, r->embedding_metrics);
    scfm_strbuf_printf(b, "}");
    if (r->pca) {
        scfm_strbuf_printf(b, ",\n    \"pca\": {\"name\": \"PCA\", \"dim\": %d, \"hvg\": %d", r->pca->n_components,
                           r->pca->n_hvg);
        json_metrics(b, r->pca_metrics);
        scfm_strbuf_printf(b, ",\n            \"explained_variance_ratio\": [");
        for (int j = 0; j < r->pca->n_components; j++) {
            if (j) scfm_strbuf_printf(b, ", ");
            json_number(b, r->pca->explained_variance_ratio[j]);
        }
        scfm_strbuf_printf(b, "]}");
    }
    scfm_strbuf_printf(b, "\n  }\n}\n");
}

static void tsv_cells(scfm_strbuf *b, const scfm_eval_report *r) {
    scfm_strbuf_printf(b, "cell\tlabel\tbatch\tfold\tkmeans_embedding%s\n", r->pca ? "\tkmeans_pca" : "");
    for (int64_t i = 0; i < r->n; i++) {
        scfm_strbuf_printf(b, "%lld\t%d\t%d\t%d\t%d", (long long)r->cells[i], r->labels[i],
                           r->batches ? r->batches[i] : -1, r->fold[i], r->embedding_clusters[i]);
        if (r->pca) scfm_strbuf_printf(b, "\t%d", r->pca_clusters[i]);
        scfm_strbuf_printf(b, "\n");
    }
}

static void tsv_genes(scfm_strbuf *b, const scfm_eval_report *r) {
    scfm_strbuf_printf(b, "gene\tgene_id\tdispersion\n");
    for (int j = 0; j < r->pca->n_hvg; j++)
        scfm_strbuf_printf(b, "%d\t%s\t%.10g\n", r->pca->hvg[j], scfm_matrix_gene_id(r->matrix, r->pca->hvg[j]),
                           r->pca->dispersion[j]);
}

scfm_status scfm_eval_write_report(const char *dir, const scfm_eval_report *r, scfm_error *err) {
    static const char *const names[] = {"report.json", "cells.tsv", "pca_genes.tsv"};
    void (*const writers[])(scfm_strbuf *, const scfm_eval_report *) = {json_report, tsv_cells, tsv_genes};
    scfm_status st = SCFM_OK;
    for (int f = 0; f < (r->pca ? 3 : 2) && st == SCFM_OK; f++) {
        scfm_strbuf b = {0};
        writers[f](&b, r);
        if (b.failed) st = scfm_fail(err, SCFM_ERR_NOMEM, "%s/%s: out of memory", dir, names[f]);
        else st = write_text(dir, names[f], b.data, b.len, err);
        scfm_strbuf_free(&b);
    }
    return st;
}
