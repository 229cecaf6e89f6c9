// bf16 for the CPU stand-in of CUDA (cuda_emu.h): the upper 16 bits of an
// fp32, rounded to nearest even, as __float2bfloat16 does.
#ifndef SCFM_TESTS_CUDA_EMU_BF16_H
#define SCFM_TESTS_CUDA_EMU_BF16_H

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
    uint16_t bits;
};

inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return {0x7FC0}; // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);
    return {(uint16_t)(u >> 16)};
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t u = (uint32_t)h.bits << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

#endif
