/* ops_list.h — every op of every backend, declared once (an X-macro list; no
 * include guard: included several times with different definitions).
 *
 *   TDM_OP(name, params, args)          an op returning nothing
 *   TDM_OPV(type, name, params, args)   an op returning `type`
 *
 * params is the full parameter list (the device first), args the same names
 * as a call's arguments. From this list backend/ops.h makes the op table
 * (tdm_backend_ops_t) and the dispatchers tdm_op_<name>(dev, ...), the CPU
 * backend declares its kernels tdm_cpu_<name> and the CUDA backend its
 * launchers tdm_cuda_<name>, each with exactly these parameters.
 *
 * Contracts. Every pointer lives on `dev`: host memory on a host device,
 * device memory on a CUDA device (the op is queued on the device's stream; a
 * failure is kept on the device and reported by the next download / sync).
 * Buffers are contiguous row-major float32 unless a type `at` says otherwise;
 * shapes are in comments, counts int64_t. An output may not alias an input
 * unless the op says so. The CPU kernels (backend/cpu/ops.c) are the spec
 * every other backend is checked against.
 *
 * GEMM weights and dev->gemm_dtype. On a host device every operand is
 * float32, whatever gemm_dtype says. On a CUDA device whose gemm_dtype is
 * TDM_F16 or TDM_BF16, the WEIGHT operand of linear, linear_gelu, linear_ex
 * (W), conv2d / conv2d_pad4 (w) and gemm (B) points to gemm_dtype elements
 * (a tensor made by tdm_st_set_load_gemm_weight) with the shape and leading
 * dimension of the float32 weight it replaces; the other operands stay
 * float32 (unless typed by `at`), the activation is rounded to gemm_dtype and
 * the product accumulates in float32. So these operands must be model
 * weights: a product of two activations (attention scores and the like)
 * never goes through them on such a device (attention* does those).
 *
 * Activation types. Ops with an argument `at` (or xt / yt) take the operands
 * typed `void *` as elements of that type: TDM_F32 always works; on a CUDA
 * device whose gemm_dtype is F16 / BF16 it may be that type (read into
 * float32, rounded once on store). On a host device it must be TDM_F32 (any
 * other is a bug in the calling model: the CPU backend logs it and aborts).
 * Operands typed `float *` are float32 everywhere. */

/* ---- GEMMs and convolutions ---- */

/* y (M, N) = x (M, K) · W (N, K)^T [+ b (N)] (torch.nn.Linear). */
TDM_OP(linear, (tdm_device_t *dev, float *y, const float *x, const float *W, const float *b,
                int64_t M, int64_t K, int64_t N),
       (dev, y, x, W, b, M, K, N))
/* y (M, N; rows ldy >= N apart) = gelu_tanh(x · W^T [+ b]): a Linear and the
 * tanh-approximated GELU (diffusers' "gelu-approximate") in one op, written
 * into a wider matrix when ldy > N. */
TDM_OP(linear_gelu, (tdm_device_t *dev, float *y, int64_t ldy, const float *x, const float *W,
                     const float *b, int64_t M, int64_t K, int64_t N),
       (dev, y, ldy, x, W, b, M, K, N))
/* The general linear: y (M, N; rows ldy apart, type yt) = act(x (M, K), type
 * xt · W^T [+ b]), act = tanh GELU when gelu. b is float32 (rounded to yt
 * first when yt is a half type). On a host device xt = yt = TDM_F32 and,
 * without gelu, ldy = N. */
TDM_OP(linear_ex, (tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                   tdm_dtype xt, const float *W, const float *b, int64_t M, int64_t K, int64_t N,
                   int gelu),
       (dev, y, yt, ldy, x, xt, W, b, M, K, N, gelu))
