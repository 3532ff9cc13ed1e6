// label: golden;cuda
/* test_unet.c — the UNet2DConditionModel against diffusers: three tiny
 * random-weight configs written by tools/ref/unet_ref.py (SD1.5 layout with
 * fp16 variant weights, SD2 layout with linear projections and 77 tokens,
 * uncommon config values with an odd input size), on the CPU and, in CUDA
 * builds with a GPU, on cuda:0; plus loader errors for a missing tensor, a
 * wrong-shaped tensor and an unsupported config value. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "models/unet2d.h"
#include "test.h"
#include "test_placed.h"

#define FIX TDM_FIXTURES "/unet"

/* Runs fixture `name` (weights variant `variant`) and compares with diffusers. */
static void run_golden(const char *name, const char *variant) {
    char root[1024], io[1100];
    tdm_device_t dev;
    tdm_unet_t *u = NULL;
    tdm_safetensors_t *st = NULL;
    float *out = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    snprintf(root, sizeof(root), "%s/%s", FIX, name);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);

    tdm_status s = tdm_unet_load(&u, root, "unet", variant, &dev);
    CHECK_MSG(s == TDM_OK, "%s: load: %s", name, tdm_last_error());
    if (s != TDM_OK) return;
    int64_t wbytes = dev.cur_bytes;
    CHECK(tdm_unet_info(u)->param_bytes == wbytes);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    const tdm_st_tensor_t *x = tdm_safetensors_find(st, "x"), *t = tdm_safetensors_find(st, "t");
    const tdm_st_tensor_t *ctx = tdm_safetensors_find(st, "ctx");
    const tdm_st_tensor_t *ref = tdm_safetensors_find(st, "out");
    CHECK(x && t && ctx && ref && x->dtype == TDM_F32 && ref->dtype == TDM_F32);
    if (!(x && t && ctx && ref)) goto done;
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3], T = ctx->shape[1];
    int64_t nout = ref->nbytes / 4;
    CHECK(x->shape[1] == tdm_unet_info(u)->in_channels);
    CHECK(ref->shape[1] == tdm_unet_info(u)->out_channels);
    CHECK(ctx->shape[2] == tdm_unet_info(u)->cross_attention_dim);
    out = malloc((size_t)nout * sizeof(float));
    s = tdm_unet_forward(u, x->data, B, H, W, t->data, ctx->data, T, out);
    CHECK_MSG(s == TDM_OK, "%s: forward: %s", name, tdm_last_error());
    if (s == TDM_OK) {
        double err = test_rel_err(out, ref->data, (long)nout);
        printf("  %s: B=%lld %lldx%lld T=%lld rel err %.3g, activation peak %.1f KiB\n", name,
               (long long)B, (long long)H, (long long)W, (long long)T, err,
               (double)(dev.peak_bytes - wbytes) / 1024.0);
        CHECK_MSG(err <= 1e-4, "%s: rel err %.3g", name, err);
    }
    CHECK_MSG(dev.cur_bytes == wbytes, "activations leaked: %lld bytes",
              (long long)(dev.cur_bytes - wbytes));
done:
    free(out);
    tdm_safetensors_close(st);
    tdm_unet_free(u);
    CHECK(dev.cur_bytes == 0);
}

TEST(unet_sd15_fp16_variant) { run_golden("sd15", "fp16"); }

/* The sd15 fixture split by the planner over two virtual devices standing for
 * GPUs 0 and 1 and host RAM or disk (the second up block, a no-split
 * CrossAttnUpBlock2D, lands on the host in one case and on disk in the other):
 * each device holds the bytes the plan gives it, offloaded weights are on the
 * main device only while their unit runs, and the output is bit-identical to
 * the one-device load, twice in a row. */
