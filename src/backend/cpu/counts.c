/* Kernels of the count encoders' losses (docs/encoders.md): the count mean
 * library x softmax, the negative log-likelihoods of raw counts under a
 * negative binomial (optionally zero-inflated) and a Poisson, as scVI writes
 * them, the per-cell squared error, and the Gaussian KL term. n cells, G
 * genes, D latent dimensions; every loss is per cell, summed over genes, in
 * double so long count vectors do not lose the small terms. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "backend/cpu/vmath.h"

/* scVI's guard inside the logarithms of the NB family. */
#define COUNT_EPS 1e-8

void scfm_count_mean_forward(float *mu, const float *logits, const float *library, int n, int G) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        float *m = mu + (size_t)c * G, mx, sum;
        memcpy(m, logits + (size_t)c * G, sizeof(float) * (size_t)G);
        scfm_softmax_row(m, G, &mx, &sum);
        for (int j = 0; j < G; j++) m[j] *= library[c];
    }
}

void scfm_count_mean_backward(float *dlogits, const float *dmu, const float *mu, const float *library, int n,
                              int G) {
    /* mu_k = l softmax_k: d/dlogit_j = mu_j dmu_j - rho_j sum_k mu_k dmu_k */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        const float *m = mu + (size_t)c * G, *d = dmu + (size_t)c * G;
        float *o = dlogits + (size_t)c * G;
        double dot = 0.0;
        for (int j = 0; j < G; j++) dot += (double)m[j] * d[j];
        const double rho_dot = dot / library[c];
        for (int j = 0; j < G; j++) o[j] = (float)((double)m[j] * d[j] - m[j] * rho_dot);
    }
}

static double softplus(double x) { return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* log Gamma(z) for z > 0: the recurrence up to 8 (one logarithm of the
 * product), then Stirling's series, whose first omitted term is below 1e-11
 * there. Two to three times faster than lgamma_r, which dominated the NB
 * loss (docs/performance.md, "Count encoders"). */
static double stirling(double z, double log_z) {
    const double f = 1.0 / (z * z);
    return (z - 0.5) * log_z - z + 0.91893853320467274178 + (1.0 / 12 - f * (1.0 / 360 - f * (1.0 / 1260 - f / 1680))) / z;
}

static double log_gamma(double z) {
    double shift = 1.0;
    for (; z < 8.0; z += 1.0) shift *= z;
    return stirling(z, log(z)) - (shift != 1.0 ? log(shift) : 0.0);
}

/* log Gamma(z) and psi(z) together (z > 0), sharing the recurrence and the
 * logarithm: the NB gradient needs both at every non-zero count. */
static void log_gamma_digamma(double z, double *lg, double *dg) {
    double shift = 1.0, back = 0.0;
    for (; z < 8.0; z += 1.0) {
        shift *= z;
        back += 1.0 / z;
    }
    const double f = 1.0 / (z * z), log_z = log(z);
    *lg = stirling(z, log_z) - (shift != 1.0 ? log(shift) : 0.0);
    *dg = log_z - 0.5 / z - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132)))) - back;
}

/* log x! of the small integer counts that make up most of a count matrix. */
#define LOG_FACTORIALS SCFM_NB_LOG_FACTORIALS

static double log_factorial(double x, const double *table) {
    return x < LOG_FACTORIALS && x == floor(x) ? table[(int)x] : log_gamma(x + 1.0);
}

/* What every count of a gene shares, computed once per call, in one block
 * of doubles per gene: theta, its logarithm, theta / (theta + eps),
 * log Gamma(theta) and psi(theta), and for the small counts that most
 * entries are, log Gamma(theta + x) - log Gamma(theta) and psi(theta + x) -
 * psi(theta) by the recurrence (one logarithm and one division per step,
 * shared by every cell). */
#define SMALL_COUNTS SCFM_NB_SMALL_COUNTS
enum {
    THETA,
    LOG_THETA,
    THETA_RATIO,
    LOG_GAMMA_THETA,
    DIGAMMA_THETA,
    GAMMA_STEP,
    DIGAMMA_STEP = GAMMA_STEP + SMALL_COUNTS,
    GENE_TERMS = DIGAMMA_STEP + SMALL_COUNTS
};
_Static_assert(GENE_TERMS == SCFM_NB_GENE_TERMS, "cpu.h sizes the scratch by SCFM_NB_GENE_TERMS");

static void fill_gene_terms(double *g, double theta) {
    g[THETA] = theta;
    g[LOG_THETA] = log(theta + COUNT_EPS);
    g[THETA_RATIO] = theta / (theta + COUNT_EPS);
    log_gamma_digamma(theta, &g[LOG_GAMMA_THETA], &g[DIGAMMA_THETA]);
    g[GAMMA_STEP] = g[DIGAMMA_STEP] = 0.0;
    for (int x = 1; x < SMALL_COUNTS; x++) {
        g[GAMMA_STEP + x] = g[GAMMA_STEP + x - 1] + log(theta + x - 1);
        g[DIGAMMA_STEP + x] = g[DIGAMMA_STEP + x - 1] + 1.0 / (theta + x - 1);
    }
}

/* The negative log-likelihood of one count x and, when dmu is not NULL, its
 * derivatives in mu, log theta and the zero-inflation logit pi (zi 0: plain
 * NB, pi unused). A zero count under the plain NB needs no log-gamma: its
 * Gamma terms cancel. */
