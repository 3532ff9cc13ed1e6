/* fp8_gemm.cu — what cuBLASLt offers for FP8 (e4m3) linears on this GPU, at
 * the FLUX.1-dev shapes: whether a row-scaled plan exists (per-output-channel
 * weight scales and per-token activation scales, OUTER_VEC_32F) with each
 * epilogue the transformer uses, how fast it runs beside the bf16 GEMM of the
 * same shape, and whether its result matches a host reference.
 *
 *   nvcc -O2 -arch=sm_90 bench/fp8_gemm.cu -lcublasLt -o fp8_gemm && ./fp8_gemm [M]
 *
 * Standalone (not part of the build): the probe that chose the FP8 design. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CK(x)                                                                              \
    do {                                                                                   \
        cudaError_t e_ = (x);                                                              \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));    \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static __host__ __device__ float hval(uint64_t i, uint32_t seed) {
    uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
    z ^= z >> 31;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 29;
    return (float)((z >> 40) & 0xFFFFFF) / 16777216.0f * 2.0f - 1.0f;
}

__global__ void fill_f8(__nv_fp8_e4m3 *p, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p[i] = __nv_fp8_e4m3(hval(i, seed) * 400.0f);
}
__global__ void fill_bf(__nv_bfloat16 *p, int64_t n, uint32_t seed) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(hval(i, seed));
}
__global__ void fill_f(float *p, int64_t n, uint32_t seed, float lo, float span) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p[i] = lo + span * (hval(i, seed) + 1.0f) * 0.5f;
}

static cublasLtHandle_t H;
static void *WS;
static const size_t WSB = 32 << 20;

/* One plan: y (M, N) = x (M, K) · W^T. fp8: W, x e4m3 with row scales. */
typedef struct {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    int ok;
} plan_t;

static cudaDataType g_dtype = CUDA_R_16BF;   /* D's type */
static int make(plan_t *p, int fp8, int64_t M, int64_t K, int64_t N, cublasLtEpilogue_t epi,
                int bias_bf16, int fast, const float *sa, const float *sb, const void *bias) {
    cudaDataType t = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    memset(p, 0, sizeof *p);
    if (cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F)) return -1;
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
    if (bias) {
        int32_t bt = bias_bf16 ? CUDA_R_16BF : CUDA_R_32F;
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                       sizeof bias);
    }
    if (fp8) {
        int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        int8_t fa = (int8_t)fast;
        if (cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                           sizeof mode) ||
            cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                           sizeof mode))
            return -2;
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa);
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb);
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fa, sizeof fa);
    }
    cublasLtMatrixLayoutCreate(&p->la, t, K, N, K);
    cublasLtMatrixLayoutCreate(&p->lb, t, K, M, K);
    cublasLtMatrixLayoutCreate(&p->ld, g_dtype, N, M, N);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    size_t ws = WSB;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(H, p->op, p->la, p->lb, p->ld, p->ld, pref,
                                                      1, &r, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s || found < 1) return -3;
    p->algo = r.algo;
    p->ok = 1;
    return 0;
}

static float timeit(plan_t *p, const void *A, const void *B, void *D, int iters) {
    const float one = 1, zero = 0;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++)
        if (cublasLtMatmul(H, p->op, &one, A, p->la, B, p->lb, &zero, D, p->ld, D, p->ld, &p->algo,
                           WS, WSB, 0))
            return -1;
    cudaEventRecord(e0);
    for (int i = 0; i < iters; i++)
        cublasLtMatmul(H, p->op, &one, A, p->la, B, p->lb, &zero, D, p->ld, D, p->ld, &p->algo, WS,
                       WSB, 0);
    cudaEventRecord(e1);
    CK(cudaEventSynchronize(e1));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    return ms / iters;
}