static void run_placed(const char *strategy, const char *budgets) {
    char root[1024], io[1100], cfg[1100];
    placed_t t;
    tdm_unet_t *a = NULL, *b = NULL;
    tdm_safetensors_t *st = NULL;
    float *oa = NULL, *ob = NULL;
    snprintf(root, sizeof(root), "%s/sd15", FIX);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);
    snprintf(cfg, sizeof(cfg), "%s/unet/config.json", root);
    if (!placed_setup(&t, tdm_unet_plist, cfg, strategy, budgets)) goto done;
    CHECK_MSG(t.planned[0] > 0 && t.planned[1] > 0 && t.planned[2] + t.planned[3] > 0,
              "the budgets should use both GPUs and offload some units");
    tdm_status s = tdm_unet_load(&a, root, "unet", "fp16", &t.one);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s == TDM_OK) s = tdm_unet_load_placed(&b, root, "unet", "fp16", &t.place);
    CHECK_MSG(s == TDM_OK, "placed load: %s", tdm_last_error());
    if (s != TDM_OK) goto done;
    placed_check_held(&t);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    const tdm_st_tensor_t *x = tdm_safetensors_find(st, "x"), *tt = tdm_safetensors_find(st, "t");
    const tdm_st_tensor_t *ctx = tdm_safetensors_find(st, "ctx");
    const tdm_st_tensor_t *ref = tdm_safetensors_find(st, "out");
    CHECK(x && tt && ctx && ref);
    if (!(x && tt && ctx && ref)) goto done;
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3], T = ctx->shape[1];
    int64_t nout = ref->nbytes / 4;
    oa = malloc((size_t)nout * sizeof(float));
    ob = malloc((size_t)nout * sizeof(float));
    CHECK(tdm_unet_forward(a, x->data, B, H, W, tt->data, ctx->data, T, oa) == TDM_OK);
    int64_t held0 = t.gpu0.cur_bytes, peak0 = t.gpu0.peak_bytes;
    for (int rep = 0; rep < 2; rep++) {
        s = tdm_unet_forward(b, x->data, B, H, W, tt->data, ctx->data, T, ob);
        CHECK_MSG(s == TDM_OK, "placed forward: %s", tdm_last_error());
        CHECK(s == TDM_OK && !memcmp(oa, ob, (size_t)nout * sizeof(float)));
    }
    /* streamed weights are gone again; while in use they counted on the main device */
    placed_check_after(&t, held0, 0, peak0);
done:
    free(oa);
    free(ob);
    tdm_safetensors_close(st);
    tdm_unet_free(a);
    tdm_unet_free(b);
    placed_done(&t);
}

TEST(unet_placed_host) { run_placed("sequential", "0=200KB,1=150KB,cpu=450KB,disk=1GB"); }
TEST(unet_placed_disk) { run_placed("sequential", "0=200KB,1=150KB,cpu=100KB,disk=1GB"); }
TEST(unet_placed_balanced) { run_placed("balanced", "0=200KB,1=150KB,cpu=450KB,disk=1GB"); }
TEST(unet_sd2_linear_proj) { run_golden("sd2", NULL); }
TEST(unet_misc_odd_size) { run_golden("misc", NULL); }

/* Fixture `name` on CUDA device `index`: weights loaded onto the GPU, x and
 * ctx uploaded, timesteps passed from the host, the output downloaded and
 * compared with diffusers as on the CPU. */
