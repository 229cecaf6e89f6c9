// The flash attention kernels (src/backend/cuda/flash_kernels.cuh) run on
// the CPU through a stand-in for CUDA (tests/cuda/emu/), against the CPU's
// attention: the same kernel source that runs on a GPU, each block's
// threads as fibers with real barriers, the WMMA tiles with their
// documented layouts and bf16 rounding. It checks the kernels' indexing,
// tiling, online softmax, dropout masks and synchronisation where no GPU
// is; what it cannot check is the hardware (fragment layouts inside a warp,
// shared-memory limits, speed), which cuda.test_cuda_kernels does on a GPU.
//
// Cells of 130 (three tiles, the last partial), 1, 0 and 69 (two) tokens;
// heads of width 16, 32 and 64; dropout 0 and 0.2 on the probabilities.
// Tolerances as on the GPU: the output within 1e-2 and the gradient within
// 2e-2 in relative L2 (bf16 q, k, v, probabilities and gradients).
#include "emu/cuda_emu.h"

namespace scfm_cuda_flash {
alignas(128) unsigned char smem[160 * 1024]; // the blocks' dynamic shared memory, one block at a time
}
#include "backend/cuda/flash_kernels.cuh"

#include <cstdio>
#include <cstdlib>

extern "C" {
#include "backend/cpu/cpu.h"
#include "harness.h"
#include "relative_l2.h"
}

using namespace scfm_cuda_flash;

static uint64_t rng_state = 0xF1A5u;

static float uniform(float lo, float hi) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}

template <int D>
static void flash_case(float p) {
    const int heads = 2, C = heads * D, n_cells = 4;
    const int32_t offsets[] = {0, 130, 131, 131, 200};
    const int64_t cell_ids[] = {31, 32, 33, 34};
    const int T = offsets[n_cells], max_len = 130;
    const uint32_t site = 7;
    const scfm_attention_dropout drop = {p, 5, 2, site, cell_ids};
    std::vector<float> qkv((size_t)T * 3 * C), dout((size_t)T * C);
    for (float &v : qkv) v = uniform(-1, 1);
    for (float &v : dout) v = uniform(-1, 1);
    std::vector<float> out((size_t)T * C), dqkv((size_t)T * 3 * C);
    std::vector<float> probs(scfm_attention_probs_size(offsets, n_cells, heads));
    std::vector<float> scratch(2 * (size_t)max_len * max_len * 64);
    scfm_attention_forward(out.data(), probs.data(), qkv.data(), offsets, n_cells, C, heads, &drop, scratch.data(),
                           max_len);
    scfm_attention_backward(dqkv.data(), dout.data(), qkv.data(), probs.data(), offsets, n_cells, C, heads, &drop,
                            scratch.data(), max_len);

    std::vector<scfm_cuda_flash_tile> tiles;
    for (int c = 0; c < n_cells; c++)
        for (int first = 0; first < offsets[c + 1] - offsets[c]; first += kTile)
            tiles.push_back({offsets[c], offsets[c + 1] - offsets[c], first, c});
    std::vector<uint64_t> keys(n_cells);
    for (int c = 0; c < n_cells; c++) keys[c] = scfm_dropout_cell_key(5, 2, site, cell_ids[c]);
    const uint64_t *cell_keys = p > 0.0f ? keys.data() : nullptr;
    const float scale = 1.0f / std::sqrt((float)D);
    uint32_t threshold = 0;
    float keep_scale = 1.0f;
    scfm_cuda::dropout_params(p, &threshold, &keep_scale);

    std::vector<float> got_out((size_t)T * C, NAN), lse((size_t)heads * T, NAN), got_dqkv((size_t)T * 3 * C, 0.0f);
    const dim3 grid((unsigned)tiles.size(), (unsigned)heads);
    emu_launch(grid, dim3(kThreads), [&] {
        flash_forward_kernel<D>(got_out.data(), lse.data(), qkv.data(), tiles.data(), T, C, scale, cell_keys,
                                threshold, keep_scale);
    });
    std::vector<float> delta((size_t)heads * T);
    emu_launch(dim3(4), dim3(64),
               [&] { flash_delta_kernel(delta.data(), dout.data(), got_out.data(), T, C, D); });
    emu_launch(grid, dim3(kThreads), [&] {
        flash_backward_kernel<D>(got_dqkv.data(), dout.data(), qkv.data(), lse.data(), delta.data(), tiles.data(), T,
                                 C, scale, cell_keys, threshold, keep_scale);
    });
    const double e_out = scfm_test_relative_l2(got_out.data(), out.data(), out.size(), 0.0),
                 e_back = scfm_test_relative_l2(got_dqkv.data(), dqkv.data(), dqkv.size(), 0.0);
    printf("\n  head width %d, dropout %.1f: output relative L2 %.2e, backward %.2e", D, p, e_out, e_back);
    CU_ASSERT(e_out < 1e-2);
    CU_ASSERT(e_back < 2e-2);
}

static void test_width_16(void) {
    flash_case<16>(0.0f);
    flash_case<16>(0.2f);
}
static void test_width_32(void) {
    flash_case<32>(0.0f);
    flash_case<32>(0.2f);
}
static void test_width_64(void) {
    flash_case<64>(0.0f);
    flash_case<64>(0.2f);
}

int main(void) {
    static_assert(backward_smem<64>() <= sizeof smem, "the emulated shared memory holds the largest block's");
    CU_TestInfo tests[] = {
        {"heads of width 16", test_width_16},
        {"heads of width 32", test_width_32},
        {"heads of width 64", test_width_64},
        CU_TEST_INFO_NULL,
    };
    return scfm_test_run("flash_emulated", tests);
}
