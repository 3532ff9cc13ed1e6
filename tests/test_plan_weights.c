/* test_plan_weights.c — tdm_plan (`tandem plan`) on folders that hold
 * safetensors weights besides the configs: the headers are checked against
 * the config (a tensor of another shape, or a missing one, is one error
 * naming component, tensor and file) and give the sizes (the files' dtypes,
 * or --dtype when given). Expected bytes never come from the planner: they
 * are summed here from the headers of the tiny golden pipelines
 * (tests/fixtures/pipelines, flux_pipelines) and from the PyTorch parameter
 * dumps (tests/fixtures/ptree), or from the files this test writes. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/wait.h>

#include "io/safetensors.h"
#include "tandem.h"
#include "test.h"

static char g_tmp[256];

/* ---- plans ------------------------------------------------------------ */

/* Bytes tdm_plan puts on GPU 0 (the only device, large enough for
 * everything, so each component lands there whole); -1 on error (the
 * message is kept in tdm_last_error()). */
static int64_t plan_bytes(const char *model, const char *only, const char *dtype,
                          const char *variant) {
    tdm_plan_params_t p;
    tdm_plan_params_init(&p);
    p.model = model;
    p.only = only;
    p.dtype = dtype;
    p.variant = variant;
    p.max_memory = "0=100GiB";
    char *json = NULL;
    if (tdm_plan(&p, &json) != TDM_OK) return -1;
    cJSON *j = cJSON_Parse(json);
    const cJSON *b = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "bytes"), "0");
    int64_t r = cJSON_IsNumber(b) ? (int64_t)b->valuedouble : -2;
    CHECK_MSG(r >= 0, "no bytes for GPU 0 in %s", json);
    cJSON_Delete(j);
    free(json);
    return r;
}

/* tdm_plan fails with a one-line message holding every needle
 * (NULL-terminated). */
static void expect_plan_error(const char *model, const char *only, const char *dtype, ...) {
    int64_t b = plan_bytes(model, only, dtype, NULL);
    CHECK_MSG(b == -1, "plan of %s succeeded (%lld bytes)", model, (long long)b);
    const char *msg = tdm_last_error();
    CHECK_MSG(strchr(msg, '\n') == NULL, "more than one line: %s", msg);
    va_list ap;
    va_start(ap, dtype);
    for (const char *n = va_arg(ap, const char *); n; n = va_arg(ap, const char *))
        CHECK_MSG(strstr(msg, n) != NULL, "wanted \"%s\" in: %s", n, msg);
    va_end(ap);
}

/* ---- the PyTorch parameter dumps --------------------------------------- */

/* "params" of tests/fixtures/ptree/<fix>.json: [name, shape, dtype,
 * is_buffer] in named_parameters() + named_buffers() order (caller frees
 * the returned root). */
static cJSON *load_dump(const char *fix, const cJSON **params) {
    char path[1024];
    snprintf(path, sizeof path, "%s/ptree/%s.json", TDM_FIXTURES, fix);
    char *text = test_slurp(path);
    CHECK_MSG(text != NULL, "cannot read %s", path);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    *params = cJSON_GetObjectItem(j, "params");
    CHECK_MSG(cJSON_GetArraySize(*params) > 0, "%s: no params", path);
    return j;
}

static int64_t numel_of(const cJSON *p) {
    int64_t n = 1;
    for (const cJSON *d = cJSON_GetArrayItem(p, 1)->child; d; d = d->next) n *= (int64_t)d->valuedouble;
    return n;
}

static int is_buffer(const cJSON *p) { return cJSON_GetArrayItem(p, 3)->valueint != 0; }

/* Element size of a dump dtype ("float32", "int64", ...). */
static int64_t dump_dtype_size(const cJSON *p) {
    const char *t = cJSON_GetArrayItem(p, 2)->valuestring;
    return !strcmp(t, "int64") || !strcmp(t, "float64") ? 8
           : !strcmp(t, "float32") || !strcmp(t, "int32") ? 4
           : !strcmp(t, "float16") || !strcmp(t, "bfloat16") ? 2 : 1;
}

