/* Evaluation metrics on cases small enough to check by hand: ARI and NMI
 * (values from scikit-learn's documentation and worked out below), the
 * silhouette and kNN accuracy of four points on a line, k-means recovering
 * separated groups, iLISI of separated batches, the cell selection and the
 * stratified folds. tests/cli/eval.sh compares with scikit-learn at scale. */
#include <math.h>
#include <stdlib.h>

#include "harness.h"
#include "scfm/eval.h"

static double ari(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    scfm_error err = {0};
    double v = NAN;
    CU_ASSERT_EQUAL(scfm_eval_ari(a, ka, b, kb, n, &v, &err), SCFM_OK);
    return v;
}

static double nmi(const int32_t *a, int ka, const int32_t *b, int kb, int64_t n) {
    scfm_error err = {0};
    double v = NAN;
    CU_ASSERT_EQUAL(scfm_eval_nmi(a, ka, b, kb, n, &v, &err), SCFM_OK);
    return v;
}

static void test_ari(void) {
    const int32_t a[] = {0, 0, 1, 1}, swapped[] = {1, 1, 0, 0}, split[] = {0, 0, 1, 2}, one[] = {0, 0, 0, 0},
                  singletons[] = {0, 1, 2, 3};
    CU_ASSERT_DOUBLE_EQUAL(ari(a, 2, swapped, 2, 4), 1.0, 1e-12);
    /* pairs together in both 1, in a 2, in split 1 of 6: (1 - 2/6) / (1.5 - 2/6) = 4/7 */
    CU_ASSERT_DOUBLE_EQUAL(ari(a, 2, split, 3, 4), 4.0 / 7.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(ari(one, 1, singletons, 4, 4), 0.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(ari(one, 1, one, 1, 4), 1.0, 1e-12);
    scfm_error err = {0};
    double v;
    const int32_t bad[] = {0, 0, 2, 1};
    CU_ASSERT_EQUAL(scfm_eval_ari(a, 2, bad, 2, 4, &v, &err), SCFM_ERR_ARG);
}

static void test_nmi(void) {
    const int32_t a[] = {0, 0, 1, 1}, same[] = {1, 1, 0, 0}, cross[] = {0, 1, 0, 1}, split[] = {0, 0, 1, 2},
                  one[] = {0, 0, 0, 0};
    CU_ASSERT_DOUBLE_EQUAL(nmi(a, 2, same, 2, 4), 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(nmi(a, 2, cross, 2, 4), 0.0, 1e-12);
    /* MI = ln 2, H(a) = ln 2, H(split) = 1.5 ln 2: ln 2 / (1.25 ln 2) = 0.8 */
    CU_ASSERT_DOUBLE_EQUAL(nmi(a, 2, split, 3, 4), 0.8, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(nmi(one, 1, one, 1, 4), 1.0, 1e-12);
    /* an unused category changes nothing */
    CU_ASSERT_DOUBLE_EQUAL(nmi(a, 5, split, 7, 4), 0.8, 1e-12);
}

/* Four points 0, 1, 4, 5 on a line in folds 0, 1, 0, 1. */
static scfm_eval_metrics four_points(const int32_t *labels, int k, int32_t *clusters) {
    const float x[] = {0, 1, 4, 5};
    const int32_t fold[] = {0, 1, 0, 1};
    scfm_eval_options o;
    scfm_eval_defaults(&o);
    o.k = k;
    o.folds = 2;
    scfm_eval_metrics m;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_eval_embedding(x, 4, 1, labels, 2, NULL, 0, fold, &o, &m, clusters, &err), SCFM_OK);
    return m;
}

static void test_silhouette_knn_kmeans(void) {
    const int32_t grouped[] = {0, 0, 1, 1}, alternating[] = {0, 1, 0, 1};
    int32_t clusters[4];
    scfm_eval_metrics m = four_points(grouped, 1, clusters);
    /* points 0 and 5: a = 1, b = 4.5; points 1 and 4: a = 1, b = 3.5 */
    CU_ASSERT_DOUBLE_EQUAL(m.silhouette, (3.5 / 4.5 + 2.5 / 3.5) / 2.0, 1e-6);
    /* each point's nearest point in the other fold has its label */
    CU_ASSERT_DOUBLE_EQUAL(m.knn_accuracy, 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(m.ari, 1.0, 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(m.nmi, 1.0, 1e-12);
    CU_ASSERT_EQUAL(clusters[0], clusters[1]);
    CU_ASSERT_EQUAL(clusters[2], clusters[3]);
    CU_ASSERT_NOT_EQUAL(clusters[0], clusters[2]);
    CU_ASSERT_DOUBLE_EQUAL(m.kmeans_inertia, 1.0, 1e-6); /* four points 0.5 from their centres */
    CU_ASSERT(isnan(m.ilisi));

    m = four_points(alternating, 1, clusters);
    /* now each point's nearest point in the other fold has the other label */
    CU_ASSERT_DOUBLE_EQUAL(m.knn_accuracy, 0.0, 1e-12);
    /* points 0 and 5: a = 4, b = 3; points 1 and 4: a = 4, b = 2 */
    CU_ASSERT_DOUBLE_EQUAL(m.silhouette, (-1.0 / 4.0 - 2.0 / 4.0) / 2.0, 1e-6);
    /* k = 2: every point gets one vote of each label, and the lower label
     * wins, which is right for points 0 and 1 only */
    m = four_points(grouped, 2, clusters);
    CU_ASSERT_DOUBLE_EQUAL(m.knn_accuracy, 0.5, 1e-12);
}

/* Eight points in two batches: iLISI 0 when the batches sit far apart; for
 * pairs of nearby points of different batches, the value that
 * tests/reference/check_eval.py's numpy implementation of scib's definition
 * gives (lisi_scib). */
static void test_ilisi(void) {
    const float separated[] = {0, 1, 2, 3, 1000, 1001, 1002, 1003};
    const float pairs[] = {0, 0.5f, 5, 5.5f, 10, 10.5f, 15, 15.5f};
    const int32_t labels[8] = {0}, batches[] = {0, 0, 0, 0, 1, 1, 1, 1}, interleaved[] = {0, 1, 0, 1, 0, 1, 0, 1};
    const int32_t fold[] = {0, 1, 0, 1, 0, 1, 0, 1};
    int32_t clusters[8];
    scfm_eval_options o;
    scfm_eval_defaults(&o);
    o.folds = 2;
    scfm_eval_metrics m;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_eval_embedding(separated, 8, 1, labels, 1, batches, 2, fold, &o, &m, clusters, &err), SCFM_OK);
    CU_ASSERT_DOUBLE_EQUAL(m.ilisi, 0.0, 1e-9);
    CU_ASSERT(isnan(m.silhouette)); /* one label */
    CU_ASSERT_EQUAL(scfm_eval_embedding(pairs, 8, 1, labels, 1, interleaved, 2, fold, &o, &m, clusters, &err),
                    SCFM_OK);
    CU_ASSERT_DOUBLE_EQUAL(m.ilisi, 0.1829600965399112, 1e-6);
}

static void test_select_and_folds(void) {
    enum { N = 1000 };
    int32_t labels[N], batches[N], fold[N];
    int64_t cells[N], again[N], n = 0, n_again = 0;
    for (int i = 0; i < N; i++) {
        labels[i] = i % 7 == 0 ? -1 : i % 3;
        batches[i] = i % 11 == 0 ? -1 : i % 2;
    }
    scfm_eval_select(labels, batches, N, N, 1, cells, &n);
    int64_t want = 0;
    for (int i = 0; i < N; i++) want += labels[i] >= 0 && batches[i] >= 0;
    CU_ASSERT_EQUAL(n, want);
    scfm_eval_select(labels, NULL, N, 500, 1, cells, &n);
    scfm_eval_select(labels, NULL, N, 500, 1, again, &n_again);
    CU_ASSERT_EQUAL(n, 500);
    CU_ASSERT_EQUAL(n_again, 500);
    for (int64_t i = 0; i < n; i++) {
        CU_ASSERT(labels[cells[i]] >= 0);
        CU_ASSERT(i == 0 || cells[i] > cells[i - 1]);
        CU_ASSERT_EQUAL(cells[i], again[i]);
    }
    scfm_eval_select(labels, NULL, N, 500, 2, again, &n_again);
    int differ = 0;
    for (int64_t i = 0; i < n; i++) differ += cells[i] != again[i];
    CU_ASSERT(differ > 0);

    for (int i = 0; i < N; i++) labels[i] = i % 3;
    scfm_error err = {0};
    CU_ASSERT_EQUAL(scfm_eval_folds(labels, N, 3, 5, 0, fold, &err), SCFM_OK);
    for (int l = 0; l < 3; l++) {
        int per_fold[5] = {0};
        for (int i = 0; i < N; i++)
            if (labels[i] == l) per_fold[fold[i]]++;
        for (int f = 1; f < 5; f++) CU_ASSERT(abs(per_fold[f] - per_fold[0]) <= 1);
    }
}

int main(void) {
    CU_TestInfo tests[] = {{"ARI", test_ari},
                           {"NMI", test_nmi},
                           {"silhouette, kNN accuracy and k-means of four points", test_silhouette_knn_kmeans},
                           {"iLISI of separated and of paired batches", test_ilisi},
                           {"cell selection and stratified folds", test_select_and_folds},
                           CU_TEST_INFO_NULL};
    return scfm_test_run("eval", tests);
}