int main(int argc, char **argv) {
    int64_t M = argc > 1 ? atoll(argv[1]) : 4608;
    const int64_t shapes[][2] = {{3072, 9216},  {3072, 3072}, {3072, 12288},
                                 {12288, 3072}, {3072, 21504}, {15360, 3072}};
    cudaDeviceProp pr;
    CK(cudaGetDeviceProperties(&pr, 0));
    printf("device %s, cuBLASLt %zu, M = %lld\n", pr.name, cublasLtGetVersion(), (long long)M);
    cublasLtCreate(&H);
    CK(cudaMalloc(&WS, WSB));
    const int64_t KMAX = 15360, NMAX = 21504;
    __nv_fp8_e4m3 *A8, *B8;
    __nv_bfloat16 *Ab, *Bb, *D, *biasb;
    float *sa, *sb, *biasf;
    CK(cudaMalloc(&A8, KMAX * NMAX));
    CK(cudaMalloc(&B8, KMAX * M));
    CK(cudaMalloc(&Ab, KMAX * NMAX * 2));
    CK(cudaMalloc(&Bb, KMAX * M * 2));
    CK(cudaMalloc(&D, NMAX * M * 2));
    CK(cudaMalloc(&sa, NMAX * 4));
    CK(cudaMalloc(&sb, M * 4));
    CK(cudaMalloc(&biasf, NMAX * 4));
    CK(cudaMalloc(&biasb, NMAX * 2));
    fill_f8<<<1024, 256>>>(A8, KMAX * NMAX, 1);
    fill_f8<<<1024, 256>>>(B8, KMAX * M, 2);
    fill_bf<<<1024, 256>>>(Ab, KMAX * NMAX, 3);
    fill_bf<<<1024, 256>>>(Bb, KMAX * M, 4);
    fill_f<<<64, 256>>>(sa, NMAX, 5, 1e-4f, 4e-4f);
    fill_f<<<64, 256>>>(sb, M, 6, 1e-3f, 4e-3f);
    fill_f<<<64, 256>>>(biasf, NMAX, 7, -1.0f, 2.0f);
    fill_bf<<<64, 256>>>(biasb, NMAX, 8);
    CK(cudaDeviceSynchronize());

    /* correctness, one small shape, every epilogue: sampled entries vs host */
    {
        const int64_t m = 256, k = 512, n = 384;
        plan_t p;
        const cublasLtEpilogue_t epis[] = {CUBLASLT_EPILOGUE_DEFAULT, CUBLASLT_EPILOGUE_BIAS,
                                           CUBLASLT_EPILOGUE_GELU_BIAS};
        const char *en[] = {"none", "bias", "gelu+bias"};
        unsigned char *ha = (unsigned char *)malloc(k * n), *hb = (unsigned char *)malloc(k * m);
        float *hsa = (float *)malloc(n * 4), *hsb = (float *)malloc(m * 4), *hbias = (float *)malloc(n * 4);
        uint16_t *hd = (uint16_t *)malloc(m * n * 2), *hbb = (uint16_t *)malloc(n * 2);
        CK(cudaMemcpy(hbb, biasb, n * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(ha, A8, k * n, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hb, B8, k * m, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hsa, sa, n * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hsb, sb, m * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hbias, biasf, n * 4, cudaMemcpyDeviceToHost));
        for (int bb = 0; bb < 2; bb++)
            for (int e = 0; e < 3; e++) {
                int r = make(&p, 1, m, k, n, epis[e], bb, 0, sa, sb,
                             e ? (bb ? (void *)biasb : (void *)biasf) : NULL);
                if (r) {
                    printf("check %-9s bias %s: no plan (%d)\n", en[e], bb ? "bf16" : "f32", r);
                    continue;
                }
                if (timeit(&p, A8, B8, D, 1) < 0) {
                    printf("check %-9s bias %s: matmul failed\n", en[e], bb ? "bf16" : "f32");
                    continue;
                }
                CK(cudaMemcpy(hd, D, m * n * 2, cudaMemcpyDeviceToHost));
                double maxrel = 0;
                for (int s = 0; s < 200; s++) {
                    int64_t i = (s * 7919) % m, j = (s * 104729) % n;
                    double acc = 0;
                    for (int64_t q = 0; q < k; q++) {
                        __nv_fp8_e4m3 a, b;
                        a.__x = ha[j * k + q];
                        b.__x = hb[i * k + q];
                        acc += (double)(float)a * (double)(float)b;
                    }
                    acc *= (double)hsa[j] * hsb[i];
                    if (e) {
                        uint32_t bu = (uint32_t)hbb[j] << 16;
                        float bv;
                        memcpy(&bv, &bu, 4);
                        acc += bb ? bv : hbias[j];
                    }
                    if (e == 2) acc = 0.5 * acc * (1 + tanh(0.7978845608 * (acc + 0.044715 * acc * acc * acc)));
                    uint32_t u = (uint32_t)hd[i * n + j] << 16;
                    float got;
                    memcpy(&got, &u, 4);
                    double rel = fabs(got - acc) / (fabs(acc) + 1e-2);
                    if (rel > maxrel) maxrel = rel;
                }
                printf("check %-9s bias %s: max rel err %.3g\n", en[e], bb ? "bf16" : "f32", maxrel);
            }
    }

    printf("%6s %6s | %9s %9s | %9s %9s %9s %9s\n", "K", "N", "bf16 ms", "TFLOP/s", "fp8 ms",
           "TFLOP/s", "fast ms", "TFLOP/s");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t K = shapes[s][0], N = shapes[s][1];
        double fl = 2.0 * M * K * N;
        plan_t pb, p8, pf;
        float tb = -1, t8 = -1, tf = -1;
        if (!make(&pb, 0, M, K, N, CUBLASLT_EPILOGUE_BIAS, 0, 0, NULL, NULL, biasf))
            tb = timeit(&pb, Ab, Bb, D, 20);
        if (!make(&p8, 1, M, K, N, CUBLASLT_EPILOGUE_BIAS, 1, 0, sa, sb, biasb))
            t8 = timeit(&p8, A8, B8, D, 20);
        if (!make(&pf, 1, M, K, N, CUBLASLT_EPILOGUE_BIAS, 1, 1, sa, sb, biasb))
            tf = timeit(&pf, A8, B8, D, 20);
        printf("%6lld %6lld | %9.3f %9.0f | %9.3f %9.0f %9.3f %9.0f\n", (long long)K,
               (long long)N, tb, fl / tb / 1e9, t8, fl / t8 / 1e9, tf, fl / tf / 1e9);
    }
    /* the bias and output types FP8 takes */
    for (int o = 0; o < 2; o++)
        for (int bb = 0; bb < 2; bb++)
            for (int e = 0; e < 2; e++) {
                plan_t p;
                g_dtype = o ? CUDA_R_32F : CUDA_R_16BF;
                int r = make(&p, 1, M, 3072, 3072, e ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS,
                             bb, 0, sa, sb, bb ? (void *)biasb : (void *)biasf);
                printf("fp8, %s out, %s bias%s: %s\n", o ? "f32" : "bf16", bb ? "bf16" : "f32",
                       e ? " + gelu" : "", r ? "no plan" : "plan");
            }
    g_dtype = CUDA_R_32F;
    {
        plan_t p;
        int r = make(&p, 1, 2, 3072, 18432, CUBLASLT_EPILOGUE_DEFAULT, 0, 0, sa, sb, NULL);
        printf("fp8, f32 out, no bias, M = 2: %s\n", r ? "no plan" : "plan");
    }
    g_dtype = CUDA_R_16BF;
    CK(cudaGetLastError());
    return 0;
}
