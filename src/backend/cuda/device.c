/* Device detection through the CUDA runtime. */
#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>

int scfm_cuda_device_count(scfm_error *why) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        /* Without a driver the runtime reports an error rather than 0
         * devices; clear it so it does not surface in a later call. */
        (void)cudaGetLastError();
        scfm_fail(why, SCFM_ERR_CONFIG, "no CUDA device was found (%s: %s)", cudaGetErrorName(rc),
                  cudaGetErrorString(rc));
        return 0;
    }
    if (n == 0) scfm_fail(why, SCFM_ERR_CONFIG, "no CUDA device was found (the CUDA runtime reports 0 devices)");
    return n;
}
