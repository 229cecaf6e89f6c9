// A CPU stand-in for the CUDA C++ that the backend's kernels use, so that
// their own source runs where there is no GPU (tests/cuda/test_flash_emulated.cc
// and the emulated CUDA backend of tests/CMakeLists.txt). The threads of a
// block are fibers on one host thread, run one block at a time:
// __syncthreads and __syncwarp switch fibers and really wait for every
// thread of the block or warp (threads that returned count as arrived), so
// a barrier that some threads skip stops with "deadlock" instead of passing
// silently. Fibers switch stacks by hand (x86-64), which AddressSanitizer
// does not follow: the emulated tests run in the release build only. Shared
// memory: a kernel's __shared__ arrays become static (the
// source transform, emulate.py), one copy for the block that runs.
#ifndef SCFM_TESTS_CUDA_EMU_H
#define SCFM_TESTS_CUDA_EMU_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __align__(n)
#define __launch_bounds__(n)

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

enum class state { ready, at_block, at_warp, done };

// A thread of the running block. Fibers persist across blocks and launches
// and switch with emu_switch (below): callee-saved registers pushed on the
// fiber's own stack, then the stack pointer swapped, a few instructions
// with no system call.
struct fiber {
    void *sp = nullptr;
    state at = state::done;
    std::vector<char> stack;
};

inline void *scheduler_sp;
inline std::vector<fiber> fibers;
inline fiber *running;
inline const std::function<void()> *kernel_body;

}  // namespace emu

#if !defined(__x86_64__)
#error "the emulated CUDA threads switch stacks with x86-64 code"
#endif
// emu_switch(&save, next): pushes rbp, rbx, r12-r15, saves rsp in save, loads
// next as rsp, pops them and returns on that stack. Weak: every translation
// unit that includes this header defines it, and the linker keeps one.
extern "C" void emu_switch(void **save, void *next);
asm(R"(
    .text
    .weak emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");

namespace emu {

inline void yield() { emu_switch(&running->sp, scheduler_sp); }

[[noreturn]] inline void fiber_main() {
    for (;;) {
        (*kernel_body)();
        running->at = state::done;
        yield();
    }
}

inline void wait_at(state barrier) {
    running->at = barrier;
    yield();
}

// A fresh fiber's stack: six zero registers and fiber_main as the return
// address, placed so that fiber_main starts with the stack aligned as after
// a call.
inline void start_fiber(fiber &f) {
    enum { STACK = 96 * 1024 };
    f.stack.resize(STACK);
    uintptr_t top = ((uintptr_t)f.stack.data() + f.stack.size()) & ~(uintptr_t)15;
    void **sp = (void **)(top - 16);
    *sp = (void *)&fiber_main;
    sp -= 6;
    for (int i = 0; i < 6; i++) sp[i] = nullptr;
    f.sp = sp;
}

inline void resume(unsigned t) {
    running = &fibers[t];
    threadIdx = dim3(t, 0, 0);
    emu_switch(&scheduler_sp, running->sp);
}

// Releases the threads waiting at a barrier that all of them reached;
// returns whether any was released.
inline bool release_barriers(unsigned threads) {
    bool released = false;
    for (unsigned w = 0; w * 32 < threads; w++) {
        const unsigned lo = w * 32, hi = lo + 32 < threads ? lo + 32 : threads;
        bool all = true, any = false;
        for (unsigned t = lo; t < hi; t++) {
            all &= fibers[t].at == state::at_warp || fibers[t].at == state::done;
            any |= fibers[t].at == state::at_warp;
        }
        if (all && any) {
            for (unsigned t = lo; t < hi; t++)
                if (fibers[t].at == state::at_warp) fibers[t].at = state::ready;
            released = true;
        }
    }
    bool all = true, any = false;
    for (unsigned t = 0; t < threads; t++) {
        all &= fibers[t].at == state::at_block || fibers[t].at == state::done;
        any |= fibers[t].at == state::at_block;
    }
    if (all && any) {
        for (unsigned t = 0; t < threads; t++)
            if (fibers[t].at == state::at_block) fibers[t].at = state::ready;
        released = true;
    }
    return released;
}

inline void run_block(unsigned threads, const std::function<void()> &body) {
    if (fibers.size() < threads) {
        const size_t old = fibers.size();
        fibers.resize(threads);
        for (size_t t = old; t < threads; t++) start_fiber(fibers[t]);
    }
    kernel_body = &body;
    for (unsigned t = 0; t < threads; t++) fibers[t].at = state::ready;
    for (;;) {
        bool ran = false, live = false;
        for (unsigned t = 0; t < threads; t++) {
            if (fibers[t].at != state::ready) continue;
            resume(t);
            ran = true;
        }
        for (unsigned t = 0; t < threads; t++) live |= fibers[t].at != state::done;
        if (!live) return;
        if (!release_barriers(threads) && !ran) {
            fprintf(stderr, "emulated CUDA: deadlock in block (%u, %u): threads wait at different barriers\n",
                    blockIdx.x, blockIdx.y);
            abort();
        }
    }
}

}  // namespace emu

inline void __syncthreads() { emu::wait_at(emu::state::at_block); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::wait_at(emu::state::at_warp); }

inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
    static float slots[1024];
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    slots[warp * 32 + lane] = v;
    __syncwarp();
    const float got = slots[warp * 32 + (lane ^ (unsigned)lane_mask)];
    __syncwarp();
    return got;
}

inline float atomicAdd(float *p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// kernel<<<grid, block>>>(...) becomes emu_launch(grid, block, [&] { kernel(...); }).
template <typename Body>
void emu_launch(dim3 grid, dim3 block, Body body) {
    const std::function<void()> run = body;
    gridDim = grid;
    blockDim = block;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                emu::run_block(block.x * block.y * block.z, run);
            }
}

#endif
