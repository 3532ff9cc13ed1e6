// label: golden;cuda
/* test_flux.c — FluxTransformer2DModel against diffusers: three tiny
 * random-weight configs written by tools/ref/flux_ref.py (dev: guidance
 * embedder, 64 packed channels, head dim 16 with RoPE axes (4,6,6), sharded
 * weights; schnell: no guidance, head dim 8 with axes (2,2,4), per-sample
 * timesteps, non-zero txt_ids; bf16: bf16 variant weights, 3 heads,
 * out_channels != in_channels, offset ids), plus loader errors (missing
 * tensor, wrong shape, unsupported config) and forward argument errors
 * (guidance missing / unexpected). The three fixtures also run on cuda:0 in
 * CUDA builds with a GPU (inputs uploaded, timesteps and ids from the host). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/flux.h"
#include "test.h"
#include "test_placed.h"

#define FIX TDM_FIXTURES "/flux"

/* Finds a float32 tensor of io.safetensors (NULL if absent or not F32). */
static const float *io_get(const tdm_safetensors_t *st, const char *name, int64_t *shape) {
    const tdm_st_tensor_t *t = tdm_safetensors_find(st, name);
    if (!t || t->dtype != TDM_F32) return NULL;
    if (shape) memcpy(shape, t->shape, sizeof(t->shape));
    return t->data;
}

/* The inputs and the expected output of a fixture's io.safetensors. */
typedef struct {
    const float *img, *txt, *pooled, *t, *g, *iid, *tid, *ref;   /* g: NULL without guidance */
    int64_t si[TDM_MAX_DIMS], stx[TDM_MAX_DIMS], sp[TDM_MAX_DIMS], so[TDM_MAX_DIMS];
} flux_io_t;

/* Fills io from st; 1 when every tensor but the optional guidance is there. */
static int flux_io(const tdm_safetensors_t *st, flux_io_t *io) {
    io->img = io_get(st, "img", io->si);
    io->txt = io_get(st, "txt", io->stx);
    io->pooled = io_get(st, "pooled", io->sp);
    io->t = io_get(st, "timestep", NULL);
    io->g = io_get(st, "guidance", NULL);
    io->iid = io_get(st, "img_ids", NULL);
    io->tid = io_get(st, "txt_ids", NULL);
    io->ref = io_get(st, "out", io->so);
    int ok = io->img && io->txt && io->pooled && io->t && io->iid && io->tid && io->ref;
    CHECK(ok);
    return ok;
}

/* Runs fixture `name` (weights variant `variant`) and compares with diffusers. */
static void run_golden(const char *name, const char *variant) {
    char root[1024], io[1100];
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_safetensors_t *st = NULL;
    float *out = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    snprintf(root, sizeof(root), "%s/%s", FIX, name);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);

    tdm_status s = tdm_flux_load(&m, root, "transformer", variant, &dev);
    CHECK_MSG(s == TDM_OK, "%s: load: %s", name, tdm_last_error());
    if (s != TDM_OK) return;
    const tdm_flux_info_t *info = tdm_flux_info(m);
    int64_t wbytes = dev.cur_bytes;
    CHECK(info->param_bytes == wbytes);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    flux_io_t x;
    if (!flux_io(st, &x)) goto done;
    const float *t = x.t, *g = x.g;
    CHECK((g != NULL) == (info->guidance_embeds != 0));
    int64_t B = x.si[0], N = x.si[1], T = x.stx[1], nout = x.so[0] * x.so[1] * x.so[2];
    CHECK(x.si[2] == info->in_channels);
    CHECK(x.so[2] == info->out_channels);
    CHECK(x.stx[2] == info->joint_attention_dim);
    out = malloc((size_t)nout * sizeof(float));
    s = tdm_flux_forward(m, x.img, B, N, x.txt, T, x.pooled, t, g, x.iid, x.tid, out);
    CHECK_MSG(s == TDM_OK, "%s: forward: %s", name, tdm_last_error());
    if (s == TDM_OK) {
        double err = test_rel_err(out, x.ref, (long)nout), mx = 0;
        for (int64_t i = 0; i < nout; i++) mx = fabs(x.ref[i]) > mx ? fabs(x.ref[i]) : mx;
        printf("  %s: B=%lld N=%lld T=%lld D=%lld layers %lld+%lld: rel err %.3g "
               "(|ref| max %.3f), activation peak %.1f KiB\n", name, (long long)B, (long long)N,
               (long long)T, (long long)(info->attention_head_dim * info->num_attention_heads),
               (long long)info->num_layers, (long long)info->num_single_layers, err, mx,
               (double)(dev.peak_bytes - wbytes) / 1024.0);
        CHECK_MSG(err <= 1e-5, "%s: rel err %.3g", name, err);
        /* the RoPE tables are kept for the next call with the same ids: a
         * repeat is bit-identical, changed ids are honoured, and going back
         * to the first ids gives the first output again */
        float *out2 = malloc((size_t)nout * sizeof(float));
        float *ids = malloc((size_t)N * 3 * sizeof(float));
        CHECK(out2 && ids);
        if (out2 && ids) {
            memcpy(ids, x.iid, (size_t)N * 3 * sizeof(float));
            CHECK(tdm_flux_forward(m, x.img, B, N, x.txt, T, x.pooled, t, g, ids, x.tid, out2) == TDM_OK);
            CHECK(!memcmp(out, out2, (size_t)nout * sizeof(float)));
            ids[N * 3 - 1] += 1.0f;
            CHECK(tdm_flux_forward(m, x.img, B, N, x.txt, T, x.pooled, t, g, ids, x.tid, out2) == TDM_OK);
            CHECK(memcmp(out, out2, (size_t)nout * sizeof(float)) != 0);
            ids[N * 3 - 1] -= 1.0f;
            CHECK(tdm_flux_forward(m, x.img, B, N, x.txt, T, x.pooled, t, g, ids, x.tid, out2) == TDM_OK);
            CHECK(!memcmp(out, out2, (size_t)nout * sizeof(float)));
        }
        free(out2);
        free(ids);
    }
    int64_t rope_bytes = 2 * (T + N) * info->attention_head_dim * (int64_t)sizeof(float);
    CHECK_MSG(dev.cur_bytes == wbytes + rope_bytes, "activations leaked: %lld bytes",
              (long long)(dev.cur_bytes - wbytes - rope_bytes));
