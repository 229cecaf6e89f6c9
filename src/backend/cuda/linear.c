/* Linear layers through cuBLAS: bf16 operands, fp32 accumulation and
 * output, written as the CPU's row-major sgemm calls. */
#include "backend/cuda/cuda_backend.h"

/* Row-major C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C: cuBLAS is
 * column-major, where the same memory holds the transposes, so it computes
 * C^T = op(B)^T op(A)^T with the operands swapped. */
static scfm_status rowmajor_gemm(scfm_cuda_ctx *ctx, int trans_a, int trans_b, int M, int N, int K,
                                 const scfm_bf16 *A, int lda, const scfm_bf16 *B, int ldb, float beta, float *Cm,
                                 int ldc, scfm_error *err) {
    const float alpha = 1.0f;
    return scfm_cuda_check_blas(cublasGemmEx(ctx->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                             trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, CUDA_R_16BF,
                                             ldb, A, CUDA_R_16BF, lda, &beta, Cm, CUDA_R_32F, ldc,
                                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                                "bf16 GEMM", err);
}

scfm_status scfm_cuda_linear_forward(scfm_cuda_ctx *ctx, float *d_out, const scfm_bf16 *d_inp16,
                                     const scfm_bf16 *d_w16, const float *d_b, int T, int C, int OC,
                                     scfm_error *err) {
    if (T == 0) return SCFM_OK;
    scfm_status st = d_b ? scfm_cuda_bias_fill(ctx, d_out, d_b, T, OC, err) : SCFM_OK;
    if (st != SCFM_OK) return st;
    return rowmajor_gemm(ctx, 0, 1, T, OC, C, d_inp16, C, d_w16, C, d_b ? 1.0f : 0.0f, d_out, OC, err);
}

scfm_status scfm_cuda_linear_backward(scfm_cuda_ctx *ctx, float *d_dinp, float *d_dw, float *d_db,
                                      const float *d_dout, const scfm_bf16 *d_inp16, const scfm_bf16 *d_w16, int T,
                                      int C, int OC, int accumulate_dinp, scfm_error *err) {
    if (T == 0) return SCFM_OK;
    void *work = NULL;
    scfm_status st = scfm_cuda_workspace(ctx, sizeof(scfm_bf16) * (size_t)T * (size_t)OC, &work, err);
    scfm_bf16 *dout16 = work;
    if (st == SCFM_OK) st = scfm_cuda_to_bf16(ctx, dout16, d_dout, (size_t)T * (size_t)OC, err);
    if (st == SCFM_OK && d_dinp)
        st = rowmajor_gemm(ctx, 0, 0, T, C, OC, dout16, OC, d_w16, C, accumulate_dinp ? 1.0f : 0.0f, d_dinp, C, err);
    if (st == SCFM_OK) st = rowmajor_gemm(ctx, 1, 0, OC, C, T, dout16, OC, d_inp16, C, 1.0f, d_dw, C, err);
    if (st == SCFM_OK && d_db) st = scfm_cuda_bias_backward(ctx, d_db, d_dout, T, OC, err);
    return st;
}
