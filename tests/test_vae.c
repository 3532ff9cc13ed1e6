// label: golden;cuda
/* test_vae.c — AutoencoderKL against diffusers (fixtures written by
 * tools/ref/vae_ref.py): decode, encode (mean, logvar), the uint8
 * post-processing, and the load errors (missing tensor, wrong shape,
 * unsupported config) plus the deprecated attention names; the same golden
 * decode and encode on cuda:0 in CUDA builds with a GPU. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/ops.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "models/vae.h"
#include "test.h"
#include "test_placed.h"

#define FIX TDM_FIXTURES "/vae"
#define TOL 1e-5   /* measured ~1.5e-6; the project bound is 1e-4 */

/* Loads io tensor `name` of the fixture as float32 (caller frees); n = numel. */
static float *io_f32(const tdm_safetensors_t *io, const char *name, int64_t *shape, int64_t *n) {
    const tdm_st_tensor_t *t = tdm_safetensors_find(io, name);
    if (!t) { printf("  io tensor %s missing\n", name); return NULL; }
    int64_t cnt = 1;
    for (int i = 0; i < t->ndim; i++) { cnt *= t->shape[i]; if (shape) shape[i] = t->shape[i]; }
    float *p = malloc((size_t)cnt * sizeof(float));
    if (p && tdm_convert_to_f32(p, t->data, t->dtype, cnt) != TDM_OK) { free(p); p = NULL; }
    *n = cnt;
    return p;
}

