/* scfm eval: how well an embedding of cells separates their labels (cell
 * types) and mixes their batches, and the same for a PCA baseline computed
 * from the counts. Definitions, defaults and tolerances against scikit-learn
 * and scib are in docs/eval.md. Cells are rows of a float32 row-major
 * [n, dim] matrix; labels and batches are codes in [0, categories). */
#ifndef SCFM_EVAL_H
#define SCFM_EVAL_H

#include <stdint.h>

#include "scfm/core.h"
#include "scfm/io.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int k;              /* kNN classifier neighbours (15) */
    int folds;          /* cross-validation folds, stratified by label (5) */
    int kmeans_n_init;  /* k-means++ restarts; the lowest inertia wins (10) */
    int kmeans_max_iter;/* Lloyd iterations per restart (300) */
    int lisi_k;         /* iLISI neighbours (90, as scib) */
    double perplexity;  /* iLISI kernel perplexity (30 = lisi_k / 3, as scib) */
    uint64_t seed;      /* folds, k-means++ and the subsample (0) */
} scfm_eval_options;

void scfm_eval_defaults(scfm_eval_options *o);

/* The cells to evaluate: those whose label (and batch, when batches is not
 * NULL) is not missing (-1), and of those a seeded uniform sample of
 * max_cells when there are more. Fills cells[*n_out] (ascending; the caller
 * allocates n). */
void scfm_eval_select(const int32_t *labels, const int32_t *batches, int64_t n, int64_t max_cells,
                      uint64_t seed, int64_t *cells, int64_t *n_out);

/* Stratified folds: the cells of each label in a seeded random order are
 * dealt to folds 0, 1, ..., folds - 1, 0, ... (fold[n]). */
scfm_status scfm_eval_folds(const int32_t *labels, int64_t n, int n_labels, int folds, uint64_t seed,
                            int32_t *fold, scfm_error *err);

/* Adjusted Rand index and normalized mutual information (arithmetic mean of
 * the entropies, natural log) of two partitions with codes in [0, ka) and
 * [0, kb), as scikit-learn's adjusted_rand_score and
 * normalized_mutual_info_score (both 1 for two single-cluster partitions). */
scfm_status scfm_eval_ari(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, double *ari,
                          scfm_error *err);
scfm_status scfm_eval_nmi(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n, double *nmi,
                          scfm_error *err);

/* k-means (Lloyd) with k-means++ seeding, n_init restarts keyed by seed;
 * assign[n] gets the clusters of the restart with the lowest inertia (sum of
 * squared distances to the centres), which goes to *inertia. */
scfm_status scfm_eval_kmeans(const float *x, int64_t n, int dim, int k, int n_init, int max_iter, uint64_t seed,
                             int32_t *assign, double *inertia, scfm_error *err);

/* Every metric of one embedding; NAN where undefined (silhouette with one
 * label, iLISI without batches or with one batch). */
typedef struct {
    double knn_accuracy; /* pooled over the folds: correct predictions / n */
    double ari, nmi;     /* k-means with k = n_labels against the labels */
    double silhouette;   /* of the labels, Euclidean, as sklearn's silhouette_score */
    double ilisi;        /* scib: (median LISI - 1) / (n_batches - 1) */
    double kmeans_inertia;
} scfm_eval_metrics;

/* fold[n] from scfm_eval_folds; batches may be NULL. clusters[n] gets the
 * k-means assignment the ARI and NMI were computed from. */
scfm_status scfm_eval_embedding(const float *x, int64_t n, int dim, const int32_t *labels, int n_labels,
                                const int32_t *batches, int n_batches, const int32_t *fold,
                                const scfm_eval_options *o, scfm_eval_metrics *out, int32_t *clusters,
                                scfm_error *err);

/* ---- the PCA baseline: counts of each cell scaled to 10,000, log1p; the
 * n_hvg genes of highest dispersion (variance / mean of those values, over
 * the evaluated cells); centred; n_components by randomized SVD. ---- */
typedef struct {
    int n_hvg;          /* 2000 */
    int n_components;   /* 50, capped at min(cells - 1, genes kept) */
    int oversample;     /* extra sketch columns (50: the tail of a flat noise spectrum needs them) */
    int power_iter;     /* power iterations, each re-orthonormalised by QR (10) */
    uint64_t seed;      /* the Gaussian sketch */
} scfm_pca_options;

void scfm_pca_defaults(scfm_pca_options *o);

typedef struct {
    int n_hvg, n_components;
    int32_t *hvg;            /* [n_hvg] gene indices in the file, ascending */
    double *dispersion;      /* [n_hvg] of those genes */
    float *scores;           /* [n_cells, n_components], row-major */
    double *explained_variance;       /* [n_components]: singular value^2 / (n - 1) */
    double *explained_variance_ratio; /* [n_components]: of the total variance of the centred genes */
} scfm_pca;

/* Reads cells[n] (ascending) of m in chunks, two passes: gene statistics, then
 * the dense centred [n, n_hvg] matrix (n * n_hvg floats) that the SVD uses. */
scfm_status scfm_pca_baseline(scfm_matrix *m, const int64_t *cells, int64_t n, const scfm_pca_options *o,
                              scfm_pca *out, scfm_error *err);
void scfm_pca_free(scfm_pca *p);

/* ---- the report directory ---- */
typedef struct {
    const char *input, *label, *batch, *embedding; /* batch NULL: no batch column */
    int64_t cells_total, cells_eligible;            /* in the file; with a label (and batch) */
    int64_t max_cells;
    int64_t n;                                      /* evaluated: cells[n] of the file, ascending */
    const int64_t *cells;
    const int32_t *labels, *batches, *fold;         /* [n]; batches NULL without a batch column */
    int n_labels, n_batches;
    const char *const *label_names;                 /* [n_labels] */
    int embedding_dim;
    const scfm_eval_options *options;
    const scfm_eval_metrics *embedding_metrics;
    const int32_t *embedding_clusters;              /* [n] */
    const scfm_pca *pca;                            /* NULL: no baseline */
    const scfm_pca_options *pca_options;
    const scfm_eval_metrics *pca_metrics;
    const int32_t *pca_clusters;
    const scfm_matrix *matrix;                      /* gene ids of the baseline's genes */
} scfm_eval_report;

/* Writes into the existing directory dir: report.json (settings, cell counts,
 * every metric, NaN as null, the baseline's explained variance), cells.tsv
 * (per evaluated cell: its row in the file, label and batch codes, fold and
 * the k-means clusters) and, with a baseline, pca_genes.tsv (its genes). */
scfm_status scfm_eval_write_report(const char *dir, const scfm_eval_report *r, scfm_error *err);

#ifdef __cplusplus
}
#endif
#endif