/* ---- the golden pipelines' own files ------------------------------------ */

/* The bytes of component `sub` of fixture folder `dir` as its files hold it
 * (elt 0) or with `elt`-byte floating tensors: each parameter of
 * the PyTorch dump `fix` is looked up in the files (as is, or under
 * "text_model." as transformers 4.x saves CLIP); a buffer absent from the
 * files (non-persistent) counts in its own dtype. Of T5's two embedding
 * names, an absent one counts as the one present. Also returns, in *nf32,
 * how many tensors the files hold as F32. */
/* 1 if parameter `name` of component `sub` is planned: all of them, except
 * for the VAE, planned as its decode stage runs it (diffusers'
 * AutoencoderKL.decode: post_quant_conv, then the decoder). */
static int planned(const char *sub, const char *name) {
    if (strcmp(sub, "vae") != 0) return 1;
    return !strncmp(name, "decoder.", 8) || !strncmp(name, "post_quant_conv.", 16);
}

static int64_t expected_bytes(const char *dir, const char *sub, const char *file, const char *fix,
                              int64_t elt, int *nf32) {
    char path[1024], alt[512];
    snprintf(path, sizeof path, "%s/%s/%s/%s", TDM_FIXTURES, dir, sub, file);
    tdm_st_set_t *set = NULL;
    CHECK_MSG(tdm_st_set_open(&set, path) == TDM_OK, "%s", tdm_last_error());
    if (!set) return -1;
    const cJSON *params;
    cJSON *j = load_dump(fix, &params);
    int64_t sum = 0;
    *nf32 = 0;
    for (const cJSON *p = params ? params->child : NULL; p; p = p->next) {
        const char *name = cJSON_GetArrayItem(p, 0)->valuestring;
        if (!planned(sub, name)) continue;
        snprintf(alt, sizeof alt, "text_model.%s", name);
        const tdm_st_tensor_t *t = tdm_st_set_find(set, name);
        if (!t) t = tdm_st_set_find(set, alt);
        if (!t && !strcmp(name, "encoder.embed_tokens.weight")) t = tdm_st_set_find(set, "shared.weight");
        if (!t && !strcmp(name, "shared.weight")) t = tdm_st_set_find(set, "encoder.embed_tokens.weight");
        if (!t) {
            CHECK_MSG(is_buffer(p), "%s: parameter %s not in %s", fix, name, path);
            sum += numel_of(p) * dump_dtype_size(p);
        } else if (is_buffer(p)) {
            sum += numel_of(p) * dump_dtype_size(p);   /* integer buffers keep their dtype */
        } else {
            sum += elt ? numel_of(p) * elt : t->nbytes;
            *nf32 += t->dtype == TDM_F32;
        }
    }
    cJSON_Delete(j);
    tdm_st_set_close(set);
    return sum;
}

/* Each component of a golden pipeline plans to exactly the bytes its files
 * hold (no --dtype), and to numel x 2 per floating tensor with --dtype fp16
 * or bf16. The fixtures are float32, so the two differ: a plan that
 * ignored the files (the fp16 default) fails the first check. */
static void check_golden(const char *dir, const char *sub, const char *file, const char *fix) {
    char model[1024];
    snprintf(model, sizeof model, "%s/%s", TDM_FIXTURES, dir);
    int nf32 = 0;
    int64_t want_half = expected_bytes(dir, sub, file, fix, 2, &nf32);
    int64_t want_file = expected_bytes(dir, sub, file, fix, 0, &nf32);
    CHECK_MSG(nf32 > 0 && want_file > want_half, "%s/%s: fixture is not float32", dir, sub);
    int64_t got = plan_bytes(model, sub, NULL, NULL);
    CHECK_MSG(got == want_file, "%s/%s no --dtype: plan %lld bytes, files %lld (%s)", dir, sub,
              (long long)got, (long long)want_file, got < 0 ? tdm_last_error() : "");
    got = plan_bytes(model, sub, "fp16", NULL);
    CHECK_MSG(got == want_half, "%s/%s --dtype fp16: plan %lld bytes, expected %lld (%s)", dir, sub,
              (long long)got, (long long)want_half, got < 0 ? tdm_last_error() : "");
    got = plan_bytes(model, sub, "bf16", NULL);
    CHECK_MSG(got == want_half, "%s/%s --dtype bf16: plan %lld bytes, expected %lld", dir, sub,
              (long long)got, (long long)want_half);
}

