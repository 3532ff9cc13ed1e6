/* bench_flux.c — times one FluxTransformer2DModel evaluation of a diffusers
 * folder, batch 1: tandem's side of bench/run_flux_cpu.sh, run_flux_gpu.sh and
 * run_flux_full_gpu.sh (reference: bench/ref_flux_gpu.py, same inputs). Not a test.
 * usage: bench_flux ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16]]
 * With MAX_MEMORY=0=8GiB,cpu=100GiB (and STRATEGY=sequential|auto|balanced_low_0, default
 * auto) in the environment the transformer is loaded split as `generate --device-map
 * transformer=STRATEGY --max-memory ...` loads it on one GPU: the plan's GPU-0 blocks resident,
 * the others kept in host RAM (page-locked) or on disk and streamed in as they run
 * (bench/run_offload_gpu.sh).
 * Started by mpirun with N > 1 ranks, the ranks form one Ulysses group (tdm_flux_forward_cp over
 * dist's nn group on the MPI world; rank r on cuda:(r mod GPUs) when the device is cuda) and rank 0
 * reports the step time (bench/run_parallel_gpu.sh). */
#include "bench_util.h"
#include "dist/nn_group.h"
#include "models/flux.h"
#include "nn/offload.h"
#include "place/place.h"

#define MAX_GPUS 8

/* tdm_flux_load_placed with the plan of MAX_MEMORY / STRATEGY, GPU 0 = dev,
 * GPU g = cuda:g (initialized into gpu[g]; *ngpu of them incl. GPU 0) */
static tdm_status load_split(tdm_flux_t **m, const char *root, tdm_device_t *dev,
                             tdm_device_t *host, tdm_device_t *gpu, int *ngpu,
                             tdm_place_map_t *map, const char *mmstr) {
    char cfg[4096];
    tdm_plist_t pl;
    tdm_max_memory_t mm;
    tdm_place_strategy strat = TDM_PLACE_BALANCED;
    const char *sname = getenv("STRATEGY");
    tdm_device_t *gpus[MAX_GPUS] = {dev};
    snprintf(cfg, sizeof cfg, "%s/transformer/config.json", root);
    tdm_plist_init(&pl, dev->gemm_dtype);
    tdm_status st = tdm_flux_plist(cfg, dev->gemm_dtype, &pl);
    if (st == TDM_OK && sname) st = tdm_place_strategy_parse(sname, &strat);
    if (st == TDM_OK) st = tdm_max_memory_parse(mmstr, &mm);
    *ngpu = 1;
    for (int i = 0; st == TDM_OK && i < mm.n; i++)
        if (mm.dev[i] + 1 > *ngpu) *ngpu = mm.dev[i] + 1;
    if (st == TDM_OK && *ngpu > MAX_GPUS)
        st = tdm_errorf(TDM_ERR_INVALID_ARG, "MAX_MEMORY: at most %d GPUs", MAX_GPUS);
    for (int g = 1; st == TDM_OK && g < *ngpu; g++) {
        char spec[32];
        snprintf(spec, sizeof spec, "cuda:%d", g);
        st = tdm_backend_device_open(&gpu[g], spec, &dev->opts);
        gpu[g].gemm_dtype = dev->gemm_dtype;
        gpus[g] = &gpu[g];
    }
    if (st == TDM_OK) st = tdm_place_plan(&pl, &mm, strat, 0, map);
    if (st == TDM_OK) {
        int64_t used[MAX_GPUS + 2] = {0};
        for (int i = 0; i < map->ndev; i++) {
            int d = map->dev[i];
            used[d >= 0 ? d : d == TDM_PLACE_CPU ? MAX_GPUS : MAX_GPUS + 1] = map->used[i];
        }
        fprintf(stderr, "bench_flux: plan:");
        for (int g = 0; g < *ngpu; g++) fprintf(stderr, " GPU%d %.2f GiB,", g, used[g] / 1073741824.0);
        fprintf(stderr, " cpu %.2f GiB, disk %.2f GiB\n", used[MAX_GPUS] / 1073741824.0,
                used[MAX_GPUS + 1] / 1073741824.0);
        tdm_placement_t place = {map, gpus, *ngpu, host, dev};
        st = tdm_flux_load_placed(m, root, "transformer", NULL, &place);
    }
    tdm_plist_free(&pl);
    return st;
}

typedef struct {
    tdm_flux_t *m;
    const float *img, *txt, *pooled;      /* device */
    const float *img_ids, *txt_ids;       /* host (N, 3), (T, 3) */
    int64_t N, T;
    float ts, guidance;
    float *out;                           /* device (1, N, out_channels) */
    const tdm_nn_group_t *group;          /* the Ulysses group under mpirun, else NULL */
} flux_call_t;

static tdm_status flux_call(void *ctx) {
    flux_call_t *c = ctx;
    const tdm_flux_cp_groups_t g = { c->group, NULL };
    return tdm_flux_forward_cp(c->m, &g, c->img, 1, c->N, c->txt, c->T, c->pooled, &c->ts,
                               tdm_flux_info(c->m)->guidance_embeds ? &c->guidance : NULL, c->img_ids,
                               c->txt_ids, c->out);
}

/* Under mpirun with more than one rank: the MPI world as an nn group in *g,
 * and this rank's GPU in spec ("cuda" becomes cuda:(rank mod GPUs)).
 * Returns 0, 1 on failure, or -1 when not started by mpirun. */
