/* test_t5.c — T5EncoderModel (FLUX text_encoder_2) forward against
 * transformers. Golden values: tools/ref/t5_ref.py → tests/fixtures/t5/<name>/
 * (text_encoder_2/ as save_pretrained writes it — sharded bf16, single-file
 * fp16 — and expected.safetensors with ids_t7, hidden_t7, ids_t64,
 * hidden_t64) and tests/fixtures/t5/buckets.safetensors (transformers'
 * relative position buckets). Tolerance: normalized error <= 1e-5 (CPU).
 * Also: a tensor of the wrong shape, a missing relative_attention_bias, bad
 * configs, ids outside the vocabulary, a missing folder, a device cap.
 * The golden cases also run on cuda:0 in CUDA builds with a GPU (weights and
 * hidden on the device, ids from the host; normalized error <= 1e-4), and
 * print a skip line elsewhere. */
// label: golden;cuda
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/ops.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "models/t5.h"
#include "test.h"
#include "test_placed.h"

#define TOL 1e-5
#define FIX TDM_FIXTURES "/t5"

/* Runs the model on expected.safetensors' ids_t<T> and compares with hidden_t<T>. */
static void golden_T(const char *name, tdm_t5_t *m, tdm_device_t *dev,
                     const tdm_safetensors_t *ex, int Tn) {
    char key[32];
    snprintf(key, sizeof key, "ids_t%d", Tn);
    const tdm_st_tensor_t *ids = tdm_safetensors_find(ex, key);
    snprintf(key, sizeof key, "hidden_t%d", Tn);
    const tdm_st_tensor_t *ref = tdm_safetensors_find(ex, key);
    CHECK_MSG(ids && ref, "%s: T=%d tensors missing", name, Tn);
    if (!ids || !ref) return;
    CHECK(ids->dtype == TDM_I32 && ids->ndim == 2 && ids->shape[1] == Tn);
    int64_t B = ids->shape[0], T = ids->shape[1], D = tdm_t5_d_model(m);
    CHECK(ref->dtype == TDM_F32 && ref->nbytes == B * T * D * 4);
    if (ref->nbytes != B * T * D * 4) return;
    int32_t *idv = malloc((size_t)(B * T) * sizeof(int32_t));
    float *want = malloc((size_t)(B * T * D) * 4), *got = calloc((size_t)(B * T * D), 4);
    memcpy(idv, ids->data, (size_t)(B * T) * 4);
    memcpy(want, ref->data, (size_t)(B * T * D) * 4);

    int64_t before = dev->cur_bytes;
    tdm_status st = tdm_t5_forward(m, idv, B, T, got);
    CHECK_MSG(st == TDM_OK, "%s: forward: %s", name, tdm_last_error());
    CHECK_MSG(dev->cur_bytes == before, "%s: forward leaked %lld device bytes", name,
              (long long)(dev->cur_bytes - before));
    double e = test_rel_err(got, want, (long)(B * T * D));
    printf("  %s T=%lld: last_hidden_state rel err %.3g\n", name, (long long)T, e);
    CHECK_MSG(e <= TOL, "%s: T=%lld last_hidden_state rel err %.3g", name, (long long)T, e);

    /* each row alone gives the values it has inside the batch (no mask) */
    for (int64_t b = 0; b < B; b++) {
        st = tdm_t5_forward(m, idv + b * T, 1, T, got);
        CHECK(st == TDM_OK);
        e = test_rel_err(got, want + b * T * D, (long)(T * D));
        CHECK_MSG(e <= TOL, "%s: T=%lld row %lld alone rel err %.3g", name, (long long)T,
                  (long long)b, e);
    }

    /* ids outside the vocabulary name row and position */
    int32_t save = idv[T + 3];
    idv[T + 3] = -1;
    st = tdm_t5_forward(m, idv, B, T, got);
    CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), "batch 1 position 3"),
              "%s: %s", name, tdm_last_error());
    idv[T + 3] = (int32_t)tdm_t5_vocab_size(m);
    st = tdm_t5_forward(m, idv, B, T, got);
    CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), "batch 1 position 3"),
              "%s: %s", name, tdm_last_error());
    idv[T + 3] = save;
    CHECK(tdm_t5_forward(m, idv, 0, T, got) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_t5_forward(m, idv, B, 0, got) == TDM_ERR_INVALID_ARG);
    CHECK(tdm_t5_forward(m, NULL, B, T, got) == TDM_ERR_INVALID_ARG);
    CHECK(dev->cur_bytes == before);
    free(idv);
    free(want);
    free(got);
}