static double nb_term(double x, double mu, const double *g, const double *log_factorials, double pi, int zi,
                      double *dmu, double *dlog_theta, double *dpi) {
    const double theta = g[THETA], theta_mu = theta + mu + COUNT_EPS, log_theta_mu = log(theta_mu);
    const double nb_zero = theta * (g[LOG_THETA] - log_theta_mu); /* log NB(0) */
    const double dzero_dtheta = g[LOG_THETA] - log_theta_mu + g[THETA_RATIO] - theta / theta_mu;
    if (zi && x < COUNT_EPS) {
        /* log(sigmoid(pi) + (1 - sigmoid(pi)) NB(0)) = softplus(-pi + log NB(0)) - softplus(-pi) */
        const double a = -pi + nb_zero;
        if (dmu) {
            const double s = sigmoid(a);
            *dmu = s * theta / theta_mu;
            *dlog_theta = -s * dzero_dtheta * theta;
            *dpi = s - sigmoid(-pi);
        }
        return softplus(-pi) - softplus(a);
    }
    double ll = nb_zero, lg = 0.0, dg = 0.0; /* log Gamma(x + theta) - log Gamma(theta), psi likewise */
    if (x >= COUNT_EPS) {
        if (x < SMALL_COUNTS && x == floor(x)) {
            lg = g[GAMMA_STEP + (int)x];
            dg = g[DIGAMMA_STEP + (int)x];
        } else {
            log_gamma_digamma(x + theta, &lg, &dg);
            lg -= g[LOG_GAMMA_THETA];
            dg -= g[DIGAMMA_THETA];
        }
        ll += x * (log(mu + COUNT_EPS) - log_theta_mu) + lg - log_factorial(x, log_factorials);
    }
    if (zi) ll += -softplus(-pi) - pi; /* log(1 - sigmoid(pi)) */
    if (dmu) {
        *dmu = (theta + x) / theta_mu - x / (mu + COUNT_EPS);
        *dlog_theta = -(dzero_dtheta - x / theta_mu + dg) * theta;
        if (zi) *dpi = sigmoid(pi);
    }
    return -ll;
}

void scfm_nb_forward(double *loss, float *dmu, float *dlt, float *dpi, const float *x, const float *mu,
                     const float *log_theta, const float *pi, int n, int G, double *scratch) {
#pragma omp parallel for schedule(static)
    for (int j = 0; j < G; j++) fill_gene_terms(scratch + (size_t)j * GENE_TERMS, exp(log_theta[j]));
    double *log_factorials = scratch + (size_t)G * GENE_TERMS;
    for (int k = 0; k < LOG_FACTORIALS; k++) log_factorials[k] = log_gamma(k + 1.0);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        const size_t row = (size_t)c * G;
        double sum = 0.0, dm = 0.0, dt = 0.0, dp = 0.0;
        for (int j = 0; j < G; j++) {
            const size_t at = row + j;
            sum += nb_term(x[at], mu[at], scratch + (size_t)j * GENE_TERMS, log_factorials, pi ? pi[at] : 0.0, pi != NULL, dmu ? &dm : NULL, &dt, &dp);
            if (!dmu) continue;
            dmu[at] = (float)dm;
            dlt[at] = (float)dt;
            if (dpi) dpi[at] = (float)dp;
        }
        loss[c] = sum;
    }
}

void scfm_nb_backward(float *dmu, float *dpi, float *dlog_theta, const float *dlt, int n, int G, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)n * G; i++) {
        dmu[i] *= scale;
        if (dpi) dpi[i] *= scale;
    }
    /* per gene, summed over cells in cell order: the same on any thread count */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < G; j++) {
        double sum = 0.0;
        for (int c = 0; c < n; c++) sum += dlt[(size_t)c * G + j];
        dlog_theta[j] += (float)(scale * sum);
    }
}

void scfm_poisson_forward(double *loss, const float *x, const float *mu, int n, int G) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        const size_t row = (size_t)c * G;
        double sum = 0.0;
        for (int j = 0; j < G; j++) {
            const double k = x[row + j];
            sum += mu[row + j] - k * log(mu[row + j] + COUNT_EPS) + log_gamma(k + 1.0);
        }
        loss[c] = sum;
    }
}

void scfm_poisson_backward(float *dmu, const float *x, const float *mu, int n, int G, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)n * G; i++) dmu[i] = scale * (float)(1.0 - x[i] / (mu[i] + COUNT_EPS));
}

void scfm_sqerr_forward(double *loss, const float *pred, const float *target, const float *mask, int n, int G) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        const size_t row = (size_t)c * G;
        double sum = 0.0;
        for (int j = 0; j < G; j++) {
            const double e = (double)pred[row + j] - target[row + j];
            sum += (mask ? mask[row + j] : 1.0) * e * e;
        }
        loss[c] = sum;
    }
}

void scfm_sqerr_backward(float *dpred, const float *pred, const float *target, const float *mask, int n, int G,
                         float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)n * G; i++)
        dpred[i] = 2.0f * scale * (mask ? mask[i] : 1.0f) * (pred[i] - target[i]);
}

void scfm_kl_normal_forward(double *loss, const float *mu, const float *logvar, int n, int D) {
    for (int c = 0; c < n; c++) {
        double sum = 0.0;
        for (int k = 0; k < D; k++) {
            const size_t at = (size_t)c * D + k;
            sum += -0.5 * (1.0 + logvar[at] - (double)mu[at] * mu[at] - exp(logvar[at]));
        }
        loss[c] = sum;
    }
}

void scfm_kl_normal_backward(float *dmu, float *dlogvar, const float *mu, const float *logvar, int n, int D,
                             float scale) {
    for (size_t i = 0; i < (size_t)n * D; i++) {
        dmu[i] += scale * mu[i];
        dlogvar[i] += scale * 0.5f * (expf(logvar[i]) - 1.0f);
    }
}
