/* embed.h — diffusers' sinusoidal timestep embedding (Timesteps /
 * get_timestep_embedding), made on the host. The TimestepEmbedding MLP
 * after it is a tdm_nn_ffn_t with tdm_op_silu (ffn.h). Not here: device
 * work, RoPE (FLUX's). */
#ifndef TDM_NN_EMBED_H
#define TDM_NN_EMBED_H

#include <stdint.h>

/* emb (B, dim) = get_timestep_embedding(t · scale, dim, flip_sin_to_cos =
 * flip, downscale_freq_shift = shift) in float32 (embed.c); an odd dim ends
 * in a zero column. t (B) and emb are host memory. */
void tdm_nn_timestep_embedding(float *emb, const float *t, int64_t B, int64_t dim, int flip,
                               double shift, float scale);

#endif
