/* Loading the device backend (src/train/device.h): libscfm_cuda.so is
 * opened only when a run asks for train.backend "cuda", so CPU runs never
 * map the CUDA libraries. SCFM_CUDA_LIBRARY picks another build of it (the
 * tests point it at the CPU-emulated one, tests/cuda/emu). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/device.h"

scfm_status scfm_device_ops_load(const scfm_device_ops **ops, scfm_error *err) {
    *ops = NULL;
#ifndef SCFM_HAVE_CUDA
    return scfm_fail(err, SCFM_ERR_CONFIG,
                     "this build of scfm has no CUDA backend (it is built when CMake finds the CUDA toolkit with "
                     "cuBLAS and NCCL, -DSCFM_CUDA=AUTO or ON; docs/cuda.md)");
#else
    static void *handle;
    char first[SCFM_PATH_MAX] = "";
    const char *named = getenv("SCFM_CUDA_LIBRARY");
    if (!handle && named && *named) {
        handle = dlopen(named, RTLD_NOW | RTLD_LOCAL);
        if (!handle)
            return scfm_fail(err, SCFM_ERR_CONFIG, "cannot load the CUDA backend SCFM_CUDA_LIBRARY=%s: %s", named,
                             dlerror());
    }
    if (!handle) {
        /* beside libscfm, where the build and the install put it */
        Dl_info self;
        if (dladdr((void *)scfm_device_ops_load, &self) && self.dli_fname) {
            const char *slash = strrchr(self.dli_fname, '/');
            const int dir = slash ? (int)(slash - self.dli_fname) : 0;
            snprintf(first, sizeof first, "%.*s%slibscfm_cuda.so", dir, self.dli_fname, slash ? "/" : "");
            handle = dlopen(first, RTLD_NOW | RTLD_LOCAL);
        }
    }
    if (!handle) handle = dlopen("libscfm_cuda.so", RTLD_NOW | RTLD_LOCAL);
    if (!handle)
        return scfm_fail(err, SCFM_ERR_CONFIG, "cannot load the CUDA backend libscfm_cuda.so (tried %s and the "
                         "library path): %s", first[0] ? first : "-", dlerror());
    scfm_device_ops_fn entry;
    *(void **)&entry = dlsym(handle, SCFM_DEVICE_OPS_SYMBOL);
    if (!entry)
        return scfm_fail(err, SCFM_ERR_CONFIG, "libscfm_cuda.so has no %s: %s", SCFM_DEVICE_OPS_SYMBOL, dlerror());
    *ops = entry();
    return SCFM_OK;
#endif
}