static void run_golden_cuda(int index, const char *name, const char *variant,
                            tdm_dtype dt) {
    char root[1024], io[1100];
    tdm_device_t dev;
    tdm_unet_t *u = NULL;
    tdm_safetensors_t *st = NULL;
    float *out = NULL, *dx = NULL, *dctx = NULL, *dout = NULL;
    int64_t nx = 0, nctx = 0, nout = 0, wbytes = 0;
    char spec[32];
    snprintf(spec, sizeof spec, "cuda:%d", index);
    tdm_status s = tdm_backend_device_open(&dev, spec, NULL);
    CHECK_MSG(s == TDM_OK, "%s: %s", spec, tdm_last_error());
    if (s != TDM_OK) return;
    dev.gemm_dtype = dt;
    printf("  %s on cuda:%d, GEMMs in %s:\n", name, index, tdm_dtype_name(dt));
    snprintf(root, sizeof(root), "%s/%s", FIX, name);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);

    s = tdm_unet_load(&u, root, "unet", variant, &dev);
    CHECK_MSG(s == TDM_OK, "%s: load on cuda: %s", name, tdm_last_error());
    if (s != TDM_OK) goto done;
    wbytes = dev.cur_bytes;
    CHECK(tdm_unet_info(u)->param_bytes == wbytes);
    s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    const tdm_st_tensor_t *x = tdm_safetensors_find(st, "x"), *t = tdm_safetensors_find(st, "t");
    const tdm_st_tensor_t *ctx = tdm_safetensors_find(st, "ctx");
    const tdm_st_tensor_t *ref = tdm_safetensors_find(st, "out");
    CHECK(x && t && ctx && ref && x->dtype == TDM_F32 && ref->dtype == TDM_F32 &&
          ctx->dtype == TDM_F32 && t->dtype == TDM_F32);
    if (!(x && t && ctx && ref)) goto done;
    int64_t B = x->shape[0], H = x->shape[2], W = x->shape[3], T = ctx->shape[1];
    nx = x->nbytes / 4;
    nctx = ctx->nbytes / 4;
    nout = ref->nbytes / 4;
    dx = tdm_dev_alloc(&dev, nx * 4, "test x");
    dctx = tdm_dev_alloc(&dev, nctx * 4, "test ctx");
    dout = tdm_dev_alloc(&dev, nout * 4, "test out");
    out = malloc((size_t)nout * sizeof(float));
    CHECK_MSG(dx && dctx && dout && out, "%s", tdm_last_error());
    if (!(dx && dctx && dout && out)) goto done;
    s = tdm_dev_upload(&dev, dx, x->data, nx * 4, "test x");
    if (s == TDM_OK) s = tdm_dev_upload(&dev, dctx, ctx->data, nctx * 4, "test ctx");
    CHECK_MSG(s == TDM_OK, "%s: upload: %s", name, tdm_last_error());
    if (s != TDM_OK) goto done;
    int64_t io_bytes = dev.cur_bytes;
    s = tdm_unet_forward(u, dx, B, H, W, t->data, dctx, T, dout);
    CHECK_MSG(s == TDM_OK, "%s: forward on cuda: %s", name, tdm_last_error());
    if (s == TDM_OK) s = tdm_dev_download(&dev, out, dout, nout * 4, "test out");
    CHECK_MSG(s == TDM_OK, "%s: download: %s", name, tdm_last_error());
    if (s == TDM_OK) {
        double err = test_rel_err(out, ref->data, (long)nout);
        printf("  %s on cuda:%d: B=%lld %lldx%lld T=%lld rel err %.3g, activation peak "
               "%.1f KiB\n", name, index, (long long)B, (long long)H, (long long)W,
               (long long)T, err, (double)(dev.peak_bytes - io_bytes) / 1024.0);
        CHECK_MSG(err <= test_cuda_tol(dt), "%s on cuda (%s): rel err %.3g", name,
                  tdm_dtype_name(dt), err);
    }
    CHECK_MSG(dev.cur_bytes == io_bytes, "activations leaked on cuda: %lld bytes",
              (long long)(dev.cur_bytes - io_bytes));
done:
    if (dx) tdm_dev_free(&dev, dx, nx * 4);
    if (dctx) tdm_dev_free(&dev, dctx, nctx * 4);
    if (dout) tdm_dev_free(&dev, dout, nout * 4);
    free(out);
    tdm_safetensors_close(st);
    tdm_unet_free(u);
    CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left on cuda", (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
}
/* CUDA graphs (tdm_unet_forward's graph path): four calls with new inputs
 * and timesteps each time into the same buffers — the first eager, the
 * second captured, the others replayed — give bit for bit what eager calls
 * give (forced eager by alternating the output buffer), so a replay reads
 * the new x and the new timestep embedding; the graph keeps only its
 * embedding buffer on the device. */
