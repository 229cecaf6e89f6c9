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

/* psi(x) for x > 0: the recurrence up to 6, then the asymptotic series. */
static double digamma(double x) {
    double r = 0.0;
    for (; x < 6.0; x += 1.0) r -= 1.0 / x;
    const double f = 1.0 / (x * x);
    return r + log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))));
}

static double softplus(double x) { return x > 0.0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

static double log_gamma(double x) {
    int sign; /* lgamma's sign global would be a data race across threads */
    return lgamma_r(x, &sign);
}

/* The negative log-likelihood of one count x and, when the d* are not NULL,
 * its derivatives in mu, log theta and the zero-inflation logit pi (zi 0:
 * plain NB, pi unused). */
static double nb_term(double x, double mu, double theta, double pi, int zi, double *dmu, double *dlog_theta,
                      double *dpi) {
    const double log_theta_mu = log(theta + mu + COUNT_EPS), log_theta = log(theta + COUNT_EPS);
    const double nb_zero = theta * (log_theta - log_theta_mu); /* log NB(0) */
    const double dzero_dtheta = log_theta - log_theta_mu + theta / (theta + COUNT_EPS) - theta / (theta + mu + COUNT_EPS);
    if (zi && x < COUNT_EPS) {
        /* log(sigmoid(pi) + (1 - sigmoid(pi)) NB(0)) = softplus(-pi + log NB(0)) - softplus(-pi) */
        const double a = -pi + nb_zero;
        if (dmu) {
            const double s = sigmoid(a);
            *dmu = s * theta / (theta + mu + COUNT_EPS);
            *dlog_theta = -s * dzero_dtheta * theta;
            *dpi = s - sigmoid(-pi);
        }
        return softplus(-pi) - softplus(a);
    }
    double ll = nb_zero + x * (log(mu + COUNT_EPS) - log_theta_mu) + log_gamma(x + theta) - log_gamma(theta) -
                log_gamma(x + 1.0);
    if (zi) ll += -softplus(-pi) - pi; /* log(1 - sigmoid(pi)) */
    if (dmu) {
        *dmu = (theta + x) / (theta + mu + COUNT_EPS) - x / (mu + COUNT_EPS);
        *dlog_theta = -(dzero_dtheta - x / (theta + mu + COUNT_EPS) + digamma(x + theta) - digamma(theta)) * theta;
        if (zi) *dpi = sigmoid(pi);
    }
    return -ll;
}

void scfm_nb_forward(double *loss, const float *x, const float *mu, const float *log_theta, const float *pi, int n,
                     int G) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < n; c++) {
        const size_t row = (size_t)c * G;
        double sum = 0.0;
        for (int j = 0; j < G; j++)
            sum += nb_term(x[row + j], mu[row + j], exp(log_theta[j]), pi ? pi[row + j] : 0.0, pi != NULL, NULL,
                           NULL, NULL);
        loss[c] = sum;
    }
}

void scfm_nb_backward(float *dmu, float *dlog_theta, float *dpi, const float *x, const float *mu,
                      const float *log_theta, const float *pi, int n, int G, float scale) {
    /* Per-gene theta gradients are summed over cells by each thread's slice
     * of genes, in cell order, so the result does not depend on scheduling. */
#pragma omp parallel
    {
        int nth = omp_get_num_threads(), id = omp_get_thread_num();
        int lo = (int)((long)G * id / nth), hi = (int)((long)G * (id + 1) / nth);
        for (int j = lo; j < hi; j++) {
            const double theta = exp(log_theta[j]);
            double dt_sum = 0.0;
            for (int c = 0; c < n; c++) {
                const size_t at = (size_t)c * G + j;
                double dm, dt, dp = 0.0;
                nb_term(x[at], mu[at], theta, pi ? pi[at] : 0.0, pi != NULL, &dm, &dt, &dp);
                dmu[at] = (float)(scale * dm);
                if (dpi) dpi[at] = (float)(scale * dp);
                dt_sum += dt;
            }
            dlog_theta[j] += (float)(scale * dt_sum);
        }
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