done:
    free(out);
    tdm_safetensors_close(st);
    tdm_flux_free(m);
    CHECK(dev.cur_bytes == 0);
}

TEST(flux_dev_sharded_guidance) { run_golden("dev", NULL); }

/* The dev fixture split by the planner over two virtual devices standing for
 * GPUs 0 and 1 and host RAM or disk (the budgets below put the last blocks on
 * the host in one case and on disk in the other):
 * each device holds exactly the bytes the plan gives it, offloaded weights
 * are brought to the main device only while their block runs, and the
 * output is bit-identical to the one-device load, twice in a row. */
static void run_placed(const char *strategy, const char *budgets) {
    char root[1024], io[1100], cfg[1100];
    placed_t t;
    tdm_flux_t *a = NULL, *b = NULL;
    tdm_safetensors_t *st = NULL;
    float *oa = NULL, *ob = NULL;
    snprintf(root, sizeof(root), "%s/dev", FIX);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);
    snprintf(cfg, sizeof(cfg), "%s/transformer/config.json", root);
    if (!placed_setup(&t, tdm_flux_plist, cfg, strategy, budgets)) goto done;
    CHECK_MSG(t.planned[0] > 0 && t.planned[1] > 0 && t.planned[2] + t.planned[3] > 0,
              "the budgets should use both GPUs and offload some blocks");
    tdm_status s = tdm_flux_load(&a, root, "transformer", NULL, &t.one);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s == TDM_OK) s = tdm_flux_load_placed(&b, root, "transformer", NULL, &t.place);
    CHECK_MSG(s == TDM_OK, "placed load: %s", tdm_last_error());
    if (s != TDM_OK) goto done;
    placed_check_held(&t);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    flux_io_t x;
    if (!flux_io(st, &x)) goto done;
    const float *tt = x.t, *g = x.g;
    CHECK(g != NULL);
    int64_t B = x.si[0], N = x.si[1], T = x.stx[1], nout = x.so[0] * x.so[1] * x.so[2];
    oa = malloc((size_t)nout * sizeof(float));
    ob = malloc((size_t)nout * sizeof(float));
    CHECK(tdm_flux_forward(a, x.img, B, N, x.txt, T, x.pooled, tt, g, x.iid, x.tid, oa) == TDM_OK);
    int64_t held0 = t.gpu0.cur_bytes, peak0 = t.gpu0.peak_bytes;
    for (int rep = 0; rep < 2; rep++) {
        s = tdm_flux_forward(b, x.img, B, N, x.txt, T, x.pooled, tt, g, x.iid, x.tid, ob);
        CHECK_MSG(s == TDM_OK, "placed forward: %s", tdm_last_error());
        CHECK(s == TDM_OK && !memcmp(oa, ob, (size_t)nout * sizeof(float)));
    }
    /* streamed weights are gone again (only the RoPE cache stays); while
     * they were in use they counted on the main device */
    int64_t rope = 2 * (T + N) * tdm_flux_info(b)->attention_head_dim * (int64_t)sizeof(float);
    placed_check_after(&t, held0, rope, peak0);
