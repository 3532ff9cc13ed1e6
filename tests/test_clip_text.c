/* test_clip_text.c — CLIPTextModel forward against transformers. Golden
 * values: tools/ref/clip_text_ref.py → tests/fixtures/clip_text/<name>/
 * (text_encoder/ as save_pretrained writes it, expected.safetensors with
 * ids, last_hidden, pooled, skip1). Tolerance: normalized error <= 1e-5.
 * Also: a tensor of the wrong shape, ids outside the vocabulary, too many
 * tokens, a missing folder; the golden cases on cuda:0 in CUDA builds with a
 * GPU (host ids, outputs on the device). */
// label: golden;cuda
#include <stdint.h>

#include "backend/ops.h"
#include "core/core.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "test.h"
#include "test_placed.h"

#define TOL 1e-5
#define FIX TDM_FIXTURES "/clip_text"

static void golden_case(const char *name, int64_t want_layers) {
    char path[1024];
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_clip_text_t *m = NULL;
    tdm_safetensors_t *ex = NULL;
    float *hid = NULL, *pool = NULL, *skip = NULL;
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    tdm_status st = tdm_clip_text_load(&m, path, "text_encoder", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: load: %s", name, tdm_last_error());
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", FIX, name);
    tdm_status st2 = tdm_safetensors_open(&ex, path);
    CHECK_MSG(st2 == TDM_OK, "%s: %s", name, tdm_last_error());
    if (st != TDM_OK || st2 != TDM_OK) goto done;
    CHECK(tdm_clip_text_num_hidden_layers(m) == want_layers);

    const tdm_st_tensor_t *ids = tdm_safetensors_find(ex, "ids");
    const tdm_st_tensor_t *lh = tdm_safetensors_find(ex, "last_hidden");
    const tdm_st_tensor_t *po = tdm_safetensors_find(ex, "pooled");
    const tdm_st_tensor_t *sk = tdm_safetensors_find(ex, "skip1");
    CHECK(ids && lh && po && sk);
    if (!ids || !lh || !po || !sk) goto done;
    CHECK(ids->dtype == TDM_I32 && ids->ndim == 2);
    int64_t B = ids->shape[0], T = ids->shape[1], D = tdm_clip_text_hidden_size(m);
    CHECK(lh->nbytes == B * T * D * 4 && po->nbytes == B * D * 4 && sk->nbytes == B * T * D * 4);
    CHECK(T <= tdm_clip_text_max_positions(m));
    int32_t *idv = malloc((size_t)(B * T) * sizeof(int32_t));
    float *ref_h = malloc((size_t)(B * T * D) * 4), *ref_p = malloc((size_t)(B * D) * 4);
    float *ref_s = malloc((size_t)(B * T * D) * 4);
    memcpy(idv, ids->data, (size_t)(B * T) * 4);
    memcpy(ref_h, lh->data, (size_t)(B * T * D) * 4);
    memcpy(ref_p, po->data, (size_t)(B * D) * 4);
    memcpy(ref_s, sk->data, (size_t)(B * T * D) * 4);
    hid = calloc((size_t)(B * T * D), 4);
    pool = calloc((size_t)(B * D), 4);
    skip = calloc((size_t)(B * T * D), 4);

    int64_t before = dev.cur_bytes;
    st = tdm_clip_text_forward(m, idv, B, T, hid, pool);
    CHECK_MSG(st == TDM_OK, "%s: forward: %s", name, tdm_last_error());
    CHECK_MSG(dev.cur_bytes == before, "%s: forward leaked %lld device bytes", name,
              (long long)(dev.cur_bytes - before));
    double e = test_rel_err(hid, ref_h, (long)(B * T * D));
    CHECK_MSG(e <= TOL, "%s: last_hidden_state rel err %.3g", name, e);
    e = test_rel_err(pool, ref_p, (long)(B * D));
    CHECK_MSG(e <= TOL, "%s: pooler_output rel err %.3g", name, e);

    st = tdm_clip_text_forward_skip(m, idv, B, T, 1, skip, NULL);
    CHECK_MSG(st == TDM_OK, "%s: forward_skip: %s", name, tdm_last_error());
    e = test_rel_err(skip, ref_s, (long)(B * T * D));
    CHECK_MSG(e <= TOL, "%s: clip_skip=1 rel err %.3g", name, e);

    /* a single row gives the same values as inside the batch */
    st = tdm_clip_text_forward(m, idv + (B - 1) * T, 1, T, hid, pool);
    CHECK(st == TDM_OK);
    e = test_rel_err(hid, ref_h + (B - 1) * T * D, (long)(T * D));
    CHECK_MSG(e <= TOL, "%s: single row rel err %.3g", name, e);

    /* bad ids and sizes */
    int32_t save = idv[1];
    idv[1] = -1;
    st = tdm_clip_text_forward(m, idv, B, T, hid, NULL);
    CHECK_MSG(st == TDM_ERR_INVALID_ARG && strstr(tdm_last_error(), "position 1"), "%s: %s",
              name, tdm_last_error());
    idv[1] = 1 << 30;
    st = tdm_clip_text_forward(m, idv, B, T, hid, NULL);
    CHECK(st == TDM_ERR_INVALID_ARG);
    idv[1] = save;
    st = tdm_clip_text_forward(m, idv, 1, tdm_clip_text_max_positions(m) + 1, hid, NULL);
    CHECK(st == TDM_ERR_INVALID_ARG);
    st = tdm_clip_text_forward_skip(m, idv, B, T, want_layers, hid, NULL);
    CHECK(st == TDM_ERR_INVALID_ARG);
    free(idv); free(ref_h); free(ref_p); free(ref_s);
done:
    free(hid); free(pool); free(skip);
    tdm_safetensors_close(ex);
    tdm_clip_text_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld device bytes left after free", name,
              (long long)dev.cur_bytes);
}