static int mpi_group(tdm_comm_t **c, tdm_nn_group_t *g, const char *dev, char *spec, size_t cap) {
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
    snprintf(spec, cap, "%s", dev);
    if (!ws || atoi(ws) < 2) return -1;
    if (tdm_comm_mpi_create(c) != TDM_OK || tdm_dist_nn_group_create(*c, g) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    if (!strncmp(dev, "cuda", 4)) {
        const int n = tdm_backend_device_count("cuda");
        snprintf(spec, cap, "cuda:%d", n > 0 ? g->rank % n : 0);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: %s ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS "
                "[cpu|cuda:N [fp32|fp16|bf16]]\n", argv[0]);
        return 2;
    }
    const int64_t gh = atoll(argv[2]), gw = atoll(argv[3]), T = atoll(argv[4]), N = gh * gw;
    const int iters = atoi(argv[5]);
    tdm_set_num_threads(atoi(argv[6]));
    tdm_comm_t *comm = NULL;
    tdm_nn_group_t group;
    char spec[32];
    const int grouped = mpi_group(&comm, &group, argc > 7 ? argv[7] : "cpu", spec, sizeof spec);
    if (grouped > 0) return 1;
    bench_dev_t b;
    int rc = bench_dev_open(&b, "bench_flux", spec, argc > 8 ? argv[8] : "fp32");
    if (rc) return rc;
    flux_call_t c = {.N = N, .T = T, .ts = 0.7f, .guidance = 3.5f, .group = grouped == 0 ? &group : NULL};
    double t0 = bench_now();
    const char *mmstr = getenv("MAX_MEMORY");
    tdm_device_t host, gpu[MAX_GPUS];
    int ngpu = 1;
    tdm_place_map_t map;
    memset(&map, 0, sizeof map);
    tdm_device_init(&host, TDM_DEV_CPU, 1);
    host.opts = b.dev.opts;
    if (mmstr ? load_split(&c.m, argv[1], &b.dev, &host, gpu, &ngpu, &map, mmstr) != TDM_OK
              : tdm_flux_load(&c.m, argv[1], "transformer", NULL, &b.dev) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    const double load = bench_now() - t0;
    const tdm_flux_info_t *fi = tdm_flux_info(c.m);
    const int64_t ni = N * fi->in_channels, nt = T * fi->joint_attention_dim,
                  np = fi->pooled_projection_dim, no = N * fi->out_channels;
    float *img = malloc(ni * 4), *txt = malloc(nt * 4), *pooled = malloc(np * 4);
    float *img_ids = calloc(N * 3, 4), *txt_ids = calloc(T * 3, 4);
    bench_input(img, ni, 2);
    bench_input(txt, nt, 3);
    bench_input(pooled, np, 4);
    for (int64_t i = 0; i < gh; i++)
        for (int64_t j = 0; j < gw; j++) {
            img_ids[(i * gw + j) * 3 + 1] = (float)i;
            img_ids[(i * gw + j) * 3 + 2] = (float)j;
        }
    float *d_img = tdm_dev_alloc(&b.dev, ni * 4, "img"), *d_txt = tdm_dev_alloc(&b.dev, nt * 4, "txt");
    float *d_pool = tdm_dev_alloc(&b.dev, np * 4, "pooled");
    c.out = tdm_dev_alloc(&b.dev, no * 4, "out");
    if (!d_img || !d_txt || !d_pool || !c.out || tdm_dev_upload(&b.dev, d_img, img, ni * 4, "img") != TDM_OK ||
        tdm_dev_upload(&b.dev, d_txt, txt, nt * 4, "txt") != TDM_OK ||
        tdm_dev_upload(&b.dev, d_pool, pooled, np * 4, "pooled") != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    c.img = d_img;
    c.txt = d_txt;
    c.pooled = d_pool;
    c.img_ids = img_ids;
    c.txt_ids = txt_ids;
    double best, mean;
    bench_summary_t s;
    if (bench_time(&b, flux_call, &c, iters, &best, &mean) || bench_summarize(&b, c.out, no, &s)) return 1;
    char extra[200];
    snprintf(extra, sizeof extra, "\"batch\": 1, \"img_tokens\": %lld, \"txt_tokens\": %lld, "
             "\"blocks\": [%lld, %lld], \"ranks\": %d, \"ulysses\": %d", (long long)N, (long long)T,
             (long long)fi->num_layers, (long long)fi->num_single_layers, c.group ? c.group->size : 1,
             c.group ? c.group->size : 1);
    if (!c.group || c.group->rank == 0) bench_report(&b, "flux_transformer", extra, load, iters, best, mean, &s);
    tdm_dev_free(&b.dev, d_img, ni * 4);
    tdm_dev_free(&b.dev, d_txt, nt * 4);
    tdm_dev_free(&b.dev, d_pool, np * 4);
    tdm_dev_free(&b.dev, c.out, no * 4);
    tdm_flux_free(c.m);
    if (map.e) tdm_place_map_free(&map);
    for (int g = 1; g < ngpu; g++) tdm_backend_device_close(&gpu[g]);
    bench_dev_close(&b);
    if (c.group) tdm_dist_nn_group_free(&group);
    tdm_comm_free(comm);
    free(img); free(txt); free(pooled); free(img_ids); free(txt_ids);
    return 0;
}