done:
    free(oa);
    free(ob);
    tdm_safetensors_close(st);
    tdm_flux_free(a);
    tdm_flux_free(b);
    placed_done(&t);
}

TEST(flux_placed_sequential) { run_placed("sequential", "0=250KB,1=160KB,cpu=240KB,disk=1GB"); }
TEST(flux_placed_balanced) { run_placed("balanced", "0=250KB,1=160KB,cpu=160KB,disk=1GB"); }

TEST(flux_placed_errors) {
    char root[1024], cfg[1100];
    tdm_device_t gpu0, host;
    tdm_device_t *gpus[1] = {&gpu0};
    tdm_plist_t pl;
    tdm_place_map_t map;
    tdm_max_memory_t mm;
    tdm_flux_t *m = NULL;
    memset(&map, 0, sizeof map);
    tdm_device_init(&gpu0, TDM_DEV_CPU, 0);
    tdm_device_init(&host, TDM_DEV_CPU, 1);
    snprintf(root, sizeof(root), "%s/dev", FIX);
    snprintf(cfg, sizeof(cfg), "%s/transformer/config.json", root);
    CHECK(tdm_flux_plist(cfg, TDM_F32, &pl) == TDM_OK);
    /* a map over GPUs 0 and 1 run with a device for GPU 0 only */
    CHECK(tdm_max_memory_parse("0=100KB,1=1MB", &mm) == TDM_OK);
    CHECK(tdm_place_plan(&pl, &mm, TDM_PLACE_SEQUENTIAL, 0, &map) == TDM_OK);
    tdm_placement_t place = {&map, gpus, 1, &host, &gpu0};
    tdm_status s = tdm_flux_load_placed(&m, root, "transformer", NULL, &place);
    printf("  error as expected: %s\n", tdm_last_error());
    CHECK(s == TDM_ERR_INVALID_ARG && m == NULL);
    CHECK_MSG(strstr(tdm_last_error(), "on GPU 1, which has no device") != NULL, "%s",
              tdm_last_error());
    CHECK(gpu0.cur_bytes == 0 && host.cur_bytes == 0);
    tdm_place_map_free(&map);
    tdm_plist_free(&pl);
}
TEST(flux_schnell) { run_golden("schnell", NULL); }
TEST(flux_bf16_variant) { run_golden("bf16", "bf16"); }

/* Uploads n floats of host h into a new buffer on dev (NULL on failure). */
static float *dev_copy(tdm_device_t *dev, const float *h, int64_t n, const char *what) {
    float *p = tdm_dev_alloc(dev, n * (int64_t)sizeof(float), what);
    if (p && tdm_dev_upload(dev, p, h, n * (int64_t)sizeof(float), what) != TDM_OK) {
        tdm_dev_free(dev, p, n * (int64_t)sizeof(float));
        return NULL;
    }
    return p;
}

/* Fixture `name` on CUDA device `index`: weights loaded onto the GPU, img,
 * txt and pooled uploaded, timestep, guidance and ids passed from the host,
 * the output downloaded and compared with diffusers. */

