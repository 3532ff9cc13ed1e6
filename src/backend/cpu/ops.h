/* ops.h — CPU reference kernels (float32, contiguous row-major buffers).
 * The readable spec every other backend is checked against. GEMMs go to
 * OpenBLAS; element-wise, norm and softmax kernels are threaded with OpenMP.
 * Shapes are in comments; all counts are int64_t. Output buffers may not
 * alias inputs unless a function says so. */
#ifndef TDM_OPS_CPU_H
#define TDM_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

/* y[M,N] = x[M,K] · W[N,K]^T (+ b[N] if b != NULL). (torch.nn.Linear) */
void tdm_cpu_linear(float *y, const float *x, const float *W, const float *b,
                    int64_t M, int64_t K, int64_t N);

/* y[M,N] (rows ldy >= N apart) = gelu_tanh(x[M,K] · W[N,K]^T (+ b[N])): a
 * Linear followed by the tanh-approximated GELU (diffusers' "gelu-approximate"
 * feed-forward), written into a wider matrix when ldy > N. */
void tdm_cpu_linear_gelu(float *y, int64_t ldy, const float *x, const float *W, const float *b,
                         int64_t M, int64_t K, int64_t N);

/* C[M,N] = alpha · op(A) · op(B) + beta · C, row-major, lda/ldb/ldc as in BLAS. */
void tdm_cpu_gemm(int transA, int transB, int64_t M, int64_t N, int64_t K,
                  float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float beta, float *C, int64_t ldc);

/* 2-D convolution (torch.nn.Conv2d, groups=1, dilation=1):
 * x (B, Cin, H, W), w (Cout, Cin, kh, kw), b (Cout) or NULL,
 * y (B, Cout, Ho, Wo) with Ho = (H + 2*pad - kh)/stride + 1.
 * `scratch` holds at least tdm_cpu_conv2d_scratch(...) floats: one im2col
 * tile of whole output rows, min(Cin*kh*kw*Ho*Wo, about tile_bytes) floats
 * (at least one output row, Cin*kh*kw*Wo, when a row alone is larger).
 * tile_bytes is the im2col tile cap (0: TDM_CONV_TILE_BYTES_DEFAULT; a
 * device's opts.conv_tile_bytes); pass the conv the value its scratch was
 * sized with. Results do not depend on it beyond float rounding of the GEMM. */
int64_t tdm_cpu_conv2d_scratch(int64_t Cin, int64_t H, int64_t W, int64_t kh, int64_t kw,
                               int64_t stride, int64_t pad, size_t tile_bytes);
void tdm_cpu_conv2d(float *y, const float *x, const float *w, const float *b,
                    int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                    int64_t kh, int64_t kw, int64_t stride, int64_t pad, float *scratch,
                    size_t tile_bytes);
/* Same with asymmetric padding (top, bottom, left, right), for the VAE
 * encoder's downsample (pad right/bottom by 1, then stride 2, pad 0).
 * `scratch` holds at least tdm_cpu_conv2d_pad4_scratch(...) floats. A 1×1,
 * stride 1, unpadded conv needs no scratch (0 floats; scratch may be NULL). */
int64_t tdm_cpu_conv2d_pad4_scratch(int64_t Cin, int64_t H, int64_t W, int64_t kh, int64_t kw,
                                    int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                                    int64_t pr, size_t tile_bytes);
void tdm_cpu_conv2d_pad4(float *y, const float *x, const float *w, const float *b,
                         int64_t B, int64_t Cin, int64_t H, int64_t W, int64_t Cout,
                         int64_t kh, int64_t kw, int64_t stride,
                         int64_t pt, int64_t pb, int64_t pl, int64_t pr, float *scratch,
                         size_t tile_bytes);

/* GroupNorm over x (B, C, S) with G groups, affine gamma/beta (C);
 * y may alias x. If silu != 0, applies SiLU after the affine. */
void tdm_cpu_group_norm(float *y, const float *x, const float *gamma, const float *beta,
                        int64_t B, int64_t C, int64_t S, int64_t G, float eps, int silu);

/* LayerNorm over the last dim of x (rows, D); y may alias x. */
void tdm_cpu_layer_norm(float *y, const float *x, const float *gamma, const float *beta,
                        int64_t rows, int64_t D, float eps);

