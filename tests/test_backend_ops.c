/* test_backend_ops.c — every op of backend/ops_list.h on every backend device
 * present against the CPU kernels (the spec), from one table of cases in the
 * manner of ggml's test-backend-ops. A case (g_cases) is an op, its sizes and
 * switches, and the dtypes it runs in; its op (op_info) names the operands
 * (sizes, ranges, outputs, GEMM weights, typed activations, aliases), calls
 * the op through tdm_op_* on a given device and holds the tolerances.
 * run_case does the rest once for all: draws the inputs, computes the
 * reference with the same call on the default CPU device ("cpu": tdm_cpu_* on
 * float32 host buffers), uploads, runs on the device under test, compares.
 *
 * test_backend_ops [cpu] [cuda]   (no argument: cpu)
 *   cpu   the float32 cases on a logical CPU device "cpu:1" whose
 *         opts.conv_tile_bytes is 1 (one output row per im2col tile), which
 *         must change nothing beyond rounding (ctest test_backend_ops, unit);
 *   cuda  every case on every CUDA device "cuda:N" in float32 and, where the
 *         case has them, with gemm_dtype F16 and BF16, then the device's
 *         memory and kept-error tests (ctest test_backend_ops_cuda, cuda).
 * A backend without devices prints SKIP; when nothing ran the exit code is 77.
 *
 * Error: max |got - ref| / max |ref| over a case's outputs; NaN/Inf where the
 * reference is finite fails, a NaN/Inf reference must be matched exactly.
 * Tolerances (tol_t): float32 1e-5 element-wise, 1e-4 GEMM-based (linear,
 * gemm, conv, attention), 0 layout. Half GEMM weights (linear, gemm, conv
 * with the weight stored in gemm_dtype, the activation rounded to it): 2e-3
 * (F16) / 1e-2 (BF16) against the reference on the unrounded inputs, what
 * rounding both operands costs, and 1e-4 against the reference on operands
 * rounded to the type (round to nearest even, float32 sums). Tensor-core
 * attention on float32 q, k, v: 5e-3 / 2e-2. Half activations (a typed op's
 * operands stored in the type and drawn as its values, so the reference reads
 * the same inputs): a step of the type (2^-10, 2^-7) relative to the largest
 * output, plus 1e-4 for a GEMM, plus 5e-3 / 2e-2 for attention. A case's
 * inputs come from a seed made of its name: adding a case changes no other. */
// label: unit
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "backend/ops.h"
#include "core/core.h"
#include "test.h"

/* ---- operands and ops ------------------------------------------------------ */

enum {
    A_OUT = 1 << 0,      /* compared with the reference after the call */
    A_ACT = 1 << 1,      /* typed (`at`): in half runs stored in the half type, drawn in it */
    A_WEIGHT = 1 << 2,   /* GEMM weight: in half runs stored in gemm_dtype */
    A_ROUND = 1 << 3,    /* rounded to the half type in the rounded-operand reference */
    A_ZERO = 1 << 4,     /* starts 0 (else uniform in [shift - range, shift + range)) */
    A_NAN = 1 << 5,      /* starts NaN on the device, 0 in the reference */
    A_SPECIAL = 1 << 6,  /* starts NaN, +Inf, -Inf, 0.25, -2, 3, then random */
    A_SCRATCH = 1 << 7,  /* the op's scratch, n from the device; NULL when 0 */
    A_ABSENT = 1 << 8,   /* NULL: an optional operand left out */
    A_IDX = 1 << 9,      /* int32 indices in [0, range), host memory, -1 right after the call */
    A_ALIAS = 1 << 10,   /* the buffer of operand `alias` */
    A_MATTERS = 1 << 11, /* zeroing it must change the reference by > 4x the tolerance */
};

#define MAXA 8

typedef struct {
    int64_t n;   /* elements */
    unsigned fl; /* A_* */
    float range, shift;
    int alias;
} operand;

static operand arg(int64_t n, float range, unsigned fl) {
    return (operand){.n = n, .fl = fl, .range = range};
}
static operand out0(int64_t n, unsigned fl) { return arg(n, 0, A_OUT | A_ZERO | fl); }
static operand opt(int64_t on, operand o) { return on ? o : (operand){.fl = A_ABSENT}; }
static operand same(int i, unsigned fl) { return (operand){.fl = fl | A_ALIAS, .alias = i}; }
static operand shifted(operand o, float shift) { o.shift = shift; return o; }

/* o[0..n) = the n operands that follow; returns n. */
static int set(operand *o, int n, ...) {
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) o[i] = va_arg(ap, operand);
    va_end(ap);
    return n;
}

/* An op function fills o with the operands of the case's sizes p and
 * returns their count; given buffers a (on dev, typed ones of type at) it
 * first calls the op on them. */
typedef struct {
    const int64_t *p;  /* the case's sizes and switches */
    const float *f;    /* its float parameters */
    tdm_device_t *dev;
    tdm_dtype dt;      /* the run's dtype: F32, F16, BF16 */
    tdm_dtype at;      /* the typed operands' type in this call: dt, F32 in the reference */
    int sub;           /* which op of a family */
    operand *o;
    void **a;
} opctx;

/* Tolerances by the run's dtype (F32, F16, BF16): u against the reference on
 * the inputs as drawn; r (half runs) against the reference on the A_WEIGHT
 * and A_ROUND operands rounded to the half type. NOCMP: not compared. */
typedef struct { double u[3], r[3]; } tol_t;
#define NOCMP (-1.0)
#define ACT16 0x1p-10 /* a step of F16 */
#define ACTBF 0x1p-7  /* a step of BF16 */
#define T_EXACT {{0, 0, 0}, {NOCMP, NOCMP, NOCMP}}
#define T_ELEM {{1e-5, ACT16, ACTBF}, {NOCMP, NOCMP, NOCMP}}   /* half runs: a half output */
#define T_ELEM32 {{1e-5, 1e-5, 1e-5}, {NOCMP, NOCMP, NOCMP}}   /* a float32 output */
#define T_GEMM {{1e-4, 2e-3, 1e-2}, {NOCMP, 1e-4, 1e-4}}
#define T_ATTN {{1e-4, 5e-3, 2e-2}, {NOCMP, NOCMP, NOCMP}}
#define T_ATTN_T {{1e-4, 5e-3 + ACT16, 2e-2 + ACTBF}, {NOCMP, NOCMP, NOCMP}}
#define T_CAST {{0, NOCMP, NOCMP}, {NOCMP, 0, 0}}

typedef struct {
    const char *name, *params;   /* params: the names of a case's p[] */
    int (*fn)(const opctx *);
    int sub;
    tol_t tol;                   /* of its cases, unless a case has its own */
    /* 1: errors are relative to the larger of the output's and the inputs'
     * magnitudes. For activations x·Φ(x)-like, whose output cancels far below
     * the input for x ≪ 0 (gelu(-3) ≈ -0.004): there float32 erf/exp give
     * the output only to the input's precision, on every backend. */
    int in_scale;
} op_info;

/* y (M, N) = x (M, K) · W (N, K)^T [+ b (N)] */
static int op_linear(const opctx *x) {
    const int64_t M = x->p[0], K = x->p[1], N = x->p[2];
    if (x->a) tdm_op_linear(x->dev, x->a[0], x->a[1], x->a[2], x->a[3], M, K, N);
    return set(x->o, 4, out0(M * N, 0), arg(M * K, 1, A_ROUND), arg(N * K, 1, A_WEIGHT),
               opt(x->p[3], arg(N, 1, 0)));
}
static const op_info LINEAR = {"linear", "M K N bias", op_linear, 0, T_GEMM, 0};

/* into y (M, ldy) whose other columns must stay */
static int op_linear_gelu(const opctx *x) {
    const int64_t M = x->p[0], K = x->p[1], N = x->p[2], ldy = x->p[3];
    if (x->a) tdm_op_linear_gelu(x->dev, x->a[0], ldy, x->a[1], x->a[2], x->a[3], M, K, N);
    return set(x->o, 4, arg(M * ldy, 1, A_OUT), arg(M * K, 1, A_ROUND), arg(N * K, 1, A_WEIGHT),
               opt(x->p[4], arg(N, 1, 0)));
}
static const op_info LINEAR_GELU = {"linear_gelu", "M K N ldy bias", op_linear_gelu, 0, T_GEMM, 0};

/* half x → half y (yhalf, the bias rounded to it first: backend/ops_list.h)
 * or float32 y; the reference on rounded W (and b) */
static int op_linear_ex(const opctx *x) {
    const int64_t M = x->p[0], K = x->p[1], N = x->p[2], ldy = x->p[3];
    const int gelu = (int)x->p[5], yhalf = (int)x->p[6];
    float *t = NULL;
    if (x->a && tdm_dev_is_host(x->dev) && !gelu && ldy != N) {   /* the host op: ldy == N */
        if ((t = malloc((size_t)(M * N) * sizeof(float))) != NULL) {
            tdm_op_linear(x->dev, t, x->a[1], x->a[2], x->a[3], M, K, N);
            tdm_op_copy_2d(x->dev, TDM_F32, x->a[0], ldy, t, N, M, N);
        }
        CHECK_MSG(t != NULL, "linear_ex reference: out of host memory");
        free(t);
    } else if (x->a) {
        tdm_op_linear_ex(x->dev, x->a[0], yhalf ? x->at : TDM_F32, ldy, x->a[1], x->at, x->a[2],
                         x->a[3], M, K, N, gelu);
    }
    return set(x->o, 4, arg(M * ldy, 1, A_OUT | (yhalf ? A_ACT : 0)), arg(M * K, 1, A_ACT),
               arg(N * K, 1, A_WEIGHT), opt(x->p[4], arg(N, 1, yhalf ? A_ROUND : 0)));
}
static const op_info LINEAR_EX = {"linear_ex", "M K N ldy bias gelu yhalf", op_linear_ex, 0,
                                  {{NOCMP, NOCMP, NOCMP}, {NOCMP, 1e-4 + ACT16, 1e-4 + ACTBF}}, 0};
static const tol_t TOL_LINEX_F32OUT = {{NOCMP, NOCMP, NOCMP}, {NOCMP, 1e-4, 1e-4}};

/* C (M, N; ldc = N + pad) = alpha·op(A)·op(B) + beta·C, lda and ldb padded too */
static int op_gemm(const opctx *x) {
    const int tA = (int)x->p[0], tB = (int)x->p[1];
    const int64_t M = x->p[2], N = x->p[3], K = x->p[4], pad = x->p[5];
    const int64_t lda = (tA ? M : K) + pad, ldb = (tB ? K : N) + pad, ldc = N + pad;
    if (x->a)
        tdm_op_gemm(x->dev, tA, tB, M, N, K, x->f[0], x->a[1], lda, x->a[2], ldb, x->f[1],
                    x->a[0], ldc);
    return set(x->o, 3, arg(M * ldc, 1, A_OUT), arg((tA ? K : M) * lda, 1, A_ROUND),
               arg((tB ? N : K) * ldb, 1, A_WEIGHT));
}
static const op_info GEMM = {"gemm", "tA tB M N K pad", op_gemm, 0, T_GEMM, 0};

/* conv2d when the padding is the same on all sides, else conv2d_pad4 */
static int op_conv(const opctx *x) {
    const int64_t *p = x->p, B = p[0], Cin = p[1], H = p[2], W = p[3], Cout = p[4], kh = p[5];
    const int64_t kw = p[6], s = p[7], pt = p[8], pb = p[9], pl = p[10], pr = p[11];
    const int64_t Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    const int sym = pt == pb && pt == pl && pt == pr;
    const int64_t ns = tdm_op_conv2d_pad4_scratch(x->dev, Cin, Cout, H, W, kh, kw, s, pt, pb, pl, pr);
    void **a = x->a;
    if (sym) CHECK(tdm_op_conv2d_scratch(x->dev, Cin, Cout, H, W, kh, kw, s, pt) == ns);
    if (a && sym)
        tdm_op_conv2d(x->dev, a[0], a[1], a[2], a[3], B, Cin, H, W, Cout, kh, kw, s, pt, a[4]);
    else if (a)
        tdm_op_conv2d_pad4(x->dev, a[0], a[1], a[2], a[3], B, Cin, H, W, Cout, kh, kw, s, pt, pb,
                           pl, pr, a[4]);
    return set(x->o, 5, out0(B * Cout * Ho * Wo, 0), arg(B * Cin * H * W, 1, A_ROUND),
               arg(Cout * Cin * kh * kw, 0.5f, A_WEIGHT), opt(p[12], arg(Cout, 1, 0)),
               arg(ns, 0, A_SCRATCH));
}
static const op_info CONV = {"conv2d", "B Cin H W Cout kh kw s pt pb pl pr bias", op_conv, 0,
                             T_GEMM, 0};

