// nvcuda::wmma for the CPU stand-in of CUDA (cuda_emu.h), 16x16x16 with bf16
// inputs and fp32 accumulators, with the documented element layouts: for
// matrix_a, element (i, k) at p[i * ldm + k] (row_major) or p[k * ldm + i]
// (col_major); for matrix_b, (k, j) at p[k * ldm + j] or p[j * ldm + k];
// accumulators (i, j) at p[i * ldm + j] in mem_row_major. Every lane holds
// the whole tile; lane 0 alone stores, so the kernels must __syncwarp
// between a store and the reads of it, as on a GPU.
#ifndef SCFM_TESTS_CUDA_EMU_MMA_H
#define SCFM_TESTS_CUDA_EMU_MMA_H

#include "cuda_bf16.h"
#include "cuda_emu.h"

namespace nvcuda {
namespace wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    float x[16 * 16]; // element (r, c) at x[r * 16 + c]
};

template <typename Use, typename T, typename Layout>
inline void fill_fragment(fragment<Use, 16, 16, 16, T, Layout> &f, float v) {
    for (float &e : f.x) e = v;
}

// (r, c) of the tile from memory, for a layout where (r, c) sits at
// p[r * row_stride + c * col_stride].
template <typename F>
inline void load_tile(F &f, const __nv_bfloat16 *p, unsigned row_stride, unsigned col_stride) {
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = __bfloat162float(p[r * row_stride + c * col_stride]);
}

inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major> &f, const __nv_bfloat16 *p,
                             unsigned ldm) {
    load_tile(f, p, ldm, 1);
}
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major> &f, const __nv_bfloat16 *p,
                             unsigned ldm) {
    load_tile(f, p, 1, ldm);
}
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major> &f, const __nv_bfloat16 *p,
                             unsigned ldm) {
    load_tile(f, p, ldm, 1);
}
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major> &f, const __nv_bfloat16 *p,
                             unsigned ldm) {
    load_tile(f, p, 1, ldm);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l) {
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l) {
    if (threadIdx.x % 32 == 0)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++) (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}

template <typename LA, typename LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d,
                     const fragment<matrix_a, 16, 16, 16, __nv_bfloat16, LA> &a,
                     const fragment<matrix_b, 16, 16, 16, __nv_bfloat16, LB> &b,
                     const fragment<accumulator, 16, 16, 16, float> &c) {
    float out[16 * 16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            float s = c.x[i * 16 + j];
            for (int k = 0; k < 16; k++) s += a.x[i * 16 + k] * b.x[k * 16 + j];
            out[i * 16 + j] = s;
        }
    for (int i = 0; i < 256; i++) d.x[i] = out[i];
}

}  // namespace wmma
}  // namespace nvcuda

#endif