/* In-place activations over n elements. */
void tdm_cpu_silu(float *x, int64_t n);
void tdm_cpu_gelu(float *x, int64_t n);        /* exact erf GELU */
void tdm_cpu_gelu_tanh(float *x, int64_t n);   /* tanh approximation */
void tdm_cpu_quick_gelu(float *x, int64_t n);  /* x * sigmoid(1.702 x) */

/* GEGLU: h (rows, 2F) → y (rows, F), y = h[:, :F] * gelu(h[:, F:]) (diffusers GEGLU). */
void tdm_cpu_geglu(float *y, const float *h, int64_t rows, int64_t F);

/* Element-wise: y = a + b (n), y may alias a or b. */
void tdm_cpu_add(float *y, const float *a, const float *b, int64_t n);
/* x (B, C, S) += v (B, C) broadcast over S. */
void tdm_cpu_add_channel_bias(float *x, const float *v, int64_t B, int64_t C, int64_t S);
/* y = a * s (n), y may alias a. */
void tdm_cpu_scale(float *y, const float *a, float s, int64_t n);

/* Row-wise softmax of x (rows, n) in place. */
void tdm_cpu_softmax(float *x, int64_t rows, int64_t n);

/* Multi-head attention, tokens-major layout (as Linear outputs):
 * q (B, Tq, H*D), k (B, Tk, H*D), v (B, Tk, H*D) → o (B, Tq, H*D).
 * o = softmax(q k^T * scale [+ causal mask]) v per head. The causal mask is
 * top-left aligned as torch's is_causal: query i sees keys j <= i. Works in
 * query tiles (64 rows) so the score matrix never exceeds 64 × Tk floats per
 * thread; parallel over batch × head × tile with OpenMP, OpenBLAS switched
 * to one thread for the duration (process-wide). If the per-thread scratch
 * cannot be allocated, falls back to tdm_cpu_attention_ref. o must not alias
 * q, k or v. */
void tdm_cpu_attention(float *o, const float *q, const float *k, const float *v,
                       int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                       float scale, int causal);
/* Bytes of score tiles tdm_cpu_attention takes from malloc for Tk keys with
 * the current OpenMP thread count (one tile per thread; not counted on any
 * device). */
int64_t tdm_cpu_attention_scratch_bytes(int64_t Tk);
/* Same result without BLAS and without any allocation (dot products in
 * double, two passes over the keys per query): slow, the readable spec. */
void tdm_cpu_attention_ref(float *o, const float *q, const float *k, const float *v,
                           int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                           float scale, int causal);

/* Layout changes. (B, C, S) → (B, S, C) and back. */
void tdm_cpu_transpose_cs(float *y, const float *x, int64_t B, int64_t C, int64_t S);
void tdm_cpu_transpose_sc(float *y, const float *x, int64_t B, int64_t S, int64_t C);

/* Nearest-neighbour 2× upsampling: x (B, C, H, W) → y (B, C, 2H, 2W). */
void tdm_cpu_upsample_nearest2x(float *y, const float *x, int64_t B, int64_t C,
                                int64_t H, int64_t W);

/* Nearest-neighbour resize to any size, torch's F.interpolate(size=(Ho, Wo),
 * mode="nearest") index rule: x (B, C, H, W) → y (B, C, Ho, Wo) with
 * y[.., i, j] = x[.., si, sj], where per axis (in → out) the source index is
 * i when out == in, i >> 1 when out == 2·in, and otherwise
 * min(floor((float)i · ((float)in / (float)out)), in - 1) in float32. */
void tdm_cpu_resize_nearest(float *y, const float *x, int64_t B, int64_t C, int64_t H,
                            int64_t W, int64_t Ho, int64_t Wo);

/* Concatenate along channels: a (B, Ca, S), b (B, Cb, S) → y (B, Ca+Cb, S). */
void tdm_cpu_concat_channels(float *y, const float *a, int64_t Ca, const float *b, int64_t Cb,
                             int64_t B, int64_t S);

/* Row gather (torch.nn.Embedding, index_select on dim 0): y (n, D) with
 * y[i, :] = table[idx[i], :]. idx (n) is HOST memory for every device (token
 * ids, row numbers); each index must lie in the table (the caller checks).
 * y must not alias table. */
void tdm_cpu_gather_rows(float *y, const float *table, const int32_t *idx, int64_t n,
                         int64_t D);

/* y = clamp(a, lo, hi) (n) as torch.clamp: NaN stays NaN; y may alias a. */
void tdm_cpu_clamp(float *y, const float *a, float lo, float hi, int64_t n);