static void run_golden_cuda(int index, const char *name, const char *variant,
                            tdm_dtype dt) {
    char root[1024], io[1100];
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_safetensors_t *st = NULL;
    float *out = NULL, *dimg = NULL, *dtxt = NULL, *dpool = NULL, *dout = NULL;
    int64_t nimg = 0, ntxt = 0, npool = 0, nout = 0, io_bytes = 0;
    char spec[32];
    snprintf(spec, sizeof spec, "cuda:%d", index);
    tdm_status s = tdm_backend_device_open(&dev, spec, NULL);
    CHECK_MSG(s == TDM_OK, "%s: %s", spec, tdm_last_error());
    if (s != TDM_OK) return;
    dev.gemm_dtype = dt;
    printf("  %s on cuda:%d, GEMMs in %s:\n", name, index, tdm_dtype_name(dt));
    snprintf(root, sizeof(root), "%s/%s", FIX, name);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);

    s = tdm_flux_load(&m, root, "transformer", variant, &dev);
    CHECK_MSG(s == TDM_OK, "%s: load on cuda: %s", name, tdm_last_error());
    if (s != TDM_OK) goto done;
    const tdm_flux_info_t *info = tdm_flux_info(m);
    CHECK(info->param_bytes == dev.cur_bytes);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    flux_io_t x;
    if (!flux_io(st, &x)) goto done;
    const float *t = x.t, *g = x.g;
    int64_t B = x.si[0], N = x.si[1], T = x.stx[1];
    nimg = B * N * x.si[2];
    ntxt = B * T * x.stx[2];
    npool = x.sp[0] * x.sp[1];
    nout = x.so[0] * x.so[1] * x.so[2];
    dimg = dev_copy(&dev, x.img, nimg, "test img");
    dtxt = dev_copy(&dev, x.txt, ntxt, "test txt");
    dpool = dev_copy(&dev, x.pooled, npool, "test pooled");
    dout = tdm_dev_alloc(&dev, nout * (int64_t)sizeof(float), "test out");
    out = malloc((size_t)nout * sizeof(float));
    CHECK_MSG(dimg && dtxt && dpool && dout && out, "%s", tdm_last_error());
    if (!(dimg && dtxt && dpool && dout && out)) goto done;
    io_bytes = dev.cur_bytes;
    s = tdm_flux_forward(m, dimg, B, N, dtxt, T, dpool, t, g, x.iid, x.tid, dout);
    CHECK_MSG(s == TDM_OK, "%s: forward on cuda: %s", name, tdm_last_error());
    if (s == TDM_OK) s = tdm_dev_download(&dev, out, dout, nout * (int64_t)sizeof(float),
                                          "test out");
    CHECK_MSG(s == TDM_OK, "%s: download: %s", name, tdm_last_error());
    if (s == TDM_OK) {
        double err = test_rel_err(out, x.ref, (long)nout);
        printf("  %s on cuda:%d: B=%lld N=%lld T=%lld: rel err %.3g, activation peak %.1f "
               "KiB\n", name, index, (long long)B, (long long)N, (long long)T, err,
               (double)(dev.peak_bytes - io_bytes) / 1024.0);
        CHECK_MSG(err <= test_cuda_tol(dt), "%s on cuda (%s): rel err %.3g", name,
                  tdm_dtype_name(dt), err);
    }
    {   /* what stays is the RoPE table cache (cos | sin, (T + N) × head dim each) */
        int64_t rope = 2 * (T + N) * tdm_flux_info(m)->attention_head_dim * (int64_t)sizeof(float);
        CHECK_MSG(dev.cur_bytes == io_bytes + rope, "activations leaked on cuda: %lld bytes",
                  (long long)(dev.cur_bytes - io_bytes - rope));
    }
done:
    if (dimg) tdm_dev_free(&dev, dimg, nimg * (int64_t)sizeof(float));
    if (dtxt) tdm_dev_free(&dev, dtxt, ntxt * (int64_t)sizeof(float));
    if (dpool) tdm_dev_free(&dev, dpool, npool * (int64_t)sizeof(float));
    if (dout) tdm_dev_free(&dev, dout, nout * (int64_t)sizeof(float));
    free(out);
    tdm_safetensors_close(st);
    tdm_flux_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left on cuda", (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
}

/* The dev fixture on cuda:0 (bf16) split by the planner over GPU 0, host RAM
 * and disk: GPU 0's blocks resident, the others streamed to the GPU while
 * their block runs (host copies kept in bf16, disk ones read from the file);
 * the output equals the all-on-GPU load bit for bit, twice in a row, and the
 * streamed weights leave the GPU again. */
