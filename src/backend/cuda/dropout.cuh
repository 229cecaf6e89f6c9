// The CPU's dropout masks on the device, for the kernels of kernels.cu and
// flash.cu (CUDA C++ only).
#ifndef SCFM_BACKEND_CUDA_DROPOUT_CUH
#define SCFM_BACKEND_CUDA_DROPOUT_CUH

#include <stdint.h>

namespace scfm_cuda {

// scfm_mix64 (src/backend/cpu/vmath.h): SplitMix64's finaliser.
__device__ inline uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The CPU's dropout mask (kernels.c): MurmurHash3's finaliser over a Weyl
// sequence seeded by the row key; element j is dropped when its hash is
// below p * 2^32.
__device__ inline float keep_factor(uint64_t row_key, int j, uint32_t threshold, float scale) {
    uint32_t h = (uint32_t)(row_key ^ (row_key >> 32)) + (uint32_t)j * 0x9E3779B9u;
    h = (h ^ (h >> 16)) * 0x85EBCA6Bu;
    h = (h ^ (h >> 13)) * 0xC2B2AE35u;
    return (h ^ (h >> 16)) < threshold ? 0.0f : scale;
}

// The threshold and scale of scfm_dropout_apply for probability p.
inline void dropout_params(float p, uint32_t *threshold, float *scale) {
    const double scaled = (double)p * 4294967296.0;
    *threshold = scaled >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)scaled;
    *scale = 1.0f / (1.0f - p);
}

}  // namespace scfm_cuda

#endif
