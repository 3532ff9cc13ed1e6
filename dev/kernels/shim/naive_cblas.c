/* naive_cblas.c — row-major cblas_sgemm by plain loops (float accumulation,
 * as BLAS) plus the OpenBLAS thread calls, for dev/kernels builds without
 * OpenBLAS. Threads over rows of C with OpenMP unless already inside a
 * parallel region. Slow; only the reference side of GPU checks. */
#include "cblas.h"

#include <omp.h>
#include <stdint.h>

static int g_threads = 1;

int openblas_get_num_threads(void) { return g_threads; }
void openblas_set_num_threads(int n) { g_threads = n > 0 ? n : 1; }

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M,
                 int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc) {
    (void)order;   /* row-major only */
#pragma omp parallel for if (!omp_in_parallel() && (int64_t)M * N * K > 100000)
    for (int i = 0; i < M; i++) {
        float *c = C + (int64_t)i * ldc;
        for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        for (int k = 0; k < K; k++) {
            float a = alpha * (ta == CblasNoTrans ? A[(int64_t)i * lda + k] : A[(int64_t)k * lda + i]);
            if (tb == CblasNoTrans) {
                const float *b = B + (int64_t)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[(int64_t)j * ldb + k];
            }
        }
    }
}