static void run_offload_cuda(int64_t pin_min, int ngpu) {
    char root[1024], io[1100], cfg[1100];
    tdm_device_t dev, host, dev1;
    tdm_device_t *gpus[2] = {&dev, &dev1};
    tdm_plist_t pl;
    tdm_place_map_t map;
    tdm_max_memory_t mm;
    tdm_flux_t *a = NULL, *b = NULL;
    tdm_safetensors_t *st = NULL;
    float *dimg = NULL, *dtxt = NULL, *dpool = NULL, *dout = NULL, *oa = NULL, *ob = NULL;
    int64_t nimg = 0, ntxt = 0, npool = 0, nout = 0, planned[3] = {0, 0, 0};
    memset(&map, 0, sizeof map);
    tdm_plist_init(&pl, TDM_BF16);
    tdm_device_init(&host, TDM_DEV_CPU, 1);
    tdm_device_init(&dev1, TDM_DEV_CPU, 2);
    if (tdm_backend_device_open(&dev, "cuda:0", NULL) != TDM_OK) {
        CHECK_MSG(0, "%s", tdm_last_error());
        return;
    }
    dev.gemm_dtype = TDM_BF16;
    if (ngpu > 1) {
        if (tdm_backend_device_open(&dev1, "cuda:1", NULL) != TDM_OK) {
            CHECK_MSG(0, "%s", tdm_last_error());
            tdm_backend_device_close(&dev);
            return;
        }
        dev1.gemm_dtype = TDM_BF16;
    }
    snprintf(root, sizeof(root), "%s/dev", FIX);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);
    snprintf(cfg, sizeof(cfg), "%s/transformer/config.json", root);
    tdm_status s = tdm_flux_plist(cfg, TDM_BF16, &pl);
    if (s == TDM_OK)
        s = tdm_max_memory_parse(ngpu > 1 ? "0=100KB,1=50KB,cpu=60KB,disk=1GB"
                                          : "0=120KB,cpu=120KB,disk=1GB", &mm);
    if (s == TDM_OK) s = tdm_place_plan(&pl, &mm, TDM_PLACE_SEQUENTIAL, 0, &map);
    CHECK_MSG(s == TDM_OK, "plan: %s", tdm_last_error());
    if (s != TDM_OK) goto done;
    int64_t on1 = 0;
    for (int i = 0; i < map.ndev; i++) {
        if (map.dev[i] == 1) on1 = map.used[i];
        else planned[map.dev[i] == 0 ? 0 : map.dev[i] == TDM_PLACE_CPU ? 1 : 2] = map.used[i];
    }
    printf("  offload on cuda:0 (host copies of >= %lld bytes pinned): GPU0 %lld, GPU1 %lld, cpu "
           "%lld, disk %lld bytes\n", (long long)pin_min, (long long)planned[0], (long long)on1,
           (long long)planned[1], (long long)planned[2]);
    if (ngpu > 1)   /* both GPUs, then disk (this fixture's last unit outgrows cpu=) */
        CHECK_MSG(planned[0] > 0 && on1 > 0 && planned[2] > 0, "the budgets should use GPU 0, "
                  "GPU 1 and disk");
    else
        CHECK_MSG(planned[0] > 0 && planned[1] > 0 && planned[2] > 0,
                  "the budgets should use all three");
    tdm_placement_t place = {&map, gpus, ngpu, &host, &dev};
    dev.opts.pin_min_bytes = dev1.opts.pin_min_bytes = pin_min;
    s = tdm_flux_load(&a, root, "transformer", NULL, &dev);
    if (s == TDM_OK) s = tdm_flux_load_placed(&b, root, "transformer", NULL, &place);
    CHECK_MSG(s == TDM_OK, "load: %s", tdm_last_error());
    if (s != TDM_OK) goto done;
    if (ngpu == 1) CHECK_MSG(host.cur_bytes > 0, "nothing kept in host RAM");
    else   /* bf16 GEMM weights, float32 norms and biases: at least the plan's bytes */
        CHECK_MSG(dev1.cur_bytes >= on1, "GPU 1 holds %lld bytes, the plan %lld",
                  (long long)dev1.cur_bytes, (long long)on1);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    flux_io_t x;
    if (!flux_io(st, &x)) goto done;
    int64_t B = x.si[0], N = x.si[1], T = x.stx[1];
    nimg = B * N * x.si[2];
    ntxt = B * T * x.stx[2];
    npool = x.sp[0] * x.sp[1];
    nout = x.so[0] * x.so[1] * x.so[2];
    dimg = dev_copy(&dev, x.img, nimg, "test img");
    dtxt = dev_copy(&dev, x.txt, ntxt, "test txt");
    dpool = dev_copy(&dev, x.pooled, npool, "test pooled");
    dout = tdm_dev_alloc(&dev, nout * (int64_t)sizeof(float), "test out");
    oa = malloc((size_t)nout * sizeof(float));
    ob = malloc((size_t)nout * sizeof(float));
    if (!(dimg && dtxt && dpool && dout && oa && ob)) { CHECK(0); goto done; }
    s = tdm_flux_forward(a, dimg, B, N, dtxt, T, dpool, x.t, x.g, x.iid, x.tid, dout);
    if (s == TDM_OK) s = tdm_dev_download(&dev, oa, dout, nout * (int64_t)sizeof(float), "out");
    CHECK_MSG(s == TDM_OK, "forward: %s", tdm_last_error());
    int64_t held = dev.cur_bytes;
    for (int rep = 0; rep < 2 && s == TDM_OK; rep++) {
        s = tdm_flux_forward(b, dimg, B, N, dtxt, T, dpool, x.t, x.g, x.iid, x.tid, dout);
        if (s == TDM_OK) s = tdm_dev_download(&dev, ob, dout, nout * (int64_t)sizeof(float), "out");
        CHECK_MSG(s == TDM_OK, "offloaded forward: %s", tdm_last_error());
        CHECK_MSG(s == TDM_OK && !memcmp(oa, ob, (size_t)nout * sizeof(float)),
                  "offloaded output differs (rel err %.3g)", test_rel_err(ob, oa, (long)nout));
    }
    {   /* what stays on the GPU after the offloaded forwards: b's RoPE cache */
        int64_t rope = 2 * (T + N) * tdm_flux_info(b)->attention_head_dim * (int64_t)sizeof(float);
        CHECK_MSG(dev.cur_bytes == held + rope, "GPU holds %lld bytes, %lld expected",
                  (long long)dev.cur_bytes, (long long)(held + rope));
    }