/* One fixture end to end. */
static void golden(const char *name, int64_t L, int64_t scale, double shift) {
    char root[512], io_path[512];
    snprintf(root, sizeof root, FIX "/%s", name);
    snprintf(io_path, sizeof io_path, FIX "/%s/io.safetensors", name);
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_vae_t *v = NULL;
    tdm_safetensors_t *io = NULL;
    float *z = NULL, *ref = NULL, *img = NULL, *x = NULL, *rm = NULL, *rl = NULL, *m = NULL,
          *lv = NULL, *lv2 = NULL;
    uint8_t *rgb = NULL;
    tdm_status st = tdm_vae_load(&v, root, "vae", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    CHECK(tdm_safetensors_open(&io, io_path) == TDM_OK);
    if (!io) goto done;

    const tdm_vae_info_t *in = tdm_vae_info(v);
    CHECK(in->latent_channels == L && in->scale_factor == scale && in->in_channels == 3 &&
          in->out_channels == 3);
    CHECK_MSG(fabs(in->shift_factor - shift) < 1e-12, "shift %g", in->shift_factor);

    /* decode */
    int64_t zs[4], is[4], n, ni;
    z = io_f32(io, "dec_z", zs, &n);
    ref = io_f32(io, "dec_img", is, &ni);
    if (!z || !ref) { CHECK(0); goto done; }
    img = malloc((size_t)ni * sizeof(float));
    st = tdm_vae_decode(v, z, zs[0], zs[2], zs[3], img);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    if (st == TDM_OK) {
        double e = test_rel_err(img, ref, (long)ni);
        printf("  %s decode (%lld,%lld,%lld,%lld)->(%lld,%lld,%lld,%lld): rel err %.3g\n", name,
               (long long)zs[0], (long long)zs[1], (long long)zs[2], (long long)zs[3],
               (long long)is[0], (long long)is[1], (long long)is[2], (long long)is[3], e);
        CHECK_MSG(e <= TOL, "decode rel err %g", e);
        CHECK(dev.cur_bytes > 0 && dev.peak_bytes > dev.cur_bytes);   /* buffers returned */
    }

    /* uint8 post-processing: exact from the reference floats, within ±1 from ours */
    const tdm_st_tensor_t *r8 = tdm_safetensors_find(io, "dec_rgb8");
    CHECK(r8 && r8->dtype == TDM_U8 && r8->shape[0] * r8->shape[1] * r8->shape[2] * 3 == ni);
    if (r8 && st == TDM_OK) {
        const uint8_t *want = r8->data;
        rgb = malloc((size_t)ni);
        tdm_vae_to_rgb8(ref, is[0], is[2], is[3], rgb);
        int64_t exact_diff = 0;
        for (int64_t i = 0; i < ni; i++) exact_diff += rgb[i] != want[i];
        CHECK_MSG(exact_diff == 0, "%lld bytes differ from diffusers on the reference floats",
                  (long long)exact_diff);
        tdm_vae_to_rgb8(img, is[0], is[2], is[3], rgb);
        int64_t ndiff = 0, maxd = 0;
        for (int64_t i = 0; i < ni; i++) {
            int64_t d = llabs((long long)rgb[i] - (long long)want[i]);
            ndiff += d != 0;
            if (d > maxd) maxd = d;
        }
        printf("  %s rgb8: %lld of %lld bytes differ (max %lld)\n", name, (long long)ndiff,
               (long long)ni, (long long)maxd);
        CHECK_MSG(maxd <= 1, "rgb8 max diff %lld", (long long)maxd);
    }

    /* encode */
    int64_t xs[4], ms[4], nm;
    x = io_f32(io, "enc_img", xs, &n);
    rm = io_f32(io, "enc_mean", ms, &nm);
    rl = io_f32(io, "enc_logvar", NULL, &nm);
    if (!x || !rm || !rl) { CHECK(0); goto done; }
    m = malloc((size_t)nm * sizeof(float));
    lv = malloc((size_t)nm * sizeof(float));
    lv2 = malloc((size_t)nm * sizeof(float));
    st = tdm_vae_encode(v, x, xs[0], xs[2], xs[3], m, lv);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    if (st == TDM_OK) {
        double em = test_rel_err(m, rm, (long)nm), el = test_rel_err(lv, rl, (long)nm);
        printf("  %s encode (%lld,%lld,%lld,%lld)->(%lld,%lld,%lld,%lld): mean rel err %.3g, "
               "logvar rel err %.3g\n", name, (long long)xs[0], (long long)xs[1],
               (long long)xs[2], (long long)xs[3], (long long)ms[0], (long long)ms[1],
               (long long)ms[2], (long long)ms[3], em, el);
        CHECK_MSG(em <= TOL && el <= TOL, "mean %g logvar %g", em, el);
        /* NULL mean: logvar alone, same values */
        CHECK(tdm_vae_encode(v, x, xs[0], xs[2], xs[3], NULL, lv2) == TDM_OK);
        CHECK(memcmp(lv, lv2, (size_t)nm * sizeof(float)) == 0);
    }
done:
    tdm_vae_free(v);
    tdm_safetensors_close(io);
    CHECK(dev.cur_bytes == 0);
    free(z); free(ref); free(img); free(x); free(rm); free(rl); free(m); free(lv); free(lv2);
    free(rgb);
}

TEST(test_vae_sd) { golden("sd", 4, 2, 0.0); }

/* The sd fixture split by the planner over two virtual GPUs, host RAM and disk
 * (the encoder mostly on the GPUs, the decoder on the host and disk): each
 * device holds the bytes the plan gives it; decode and encode equal the
 * one-device load bit for bit, twice; streamed units leave the main device. */
TEST(test_vae_placed) {
    char root[512], io_path[512], cfg[600];
    placed_t t;
    tdm_vae_t *a = NULL, *b = NULL;
    tdm_safetensors_t *io = NULL;
    float *z = NULL, *x = NULL, *i1 = NULL, *i2 = NULL, *m1 = NULL, *m2 = NULL;
    snprintf(root, sizeof root, FIX "/sd");
    snprintf(io_path, sizeof io_path, FIX "/sd/io.safetensors");
    snprintf(cfg, sizeof cfg, "%s/vae/config.json", root);
    if (!placed_setup(&t, tdm_vae_plist, cfg, "sequential", "0=300KB,1=300KB,cpu=200KB,disk=1GB"))
        goto done;
    CHECK(t.planned[0] > 0 && t.planned[1] > 0 && t.planned[2] > 0 && t.planned[3] > 0);
    tdm_status st = tdm_vae_load(&a, root, "vae", NULL, &t.one);
    if (st == TDM_OK) st = tdm_vae_load_placed(&b, root, "vae", NULL, &t.place);
    CHECK_MSG(st == TDM_OK, "load: %s", tdm_last_error());
    if (st != TDM_OK) goto done;
    placed_check_held(&t);
    CHECK(tdm_safetensors_open(&io, io_path) == TDM_OK);
    if (!io) goto done;
    int64_t zs[4], xs[4], n, ni, nm;
    z = io_f32(io, "dec_z", zs, &n);
    x = io_f32(io, "enc_img", xs, &n);
    float *ref = io_f32(io, "dec_img", NULL, &ni), *rm = io_f32(io, "enc_mean", NULL, &nm);
    free(ref);
    free(rm);
    if (!z || !x) { CHECK(0); goto done; }
    i1 = malloc((size_t)ni * sizeof(float));
    i2 = malloc((size_t)ni * sizeof(float));
    m1 = malloc((size_t)nm * sizeof(float));
    m2 = malloc((size_t)nm * sizeof(float));
    CHECK(tdm_vae_decode(a, z, zs[0], zs[2], zs[3], i1) == TDM_OK);
    CHECK(tdm_vae_encode(a, x, xs[0], xs[2], xs[3], m1, NULL) == TDM_OK);
    int64_t held0 = t.gpu0.cur_bytes, peak0 = t.gpu0.peak_bytes;
    for (int rep = 0; rep < 2; rep++) {
        st = tdm_vae_decode(b, z, zs[0], zs[2], zs[3], i2);
        CHECK_MSG(st == TDM_OK, "placed decode: %s", tdm_last_error());
        CHECK(st == TDM_OK && !memcmp(i1, i2, (size_t)ni * sizeof(float)));
        st = tdm_vae_encode(b, x, xs[0], xs[2], xs[3], m2, NULL);
        CHECK_MSG(st == TDM_OK, "placed encode: %s", tdm_last_error());
        CHECK(st == TDM_OK && !memcmp(m1, m2, (size_t)nm * sizeof(float)));
    }
    placed_check_after(&t, held0, 0, peak0);
done:
    free(z); free(x); free(i1); free(i2); free(m1); free(m2);
    tdm_safetensors_close(io);
    tdm_vae_free(a);
    tdm_vae_free(b);
    placed_done(&t);
}
/* The decode path alone (what the decode stage loads): its parameter list
 * is the whole list's decoder.* and post_quant_conv.* entries in order; a
 * load onto one device holds only those bytes and decodes bit for bit as
 * the whole VAE; a placed load under a plan of that list (which covers no
 * encoder tensor) does too; encode is refused, naming the reason. */
TEST(test_vae_decoder_only) {
    char root[512], io_path[512], cfg[600];
    placed_t t;
    tdm_plist_t all, dec;
    tdm_vae_t *a = NULL, *b = NULL, *c = NULL;
    tdm_safetensors_t *io = NULL;
    float *z = NULL, *i1 = NULL, *i2 = NULL;
    snprintf(root, sizeof root, FIX "/sd");
    snprintf(io_path, sizeof io_path, FIX "/sd/io.safetensors");
    snprintf(cfg, sizeof cfg, "%s/vae/config.json", root);
    CHECK(tdm_vae_plist(cfg, TDM_F32, &all) == TDM_OK);
    CHECK(tdm_vae_decoder_plist(cfg, TDM_F32, &dec) == TDM_OK);
    int64_t k = 0, dec_bytes = 0;
    for (int64_t i = 0; i < all.n; i++) {
        const char *nm = all.e[i].name;
        if (strncmp(nm, "decoder.", 8) && strncmp(nm, "post_quant_conv.", 16)) continue;
        CHECK_MSG(k < dec.n && !strcmp(dec.e[k].name, nm), "decoder list entry %lld: %s, expected %s",
                  (long long)k, k < dec.n ? dec.e[k].name : "(end)", nm);
        dec_bytes += tdm_pentry_bytes(&all.e[i]);
        k++;
    }
    CHECK(k == dec.n && dec.bytes == dec_bytes && dec.bytes < all.bytes);
    tdm_plist_free(&all);
    tdm_plist_free(&dec);
    if (!placed_setup(&t, tdm_vae_decoder_plist, cfg, "sequential", "0=250KB,1=150KB,cpu=200KB,disk=1GB"))
        goto done;
    CHECK(t.planned[0] > 0 && t.planned[1] > 0 && t.planned[2] > 0 && t.planned[3] > 0);
    tdm_status st = tdm_vae_load(&a, root, "vae", NULL, &t.one);
    int64_t whole = t.one.cur_bytes;
    if (st == TDM_OK) st = tdm_vae_load_decoder(&b, root, "vae", NULL, NULL, &t.place);
    if (st == TDM_OK) st = tdm_vae_load_decoder(&c, root, "vae", NULL, &t.one, NULL);
    CHECK_MSG(st == TDM_OK, "load: %s", tdm_last_error());
    if (st != TDM_OK) goto done;
    CHECK_MSG(t.one.cur_bytes - whole == dec_bytes, "decoder-only load holds %lld bytes, expected %lld",
              (long long)(t.one.cur_bytes - whole), (long long)dec_bytes);
    placed_check_held(&t);
    CHECK(tdm_safetensors_open(&io, io_path) == TDM_OK);
    if (!io) goto done;
    int64_t zs[4], n, ni;
    z = io_f32(io, "dec_z", zs, &n);
    free(io_f32(io, "dec_img", NULL, &ni));
    if (!z) { CHECK(0); goto done; }
    i1 = malloc((size_t)ni * sizeof(float));
    i2 = malloc((size_t)ni * sizeof(float));
    CHECK(tdm_vae_decode(a, z, zs[0], zs[2], zs[3], i1) == TDM_OK);
    for (int rep = 0; rep < 2; rep++) {
        tdm_vae_t *m = rep ? c : b;
        st = tdm_vae_decode(m, z, zs[0], zs[2], zs[3], i2);
        CHECK_MSG(st == TDM_OK, "decoder-only decode: %s", tdm_last_error());
        CHECK(st == TDM_OK && !memcmp(i1, i2, (size_t)ni * sizeof(float)));
    }
    CHECK(tdm_vae_encode(c, i1, 1, 8, 8, i2, NULL) == TDM_ERR_INVALID_ARG &&
          strstr(tdm_last_error(), "decoding only"));
done:
    free(z); free(i1); free(i2);
    tdm_safetensors_close(io);
    tdm_vae_free(a);
    tdm_vae_free(b);
    tdm_vae_free(c);
    placed_done(&t);
}
TEST(test_vae_flux16) { golden("flux", 16, 4, 0.1159); }
TEST(test_vae_f32_weights) { golden("f32", 4, 2, 0.0); }

/* Uploads host floats (n) into a new buffer on dev; NULL on failure. */
static float *dev_upload_new(tdm_device_t *dev, const float *h, int64_t n, const char *what) {
    float *d = tdm_dev_alloc(dev, n * 4, what);
    if (d && tdm_dev_upload(dev, d, h, n * 4, what) != TDM_OK) {
        tdm_dev_free(dev, d, n * 4);
        d = NULL;
    }
    return d;
}

/* Fixture `name` on CUDA device `index`: weights loaded onto the GPU, the
 * inputs uploaded, decode and encode run there, the outputs downloaded and
 * compared with diffusers; activations are given back after each call. */
static void golden_cuda(int index, const char *name, tdm_dtype dt) {
    char root[512], io_path[512];
    snprintf(root, sizeof root, FIX "/%s", name);
    snprintf(io_path, sizeof io_path, FIX "/%s/io.safetensors", name);
    tdm_device_t dev;
    char spec[32];
    snprintf(spec, sizeof spec, "cuda:%d", index);
    tdm_status st = tdm_backend_device_open(&dev, spec, NULL);
    CHECK_MSG(st == TDM_OK, "%s: %s", spec, tdm_last_error());
    if (st != TDM_OK) return;
    dev.gemm_dtype = dt;
    const double tol = test_cuda_tol(dt);
    printf("  %s on cuda:%d, GEMMs in %s:\n", name, index, tdm_dtype_name(dt));
    tdm_vae_t *v = NULL;
    tdm_safetensors_t *io = NULL;
    float *z = NULL, *ref = NULL, *x = NULL, *rm = NULL, *rl = NULL, *img = NULL, *m = NULL,
          *lv = NULL;
    float *dz = NULL, *dimg = NULL, *dx = NULL, *dm = NULL, *dlv = NULL;
    int64_t zs[4], is[4], xs[4], n = 0, ni = 0, nx = 0, nm = 0;
    st = tdm_vae_load(&v, root, "vae", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: load on cuda: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    int64_t wbytes = dev.cur_bytes;
    CHECK(tdm_safetensors_open(&io, io_path) == TDM_OK);
    if (!io) goto done;

    /* decode */
    z = io_f32(io, "dec_z", zs, &n);
    ref = io_f32(io, "dec_img", is, &ni);
    if (!z || !ref) { CHECK(0); goto done; }
    img = malloc((size_t)ni * sizeof(float));
    dz = dev_upload_new(&dev, z, n, "test z");
    dimg = tdm_dev_alloc(&dev, ni * 4, "test img");
    CHECK_MSG(img && dz && dimg, "%s", tdm_last_error());
    if (!img || !dz || !dimg) goto done;
    int64_t io_bytes = dev.cur_bytes;
    st = tdm_vae_decode(v, dz, zs[0], zs[2], zs[3], dimg);
    CHECK_MSG(st == TDM_OK, "%s: decode on cuda: %s", name, tdm_last_error());
    if (st == TDM_OK) st = tdm_dev_download(&dev, img, dimg, ni * 4, "test img");
    CHECK_MSG(st == TDM_OK, "%s: download: %s", name, tdm_last_error());
    if (st == TDM_OK) {
        double e = test_rel_err(img, ref, (long)ni);
        printf("  %s decode on cuda:%d: rel err %.3g\n", name, index, e);
        CHECK_MSG(e <= tol, "%s: decode on cuda rel err %g", name, e);
    }
    CHECK_MSG(dev.cur_bytes == io_bytes, "%s: decode left %lld bytes on cuda", name,
              (long long)(dev.cur_bytes - io_bytes));

    /* encode */
    x = io_f32(io, "enc_img", xs, &nx);
    rm = io_f32(io, "enc_mean", NULL, &nm);
    rl = io_f32(io, "enc_logvar", NULL, &nm);
    if (!x || !rm || !rl) { CHECK(0); goto done; }
    m = malloc((size_t)nm * sizeof(float));
    lv = malloc((size_t)nm * sizeof(float));
    dx = dev_upload_new(&dev, x, nx, "test enc img");
    dm = tdm_dev_alloc(&dev, nm * 4, "test mean");
    dlv = tdm_dev_alloc(&dev, nm * 4, "test logvar");
    CHECK_MSG(m && lv && dx && dm && dlv, "%s", tdm_last_error());
    if (!m || !lv || !dx || !dm || !dlv) goto done;
    io_bytes = dev.cur_bytes;
    st = tdm_vae_encode(v, dx, xs[0], xs[2], xs[3], dm, dlv);
    CHECK_MSG(st == TDM_OK, "%s: encode on cuda: %s", name, tdm_last_error());
    if (st == TDM_OK) st = tdm_dev_download(&dev, m, dm, nm * 4, "test mean");
    if (st == TDM_OK) st = tdm_dev_download(&dev, lv, dlv, nm * 4, "test logvar");
    CHECK_MSG(st == TDM_OK, "%s: download: %s", name, tdm_last_error());
    if (st == TDM_OK) {
        double em = test_rel_err(m, rm, (long)nm), el = test_rel_err(lv, rl, (long)nm);
        printf("  %s encode on cuda:%d: mean rel err %.3g, logvar rel err %.3g\n", name, index,
               em, el);
        CHECK_MSG(em <= tol && el <= tol, "%s on cuda: mean %g logvar %g", name, em,
                  el);
    }
    CHECK_MSG(dev.cur_bytes == io_bytes, "%s: encode left %lld bytes on cuda", name,
              (long long)(dev.cur_bytes - io_bytes));
    CHECK(dev.cur_bytes - wbytes == (n + ni + nx + 2 * nm) * 4);
done:
    tdm_dev_free(&dev, dz, n * 4);
    tdm_dev_free(&dev, dimg, ni * 4);
    tdm_dev_free(&dev, dx, nx * 4);
    tdm_dev_free(&dev, dm, nm * 4);
    tdm_dev_free(&dev, dlv, nm * 4);
    tdm_vae_free(v);
    tdm_safetensors_close(io);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld bytes left on cuda", name, (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
    free(z); free(ref); free(x); free(rm); free(rl); free(img); free(m); free(lv);
}

/* The golden fixtures on cuda:0 when this is a CUDA build with a GPU. */
TEST(test_vae_cuda_golden) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    golden_cuda(0, "sd", TDM_F32);
    golden_cuda(0, "sd", TDM_F16);
    golden_cuda(0, "sd", TDM_BF16);
    golden_cuda(0, "flux", TDM_F32);
    golden_cuda(0, "flux", TDM_F16);
    golden_cuda(0, "flux", TDM_BF16);
    golden_cuda(0, "f32", TDM_F32);
    golden_cuda(0, "f32", TDM_F16);
    golden_cuda(0, "f32", TDM_BF16);
}

/* Post-processing: clamps, NaN, and round half to even (0.0 -> 127.5 -> 128). */
TEST(test_vae_rgb8_rounding) {
    float img[3 * 5] = {-1.0f, 1.0f, -2.0f, 3.0f, 0.0f,        /* R of pixels 0..4 */
                        0.25f, 0.0f, NAN, 0.5f, -0.5f,          /* G */
                        0, 0, 0, 0, 0};                        /* B */
    uint8_t out[15];
    tdm_vae_to_rgb8(img, 1, 1, 5, out);
    CHECK(out[0] == 0 && out[3] == 255 && out[6] == 0 && out[9] == 255 && out[12] == 128);
    CHECK(out[1] == 159);                     /* 0.625*255 = 159.375 */
    CHECK(out[10] == 191 && out[13] == 64);   /* 0.75*255 = 191.25, 0.25*255 = 63.75 */
    CHECK(out[7] == 0);                       /* NaN */
}

/* ---- load errors ------------------------------------------------------- */

static char tmpdir[256];

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fputs(text, f);
    return fclose(f) == 0;
}