/* x with a nonzero mean; gamma, beta left out when not affine */
static int op_group_norm(const opctx *x) {
    const int64_t B = x->p[0], C = x->p[1], S = x->p[2], G = x->p[3];
    if (x->a)
        tdm_op_group_norm(x->dev, x->a[0], x->a[1], x->a[2], x->a[3], B, C, S, G, 1e-6f,
                          (int)x->p[4]);
    return set(x->o, 4, x->p[6] ? same(1, A_OUT) : out0(B * C * S, 0),
               shifted(arg(B * C * S, 2, 0), 0.7f), opt(x->p[5], arg(C, 1, 0)),
               opt(x->p[5], arg(C, 1, 0)));
}
static const op_info GROUP_NORM = {"group_norm", "B C S G silu affine inplace", op_group_norm, 0,
                                   T_ELEM, 0};

/* Group norm in parts (the parallel VAE decode's row bands): x (P, C, S) as
 * the bands of P ranks of one image (group g of the image: the P bands'
 * groups g): group_norm_sums per band, sum_parts_f64 of the bands' sums, the
 * deviations' sums the same way, group_norm_apply per band. The statistics
 * ((P + 2)·G doubles) live in an F32 operand with room for twice that. */
static int op_gn_parts(const opctx *x) {
    const int64_t P = x->p[0], C = x->p[1], S = x->p[2], G = x->p[3];
    if (x->a) {
        double *part = (double *)x->a[4], *mean = part + P * G, *var = mean + G;
        const float *in = x->a[1];
        float *y = x->a[0];
        const double count = (double)(C / G * S * P);
        for (int64_t r = 0; r < P; r++)
            tdm_op_group_norm_sums(x->dev, part + r * G, in + r * C * S, NULL, 1, C, S, G);
        tdm_op_sum_parts_f64(x->dev, mean, part, P, G, count);
        for (int64_t r = 0; r < P; r++)
            tdm_op_group_norm_sums(x->dev, part + r * G, in + r * C * S, mean, 1, C, S, G);
        tdm_op_sum_parts_f64(x->dev, var, part, P, G, count);
        for (int64_t r = 0; r < P; r++)
            tdm_op_group_norm_apply(x->dev, y + r * C * S, in + r * C * S, mean, var, x->a[2],
                                    x->a[3], 1, C, S, G, 1e-6f, (int)x->p[4]);
    }
    return set(x->o, 5, out0(P * C * S, 0), shifted(arg(P * C * S, 2, 0), 0.7f),
               opt(x->p[5], arg(C, 1, 0)), opt(x->p[5], arg(C, 1, 0)),
               arg(4 * (P + 2) * G, 0, A_ZERO));
}
static const op_info GN_PARTS = {"group_norm_sums + sum_parts_f64 + group_norm_apply",
                                 "P C S G silu affine", op_gn_parts, 0, T_ELEM, 0};

static int op_layer_norm(const opctx *x) {
    const int64_t rows = x->p[0], D = x->p[1];
    if (x->a) tdm_op_layer_norm(x->dev, x->a[0], x->a[1], x->a[2], x->a[3], rows, D, 1e-5f);
    return set(x->o, 4, x->p[3] ? same(1, A_OUT) : out0(rows * D, 0),
               shifted(arg(rows * D, 3, 0), -1.3f), opt(x->p[2], arg(D, 1, 0)),
               opt(x->p[2], arg(D, 1, 0)));
}
static const op_info LAYER_NORM = {"layer_norm", "rows D affine inplace", op_layer_norm, 0,
                                   T_ELEM, 0};

/* w left out: ones */
static int op_rms_norm(const opctx *x) {
    const int64_t rows = x->p[0], D = x->p[1];
    if (x->a) tdm_op_rms_norm(x->dev, x->a[0], x->a[1], x->a[2], rows, D, 1e-6f);
    return set(x->o, 3, x->p[3] ? same(1, A_OUT) : out0(rows * D, 0), arg(rows * D, 3, 0),
               opt(x->p[2], arg(D, 2, 0)));
}
static const op_info RMS_NORM = {"rms_norm", "rows D w inplace", op_rms_norm, 0, T_ELEM, 0};

/* float32 x → typed y */
static int op_rms_norm_t(const opctx *x) {
    const int64_t rows = x->p[0], D = x->p[1];
    if (x->a) tdm_op_rms_norm_t(x->dev, x->at, x->a[0], x->a[1], x->a[2], rows, D, 1e-6f);
    return set(x->o, 3, out0(rows * D, A_ACT), arg(rows * D, 3, 0), arg(D, 2, 0));
}
static const op_info RMS_NORM_T = {"rms_norm_t", "rows D", op_rms_norm_t, 0, T_ELEM, 0};

/* in place on x (n) */
static int op_unary(const opctx *x) {
    static void (*const fn[])(tdm_device_t *, float *, int64_t) = {
        tdm_op_silu, tdm_op_gelu, tdm_op_gelu_tanh, tdm_op_quick_gelu, tdm_op_relu};
    if (x->a) fn[x->sub](x->dev, x->a[0], x->p[0]);
    return set(x->o, 1, arg(x->p[0], 6, A_OUT | (x->p[1] ? A_SPECIAL : 0)));
}
static const op_info SILU = {"silu", "n special", op_unary, 0, T_ELEM, 1};
static const op_info GELU = {"gelu", "n special", op_unary, 1, T_ELEM, 1};
static const op_info GELU_TANH = {"gelu_tanh", "n special", op_unary, 2, T_ELEM, 1};
static const op_info QUICK_GELU = {"quick_gelu", "n special", op_unary, 3, T_ELEM, 1};
static const op_info RELU = {"relu", "n special", op_unary, 4, T_ELEM, 0};

/* the typed activation sub (a tdm_act_fn) in place on x (n) */
static int op_act_t(const opctx *x) {
    if (x->a) tdm_op_act_t(x->dev, x->at, (tdm_act_fn)x->sub, x->a[0], x->p[0]);
    return set(x->o, 1, arg(x->p[0], 4, A_OUT | A_ACT));
}
static const op_info ACT_RELU = {"act_t relu", "n", op_act_t, TDM_FN_RELU, T_ELEM, 0};
static const op_info ACT_GELU = {"act_t gelu", "n", op_act_t, TDM_FN_GELU, T_ELEM, 1};
static const op_info ACT_GELU_TANH = {"act_t gelu_tanh", "n", op_act_t, TDM_FN_GELU_TANH, T_ELEM, 1};
static const op_info ACT_SILU = {"act_t silu", "n", op_act_t, TDM_FN_SILU, T_ELEM, 1};

static int op_geglu(const opctx *x) {
    const int64_t rows = x->p[0], F = x->p[1];
    if (x->a) tdm_op_geglu(x->dev, x->a[0], x->a[1], rows, F);
    return set(x->o, 2, out0(rows * F, 0), arg(rows * 2 * F, 4, 0));
}
static const op_info GEGLU = {"geglu", "rows F", op_geglu, 0, T_ELEM, 1};

/* y = a + b, a · b (float32) or typed a · b; alias 1: y is a, 2: y is b */
static int op_binary(const opctx *x) {
    const int64_t n = x->p[0], al = x->p[1];
    const unsigned t = x->sub == 2 ? A_ACT : 0;
    const float r = x->sub == 2 ? 4.0f : 5.0f;
    if (x->a && x->sub == 0) tdm_op_add(x->dev, x->a[0], x->a[1], x->a[2], n);
    if (x->a && x->sub == 1) tdm_op_mul(x->dev, x->a[0], x->a[1], x->a[2], n);
    if (x->a && x->sub == 2) tdm_op_mul_t(x->dev, x->at, x->a[0], x->a[1], x->a[2], n);
    return set(x->o, 3, al ? same((int)al, A_OUT) : out0(n, t), arg(n, r, t), arg(n, r, t));
}
static const op_info ADD = {"add", "n alias", op_binary, 0, T_ELEM, 0};
static const op_info MUL = {"mul", "n alias", op_binary, 1, T_ELEM, 0};
static const op_info MUL_T = {"mul_t", "n alias", op_binary, 2, T_ELEM, 0};

/* y = a · -0.37 or clamp(a, -1.5, 2) */
static int op_scale_clamp(const opctx *x) {
    const int64_t n = x->p[0];
    if (x->a && x->sub == 0) tdm_op_scale(x->dev, x->a[0], x->a[1], -0.37f, n);
    if (x->a && x->sub == 1) tdm_op_clamp(x->dev, x->a[0], x->a[1], -1.5f, 2.0f, n);
    return set(x->o, 2, x->p[1] ? same(1, A_OUT) : out0(n, 0),
               arg(n, 5, x->p[2] ? A_SPECIAL : 0));
}
static const op_info SCALE = {"scale", "n inplace special", op_scale_clamp, 0, T_ELEM, 0};
static const op_info CLAMP = {"clamp", "n inplace special", op_scale_clamp, 1, T_ELEM, 0};

static int op_add_channel_bias(const opctx *x) {
    const int64_t B = x->p[0], C = x->p[1], S = x->p[2];
    if (x->a) tdm_op_add_channel_bias(x->dev, x->a[0], x->a[1], B, C, S);
    return set(x->o, 2, arg(B * C * S, 2, A_OUT), arg(B * C, 2, 0));
}
static const op_info ADD_CHANNEL_BIAS = {"add_channel_bias", "B C S", op_add_channel_bias, 0,
                                         T_ELEM, 0};

/* float32 x cast to the typed xh (rounded as the host rounds), copied into y
 * (rows, ldy) and cast back into xf (exact): against the reference on x rounded */
static int op_cast_copy(const opctx *x) {
    const int64_t rows = x->p[0], cols = x->p[1], ldy = x->p[2], n = rows * cols;
    if (x->a) {
        tdm_op_cast(x->dev, x->a[2], x->at, x->a[1], TDM_F32, n);
        tdm_op_copy_2d(x->dev, x->at, x->a[0], ldy, x->a[2], cols, rows, cols);
        tdm_op_cast(x->dev, x->a[3], TDM_F32, x->a[2], x->at, n);
    }
    return set(x->o, 4, arg(rows * ldy, 1, A_OUT | A_ACT), arg(n, 1, A_ROUND),
               arg(n, 0, A_ZERO | A_ACT), out0(n, 0));
}
static const op_info CAST_COPY = {"cast + copy_2d", "rows cols ldy", op_cast_copy, 0, T_CAST, 0};

/* (B, C, S) → (B, S, C), and back */
static int op_transpose(const opctx *x) {
    const int64_t B = x->p[0], n1 = x->p[1], n2 = x->p[2];
    if (x->a && x->sub == 0) tdm_op_transpose_cs(x->dev, x->a[0], x->a[1], B, n1, n2);
    if (x->a && x->sub == 1) tdm_op_transpose_sc(x->dev, x->a[0], x->a[1], B, n1, n2);
    return set(x->o, 2, out0(B * n1 * n2, 0), arg(B * n1 * n2, 1, 0));
}
static const op_info TRANSPOSE_CS = {"transpose_cs", "B C S", op_transpose, 0, T_EXACT, 0};
static const op_info TRANSPOSE_SC = {"transpose_sc", "B S C", op_transpose, 1, T_EXACT, 0};

/* nearest 2× (sub 0) or to Ho × Wo (sub 1) */
static int op_resize(const opctx *x) {
    const int64_t B = x->p[0], C = x->p[1], H = x->p[2], W = x->p[3];
    const int64_t Ho = x->sub ? x->p[4] : 2 * H, Wo = x->sub ? x->p[5] : 2 * W;
    if (x->a && x->sub == 0) tdm_op_upsample_nearest2x(x->dev, x->a[0], x->a[1], B, C, H, W);
    if (x->a && x->sub == 1) tdm_op_resize_nearest(x->dev, x->a[0], x->a[1], B, C, H, W, Ho, Wo);
    return set(x->o, 2, out0(B * C * Ho * Wo, 0), arg(B * C * H * W, 1, 0));
}
static const op_info UPSAMPLE = {"upsample_nearest2x", "B C H W", op_resize, 0, T_EXACT, 0};
static const op_info RESIZE = {"resize_nearest", "B C H W Ho Wo", op_resize, 1, T_EXACT, 0};

