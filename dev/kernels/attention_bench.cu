/* attention_bench.cu — stand-alone timing of tdm_cuda_attention: the FP32
 * flash kernel (attention.cu) against the tensor-core kernels (attention_tc.cu,
 * FP16 and BF16) at the FLUX and SD shapes. Links only the two kernel files;
 * the three device helpers they call are stubbed below.
 * Build + run on the GPU machine (from the repository root):
 *   nvcc -O3 -std=c++17 -arch=sm_90 -DTDM_HAVE_CUDA -Isrc -Iinclude \
 *     dev/kernels/attention_bench.cu src/backend/cuda/attention.cu \
 *     src/backend/cuda/attention_tc.cu -lcublas -o /tmp/attention_bench && /tmp/attention_bench
 * The tensor-core kernel is picked per process: by default the 32-row
 * tc2_attention_kernel for padded head dims ≤ 128 (and Tq > 64);
 * TDM_ATTN_TC=1 in the environment selects the 64-row tc_attention_kernel
 * for all (run the binary twice to compare; dev/kernels/attention_gpu.sh
 * does).
 * Prints per shape: median ms of 10 runs (after 2 warm-ups, CUDA events on the
 * device stream), TFLOP/s (4·B·H·Tq·Tk·D, non-causal; halved for causal), and
 * the normalized error max|tc - fp32| / max|fp32| of the tensor-core output;
 * then a summary line for the two headline shapes (FLUX bf16, SD f16).
 * `attention_bench profile`: only the FLUX and SD self-attention shapes in
 * their headline dtype, three calls each, no fp32 (for ncu: the split between
 * tc_convert and the attention kernel).
 * Time includes the fp32 → half conversion pass (tc_convert: q, k, v read as
 * fp32 and written as half, ~0.06-0.08 ms at the FLUX shape).
 * Measured (H100 80GB HBM3, CUDA 13.0, first version of attention_tc.cu — the
 * 64-row kernel, before tc2):
 *   FLUX 1×4608² H24 D128: fp32 17.48 ms (14.9 TFLOP/s), f16 1.484 ms (176), bf16 1.472 (177)
 *   SD   2×4096² H8  D40 : fp32  4.39 ms ( 9.8),         f16 0.350 ms (123), bf16 0.292 (147)
 *   SD   2×4096×77 D40   : fp32  0.114 ms,               f16 0.039 ms
 *   SD   2×1024² H8  D80 : fp32  0.452 ms (11.9),        f16 0.055 ms (98) */
#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv) {
    const bool profile = argc > 1 && strcmp(argv[1], "profile") == 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    const char *env = getenv("TDM_ATTN_TC");
    const bool old = env && strcmp(env, "1") == 0;
    printf("device: %s, %d SMs; tensor-core kernel: %s\n", prop.name, prop.multiProcessorCount,
           old ? "tc_attention_kernel (64 rows/block, TDM_ATTN_TC=1)"
               : "tc2_attention_kernel for DP <= 128, Tq > 64 (128 rows/block; default)");
    tdm_cuda_impl_t impl = {};
    CK(cudaStreamCreate(&impl.stream));
    tdm_device_t dev;
    memset(&dev, 0, sizeof dev);
    dev.impl = &impl;
    /* head: the dtype of the headline number (-1: none) */
    struct Shape { const char *name; int64_t B, Tq, Tk, H, D; int causal; int head; };
    const Shape shapes[] = {
        {"FLUX self 4608 H24 D128", 1, 4608, 4608, 24, 128, 0, 2},
        {"SD self 4096 H8 D40", 2, 4096, 4096, 8, 40, 0, 1},
        {"SD cross 4096x77 H8 D40", 2, 4096, 77, 8, 40, 0, -1},
        {"SD self 1024 H8 D80", 2, 1024, 1024, 8, 80, 0, -1},
        {"SD self 256 H8 D160", 2, 256, 256, 8, 160, 0, -1},
        {"CLIP causal 77 H12 D64", 2, 77, 77, 12, 64, 1, -1},
        {"FLUX causal 4608 H24 D128", 1, 4608, 4608, 24, 128, 1, -1},
    };
    const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    const char *dtn[3] = {"fp32", "f16", "bf16"};
    char summary[2][160] = {"", ""};
    printf("%-26s %6s %10s %9s %10s\n", "shape", "dtype", "ms", "TFLOP/s", "err_vs_fp32");
    for (const Shape &s : shapes) {
        if (profile && s.head < 0) continue;
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
            if (profile) {   /* the headline dtype only, three calls */
                if (di != s.head) continue;
                dev.gemm_dtype = dts[di];
                for (int r = 0; r < 3; r++)
                    tdm_cuda_attention(&dev, o, q, k, v, s.B, s.Tq, s.Tk, s.H, s.D, scale, s.causal);
                CK(cudaStreamSynchronize(impl.stream));
                printf("%-26s %6s  (profile: 3 calls)\n", s.name, dtn[di]);
                continue;
            }
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
            double tflops = flop / (med * 1e-3) / 1e12 / (s.causal ? 2 : 1);
            printf("%-26s %6s %10.4f %9.1f %10.2e   (min %.4f max %.4f)\n", s.name, dtn[di], med,
                   tflops, err, ms.front(), ms.back());
            if (di == s.head)
                snprintf(summary[s.head == 2 ? 0 : 1], sizeof summary[0],
                         "%s %s: %.4f ms, %.1f TFLOP/s, err %.2e", s.name, dtn[di], med, tflops,
                         err);
            CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
        }
        cudaFree(q); cudaFree(k); cudaFree(v); cudaFree(o);
    }
    if (!profile)
        printf("SUMMARY [%s]\n  %s\n  %s\n", old ? "TDM_ATTN_TC=1 (64-row kernel)" : "default",
               summary[0], summary[1]);
    return 0;
}
