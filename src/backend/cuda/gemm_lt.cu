/* gemm_lt.cu — the half-precision linear layer through cuBLASLt, with the
 * bias (and the GELU of a feed-forward) applied in the GEMM's epilogue, so a
 * biased linear is one kernel that writes its output once, instead of a
 * bias-fill pass plus a GEMM that reads the output back (beta = 1).
 *
 * cuBLASLt wants a descriptor, three layouts and an algorithm per problem
 * shape; finding the algorithm (the heuristic query) costs tens of
 * microseconds of host time, as much as a small GEMM runs, so each device
 * keeps the plans of the shapes it has seen (a denoiser has a few dozen)
 * and a repeated shape costs one attribute write and the launch.
 *
 * The heuristic's first answer is not always the fastest kernel: for M = 512
 * rows with a bf16 output (T5-XXL) it was ~25 % slower than the float32-output
 * one. With d->opts.lt_tune a new shape times the heuristic's top
 * LT_CANDIDATES algorithms on its first call (three runs each, CUDA events,
 * on the call's own operands) and keeps the fastest; by default the
 * heuristic's first is kept: the timing found ≤ 1 % (FLUX, T5) and cost a
 * one-image SD1.5 run 0.21 s of its 1.13 s (bench/KERNEL_NOTES.md).
 *
 * Row-count independence. A row of y must have the same bits whatever rows
 * the call holds: a rank of a context-parallel group (Ulysses) multiplies its
 * share of the tokens, a CFG rank one half of the guided batch, and their
 * image must equal one device's. cuBLASLt's heuristic picks the kernel (tile,
 * split-K) from M, and a split-K or another kernel sums a row's products in
 * another order. So the algorithm of every plan is the heuristic's answer for
 * the shape with LT_CANON_M rows — the same for every M of a (K, N, epilogue,
 * types, alignment) — with split-K forced to one (each output element summed
 * by one thread block, in K order), checked for the plan's own M. The large-M
 * choice is what the big GEMMs of a denoiser want; a small M (a modulation's
 * batch row, the 512 text tokens) pays for the wide tile (bench/RESULTS.md).
 * lt_tune times candidates on the call's own M and gives this up.
 *
 * With d->gemm_dtype F32 the same plans run float32 operands (CUBLAS_COMPUTE_32F:
 * no TF32), so the float32 linear is row-count independent too. */
#include <cublasLt.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"

#define LT_PLANS 256
#define LT_CANDIDATES 8   /* algorithms timed per new shape (see plan_tune) */
#define LT_WORKSPACE ((size_t)32 << 20)
#define LT_CANON_M 4096   /* the rows every plan's algorithm is chosen for */

typedef struct {
    int64_t M, K, N, ldy;
    int epi, dtype, ytype;           /* ytype: the yhalf of tdm_cuda_linear_lt */
    int f8;                          /* FP8 operands (tdm_cuda_linear_lt_f8) */
    uint32_t align;                  /* pointer alignment the algorithm may assume */
    int ok;                          /* 0: cuBLASLt has no algorithm; use the fallback */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

typedef struct tdm_cuda_lt {
    cublasLtHandle_t h;
    void *ws;
    lt_plan plan[LT_PLANS];
    int nplan, evict;   /* plans made; the slot a new plan takes once all are (round robin) */
} tdm_cuda_lt;

/* Releases p's cuBLASLt objects; its key (shape, epilogue, ...) stays. */
static void plan_destroy(lt_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->ld) cublasLtMatrixLayoutDestroy(p->ld);
    p->op = NULL;
    p->la = p->lb = p->ld = NULL;
    p->ok = 0;
}

extern "C" void tdm_cuda_lt_free(tdm_cuda_impl_t *c) {
    tdm_cuda_lt *lt = c ? (tdm_cuda_lt *)c->lt : NULL;
    if (!lt) return;
    for (int i = 0; i < lt->nplan; i++) plan_destroy(&lt->plan[i]);
    if (lt->ws) cudaFree(lt->ws);
    if (lt->h) cublasLtDestroy(lt->h);
    free(lt);
    c->lt = NULL;
}