TEST(golden_sd15) {
    check_golden("pipelines/sd15-tiny", "unet", "diffusion_pytorch_model.safetensors",
                 "tiny_pipelines_sd15_tiny_unet");
    check_golden("pipelines/sd15-tiny", "vae", "diffusion_pytorch_model.safetensors",
                 "tiny_pipelines_sd15_tiny_vae");
    /* "text_model." names, position_ids not saved */
    check_golden("pipelines/sd15-tiny", "text_encoder", "model.safetensors",
                 "tiny_pipelines_sd15_tiny_text_encoder");
    /* the whole pipeline: the sum of its components */
    int n;
    int64_t all = expected_bytes("pipelines/sd15-tiny", "unet", "diffusion_pytorch_model.safetensors",
                                 "tiny_pipelines_sd15_tiny_unet", 0, &n) +
                  expected_bytes("pipelines/sd15-tiny", "vae", "diffusion_pytorch_model.safetensors",
                                 "tiny_pipelines_sd15_tiny_vae", 0, &n) +
                  expected_bytes("pipelines/sd15-tiny", "text_encoder", "model.safetensors",
                                 "tiny_pipelines_sd15_tiny_text_encoder", 0, &n);
    int64_t got = plan_bytes(TDM_FIXTURES "/pipelines/sd15-tiny", NULL, NULL, NULL);
    CHECK_MSG(got == all, "pipeline: %lld bytes, files %lld", (long long)got, (long long)all);
}

/* Sharded transformer and T5 (3 and 2 shards behind an index.json). T5's
 * list holds both shared.weight and encoder.embed_tokens.weight (see
 * tdm_t5_plist: an upper bound); the file holds one, which sizes both. */
TEST(golden_flux_sharded) {
    check_golden("flux_pipelines/flux-dev-tiny", "transformer",
                 "diffusion_pytorch_model.safetensors.index.json",
                 "tiny_flux_pipelines_flux_dev_tiny_transformer");
    check_golden("flux_pipelines/flux-dev-tiny", "text_encoder_2", "model.safetensors.index.json",
                 "tiny_flux_pipelines_flux_dev_tiny_text_encoder_2");
}

/* A T5 file holding its embedding as encoder.embed_tokens.weight only (the
 * t5/relu_embed fixture, float16) plans: that tensor sizes both names. */
TEST(golden_t5_embed_tokens_only) {
    char dir[512], cmd[2048], path[1024];
    snprintf(dir, sizeof dir, "%s/t5", g_tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && ln -sfn '%s/t5/relu_embed/text_encoder_2' '%s/text_encoder_2'",
             dir, TDM_FIXTURES, dir);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    test_spill(path, "{\"_class_name\": \"FluxPipeline\", \"text_encoder_2\": [\"transformers\", "
                     "\"T5EncoderModel\"]}");
    int n;
    const char *fix = "tiny_t5_relu_embed_text_encoder_2";
    int64_t want = expected_bytes("t5/relu_embed", "text_encoder_2", "model.safetensors", fix, 0, &n);
    int64_t want32 = expected_bytes("t5/relu_embed", "text_encoder_2", "model.safetensors", fix, 4, &n);
    int64_t got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == want, "no --dtype: %lld, files %lld (%s)", (long long)got, (long long)want,
              got < 0 ? tdm_last_error() : "");
    got = plan_bytes(dir, NULL, "fp32", NULL);
    CHECK_MSG(got == want32 && want32 == 2 * want, "--dtype fp32: %lld, expected %lld",
              (long long)got, (long long)want32);
}

/* ---- folders written here ------------------------------------------------ */