static void golden_case(const char *name, int64_t want_layers, int64_t want_d) {
    char path[1024];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_t5_t *m = NULL;
    tdm_safetensors_t *ex = NULL;
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    tdm_status st = tdm_t5_load(&m, path, "text_encoder_2", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: load: %s", name, tdm_last_error());
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", FIX, name);
    tdm_status st2 = tdm_safetensors_open(&ex, path);
    CHECK_MSG(st2 == TDM_OK, "%s: %s", name, tdm_last_error());
    if (st == TDM_OK && st2 == TDM_OK) {
        CHECK(tdm_t5_num_layers(m) == want_layers);
        CHECK(tdm_t5_d_model(m) == want_d);
        CHECK(tdm_t5_vocab_size(m) == 2000);
        golden_T(name, m, &dev, ex, 7);
        golden_T(name, m, &dev, ex, 64);
    }
    tdm_safetensors_close(ex);
    tdm_t5_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld device bytes left after free", name,
              (long long)dev.cur_bytes);
}

/* The gg_sharded encoder split by the planner over two virtual devices
 * standing for GPUs 0 and 1, host RAM or disk (budgets from `tandem plan`:
 * both GPUs; GPU 0 + host; GPU 0 + disk): every device within its budget,
 * the streamed copies gone after each forward, and the output bit-identical
 * to the one-device load. */
static void placed_case(const char *budgets, int want_host, int want_disk) {
    char root[1024], cfg[1100];
    placed_t t;
    tdm_t5_t *a = NULL, *b = NULL;
    tdm_safetensors_t *ex = NULL;
    float *oa = NULL, *ob = NULL;
    snprintf(root, sizeof root, "%s/gg_sharded", FIX);
    snprintf(cfg, sizeof cfg, "%s/text_encoder_2/config.json", root);
    if (!placed_setup(&t, tdm_t5_plist, cfg, "sequential", budgets)) goto done;
    CHECK_MSG((t.planned[2] > 0) == want_host && (t.planned[3] > 0) == want_disk &&
              t.planned[0] > 0, "%s: not the placement this case is about", budgets);
    tdm_status st;
    CHECK((st = tdm_t5_load(&a, root, "text_encoder_2", NULL, &t.one)) == TDM_OK);
    if (st == TDM_OK) st = tdm_t5_load_placed(&b, root, "text_encoder_2", NULL, &t.place);
    CHECK_MSG(st == TDM_OK, "placed load: %s", tdm_last_error());
    if (st != TDM_OK) goto done;
    /* what is held: within each budget, and all of it except what stays on disk */
    for (int i = 0; i < t.mm.n; i++) {
        int d = t.mm.dev[i];
        int64_t held = d == 0 ? t.gpu0.cur_bytes : d == 1 ? t.gpu1.cur_bytes
                     : d == TDM_PLACE_CPU ? t.host.cur_bytes : 0;
        CHECK_MSG(held <= t.mm.bytes[i], "%s: device %d holds %lld bytes", budgets, d,
                  (long long)held);
    }
    int64_t held = t.gpu0.cur_bytes + t.gpu1.cur_bytes + t.host.cur_bytes;
    CHECK(want_disk ? held < t.one.cur_bytes : held == t.one.cur_bytes);
    st = tdm_safetensors_open(&ex, TDM_FIXTURES "/t5/gg_sharded/expected.safetensors");
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    const tdm_st_tensor_t *ids = st == TDM_OK ? tdm_safetensors_find(ex, "ids_t64") : NULL;
    CHECK(ids != NULL);
    if (!ids) goto done;
    int64_t B = ids->shape[0], T = ids->shape[1], n = B * T * tdm_t5_d_model(a);
    int32_t *idv = malloc((size_t)(B * T) * sizeof *idv);
    memcpy(idv, ids->data, (size_t)(B * T) * sizeof *idv);
    oa = malloc((size_t)n * sizeof *oa);
    ob = malloc((size_t)n * sizeof *ob);
    CHECK(tdm_t5_forward(a, idv, B, T, oa) == TDM_OK);
    int64_t g0 = t.gpu0.cur_bytes;
    for (int rep = 0; rep < 2; rep++) {
        st = tdm_t5_forward(b, idv, B, T, ob);
        CHECK_MSG(st == TDM_OK, "placed forward: %s", tdm_last_error());
        CHECK(st == TDM_OK && !memcmp(oa, ob, (size_t)n * sizeof *oa));
    }
    CHECK(t.gpu0.cur_bytes == g0);   /* streamed copies dropped */
    free(idv);
done:
    free(oa);
    free(ob);
    tdm_safetensors_close(ex);
    tdm_t5_free(a);
    tdm_t5_free(b);
    placed_done(&t);
}

