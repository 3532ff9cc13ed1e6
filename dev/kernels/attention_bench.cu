/* attention_bench.cu — stand-alone timing of tdm_cuda_attention: the FP32
 * flash kernel (attention.cu) against the tensor-core kernel (attention_tc.cu,
 * FP16 and BF16) at the FLUX and SD shapes. Links only the two kernel files;
 * the three device helpers they call are stubbed below.
 * Build + run on the GPU machine (from the repository root):
 *   nvcc -O3 -std=c++17 -arch=sm_90 -DTDM_HAVE_CUDA -Isrc -Iinclude \
 *     dev/kernels/attention_bench.cu src/backend/cuda/attention.cu \
 *     src/backend/cuda/attention_tc.cu -o /tmp/attention_bench && /tmp/attention_bench
 * Prints per shape: median ms of 10 runs (after 2 warm-ups, CUDA events on the
 * device stream), TFLOP/s (4·B·H·Tq·Tk·D, non-causal), and the normalized
 * error max|tc - fp32| / max|fp32| of the tensor-core output.
 * Measured (H100 80GB HBM3, CUDA 13.0, first version of attention_tc.cu; time
 * includes the fp32 → half conversion pass):
 *   FLUX 1×4608² H24 D128: fp32 17.48 ms (14.9 TFLOP/s), f16 1.484 ms (176), bf16 1.472 (177)
 *   SD   2×4096² H8  D40 : fp32  4.39 ms ( 9.8),         f16 0.350 ms (123), bf16 0.292 (147)
 *   SD   2×4096×77 D40   : fp32  0.114 ms,               f16 0.039 ms
 *   SD   2×1024² H8  D80 : fp32  0.452 ms (11.9),        f16 0.055 ms (98) */
#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#include "backend/cuda/cuda_common.cuh"

/* ---- stubs of device.cu ---------------------------------------------------------- */
tdm_status tdm_cuda_fail(tdm_device_t *d, tdm_status st, const char *call, const char *file,
                         int line, const char *what) {
    fprintf(stderr, "FAIL %s at %s:%d: %s\n", call, file, line, what);
    exit(1);
    return st;
}
tdm_cuda_impl_t *tdm_cuda_ctx(tdm_device_t *d) { return (tdm_cuda_impl_t *)d->impl; }
void *tdm_cuda_stage(tdm_device_t *d, int64_t bytes) {
    tdm_cuda_impl_t *c = (tdm_cuda_impl_t *)d->impl;
    if (bytes <= c->stage_bytes) return c->stage;
    if (c->stage) cudaFree(c->stage);
    if (cudaMalloc(&c->stage, (size_t)bytes) != cudaSuccess) return NULL;
    c->stage_bytes = bytes;
    return c->stage;
}

#define CK(x)                                                                           \
    do {                                                                                \
        cudaError_t e_ = (x);                                                           \
        if (e_ != cudaSuccess) {                                                        \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

__global__ void fill(float *p, int64_t n, uint64_t seed, float a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull + seed;
        x ^= x >> 31; x *= 0xbf58476d1ce4e5b9ull; x ^= x >> 29;
        p[i] = a * (2.0f * (float)(x >> 40) / 16777216.0f - 1.0f);
    }
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mb = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= md)) md = d;
        mb = std::max(mb, fabs((double)b[i]));
    }
    return mb > 0 ? md / mb : md;
}

int main(void) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    tdm_cuda_impl_t impl = {};
    CK(cudaStreamCreate(&impl.stream));
    tdm_device_t dev;
    memset(&dev, 0, sizeof dev);
    dev.impl = &impl;
    struct Shape { const char *name; int64_t B, Tq, Tk, H, D; int causal; };
    const Shape shapes[] = {
        {"FLUX self 4608 H24 D128", 1, 4608, 4608, 24, 128, 0},
        {"SD self 4096 H8 D40", 2, 4096, 4096, 8, 40, 0},
        {"SD cross 4096x77 H8 D40", 2, 4096, 77, 8, 40, 0},
        {"SD self 1024 H8 D80", 2, 1024, 1024, 8, 80, 0},
        {"SD self 256 H8 D160", 2, 256, 256, 8, 160, 0},
        {"CLIP causal 77 H12 D64", 2, 77, 77, 12, 64, 1},
    };
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    const char *dtn[3] = {"fp32", "f16", "bf16"};
    printf("%-26s %6s %10s %9s %10s\n", "shape", "dtype", "ms", "TFLOP/s", "err_vs_fp32");
    for (const Shape &s : shapes) {
        int64_t nq = s.B * s.Tq * s.H * s.D, nk = s.B * s.Tk * s.H * s.D;
        float *q, *k, *v, *o;
        CK(cudaMalloc(&q, nq * 4)); CK(cudaMalloc(&k, nk * 4)); CK(cudaMalloc(&v, nk * 4));
        CK(cudaMalloc(&o, nq * 4));
        fill<<<1024, 256>>>(q, nq, 1, 2.0f);
        fill<<<1024, 256>>>(k, nk, 2, 2.0f);
        fill<<<1024, 256>>>(v, nk, 3, 1.0f);
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        std::vector<float> ref(nq), got(nq);
        float scale = 1.0f / sqrtf((float)s.D);
        double flop = 4.0 * s.B * s.H * (double)s.Tq * s.Tk * s.D;
        for (int di = 0; di < 3; di++) {
            dev.gemm_dtype = dts[di];
            CK(cudaMemsetAsync(o, 0xff, nq * 4, impl.stream));   /* NaN poison */
            tdm_cuda_attention(&dev, o, q, k, v, s.B, s.Tq, s.Tk, s.H, s.D, scale, s.causal);
            CK(cudaGetLastError());
            CK(cudaStreamSynchronize(impl.stream));
            CK(cudaMemcpy(di ? got.data() : ref.data(), o, nq * 4, cudaMemcpyDeviceToHost));
            double err = di ? rel_err(got.data(), ref.data(), nq) : 0.0;
            tdm_cuda_attention(&dev, o, q, k, v, s.B, s.Tq, s.Tk, s.H, s.D, scale, s.causal);
            std::vector<float> ms;
            cudaEvent_t e0, e1;
            CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));
            for (int r = 0; r < 10; r++) {
                CK(cudaEventRecord(e0, impl.stream));
                tdm_cuda_attention(&dev, o, q, k, v, s.B, s.Tq, s.Tk, s.H, s.D, scale, s.causal);
                CK(cudaEventRecord(e1, impl.stream));
                CK(cudaEventSynchronize(e1));
                float t;
                CK(cudaEventElapsedTime(&t, e0, e1));
                ms.push_back(t);
            }
            CK(cudaGetLastError());
            std::sort(ms.begin(), ms.end());
            double med = ms[ms.size() / 2];
            printf("%-26s %6s %10.4f %9.1f %10.2e   (min %.4f max %.4f)\n", s.name, dtn[di], med,
                   flop / (med * 1e-3) / 1e12 / (s.causal ? 2 : 1), err, ms.front(), ms.back());
            CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
        }
        cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o);
    }
    return 0;
}
