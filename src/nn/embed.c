/* embed.c — the sinusoidal timestep embedding (embed.h). */
#include "nn/embed.h"

#include <math.h>

/* As diffusers computes it in float32: exponent_i = -ln(10000) * i (float32)
 * divided by (half - shift); freq = exp(exponent); arg = (t * scale) * freq;
 * then [sin, cos] ([cos, sin] when flipped). exp, sin and cos are evaluated
 * in double and rounded, i.e. within an ulp of torch. */
void tdm_nn_timestep_embedding(float *emb, const float *t, int64_t B, int64_t dim, int flip,
                               double shift, float scale) {
    const int64_t half = dim / 2;
    const float lnp = (float)(-log(10000.0)), div = (float)((double)half - shift);
    for (int64_t n = 0; n < B; n++) {
        float *e = emb + n * dim;
        const float tn = t[n] * scale;
        for (int64_t i = 0; i < half; i++) {
            float ex = (lnp * (float)i) / div;
            float freq = (float)exp((double)ex);
            float arg = tn * freq;
            float s = (float)sin((double)arg), c = (float)cos((double)arg);
            e[i] = flip ? c : s;
            e[half + i] = flip ? s : c;
        }
        if (dim % 2) e[dim - 1] = 0.0f;
    }
}
