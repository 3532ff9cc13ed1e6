/* bench_flux.c — times one FluxTransformer2DModel evaluation of a diffusers
 * folder, batch 1: tandem's side of bench/run_flux_cpu.sh, run_flux_gpu.sh and
 * run_flux_full_gpu.sh (reference: bench/ref_flux_gpu.py, same inputs). Not a test.
 * usage: bench_flux ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS [cpu|cuda:N [fp32|fp16|bf16|fp8]]
 * SEED=S (default 0) draws other inputs; DUMP=FILE writes the output (float32, raw) for
 * comparing dtypes (bench/run_flux_fp8_gpu.sh).
 * With MAX_MEMORY=0=8GiB,cpu=100GiB (and STRATEGY=sequential|auto|balanced_low_0, default
 * auto) in the environment the transformer is loaded split as `generate --device-map
 * transformer=STRATEGY --max-memory ...` loads it on one GPU: the plan's GPU-0 blocks resident,
 * the others kept in host RAM (page-locked) or on disk and streamed in as they run
 * (bench/run_offload_gpu.sh).
 * Started by mpirun with N > 1 ranks, the ranks make one image with the layout of PARALLEL
 * ("ulysses=U,ring=R,tp=T" multiplying to N; default ulysses=N): dist's process groups over the MPI
 * world, nn groups over them (NCCL where each rank has its own GPU, else staged through MPI: COMM
 * auto|mpi|nccl), the transformer loaded as its TP shard, tdm_flux_forward_cp; rank r on
 * cuda:(r mod GPUs) when the device is cuda; rank 0 reports the step time (bench/run_parallel_gpu.sh). */
#include "bench_util.h"
#include "dist/groups.h"
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
    const tdm_dtype pdt = dev->fp8_linears ? TDM_F8E4M3 : dev->gemm_dtype;
    tdm_plist_init(&pl, pdt);
    tdm_status st = tdm_flux_plist(cfg, pdt, &pl);
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
    tdm_flux_cp_groups_t cp;              /* the Ulysses and ring groups under mpirun, else NULL */
} flux_call_t;

static tdm_status flux_call(void *ctx) {
    flux_call_t *c = ctx;
    return tdm_flux_forward_cp(c->m, &c->cp, c->img, 1, c->N, c->txt, c->T, c->pooled, &c->ts,
                               tdm_flux_info(c->m)->guidance_embeds ? &c->guidance : NULL, c->img_ids,
                               c->txt_ids, c->out);
}

/* The ranks of one image under mpirun: the world, its process groups and
 * nn groups over the Ulysses, ring and TP dimensions. */
typedef struct {
    tdm_comm_t *world;
    tdm_groups_t *g;
    tdm_nn_group_t nn[3];   /* ulysses, ring, tp */
    tdm_parallel_t deg;
    int rank;
} par_t;

/* Under mpirun with more than one rank: *p as PARALLEL says, and this
 * rank's GPU in spec ("cuda" becomes cuda:(rank mod GPUs)). Returns 0, 1 on
 * failure, or -1 when not started by mpirun. Nn groups are made once the
 * device is open (par_nn). */