TEST(test_placed_two_gpus) { placed_case("0=550KB,1=300KB,cpu=100KB,disk=1GB", 0, 0); }
TEST(test_placed_host) { placed_case("0=520KB,1=50KB,cpu=350KB,disk=1GB", 1, 0); }
TEST(test_placed_disk) { placed_case("0=520KB,1=50KB,cpu=30KB,disk=1GB", 0, 1); }

/* gated-gelu, 32 buckets / 128, bf16 in 2 shards + index, FLUX config keys */
TEST(test_gated_gelu_sharded_bf16) { golden_case("gg_sharded", 2, 32); }
/* gated-gelu, H*d_kv 64 != d_model 48, 8 buckets / 20 (far buckets at T 64), fp16 */
TEST(test_gated_gelu_inner_ne_dmodel_fp16) { golden_case("gg_fp16", 3, 48); }
/* relu (not gated, DenseReluDense.wi), only encoder.embed_tokens.weight stored */
TEST(test_relu_embed_tokens_only) { golden_case("relu_embed", 2, 16); }

/* Golden case `name` on CUDA device `index`: weights on the GPU, ids passed
 * from the host, hidden allocated there, downloaded and compared with
 * transformers for T = 7 and 64 (whole batch and each row alone). */
static void golden_cuda(int index, const char *name, tdm_dtype dt) {
    char path[1024];
    tdm_device_t dev;
    char spec[32];
    snprintf(spec, sizeof spec, "cuda:%d", index);
    tdm_status st = tdm_backend_device_open(&dev, spec, NULL);
    CHECK_MSG(st == TDM_OK, "%s: %s", spec, tdm_last_error());
    if (st != TDM_OK) return;
    dev.gemm_dtype = dt;
    const double tol = test_cuda_tol(dt);
    printf("  %s on cuda:%d, GEMMs in %s:\n", name, index, tdm_dtype_name(dt));
    tdm_t5_t *m = NULL;
    tdm_safetensors_t *ex = NULL;
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    st = tdm_t5_load(&m, path, "text_encoder_2", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: load on cuda: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", FIX, name);
    st = tdm_safetensors_open(&ex, path);
    CHECK_MSG(st == TDM_OK, "%s: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    static const int Ts[] = {7, 64};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        int Tn = Ts[ti];
        char key[32];
        snprintf(key, sizeof key, "ids_t%d", Tn);
        const tdm_st_tensor_t *ids = tdm_safetensors_find(ex, key);
        snprintf(key, sizeof key, "hidden_t%d", Tn);
        const tdm_st_tensor_t *ref = tdm_safetensors_find(ex, key);
        CHECK_MSG(ids && ref, "%s: T=%d tensors missing", name, Tn);
        if (!ids || !ref) continue;
        int64_t B = ids->shape[0], T = ids->shape[1], D = tdm_t5_d_model(m), n = B * T * D;
        CHECK(ids->dtype == TDM_I32 && ref->dtype == TDM_F32 && ref->nbytes == n * 4);
        if (ref->nbytes != n * 4) continue;
        int32_t *idv = malloc((size_t)(B * T) * sizeof(int32_t));
        float *want = malloc((size_t)n * 4), *got = calloc((size_t)n, 4);
        float *dhid = tdm_dev_alloc(&dev, n * 4, "test hidden");
        CHECK_MSG(idv && want && got && dhid, "%s: %s", name, tdm_last_error());
        if (idv && want && got && dhid) {
            memcpy(idv, ids->data, (size_t)(B * T) * 4);
            memcpy(want, ref->data, (size_t)n * 4);
            int64_t before = dev.cur_bytes;
            st = tdm_t5_forward(m, idv, B, T, dhid);
            CHECK_MSG(st == TDM_OK, "%s: forward on cuda: %s", name, tdm_last_error());
            if (st == TDM_OK) st = tdm_dev_download(&dev, got, dhid, n * 4, "test hidden");
            CHECK_MSG(st == TDM_OK, "%s: download: %s", name, tdm_last_error());
            if (st == TDM_OK) {
                double e = test_rel_err(got, want, (long)n);
                printf("  %s T=%lld on cuda:%d: last_hidden_state rel err %.3g\n", name,
                       (long long)T, index, e);
                CHECK_MSG(e <= tol, "%s: T=%lld on cuda rel err %.3g", name, (long long)T,
                          e);
            }
            /* each row alone gives the values it has inside the batch */
            for (int64_t b = 0; b < B; b++) {
                st = tdm_t5_forward(m, idv + b * T, 1, T, dhid);
                if (st == TDM_OK) st = tdm_dev_download(&dev, got, dhid, T * D * 4, "test row");
                CHECK_MSG(st == TDM_OK, "%s: row %lld on cuda: %s", name, (long long)b,
                          tdm_last_error());
                if (st != TDM_OK) break;
                double e = test_rel_err(got, want + b * T * D, (long)(T * D));
                CHECK_MSG(e <= tol, "%s: T=%lld row %lld alone on cuda rel err %.3g", name,
                          (long long)T, (long long)b, e);
            }
            CHECK_MSG(dev.cur_bytes == before, "%s: forward left %lld bytes on cuda", name,
                      (long long)(dev.cur_bytes - before));
        }
        tdm_dev_free(&dev, dhid, n * 4);
        free(idv);
        free(want);
        free(got);
    }
done:
    tdm_safetensors_close(ex);
    tdm_t5_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld bytes left on cuda", name, (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
}

/* The golden cases on cuda:0 when this is a CUDA build with a GPU. */
TEST(test_cuda_golden) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    golden_cuda(0, "gg_sharded", TDM_F32);
    golden_cuda(0, "gg_sharded", TDM_F16);
    golden_cuda(0, "gg_sharded", TDM_BF16);
    golden_cuda(0, "gg_fp16", TDM_F32);
    golden_cuda(0, "gg_fp16", TDM_F16);
    golden_cuda(0, "gg_fp16", TDM_BF16);
    golden_cuda(0, "relu_embed", TDM_F32);
    golden_cuda(0, "relu_embed", TDM_F16);
    golden_cuda(0, "relu_embed", TDM_BF16);
}