typedef struct {
    const char *drop;     /* parameter left out of the file, or NULL */
    const char *bad;      /* parameter written with its first dimension + 1, or NULL */
    const char *dtype;    /* "F32", "F16", "BF16", or NULL: the three in turn */
    const char *prefix;   /* prepended to every name ("text_model."), or "" */
    int legacy_attn;      /* VAE attention under diffusers' deprecated names */
    int buffers;          /* write the buffers too (else: non-persistent, left out) */
} wopts_t;

static int64_t st_size(const char *dt) { return !strcmp(dt, "F32") ? 4 : 2; }

/* The file name of dump name `name` under o. */
static void file_name(char *buf, size_t cap, const char *name, const wopts_t *o) {
    static const char *const legacy[][2] = {
        {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
    snprintf(buf, cap, "%s%s", o->prefix, name);
    for (int i = 0; o->legacy_attn && i < 4; i++) {
        char *at = strstr(buf, legacy[i][0]);
        if (!at) continue;
        char tail[512];
        snprintf(tail, sizeof tail, "%s", at + strlen(legacy[i][0]));
        snprintf(at, cap - (size_t)(at - buf), "%s%s", legacy[i][1], tail);
    }
}

/* Writes a safetensors file at `path` (header JSON + zero data) with the
 * dump's tensors under o; with `shard` >= 0 only every other tensor
 * (index % 2 == shard), each also entered into weight_map `wm` as `fname`.
 * Adds to *bytes the tensors' bytes as written and to *half numel x 2 (a
 * buffer left out counts in its own dtype in both, once: shard <= 0). */
static void write_st(const char *path, const cJSON *params, const wopts_t *o, int shard,
                     cJSON *wm, const char *fname, int64_t *bytes, int64_t *half) {
    cJSON *h = cJSON_CreateObject();
    int64_t off = 0;
    int i = 0;
    char nm[512];
    for (const cJSON *p = params->child; p; p = p->next, i++) {
        const char *name = cJSON_GetArrayItem(p, 0)->valuestring;
        int64_t n = numel_of(p);
        if ((o->drop && !strcmp(name, o->drop)) || (is_buffer(p) && !o->buffers)) {
            if (is_buffer(p) && shard <= 0) {
                *bytes += n * dump_dtype_size(p);
                *half += n * dump_dtype_size(p);
            }
            continue;
        }
        if (shard >= 0 && i % 2 != shard) continue;
        static const char *const turn[] = {"F32", "F16", "BF16"};
        const char *dt = is_buffer(p) ? "I64" : o->dtype ? o->dtype : turn[i % 3];
        int64_t es = is_buffer(p) ? 8 : st_size(dt);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", dt);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        int64_t numel = 1;
        int first = 1;
        for (const cJSON *d = cJSON_GetArrayItem(p, 1)->child; d; d = d->next) {
            int64_t v = (int64_t)d->valuedouble;
            if (first && o->bad && !strcmp(name, o->bad)) v++;
            first = 0;
            numel *= v;
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)v));
        }
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + numel * es)));
        off += numel * es;
        file_name(nm, sizeof nm, name, o);
        cJSON_AddItemToObject(h, nm, e);
        if (wm) cJSON_AddStringToObject(wm, nm, fname);
        *bytes += numel * es;
        *half += is_buffer(p) ? numel * es : numel * 2;
    }
    char *text = cJSON_PrintUnformatted(h);
    uint64_t hl = strlen(text);
    uint8_t len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (uint8_t)(hl >> (8 * k));
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot write %s", path);
    if (f) {
        fwrite(len8, 1, 8, f);
        fwrite(text, 1, hl, f);
        for (int64_t k = 0; k < off; k++) fputc(0, f);
        fclose(f);
    }
    cJSON_free(text);
    cJSON_Delete(h);
}

/* g_tmp/name: model_index.json of a Stable Diffusion pipeline with one
 * component `sub` of class `cls`, and sub/config.json from the sd15-tiny
 * golden pipeline. Returns the folder in buf. */