/* ---- T5 encoder ops ---- */

/* RMS norm (T5LayerNorm): y = w ⊙ (x · 1/sqrt(mean(x²) + eps)) over the rows
 * of x (rows, D), with the sum of squares accumulated in double and the mean
 * rounded to float before eps is added; no mean subtraction, no bias. w (D)
 * may be NULL (all ones). y may alias x. */
void tdm_cpu_rms_norm(float *y, const float *x, const float *w, int64_t rows, int64_t D,
                      float eps);

/* In-place ReLU over n elements: x = x > 0 ? x : 0 (NaN becomes 0). */
void tdm_cpu_relu(float *x, int64_t n);

/* Element-wise: y = a * b (n), y may alias a or b. */
void tdm_cpu_mul(float *y, const float *a, const float *b, int64_t n);

/* Self-attention with an additive relative position bias and no score
 * scaling (T5): q, k, v (B, T, H*D) as the Linear outputs lay them out →
 * o (B, T, H*D), o = softmax(q_bh k_bh^T + bias_h) v_bh per batch row and
 * head, where bias_h[i][j] = tab[h * (2T-1) + (j - i) + T - 1]: tab (H, 2T-1)
 * holds one value per head and relative position j - i in [-(T-1), T-1].
 * Softmax with the row max subtracted. `s` is scratch of at least
 * tdm_cpu_attention_bias_scratch(T) floats (T·T: one score matrix, GEMMs
 * through cblas_sgemm per (batch, head)). T and H*D must fit an int. o must
 * not alias q, k, v, tab or s. */
int64_t tdm_cpu_attention_bias_scratch(int64_t T);
void tdm_cpu_attention_bias(float *o, const float *q, const float *k, const float *v,
                            const float *tab, float *s, int64_t B, int64_t T, int64_t H,
                            int64_t D);

/* ---- transformer row ops (FLUX) ---------------------------------------------
 * x (B, S, width) is B sequences of S rows; a "segment" is rows [r0, r0+L)
 * of every sequence (L = 0 does nothing). Modulation vectors of batch b sit
 * at base + b*mstride. */

/* Interleaved rotary embedding (diffusers apply_rotary_emb, use_real,
 * unbind dim -1) in place on x (B, S, H*hd), hd even: each pair (x0, x1) →
 * (x0·cos[s][i] − x1·sin[s][i], x1·cos[s][i+1] + x0·sin[s][i+1]) with the
 * tables cosb, sinb (S, hd) of the row's position s. */
void tdm_cpu_rope_interleaved(float *x, const float *cosb, const float *sinb, int64_t B,
                              int64_t S, int64_t H, int64_t hd);

/* Per-head RMSNorm (torch.nn.RMSNorm(hd), weight w (hd)) in place on segment
 * rows of x (B, S, H*hd): v = v * (1/sqrt(mean(v²) + eps)) * w per head, the
 * mean of squares summed in double. */
void tdm_cpu_rms_norm_heads(float *x, const float *w, int64_t B, int64_t S, int64_t r0,
                            int64_t L, int64_t H, int64_t hd, float eps);

/* AdaLN modulation on segment rows of x, y (B, S, D): y = LayerNorm(x) *
 * (1 + scale[b]) + shift[b] (LayerNorm without affine, as tdm_cpu_layer_norm);
 * shift, scale (D) of batch b at shift + b*mstride, scale + b*mstride. Rows
 * outside the segment are untouched; y may alias x. */
void tdm_cpu_layer_norm_modulate(float *y, const float *x, const float *shift,
                                 const float *scale, int64_t mstride, int64_t B, int64_t S,
                                 int64_t r0, int64_t L, int64_t D, float eps);

/* Gated residual on segment rows: x += gate[b] * y, x, y (B, S, D), gate (D)
 * of batch b at gate + b*mstride. y must not alias x. */
void tdm_cpu_gated_add_rows(float *x, const float *y, const float *gate, int64_t mstride,
                            int64_t B, int64_t S, int64_t r0, int64_t L, int64_t D);

/* Strided 2-D copy: y[r*ldy + c] = x[r*ldx + c] for rows × cols; ldx = 0
 * broadcasts the one row x (cols) to every row of y. y must not overlap x. */
void tdm_cpu_copy_2d(float *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows,
                     int64_t cols);

#endif