/* Makes tmpdir/<case>/vae with the sd fixture's config (or `config`) and its
 * weights as float32, minus tensor `drop`, with tensor names rewritten by
 * `rename` (from, to pairs applied as substring replacement) and tensor
 * `reshape` given shape {1}. Returns the root path in root. */
static int make_case(char *root, size_t cap, const char *cs, const char *config,
                     const char *drop, const char *const *rename, int nrename,
                     const char *reshape) {
    char sub[512], path[600];
    snprintf(root, cap, "%s/%s", tmpdir, cs);
    snprintf(sub, sizeof sub, "%s/vae", root);
    mkdir(root, 0755);
    mkdir(sub, 0755);
    char *cfg = config ? NULL : test_slurp(FIX "/sd/vae/config.json");
    snprintf(path, sizeof path, "%s/config.json", sub);
    int ok = write_text(path, config ? config : cfg);
    free(cfg);
    if (!ok) return 0;

    tdm_safetensors_t *w = NULL;
    if (tdm_safetensors_open(&w, FIX "/sd/vae/diffusion_pytorch_model.safetensors") != TDM_OK)
        return 0;
    int n = tdm_safetensors_count(w), k = 0;
    char **names = calloc((size_t)n, sizeof *names);
    int *nd = calloc((size_t)n, sizeof *nd);
    const int64_t **shapes = calloc((size_t)n, sizeof *shapes);
    float **data = calloc((size_t)n, sizeof *data);
    static const int64_t one[1] = {1};
    for (int i = 0; i < n; i++) {
        const tdm_st_tensor_t *t = tdm_safetensors_at(w, i);
        if (drop && !strcmp(t->name, drop)) continue;
        char nm[256];
        snprintf(nm, sizeof nm, "%s", t->name);
        for (int r = 0; r < nrename; r++) {
            char *p = strstr(nm, rename[2 * r]);
            if (p) {
                char tail[256];
                snprintf(tail, sizeof tail, "%s", p + strlen(rename[2 * r]));
                snprintf(p, sizeof nm - (size_t)(p - nm), "%s%s", rename[2 * r + 1], tail);
            }
        }
        int64_t cnt = 1;
        for (int d = 0; d < t->ndim; d++) cnt *= t->shape[d];
        names[k] = strdup(nm);
        data[k] = malloc((size_t)cnt * sizeof(float));
        tdm_convert_to_f32(data[k], t->data, t->dtype, cnt);
        if (reshape && !strcmp(t->name, reshape)) { nd[k] = 1; shapes[k] = one; }
        else { nd[k] = t->ndim; shapes[k] = t->shape; }
        k++;
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", sub);
    ok = tdm_safetensors_write_f32(path, k, (const char *const *)names, nd, shapes,
                                   (const float *const *)data, 0, NULL) == TDM_OK;
    for (int i = 0; i < k; i++) { free(names[i]); free(data[i]); }
    free(names); free(nd); free(shapes); free(data);
    tdm_safetensors_close(w);
    return ok;
}

static tdm_status try_load(const char *root, tdm_device_t *dev) {
    tdm_vae_t *v = NULL;
    tdm_status st = tdm_vae_load(&v, root, "vae", NULL, dev);
    tdm_vae_free(v);
    return st;
}

TEST(test_vae_missing_tensor) {
    char root[300];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    const char *victim = "decoder.up_blocks.1.resnets.1.conv2.weight";
    CHECK(make_case(root, sizeof root, "missing", NULL, victim, NULL, 0, NULL));
    tdm_status st = try_load(root, &dev);
    CHECK_MSG(st == TDM_ERR_MODEL && strstr(tdm_last_error(), victim), "%s: %s",
              tdm_status_name(st), tdm_last_error());
    CHECK(dev.cur_bytes == 0);
    printf("  %s\n", tdm_last_error());
}

TEST(test_vae_wrong_shape) {
    char root[300];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    const char *victim = "encoder.mid_block.attentions.0.to_v.weight";
    CHECK(make_case(root, sizeof root, "shape", NULL, NULL, NULL, 0, victim));
    tdm_status st = try_load(root, &dev);
    CHECK_MSG(st == TDM_ERR_MODEL && strstr(tdm_last_error(), victim), "%s: %s",
              tdm_status_name(st), tdm_last_error());
    CHECK(dev.cur_bytes == 0);
}

/* Weights saved with the pre-0.14 attention names decode the same. */
TEST(test_vae_deprecated_attention_names) {
    char root[300];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    static const char *const ren[] = {"to_q", "query", "to_k", "key", "to_v", "value",
                                      "to_out.0", "proj_attn"};
    CHECK(make_case(root, sizeof root, "deprecated", NULL, NULL, ren, 4, NULL));
    tdm_vae_t *v = NULL, *v0 = NULL;
    tdm_status st = tdm_vae_load(&v, root, "vae", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    CHECK(tdm_vae_load(&v0, FIX "/sd", "vae", NULL, &dev) == TDM_OK);
    if (v && v0) {
        float z[4 * 2 * 2], a[3 * 4 * 4], b[3 * 4 * 4];
        for (int i = 0; i < 16; i++) z[i] = 0.1f * (float)(i % 7) - 0.3f;
        CHECK(tdm_vae_decode(v, z, 1, 2, 2, a) == TDM_OK);
        CHECK(tdm_vae_decode(v0, z, 1, 2, 2, b) == TDM_OK);
        CHECK(memcmp(a, b, sizeof a) == 0);
    }
    tdm_vae_free(v);
    tdm_vae_free(v0);
    CHECK(dev.cur_bytes == 0);
}

static void expect_unsupported(const char *cs, const char *config, const char *needle) {
    char root[300];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    CHECK(make_case(root, sizeof root, cs, config, NULL, NULL, 0, NULL));
    tdm_status st = try_load(root, &dev);
    CHECK_MSG(st == TDM_ERR_UNSUPPORTED && strstr(tdm_last_error(), needle), "%s: %s: %s", cs,
              tdm_status_name(st), tdm_last_error());
    CHECK(dev.cur_bytes == 0);
}

TEST(test_vae_unsupported_config) {
    expect_unsupported("key", "{\"block_out_channels\": [32, 32], \"norm_num_groups\": 32,"
                       "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],"
                       "\"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"],"
                       "\"norm_type\": \"spatial\"}", "norm_type");
    expect_unsupported("block", "{\"block_out_channels\": [32, 32], \"norm_num_groups\": 32,"
                       "\"down_block_types\": [\"DownEncoderBlock2D\", \"AttnDownEncoderBlock2D\"],"
                       "\"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"]}",
                       "down_block_types[1]");
    expect_unsupported("act", "{\"block_out_channels\": [32, 32], \"norm_num_groups\": 32,"
                       "\"down_block_types\": [\"DownEncoderBlock2D\", \"DownEncoderBlock2D\"],"
                       "\"up_block_types\": [\"UpDecoderBlock2D\", \"UpDecoderBlock2D\"],"
                       "\"act_fn\": \"gelu\"}", "act_fn");
    expect_unsupported("class", "{\"_class_name\": \"AsymmetricAutoencoderKL\"}", "_class_name");
}