static const char *make_folder(char *buf, size_t cap, const char *name, const char *sub,
                               const char *cls) {
    char path[1024], cmd[2048];
    snprintf(buf, cap, "%s/%s", g_tmp, name);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s/%s' && cp '%s/pipelines/sd15-tiny/%s/config.json' '%s/%s/'",
             buf, buf, sub, TDM_FIXTURES, sub, buf, sub);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/model_index.json", buf);
    char mi[512];
    snprintf(mi, sizeof mi, "{\"_class_name\": \"StableDiffusionPipeline\", \"%s\": [\"x\", \"%s\"]}",
             sub, cls);
    test_spill(path, mi);
    return buf;
}

/* A CLIP text encoder whose tensors are F32, F16 and BF16 in turn
 * (position_ids not saved): no --dtype sizes each in its own dtype,
 * --dtype bf16 / fp32 all floating ones in that. The same folder before the
 * weights are written plans as the config alone (fp16 for SD). */
TEST(mixed_dtypes) {
    char dir[512], path[1024];
    const cJSON *params;
    cJSON *dump = load_dump("tiny_pipelines_sd15_tiny_text_encoder", &params);
    make_folder(dir, sizeof dir, "mixed", "text_encoder", "CLIPTextModel");
    int64_t cfg_half = 0, cfg_f32 = 0;
    for (const cJSON *p = params->child; p; p = p->next) {
        cfg_half += numel_of(p) * (is_buffer(p) ? dump_dtype_size(p) : 2);
        cfg_f32 += numel_of(p) * (is_buffer(p) ? dump_dtype_size(p) : 4);
    }
    int64_t got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == cfg_half, "configs only: %lld, expected %lld", (long long)got, (long long)cfg_half);

    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    wopts_t o = {NULL, NULL, NULL, "", 0, 0};
    int64_t bytes = 0, half = 0;
    write_st(path, params, &o, -1, NULL, NULL, &bytes, &half);
    CHECK_MSG(half == cfg_half && bytes != half && bytes != cfg_f32, "%lld %lld %lld",
              (long long)bytes, (long long)half, (long long)cfg_f32);
    got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == bytes, "no --dtype: %lld, files %lld (%s)", (long long)got, (long long)bytes,
              got < 0 ? tdm_last_error() : "");
    got = plan_bytes(dir, NULL, "bf16", NULL);
    CHECK_MSG(got == half, "--dtype bf16: %lld, expected %lld", (long long)got, (long long)half);
    got = plan_bytes(dir, NULL, "fp32", NULL);
    CHECK_MSG(got == cfg_f32, "--dtype fp32: %lld, expected %lld", (long long)got, (long long)cfg_f32);

    /* a saved buffer is checked too, and counts in its own dtype */
    o.buffers = 1;
    bytes = half = 0;
    write_st(path, params, &o, -1, NULL, NULL, &bytes, &half);
    got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == bytes, "with position_ids: %lld, files %lld", (long long)got, (long long)bytes);
    cJSON_Delete(dump);
}

/* --variant picks NAME.safetensors before the plain file, as the loaders
 * do; without it the plain file is read. */
TEST(variant) {
    char dir[512], path[1024];
    const cJSON *params;
    cJSON *dump = load_dump("tiny_pipelines_sd15_tiny_text_encoder", &params);
    make_folder(dir, sizeof dir, "variant", "text_encoder", "CLIPTextModel");
    wopts_t o = {NULL, NULL, "F32", "text_model.", 0, 0};
    int64_t f32 = 0, f16 = 0, h = 0;
    snprintf(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    write_st(path, params, &o, -1, NULL, NULL, &f32, &h);
    o.dtype = "F16";
    snprintf(path, sizeof path, "%s/text_encoder/model.fp16.safetensors", dir);
    write_st(path, params, &o, -1, NULL, NULL, &f16, &h);
    CHECK(f32 > f16);
    int64_t got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == f32, "plain: %lld, expected %lld", (long long)got, (long long)f32);
    got = plan_bytes(dir, NULL, NULL, "fp16");
    CHECK_MSG(got == f16, "--variant fp16: %lld, expected %lld", (long long)got, (long long)f16);
    got = plan_bytes(dir, NULL, NULL, "nosuch");   /* falls back to the plain file */
    CHECK_MSG(got == f32, "--variant nosuch: %lld, expected %lld", (long long)got, (long long)f32);
    /* the flag of `tandem plan` */
    char cmd[2048], outf[1024];
    snprintf(outf, sizeof outf, "%s/plan.json", g_tmp);
    snprintf(cmd, sizeof cmd, "\"%s\" plan --model '%s' --max-memory 0=100GiB --variant fp16 > '%s'",
             TDM_TANDEM_BIN, dir, outf);
    CHECK(system(cmd) == 0);
    char *text = test_slurp(outf);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    const cJSON *b = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "bytes"), "0");
    CHECK_MSG(cJSON_IsNumber(b) && (int64_t)b->valuedouble == f16, "tandem plan --variant fp16: %s",
              text ? text : "(no output)");
    cJSON_Delete(j);
    free(text);
    cJSON_Delete(dump);
}