/* tdm_t5_relative_bucket equals transformers' _relative_position_bucket. */
TEST(test_relative_buckets) {
    tdm_safetensors_t *ex = NULL;
    tdm_status st = tdm_safetensors_open(&ex, FIX "/buckets.safetensors");
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    if (st != TDM_OK) return;
    const tdm_st_tensor_t *cfg = tdm_safetensors_find(ex, "cfg");
    CHECK(cfg && cfg->dtype == TDM_I32 && cfg->ndim == 2 && cfg->shape[1] == 3);
    if (!cfg) goto done;
    int32_t c[3];
    for (int64_t i = 0; i < cfg->shape[0]; i++) {
        memcpy(c, (const char *)cfg->data + i * 12, 12);
        char key[32];
        snprintf(key, sizeof key, "bucket_%lld", (long long)i);
        const tdm_st_tensor_t *tb = tdm_safetensors_find(ex, key);
        CHECK(tb && tb->dtype == TDM_I32 && tb->shape[0] == 2 * (int64_t)c[2] + 1);
        if (!tb) continue;
        int64_t bad = 0;
        for (int64_t r = -c[2]; r <= c[2]; r++) {
            int32_t want;
            memcpy(&want, (const char *)tb->data + (r + c[2]) * 4, 4);
            int64_t got = tdm_t5_relative_bucket(r, c[0], c[1]);
            if (got != want && bad++ < 3)
                printf("  buckets %d/%d: rel %lld: got %lld, transformers %d\n", c[0], c[1],
                       (long long)r, (long long)got, want);
        }
        CHECK_MSG(bad == 0, "num_buckets %d max_distance %d: %lld mismatches", c[0], c[1],
                  (long long)bad);
    }
done:
    tdm_safetensors_close(ex);
}