done:
    if (dimg) tdm_dev_free(&dev, dimg, nimg * (int64_t)sizeof(float));
    if (dtxt) tdm_dev_free(&dev, dtxt, ntxt * (int64_t)sizeof(float));
    if (dpool) tdm_dev_free(&dev, dpool, npool * (int64_t)sizeof(float));
    if (dout) tdm_dev_free(&dev, dout, nout * (int64_t)sizeof(float));
    free(oa);
    free(ob);
    tdm_safetensors_close(st);
    tdm_flux_free(a);
    tdm_flux_free(b);
    CHECK_MSG(dev.cur_bytes == 0 && host.cur_bytes == 0, "left: cuda %lld, host %lld",
              (long long)dev.cur_bytes, (long long)host.cur_bytes);
    if (map.e) tdm_place_map_free(&map);
    tdm_plist_free(&pl);
    tdm_backend_device_close(&dev);
    if (ngpu > 1) {
        CHECK_MSG(dev1.cur_bytes == 0, "%lld bytes left on cuda:1", (long long)dev1.cur_bytes);
        tdm_backend_device_close(&dev1);
    }
}

TEST(flux_cuda_offload) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    run_offload_cuda(TDM_OFFLOAD_PIN_MIN, 1);   /* the fixture's copies: staged uploads */
    run_offload_cuda(0, 1);                     /* pinned: DMA on the side queue, prefetched */
    if (tdm_backend_device_count("cuda") >= 2)
        run_offload_cuda(0, 2);   /* blocks resident on GPU 1 copied to GPU 0 as they run */
    else
        printf("  two-GPU offload skipped: one CUDA device\n");
}

/* The three fixtures on cuda:0 when this is a CUDA build with a GPU. */
TEST(flux_cuda_golden) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    run_golden_cuda(0, "dev", NULL, TDM_F32);
    run_golden_cuda(0, "dev", NULL, TDM_F16);
    run_golden_cuda(0, "dev", NULL, TDM_BF16);
    run_golden_cuda(0, "schnell", NULL, TDM_F32);
    run_golden_cuda(0, "schnell", NULL, TDM_F16);
    run_golden_cuda(0, "schnell", NULL, TDM_BF16);
    run_golden_cuda(0, "bf16", "bf16", TDM_F32);
    run_golden_cuda(0, "bf16", "bf16", TDM_F16);
    run_golden_cuda(0, "bf16", "bf16", TDM_BF16);
}

TEST(flux_info) {
    char root[1024];
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    snprintf(root, sizeof(root), "%s/dev", FIX);
    tdm_status s = tdm_flux_load(&m, root, "transformer", NULL, &dev);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) return;
    const tdm_flux_info_t *i = tdm_flux_info(m);
    CHECK(i->in_channels == 64 && i->out_channels == 64);
    CHECK(i->num_layers == 2 && i->num_single_layers == 1);
    CHECK(i->attention_head_dim == 16 && i->num_attention_heads == 2);
    CHECK(i->joint_attention_dim == 32 && i->pooled_projection_dim == 24);
    CHECK(i->axes_dims_rope[0] == 4 && i->axes_dims_rope[1] == 6 && i->axes_dims_rope[2] == 6);
    CHECK(i->guidance_embeds == 1);
    CHECK(i->param_bytes == 119296 * 4);   /* diffusers' parameter count x 4 bytes */
    CHECK(tdm_flux_info(NULL) == NULL);
    tdm_flux_free(m);
    CHECK(dev.cur_bytes == 0);
}

/* ---- error paths: a copy of the schnell fixture with one thing changed ---- */

