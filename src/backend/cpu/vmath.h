/* Small inline math the kernels vectorise: glibc's expf does not vectorise
 * unless every fast-math flag is on, so softmax uses this one. */
#ifndef SCFM_BACKEND_CPU_VMATH_H
#define SCFM_BACKEND_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 88, relative error below 2e-7 (Cephes expf polynomial on
 * the range-reduced argument); flushes to 0 below -87. */
static inline float scfm_expf(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* Replaces row[0..n) by its softmax; returns max and sum of exp(row - max)
 * through *max_out and *sum_out (for a log-sum-exp). */
static inline void scfm_softmax_row(float *row, int n, float *max_out, float *sum_out) {
    float mx = row[0];
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        row[j] = scfm_expf(row[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) row[j] *= inv;
    *max_out = mx;
    *sum_out = sum;
}

/* SplitMix64 finaliser: the counter-based hash behind dropout masks. */
static inline uint64_t scfm_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
