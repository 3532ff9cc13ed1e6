/* par_plan.h — `--parallel auto`: a cost model of one denoising step under
 * every layout of N ranks (DP × CFG × ring × Ulysses × TP), and the choice of
 * the layout that finishes the job first within the memory of a rank.
 *
 * The model (one step of one image, per rank of its group of
 * P = cfg·ring·ulysses·tp ranks):
 *   compute = gemm_flop / gemm_flop_s + attn_flop · pad / attn_flop_s, over P
 *             (pad: heads padded to a multiple of ulysses·tp, over heads);
 *   comm    = Ulysses: 4 all-to-alls (q, k, v, o) per attention layer, each
 *             rank sending (U-1)/U of its rows × width;
 *             ring: K/V shard rotations per attention layer, hidden
 *             behind that layer's attention compute where it is shorter;
 *             TP: 2 allreduces per block of the rank's rows × width
 *             (2(T-1)/T of them on the link); CFG: one exchange of the noise
 *             prediction; each call also pays `latency_s`;
 *   step    = compute + comm;
 *   job     = ceil(images / dp) · step (the images of a group run one after
 *             another);
 *   memory  = the weights a TP rank holds (the replicated ones whole, the
 *             split ones / T) + activations of the rank's rows (the model's
 *             own workspace estimate at U·R row shares, not reduced by TP;
 *             halves with cfg = 2).
 * Candidates whose mode the pipeline does not implement, whose TP degree
 * does not divide the heads, or that do not fit are listed with the reason
 * and never chosen. The choice minimises the job time, then the step time,
 * then the ranks per image, except that a layout giving one device's bits
 * (dp, cfg, ulysses) is preferred to a ring or tp one (float tolerance)
 * that is at most 10 % faster. A model, not a measurement: the machine numbers
 * come from defaults for the device kind or from a probe (the caller's). */
#ifndef TDM_PLACE_PAR_PLAN_H
#define TDM_PLACE_PAR_PLAN_H

#include <stdint.h>

#include "core/core.h"
#include "tandem.h"

/* tdm_par_model_t.modes bits: what the pipeline can run */
enum { TDM_PAR_CFG = 1, TDM_PAR_ULYSSES = 2, TDM_PAR_RING = 4, TDM_PAR_TP = 8 };

typedef struct {
    const char *name;       /* for the report: "FLUX.1 transformer", ... */
    double  gemm_flop;      /* GEMM flops of one step of one image (a CFG batch counted whole) */
    double  attn_flop;      /* attention flops (QKᵀ and PV) of that step */
    int64_t weight_bytes;   /* the denoiser's weights at the run's dtype */
    int64_t tp_bytes;       /* the part of them TP splits: a TP rank holds weight_bytes -
                             * tp_bytes + tp_bytes / T (0 without TP) */
    int64_t act_bytes[5];   /* its workspace with the rows split 1, 2, 4, 8, 16 ways (row shares) */
    int64_t seq;            /* attention sequence (FLUX: text + image tokens) */
    int64_t width;          /* hidden width: bytes a row = width · act_size */
    int     act_size;       /* bytes of an activation element */
    int     heads;          /* attention heads */
    int     attn_layers;    /* attention calls a step */
    int     blocks;         /* blocks a step (TP: two allreduces each) */
    int     modes;          /* TDM_PAR_* this pipeline implements */
} tdm_par_model_t;

typedef struct {
    int     ranks;          /* world size */
    int     ranks_per_host; /* ranks sharing one host's cores (CPU runs) */
    int64_t mem_bytes;      /* device memory a rank may use (0: no limit) */
    double  gemm_flop_s;    /* sustained GEMM throughput of one rank */
    double  attn_flop_s;    /* sustained attention throughput of one rank */
    double  link_bytes_s;   /* a rank's share of an all-to-all / allreduce */
    double  latency_s;      /* per collective call */
    int64_t images;         /* images of the job (>= 1) */
    const char *source;     /* "defaults for cuda", "probe", ... (reported) */
} tdm_par_machine_t;

typedef struct {
    tdm_parallel_t deg;
    double  compute_s, comm_s, step_s;
    double  job_s;          /* the job's time per denoising step: ceil(images / dp) · step_s */
    int64_t bytes;          /* per rank */
    const char *why_not;    /* NULL: usable */
} tdm_par_candidate_t;

#define TDM_PAR_MAX_CANDIDATES 512

/* Every factorisation of m->ranks into dp·cfg·ring·ulysses·tp (cfg 1 or 2),
 * predicted; *n of them in out (cap TDM_PAR_MAX_CANDIDATES), sorted fastest
 * first (usable ones first). Returns the index of the chosen one (see
 * above) or -1 when none is usable. */
int tdm_par_candidates(const tdm_par_model_t *model, const tdm_par_machine_t *m, tdm_par_candidate_t *out,
                       int *n);

/* The model of the denoiser of the diffusers folder `root` at width × height
 * pixels, with T text tokens (FLUX; 0: 512), guidance > 1 for Stable
 * Diffusion's CFG batch, dtype (its activation element size). FLUX: the
 * transformer; Stable Diffusion: the UNet (attention, Ulysses, ring and TP
 * not applicable). OUT: *out. */
tdm_status tdm_par_model_read(const char *root, int width, int height, int64_t T, int guidance_batch,
                              tdm_dtype dtype, tdm_par_model_t *out);

/* Defaults for a device kind ("cuda": an H100-class GPU, NCCL over NVLink;
 * "cpu": the host's cores shared by the ranks on it). */
void tdm_par_machine_defaults(const char *device, int ranks, int ranks_per_host, int64_t images,
                              tdm_par_machine_t *out);

/* The report: {"ranks", "images", "model", "machine", "chosen", "candidates":
 * [{"layout", "step_ms", "compute_ms", "comm_ms", "job_step_ms", "bytes_per_rank",
 * "usable", "why_not" (when not)}]}, best first. OUT: *json (free() it). */
tdm_status tdm_par_plan_json(const tdm_par_model_t *model, const tdm_par_machine_t *m,
                             const tdm_par_candidate_t *c, int n, int chosen, char **json);

#endif
