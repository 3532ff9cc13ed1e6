/* ldm.h — single-file checkpoints in the original Stable Diffusion key
 * layout (model.diffusion_model.*, first_stage_model.*, cond_stage_model.*,
 * conditioner.embedders.*), as diffusers' from_single_file reads them: the
 * file is attached to a diffusers folder that supplies the configs and
 * tokenizers (its own weights only for components the file lacks), and each component's
 * weight set is the file's tensors renamed to diffusers' names at load —
 * mmap'd views, no converted copy on disk (OpenCLIP's fused q/k/v split by
 * rows, VAE attention 1x1 convs seen as matrices; only OpenCLIP's
 * text_projection is copied, transposed).
 *
 * Components: unet (UNet2DConditionModel, SD 1.x/2.x/XL), vae
 * (AutoencoderKL), text_encoder / text_encoder_2 (CLIPTextModel under
 * cond_stage_model.transformer. or conditioner.embedders.0.transformer.;
 * OpenCLIP under cond_stage_model.model. (SD 2.x) or
 * conditioner.embedders.{1,0}.model. (SDXL base / refiner)); transformer
 * (FluxTransformer2DModel from Black Forest Labs' layout, flux1-dev.safetensors:
 * bare keys or under model.diffusion_model., fused q/k/v and linear1 split by
 * rows, the final modulation's halves swapped into a copy). A component the
 * file lacks comes from the folder's own weights when it has them. */

#ifndef TDM_LDM_H
#define TDM_LDM_H

#include "core/core.h"
#include "io/safetensors.h"

/* Attaches single file `file` (or NULL) and components' own files comps[3]
 * (vae, text_encoder, text_encoder_2; NULL entries or comps NULL: none) to
 * folder `root` (process-wide, counted: the same files may be attached again,
 * e.g. by a server's worker threads; other files on the same root are an
 * error). A single file must hold SD or FLUX keys. A component file holds
 * diffusers'/transformers' names, an original-layout VAE (also bare, as
 * FLUX's ae.safetensors) or an OpenCLIP text encoder. */
tdm_status tdm_ldm_attach(const char *root, const char *file, const char *const *comps);
/* The Hugging Face repo whose configs diffusers' from_single_file uses for
 * `file` (its DIFFUSERS_DEFAULT_PIPELINE_PATHS), told by the file's keys:
 * SD 1.x stable-diffusion-v1-5/stable-diffusion-v1-5, SD 2.x (OpenCLIP under
 * cond_stage_model.model.) stabilityai/stable-diffusion-2-1, SDXL base
 * stabilityai/stable-diffusion-xl-base-1.0, FLUX.1 black-forest-labs/FLUX.1-dev
 * (with guidance_in) or -schnell. Families tandem has no pipeline for
 * (inpainting, the SDXL refiner, Playground v2.5, FLUX Fill/Depth) are an
 * error naming them. OUT: repo (cap bytes), family (a short name, >= 32 bytes). */
tdm_status tdm_ldm_default_config(const char *file, char *repo, size_t cap, char *family);
/* The folder a command reads for `model` into root (cap bytes): a folder
 * or ORG/NAME (tdm_folder_resolve), or for a single-file checkpoint (a
 * .safetensors file) `config` — or, without one, the default repo of the
 * file's family from the Hugging Face cache — with the file attached to it
 * (*attached = 1; detach with tdm_ldm_detach(root) when done); comps (as
 * tdm_ldm_attach's, for a folder model too) attached with it. --config with a
 * folder model is an error. */
tdm_status tdm_ldm_resolve(const char *model, const char *config, const char *const *comps, char *root,
                           size_t cap, int *attached);
/* Drops one attach of root (no-op when none). */
void       tdm_ldm_detach(const char *root);
/* When `root` has a file attached: *set = the renamed set of component `sub`
 * (its config read from root/sub/config.json), *attached = 1; else
 * *attached = 0 and *set untouched. A component the file does not hold is
 * an error naming the file and the component. */
tdm_status tdm_ldm_open(const char *root, const char *sub, tdm_st_set_t **set, int *attached);

#endif