static void load_error(const char *name, tdm_status want, const char *s1, const char *s2) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_t5_t *m = NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    tdm_status st = tdm_t5_load(&m, path, "text_encoder_2", NULL, &dev);
    const char *msg = tdm_last_error();
    CHECK_MSG(st == want && m == NULL, "%s: status %s: %s", name, tdm_status_name(st), msg);
    CHECK_MSG(strstr(msg, s1) && (!s2 || strstr(msg, s2)), "%s: message: %s", name, msg);
    tdm_t5_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld bytes left after a failed load", name,
              (long long)dev.cur_bytes);
}

TEST(test_bad_shape) {
    load_error("bad_shape", TDM_ERR_MODEL, "encoder.block.1.layer.1.DenseReluDense.wi_1.weight",
               "model.safetensors");
}

TEST(test_missing_relative_attention_bias) {
    load_error("no_rel_bias", TDM_ERR_MODEL,
               "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", NULL);
}

TEST(test_missing_folder) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_t5_t *m = NULL;
    tdm_status st = tdm_t5_load(&m, FIX "/no_such_model", "text_encoder_2", NULL, &dev);
    CHECK(st != TDM_OK && m == NULL);
    CHECK_MSG(strstr(tdm_last_error(), "no_such_model"), "message: %s", tdm_last_error());
    tdm_t5_free(m);
    tdm_t5_free(NULL);
    CHECK(tdm_t5_load(&m, NULL, "text_encoder_2", NULL, &dev) == TDM_ERR_INVALID_ARG);
}