static int copy_text(const char *src, const char *dst, const char *from, const char *to) {
    FILE *f = fopen(src, "rb");
    if (!f) return 0;
    char txt[8192];
    size_t n = fread(txt, 1, sizeof(txt) - 1, f);
    fclose(f);
    txt[n] = 0;
    char *hit = from ? strstr(txt, from) : NULL;
    if (from && !hit) return 0;
    FILE *g = fopen(dst, "wb");
    if (!g) return 0;
    if (hit) {
        fwrite(txt, 1, (size_t)(hit - txt), g);
        fputs(to, g);
        fputs(hit + strlen(from), g);
    } else {
        fputs(txt, g);
    }
    return fclose(g) == 0;
}

/* Writes <tmp>/transformer/{config.json, weights} from fixture schnell with
 * tensor `drop` removed (reshape == 0) or reshaped (a, b) → (a/2, 2b), and
 * one optional textual replacement in config.json. */
static int make_broken(char *root, size_t cap, const char *drop, int reshape, const char *cfg_from,
                       const char *cfg_to) {
    char path[1200], src[1200];
    tdm_safetensors_t *st = NULL;
    snprintf(root, cap, "/tmp/tdm_test_flux_%d", (int)getpid());
    mkdir(root, 0755);
    snprintf(path, sizeof(path), "%s/transformer", root);
    mkdir(path, 0755);
    snprintf(src, sizeof(src), "%s/schnell/transformer/config.json", FIX);
    snprintf(path, sizeof(path), "%s/transformer/config.json", root);
    if (!copy_text(src, path, cfg_from, cfg_to)) return 0;
    snprintf(src, sizeof(src), "%s/schnell/transformer/diffusion_pytorch_model.safetensors", FIX);
    if (tdm_safetensors_open(&st, src) != TDM_OK) return 0;
    int n = tdm_safetensors_count(st), k = 0;
    const char **names = calloc((size_t)n, sizeof(*names));
    int *nd = calloc((size_t)n, sizeof(*nd));
    const int64_t **shapes = calloc((size_t)n, sizeof(*shapes));
    const float **data = calloc((size_t)n, sizeof(*data));
    int64_t (*sh)[TDM_MAX_DIMS] = calloc((size_t)n, sizeof(*sh));
    int ok = names && nd && shapes && data && sh;
    for (int i = 0; ok && i < n; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_at(st, i);
        int hit = drop && strcmp(t->name, drop) == 0;
        if (hit && !reshape) continue;
        names[k] = t->name;
        nd[k] = t->ndim;
        memcpy(sh[k], t->shape, sizeof(sh[k]));
        if (hit) {
            sh[k][0] /= 2;
            sh[k][1] *= 2;
        }
        shapes[k] = sh[k];
        data[k] = t->data;
        k++;
    }
    snprintf(path, sizeof(path), "%s/transformer/diffusion_pytorch_model.safetensors", root);
    if (ok) ok = tdm_safetensors_write_f32(path, k, names, nd, shapes, data, 0, NULL) == TDM_OK;
    free(names);
    free(nd);
    free(shapes);
    free(data);
    free(sh);
    tdm_safetensors_close(st);
    return ok;
}

static void remove_broken(const char *root) {
    char p[1200];
    snprintf(p, sizeof(p), "%s/transformer/config.json", root);
    unlink(p);
    snprintf(p, sizeof(p), "%s/transformer/diffusion_pytorch_model.safetensors", root);
    unlink(p);
    snprintf(p, sizeof(p), "%s/transformer", root);
    rmdir(p);
    rmdir(root);
}

static void expect_error(const char *drop, int reshape, const char *from, const char *to,
                         tdm_status want, const char *needle1, const char *needle2) {
    char root[512];
    tdm_device_t dev;
    tdm_flux_t *m = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    int ok = make_broken(root, sizeof(root), drop, reshape, from, to);
    CHECK_MSG(ok, "could not build the broken fixture");
    if (ok) {
        tdm_status s = tdm_flux_load(&m, root, "transformer", NULL, &dev);
        const char *msg = tdm_last_error();
        printf("  error as expected: %s\n", msg);
        CHECK_MSG(s == want, "status %s, want %s (%s)", tdm_status_name(s),
                  tdm_status_name(want), msg);
        CHECK(m == NULL);
        CHECK_MSG(strstr(msg, needle1) != NULL, "message lacks \"%s\": %s", needle1, msg);
        if (needle2) CHECK_MSG(strstr(msg, needle2) != NULL, "message lacks \"%s\": %s",
                               needle2, msg);
        CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left on the device", (long long)dev.cur_bytes);
    }
    tdm_flux_free(m);
    remove_broken(root);
}