static void run_graph_cuda(tdm_dtype dt) {
    char root[1024], io[1100];
    tdm_device_t dev;
    tdm_unet_t *u = NULL;
    tdm_safetensors_t *st = NULL;
    float *dx = NULL, *dctx = NULL, *dout[2] = {NULL, NULL}, *xs = NULL, *eager = NULL, *got = NULL;
    int64_t nx = 0, nctx = 0, nout = 0;
    if (tdm_backend_device_open(&dev, "cuda:0", NULL) != TDM_OK) {
        CHECK_MSG(0, "cuda:0: %s", tdm_last_error());
        return;
    }
    dev.gemm_dtype = dt;
    dev.cache_enabled = 1;   /* as the pipeline runs it */
    snprintf(root, sizeof(root), "%s/sd15", FIX);
    snprintf(io, sizeof(io), "%s/io.safetensors", root);
    tdm_status s = tdm_unet_load(&u, root, "unet", "fp16", &dev);
    CHECK_MSG(s == TDM_OK, "load on cuda: %s", tdm_last_error());
    if (s == TDM_OK) s = tdm_safetensors_open(&st, io);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) goto done;
    const tdm_st_tensor_t *x = tdm_safetensors_find(st, "x"), *ctx = tdm_safetensors_find(st, "ctx");
    const tdm_st_tensor_t *ref = tdm_safetensors_find(st, "out");
    CHECK(x && ctx && ref);
    if (!(x && ctx && ref)) goto done;
    /* 40 × 40 latents (not the fixture's size): activations above the
     * device cache's 64 KiB threshold */
    const int64_t B = x->shape[0], C = x->shape[1], H = 40, W = 40, T = ctx->shape[1];
    nx = B * C * H * W;
    nctx = ctx->nbytes / 4;
    nout = B * ref->shape[1] * H * W;
    dx = tdm_dev_alloc(&dev, nx * 4, "test x");
    dctx = tdm_dev_alloc(&dev, nctx * 4, "test ctx");
    dout[0] = tdm_dev_alloc(&dev, nout * 4, "test out");
    dout[1] = tdm_dev_alloc(&dev, nout * 4, "test out");
    xs = malloc((size_t)nx * 4);
    eager = malloc((size_t)(4 * nout) * 4);
    got = malloc((size_t)nout * 4);
    CHECK(dx && dctx && dout[0] && dout[1] && xs && eager && got);
    if (!(dx && dctx && dout[0] && dout[1] && xs && eager && got)) goto done;
    CHECK(tdm_dev_upload(&dev, dctx, ctx->data, nctx * 4, "test ctx") == TDM_OK);
    const int64_t io_bytes = dev.cur_bytes;
    for (int pass = 0; pass < 2; pass++)       /* 0: eager references, 1: graph */
        for (int k = 0; k < 4; k++) {
            float ts[8];
            const float *x0 = (const float *)x->data;
            const int64_t nx0 = x->nbytes / 4;
            for (int64_t i = 0; i < nx; i++) xs[i] = x0[i % nx0] * (1.0f + 0.25f * (float)k);
            for (int64_t b = 0; b < B && b < 8; b++) ts[b] = 901.0f - 97.0f * (float)k + (float)b;
            float *o = pass == 0 ? dout[k & 1] : dout[0];
            s = tdm_dev_upload(&dev, dx, xs, nx * 4, "test x");
            if (s == TDM_OK) s = tdm_unet_forward(u, dx, B, H, W, ts, dctx, T, o);
            if (s == TDM_OK) s = tdm_dev_download(&dev, pass == 0 ? eager + k * nout : got, o,
                                                  nout * 4, "test out");
            CHECK_MSG(s == TDM_OK, "graph pass %d call %d: %s", pass, k, tdm_last_error());
            if (s != TDM_OK) goto done;
            if (pass == 1)
                CHECK_MSG(!memcmp(got, eager + k * nout, (size_t)nout * 4),
                          "%s: graph call %d differs from the eager call", tdm_dtype_name(dt), k);
        }
    if (tdm_op_graph_ok(&dev))
        CHECK_MSG(tdm_unet_graph_bytes(u) > 0, "no graph after four calls");
    CHECK_MSG(dev.cur_bytes == io_bytes + tdm_unet_graph_bytes(u),
              "graph calls leaked %lld bytes",
              (long long)(dev.cur_bytes - io_bytes - tdm_unet_graph_bytes(u)));
done:
    if (dx) tdm_dev_free(&dev, dx, nx * 4);
    if (dctx) tdm_dev_free(&dev, dctx, nctx * 4);
    for (int i = 0; i < 2; i++)
        if (dout[i]) tdm_dev_free(&dev, dout[i], nout * 4);
    free(xs);
    free(eager);
    free(got);
    tdm_safetensors_close(st);
    tdm_unet_free(u);
    CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left on cuda", (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
}

TEST(unet_cuda_graph) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    run_graph_cuda(TDM_F16);
    run_graph_cuda(TDM_F32);
}