static int op_concat(const opctx *x) {
    const int64_t B = x->p[0], Ca = x->p[1], Cb = x->p[2], S = x->p[3];
    if (x->a) tdm_op_concat_channels(x->dev, x->a[0], x->a[1], Ca, x->a[2], Cb, B, S);
    return set(x->o, 3, out0(B * (Ca + Cb) * S, 0), arg(B * Ca * S, 1, 0), arg(B * Cb * S, 1, 0));
}
static const op_info CONCAT = {"concat_channels", "B Ca Cb S", op_concat, 0, T_EXACT, 0};

/* n rows of a (rows, D) table; indices drawn with the first 0, the last rows - 1 */
static int op_gather_rows(const opctx *x) {
    const int64_t rows = x->p[0], D = x->p[1], n = x->p[2];
    if (x->a) tdm_op_gather_rows(x->dev, x->a[0], x->a[1], x->a[2], n, D);
    return set(x->o, 3, out0(n * D, 0), arg(rows * D, 1, 0), arg(n, (float)rows, A_IDX));
}
static const op_info GATHER = {"gather_rows", "rows D n", op_gather_rows, 0, T_EXACT, 0};

/* cols columns into column off of y (rows, ldy); ldx = 0 broadcasts x (cols) */
static int op_copy_2d(const opctx *x) {
    const int64_t rows = x->p[0], cols = x->p[1], ldy = x->p[2], ldx = x->p[4];
    if (x->a)
        tdm_op_copy_2d(x->dev, x->at, tdm_act_at(x->a[0], x->at, x->p[3]), ldy, x->a[1], ldx, rows,
                       cols);
    return set(x->o, 2, arg(rows * ldy, 1, A_OUT | A_ACT), arg(ldx ? rows * ldx : cols, 1, A_ACT));
}
static const op_info COPY_2D = {"copy_2d", "rows cols ldy off ldx", op_copy_2d, 0, T_ELEM, 0};

/* float32 q, k, v (half runs: the tensor-core kernels, o poisoned with NaN)
 * or typed (sub 1); scale 1/sqrt(D) */
static int op_attention(const opctx *x) {
    const int64_t B = x->p[0], Tq = x->p[1], Tk = x->p[2], H = x->p[3], D = x->p[4];
    const int causal = (int)x->p[5];
    const unsigned t = x->sub ? A_ACT : 0;
    const float sc = 1.0f / sqrtf((float)D);
    void **a = x->a;
    if (a && x->sub)
        tdm_op_attention_t(x->dev, x->at, a[0], a[1], a[2], a[3], B, Tq, Tk, H, D, sc, causal);
    else if (a)
        tdm_op_attention(x->dev, a[0], a[1], a[2], a[3], B, Tq, Tk, H, D, sc, causal);
    return set(x->o, 4, arg(B * Tq * H * D, 0, A_OUT | t | (x->dt != TDM_F32 ? A_NAN : A_ZERO)),
               arg(B * Tq * H * D, 2, t), arg(B * Tk * H * D, 2, t), arg(B * Tk * H * D, 1, t));
}
static const op_info ATTENTION = {"attention", "B Tq Tk H D causal", op_attention, 0, T_ATTN, 0};
static const op_info ATTENTION_T = {"attention_t", "B Tq Tk H D causal", op_attention, 1,
                                    T_ATTN_T, 0};

/* typed q, k, v; float32 o and lse, held values to merge into (acc) or not,
 * set to NaN in half runs (every element must be written) */
static int op_attention_lse(const opctx *x) {
    const int64_t B = x->p[0], Tq = x->p[1], Tk = x->p[2], H = x->p[3], D = x->p[4];
    const int acc = (int)x->p[5];
    const float sc = 1.0f / sqrtf((float)D);
    const unsigned fresh = x->dt != TDM_F32 ? A_NAN : A_ZERO;
    void **a = x->a;
    if (a)
        tdm_op_attention_lse(x->dev, x->at, a[0], a[1], a[2], a[3], a[4], B, Tq, Tk, H, D, sc,
                             acc);
    return set(x->o, 5, arg(B * Tq * H * D, 1, A_OUT | (acc ? 0 : fresh)),
               shifted(arg(B * H * Tq, 1, A_OUT | (acc ? 0 : fresh)), 3.0f),
               arg(B * Tq * H * D, 2, A_ACT), arg(B * Tk * H * D, 2, A_ACT),
               arg(B * Tk * H * D, 1, A_ACT));
}
static const op_info ATTENTION_LSE = {"attention_lse", "B Tq Tk H D acc", op_attention_lse, 0,
                                      T_ATTN, 0};

/* T5's: q, k, v (B, T, H·D) and a bias table (H, 2T-1) of a wide range as
 * T5's learned biases have (8; in half runs 5), which must count (T > 1: with
 * one key the softmax weight is 1 whatever the bias); float32 or typed (sub 1) */
static int op_attention_bias(const opctx *x) {
    const int64_t B = x->p[0], T = x->p[1], H = x->p[2], D = x->p[3], n = B * T * H * D;
    const unsigned t = x->sub ? A_ACT : 0, half = x->dt != TDM_F32;
    void **a = x->a;
    if (a && x->sub)
        tdm_op_attention_bias_t(x->dev, x->at, a[0], a[1], a[2], a[3], a[4], a[5], B, T, H, D);
    else if (a)
        tdm_op_attention_bias(x->dev, a[0], a[1], a[2], a[3], a[4], a[5], B, T, H, D);
    return set(x->o, 6, arg(n, 0, A_OUT | t | (half ? A_NAN : A_ZERO)), arg(n, 1, t), arg(n, 1, t),
               arg(n, 1, t), arg(H * (2 * T - 1), half ? 5.0f : 8.0f, !t && T > 1 ? A_MATTERS : 0),
               arg(tdm_op_attention_bias_scratch(x->dev, T), 0, A_SCRATCH));
}
static const op_info ATTENTION_BIAS = {"attention_bias", "B T H D", op_attention_bias, 0, T_ATTN, 0};
static const op_info ATTENTION_BIAS_T = {"attention_bias_t", "B T H D", op_attention_bias, 1,
                                         T_ATTN_T, 0};

static int op_rope(const opctx *x) {
    const int64_t B = x->p[0], S = x->p[1], H = x->p[2], hd = x->p[3];
    if (x->a) tdm_op_rope_interleaved(x->dev, x->at, x->a[0], x->a[1], x->a[2], B, S, H, hd);
    return set(x->o, 3, arg(B * S * H * hd, 3, A_OUT | A_ACT), arg(S * hd, 1, 0),
               arg(S * hd, 1, 0));
}
static const op_info ROPE = {"rope_interleaved", "B S H hd", op_rope, 0, T_ELEM, 0};

static int op_rms_norm_heads(const opctx *x) {
    const int64_t *p = x->p, B = p[0], S = p[1], H = p[4], hd = p[5];
    if (x->a)
        tdm_op_rms_norm_heads(x->dev, x->at, x->a[0], x->a[1], B, S, p[2], p[3], H, hd, 1e-6f);
    return set(x->o, 2, arg(B * S * H * hd, 4, A_OUT | A_ACT), arg(hd, 2, 0));
}
static const op_info RMS_NORM_HEADS = {"rms_norm_heads", "B S r0 L H hd", op_rms_norm_heads, 0,
                                       T_ELEM, 0};

static int op_qk_norm_rope(const opctx *x) {
    const int64_t B = x->p[0], S = x->p[1], H = x->p[3], hd = x->p[4];
    void **a = x->a;
    if (a)
        tdm_op_qk_norm_rope(x->dev, x->at, a[0], a[1], a[2], x->p[2], a[3], a[4], B, S, H, hd,
                            1e-6f);
    return set(x->o, 5, arg(B * S * H * hd, 4, A_OUT | A_ACT), arg(hd, 2, 0), arg(hd, 2, 0),
               arg(S * hd, 1, 0), arg(S * hd, 1, 0));
}
static const op_info QK_NORM_ROPE = {"qk_norm_rope", "B S split H hd", op_qk_norm_rope, 0, T_ELEM, 0};

/* y starts random (rows outside the segment must stay), or is x; shift and
 * scale at 3D and 4D of a (B, 6D) modulation */
static int op_layer_norm_modulate(const opctx *x) {
    const int64_t *p = x->p, B = p[0], S = p[1], D = p[4];
    if (x->a) {
        const float *m = x->a[2];
        tdm_op_layer_norm_modulate(x->dev, x->at, x->a[0], x->a[1], m + 3 * D, m + 4 * D, 6 * D,
                                   B, S, p[2], p[3], D, 1e-6f);
    }
    return set(x->o, 3, p[5] ? same(1, A_OUT) : arg(B * S * D, 1, A_OUT | A_ACT),
               arg(B * S * D, 5, 0), arg(B * 6 * D, 1, 0));
}
static const op_info LN_MODULATE = {"layer_norm_modulate", "B S r0 L D inplace",
                                    op_layer_norm_modulate, 0, T_ELEM, 0};

/* float32 x += gate · typed y, the gate at 2D of a (B, 3D) modulation */
static int op_gated_add_rows(const opctx *x) {
    const int64_t *p = x->p, B = p[0], S = p[1], D = p[4];
    if (x->a) {
        const float *m = x->a[2];
        tdm_op_gated_add_rows(x->dev, x->at, x->a[0], x->a[1], m + 2 * D, 3 * D, B, S, p[2], p[3],
                              D);
    }
    return set(x->o, 3, arg(B * S * D, 3, A_OUT), arg(B * S * D, 3, A_ACT), arg(B * 3 * D, 2, 0));
}
static const op_info GATED_ADD = {"gated_add_rows", "B S r0 L D", op_gated_add_rows, 0, T_ELEM32, 0};

/* ---- the cases ----------------------------------------------------------------- */

enum { D32 = 1, D16 = 2, DBF = 4, DH = D16 | DBF, DALL = D32 | DH };   /* run dtypes */
enum { IG_DEFAULT = 0, IG_OFF, IG_ON };   /* half convs: opts.conv_igemm 0 / 2 for the call */

typedef struct {
    const op_info *op;
    int64_t p[13];      /* sizes and switches, named by op->params */
    unsigned dts;       /* D32 | D16 | DBF */
    float f[2];         /* gemm: alpha, beta */
    const tol_t *tol;   /* NULL: op->tol */
    int igemm;
} op_case;