/* The FP8 linear (--dtype fp8): y (M, N; rows ldy apart, type yt) = act(
 * (Σ_k qx[m,k] · qw[n,k]) · sx[m] · sw[n] + bf16(b[n])), where W is a row-scaled
 * FP8 matrix (N, K) (core.h's tdm_f8_*: a tensor of dtype TDM_F8E4M3; qw its
 * codes, sw its row scales), qx, sx the row of x (M, K, type xt) quantized by
 * tdm_f8_quantize_row's rule (per token), the products and sums in float32,
 * act = tanh GELU when gelu, the bias rounded to bfloat16 (what the FP8
 * GEMMs of cuBLASLt take, whatever the output type). On a host device xt = yt = TDM_F32 (the spec:
 * decoded codes through the float32 GEMM); on CUDA the FP8 tensor cores
 * (compute capability 8.9 or newer) with per-row and per-channel scales. */
TDM_OP(linear_f8, (tdm_device_t *dev, void *y, tdm_dtype yt, int64_t ldy, const void *x,
                   tdm_dtype xt, const void *W, const float *b, int64_t M, int64_t K, int64_t N,
                   int gelu),
       (dev, y, yt, ldy, x, xt, W, b, M, K, N, gelu))
/* C (M, N) = alpha · op(A) · op(B) + beta · C, row-major, lda/ldb/ldc as in BLAS. */
TDM_OP(gemm, (tdm_device_t *dev, int transA, int transB, int64_t M, int64_t N, int64_t K,
              float alpha, const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc),
       (dev, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
/* 2-D convolution (torch.nn.Conv2d, groups 1, dilation 1): x (B, Cin, H, W),
 * w (Cout, Cin, kh, kw), b (Cout) or NULL → y (B, Cout, Ho, Wo), Ho = (H +
 * 2·pad - kh) / stride + 1. `scratch` holds conv2d_scratch(...) floats (on
 * the CPU one im2col tile of whole output rows, about dev->opts.
 * conv_tile_bytes, at least one row, or a Winograd 3×3 conv's transformed
 * kernels and tile chunk; results do not depend on the tile beyond float
 * rounding of the GEMM). */
TDM_OPV(int64_t, conv2d_scratch, (tdm_device_t *dev, int64_t Cin, int64_t Cout, int64_t H,
                                  int64_t W, int64_t kh, int64_t kw, int64_t stride, int64_t pad),
        (dev, Cin, Cout, H, W, kh, kw, stride, pad))
TDM_OP(conv2d, (tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                int64_t kw, int64_t stride, int64_t pad, float *scratch),
       (dev, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pad, scratch))
/* The same with padding top, bottom, left, right (the VAE encoder's
 * downsample pads right and bottom by 1). A 1×1, stride 1, unpadded conv
 * needs no scratch (0 floats; scratch may be NULL). */
TDM_OPV(int64_t, conv2d_pad4_scratch, (tdm_device_t *dev, int64_t Cin, int64_t Cout, int64_t H,
                                       int64_t W, int64_t kh, int64_t kw, int64_t stride,
                                       int64_t pt, int64_t pb, int64_t pl, int64_t pr),
        (dev, Cin, Cout, H, W, kh, kw, stride, pt, pb, pl, pr))
TDM_OP(conv2d_pad4, (tdm_device_t *dev, float *y, const float *x, const float *w, const float *b,
                     int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout, int64_t kh,
                     int64_t kw, int64_t stride, int64_t pt, int64_t pb, int64_t pl, int64_t pr,
                     float *scratch),
       (dev, y, x, w, b, B, Cin, H, W, Cout, kh, kw, stride, pt, pb, pl, pr, scratch))

/* ---- norms and activations ---- */

/* GroupNorm of x (B, C, S) with G groups, affine gamma, beta (C), then SiLU
 * when silu != 0; y may alias x. */
TDM_OP(group_norm, (tdm_device_t *dev, float *y, const float *x, const float *gamma,
                    const float *beta, int64_t B, int64_t C, int64_t S, int64_t G, float eps,
                    int silu),
       (dev, y, x, gamma, beta, B, C, S, G, eps, silu))
/* Group norm in parts (row bands of an image over the ranks of a group:
 * each holds some of the S positions of every channel; nn/band.h).
 * group_norm_sums: part (B·G) = per group of x (B, C, S) the sum of its
 * elements (mean NULL) or of their squared deviations (x - mean[b·G + g])²
 * (mean (B·G)), in double, elements in order on the CPU as group_norm sums
 * them. sum_parts_f64: y (n) = (x[0·n + i] + x[1·n + i] + ... + x[(parts-1)·n
 * + i]) / div in double, parts in order. group_norm_apply: group_norm's
 * normalisation and affine (then SiLU when silu != 0) of x (B, C, S) with the
 * statistics given, mean and var (B·G, double): y = (x - (float)mean) ·
 * ((float)(1 / sqrt(var + eps)) · gamma) + beta, the arithmetic group_norm
 * does with its own; y may alias x. With one part (S the whole group)
 * sums → sum_parts_f64 (div = C/G·S) → sums with the mean → sum_parts_f64 →
 * apply gives group_norm's result on the CPU bit for bit. */
TDM_OP(group_norm_sums, (tdm_device_t *dev, double *part, const float *x, const double *mean,
                         int64_t B, int64_t C, int64_t S, int64_t G),
       (dev, part, x, mean, B, C, S, G))
TDM_OP(sum_parts_f64, (tdm_device_t *dev, double *y, const double *x, int64_t parts, int64_t n,
                       double div),
       (dev, y, x, parts, n, div))
TDM_OP(group_norm_apply, (tdm_device_t *dev, float *y, const float *x, const double *mean,
                          const double *var, const float *gamma, const float *beta, int64_t B,
                          int64_t C, int64_t S, int64_t G, float eps, int silu),
       (dev, y, x, mean, var, gamma, beta, B, C, S, G, eps, silu))
/* LayerNorm over the last dim of x (rows, D); y may alias x. */
TDM_OP(layer_norm, (tdm_device_t *dev, float *y, const float *x, const float *gamma,
                    const float *beta, int64_t rows, int64_t D, float eps),
       (dev, y, x, gamma, beta, rows, D, eps))
/* RMS norm (T5LayerNorm): y = w ⊙ x / sqrt(mean(x²) + eps) per row of x
 * (rows, D), the sum of squares in double and the mean rounded to float
 * before eps is added; w (D) may be NULL (ones). y may alias x. */
TDM_OP(rms_norm, (tdm_device_t *dev, float *y, const float *x, const float *w, int64_t rows,
                  int64_t D, float eps),
       (dev, y, x, w, rows, D, eps))
/* rms_norm with y of type at (x, w float32). */
TDM_OP(rms_norm_t, (tdm_device_t *dev, tdm_dtype at, void *y, const float *x, const float *w,
                    int64_t rows, int64_t D, float eps),
       (dev, at, y, x, w, rows, D, eps))
/* In place over n elements: SiLU; exact (erf) GELU; tanh GELU; x·sigmoid(1.702x);
 * ReLU (NaN becomes 0). */
TDM_OP(silu, (tdm_device_t *dev, float *x, int64_t n), (dev, x, n))
TDM_OP(gelu, (tdm_device_t *dev, float *x, int64_t n), (dev, x, n))
TDM_OP(gelu_tanh, (tdm_device_t *dev, float *x, int64_t n), (dev, x, n))
TDM_OP(quick_gelu, (tdm_device_t *dev, float *x, int64_t n), (dev, x, n))
TDM_OP(relu, (tdm_device_t *dev, float *x, int64_t n), (dev, x, n))
/* x (n, type at) = fn(x). */
TDM_OP(act_t, (tdm_device_t *dev, tdm_dtype at, tdm_act_fn fn, void *x, int64_t n),
       (dev, at, fn, x, n))
/* GEGLU: h (rows, 2F) → y (rows, F) = h[:, :F] · gelu(h[:, F:]) (diffusers GEGLU). */
TDM_OP(geglu, (tdm_device_t *dev, float *y, const float *h, int64_t rows, int64_t F),
       (dev, y, h, rows, F))

/* ---- element-wise and layout ---- */

/* y = a + b (n); y may alias a or b. */
TDM_OP(add, (tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n),
       (dev, y, a, b, n))
/* y = a · b (n); y may alias a or b. */
TDM_OP(mul, (tdm_device_t *dev, float *y, const float *a, const float *b, int64_t n),
       (dev, y, a, b, n))
/* mul with all three operands of type at. */
TDM_OP(mul_t, (tdm_device_t *dev, tdm_dtype at, void *y, const void *a, const void *b,
               int64_t n),
       (dev, at, y, a, b, n))
/* x (B, C, S) += v (B, C) broadcast over S. */
TDM_OP(add_channel_bias, (tdm_device_t *dev, float *x, const float *v, int64_t B, int64_t C,
                          int64_t S),
       (dev, x, v, B, C, S))
/* y = a · s (n); y may alias a. */
TDM_OP(scale, (tdm_device_t *dev, float *y, const float *a, float s, int64_t n),
       (dev, y, a, s, n))
/* y = clamp(a, lo, hi) (n) as torch.clamp (NaN stays NaN); y may alias a. */
TDM_OP(clamp, (tdm_device_t *dev, float *y, const float *a, float lo, float hi, int64_t n),
       (dev, y, a, lo, hi, n))
/* y (n, type yt) = x (n, type xt), rounded to nearest even where it narrows. */
TDM_OP(cast, (tdm_device_t *dev, void *y, tdm_dtype yt, const void *x, tdm_dtype xt, int64_t n),
       (dev, y, yt, x, xt, n))
/* (B, C, S) → (B, S, C), and back. */
TDM_OP(transpose_cs, (tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                      int64_t S),
       (dev, y, x, B, C, S))
TDM_OP(transpose_sc, (tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t S,
                      int64_t C),
       (dev, y, x, B, S, C))
/* Nearest 2× upsampling: x (B, C, H, W) → y (B, C, 2H, 2W). */
TDM_OP(upsample_nearest2x, (tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                            int64_t H, int64_t W),
       (dev, y, x, B, C, H, W))
/* Nearest resize, torch's F.interpolate(size=(Ho, Wo), mode="nearest") index
 * rule: x (B, C, H, W) → y (B, C, Ho, Wo), y[.., i, j] = x[.., si, sj] where
 * per axis (in → out) the source index is i when out == in, i >> 1 when out ==
 * 2·in, else min(floor((float)i · ((float)in / (float)out)), in - 1) in float32. */
TDM_OP(resize_nearest, (tdm_device_t *dev, float *y, const float *x, int64_t B, int64_t C,
                        int64_t H, int64_t W, int64_t Ho, int64_t Wo),
       (dev, y, x, B, C, H, W, Ho, Wo))
/* a (B, Ca, S), b (B, Cb, S) → y (B, Ca + Cb, S). */
TDM_OP(concat_channels, (tdm_device_t *dev, float *y, const float *a, int64_t Ca, const float *b,
                         int64_t Cb, int64_t B, int64_t S),
       (dev, y, a, Ca, b, Cb, B, S))
/* Row gather (torch.nn.Embedding): y (n, D), y[i, :] = table[idx[i], :]. idx
 * (n) is HOST memory on every device (the CUDA op uploads it); each index
 * lies in the table (the caller checks). y must not alias table. */
TDM_OP(gather_rows, (tdm_device_t *dev, float *y, const float *table, const int32_t *idx,
                     int64_t n, int64_t D),
       (dev, y, table, idx, n, D))
/* Strided 2-D copy of type at: y[r·ldy + c] = x[r·ldx + c] for rows × cols;
 * ldx = 0 broadcasts the one row x (cols). y must not overlap x. */
TDM_OP(copy_2d, (tdm_device_t *dev, tdm_dtype at, void *y, int64_t ldy, const void *x,
                 int64_t ldx, int64_t rows, int64_t cols),
       (dev, at, y, ldy, x, ldx, rows, cols))

/* ---- attention ---- */

/* Multi-head attention, tokens-major (as Linear outputs lay it out): q (B, Tq,
 * H·D), k, v (B, Tk, H·D) → o (B, Tq, H·D) = softmax(q kᵀ · scale [+ causal
 * mask]) v per head; the causal mask is top-left aligned (query i sees keys
 * j <= i, torch's is_causal). o must not alias q, k or v. */
TDM_OP(attention, (tdm_device_t *dev, float *o, const float *q, const float *k, const float *v,
                   int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D, float scale,
                   int causal),
       (dev, o, q, k, v, B, Tq, Tk, H, D, scale, causal))
/* attention with q, k, v, o of type at. */
TDM_OP(attention_t, (tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                     const void *v, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                     float scale, int causal),
       (dev, at, o, q, k, v, B, Tq, Tk, H, D, scale, causal))
/* Attention of q against one block of keys with each row's log-sum-exp, the
 * piece ring attention merges (non-causal): q (B, Tq, H·D), k, v (B, Tk,
 * H·D) of type at, scale as attention. With acc == 0: o (B, Tq, H·D) float32
 * = softmax(q kᵀ · scale) v (the attention op's math) and lse (B, H, Tq)
 * float32 = log Σ_j exp(scale · q·k_j); Tk = 0 gives o = 0, lse = -inf.
 * With acc != 0, o and lse hold such a result for other keys and become the
 * result over both key sets, merged in float32 with the block's own (o_b,
 * l_b): m = max(lse, l_b), lse' = m + log(e^(lse-m) + e^(l_b-m)), o' = o ·
 * e^(lse-lse') + o_b · e^(l_b-lse') (a row whose lse and l_b are both -inf
 * keeps o = 0, lse = -inf; Tk = 0 changes nothing). Merging blocks in any
 * order gives the whole attention within float rounding, not bit for bit.
 * o and lse must not alias q, k or v. Its own scratch is at most
 * attention_scratch_bytes(dev, at, B, Tq, Tk, H, D). */
TDM_OP(attention_lse, (tdm_device_t *dev, tdm_dtype at, float *o, float *lse, const void *q,
                       const void *k, const void *v, int64_t B, int64_t Tq, int64_t Tk,
                       int64_t H, int64_t D, float scale, int acc),
       (dev, at, o, lse, q, k, v, B, Tq, Tk, H, D, scale, acc))
/* Bytes attention / attention_t take for themselves beyond their operands
 * for these sizes (the CPU's per-thread score tiles from malloc, an upper
 * bound of CUDA's staging and copies); saturates at INT64_MAX. */
TDM_OPV(int64_t, attention_scratch_bytes, (tdm_device_t *dev, tdm_dtype at, int64_t B,
                                           int64_t Tq, int64_t Tk, int64_t H, int64_t D),
        (dev, at, B, Tq, Tk, H, D))
/* T5 self-attention with an additive relative position bias and no score
 * scaling: q, k, v (B, T, H·D) → o = softmax(q kᵀ + bias_h) v per batch row
 * and head, bias_h[i][j] = tab[h·(2T-1) + (j - i) + T - 1] (tab (H, 2T-1)).
 * s: attention_bias_scratch(T) floats (T·T on the CPU; 0 on CUDA, where s
 * may be NULL). T and H·D fit an int. o must not alias q, k, v, tab or s. */
TDM_OPV(int64_t, attention_bias_scratch, (tdm_device_t *dev, int64_t T), (dev, T))
TDM_OP(attention_bias, (tdm_device_t *dev, float *o, const float *q, const float *k,
                        const float *v, const float *tab, float *s, int64_t B, int64_t T,
                        int64_t H, int64_t D),
       (dev, o, q, k, v, tab, s, B, T, H, D))
/* attention_bias with q, k, v, o of type at. */
TDM_OP(attention_bias_t, (tdm_device_t *dev, tdm_dtype at, void *o, const void *q, const void *k,
                          const void *v, const float *tab, float *s, int64_t B, int64_t T,
                          int64_t H, int64_t D),
       (dev, at, o, q, k, v, tab, s, B, T, H, D))

/* ---- transformer row ops (FLUX) ----
 * x (B, S, width) is B sequences of S rows; a segment is rows [r0, r0 + L)
 * of every sequence (L = 0 does nothing). Modulation vectors of batch b sit
 * at base + b·mstride. The operands typed void * are of type at. */

/* Interleaved rotary embedding (diffusers apply_rotary_emb, use_real, unbind
 * dim -1) in place on x (B, S, H·hd), hd even: each pair (x0, x1) → (x0·cos[s][i]
 * − x1·sin[s][i], x1·cos[s][i+1] + x0·sin[s][i+1]), tables cosb, sinb (S, hd). */
TDM_OP(rope_interleaved, (tdm_device_t *dev, tdm_dtype at, void *x, const float *cosb,
                          const float *sinb, int64_t B, int64_t S, int64_t H, int64_t hd),
       (dev, at, x, cosb, sinb, B, S, H, hd))
/* Per-head RMSNorm (torch.nn.RMSNorm(hd), weight w (hd)) in place on the
 * segment rows of x (B, S, H·hd), the mean of squares summed in double. */
TDM_OP(rms_norm_heads, (tdm_device_t *dev, tdm_dtype at, void *x, const float *w, int64_t B,
                        int64_t S, int64_t r0, int64_t L, int64_t H, int64_t hd, float eps),
       (dev, at, x, w, B, S, r0, L, H, hd, eps))
/* rms_norm_heads of all S rows, rows [0, split) with w0 and [split, S) with
 * w1, then rope_interleaved with cosb, sinb (S, hd) (on CUDA one pass, the
 * normalized value kept in float32). hd even. */
TDM_OP(qk_norm_rope, (tdm_device_t *dev, tdm_dtype at, void *x, const float *w0, const float *w1,
                      int64_t split, const float *cosb, const float *sinb, int64_t B, int64_t S,
                      int64_t H, int64_t hd, float eps),
       (dev, at, x, w0, w1, split, cosb, sinb, B, S, H, hd, eps))
/* AdaLN modulation on the segment rows of x, y (B, S, D): y = LayerNorm(x)
 * (no affine) · (1 + scale[b]) + shift[b]; rows outside the segment are
 * untouched; y may alias x. */
TDM_OP(layer_norm_modulate, (tdm_device_t *dev, tdm_dtype at, void *y, const float *x,
                             const float *shift, const float *scale, int64_t mstride, int64_t B,
                             int64_t S, int64_t r0, int64_t L, int64_t D, float eps),
       (dev, at, y, x, shift, scale, mstride, B, S, r0, L, D, eps))
/* Gated residual on the segment rows: x (float32) += gate[b] · y (type at),
 * gate (D). y must not alias x. */
TDM_OP(gated_add_rows, (tdm_device_t *dev, tdm_dtype at, float *x, const void *y,
                        const float *gate, int64_t mstride, int64_t B, int64_t S, int64_t r0,
                        int64_t L, int64_t D),
       (dev, at, x, y, gate, mstride, B, S, r0, L, D))

/* ---- graphs ----
 * A model replays a captured forward pass with one launch. graph_ok: the
 * device can (CUDA, opts.cuda_graph, not profiling; 0 on host devices).
 * graph_begin starts capturing dev's queue: the ops that follow are recorded,
 * not run, and must not read host memory or wait for the device (no uploads,
 * downloads or syncs; allocations are fine). graph_end stops and returns the
 * graph through *graph. graph_launch runs it again: the same ops on the same
 * pointers, reading whatever those buffers hold then. graph_free releases it
 * (waits for dev). Failures return TDM_ERR_INTERNAL with the last error set;
 * a backend without graphs returns TDM_ERR_UNSUPPORTED. */
TDM_OPV(int, graph_ok, (tdm_device_t *dev), (dev))
TDM_OPV(tdm_status, graph_begin, (tdm_device_t *dev), (dev))
TDM_OPV(tdm_status, graph_end, (tdm_device_t *dev, void **graph), (dev, graph))
TDM_OPV(tdm_status, graph_launch, (tdm_device_t *dev, void *graph), (dev, graph))
TDM_OP(graph_free, (tdm_device_t *dev, void *graph), (dev, graph))