/* The three fixtures on cuda:0 when this is a CUDA build with a GPU. */
TEST(unet_cuda_golden) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    run_golden_cuda(0, "sd15", "fp16", TDM_F32);
    run_golden_cuda(0, "sd15", "fp16", TDM_F16);
    run_golden_cuda(0, "sd15", "fp16", TDM_BF16);
    run_golden_cuda(0, "sd2", NULL, TDM_F32);
    run_golden_cuda(0, "sd2", NULL, TDM_F16);
    run_golden_cuda(0, "sd2", NULL, TDM_BF16);
    run_golden_cuda(0, "misc", NULL, TDM_F32);
    run_golden_cuda(0, "misc", NULL, TDM_F16);
    run_golden_cuda(0, "misc", NULL, TDM_BF16);
}

/* ---- error paths: a copy of the sd2 fixture with one thing changed ---- */

static int copy_file(const char *src, const char *dst) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    char buf[65536];
    size_t n;
    int ok = a && b;
    while (ok && (n = fread(buf, 1, sizeof(buf), a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    if (a) fclose(a);
    if (b && fclose(b) != 0) ok = 0;
    return ok;
}

/* Writes <tmp>/unet/{config.json, weights} from fixture sd2, replacing the
 * tensor `drop` (removed if reshape == 0, else given a wrong first dim). */
static int make_broken(char *root, size_t cap, const char *drop, int reshape, const char *cfg_from,
                       const char *cfg_to) {
    char path[1200], src[1200];
    tdm_safetensors_t *st = NULL;
    snprintf(root, cap, "/tmp/tdm_test_unet_%d", (int)getpid());
    mkdir(root, 0755);
    snprintf(path, sizeof(path), "%s/unet", root);
    mkdir(path, 0755);
    /* config (optionally with one textual replacement) */
    snprintf(src, sizeof(src), "%s/sd2/unet/config.json", FIX);
    snprintf(path, sizeof(path), "%s/unet/config.json", root);
    if (!cfg_from) {
        if (!copy_file(src, path)) return 0;
    } else {
        FILE *f = fopen(src, "rb");
        if (!f) return 0;
        char txt[8192];
        size_t n = fread(txt, 1, sizeof(txt) - 1, f);
        fclose(f);
        txt[n] = 0;
        char *hit = strstr(txt, cfg_from);
        if (!hit) return 0;
        FILE *g = fopen(path, "wb");
        if (!g) return 0;
        fwrite(txt, 1, (size_t)(hit - txt), g);
        fputs(cfg_to, g);
        fputs(hit + strlen(cfg_from), g);
        fclose(g);
    }
    /* weights */
    snprintf(src, sizeof(src), "%s/sd2/unet/diffusion_pytorch_model.safetensors", FIX);
    if (tdm_safetensors_open(&st, src) != TDM_OK) return 0;
    int n = tdm_safetensors_count(st), k = 0;
    const char **names = calloc((size_t)n, sizeof(*names));
    int *nd = calloc((size_t)n, sizeof(*nd));
    const int64_t **shapes = calloc((size_t)n, sizeof(*shapes));
    const float **data = calloc((size_t)n, sizeof(*data));
    int64_t (*sh)[TDM_MAX_DIMS] = calloc((size_t)n, sizeof(*sh));
    for (int i = 0; i < n; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_at(st, i);
        int hit = drop && strcmp(t->name, drop) == 0;
        if (hit && !reshape) continue;
        names[k] = t->name;
        nd[k] = t->ndim;
        memcpy(sh[k], t->shape, sizeof(sh[k]));
        if (hit) {   /* same bytes, different shape: (a, b) → (a/2, 2b) */
            sh[k][0] /= 2;
            sh[k][1] *= 2;
        }
        shapes[k] = sh[k];
        data[k] = t->data;
        k++;
    }
    snprintf(path, sizeof(path), "%s/unet/diffusion_pytorch_model.safetensors", root);
    tdm_status s = tdm_safetensors_write_f32(path, k, names, nd, shapes, data, 0, NULL);
    free(names);
    free(nd);
    free(shapes);
    free(data);
    free(sh);
    tdm_safetensors_close(st);
    return s == TDM_OK;
}

static void remove_broken(const char *root) {
    char p[1200];
    snprintf(p, sizeof(p), "%s/unet/config.json", root);
    unlink(p);
    snprintf(p, sizeof(p), "%s/unet/diffusion_pytorch_model.safetensors", root);
    unlink(p);
    snprintf(p, sizeof(p), "%s/unet", root);
    rmdir(p);
    rmdir(root);
}

static void expect_error(const char *drop, int reshape, const char *from, const char *to,
                         tdm_status want, const char *needle1, const char *needle2) {
    char root[512];
    tdm_device_t dev;
    tdm_unet_t *u = NULL;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    int ok = make_broken(root, sizeof(root), drop, reshape, from, to);
    CHECK_MSG(ok, "could not build the broken fixture");
    if (ok) {
        tdm_status s = tdm_unet_load(&u, root, "unet", NULL, &dev);
        const char *msg = tdm_last_error();
        printf("  error as expected: %s\n", msg);
        CHECK_MSG(s == want, "status %s, want %s (%s)", tdm_status_name(s),
                  tdm_status_name(want), msg);
        CHECK(u == NULL);
        CHECK_MSG(strstr(msg, needle1) != NULL, "message lacks \"%s\": %s", needle1, msg);
        if (needle2) CHECK_MSG(strstr(msg, needle2) != NULL, "message lacks \"%s\": %s",
                               needle2, msg);
        CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left on the device", (long long)dev.cur_bytes);
    }
    tdm_unet_free(u);
    remove_broken(root);
}

TEST(unet_missing_tensor) {
    const char *n = "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    expect_error(n, 0, NULL, NULL, TDM_ERR_MODEL, n, "diffusion_pytorch_model.safetensors");
}

TEST(unet_wrong_shape) {
    const char *n = "down_blocks.0.attentions.0.transformer_blocks.1.ff.net.0.proj.weight";
    expect_error(n, 1, NULL, NULL, TDM_ERR_MODEL, n, "diffusion_pytorch_model.safetensors");
}

TEST(unet_unsupported_config) {
    expect_error(NULL, 0, "\"class_embed_type\": null", "\"class_embed_type\": \"timestep\"",
                 TDM_ERR_UNSUPPORTED, "class_embed_type", "timestep");
    expect_error(NULL, 0, "\"resnet_time_scale_shift\": \"default\"",
                 "\"resnet_time_scale_shift\": \"scale_shift\"", TDM_ERR_UNSUPPORTED,
                 "resnet_time_scale_shift", "scale_shift");
    expect_error(NULL, 0, "\"UpBlock2D\"", "\"AttnUpBlock2D\"", TDM_ERR_UNSUPPORTED,
                 "up_block_types[0]", "AttnUpBlock2D");
}

TEST(unet_forward_bad_args) {
    char root[1024];
    tdm_device_t dev;
    tdm_unet_t *u = NULL;
    float dummy[4] = {0};
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    snprintf(root, sizeof(root), "%s/sd2", FIX);
    tdm_status s = tdm_unet_load(&u, root, "unet", NULL, &dev);
    CHECK_MSG(s == TDM_OK, "%s", tdm_last_error());
    if (s != TDM_OK) return;
    CHECK(tdm_unet_forward(u, dummy, 0, 8, 8, dummy, dummy, 1, dummy) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_unet_forward(u, NULL, 1, 8, 8, dummy, dummy, 1, dummy) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_unet_forward(u, dummy, INT64_MAX / 2, 8, 8, dummy, dummy, 1, dummy) ==
          TDM_ERR_INVALID_ARG);
    tdm_unet_free(u);
    tdm_unet_free(NULL);
    CHECK(dev.cur_bytes == 0);
}

int main(void) {
    RUN(unet_sd15_fp16_variant);
    RUN(unet_placed_host);
    RUN(unet_placed_disk);
    RUN(unet_placed_balanced);
    RUN(unet_sd2_linear_proj);
    RUN(unet_misc_odd_size);
    RUN(unet_cuda_golden);
    RUN(unet_cuda_graph);
    RUN(unet_missing_tensor);
    RUN(unet_wrong_shape);
    RUN(unet_unsupported_config);
    RUN(unet_forward_bad_args);
    return test_summary();
}