/* The plan of (M, K, N, epilogue) for y (M, N) = x (M, K) · W^T (W (N, K))
 * in d->gemm_dtype, made on first use; NULL when no plan can be had (the
 * caller falls back to cublasGemmEx). Row-major y is column-major y^T
 * (N, M): D = op(A) · B with A = W read column-major (K, N) transposed and
 * B = x read column-major (K, M); the bias runs along D's rows (N). */
/* The operands of the call that creates a plan, for timing its candidates. */
typedef struct {
    void *y;
    const void *xh, *W, *b;
    const float *sw, *sx;   /* FP8 plans: W's row scales, xh's row scales */
} lt_args;

/* Points p's descriptor at the call's bias and (FP8) scale vectors. 0 on success. */
static int plan_bind(lt_plan *p, const lt_args *a) {
    if (a->b && cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &a->b,
                                               sizeof a->b))
        return 1;
    if (!p->f8) return 0;
    return cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a->sw,
                                          sizeof a->sw) ||
           cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a->sx,
                                          sizeof a->sx);
}

/* Index of the fastest of the n candidate algorithms of p on the operands a
 * (three runs each after one warm-up); 0 when timing is not possible. Waits
 * for the stream: only a plan's first call pays this. */
static int plan_tune(tdm_cuda_impl_t *c, lt_plan *p, const cublasLtMatmulHeuristicResult_t *res,
                     int n, const lt_args *a) {
    tdm_cuda_lt *lt = (tdm_cuda_lt *)c->lt;
    const float one = 1.0f, zero = 0.0f;
    cudaEvent_t e0 = NULL, e1 = NULL;
    int best = 0;
    float best_ms = 0;
    if (n < 2 || cudaEventCreate(&e0) != cudaSuccess || cudaEventCreate(&e1) != cudaSuccess)
        goto done;
    if (plan_bind(p, a)) goto done;
    for (int i = 0; i < n; i++) {
        float ms = 0;
        int ok = 1;
        for (int r = 0; r < 4 && ok; r++) {
            if (r == 1) cudaEventRecord(e0, c->stream);
            ok = cublasLtMatmul(lt->h, p->op, &one, a->W, p->la, a->xh, p->lb, &zero, a->y, p->ld,
                                a->y, p->ld, &res[i].algo, lt->ws, LT_WORKSPACE,
                                c->stream) == CUBLAS_STATUS_SUCCESS;
        }
        cudaEventRecord(e1, c->stream);
        if (cudaEventSynchronize(e1) != cudaSuccess || cudaEventElapsedTime(&ms, e0, e1) != cudaSuccess)
            ok = 0;
        if (ok && (best_ms == 0 || ms < best_ms)) {
            best_ms = ms;
            best = i;
        }
    }
done:
    (void)cudaGetLastError();   /* a failed candidate leaves nothing behind */
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    return best;
}

