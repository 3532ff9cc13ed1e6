/* fp8_plan.cu — why tandem's cuBLASLt FP8 plan query (gemm_lt.cu's plan_get)
 * finds nothing where bench/fp8_gemm.cu finds plans: the same query with each
 * of tandem's differences switched on or off, at test_backend_ops's
 * linear_f8 shapes, printing the heuristic's status and candidate count and
 * whether the first candidate passes cublasLtMatmulAlgoCheck at the call's M.
 *
 *   nvcc -O2 -arch=sm_90 dev/kernels/fp8_plan.cu -lcublasLt -o fp8_plan && ./fp8_plan
 *
 * Switches (a bit each): 1 min-alignment preferences (tandem: yes), 2 query at
 * 4096 rows instead of the call's M (tandem: yes), 4 bias data type set to
 * bf16 without a bias epilogue (tandem: yes), 8 scale pointers set before the
 * query (tandem: yes), 16 float32 output (else bf16). */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>

static cublasLtHandle_t H;

static void query(int64_t M, int64_t K, int64_t N, int64_t ldy, int bias, int gelu, int sw,
                  const void *sa, const void *sb, const void *b) {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld, cb, cd;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epi = gelu ? (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                  : (bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    const int32_t outer = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, bf = CUDA_R_16BF;
    cudaDataType ty = (sw & 16) ? CUDA_R_32F : CUDA_R_16BF;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (bias || (sw & 4)) cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bf, sizeof bf);
    if (bias) cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &b, sizeof b);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &outer, sizeof outer);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &outer, sizeof outer);
    if (sw & 8) {
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
    }
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, M, K);
    cublasLtMatrixLayoutCreate(&ld, ty, N, M, ldy);
    cublasLtMatrixLayoutCreate(&cb, CUDA_R_8F_E4M3, K, 4096, K);
    cublasLtMatrixLayoutCreate(&cd, ty, N, 4096, ldy);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    size_t ws = 32 << 20;
    uint32_t al = 256;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    if (sw & 1) {
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
    }
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(H, op, la, (sw & 2) ? cb : lb, (sw & 2) ? cd : ld,
                                                      (sw & 2) ? cd : ld, pref, 8, res, &found);
    int checks = 0, sk_set = 0;
    uint32_t sk = 0;
    for (int i = 0; i < found; i++) {
        cublasLtMatmulHeuristicResult_t chk;
        size_t wr;
        cublasLtMatmulAlgo_t a = res[i].algo;
        const uint32_t one = 1;
        if (i == 0) cublasLtMatmulAlgoConfigGetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &sk, sizeof sk, &wr);
        sk_set += cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) == 0;
        checks += cublasLtMatmulAlgoCheck(H, op, la, lb, ld, ld, &a, &chk) == CUBLAS_STATUS_SUCCESS;
    }
    printf("M %5lld K %5lld N %5lld ldy %5lld bias %d gelu %d sw %2d: status %d, %d found, %d pass check, "
           "first split-K %u, split-K settable on %d\n", (long long)M, (long long)K, (long long)N,
           (long long)ldy, bias, gelu, sw, (int)s, found, checks, sk, sk_set);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la); cublasLtMatrixLayoutDestroy(lb); cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatrixLayoutDestroy(cb); cublasLtMatrixLayoutDestroy(cd);
    cublasLtMatmulDescDestroy(op);
}

int main(void) {
    static const int64_t shapes[][4] = {{32, 96, 83, 96},        {3072, 3072, 600, 3072},
                                        {3072, 12288, 300, 15360}, {12288, 3072, 300, 3072},
                                        {15360, 3072, 257, 3072}, {3072, 18432, 2, 18432}};
    void *sa, *sb, *b;
    cudaMalloc(&sa, 1 << 20);
    cudaMalloc(&sb, 1 << 20);
    cudaMalloc(&b, 1 << 20);
    cublasLtCreate(&H);
    printf("cuBLASLt %zu\n", cublasLtGetVersion());
    for (int i = 0; i < 6; i++)
        for (int sw = 0; sw < 32; sw++) {
            if (i > 1 && sw != 15 && sw != 31 && sw != 0 && sw != 16) continue;
            query(shapes[i][2], shapes[i][0], shapes[i][1], shapes[i][3], 1, shapes[i][3] > shapes[i][1],
                  sw, sa, sb, b);
        }
    query(4608, 3072, 3072, 3072, 1, 0, 0, sa, sb, b);   /* the probe's case */
    query(4608, 3072, 3072, 3072, 1, 0, 15, sa, sb, b);
    return 0;
}