TEST(flux_missing_tensor) {
    const char *n = "single_transformer_blocks.1.attn.norm_k.weight";
    expect_error(n, 0, NULL, NULL, TDM_ERR_MODEL, n, "diffusion_pytorch_model.safetensors");
}

TEST(flux_wrong_shape) {
    const char *n = "transformer_blocks.0.attn.add_k_proj.weight";
    expect_error(n, 1, NULL, NULL, TDM_ERR_MODEL, n, "diffusion_pytorch_model.safetensors");
}

TEST(flux_unsupported_config) {
    expect_error(NULL, 0, "\"patch_size\": 1", "\"patch_size\": 2", TDM_ERR_UNSUPPORTED,
                 "patch_size", "2");
    expect_error(NULL, 0, "\"_class_name\": \"FluxTransformer2DModel\"",
                 "\"_class_name\": \"SD3Transformer2DModel\"", TDM_ERR_UNSUPPORTED,
                 "_class_name", "SD3Transformer2DModel");
    expect_error(NULL, 0, "\"axes_dims_rope\": [", "\"axes_dims_rope\": [4, ",
                 TDM_ERR_UNSUPPORTED, "axes_dims_rope", NULL);
    expect_error(NULL, 0, "\"attention_head_dim\": 8", "\"attention_head_dim\": 10",
                 TDM_ERR_MODEL, "axes_dims_rope", "attention_head_dim=10");
    /* absent axes_dims_rope (as in the FLUX.1 repos) means (16, 56, 56) */
    expect_error(NULL, 0, "\"axes_dims_rope\": [", "\"unused_axes\": [", TDM_ERR_MODEL,
                 "default [16, 56, 56]) sums to 128",
                 "attention_head_dim=8");
}

TEST(flux_forward_bad_args) {
    char root[1024];
    tdm_device_t dev;
    tdm_flux_t *dv = NULL, *sc = NULL;
    float *buf = calloc(1 << 16, sizeof(float));
    float g[2] = {3.5f, 3.5f};
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    snprintf(root, sizeof(root), "%s/dev", FIX);
    tdm_status s = tdm_flux_load(&dv, root, "transformer", NULL, &dev);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    snprintf(root, sizeof(root), "%s/schnell", FIX);
    s = tdm_flux_load(&sc, root, "transformer", NULL, &dev);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (dv && sc && buf) {
        int64_t wbytes = dev.cur_bytes;
        /* guidance_embeds=true needs guidance */
        s = tdm_flux_forward(dv, buf, 2, 24, buf, 12, buf, buf, NULL, buf, buf, buf);
        printf("  error as expected: %s\n", tdm_last_error());
        CHECK(s == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "guidance") != NULL, "%s", tdm_last_error());
        /* and guidance_embeds=false rejects it */
        s = tdm_flux_forward(sc, buf, 2, 24, buf, 5, buf, buf, g, buf, buf, buf);
        printf("  error as expected: %s\n", tdm_last_error());
        CHECK(s == TDM_ERR_INVALID_ARG);
        CHECK_MSG(strstr(tdm_last_error(), "guidance") != NULL, "%s", tdm_last_error());
        CHECK(tdm_flux_forward(sc, NULL, 2, 24, buf, 5, buf, buf, NULL, buf, buf, buf) ==
              TDM_ERR_INVALID_ARG);
        CHECK(tdm_flux_forward(sc, buf, 0, 24, buf, 5, buf, buf, NULL, buf, buf, buf) ==
              TDM_ERR_INVALID_ARG);
        CHECK(tdm_flux_forward(sc, buf, INT64_MAX / 4, 24, buf, 5, buf, buf, NULL, buf, buf,
                               buf) == TDM_ERR_INVALID_ARG);
        CHECK(tdm_flux_forward(NULL, buf, 2, 24, buf, 5, buf, buf, NULL, buf, buf, buf) ==
              TDM_ERR_INVALID_ARG);
        CHECK(dev.cur_bytes == wbytes);
    }
    tdm_flux_free(dv);
    tdm_flux_free(sc);
    tdm_flux_free(NULL);
    free(buf);
    CHECK(dev.cur_bytes == 0);
}

int main(void) {
    RUN(flux_dev_sharded_guidance);
    RUN(flux_placed_sequential);
    RUN(flux_placed_balanced);
    RUN(flux_placed_errors);
    RUN(flux_cuda_offload);
    RUN(flux_schnell);
    RUN(flux_bf16_variant);
    RUN(flux_cuda_golden);
    RUN(flux_info);
    RUN(flux_missing_tensor);
    RUN(flux_wrong_shape);
    RUN(flux_unsupported_config);
    RUN(flux_forward_bad_args);
    return test_summary();
}