TEST(test_quick_gelu_eos2_prefixed) { golden_case("quick_eos2", 2); }

/* Fixture `name` split by the planner under `budgets` (virtual devices for
 * GPUs 0 and 1, host RAM, disk): each device holds the bytes the plan gives
 * it, and hidden states, pooled output and the skip-1 hidden state equal the
 * one-device load bit for bit, twice in a row; streamed layers leave again. */
static void placed_case(const char *name, const char *budgets, int want_gpu1) {
    char path[1024], cfg[1100];
    placed_t t;
    tdm_clip_text_t *a = NULL, *b = NULL;
    tdm_safetensors_t *ex = NULL;
    float *h1 = NULL, *h2 = NULL, *p1 = NULL, *p2 = NULL;
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    snprintf(cfg, sizeof cfg, "%s/text_encoder/config.json", path);
    if (!placed_setup(&t, tdm_clip_text_plist, cfg, "sequential", budgets)) goto done;
    CHECK_MSG(t.planned[0] > 0 && (!want_gpu1 || t.planned[1] > 0) &&
              t.planned[2] + t.planned[3] > 0, "%s: the budgets should offload some layers", name);
    tdm_status st = tdm_clip_text_load(&a, path, "text_encoder", NULL, &t.one);
    if (st == TDM_OK) st = tdm_clip_text_load_placed(&b, path, "text_encoder", NULL, &t.place);
    CHECK_MSG(st == TDM_OK, "%s: load: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    /* the plan counts the position_ids buffer, which the model does not hold */
    int64_t want[3] = {t.planned[0], t.planned[1], t.planned[2]};
    for (int64_t i = 0; i < t.pl.n; i++) {
        if (!t.pl.e[i].is_buffer) continue;
        int d = tdm_place_map_lookup(&t.map, t.pl.e[i].name);
        int k = d == 0 ? 0 : d == 1 ? 1 : d == TDM_PLACE_CPU ? 2 : -1;
        if (k >= 0) want[k] -= tdm_pentry_bytes(&t.pl.e[i]);
    }
    CHECK_MSG(t.gpu0.cur_bytes == want[0] && t.gpu1.cur_bytes == want[1] &&
              t.host.cur_bytes == want[2], "%s held: GPU0 %lld, GPU1 %lld, host %lld", name,
              (long long)t.gpu0.cur_bytes, (long long)t.gpu1.cur_bytes,
              (long long)t.host.cur_bytes);
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", FIX, name);
    st = tdm_safetensors_open(&ex, path);
    CHECK_MSG(st == TDM_OK, "%s", tdm_last_error());
    const tdm_st_tensor_t *ids = st == TDM_OK ? tdm_safetensors_find(ex, "ids") : NULL;
    if (!ids) { CHECK(0); goto done; }
    int64_t B = ids->shape[0], T = ids->shape[1], D = tdm_clip_text_hidden_size(a);
    h1 = calloc((size_t)(B * T * D), 4);
    h2 = calloc((size_t)(B * T * D), 4);
    p1 = calloc((size_t)(B * D), 4);
    p2 = calloc((size_t)(B * D), 4);
    CHECK(tdm_clip_text_forward(a, ids->data, B, T, h1, p1) == TDM_OK);
    int64_t held0 = t.gpu0.cur_bytes;
    for (int rep = 0; rep < 2; rep++) {
        st = tdm_clip_text_forward(b, ids->data, B, T, h2, p2);
        CHECK_MSG(st == TDM_OK, "%s: placed forward: %s", name, tdm_last_error());
        CHECK(!memcmp(h1, h2, (size_t)(B * T * D) * 4) && !memcmp(p1, p2, (size_t)(B * D) * 4));
    }
    CHECK(tdm_clip_text_forward_skip(a, ids->data, B, T, 1, h1, NULL) == TDM_OK);
    CHECK(tdm_clip_text_forward_skip(b, ids->data, B, T, 1, h2, NULL) == TDM_OK);
    CHECK(!memcmp(h1, h2, (size_t)(B * T * D) * 4));
    CHECK_MSG(t.gpu0.cur_bytes == held0, "%s: GPU0 holds %lld bytes, %lld before", name,
              (long long)t.gpu0.cur_bytes, (long long)held0);
    CHECK(t.gpu1.cur_bytes == want[1] && t.host.cur_bytes == want[2]);
done:
    free(h1);
    free(h2);
    free(p1);
    free(p2);
    tdm_safetensors_close(ex);
    tdm_clip_text_free(a);
    tdm_clip_text_free(b);
    placed_done(&t);
}

TEST(test_placed) {
    placed_case("gelu_eos", "0=200KB,1=100KB,cpu=150KB,disk=1GB", 1);    /* layer on the host */
    placed_case("gelu_eos", "0=200KB,1=100KB,cpu=100KB,disk=1GB", 1);    /* on disk */
    placed_case("quick_eos2", "0=170KB,1=10KB,cpu=100KB,disk=1GB", 0);   /* text_model. names */
    placed_case("quick_eos2", "0=170KB,1=10KB,cpu=10KB,disk=1GB", 0);
}
TEST(test_gelu_eos) { golden_case("gelu_eos", 3); }
TEST(test_tanh_gelu_no_eos) { golden_case("tanh_noeos", 2); }

/* Golden case `name` on CUDA device `index`: weights on the GPU, ids passed
 * from the host, hidden / pooled / clip_skip=1 outputs allocated there,
 * downloaded and compared with transformers. */
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
    tdm_clip_text_t *m = NULL;
    tdm_safetensors_t *ex = NULL;
    float *hid = NULL, *pool = NULL, *dhid = NULL, *dpool = NULL;
    float *ref_h = NULL, *ref_p = NULL, *ref_s = NULL;
    int32_t *idv = NULL;
    int64_t B = 0, T = 0, D = 0;
    snprintf(path, sizeof path, "%s/%s", FIX, name);
    st = tdm_clip_text_load(&m, path, "text_encoder", NULL, &dev);
    CHECK_MSG(st == TDM_OK, "%s: load on cuda: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    snprintf(path, sizeof path, "%s/%s/expected.safetensors", FIX, name);
    st = tdm_safetensors_open(&ex, path);
    CHECK_MSG(st == TDM_OK, "%s: %s", name, tdm_last_error());
    if (st != TDM_OK) goto done;
    const tdm_st_tensor_t *ids = tdm_safetensors_find(ex, "ids");
    const tdm_st_tensor_t *lh = tdm_safetensors_find(ex, "last_hidden");
    const tdm_st_tensor_t *po = tdm_safetensors_find(ex, "pooled");
    const tdm_st_tensor_t *sk = tdm_safetensors_find(ex, "skip1");
    CHECK(ids && lh && po && sk && ids->dtype == TDM_I32 && lh->dtype == TDM_F32 &&
          po->dtype == TDM_F32 && sk->dtype == TDM_F32);
    if (!ids || !lh || !po || !sk) goto done;
    B = ids->shape[0];
    T = ids->shape[1];
    D = tdm_clip_text_hidden_size(m);
    CHECK(lh->nbytes == B * T * D * 4 && po->nbytes == B * D * 4 && sk->nbytes == B * T * D * 4);
    if (lh->nbytes != B * T * D * 4 || po->nbytes != B * D * 4 || sk->nbytes != B * T * D * 4)
        goto done;
    ref_h = malloc((size_t)lh->nbytes);   /* aligned copies of the file's floats */
    ref_p = malloc((size_t)po->nbytes);
    ref_s = malloc((size_t)sk->nbytes);
    idv = malloc((size_t)(B * T) * sizeof(int32_t));
    hid = malloc((size_t)(B * T * D) * sizeof(float));
    pool = malloc((size_t)(B * D) * sizeof(float));
    dhid = tdm_dev_alloc(&dev, B * T * D * 4, "test hidden");
    dpool = tdm_dev_alloc(&dev, B * D * 4, "test pooled");
    CHECK_MSG(ref_h && ref_p && ref_s && idv && hid && pool && dhid && dpool, "%s",
              tdm_last_error());
    if (!ref_h || !ref_p || !ref_s || !idv || !hid || !pool || !dhid || !dpool) goto done;
    memcpy(idv, ids->data, (size_t)(B * T) * sizeof(int32_t));
    memcpy(ref_h, lh->data, (size_t)lh->nbytes);
    memcpy(ref_p, po->data, (size_t)po->nbytes);
    memcpy(ref_s, sk->data, (size_t)sk->nbytes);
    int64_t before = dev.cur_bytes;

    st = tdm_clip_text_forward(m, idv, B, T, dhid, dpool);
    CHECK_MSG(st == TDM_OK, "%s: forward on cuda: %s", name, tdm_last_error());
    if (st == TDM_OK) st = tdm_dev_download(&dev, hid, dhid, B * T * D * 4, "test hidden");
    if (st == TDM_OK) st = tdm_dev_download(&dev, pool, dpool, B * D * 4, "test pooled");
    CHECK_MSG(st == TDM_OK, "%s: download: %s", name, tdm_last_error());
    if (st == TDM_OK) {
        double eh = test_rel_err(hid, ref_h, (long)(B * T * D));
        double ep = test_rel_err(pool, ref_p, (long)(B * D));
        printf("  %s on cuda:%d: last_hidden rel err %.3g, pooled rel err %.3g\n", name, index,
               eh, ep);
        CHECK_MSG(eh <= tol && ep <= tol, "%s on cuda: hidden %g pooled %g", name, eh,
                  ep);
    }
    CHECK_MSG(dev.cur_bytes == before, "%s: forward left %lld bytes on cuda", name,
              (long long)(dev.cur_bytes - before));

    st = tdm_clip_text_forward_skip(m, idv, B, T, 1, dhid, NULL);
    CHECK_MSG(st == TDM_OK, "%s: forward_skip on cuda: %s", name, tdm_last_error());
    if (st == TDM_OK) st = tdm_dev_download(&dev, hid, dhid, B * T * D * 4, "test hidden");
    if (st == TDM_OK) {
        double e = test_rel_err(hid, ref_s, (long)(B * T * D));
        printf("  %s on cuda:%d: clip_skip=1 rel err %.3g\n", name, index, e);
        CHECK_MSG(e <= tol, "%s on cuda: clip_skip=1 rel err %g", name, e);
    }
    CHECK_MSG(dev.cur_bytes == before, "%s: forward_skip left %lld bytes on cuda", name,
              (long long)(dev.cur_bytes - before));
done:
    tdm_dev_free(&dev, dhid, B * T * D * 4);
    tdm_dev_free(&dev, dpool, B * D * 4);
    tdm_safetensors_close(ex);
    tdm_clip_text_free(m);
    CHECK_MSG(dev.cur_bytes == 0, "%s: %lld bytes left on cuda", name, (long long)dev.cur_bytes);
    tdm_backend_device_close(&dev);
    free(idv); free(hid); free(pool); free(ref_h); free(ref_p); free(ref_s);
}

/* The golden cases on cuda:0 when this is a CUDA build with a GPU. */
TEST(test_cuda_golden) {
    if (tdm_backend_device_count("cuda") < 1) {
        printf("  skipped: %s\n",
               tdm_backend_find("cuda") ? "no CUDA device" : "built without CUDA");
        return;
    }
    golden_cuda(0, "quick_eos2", TDM_F32);
    golden_cuda(0, "quick_eos2", TDM_F16);
    golden_cuda(0, "quick_eos2", TDM_BF16);
    golden_cuda(0, "gelu_eos", TDM_F32);
    golden_cuda(0, "gelu_eos", TDM_F16);
    golden_cuda(0, "gelu_eos", TDM_BF16);
    golden_cuda(0, "tanh_noeos", TDM_F32);
    golden_cuda(0, "tanh_noeos", TDM_F16);
    golden_cuda(0, "tanh_noeos", TDM_BF16);
}

TEST(test_bad_shape) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_clip_text_t *m = NULL;
    tdm_status st = tdm_clip_text_load(&m, FIX "/bad_shape", "text_encoder", NULL, &dev);
    const char *msg = tdm_last_error();
    CHECK(st == TDM_ERR_MODEL && m == NULL);
    tdm_clip_text_free(m);
    CHECK_MSG(strstr(msg, "encoder.layers.1.mlp.fc1.weight") && strstr(msg, "model.safetensors"),
              "message: %s", msg);
    CHECK_MSG(dev.cur_bytes == 0, "%lld bytes left after a failed load", (long long)dev.cur_bytes);
}