/* Bad call arguments are errors, not crashes. */
TEST(test_vae_bad_args) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_vae_t *v = NULL;
    CHECK(tdm_vae_load(&v, FIX "/flux", "vae", NULL, &dev) == TDM_OK);
    if (!v) return;
    float buf[16 * 3 * 3];
    CHECK(tdm_vae_encode(v, buf, 1, 3, 3, buf, NULL) == TDM_ERR_INVALID_ARG);   /* < scale 4 */
    CHECK(tdm_vae_decode(v, buf, 0, 1, 1, buf) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_vae_decode(v, buf, 1, INT64_MAX / 2, 1, buf) == TDM_ERR_INVALID_ARG);
    tdm_vae_free(v);
    CHECK(dev.cur_bytes == 0);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tdm_test_vae_XXXXXX");
    if (!mkdtemp(tmpdir)) { printf("cannot make a temporary folder\n"); return EXIT_FAILURE; }
    RUN(test_vae_sd);
    RUN(test_vae_placed);
    RUN(test_vae_decoder_only);
    RUN(test_vae_flux16);
    RUN(test_vae_f32_weights);
    RUN(test_vae_cuda_golden);
    RUN(test_vae_rgb8_rounding);
    RUN(test_vae_missing_tensor);
    RUN(test_vae_wrong_shape);
    RUN(test_vae_deprecated_attention_names);
    RUN(test_vae_unsupported_config);
    RUN(test_vae_bad_args);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    return test_summary();
}
