/* cblas.h — a stand-in for OpenBLAS's cblas.h with only what tandem's CPU
 * reference uses, for dev/kernels builds on machines without OpenBLAS (the
 * GPU machine). Implemented naively in naive_cblas.c. Not for production. */
#ifndef TDM_SHIM_CBLAS_H
#define TDM_SHIM_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M,
                 int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                 float beta, float *C, int ldc);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int n);

#endif