static lt_plan *plan_get(tdm_device_t *d, tdm_cuda_impl_t *c, int64_t M, int64_t K, int64_t N,
                         int64_t ldy, cublasLtEpilogue_t epi, uint32_t al, int yhalf,
                         const lt_args *args) {
    tdm_cuda_lt *lt = (tdm_cuda_lt *)c->lt;
    const int f8 = args->sw != NULL;
    int dt = (int)d->gemm_dtype, yt = yhalf;
    if (!lt) {
        lt = (tdm_cuda_lt *)calloc(1, sizeof *lt);
        if (!lt) return NULL;
        if (cublasLtCreate(&lt->h) != CUBLAS_STATUS_SUCCESS ||
            cudaMalloc(&lt->ws, LT_WORKSPACE) != cudaSuccess) {
            (void)cudaGetLastError();
            if (lt->h) cublasLtDestroy(lt->h);
            free(lt);
            return NULL;
        }
        c->lt = lt;
    }
    for (int i = 0; i < lt->nplan; i++) {
        lt_plan *p = &lt->plan[i];
        if (p->M == M && p->K == K && p->N == N && p->ldy == ldy && p->epi == (int)epi &&
            p->dtype == dt && p->ytype == yt && p->f8 == f8 && p->align == al)
            return p->ok ? p : NULL;
    }
    /* more shapes than a model has (many image sizes, row shares): the oldest plan
     * makes room — remade when its shape comes back, with the same algorithm, since
     * the choice depends on the shape alone (a fallback to cublasGemmEx would not) */
    lt_plan *p;
    if (lt->nplan < LT_PLANS) {
        p = &lt->plan[lt->nplan++];
    } else {
        p = &lt->plan[lt->evict];
        lt->evict = (lt->evict + 1) % LT_PLANS;
        plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->M = M;
    p->K = K;
    p->N = N;
    p->ldy = ldy;
    p->epi = (int)epi;
    p->dtype = dt;
    p->ytype = yt;
    p->f8 = f8;
    p->align = al;
    cudaDataType th = d->gemm_dtype == TDM_BF16 ? CUDA_R_16BF
                      : d->gemm_dtype == TDM_F16 ? CUDA_R_16F : CUDA_R_32F;
    cudaDataType t = f8 ? CUDA_R_8F_E4M3 : th;
    cudaDataType ty = yhalf ? th : CUDA_R_32F;
    /* FP8: a scale per row of W (D's rows) and per row of x (D's columns) */
    const int32_t outer = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    /* the bias stays float32 (the epilogue adds it in float32 before rounding) */
    int32_t bias_t = CUDA_R_32F;
    const int32_t bf = CUDA_R_16BF;   /* FP8: the only bias type with plans (either output) */
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatrixLayout_t cb = NULL, cd = NULL;   /* B and D with LT_CANON_M rows */
    cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
    int found = 0, pick = -1;
    cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
    size_t ws = LT_WORKSPACE;
    if (cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta) ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb) ||
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi) ||
        (yhalf == 1 && cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                 &bias_t, sizeof bias_t)) ||
        (f8 && cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bf,
                                              sizeof bf)) ||
        (f8 && (cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &outer,
                                               sizeof outer) ||
                cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &outer,
                                               sizeof outer) ||
                plan_bind(p, args))) ||   /* outer-vector scales: their pointers before the query */
        cublasLtMatrixLayoutCreate(&p->la, t, (uint64_t)K, (uint64_t)N, K) ||
        cublasLtMatrixLayoutCreate(&p->lb, t, (uint64_t)K, (uint64_t)M, K) ||
        cublasLtMatrixLayoutCreate(&p->ld, ty, (uint64_t)N, (uint64_t)M, ldy) ||
        cublasLtMatmulPreferenceCreate(&pref) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                             sizeof ws) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al,
                                             sizeof al) ||
        cublasLtMatrixLayoutCreate(&cb, t, (uint64_t)K, LT_CANON_M, K) ||
        cublasLtMatrixLayoutCreate(&cd, ty, (uint64_t)N, LT_CANON_M, ldy) ||
        (hs = cublasLtMatmulAlgoGetHeuristic(lt->h, p->op, p->la, d->opts.lt_tune ? p->lb : cb,
                                             d->opts.lt_tune ? p->ld : cd, d->opts.lt_tune ? p->ld : cd,
                                             pref, LT_CANDIDATES, res, &found)) ||
        found < 1)
        goto none;
    if (d->opts.lt_tune) {
        pick = plan_tune(c, p, res, found, args);
    } else {   /* the first candidate that runs this M without split-K */
        const uint32_t one = 1;
        const cublasLtReductionScheme_t red = CUBLASLT_REDUCTION_SCHEME_NONE;
        for (int i = 0; i < found && pick < 0; i++) {
            cublasLtMatmulHeuristicResult_t chk;
            if (cublasLtMatmulAlgoConfigSetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                     &one, sizeof one) ||
                cublasLtMatmulAlgoConfigSetAttribute(&res[i].algo,
                                                     CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red,
                                                     sizeof red)) {
                /* an algorithm without these knobs (maybe the FP8 kernels with outer-vector
                 * scales): usable as it is when its own split-K is 1 */
                uint32_t sk = 1;
                size_t wr = 0;
                if (cublasLtMatmulAlgoConfigGetAttribute(&res[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                         &sk, sizeof sk, &wr) == CUBLAS_STATUS_SUCCESS &&
                    sk > 1)
                    continue;
            }
            if (cublasLtMatmulAlgoCheck(lt->h, p->op, p->la, p->lb, p->ld, p->ld, &res[i].algo,
                                        &chk) == CUBLAS_STATUS_SUCCESS &&
                chk.workspaceSize <= LT_WORKSPACE)
                pick = i;
        }
        if (pick < 0) goto none;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(cb);
    cublasLtMatrixLayoutDestroy(cd);
    p->algo = res[pick].algo;
    p->ok = 1;
    return p;
none:
    if (f8)   /* FP8 has no fallback: say why there is no plan */
        tdm_log(TDM_LOG_WARN, "cuBLASLt: no FP8 plan for M %lld K %lld N %lld ldy %lld epilogue %d, output %s, "
                "alignment %u: heuristic status %d, %d candidate(s), %s", (long long)M, (long long)K,
                (long long)N, (long long)ldy, (int)epi, yhalf ? "half" : "float32", al, (int)hs, found,
                found > 0 ? "none runs without split-K at this M" : "none offered");
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (cb) cublasLtMatrixLayoutDestroy(cb);
    if (cd) cublasLtMatrixLayoutDestroy(cd);
    plan_destroy(p);   /* the key stays: remembered as "no plan", not queried again */
    return NULL;
}

