/* Private: what the evaluation files share. */
#ifndef SCFM_EVAL_IMPL_H
#define SCFM_EVAL_IMPL_H

#include <stdint.h>

#include "scfm/core.h"

#define SCFM_EVAL_PRIVATE __attribute__((visibility("hidden")))

/* Streams of the generator for evaluation, apart from training's (core.h). */
enum {
    SCFM_EVAL_STREAM_SAMPLE = 101,
    SCFM_EVAL_STREAM_FOLDS = 102,
    SCFM_EVAL_STREAM_KMEANS = 103,
    SCFM_EVAL_STREAM_SKETCH = 104
};

/* Four random words for (seed, stream, a, b): a pure function of the four. */
static inline void scfm_eval_words(uint64_t seed, uint32_t stream, uint64_t a, uint32_t b, uint32_t out[4]) {
    const uint32_t counter[4] = {(uint32_t)a, (uint32_t)(a >> 32), b, stream};
    scfm_philox(seed, counter, out);
}

/* A uniform integer in [0, n), n > 0 (64 random bits; the modulo bias is
 * below 2^-30 for any n under 2^34). */
static inline uint64_t scfm_eval_below(uint64_t seed, uint32_t stream, uint64_t a, uint32_t b, uint64_t n) {
    uint32_t w[4];
    scfm_eval_words(seed, stream, a, b, w);
    return (((uint64_t)w[0] << 32) | w[1]) % n;
}

#endif