static int par_open(par_t *p, const char *dev, char *spec, size_t cap) {
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE"), *layout = getenv("PARALLEL");
    char def[32];
    memset(p, 0, sizeof *p);
    snprintf(spec, cap, "%s", dev);
    if (!ws || atoi(ws) < 2) return -1;
    snprintf(def, sizeof def, "ulysses=%d", atoi(ws));
    if (tdm_comm_mpi_create(&p->world) != TDM_OK ||
        tdm_parallel_parse(layout && *layout ? layout : def, p->world->size, &p->deg) != TDM_OK ||
        (p->deg.dp != 1 && tdm_errorf(TDM_ERR_INVALID_ARG, "PARALLEL=%s: one image (dp 1) only", layout)) ||
        tdm_groups_create(p->world, &p->deg, &p->g) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    p->rank = p->world->rank;
    if (!strncmp(dev, "cuda", 4)) {
        const int n = tdm_backend_device_count("cuda");
        snprintf(spec, cap, "cuda:%d", n > 0 ? p->rank % n : 0);
    }
    return 0;
}

static tdm_status par_nn(par_t *p, tdm_device_t *dev) {
    const int dims[3] = {TDM_GROUP_ULYSSES, TDM_GROUP_RING, TDM_GROUP_TP};
    tdm_nn_comm_mode mode;
    tdm_status st = tdm_nn_comm_mode_parse(getenv("COMM"), &mode);
    for (int i = 0; i < 3 && st == TDM_OK; i++)
        st = tdm_dist_nn_group_create_on(p->g->comm[dims[i]], dev, mode, &p->nn[i]);
    return st;
}

static void par_close(par_t *p) {
    for (int i = 0; i < 3; i++) tdm_dist_nn_group_free(&p->nn[i]);
    tdm_groups_free(p->g);
    tdm_comm_free(p->world);
}

int main(int argc, char **argv) {
    if (argc < 7 || argc > 9) {
        fprintf(stderr, "usage: %s ROOT IMG_TOKENS_H IMG_TOKENS_W TXT_TOKENS ITERS THREADS "
                "[cpu|cuda:N [fp32|fp16|bf16|fp8]]\n", argv[0]);
        return 2;
    }
    const int64_t gh = atoll(argv[2]), gw = atoll(argv[3]), T = atoll(argv[4]), N = gh * gw;
    const int iters = atoi(argv[5]);
    tdm_set_num_threads(atoi(argv[6]));
    par_t par;
    char spec[32];
    const int pr = par_open(&par, argc > 7 ? argv[7] : "cpu", spec, sizeof spec), grouped = pr == 0;
    if (pr > 0) return 1;
    bench_dev_t b;
    int rc = bench_dev_open(&b, "bench_flux", spec, argc > 8 ? argv[8] : "fp32");
    if (rc) return rc;
    if (grouped && par_nn(&par, &b.dev) != TDM_OK) {
        fprintf(stderr, "bench_flux: %s\n", tdm_last_error());
        return 1;
    }
    flux_call_t c = {.N = N, .T = T, .ts = 0.7f, .guidance = 3.5f};
    if (grouped) c.cp = (tdm_flux_cp_groups_t){ &par.nn[0], &par.nn[1] };
    double t0 = bench_now();
    const char *mmstr = getenv("MAX_MEMORY");
    tdm_device_t host, gpu[MAX_GPUS];
    int ngpu = 1;
    tdm_place_map_t map;
    memset(&map, 0, sizeof map);
    tdm_device_init(&host, TDM_DEV_CPU, 1);
    host.opts = b.dev.opts;
    if (mmstr ? load_split(&c.m, argv[1], &b.dev, &host, gpu, &ngpu, &map, mmstr) != TDM_OK
              : grouped && par.deg.tp > 1
                    ? tdm_flux_load_tp(&c.m, argv[1], "transformer", NULL, &b.dev, &par.nn[2]) != TDM_OK
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
    const int seed = getenv("SEED") ? 3 * atoi(getenv("SEED")) : 0;
    bench_input(img, ni, 2 + seed);
    bench_input(txt, nt, 3 + seed);
    bench_input(pooled, np, 4 + seed);
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
    char extra[256];
    snprintf(extra, sizeof extra, "\"batch\": 1, \"img_tokens\": %lld, \"txt_tokens\": %lld, "
             "\"blocks\": [%lld, %lld], \"ranks\": %d, \"ulysses\": %d, \"ring\": %d, \"tp\": %d", (long long)N, (long long)T,
             (long long)fi->num_layers, (long long)fi->num_single_layers, grouped ? par.world->size : 1,
             grouped ? par.deg.ulysses : 1, grouped ? par.deg.ring : 1, grouped ? par.deg.tp : 1);
    if (!grouped || par.rank == 0) bench_report(&b, "flux_transformer", extra, load, iters, best, mean, &s);
    const char *dump = getenv("DUMP");
    if (dump && (!grouped || par.rank == 0)) {
        float *h = malloc((size_t)no * 4);
        FILE *fo = fopen(dump, "wb");
        if (!h || !fo || tdm_dev_download(&b.dev, h, c.out, no * 4, "out") != TDM_OK ||
            fwrite(h, 4, (size_t)no, fo) != (size_t)no)
            fprintf(stderr, "bench_flux: DUMP=%s failed\n", dump);
        if (fo) fclose(fo);
        free(h);
    }
    tdm_dev_free(&b.dev, d_img, ni * 4);
    tdm_dev_free(&b.dev, d_txt, nt * 4);
    tdm_dev_free(&b.dev, d_pool, np * 4);
    tdm_dev_free(&b.dev, c.out, no * 4);
    tdm_flux_free(c.m);
    if (map.e) tdm_place_map_free(&map);
    for (int g = 1; g < ngpu; g++) tdm_backend_device_close(&gpu[g]);
    bench_dev_close(&b);
    if (grouped) par_close(&par);
    free(img); free(txt); free(pooled); free(img_ids); free(txt_ids);
    return 0;
}