/* A VAE in two shards behind an index.json, its attention under the
 * deprecated names diffusers still converts (query/key/value/proj_attn). */
TEST(sharded_legacy_vae) {
    char dir[512], path[1024];
    const cJSON *params;
    cJSON *dump = load_dump("tiny_pipelines_sd15_tiny_vae", &params);
    make_folder(dir, sizeof dir, "vae", "vae", "AutoencoderKL");
    wopts_t o = {NULL, NULL, NULL, "", 1, 0};
    int64_t bytes = 0, half = 0;
    cJSON *idx = cJSON_CreateObject();
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int s = 0; s < 2; s++) {
        char fn[128];
        snprintf(fn, sizeof fn, "diffusion_pytorch_model-0000%d-of-00002.safetensors", s + 1);
        snprintf(path, sizeof path, "%s/vae/%s", dir, fn);
        write_st(path, params, &o, s, wm, fn, &bytes, &half);
    }
    CHECK(cJSON_GetObjectItem(wm, "encoder.mid_block.attentions.0.query.weight") != NULL);
    char *text = cJSON_PrintUnformatted(idx);
    snprintf(path, sizeof path, "%s/vae/diffusion_pytorch_model.safetensors.index.json", dir);
    test_spill(path, text);
    cJSON_free(text);
    cJSON_Delete(idx);
    /* the decode path's share of the files (the VAE plans as decode runs it) */
    bytes = half = 0;
    tdm_st_set_t *set = NULL;
    CHECK_MSG(tdm_st_set_open(&set, path) == TDM_OK, "%s", tdm_last_error());
    for (const cJSON *p = params->child; set && p; p = p->next) {
        const char *name = cJSON_GetArrayItem(p, 0)->valuestring;
        const tdm_st_tensor_t *t = tdm_st_set_find(set, name);
        char legacy[512];
        snprintf(legacy, sizeof legacy, "%s", name);   /* written under the deprecated names */
        static const char *const nw[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
        static const char *const old[] = {".query.", ".key.", ".value.", ".proj_attn."};
        for (int k = 0; !t && k < 4; k++) {
            const char *at = strstr(name, nw[k]);
            if (!at) continue;
            snprintf(legacy, sizeof legacy, "%.*s%s%s", (int)(at - name), name, old[k], at + strlen(nw[k]));
            t = tdm_st_set_find(set, legacy);
        }
        CHECK_MSG(t != NULL, "%s not in %s", name, path);
        if (!t || !planned("vae", name)) continue;
        bytes += t->nbytes;
        half += numel_of(p) * 2;
    }
    tdm_st_set_close(set);
    int64_t got = plan_bytes(dir, NULL, NULL, NULL);
    CHECK_MSG(got == bytes, "no --dtype: %lld, files %lld (%s)", (long long)got, (long long)bytes,
              got < 0 ? tdm_last_error() : "");
    got = plan_bytes(dir, NULL, "fp16", NULL);
    CHECK_MSG(got == half, "--dtype fp16: %lld, expected %lld", (long long)got, (long long)half);
    cJSON_Delete(dump);
}

/* A tensor of another shape than the config says, or missing: one error
 * naming the component, the tensor, both shapes (or "missing") and the
 * file; with or without --dtype. Through the binary: a nonzero exit and
 * one "tandem: error:" line. */
