/* Status, device memory and the context of the CUDA backend. */
#include <stdlib.h>

#include "backend/cuda/cuda_backend.h"

scfm_status scfm_cuda_check(cudaError_t rc, const char *what, scfm_error *err) {
    if (rc == cudaSuccess) return SCFM_OK;
    return scfm_fail(err, SCFM_ERR_IO, "CUDA %s failed: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
}

scfm_status scfm_cuda_check_blas(cublasStatus_t rc, const char *what, scfm_error *err) {
    if (rc == CUBLAS_STATUS_SUCCESS) return SCFM_OK;
    return scfm_fail(err, SCFM_ERR_IO, "cuBLAS %s failed: %s", what, cublasGetStatusString(rc));
}

scfm_status scfm_cuda_alloc(void **d, size_t bytes, scfm_error *err) {
    *d = NULL;
    /* cudaMalloc(0) may return NULL or not; one byte keeps every buffer a
     * real allocation. */
    scfm_status st = scfm_cuda_check(cudaMalloc(d, bytes ? bytes : 1), "cudaMalloc", err);
    if (st == SCFM_OK) st = scfm_cuda_check(cudaMemset(*d, 0, bytes ? bytes : 1), "cudaMemset", err);
    if (st != SCFM_OK) {
        cudaFree(*d);
        *d = NULL;
    }
    return st;
}

void scfm_cuda_free(void *d) {
    if (d) cudaFree(d);
}

scfm_status scfm_cuda_upload(void *d_dst, const void *src, size_t bytes, scfm_error *err) {
    return scfm_cuda_check(cudaMemcpy(d_dst, src, bytes, cudaMemcpyHostToDevice), "upload", err);
}

scfm_status scfm_cuda_download(void *dst, const void *d_src, size_t bytes, scfm_error *err) {
    return scfm_cuda_check(cudaMemcpy(dst, d_src, bytes, cudaMemcpyDeviceToHost), "download", err);
}

scfm_status scfm_cuda_ctx_create(int device, scfm_cuda_ctx **out, scfm_error *err) {
    *out = NULL;
    scfm_cuda_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return scfm_fail(err, SCFM_ERR_NOMEM, "out of memory");
    ctx->device = device;
    scfm_status st = scfm_cuda_check(cudaSetDevice(device), "cudaSetDevice", err);
    if (st == SCFM_OK)
        st = scfm_cuda_check(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking), "stream creation", err);
    if (st == SCFM_OK) st = scfm_cuda_check_blas(cublasCreate(&ctx->blas), "handle creation", err);
    if (st == SCFM_OK) st = scfm_cuda_check_blas(cublasSetStream(ctx->blas, ctx->stream), "cublasSetStream", err);
    /* fp32 products stay fp32: TF32 would make attention differ from the
     * CPU's by more than fp32 rounding. */
    if (st == SCFM_OK)
        st = scfm_cuda_check_blas(cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode", err);
    if (st != SCFM_OK) {
        scfm_cuda_ctx_free(ctx);
        return st;
    }
    *out = ctx;
    return SCFM_OK;
}

void scfm_cuda_ctx_free(scfm_cuda_ctx *ctx) {
    if (!ctx) return;
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    scfm_cuda_free(ctx->d_work);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
}

scfm_status scfm_cuda_workspace(scfm_cuda_ctx *ctx, size_t bytes, void **d_work, scfm_error *err) {
    if (bytes > ctx->work_bytes) {
        /* The old buffer may still be read by work in flight. */
        scfm_status st = scfm_cuda_sync(ctx, err);
        if (st != SCFM_OK) return st;
        scfm_cuda_free(ctx->d_work);
        ctx->work_bytes = 0;
        if ((st = scfm_cuda_alloc(&ctx->d_work, bytes, err)) != SCFM_OK) return st;
        ctx->work_bytes = bytes;
    }
    *d_work = ctx->d_work;
    return SCFM_OK;
}

scfm_status scfm_cuda_sync(scfm_cuda_ctx *ctx, scfm_error *err) {
    return scfm_cuda_check(cudaStreamSynchronize(ctx->stream), "stream synchronisation", err);
}
