/* The relative L2 difference the CUDA tests compare backends by (C and C++). */
#ifndef SCFM_TESTS_CUDA_RELATIVE_L2_H
#define SCFM_TESTS_CUDA_RELATIVE_L2_H

#include <math.h>
#include <stddef.h>

static inline double scfm_test_l2(const float *x, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
    return sqrt(sum);
}

/* ||got - want|| / ||want||, the denominator at least `floor` (1 where
 * both are 0). */
static inline double scfm_test_relative_l2(const float *got, const float *want, size_t n, double floor) {
    double diff = 0.0;
    for (size_t i = 0; i < n; i++) diff += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    double norm = scfm_test_l2(want, n);
    norm = norm > floor ? norm : floor;
    return sqrt(diff) / (norm > 0.0 ? norm : 1.0);
}

#endif