TEST(bad_weights) {
    char dir[512], want[256], got[256], file[1024];
    const cJSON *params;
    cJSON *dump = load_dump("tiny_pipelines_sd15_tiny_text_encoder", &params);
    make_folder(dir, sizeof dir, "bad", "text_encoder", "CLIPTextModel");
    snprintf(file, sizeof file, "%s/text_encoder/model.safetensors", dir);
    const char *bad = "encoder.layers.1.mlp.fc1.weight";
    const cJSON *bp = NULL;
    for (const cJSON *p = params->child; p; p = p->next)
        if (!strcmp(cJSON_GetArrayItem(p, 0)->valuestring, bad)) bp = p;
    CHECK(bp != NULL);
    if (!bp) { cJSON_Delete(dump); return; }
    int64_t d0 = (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(bp, 1), 0)->valuedouble;
    int64_t d1 = (int64_t)cJSON_GetArrayItem(cJSON_GetArrayItem(bp, 1), 1)->valuedouble;
    snprintf(want, sizeof want, "config says [%lld, %lld]", (long long)d0, (long long)d1);
    snprintf(got, sizeof got, "has [%lld, %lld]", (long long)d0 + 1, (long long)d1);

    wopts_t o = {NULL, bad, "F16", "", 0, 0};
    int64_t b = 0, h = 0;
    write_st(file, params, &o, -1, NULL, NULL, &b, &h);
    expect_plan_error(dir, NULL, NULL, "text_encoder", bad, want, got, file, NULL);
    expect_plan_error(dir, NULL, "fp16", "text_encoder", bad, want, got, NULL);
    /* the same with the "text_model." names of transformers 4.x */
    o.prefix = "text_model.";
    write_st(file, params, &o, -1, NULL, NULL, &b, &h);
    expect_plan_error(dir, NULL, NULL, "text_encoder", bad, want, got, NULL);

    o.prefix = "";
    o.bad = NULL;
    o.drop = "final_layer_norm.weight";
    write_st(file, params, &o, -1, NULL, NULL, &b, &h);
    expect_plan_error(dir, NULL, NULL, "text_encoder", "final_layer_norm.weight", "missing", file,
                      NULL);
    /* a saved buffer of the wrong shape is refused as well */
    o.drop = NULL;
    o.bad = "embeddings.position_ids";
    o.buffers = 1;
    write_st(file, params, &o, -1, NULL, NULL, &b, &h);
    expect_plan_error(dir, NULL, NULL, "embeddings.position_ids", "config says [1, 77]",
                      "has [2, 77]", NULL);

    /* a file that is not safetensors: the component and the file are named */
    test_spill(file, "not a safetensors file");
    expect_plan_error(dir, NULL, NULL, "plan: text_encoder: ", file, NULL);
    write_st(file, params, &o, -1, NULL, NULL, &b, &h);

    /* through the binary */
    char cmd[4096], errf[1024];
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_tmp);
    snprintf(cmd, sizeof cmd, "\"%s\" plan --model '%s' --max-memory 0=1GiB > /dev/null 2> '%s'",
             TDM_TANDEM_BIN, dir, errf);
    int rc = system(cmd);
    char *err = test_slurp(errf);
    CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) != 0, "exit status %d", rc);
    const char *head = "tandem: error: plan: text_encoder: tensor embeddings.position_ids: ";
    CHECK_MSG(err && !strncmp(err, head, strlen(head)), "stderr: %s", err ? err : "(none)");
    int lines = 0;
    for (const char *p = err; p && *p; p++) lines += *p == '\n';
    CHECK_MSG(lines == 1, "%d lines: %s", lines, err ? err : "");
    free(err);
    cJSON_Delete(dump);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tdm_plan_weights_XXXXXX");
    if (!mkdtemp(g_tmp)) {
        printf("cannot make a temp folder\n");
        return EXIT_FAILURE;
    }
    RUN(golden_sd15);
    RUN(golden_flux_sharded);
    RUN(golden_t5_embed_tokens_only);
    RUN(mixed_dtypes);
    RUN(variant);
    RUN(sharded_legacy_vae);
    RUN(bad_weights);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", g_tmp);
    return test_summary();
}