/* Fields a row leaves out are zero: f unused, tol NULL (the op's), igemm the default. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
static const op_case g_cases[] = {
    /* GEMMs; half: odd sizes have no tensor-core alignment */
    {&LINEAR, {5, 7, 3, 1}, DALL}, {&LINEAR, {13, 33, 17, 0}, DALL}, {&LINEAR, {1, 64, 96, 1}, D32},
    {&LINEAR, {257, 320, 640, 1}, DALL},
    {&LINEAR, {4096, 320, 320, 0}, DH},    /* SD attention projection */
    {&LINEAR, {77, 768, 1280, 1}, DH},     /* cross-attention k/v */
    {&LINEAR_GELU, {5, 7, 3, 3, 1}, DALL}, {&LINEAR_GELU, {33, 64, 96, 96, 0}, DALL},
    {&LINEAR_GELU, {300, 128, 512, 640, 1}, DALL},   /* the FLUX single-block MLP */
    {&LINEAR_GELU, {1, 96, 384, 384, 1}, DALL},      /* one row */
    {&LINEAR_EX, {300, 128, 256, 256, 1, 0, 1}, DH}, {&LINEAR_EX, {77, 96, 64, 64, 0, 0, 1}, DH},
    {&LINEAR_EX, {300, 128, 512, 640, 1, 1, 1}, DH},   /* FLUX MLP into the concat buffer */
    {&LINEAR_EX, {13, 33, 17, 21, 1, 0, 1}, DH},       /* odd: the fallback epilogue */
    {&LINEAR_EX, {5, 7, 3, 3, 1, 1, 1}, DH},
    {&LINEAR_EX, {300, 128, 64, 64, 1, 0, 0}, DH, {0}, &TOL_LINEX_F32OUT},   /* float32 out */
    {&GEMM, {0, 0, 6, 5, 9, 0}, DALL, {0.5f, 2.0f}},
    {&GEMM, {0, 1, 6, 5, 9, 0}, DALL, {0.5f, 2.0f}},
    {&GEMM, {1, 0, 6, 5, 9, 0}, DALL, {0.5f, 2.0f}},
    {&GEMM, {1, 1, 6, 5, 9, 0}, DALL, {0.5f, 2.0f}},
    {&GEMM, {0, 0, 37, 29, 41, 3}, D32, {1.0f, 0.0f}},
    {&GEMM, {0, 1, 37, 29, 41, 3}, D32, {1.0f, 0.0f}},
    {&GEMM, {1, 0, 37, 29, 41, 3}, D32, {1.0f, 0.0f}},
    {&GEMM, {1, 1, 37, 29, 41, 3}, D32, {1.0f, 0.0f}},
    {&GEMM, {0, 0, 130, 70, 300, 1}, DALL, {-1.5f, 1.0f}},   /* strided */
    {&GEMM, {0, 1, 130, 70, 300, 1}, DALL, {-1.5f, 1.0f}},
    {&GEMM, {1, 0, 130, 70, 300, 1}, DALL, {-1.5f, 1.0f}},
    {&GEMM, {1, 1, 130, 70, 300, 1}, DALL, {-1.5f, 1.0f}},
    {&GEMM, {0, 1, 300, 512, 128, 0}, DH, {1.0f, 1.0f}},      /* the FLUX MLP call */
    /* B Cin H W Cout kh kw s pt pb pl pr bias */
    {&CONV, {2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1}, DALL},
    {&CONV, {1, 4, 8, 8, 6, 3, 3, 2, 1, 1, 1, 1, 1}, D32},
    {&CONV, {2, 8, 5, 5, 4, 1, 1, 1, 0, 0, 0, 0, 1}, DALL},     /* 1×1: one batched GEMM */
    {&CONV, {3, 5, 4, 6, 3, 1, 1, 1, 0, 0, 0, 0, 0}, D32},
    {&CONV, {1, 2, 6, 7, 3, 3, 2, 1, 0, 0, 0, 0, 0}, D32},
    {&CONV, {2, 3, 8, 7, 5, 3, 3, 2, 0, 1, 0, 1, 1}, DALL},     /* VAE encoder downsample padding */
    {&CONV, {1, 3, 5, 5, 2, 1, 1, 2, 0, 0, 0, 0, 0}, D32},      /* 1×1 stride 2: im2col */
    {&CONV, {1, 3, 5, 5, 2, 1, 1, 2, 0, 0, 0, 0, 1}, DH},
    {&CONV, {1, 16, 33, 31, 8, 3, 3, 1, 1, 1, 1, 1, 1}, D32},
    {&CONV, {1, 64, 300, 300, 4, 3, 3, 1, 1, 1, 1, 1, 1}, DALL},     /* two im2col tiles */
    {&CONV, {2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1}, DH},      /* SD UNet level 0 */
    {&CONV, {2, 64, 32, 32, 64, 3, 3, 2, 1, 1, 1, 1, 1}, DH},        /* SD downsample */
    {&CONV, {1, 16, 64, 64, 16, 3, 3, 2, 0, 1, 0, 1, 1}, DH},        /* VAE downsample */
    /* the implicit-GEMM 3×3 conv (conv_igemm.cu) forced on for every shape it
     * takes, then off: the row tile's tail (Cout 320, 40), column tails with an
     * odd pixel count and columns straddling two images, stride 2, the VAE
     * encoder's one-sided padding; Cin 1024: K = 9216 (288 steps) */
    {&CONV, {2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {3, 64, 13, 11, 40, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {2, 32, 33, 31, 130, 3, 3, 2, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {1, 32, 17, 17, 64, 3, 3, 2, 0, 1, 0, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {1, 1024, 9, 7, 136, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {1, 128, 128, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_ON},
    {&CONV, {2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_OFF},
    {&CONV, {3, 64, 13, 11, 40, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_OFF},
    {&CONV, {2, 32, 33, 31, 130, 3, 3, 2, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_OFF},
    {&CONV, {1, 32, 17, 17, 64, 3, 3, 2, 0, 1, 0, 1, 1}, DH, {0}, NULL, IG_OFF},
    {&CONV, {1, 1024, 9, 7, 136, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_OFF},
    {&CONV, {1, 128, 128, 128, 128, 3, 3, 1, 1, 1, 1, 1, 1}, DH, {0}, NULL, IG_OFF},
    /* norms */
    {&GROUP_NORM, {2, 64, 37, 32, 0, 1, 0}, D32}, {&GROUP_NORM, {2, 64, 37, 32, 1, 1, 1}, D32},
    {&GROUP_NORM, {1, 12, 1000, 3, 1, 0, 0}, D32}, {&GROUP_NORM, {3, 6, 1, 6, 0, 1, 0}, D32},
    {&GROUP_NORM, {1, 128, 256 * 256, 32, 1, 1, 1}, D32},
    {&GROUP_NORM, {2, 320, 64 * 64, 32, 1, 1, 0}, D32},     /* SD 64x64: the sliced path */
    {&GROUP_NORM, {1, 64, 8191, 8, 1, 1, 0}, D32},          /* large groups, S % 4 != 0 */
    {&GROUP_NORM, {2, 256, 128 * 128, 32, 0, 1, 1}, D32},   /* sliced, in place */
    {&GN_PARTS, {2, 64, 37, 32, 1, 1}, D32}, {&GN_PARTS, {3, 12, 1000, 3, 0, 0}, D32},
    {&GN_PARTS, {1, 6, 1, 6, 1, 1}, D32},
    {&GN_PARTS, {3, 128, 64 * 21, 32, 1, 1}, D32},            /* a VAE band of 3 ranks */
    {&LAYER_NORM, {7, 33, 1, 0}, D32}, {&LAYER_NORM, {5, 768, 1, 1}, D32},
    {&LAYER_NORM, {3, 3072, 0, 0}, D32}, {&LAYER_NORM, {1000, 1, 1, 0}, D32},
    {&LAYER_NORM, {77, 1280, 1, 0}, D32},
    {&RMS_NORM, {7, 33, 1, 0}, D32}, {&RMS_NORM, {5, 4096, 1, 1}, D32},   /* T5-XXL width */
    {&RMS_NORM, {1000, 1, 0, 0}, D32}, {&RMS_NORM, {77, 48, 0, 1}, D32},
    {&RMS_NORM_T, {7, 33}, DALL}, {&RMS_NORM_T, {64, 4096}, DALL},
    /* activations and element-wise */
    {&SILU, {1}, D32}, {&SILU, {1000}, D32}, {&SILU, {100003}, D32},
    {&GELU, {1}, D32}, {&GELU, {1000}, D32}, {&GELU, {100003}, D32},
    {&GELU_TANH, {1}, D32}, {&GELU_TANH, {1000}, D32}, {&GELU_TANH, {100003}, D32},
    {&QUICK_GELU, {1}, D32}, {&QUICK_GELU, {1000}, D32}, {&QUICK_GELU, {100003}, D32},
    {&RELU, {1}, D32}, {&RELU, {1000}, D32}, {&RELU, {100003}, D32},
    {&RELU, {6, 1}, D32},   /* NaN becomes 0 */
    {&ACT_RELU, {231}, DALL}, {&ACT_GELU, {231}, DALL}, {&ACT_GELU_TANH, {231}, DALL},
    {&ACT_SILU, {231}, DALL}, {&ACT_RELU, {262144}, DALL}, {&ACT_GELU, {262144}, DALL},
    {&ACT_GELU_TANH, {262144}, DALL}, {&ACT_SILU, {262144}, DALL},
    {&GEGLU, {7, 33}, D32}, {&GEGLU, {64, 1280}, D32}, {&GEGLU, {1, 1}, D32},
    {&ADD, {1, 0}, D32}, {&ADD, {4097, 0}, D32}, {&ADD, {300001, 0}, D32},
    {&ADD, {1, 1}, D32}, {&ADD, {4097, 1}, D32}, {&ADD, {300001, 1}, D32}, {&ADD, {4097, 2}, D32},
    {&MUL, {1, 0}, D32}, {&MUL, {1000, 0}, D32}, {&MUL, {100003, 0}, D32},
    {&MUL, {1, 1}, D32}, {&MUL, {1000, 1}, D32}, {&MUL, {100003, 1}, D32},
    {&MUL_T, {231, 1}, DALL}, {&MUL_T, {262144, 1}, DALL},
    {&SCALE, {1, 0}, D32}, {&SCALE, {4097, 0}, D32}, {&SCALE, {300001, 0}, D32},
    {&CLAMP, {1, 1}, D32}, {&CLAMP, {4097, 1}, D32}, {&CLAMP, {300001, 1}, D32},
    {&CLAMP, {13, 1, 1}, D32},   /* NaN stays NaN, infinities saturate */
    {&ADD_CHANNEL_BIAS, {2, 3, 7}, D32}, {&ADD_CHANNEL_BIAS, {2, 320, 4096}, D32},
    {&ADD_CHANNEL_BIAS, {1, 1, 1}, D32},
    /* layout */
    {&CAST_COPY, {13, 40, 50}, DALL}, {&CAST_COPY, {1, 1001, 1001}, DALL},
    {&TRANSPOSE_CS, {2, 37, 45}, D32}, {&TRANSPOSE_CS, {1, 320, 4096}, D32},
    {&TRANSPOSE_CS, {3, 1, 7}, D32}, {&TRANSPOSE_CS, {1, 33, 1}, D32},
    {&TRANSPOSE_SC, {2, 45, 37}, D32}, {&TRANSPOSE_SC, {1, 4096, 320}, D32},
    {&TRANSPOSE_SC, {3, 7, 1}, D32}, {&TRANSPOSE_SC, {1, 1, 33}, D32},
    {&UPSAMPLE, {2, 3, 5, 7}, D32},
    {&RESIZE, {2, 3, 5, 7, 10, 14}, D32}, {&RESIZE, {2, 3, 5, 7, 11, 13}, D32},
    {&RESIZE, {2, 3, 5, 7, 3, 2}, D32}, {&RESIZE, {2, 3, 5, 7, 5, 7}, D32},
    {&RESIZE, {2, 3, 5, 7, 10, 7}, D32}, {&RESIZE, {2, 3, 5, 7, 17, 29}, D32},
    {&CONCAT, {2, 3, 4, 35}, D32},
    {&GATHER, {50, 33, 20}, D32},
    {&GATHER, {50, 33, 300}, D32},   /* after a shorter one: the index staging grows */
    {&COPY_2D, {13, 40, 50, 10, 0}, D32}, {&COPY_2D, {13, 10, 50, 0, 10}, D32},
    {&COPY_2D, {1, 1000, 1000, 0, 0}, D32},
    /* attention: B Tq Tk H D causal; half: the tensor-core kernels (attention_tc.cu) */
    {&ATTENTION, {2, 77, 77, 3, 40, 1}, D32},        /* CLIP text: causal, D 40 */
    {&ATTENTION, {2, 77, 77, 12, 64, 1}, D32},
    {&ATTENTION, {1, 100, 77, 2, 64, 0}, D32},       /* cross attention */
    {&ATTENTION, {2, 256, 77, 5, 80, 0}, DALL}, {&ATTENTION, {1, 33, 257, 2, 80, 0}, DALL},
    {&ATTENTION, {1, 64, 64, 2, 160, 0}, D32},
    {&ATTENTION, {2, 129, 129, 2, 128, 1}, DALL},    /* FLUX head dim, causal */
    {&ATTENTION, {1, 1024, 1024, 2, 128, 0}, D32},
    {&ATTENTION, {1, 1, 5, 1, 13, 0}, DALL},         /* odd head dim, one query */
    {&ATTENTION, {1, 7, 3, 2, 1, 1}, DALL},          /* Tq > Tk, causal */
    {&ATTENTION, {1, 40, 33, 1, 256, 0}, DALL},      /* largest head dim */
    {&ATTENTION, {1, 5, 0, 2, 8, 0}, DALL},          /* no keys: o = 0 */
    {&ATTENTION, {1, 4096, 4096, 1, 40, 0}, D32},    /* SD 512² self-attention, one head */
    {&ATTENTION, {1, 4096, 4096, 1, 512, 0}, D32},   /* the VAE mid-block: one 512-wide head */
    {&ATTENTION, {2, 300, 70, 2, 320, 1}, D32},      /* wide heads, causal, Tq > Tk */
    {&ATTENTION, {1, 1024, 1024, 1, 512, 0}, DH},    /* D > 256: the fp32 wide-head path */
    {&ATTENTION, {2, 77, 77, 8, 40, 1}, DH},
    {&ATTENTION, {2, 1000, 1000, 8, 40, 0}, DH},     /* SD self-attention, T % 64 != 0 */
    {&ATTENTION, {2, 4096, 77, 8, 40, 0}, DH},       /* SD cross-attention */
    {&ATTENTION, {1, 300, 300, 4, 64, 1}, DH}, {&ATTENTION, {1, 200, 130, 2, 160, 0}, DH},
    {&ATTENTION, {1, 1024, 1024, 3, 128, 0}, DH},
    {&ATTENTION, {1, 100, 70, 2, 100, 1}, DH},       /* D 100 → 128, Tq > Tk causal */
    /* query counts no multiple of the 128-row block (padding, tail and causal
     * masks of tc2_attention_kernel; opts.attn_tc_16row: the 64-row one) */
    {&ATTENTION, {2, 77, 77, 4, 128, 0}, DH}, {&ATTENTION, {1, 200, 200, 3, 128, 1}, DH},
    {&ATTENTION, {1, 200, 200, 2, 40, 1}, DH},       /* D 40 → 48 */
    {&ATTENTION, {1, 200, 333, 3, 64, 0}, DH}, {&ATTENTION, {1, 200, 200, 2, 80, 1}, DH},
    {&ATTENTION, {1, 130, 130, 2, 24, 1}, DH},       /* D 24 → 32 */
    {&ATTENTION, {1, 300, 300, 2, 96, 0}, DH},       /* DP 96: Q from shared memory */
    {&ATTENTION, {1, 77, 300, 2, 64, 1}, DH},        /* causal, Tq < Tk */
    {&ATTENTION, {1, 4097, 150, 2, 64, 1}, DH},      /* causal, Tq > Tk */
    {&ATTENTION, {1, 4097, 4097, 1, 128, 1}, DH},    /* 32·128 + 1 rows */
    {&ATTENTION, {1, 4097, 4097, 1, 40, 0}, DH},
    {&ATTENTION_T, {1, 300, 300, 4, 128, 0}, DH},    /* the 32-row kernel */
    {&ATTENTION_T, {2, 77, 77, 4, 128, 0}, DH},
    {&ATTENTION_T, {1, 40, 33, 2, 40, 1}, DH},       /* the 16-row kernel */
    {&ATTENTION_T, {1, 5, 7, 1, 13, 0}, DH},         /* odd head dim: unaligned stores */
    {&ATTENTION_T, {1, 64, 64, 1, 300, 0}, DH},      /* D > 256: the float32 fallback */
    /* attention_lse: B Tq Tk H D acc (acc: merged into held o, lse) */
    {&ATTENTION_LSE, {2, 77, 50, 3, 40, 0}, DALL}, {&ATTENTION_LSE, {2, 77, 50, 3, 40, 1}, DALL},
    {&ATTENTION_LSE, {1, 33, 257, 2, 128, 1}, DALL}, {&ATTENTION_LSE, {1, 1, 5, 1, 13, 1}, DALL},
    {&ATTENTION_LSE, {1, 5, 0, 2, 8, 0}, DALL},      /* no keys: o = 0, lse = -inf */
    {&ATTENTION_LSE, {1, 5, 0, 2, 8, 1}, DALL},      /* no keys: nothing merged */
    {&ATTENTION_LSE, {1, 70, 130, 2, 300, 1}, D32},  /* head dim above 256 */
    /* T5: B T H D; half: T ≤ 64 tc_attention_kernel, longer tc2_attention_kernel */
    {&ATTENTION_BIAS, {2, 7, 4, 8}, D32}, {&ATTENTION_BIAS, {2, 64, 4, 16}, D32},   /* fixtures */
    {&ATTENTION_BIAS, {1, 1, 2, 64}, DALL},          /* one token */
    {&ATTENTION_BIAS, {2, 77, 3, 40}, D32},          /* odd T, D no multiple of 32 */
    {&ATTENTION_BIAS, {1, 512, 4, 64}, DALL},        /* FLUX max_sequence_length, T5-XXL */
    {&ATTENTION_BIAS, {1, 33, 2, 256}, DALL},        /* largest head dim */
    {&ATTENTION_BIAS, {1, 5, 1, 1}, D32}, {&ATTENTION_BIAS, {2, 7, 3, 64}, DH},
    {&ATTENTION_BIAS, {2, 77, 4, 64}, DH},           /* CLIP-length prompt, partial tiles */
    {&ATTENTION_BIAS, {1, 130, 3, 64}, DH},          /* two 128-row blocks, 2 rows in the last */
    {&ATTENTION_BIAS, {2, 512, 2, 64}, DH},
    {&ATTENTION_BIAS, {1, 200, 2, 40}, DH},          /* DP 48 */
    {&ATTENTION_BIAS, {1, 300, 2, 128}, DH},         /* DP 128: Q from shared memory */
    {&ATTENTION_BIAS_T, {2, 7, 3, 64}, DH},          /* the 16-row kernel */
    {&ATTENTION_BIAS_T, {1, 512, 4, 64}, DH},        /* FLUX's 512 tokens */
    {&ATTENTION_BIAS_T, {1, 2, 66000, 8}, DH},       /* B·H > 65535: the float32 fallback */
    /* transformer row ops (FLUX) */
    {&ROPE, {2, 7, 3, 10}, D32}, {&ROPE, {1, 300, 24, 128}, D32},
    {&RMS_NORM_HEADS, {2, 9, 3, 4, 3, 40}, D32}, {&RMS_NORM_HEADS, {1, 100, 0, 100, 24, 128}, D32},
    {&RMS_NORM_HEADS, {2, 5, 0, 5, 2, 8}, D32},
    {&QK_NORM_ROPE, {2, 9, 3, 3, 40}, DALL}, {&QK_NORM_ROPE, {1, 100, 0, 24, 128}, D32},
    {&QK_NORM_ROPE, {1, 300, 0, 24, 128}, DH}, {&QK_NORM_ROPE, {2, 50, 50, 4, 128}, DH},
    {&LN_MODULATE, {2, 11, 4, 7, 300, 0}, DALL}, {&LN_MODULATE, {1, 50, 0, 50, 3072, 0}, DALL},
    {&LN_MODULATE, {2, 6, 0, 3, 33, 1}, D32},
    {&GATED_ADD, {2, 11, 0, 4, 300}, DALL}, {&GATED_ADD, {1, 37, 0, 37, 1000}, DALL},
};
#pragma GCC diagnostic pop

/* ---- the machinery ------------------------------------------------------------- */

static tdm_device_t g_ref;   /* the reference: the default CPU device */

/* A failed check of the running case: the message, indented. */
static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    test_cur_failed = 1;
}

/* "op p0=.. p1=.." (+ gemm's alpha, beta; the forced igemm path) */
static void case_name(const op_case *c, char *s, size_t cap) {
    const char *pn = c->op->params;
    size_t len = (size_t)snprintf(s, cap, "%s", c->op->name);
    for (int i = 0; *pn && len < cap; i++) {
        const int w = (int)strcspn(pn, " ");
        len += (size_t)snprintf(s + len, cap - len, " %.*s=%lld", w, pn, (long long)c->p[i]);
        pn += w + (pn[w] == ' ');
    }
    if (c->op == &GEMM && len < cap)
        len += (size_t)snprintf(s + len, cap - len, " alpha=%g beta=%g", c->f[0], c->f[1]);
    if (c->igemm && len < cap)
        snprintf(s + len, cap - len, " igemm=%s", c->igemm == IG_ON ? "on" : "off");
}

static float urand(uint64_t *s) {   /* uniform in [0, 1) */
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f;
}

static float round_to(float v, tdm_dtype dt) {
    return dt == TDM_F16 ? tdm_f16_to_f32(tdm_f32_to_f16(v)) : tdm_bf16_to_f32(tdm_f32_to_bf16(v));
}

/* The type operand a is stored in on the device in a run of dtype dt. */
static tdm_dtype stored(const operand *a, tdm_dtype dt) {
    return dt != TDM_F32 && (a->fl & (A_ACT | A_WEIGHT)) ? dt : TDM_F32;
}

static int64_t nbytes(const operand *a, tdm_dtype dt) {
    return a->n * (int64_t)tdm_dtype_size(stored(a, dt));
}

/* One run of a case: its operands as the device and the reference size them
 * (scratch differs) and the values drawn for them. */
typedef struct {
    const op_case *c;
    tdm_dtype dt;
    int n;
    operand o[MAXA], ro[MAXA];
    float *h[MAXA];
    int32_t *idx[MAXA];
} run_t;

/* The case's op for run r on dev, typed operands of type at: describes into
 * o (NULL: a scratch list) and, given buffers a, calls; returns the count. */
static int call(const run_t *r, tdm_device_t *dev, tdm_dtype at, operand *o, void **a) {
    operand tmp[MAXA];
    const opctx x = {r->c->p, r->c->f, dev, r->dt, at, r->c->op->sub, o ? o : tmp, a};
    return r->c->op->fn(&x);
}

/* Draws the inputs of r (A_ACT in half runs rounded to the type; A_NAN NaN,
 * which the references read as 0). 0: out of memory. */
static int draw(run_t *r, uint64_t seed) {
    static const float special[6] = {NAN, INFINITY, -INFINITY, 0.25f, -2.0f, 3.0f};
    for (int i = 0; i < r->n; i++) {
        const operand *a = &r->o[i];
        const size_t n = (size_t)(a->n > 0 ? a->n : 1);
        const int32_t m = (int32_t)a->range;
        if (a->fl & (A_ABSENT | A_ALIAS | A_SCRATCH)) continue;
        if ((a->fl & A_IDX) && !(r->idx[i] = malloc(n * sizeof(int32_t)))) return 0;
        for (int64_t j = 0; (a->fl & A_IDX) && j < a->n; j++)   /* the first 0, the last m - 1 */
            r->idx[i][j] = j == 0 ? 0 : j == a->n - 1 ? m - 1 : (int32_t)(urand(&seed) * m) % m;
        if (a->fl & A_IDX) continue;
        if (!(r->h[i] = malloc(n * sizeof(float)))) return 0;
        for (int64_t j = 0; j < a->n; j++) {
            float v = a->fl & A_ZERO ? 0.0f : a->fl & A_NAN ? NAN
                    : a->shift + a->range * (2 * urand(&seed) - 1);
            if ((a->fl & A_SPECIAL) && j < 6) v = special[j];
            r->h[i][j] = r->dt != TDM_F32 && (a->fl & A_ACT) ? round_to(v, r->dt) : v;
        }
    }
    return 1;
}

/* Calls the case on the reference device on copies of the drawn values, the
 * operands flagged `round` rounded to the half type and operand `zero` (-1:
 * none) zeroed; buf gets the buffers (free_ref frees them). 0: out of memory. */
static int reference(const run_t *r, unsigned round, int zero, void **buf) {
    int ok = 1;
    for (int i = 0; i < r->n; i++) {
        const operand *a = &r->ro[i];
        buf[i] = a->fl & A_IDX ? r->idx[i] : NULL;
        if (a->fl & (A_ABSENT | A_ALIAS | A_IDX) || ((a->fl & A_SCRATCH) && a->n == 0)) continue;
        float *b = buf[i] = calloc((size_t)(a->n > 0 ? a->n : 1), sizeof(float));
        if (!b) ok = 0;
        if (!b || a->fl & (A_SCRATCH | A_NAN) || i == zero) continue;   /* zeros */
        for (int64_t j = 0; j < a->n; j++)
            b[j] = a->fl & round ? round_to(r->h[i][j], r->dt) : r->h[i][j];
    }
    for (int i = 0; i < r->n; i++)
        if (r->ro[i].fl & A_ALIAS) buf[i] = buf[r->ro[i].alias];
    if (ok) call(r, &g_ref, TDM_F32, NULL, buf);
    return ok;
}

static void free_ref(const run_t *r, void **buf) {
    for (int i = 0; i < r->n; i++)
        if (!(r->ro[i].fl & (A_ALIAS | A_IDX))) free(buf[i]);
}

/* max |got - ref| / max(max |ref|, floor) over the elements whose reference
 * is finite; *bad counts those non-finite where the reference is finite, or
 * unlike a non-finite reference (NaN must be NaN, ±Inf the same). */
static double rel_err(const float *got, const float *ref, int64_t n, double floor, int64_t *bad) {
    double md = 0, mr = floor;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(ref[i]) || !isfinite(got[i])) {
            *bad += isfinite(ref[i]) ? 1 : isnan(ref[i]) ? !isnan(got[i]) : got[i] != ref[i];
            continue;
        }
        md = fmax(md, fabs((double)got[i] - (double)ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
    }
    return mr > 0 ? md / mr : md;
}

/* The largest error over r's outputs of got[] against ref[] (into *e; NaN kept). */
static void worst(const run_t *r, void **got, void **ref, double *e, int64_t *bad) {
    double in = 0;   /* the inputs' magnitude, for in_scale ops */
    for (int i = 0; r->c->op->in_scale && i < r->n; i++)
        for (int64_t j = 0; r->h[i] && j < r->o[i].n; j++)   /* drawn values: inputs */
            if (isfinite(r->h[i][j])) in = fmax(in, fabs((double)r->h[i][j]));
    for (int i = 0; i < r->n; i++)
        if ((r->o[i].fl & A_OUT) && got[i]) {
            const double ei = rel_err(got[i], ref[i], r->o[i].n, in, bad);
            if (!(ei <= *e)) *e = ei;
        }
}

/* Operand i of r onto dev: allocated and (unless scratch) uploaded in its
 * stored type. 0 on failure, reported. */
static int put(tdm_device_t *dev, const run_t *r, int i, void **d) {
    const operand *a = &r->o[i];
    const tdm_dtype st = stored(a, r->dt);
    const int64_t bytes = nbytes(a, r->dt);
    uint16_t *t = NULL;
    tdm_status s = TDM_ERR_NOMEM;
    if (!(*d = tdm_dev_alloc(dev, bytes, "test operand"))) {
        failf("operand %d: %s", i, tdm_last_error());
        return 0;
    }
    if (a->fl & A_SCRATCH) return 1;
    if (st == TDM_F32) s = tdm_dev_upload(dev, *d, r->h[i], bytes, "test operand");
    else if ((t = malloc((size_t)bytes + 1)) &&
             (s = tdm_convert_to_half(t, r->h[i], TDM_F32, a->n, st)) == TDM_OK)
        s = tdm_dev_upload(dev, *d, t, bytes, "test operand");
    if (s != TDM_OK)
        failf("operand %d: %s", i, st == TDM_F32 || t ? tdm_last_error() : "out of host memory");
    free(t);
    return s == TDM_OK;
}

/* Output i of r downloaded from dev as float32 (malloc'd), or NULL (reported). */
static float *get(tdm_device_t *dev, const run_t *r, int i, const void *d) {
    const operand *a = &r->o[i];
    const int64_t bytes = nbytes(a, r->dt);
    void *t = malloc((size_t)bytes + 1);
    float *h = malloc((size_t)(a->n > 0 ? a->n : 1) * sizeof(float));
    tdm_status s = t && h ? tdm_dev_download(dev, t, d, bytes, "test output") : TDM_ERR_NOMEM;
    if (s == TDM_OK) s = tdm_convert_to_f32(h, t, stored(a, r->dt), a->n);
    if (s != TDM_OK) {
        failf("output %d: %s", i, t && h ? tdm_last_error() : "out of host memory");
        free(h);
        h = NULL;
    }
    free(t);
    return h;
}

/* Case c on dev (named dname) in dtype dt: one test of the summary. */
static void run_case(const op_case *c, tdm_device_t *dev, const char *dname, tdm_dtype dt) {
    const int k = dt == TDM_F32 ? 0 : dt == TDM_F16 ? 1 : 2;
    const tol_t *tol = c->tol ? c->tol : &c->op->tol;
    run_t r = {.c = c, .dt = dt};
    void *ru[MAXA] = {0}, *rr[MAXA] = {0}, *d[MAXA] = {0}, *got[MAXA] = {0};
    int32_t *didx[MAXA] = {0};
    int rounds = 0, ok = 1, len = 0;
    double eu = 0, er = 0;
    int64_t bad = 0, bad_r = 0;
    uint64_t seed = 0xcbf29ce484222325ull;   /* FNV-1a of the name */
    char name[256], line[256] = "";

    case_name(c, name, sizeof name);
    for (const char *s = name; *s; s++) seed = (seed ^ (unsigned char)*s) * 0x100000001b3ull;
    test_cur_failed = 0;
    /* the device as the case runs it (its scratch sizes depend on it too) */
    const tdm_dtype dt0 = dev->gemm_dtype;
    const int ig0 = dev->opts.conv_igemm;
    const int64_t bytes0 = dev->cur_bytes;
    dev->gemm_dtype = dt;
    if (c->igemm) dev->opts.conv_igemm = c->igemm == IG_ON ? 2 : 0;

    r.n = call(&r, dev, dt, r.o, NULL);
    if (call(&r, &g_ref, TDM_F32, r.ro, NULL) != r.n) {
        failf("operand counts differ");
        goto done;
    }
    for (int i = 0; i < r.n; i++) {
        const operand *t = &r.o[r.o[i].alias];
        if (r.o[i].fl & A_ALIAS) {   /* the aliased operand's size and type */
            r.o[i].n = r.ro[i].n = t->n;
            r.o[i].fl |= t->fl & (A_ACT | A_WEIGHT);
            r.ro[i].fl |= t->fl & (A_ACT | A_WEIGHT);
        }
        rounds |= (r.o[i].fl & (A_WEIGHT | A_ROUND)) != 0;
    }
    /* the references: on the inputs as drawn, on the rounded operands, and
     * with each A_MATTERS operand zeroed */
    const int want_r = dt != TDM_F32 && rounds && tol->r[k] >= 0;
    if (!draw(&r, seed) || !reference(&r, 0, -1, ru) ||
        (want_r && !reference(&r, A_WEIGHT | A_ROUND, -1, rr))) {
        failf("out of host memory");
        goto done;
    }
    for (int i = 0; i < r.n; i++)
        if (r.o[i].fl & A_MATTERS) {
            void *r0[MAXA];
            const double t = tol->u[k] >= 0 ? tol->u[k] : tol->r[k];
            double e0 = 0;
            int64_t b0 = 0;
            if (reference(&r, 0, i, r0)) worst(&r, r0, ru, &e0, &b0);
            free_ref(&r, r0);
            if (!(e0 > 4 * t))
                failf("zeroing operand %d changes the reference by only %.3g (<= 4 x tol)", i, e0);
        }

    /* the device */
    for (int i = 0; i < r.n && ok; i++) {
        const operand *a = &r.o[i];
        if (a->fl & (A_ABSENT | A_ALIAS) || ((a->fl & A_SCRATCH) && a->n == 0)) continue;
        if (a->fl & A_IDX) {   /* host memory the op may not keep: overwritten after the call */
            if ((ok = (d[i] = didx[i] = malloc((size_t)a->n * 4 + 4)) != NULL))
                memcpy(didx[i], r.idx[i], (size_t)a->n * 4);
            continue;
        }
        ok = put(dev, &r, i, &d[i]);
    }
    if (!ok) goto done;
    for (int i = 0; i < r.n; i++)
        if (r.o[i].fl & A_ALIAS) d[i] = d[r.o[i].alias];
    call(&r, dev, dt, NULL, d);
    for (int i = 0; i < r.n; i++) {
        if (didx[i]) memset(didx[i], 0xff, (size_t)r.o[i].n * 4);
        if (r.o[i].fl & A_OUT) ok &= (got[i] = get(dev, &r, i, d[i])) != NULL;
    }
    worst(&r, got, ru, &eu, &bad);
    if (want_r) worst(&r, got, rr, &er, &bad_r);
    if (tol->u[k] >= 0) {
        len += snprintf(line, sizeof line, ": err %.3g (tol %.3g)", eu, tol->u[k]);
        if (!(eu <= tol->u[k])) test_cur_failed = 1;
    }
    if (want_r) {
        len += snprintf(line + len, sizeof line - (size_t)len, "%s vs rounded operands %.3g "
                        "(tol %.3g)", len ? "," : ":", er, tol->r[k]);
        if (!(er <= tol->r[k])) test_cur_failed = 1;
    }
    if (bad) {
        snprintf(line + len, sizeof line - (size_t)len, ", %lld NaN/Inf unlike the reference",
                 (long long)bad);
        test_cur_failed = 1;
    }
done:
    for (int i = 0; i < r.n; i++) {
        if (d[i] && !(r.o[i].fl & (A_ALIAS | A_IDX))) tdm_dev_free(dev, d[i], nbytes(&r.o[i], dt));
        free(didx[i]);
        free(got[i]);
        free(r.h[i]);
    }
    free_ref(&r, ru);   /* (NULL where none was made) */
    free_ref(&r, rr);
    for (int i = 0; i < r.n; i++) free(r.idx[i]);
    if (dev->cur_bytes != bytes0)
        failf("%lld device bytes counted after the case, %lld before", (long long)dev->cur_bytes,
              (long long)bytes0);
    dev->gemm_dtype = dt0;
    dev->opts.conv_igemm = ig0;
    printf("%s %s on %s %s%s\n", test_cur_failed ? "FAIL" : "ok  ", name, dname,
           tdm_dtype_name(dt), line);
    test_cur_failed ? test_nfail++ : test_npass++;
    fflush(stdout);
}

/* Every case on dev in float32 and, on a half-capable device, F16 and BF16. */
static void run_table(tdm_device_t *dev, const char *dname, int half) {
    static const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++)
        for (int k = 0; k < (half ? 3 : 1); k++)
            if (g_cases[i].dts & (1u << k)) run_case(&g_cases[i], dev, dname, dts[k]);
}

/* The half attention rows again on `spec` opened with opts.attn_tc_16row
 * (every head dim through the 16-row flash kernel instead of the 128-row
 * one). */
static void run_attention_16row(const char *spec) {
    static const tdm_dtype dts[2] = {TDM_F16, TDM_BF16};
    tdm_backend_params_t p;
    tdm_device_t dev;
    char name[48];
    tdm_backend_params_init(&p);
    p.attn_tc_16row = 1;
    snprintf(name, sizeof name, "%s attn_tc_16row", spec);
    if (tdm_backend_device_open(&dev, spec, &p) != TDM_OK) {
        printf("FAIL %s: %s\n", name, tdm_last_error());
        test_nfail++;
        return;
    }
    for (size_t i = 0; i < sizeof g_cases / sizeof *g_cases; i++)
        if (g_cases[i].op == &ATTENTION || g_cases[i].op == &ATTENTION_T)
            for (int k = 0; k < 2; k++)
                if (g_cases[i].dts & (k ? DBF : D16)) run_case(&g_cases[i], &dev, name, dts[k]);
    tdm_backend_device_close(&dev);
}

/* ---- device behaviour (CUDA) ------------------------------------------------ */

static tdm_device_t *g_cuda;   /* the CUDA device under test */

TEST(test_device_memory) {
    tdm_device_t *dev = g_cuda;
    /* alloc is zero-filled; cur/peak bytes are counted */
    const int64_t before = dev->cur_bytes;
    float h[1000], src[7] = {1, 2, 3, 4, 5, 6, 7}, out[7] = {0};
    float *d = tdm_dev_alloc(dev, sizeof h, "zeros");
    float *a = tdm_dev_alloc(dev, sizeof src, "a"), *b = tdm_dev_alloc(dev, sizeof src, "b");
    CHECK_MSG(d && a && b, "alloc: %s", tdm_last_error());
    if (d && a && b) {
        CHECK(dev->cur_bytes == before + (int64_t)(sizeof h + 2 * sizeof src));
        for (int i = 0; i < 1000; i++) h[i] = 1.0f;
        CHECK(tdm_dev_download(dev, h, d, sizeof h, "zeros") == TDM_OK);
        int nz = 0;
        for (int i = 0; i < 1000; i++) nz += h[i] != 0.0f;
        CHECK_MSG(nz == 0, "%d nonzero floats in a fresh allocation", nz);
        /* device-to-device copy */
        CHECK(tdm_dev_upload(dev, a, src, sizeof src, "a") == TDM_OK);
        CHECK(dev->ops->copy(dev, b, a, sizeof src) == 1);
        CHECK(tdm_dev_download(dev, out, b, sizeof out, "copy") == TDM_OK);
        CHECK(memcmp(out, src, sizeof src) == 0);
    }
    tdm_dev_free(dev, a, sizeof src);
    tdm_dev_free(dev, b, sizeof src);
    tdm_dev_free(dev, d, sizeof h);
    CHECK(dev->cur_bytes == before);
    /* an impossible allocation names the bytes needed and free */
    void *p = tdm_dev_alloc(dev, (int64_t)1 << 52, "huge");
    CHECK(p == NULL);
    const char *msg = tdm_last_error();
    CHECK_MSG(strstr(msg, "out of GPU memory") && strstr(msg, "free"), "message: %s", msg);
    CHECK(dev->cur_bytes == before);
    CHECK(dev->ops->sync(dev) == 1);   /* a failed alloc is not a device failure */
}

TEST(test_error_kept) {
    /* a second handle on the same GPU, so the kept failure stays off g_cuda */
    char spec[32];
    tdm_device_t d2;
    snprintf(spec, sizeof spec, "cuda:%d", g_cuda->index);
    if (tdm_backend_device_open(&d2, spec, NULL) != TDM_OK) {
        CHECK_MSG(0, "%s: %s", spec, tdm_last_error());
        return;
    }
    float *o = tdm_dev_alloc(&d2, 4096, "o");
    CHECK(o != NULL);
    if (o) {
        /* T5's biased attention has no path for head dims above 256 */
        tdm_op_attention_bias(&d2, o, o, o, o, o, NULL, 1, 1, 1, 300);
        tdm_op_silu(&d2, o, 16);   /* later ops still queue */
        CHECK(d2.ops->sync(&d2) == 0);
        const char *msg = tdm_last_error();
        CHECK_MSG(strstr(msg, "attention_bias_kernel") != NULL, "message: %s", msg);
        float h[4];
        CHECK(tdm_dev_download(&d2, h, o, sizeof h, "o") != TDM_OK);
        CHECK_MSG(strstr(tdm_last_error(), "attention_bias_kernel") != NULL, "message: %s",
                  tdm_last_error());
        tdm_dev_free(&d2, o, 4096);
    }
    tdm_backend_device_close(&d2);
    snprintf(spec, sizeof spec, "cuda:%d", tdm_backend_device_count("cuda"));   /* no such device */
    if (tdm_backend_device_open(&d2, spec, NULL) == TDM_OK) {
        CHECK_MSG(0, "%s opened", spec);
        tdm_backend_device_close(&d2);
    } else {
        CHECK_MSG(strstr(tdm_last_error(), "no such CUDA device") != NULL, "message: %s",
                  tdm_last_error());
    }
}

/* ---- rows independent of the call's row count (CUDA) --------------------------- */

/* n float32 values uniform in [-1, 1) uploaded to dev in type dt (NULL: failure). */
static void *rows_up(tdm_device_t *dev, const float *h, int64_t n, tdm_dtype dt) {
    const int64_t bytes = n * (int64_t)tdm_dtype_size(dt);
    void *d = tdm_dev_alloc(dev, bytes, "rows test"), *t = NULL;
    tdm_status s = TDM_ERR_NOMEM;
    if (d && dt == TDM_F32) s = tdm_dev_upload(dev, d, h, bytes, "rows test");
    else if (d && (t = malloc((size_t)bytes)) && tdm_convert_to_half(t, h, TDM_F32, n, dt) == TDM_OK)
        s = tdm_dev_upload(dev, d, t, bytes, "rows test");
    free(t);
    if (s != TDM_OK && d) {
        tdm_dev_free(dev, d, bytes);
        d = NULL;
    }
    CHECK_MSG(d != NULL, "upload: %s", tdm_last_error());
    return d;
}

static float *rows_rand(int64_t n, uint64_t *seed) {
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; h && i < n; i++) h[i] = 2 * urand(seed) - 1;
    return h;
}

/* A row of a linear's output has the same bits whatever rows the call holds
 * (a Ulysses rank multiplies its share of the tokens, a CFG rank half the
 * batch; DESIGN.md, same image at any degree): for the FLUX.1 shapes (x
 * embedder, attention, QKV, MLP in and out, the single blocks' output, a
 * modulation's one row) and a tiny one, in float32 and with F16 / BF16
 * weights (float32 and typed activations, float32 and typed outputs, bias,
 * GELU), the m-row call on rows [r0, r0 + m) copied to their own buffers
 * equals those rows of the full call byte for byte. */
TEST(test_linear_rows_independent) {
    tdm_device_t *dev = g_cuda;
    static const int64_t shapes[][3] = {   /* K, N, full M */
        {32, 96, 83},      {64, 3072, 4608},    {3072, 3072, 4608}, {3072, 9216, 4096},
        {3072, 12288, 4608}, {12288, 3072, 4096}, {15360, 3072, 4608}, {3072, 18432, 2}};
    static const int64_t ms[] = {1, 2, 17, 256, 288, 1536, 2048, 2304, 4095};
    static const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    const tdm_dtype dt0 = dev->gemm_dtype;
    uint64_t seed = 99;
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        const int64_t K = shapes[sh][0], N = shapes[sh][1], Mf = shapes[sh][2];
        float *hx = rows_rand(Mf * K, &seed), *hw = rows_rand(N * K, &seed), *hb = rows_rand(N, &seed);
        unsigned char *full = malloc((size_t)(Mf * N) * 4), *part = malloc((size_t)(Mf * N) * 4);
        CHECK(hx && hw && hb && full && part);
        for (int k = 0; hx && hw && hb && full && part && k < 3; k++) {
            dev->gemm_dtype = dts[k];
            void *W = rows_up(dev, hw, N * K, dts[k]);
            float *b = rows_up(dev, hb, N, TDM_F32);
            /* variants: 0 plain, 1 bias, 2 bias + GELU, 3 typed x and y with bias */
            for (int v = 0; W && b && v < (k ? 4 : 3); v++) {
                const tdm_dtype xt = v == 3 ? dts[k] : TDM_F32, yt = xt;
                const int64_t ys = (int64_t)tdm_dtype_size(yt);
                void *x = rows_up(dev, hx, Mf * K, xt), *y = tdm_dev_alloc(dev, Mf * N * ys, "y");
                if (!x || !y) {
                    CHECK_MSG(0, "alloc: %s", tdm_last_error());
                } else {
                    tdm_op_linear_ex(dev, y, yt, N, x, xt, W, v ? b : NULL, Mf, K, N, v == 2);
                    CHECK_MSG(tdm_dev_download(dev, full, y, Mf * N * ys, "y") == TDM_OK, "%s",
                              tdm_last_error());
                }
                for (size_t q = 0; x && y && q < sizeof ms / sizeof *ms; q++) {
                    const int64_t m = ms[q], r0 = (Mf - m) / 2;
                    if (m >= Mf) continue;
                    void *xs = rows_up(dev, hx + r0 * K, m * K, xt);
                    void *ysd = tdm_dev_alloc(dev, m * N * ys, "y rows");
                    if (xs && ysd) {
                        tdm_op_linear_ex(dev, ysd, yt, N, xs, xt, W, v ? b : NULL, m, K, N, v == 2);
                        CHECK(tdm_dev_download(dev, part, ysd, m * N * ys, "y rows") == TDM_OK);
                        CHECK_MSG(!memcmp(part, full + r0 * N * ys, (size_t)(m * N * ys)),
                                  "%s K %lld N %lld variant %d: rows [%lld, %lld) of %lld differ "
                                  "from the full call's", tdm_dtype_name(dts[k]), (long long)K,
                                  (long long)N, v, (long long)r0, (long long)(r0 + m), (long long)Mf);
                    }
                    if (xs) tdm_dev_free(dev, xs, m * K * (int64_t)tdm_dtype_size(xt));
                    if (ysd) tdm_dev_free(dev, ysd, m * N * ys);
                }
                if (x) tdm_dev_free(dev, x, Mf * K * (int64_t)tdm_dtype_size(xt));
                if (y) tdm_dev_free(dev, y, Mf * N * ys);
            }
            if (W) tdm_dev_free(dev, W, N * K * (int64_t)tdm_dtype_size(dts[k]));
            if (b) tdm_dev_free(dev, b, N * 4);
        }
        dev->gemm_dtype = dt0;
        free(hx); free(hw); free(hb); free(full); free(part);
    }
    CHECK(dev->ops->sync(dev) == 1);
}

/* The FP8 linear against the CPU spec on the same inputs: x's rows are
 * quantized by the same rule on both (bit for bit), so what may differ is
 * the float32 accumulation order and, for a bf16 output, its rounding; the
 * FLUX.1 shapes (attention, MLP in/out with GELU into the wider concat
 * buffer, the single blocks' output, a modulation's rows) and a tiny one,
 * float32 and bf16 activations. A row has the same bits in any row count. */
TEST(test_linear_f8) {
    tdm_device_t *dev = g_cuda;
    static const int64_t shapes[][4] = {   /* K, N, M, ldy (GELU when ldy > N) */
        {32, 96, 83, 96},        {3072, 3072, 600, 3072}, {3072, 12288, 300, 15360},
        {12288, 3072, 300, 3072}, {15360, 3072, 257, 3072}, {3072, 18432, 2, 18432}};
    const tdm_dtype dt0 = dev->gemm_dtype;
    uint64_t seed = 7;
    dev->gemm_dtype = TDM_BF16;
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        const int64_t K = shapes[sh][0], N = shapes[sh][1], M = shapes[sh][2], ldy = shapes[sh][3];
        const int gelu = ldy > N;
        float *hx = rows_rand(M * K, &seed), *hw = rows_rand(N * K, &seed), *hb = rows_rand(N, &seed);
        uint8_t *W8 = calloc(1, (size_t)tdm_f8_bytes(N, K));
        float *ref = calloc((size_t)(M * ldy), 4), *got = calloc((size_t)(M * ldy), 4);
        void *raw = malloc((size_t)(M * ldy) * 4);
        if (!hx || !hw || !hb || !W8 || !ref || !got || !raw) {
            CHECK_MSG(0, "out of host memory");
            goto next;
        }
        float *sw = (float *)(W8 + tdm_f8_scale_offset(N, K));
        for (int64_t n = 0; n < N; n++) tdm_f8_quantize_row(W8 + n * K, &sw[n], hw + n * K, K);
        void *dW = tdm_dev_alloc(dev, tdm_f8_bytes(N, K), "W8");
        float *db = rows_up(dev, hb, N, TDM_F32);
        CHECK(dW && tdm_dev_upload(dev, dW, W8, tdm_f8_bytes(N, K), "W8") == TDM_OK);
        for (int v = 0; dW && db && v < 2; v++) {   /* 0: float32 x and y; 1: bf16 x and y */
            const tdm_dtype at = v ? TDM_BF16 : TDM_F32;
            const int64_t es = (int64_t)tdm_dtype_size(at);
            /* the reference reads the values the device holds */
            for (int64_t i = 0; v && i < M * K; i++) hx[i] = tdm_bf16_to_f32(tdm_f32_to_bf16(hx[i]));
            memset(ref, 0, (size_t)(M * ldy) * 4);
            tdm_op_linear_f8(&g_ref, ref, TDM_F32, ldy, hx, TDM_F32, W8, hb, M, K, N, gelu);
            void *x = rows_up(dev, hx, M * K, at), *y = tdm_dev_alloc(dev, M * ldy * es, "y");
            if (x && y) {
                tdm_op_linear_f8(dev, y, at, ldy, x, at, dW, db, M, K, N, gelu);
                CHECK_MSG(tdm_dev_download(dev, raw, y, M * ldy * es, "y") == TDM_OK, "%s",
                          tdm_last_error());
                CHECK(tdm_convert_to_f32(got, raw, at, M * ldy) == TDM_OK);
                int64_t bad = 0;
                double e = 0, mr = 1e-30;
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        const double r = ref[m * ldy + n], g = got[m * ldy + n];
                        bad += !isfinite(g);
                        e = fmax(e, fabs(g - r));
                        mr = fmax(mr, fabs(r));
                    }
                const double tol = v ? 1e-4 + ACTBF : 1e-4;
                CHECK_MSG(!bad && e / mr <= tol, "K %lld N %lld M %lld %s: rel err %.3g (tol %.3g), "
                          "%lld non-finite", (long long)K, (long long)N, (long long)M,
                          tdm_dtype_name(at), e / mr, tol, (long long)bad);
                /* rows [r0, r0 + m) alone: the same bytes */
                const int64_t m = M > 17 ? 17 : 1, r0 = (M - m) / 2;
                void *xs = rows_up(dev, hx + r0 * K, m * K, at);
                void *ys = tdm_dev_alloc(dev, m * ldy * es, "y rows");
                unsigned char *part = malloc((size_t)(m * ldy * es));
                if (xs && ys && part) {
                    tdm_op_linear_f8(dev, ys, at, ldy, xs, at, dW, db, m, K, N, gelu);
                    CHECK(tdm_dev_download(dev, part, ys, m * ldy * es, "y rows") == TDM_OK);
                    int same = 1;
                    for (int64_t i = 0; i < m; i++)
                        same &= !memcmp(part + i * ldy * es, (char *)raw + (r0 + i) * ldy * es,
                                        (size_t)(N * es));
                    CHECK_MSG(same, "K %lld N %lld %s: rows [%lld, %lld) alone differ from the "
                              "full call's", (long long)K, (long long)N, tdm_dtype_name(at),
                              (long long)r0, (long long)(r0 + m));
                }
                free(part);
                if (xs) tdm_dev_free(dev, xs, m * K * es);
                if (ys) tdm_dev_free(dev, ys, m * ldy * es);
            }
            if (x) tdm_dev_free(dev, x, M * K * es);
            if (y) tdm_dev_free(dev, y, M * ldy * es);
        }
        if (dW) tdm_dev_free(dev, dW, tdm_f8_bytes(N, K));
        if (db) tdm_dev_free(dev, db, N * 4);
    next:
        free(hx); free(hw); free(hb); free(W8); free(ref); free(got); free(raw);
    }
    dev->gemm_dtype = dt0;
    CHECK_MSG(dev->ops->sync(dev) == 1, "%s", tdm_last_error());
}

/* An image's convolution has the same bits in a batch of one as in a batch
 * of two (a CFG rank convolves one image of the guided pair): the SD1.5
 * UNet's and VAE's shapes on each CUDA path (1x1 per image, im2col + cuBLAS
 * with the bias filled or in the GEMM, the implicit-GEMM 3x3 kernel),
 * float32 and F16 / BF16 weights. */
TEST(test_conv_batch_independent) {
    tdm_device_t *dev = g_cuda;
    static const int64_t shapes[][5] = {   /* Cin, H (= W), Cout, k, stride */
        {4, 64, 320, 3, 1},   {320, 64, 320, 3, 1}, {320, 64, 640, 1, 1}, {320, 64, 320, 3, 2},
        {640, 32, 640, 3, 1}, {1280, 8, 1280, 3, 1}, {128, 128, 128, 3, 1}};
    static const tdm_dtype dts[3] = {TDM_F32, TDM_F16, TDM_BF16};
    const tdm_dtype dt0 = dev->gemm_dtype;
    uint64_t seed = 5;
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++) {
        const int64_t Cin = shapes[sh][0], H = shapes[sh][1], Cout = shapes[sh][2];
        const int64_t kk = shapes[sh][3], st = shapes[sh][4], pad = kk / 2;
        const int64_t Ho = (H + 2 * pad - kk) / st + 1, nx = Cin * H * H, ny = Cout * Ho * Ho;
        float *hx = rows_rand(2 * nx, &seed), *hw = rows_rand(Cout * Cin * kk * kk, &seed);
        float *hb = rows_rand(Cout, &seed), *y2 = malloc((size_t)(2 * ny) * 4),
              *y1 = malloc((size_t)ny * 4);
        CHECK(hx && hw && hb && y2 && y1);
        for (int k = 0; hx && hw && hb && y2 && y1 && k < 3; k++) {
            dev->gemm_dtype = dts[k];
            const int64_t ns = tdm_op_conv2d_scratch(dev, Cin, Cout, H, H, kk, kk, st, pad);
            void *w = rows_up(dev, hw, Cout * Cin * kk * kk, dts[k]);
            float *b = rows_up(dev, hb, Cout, TDM_F32), *x2 = rows_up(dev, hx, 2 * nx, TDM_F32);
            float *x1 = rows_up(dev, hx + nx, nx, TDM_F32);
            float *d2 = tdm_dev_alloc(dev, 2 * ny * 4, "y2"), *d1 = tdm_dev_alloc(dev, ny * 4, "y1");
            float *sc = ns ? tdm_dev_alloc(dev, ns * 4, "scratch") : NULL;
            if (w && b && x2 && x1 && d2 && d1 && (sc || !ns)) {
                tdm_op_conv2d(dev, d2, x2, w, b, 2, Cin, H, H, Cout, kk, kk, st, pad, sc);
                tdm_op_conv2d(dev, d1, x1, w, b, 1, Cin, H, H, Cout, kk, kk, st, pad, sc);
                CHECK(tdm_dev_download(dev, y2, d2, 2 * ny * 4, "y2") == TDM_OK);
                CHECK(tdm_dev_download(dev, y1, d1, ny * 4, "y1") == TDM_OK);
                CHECK_MSG(!memcmp(y1, y2 + ny, (size_t)ny * 4),
                          "%s conv Cin %lld %lldx%lld Cout %lld k %lld s %lld: image 2 of a "
                          "batch of two differs from the same image alone", tdm_dtype_name(dts[k]),
                          (long long)Cin, (long long)H, (long long)H, (long long)Cout,
                          (long long)kk, (long long)st);
            } else {
                CHECK_MSG(0, "alloc: %s", tdm_last_error());
            }
            if (w) tdm_dev_free(dev, w, Cout * Cin * kk * kk * (int64_t)tdm_dtype_size(dts[k]));
            if (b) tdm_dev_free(dev, b, Cout * 4);
            if (x2) tdm_dev_free(dev, x2, 2 * nx * 4);
            if (x1) tdm_dev_free(dev, x1, nx * 4);
            if (d2) tdm_dev_free(dev, d2, 2 * ny * 4);
            if (d1) tdm_dev_free(dev, d1, ny * 4);
            if (sc) tdm_dev_free(dev, sc, ns * 4);
        }
        dev->gemm_dtype = dt0;
        free(hx); free(hw); free(hb); free(y2); free(y1);
    }
    CHECK(dev->ops->sync(dev) == 1);
}

/* ---- attention_lse's math on the CPU ------------------------------------------ */

/* attention_lse against first principles on the CPU: without acc its o is
 * the attention op's bit for bit and its lse log Σ exp(scale q·k) (double
 * reference) within 1e-6 relative; the keys split in three blocks merged in
 * any order (acc) give the whole attention and lse within 1e-5. */
TEST(test_attention_lse_cpu) {
    enum { B = 2, Tq = 70, Tk = 45, H = 3, D = 24 };
    const int64_t HD = H * D, nq = B * Tq * HD, nk = B * Tk * HD, nl = B * H * Tq;
    const int64_t cut[4] = {0, 7, 30, Tk};   /* blocks [0,7), [7,30), [30,45) */
    const float sc = 1.0f / sqrtf((float)D);
    float *q = malloc((size_t)(nq * 4 + nk * 2 + nl * 2 + 2 * B * Tk * HD) * sizeof(float));
    CHECK(q != NULL);
    if (!q) return;
    float *k = q + nq, *v = k + nk, *o = v + nk, *ref = o + nq, *om = ref + nq, *blk = om + nq;
    float *lse = blk + 2 * B * Tk * HD, *lsem = lse + nl;
    uint64_t seed = 12345;
    for (int64_t i = 0; i < nq; i++) q[i] = 4 * urand(&seed) - 2;
    for (int64_t i = 0; i < nk; i++) k[i] = 4 * urand(&seed) - 2, v[i] = 2 * urand(&seed) - 1;
    tdm_op_attention(&g_ref, ref, q, k, v, B, Tq, Tk, H, D, sc, 0);
    tdm_op_attention_lse(&g_ref, TDM_F32, o, lse, q, k, v, B, Tq, Tk, H, D, sc, 0);
    CHECK_MSG(memcmp(o, ref, (size_t)nq * sizeof(float)) == 0, "acc 0: o differs from attention");
    double lerr = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Tq; i++) {
                double mx = -INFINITY, sum = 0, s[Tk];
                for (int64_t j = 0; j < Tk; j++) {
                    s[j] = 0;
                    for (int64_t d = 0; d < D; d++)
                        s[j] += (double)q[(b * Tq + i) * HD + h * D + d] *
                                k[(b * Tk + j) * HD + h * D + d];
                    s[j] *= sc;
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int64_t j = 0; j < Tk; j++) sum += exp(s[j] - mx);
                const double want = mx + log(sum), got = lse[(b * H + h) * Tq + i];
                lerr = fmax(lerr, fabs(got - want) / fmax(fabs(want), 1.0));
            }
    CHECK_MSG(lerr <= 1e-6, "lse rel err %.3g", lerr);
    /* blocks 2, 0, 1 merged (the order a ring rank sees them) */
    static const int order[3] = {2, 0, 1};
    for (int bi = 0; bi < 3; bi++) {
        const int64_t j0 = cut[order[bi]], n = cut[order[bi] + 1] - j0;
        for (int64_t b = 0; b < B; b++) {   /* the block as its own (B, n, HD) tensors */
            memcpy(blk + b * n * HD, k + (b * Tk + j0) * HD, (size_t)(n * HD) * sizeof(float));
            memcpy(blk + (B + b) * n * HD, v + (b * Tk + j0) * HD, (size_t)(n * HD) * sizeof(float));
        }
        tdm_op_attention_lse(&g_ref, TDM_F32, om, lsem, q, blk, blk + B * n * HD, B, Tq, n, H, D,
                             sc, bi > 0);
    }
    const double oerr = test_rel_err(om, ref, (long)nq), merr = test_rel_err(lsem, lse, (long)nl);
    printf("  attention_lse: lse %.3g, 3 merged blocks: o %.3g, lse %.3g (rel err)\n", lerr,
           oerr, merr);
    CHECK_MSG(oerr <= 1e-5 && merr <= 1e-5, "merged: o rel err %.3g, lse %.3g", oerr, merr);
    free(q);
}

/* ---- the backends ------------------------------------------------------------ */

/* The table on "cpu:1" with one-row im2col tiles. Returns 1 (it ran). */
static int run_cpu(void) {
    tdm_backend_params_t p;
    tdm_device_t dev;
    tdm_backend_params_init(&p);
    p.conv_tile_bytes = 1;   /* below one output row: every tile is one row */
    printf("== cpu:1 (conv_tile_bytes 1) against cpu ==\n");
    if (tdm_backend_device_open(&dev, "cpu:1", &p) != TDM_OK) {
        printf("FAIL cpu:1: %s\n", tdm_last_error());
        test_nfail++;
        return 1;
    }
    run_table(&dev, "cpu:1", 0);
    tdm_backend_device_close(&dev);
    RUN(test_attention_lse_cpu);
    return 1;
}

/* The table and the device tests on every CUDA device. Returns 0 when there
 * is none (SKIP printed). */
static int run_cuda(void) {
    const int n = tdm_backend_device_count("cuda");
    if (n <= 0) {
        printf("SKIP cuda: %s\n", tdm_backend_find("cuda") ? "no CUDA device"
               : "this build has no CUDA backend (configure with -DTDM_CUDA=ON)");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        char spec[32];
        tdm_device_t dev;
        snprintf(spec, sizeof spec, "cuda:%d", i);
        printf("== %s against cpu ==\n", spec);
        if (tdm_backend_device_open(&dev, spec, NULL) != TDM_OK) {
            printf("FAIL %s: %s\n", spec, tdm_last_error());
            test_nfail++;
            continue;
        }
        run_table(&dev, spec, 1);
        run_attention_16row(spec);
        g_cuda = &dev;
        /* a failed test may leave the device's error set (every later call on it
         * fails): the next test gets a freshly opened device */
#define RUN_FRESH(name)                                                                   \
    do {                                                                                  \
        RUN(name);                                                                        \
        if (test_cur_failed) {                                                            \
            tdm_backend_device_close(&dev);                                               \
            if (tdm_backend_device_open(&dev, spec, NULL) != TDM_OK) {                    \
                printf("FAIL %s reopened: %s\n", spec, tdm_last_error());                 \
                test_nfail++;                                                             \
                g_cuda = NULL;                                                            \
                return 1;                                                                 \
            }                                                                             \
        }                                                                                 \
    } while (0)
        RUN_FRESH(test_device_memory);
        RUN_FRESH(test_error_kept);
        RUN_FRESH(test_linear_rows_independent);
        RUN_FRESH(test_linear_f8);
        RUN_FRESH(test_conv_batch_independent);
#undef RUN_FRESH
        g_cuda = NULL;
        tdm_backend_device_close(&dev);
    }
    return 1;
}

int main(int argc, char **argv) {
    int cpu = argc < 2, cuda = 0, ran = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "cpu")) cpu = 1;
        else if (!strcmp(argv[i], "cuda")) cuda = 1;
        else {
            fprintf(stderr, "usage: %s [cpu] [cuda]   (the backends to test; default cpu)\n",
                    argv[0]);
            return 2;
        }
    }
    if (tdm_backend_device_open(&g_ref, "cpu", NULL) != TDM_OK) {
        printf("cpu: %s\n", tdm_last_error());
        return EXIT_FAILURE;
    }
    if (cpu) ran |= run_cpu();
    if (cuda) ran |= run_cuda();
    tdm_backend_device_close(&g_ref);
    if (!ran) return test_skip("no device of the backends named");
    return test_summary();
}