/* Configs rejected before any weight is read: written to a temporary folder. */
TEST(test_bad_config) {
    static const struct { const char *json; tdm_status want; const char *needle; } cases[] = {
        {"{\"feed_forward_proj\": \"gated-foo\"}", TDM_ERR_UNSUPPORTED, "\"foo\""},
        {"{\"feed_forward_proj\": \"gelu-gated\"}", TDM_ERR_UNSUPPORTED, "feed_forward_proj"},
        {"{\"feed_forward_proj\": \"gated-gelu-x\"}", TDM_ERR_UNSUPPORTED, "feed_forward_proj"},
        {"{\"feed_forward_proj\": \"gated-gelu\", \"dense_act_fn\": \"mish\"}",
         TDM_ERR_UNSUPPORTED, "dense_act_fn"},
        {"{\"relative_attention_num_buckets\": 2}", TDM_ERR_MODEL,
         "relative_attention_num_buckets"},
        {"{\"relative_attention_num_buckets\": 32, \"relative_attention_max_distance\": 8}",
         TDM_ERR_MODEL, "relative_attention_max_distance"},
        {"{\"num_heads\": 0}", TDM_ERR_MODEL, "num_heads"},
        {"{\"layer_norm_epsilon\": -1}", TDM_ERR_MODEL, "layer_norm_epsilon"},
        {"{\"d_model\": \"big\"}", TDM_ERR_FORMAT, "d_model"},
    };
    char dir[] = "/tmp/tdm_t5_XXXXXX", sub[64], cfg[96];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sub, sizeof sub, "%s/text_encoder_2", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", sub);
    CHECK(mkdir(sub, 0700) == 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_spill(cfg, cases[i].json);
        tdm_device_t dev;
        tdm_device_init(&dev, TDM_DEV_CPU, 0);
        tdm_t5_t *m = NULL;
        tdm_status st = tdm_t5_load(&m, dir, "text_encoder_2", NULL, &dev);
        CHECK_MSG(st == cases[i].want && m == NULL && strstr(tdm_last_error(), cases[i].needle),
                  "%s: status %s: %s", cases[i].json, tdm_status_name(st), tdm_last_error());
        tdm_t5_free(m);
    }
    /* a valid config with no weights: the error names the folder */
    FILE *f = fopen(cfg, "w");
    if (f) {
        fputs("{\"feed_forward_proj\": \"gated-gelu\"}", f);
        fclose(f);
    }
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_t5_t *m = NULL;
    tdm_status st = tdm_t5_load(&m, dir, "text_encoder_2", NULL, &dev);
    CHECK_MSG(st != TDM_OK && strstr(tdm_last_error(), "text_encoder_2"), "%s",
              tdm_last_error());
    tdm_t5_free(m);
    unlink(cfg);
    rmdir(sub);
    rmdir(dir);
}

/* A device cap smaller than the weights makes the load fail cleanly; one
 * that holds the weights but not the activations fails the forward. */
TEST(test_device_cap) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    dev.cap_bytes = 4096;
    tdm_t5_t *m = NULL;
    tdm_status st = tdm_t5_load(&m, FIX "/gg_fp16", "text_encoder_2", NULL, &dev);
    CHECK_MSG(st == TDM_ERR_NOMEM && m == NULL, "status %s: %s", tdm_status_name(st),
              tdm_last_error());
    tdm_t5_free(m);
    CHECK(dev.cur_bytes == 0);
    dev.cap_bytes = 0;
    st = tdm_t5_load(&m, FIX "/gg_fp16", "text_encoder_2", NULL, &dev);
    CHECK(st == TDM_OK);
    if (st != TDM_OK) return;
    dev.cap_bytes = dev.cur_bytes + 1024;
    int32_t ids[64] = {0};
    float *out = calloc(64 * 48, sizeof(float));
    st = tdm_t5_forward(m, ids, 1, 64, out);
    CHECK_MSG(st == TDM_ERR_NOMEM, "status %s", tdm_status_name(st));
    free(out);
    tdm_t5_free(m);
    CHECK(dev.cur_bytes == 0);
}

int main(void) {
    RUN(test_placed_two_gpus);
    RUN(test_placed_host);
    RUN(test_placed_disk);
    RUN(test_gated_gelu_sharded_bf16);
    RUN(test_gated_gelu_inner_ne_dmodel_fp16);
    RUN(test_relu_embed_tokens_only);
    RUN(test_cuda_golden);
    RUN(test_relative_buckets);
    RUN(test_bad_shape);
    RUN(test_missing_relative_attention_bias);
    RUN(test_missing_folder);
    RUN(test_bad_config);
    RUN(test_device_cap);
    return test_summary();
}
