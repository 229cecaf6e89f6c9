/* Statistics the benchmarks share: they report medians of repeated runs. */
#ifndef SCFM_BENCH_UTIL_H
#define SCFM_BENCH_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bench_compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0, n) ascending, in place (for minima, maxima and medians). */
static inline void bench_sort(double *v, int n) { qsort(v, (size_t)n, sizeof *v, bench_compare_doubles); }

/* Median of v[0, n), which stays in its order (a sorted copy); NAN when out
 * of memory. */
static inline double bench_median(const double *v, int n) {
    double *s = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!s || n < 1) {
        free(s);
        return NAN;
    }
    memcpy(s, v, sizeof(double) * (size_t)n);
    bench_sort(s, n);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

#endif
