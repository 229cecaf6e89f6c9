// A CPU stand-in for the CUDA C++ that the flash attention kernels use
// (src/backend/cuda/flash_kernels.cuh), so that tests/cuda/test_flash_emulated.cc
// runs them where there is no GPU: each block's threads are host threads,
// one block at a time, with real barriers for __syncthreads and __syncwarp,
// so a missing barrier shows as a race, not as a silent pass. Include it
// before the kernels; define the kernels' dynamic shared memory (an array
// named smem in their namespace) before including them.
#ifndef SCFM_TESTS_CUDA_EMU_H
#define SCFM_TESTS_CUDA_EMU_H

#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __shared__
#define __align__(n)
#define __launch_bounds__(n)

struct emu_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local emu_dim3 threadIdx, blockIdx;
inline emu_dim3 blockDim, gridDim;

namespace emu {
inline std::barrier<> *block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline float shuffle_slots[1024];
inline std::mutex atomic_mutex;
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    float *slots = emu::shuffle_slots + threadIdx.x / 32 * 32;
    const unsigned lane = threadIdx.x % 32;
    slots[lane] = v;
    __syncwarp();
    const float got = slots[lane ^ (unsigned)lane_mask];
    __syncwarp();
    return got;
}
inline float atomicAdd(float *p, float v) {
    std::lock_guard<std::mutex> hold(emu::atomic_mutex);
    const float old = *p;
    *p = old + v;
    return old;
}
inline int min(int a, int b) { return a < b ? a : b; }

// Runs body() as every thread of every block of the grid.
template <typename Body>
void emu_launch(emu_dim3 grid, unsigned threads, Body body) {
    gridDim = grid;
    blockDim = {threads, 1, 1};
    for (unsigned y = 0; y < grid.y; y++)
        for (unsigned x = 0; x < grid.x; x++) {
            std::barrier<> block((std::ptrdiff_t)threads);
            emu::block_barrier = &block;
            emu::warp_barriers.clear();
            for (unsigned w = 0; w < (threads + 31) / 32; w++)
                emu::warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
            std::vector<std::thread> pool;
            for (unsigned t = 0; t < threads; t++)
                pool.emplace_back([=] {
                    threadIdx = {t, 0, 0};
                    blockIdx = {x, y, 0};
                    body();
                });
            for (auto &th : pool) th.join();
        }
}

#endif