TEST(test_missing_folder) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    tdm_clip_text_t *m = NULL;
    tdm_status st = tdm_clip_text_load(&m, FIX "/no_such_model", "text_encoder", NULL, &dev);
    CHECK(st != TDM_OK && m == NULL);
    tdm_clip_text_free(m);
    CHECK_MSG(strstr(tdm_last_error(), "no_such_model"), "message: %s", tdm_last_error());
    tdm_clip_text_free(NULL);
}

/* A device cap smaller than the weights makes the load fail cleanly. */
TEST(test_device_cap) {
    tdm_device_t dev;
    tdm_device_init(&dev, TDM_DEV_CPU, 0);
    dev.cap_bytes = 4096;
    tdm_clip_text_t *m = NULL;
    tdm_status st = tdm_clip_text_load(&m, FIX "/gelu_eos", "text_encoder", NULL, &dev);
    CHECK_MSG(st == TDM_ERR_NOMEM && m == NULL, "status %s: %s", tdm_status_name(st),
              tdm_last_error());
    tdm_clip_text_free(m);
    CHECK(dev.cur_bytes == 0);
}

int main(void) {
    RUN(test_quick_gelu_eos2_prefixed);
    RUN(test_gelu_eos);
    RUN(test_tanh_gelu_no_eos);
    RUN(test_placed);
    RUN(test_cuda_golden);
    RUN(test_bad_shape);
    RUN(test_missing_folder);
    RUN(test_device_cap);
    return test_summary();
}
