/* lt_rows.cu — which cuBLASLt algorithms give a row of y = x·W^T the same bits
 * whatever rows the call holds (the Ulysses / CFG exactness of gemm_lt.cu).
 * For FLUX.1 shapes, the heuristic's candidates for LT_CANON_M (4096) rows are
 * each forced to split-K 1 and run on the full M rows and on row shares m
 * (copied to their own buffers); prints per candidate its configuration
 * (algo id, tile, stages, swizzle, custom option, cluster shape), the
 * workspace AlgoCheck asks for at each m, whether every share matched, and
 * the full call's time. With workspace 0 as well as 32 MiB (a kernel that
 * splits K at run time by the tile count needs workspace for the partials).
 * Build + run on the GPU machine (from the repository root):
 *   nvcc -O2 -arch=sm_90 dev/kernels/lt_rows.cu -lcublasLt -o /tmp/lt_rows && /tmp/lt_rows */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CK(x) do { if ((x) != 0) { printf("fail %s:%d: %s\n", __FILE__, __LINE__, #x); exit(1); } } while (0)

static cublasLtHandle_t g_h;
static void *g_ws;

struct Shape { const char *name; cudaDataType t; int64_t K, N, Mf; };

static uint32_t attr(const cublasLtMatmulAlgo_t *a, cublasLtMatmulAlgoConfigAttributes_t w) {
    uint32_t v = 0;
    size_t n = 0;
    cublasLtMatmulAlgoConfigGetAttribute(a, w, &v, sizeof v, &n);
    return v;
}

/* y (M, N) f32 = x (M, K) · W^T with algo a; ws bytes of workspace. */
static int run(cudaDataType t, const void *W, const void *x, float *y, int64_t M, int64_t K,
               int64_t N, cublasLtMatmulAlgo_t *a, size_t ws, size_t *need) {
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    const float one = 1, zero = 0;
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    CK(cublasLtMatrixLayoutCreate(&la, t, K, N, K));
    CK(cublasLtMatrixLayoutCreate(&lb, t, K, M, K));
    CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, N, M, N));
    cublasLtMatmulHeuristicResult_t chk;
    int ok = cublasLtMatmulAlgoCheck(g_h, op, la, lb, ld, ld, a, &chk) == CUBLAS_STATUS_SUCCESS &&
             chk.workspaceSize <= ws;
    if (need) *need = chk.workspaceSize;
    if (ok)
        ok = cublasLtMatmul(g_h, op, &one, W, la, x, lb, &zero, y, ld, y, ld, a, ws ? g_ws : NULL, ws,
                            0) == CUBLAS_STATUS_SUCCESS;
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    return ok;
}

int main(void) {
    const Shape shapes[] = {
        {"bf16 K15360 N3072", CUDA_R_16BF, 15360, 3072, 4608},
        {"bf16 K3072 N3072", CUDA_R_16BF, 3072, 3072, 4608},
        {"bf16 K12288 N3072", CUDA_R_16BF, 12288, 3072, 4096},
        {"f32 K3072 N9216", CUDA_R_32F, 3072, 9216, 4096},
        {"f32 K12288 N3072", CUDA_R_32F, 12288, 3072, 4096},
        {"bf16 K3072 N18432 (modulation)", CUDA_R_16BF, 3072, 18432, 2},
    };
    const int64_t ms[] = {1, 2, 17, 256, 288, 2048, 2304};
    const size_t WS = (size_t)32 << 20;
    CK(cublasLtCreate(&g_h));
    CK(cudaMalloc(&g_ws, WS));
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (const Shape &s : shapes) {
        const int es = s.t == CUDA_R_32F ? 4 : 2;
        std::vector<unsigned char> hx(s.Mf * s.K * es), hw(s.N * s.K * es);
        uint64_t r = 1;
        for (size_t i = 0; i < hx.size() / es; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            float v = (float)((r >> 40) & 0xffffff) / 16777216.0f * 2 - 1;
            if (es == 4) memcpy(&hx[i * 4], &v, 4);
            else { __nv_bfloat16 b = __float2bfloat16(v); memcpy(&hx[i * 2], &b, 2); }
        }
        for (size_t i = 0; i < hw.size() / es; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            float v = (float)((r >> 40) & 0xffffff) / 16777216.0f * 2 - 1;
            if (es == 4) memcpy(&hw[i * 4], &v, 4);
            else { __nv_bfloat16 b = __float2bfloat16(v); memcpy(&hw[i * 2], &b, 2); }
        }
        void *x, *W, *xs;
        float *y, *ys;
        CK(cudaMalloc(&x, hx.size()));
        CK(cudaMalloc(&xs, hx.size()));
        CK(cudaMalloc(&W, hw.size()));
        CK(cudaMalloc(&y, s.Mf * s.N * 4));
        CK(cudaMalloc(&ys, s.Mf * s.N * 4));
        CK(cudaMemcpy(x, hx.data(), hx.size(), cudaMemcpyHostToDevice));
        CK(cudaMemcpy(W, hw.data(), hw.size(), cudaMemcpyHostToDevice));
        std::vector<float> full(s.Mf * s.N), part(s.Mf * s.N);
        for (int wsi = 0; wsi < 2; wsi++) {
            const size_t ws = wsi ? 0 : WS;
            /* the heuristic for 4096 rows */
            cublasLtMatmulDesc_t op;
            cublasLtMatrixLayout_t la, lb, ld;
            cublasLtMatmulPreference_t pref;
            cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
            CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
            CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
            CK(cublasLtMatrixLayoutCreate(&la, s.t, s.K, s.N, s.K));
            CK(cublasLtMatrixLayoutCreate(&lb, s.t, s.K, 4096, s.K));
            CK(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, s.N, 4096, s.N));
            CK(cublasLtMatmulPreferenceCreate(&pref));
            CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
            cublasLtMatmulHeuristicResult_t res[12];
            int found = 0;
            cublasLtMatmulAlgoGetHeuristic(g_h, op, la, lb, ld, ld, pref, 12, res, &found);
            printf("== %s, workspace %zu: %d candidates\n", s.name, ws, found);
            for (int i = 0; i < found; i++) {
                cublasLtMatmulAlgo_t a = res[i].algo;
                const uint32_t one = 1, red = CUBLASLT_REDUCTION_SCHEME_NONE;
                const uint32_t sk0 = attr(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
                cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one);
                cublasLtMatmulAlgoConfigSetAttribute(&a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red);
                size_t need = 0;
                if (!run(s.t, W, x, y, s.Mf, s.K, s.N, &a, ws, &need)) {
                    printf("  #%d algo %u: does not run the full M\n", i, attr(&a, CUBLASLT_ALGO_CONFIG_ID));
                    continue;
                }
                cudaEventRecord(e0);
                for (int k = 0; k < 5; k++) run(s.t, W, x, y, s.Mf, s.K, s.N, &a, ws, NULL);
                cudaEventRecord(e1);
                cudaEventSynchronize(e1);
                float msf = 0;
                cudaEventElapsedTime(&msf, e0, e1);
                CK(cudaMemcpy(full.data(), y, s.Mf * s.N * 4, cudaMemcpyDeviceToHost));
                char line[512];
                int n = snprintf(line, sizeof line, "  #%d algo %u tile %u stages %u splitk %u->1 swizzle %u custom %u cluster %u inner %u | full %.3f ms ws %zu |",
                                 i, attr(&a, CUBLASLT_ALGO_CONFIG_ID), attr(&a, CUBLASLT_ALGO_CONFIG_TILE_ID),
                                 attr(&a, CUBLASLT_ALGO_CONFIG_STAGES_ID), sk0,
                                 attr(&a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING), attr(&a, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION),
                                 attr(&a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID), attr(&a, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID),
                                 msf / 5, need);
                int allok = 1;
                for (int64_t m : ms) {
                    if (m >= s.Mf) continue;
                    const int64_t r0 = (s.Mf - m) / 2;
                    CK(cudaMemcpy(xs, (char *)x + r0 * s.K * es, m * s.K * es, cudaMemcpyDeviceToDevice));
                    size_t nm = 0;
                    int ok = run(s.t, W, xs, ys, m, s.K, s.N, &a, ws, &nm);
                    if (ok) {
                        CK(cudaMemcpy(part.data(), ys, m * s.N * 4, cudaMemcpyDeviceToHost));
                        ok = memcmp(part.data(), full.data() + r0 * s.N, m * s.N * 4) == 0 ? 1 : 2;
                    }
                    allok &= ok == 1;
                    n += snprintf(line + n, sizeof line - n, " m%lld:%s/ws%zu", (long long)m,
                                  ok == 1 ? "=" : ok == 2 ? "DIFF" : "norun", nm);
                }
                printf("%s %s\n", line, allok ? "ROWS-STABLE" : "unstable");
            }
            cublasLtMatmulPreferenceDestroy(pref);
            cublasLtMatrixLayoutDestroy(la);
            cublasLtMatrixLayoutDestroy(lb);
            cublasLtMatrixLayoutDestroy(ld);
            cublasLtMatmulDescDestroy(op);
        }
        cudaFree(x); cudaFree(xs); cudaFree(W); cudaFree(y); cudaFree(ys);
    }
    return 0;
}