/* Largest power of two (at most 256) dividing the address. */
static uint32_t align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1))) al >>= 1;
    return al;
}

/* Queues p on the call's operands: 1, or 0 when there is no plan. */
static int linear_lt(tdm_device_t *d, void *y, int yhalf, int64_t ldy, const lt_args *a,
                     int64_t M, int64_t K, int64_t N, int gelu) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    const float one = 1.0f, zero = 0.0f;
    const float *b = (const float *)a->b;
    cublasLtEpilogue_t epi = gelu ? (b ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                                  : (b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT);
    uint32_t al = align_of(y), aw = align_of(a->W), ax = align_of(a->xh);
    if (aw < al) al = aw;
    if (ax < al) al = ax;
    if (b && align_of(b) < 16) return 0;
    lt_plan *p = plan_get(d, c, M, K, N, ldy, epi, al, yhalf, a);
    if (!p) return 0;
    TDM_CUBLAS_CHECK(plan_bind(p, a) ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS);
    TDM_CUBLAS_CHECK(cublasLtMatmul(((tdm_cuda_lt *)c->lt)->h, p->op, &one, a->W, p->la, a->xh,
                                    p->lb, &zero, y, p->ld, y, p->ld, &p->algo,
                                    ((tdm_cuda_lt *)c->lt)->ws, LT_WORKSPACE, c->stream));
    return 1;
fail:
    return 1;
}

/* y (M, N; rows ldy apart) = act(xh (M, K) · W^T [+ b]) with xh and W in
 * d->gemm_dtype (F32, F16 or BF16), b float32, y float32 or (yhalf) d->gemm_dtype; act = cuBLASLt's GELU epilogue (the tanh
 * approximation) when `gelu`, else none. Returns 0 (nothing queued, no
 * error) when cuBLASLt has no plan for the shape, so the caller runs its
 * fallback; 1 otherwise (a failure of the launch is kept on the device). */
extern "C" int tdm_cuda_linear_lt(tdm_device_t *d, void *y, int yhalf, int64_t ldy,
                                  const void *xh, const void *W, const float *b, int64_t M,
                                  int64_t K, int64_t N, int gelu) {
    lt_args a = {y, xh, W, b, NULL, NULL};
    return linear_lt(d, y, yhalf, ldy, &a, M, K, N, gelu);
}

extern "C" int tdm_cuda_linear_lt_f8(tdm_device_t *d, void *y, int yhalf, int64_t ldy,
                                     const void *x8, const float *sx, const void *W8,
                                     const float *sw, const void *b, int64_t M, int64_t K,
                                     int64_t N, int gelu) {
    lt_args a = {y, x8, W8, b, sw, sx};
    return linear_lt(d, y, yhalf, ldy, &a, M, K, N, gelu);
}
