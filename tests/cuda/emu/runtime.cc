// The emulated CUDA runtime and cuBLAS (cuda_runtime_api.h, cublas_v2.h)
// and stand-ins for the NCCL entry points of src/backend/cuda/nccl.c, which
// the emulated backend leaves out (one device: ranks share it, so the
// trainer sums gradients through the host and never calls them).
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cublas_v2.h"
#include "cuda_bf16.h"

extern "C" {
#include "backend/cuda/cuda_backend.h"
}

struct emu_stream {
    int unused;
};
struct emu_event {
    int unused;
};
struct emu_blas {
    int unused;
};

extern "C" {

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int) {
    snprintf(prop->name, sizeof prop->name, "CPU emulation (tests/cuda/emu)");
    prop->major = 9;
    prop->minor = 0;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t bytes) {
    *p = aligned_alloc(256, (bytes + 255) / 256 * 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void *p) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int value, size_t bytes) {
    memset(p, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned) {
    *stream = new emu_stream{0};
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    delete stream;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned) {
    *event = new emu_event{0};
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "emulated error"; }
const char *cudaGetErrorName(cudaError_t error) { return error == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    *handle = new emu_blas{0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusString(cublasStatus_t status) {
    return status == CUBLAS_STATUS_SUCCESS ? "success" : "invalid value";
}

}  // extern "C"

// X (column-major, leading dimension ld, rows x cols as stored) widened to
// fp32 when it is bf16, so that OpenBLAS does the product with fp32
// accumulation as cuBLAS does.
static const float *as_fp32(const void *x, cudaDataType type, int ld, int cols, std::vector<float> &copy) {
    if (type == CUDA_R_32F) return (const float *)x;
    copy.resize((size_t)ld * cols);
    for (size_t i = 0; i < copy.size(); i++) copy[i] = __bfloat162float(((const __nv_bfloat16 *)x)[i]);
    return copy.data();
}

// C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, column-major.
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A,
                 cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb, float beta, float *C, int ldc) {
    std::vector<float> a_copy, b_copy;
    const float *a = as_fp32(A, at, lda, ta == CUBLAS_OP_N ? k : m, a_copy);
    const float *b = as_fp32(B, bt, ldb, tb == CUBLAS_OP_N ? n : k, b_copy);
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                m, n, k, alpha, a, lda, b, ldb, beta, C, ldc);
}

extern "C" {

cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t, cublasGemmAlgo_t) {
    if (Ctype != CUDA_R_32F) return CUBLAS_STATUS_INVALID_VALUE;
    gemm(transa, transb, m, n, k, *(const float *)alpha, A, Atype, lda, B, Btype, ldb, *(const float *)beta,
         (float *)C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmBatched(cublasHandle_t, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                                  int k, const float *alpha, const float *const A[], int lda, const float *const B[],
                                  int ldb, const float *beta, float *const C[], int ldc, int batch) {
    for (int b = 0; b < batch; b++)
        gemm(transa, transb, m, n, k, *alpha, A[b], CUDA_R_32F, lda, B[b], CUDA_R_32F, ldb, *beta, C[b], ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSaxpy(cublasHandle_t, int n, const float *alpha, const float *x, int incx, float *y, int incy) {
    for (int i = 0; i < n; i++) y[(size_t)i * incy] += *alpha * x[(size_t)i * incx];
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSnrm2(cublasHandle_t, int n, const float *x, int incx, float *result) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)x[(size_t)i * incx] * x[(size_t)i * incx];
    *result = (float)std::sqrt(s);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSscal(cublasHandle_t, int n, const float *alpha, float *x, int incx) {
    for (int i = 0; i < n; i++) x[(size_t)i * incx] *= *alpha;
    return CUBLAS_STATUS_SUCCESS;
}

scfm_status scfm_cuda_nccl_init(scfm_comm *, int, scfm_cuda_nccl **out, scfm_error *err) {
    *out = nullptr;
    return scfm_fail(err, SCFM_ERR_CONFIG, "the emulated CUDA backend has no NCCL");
}
void scfm_cuda_nccl_free(scfm_cuda_nccl *) {}
scfm_status scfm_cuda_nccl_isum_f32(scfm_cuda_nccl *, float *, size_t, cudaStream_t, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_CONFIG, "the emulated CUDA backend has no NCCL");
}
scfm_status scfm_cuda_nccl_wait(scfm_cuda_nccl *, cudaStream_t, scfm_error *err) {
    return scfm_fail(err, SCFM_ERR_CONFIG, "the emulated CUDA backend has no NCCL");
}

}  // extern "C"

// The flash kernels' dynamic shared memory (flash_kernels.cuh declares it
// extern in its namespace): one block runs at a time.
namespace scfm_cuda_flash {
alignas(128) unsigned char smem[160 * 1024];
}
