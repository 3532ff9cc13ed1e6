/* test_place.c — the placement planner (src/place/place.h): size and
 * --max-memory parsing; the planner against accelerate's own
 * get_balanced_memory + infer_auto_device_map on the fixtures of
 * tools/ref/place_ref.py (synthetic trees and FLUX.1-dev, T5-XXL, SD1.5 UNet,
 * SD VAE, CLIP-L parameter lists); tandem's fixes on hand-worked cases. */
#include "test.h"

#include <cjson/cJSON.h>

#include "place/place.h"

/* ---- helpers ----------------------------------------------------------- */

static cJSON *load_json(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TDM_FIXTURES, rel);
    char *s = test_slurp(path);
    if (!s) { printf("  cannot read %s\n", path); return NULL; }
    cJSON *j = cJSON_Parse(s);
    free(s);
    return j;
}

/* A parameter list from the tests/fixtures/ptree format (floating tensors as bf16). */
static int plist_from_json(const cJSON *j, tdm_plist_t *l) {
    tdm_plist_init(l, TDM_BF16);
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "params")) {
        const char *dt = cJSON_GetArrayItem(p, 2)->valuestring;
        tdm_dtype own = !strcmp(dt, "int64") ? TDM_I64 : !strcmp(dt, "int32") ? TDM_I32
                      : !strcmp(dt, "bool") ? TDM_BOOL : TDM_F32;
        int64_t shape[TDM_PTREE_MAX_DIMS];
        const cJSON *sh = cJSON_GetArrayItem(p, 1);
        int nd = cJSON_GetArraySize(sh);
        for (int d = 0; d < nd; d++) shape[d] = (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble;
        if (tdm_plist_add(l, cJSON_GetArrayItem(p, 3)->valueint, own, nd, shape, "%s",
                          cJSON_GetArrayItem(p, 0)->valuestring) != TDM_OK) return 0;
    }
    /* classes from the fixture; a synthetic tree without them gets the path with
     * its numbers as '#' (blocks.0 and blocks.1 are one class) */
    const cJSON *ncls = cJSON_GetObjectItem(j, "nosplit_class");
    int ni = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "nosplit")) {
        char cls[512];
        const cJSON *c = ncls ? cJSON_GetArrayItem(ncls, ni) : NULL;
        if (c) {
            snprintf(cls, sizeof cls, "%s", c->valuestring);
        } else {
            size_t o = 0;
            for (const char *q = p->valuestring; *q && o + 1 < sizeof cls; q++) {
                if (*q >= '0' && *q <= '9') {
                    if (o == 0 || cls[o - 1] != '#') cls[o++] = '#';
                } else {
                    cls[o++] = *q;
                }
            }
            cls[o] = 0;
        }
        ni++;
        if (tdm_plist_nosplit(l, cls, "%s", p->valuestring) != TDM_OK) return 0;
    }
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "tied")) {
        char first[512];
        snprintf(first, sizeof first, "%s", p->valuestring);
        char *eq = strchr(first, '=');
        if (!eq) return 0;
        *eq = 0;
        if (tdm_plist_tie(l, first, eq + 1) != TDM_OK) return 0;
    }
    return 1;
}

static int dev_of_json(const cJSON *v) {
    if (cJSON_IsNumber(v)) return v->valueint;
    return !strcmp(v->valuestring, "cpu") ? TDM_PLACE_CPU : TDM_PLACE_DISK;
}

static int dev_of_key(const char *k) {
    return !strcmp(k, "cpu") ? TDM_PLACE_CPU : !strcmp(k, "disk") ? TDM_PLACE_DISK : atoi(k);
}

/* Map m equals the JSON object `want` (same keys, same devices). */
static int map_equal(const tdm_place_map_t *m, const cJSON *want, const char *what) {
    int ok = cJSON_GetArraySize(want) == (int)m->n;
    for (int64_t i = 0; ok && i < m->n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(want, m->e[i].name);
        ok = v && dev_of_json(v) == m->e[i].dev;
    }
    if (!ok) {
        char *w = cJSON_PrintUnformatted(want);
        printf("  %s: planner gives ", what);
        tdm_place_map_json(m, NULL, stdout);
        printf("\n  %s: expected       %s\n", what, w);
        cJSON_free(w);
    }
    return ok;
}


/* Runs every case of one fixture tree in both modes; returns cases checked. */
static int run_cases(const char *tree, const tdm_plist_t *pl, const cJSON *classes, const cJSON *cases,
                     int *nbug) {
    int64_t nc = cJSON_GetArraySize(classes);
    const char **cls = calloc((size_t)nc + 1, sizeof *cls);
    for (int64_t i = 0; i < nc; i++) cls[i] = cJSON_GetArrayItem(classes, (int)i)->valuestring;
    CHECK_MSG(nc == pl->nnosplit, "%s: %lld classes for %lld no-split paths", tree, (long long)nc,
              (long long)pl->nnosplit);
    int checked = 0, ci = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        tdm_max_memory_t mm = {0};
        const cJSON *kv;
        char desc[512];
        int o = snprintf(desc, sizeof desc, "%s case %d %s {", tree, ci++,
                         cJSON_GetObjectItem(c, "strategy")->valuestring);
        cJSON_ArrayForEach(kv, cJSON_GetObjectItem(c, "max_memory")) {
            const char *k = cJSON_GetArrayItem(kv, 0)->valuestring;
            int64_t b = (int64_t)cJSON_GetArrayItem(kv, 1)->valuedouble;
            tdm_max_memory_set(&mm, dev_of_key(k), b);
            o += snprintf(desc + o, sizeof desc - (size_t)o, "%s:%lld ", k, (long long)b);
        }
        snprintf(desc + o, sizeof desc - (size_t)o, "}");
        tdm_place_strategy s;
        CHECK(tdm_place_strategy_parse(cJSON_GetObjectItem(c, "strategy")->valuestring, &s) == TDM_OK);
        if (cJSON_GetArraySize(cJSON_GetObjectItem(c, "bugs")) > 0) (*nbug)++;
        for (int mode = 0; mode < 2; mode++) {
            const cJSON *want = cJSON_GetObjectItem(c, mode ? "fixed" : "accelerate");
            const cJSON *err = cJSON_GetObjectItem(want, "error");
            tdm_place_map_t m;
            tdm_status st = tdm_place_plan_ex(pl, cls, &mm, s, mode ? 0 : TDM_PLACE_ACCELERATE_COMPAT, &m);
            char what[640];
            snprintf(what, sizeof what, "%s [%s]", desc, mode ? "tandem" : "accelerate");
            if (cJSON_IsString(err)) {
                CHECK_MSG(st != TDM_OK, "%s: planned, expected error %s", what, err->valuestring);
                tdm_place_map_free(&m);
                continue;
            }
            CHECK_MSG(st == TDM_OK, "%s: %s", what, tdm_last_error());
            if (st != TDM_OK) continue;
            CHECK_MSG(map_equal(&m, cJSON_GetObjectItem(want, "device_map"), what), "%s", what);
            /* the balanced budgets */
            cJSON_ArrayForEach(kv, cJSON_GetObjectItem(want, "balanced")) {
                int dev = dev_of_key(cJSON_GetArrayItem(kv, 0)->valuestring);
                int64_t b = (int64_t)cJSON_GetArrayItem(kv, 1)->valuedouble;
                for (int d = 0; d < m.ndev; d++)
                    if (m.dev[d] == dev && dev != TDM_PLACE_DISK)
                        CHECK_MSG(m.budget[d] == b, "%s: device %d budget %lld, expected %lld", what, dev,
                                  (long long)m.budget[d], (long long)b);
            }
            int64_t sum = 0;
            for (int d = 0; d < m.ndev; d++) sum += m.used[d];
            CHECK_MSG(sum == m.total, "%s: %lld of %lld bytes placed", what, (long long)sum,
                      (long long)m.total);
            tdm_place_map_free(&m);
        }
        checked++;
    }
    free(cls);
    return checked;
}

/* ---- parsing ----------------------------------------------------------- */

TEST(size_units) {
    static const struct { const char *s; int64_t v; } ok[] = {
        {"16GB", 16000000000LL}, {"16GiB", 17179869184LL}, {"16gB", 16000000000LL},
        {"16GIB", 17179869184LL}, {"1.5GB", 1500000000LL}, {"16 GB", 16000000000LL},
        {" 2 MiB ", 2097152}, {"1024", 1024}, {"0", 0}, {"0GB", 0}, {"0.5KiB", 512},
        {"1.1MB", 1100000}, {"1TB", 1000000000000LL}, {"2TiB", 2199023255552LL}, {"5KB", 5000},
        {"1e3MB", 1000000000LL}, {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        int64_t v = -1;
        tdm_status st = tdm_size_parse(ok[i].s, &v);
        CHECK_MSG(st == TDM_OK && v == ok[i].v, "'%s' -> %lld (%s), expected %lld", ok[i].s, (long long)v,
                  st == TDM_OK ? "ok" : tdm_last_error(), (long long)ok[i].v);
    }
}

TEST(size_rejects) {
    /* lower-case 'b' (accelerate reads "16gb"/"16Gb" as bits, "16Gib" as bytes) */
    static const char *bits[] = {"16gb", "16Gb", "16Mb", "16kb", "1tb", "16Gib", "16gib"};
    for (size_t i = 0; i < sizeof bits / sizeof *bits; i++) {
        int64_t v;
        CHECK_MSG(tdm_size_parse(bits[i], &v) != TDM_OK && strstr(tdm_last_error(), "bits") &&
                      strstr(tdm_last_error(), "for bytes"),
                  "'%s' accepted or unclear message: %s", bits[i], tdm_last_error());
    }
    static const char *bad[] = {"", "  ", "16G", "16", "GB", "-1GB", "-5", "1.5", "1e9", "infGB", "nanGB",
                                "0x10GB", "1..5GB", "16 G B", "1e400GB", "99999999999TB",
                                "9223372036854775808", "16PB", "+1GB"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t v;
        if (!strcmp(bad[i], "16")) {   /* plain integers are bytes: accepted */
            CHECK(tdm_size_parse(bad[i], &v) == TDM_OK && v == 16);
            continue;
        }
        CHECK_MSG(tdm_size_parse(bad[i], &v) != TDM_OK, "'%s' accepted as %lld", bad[i], (long long)v);
    }
    int64_t v;
    CHECK(tdm_size_parse("16G", &v) != TDM_OK && strstr(tdm_last_error(), "unknown unit 'G'"));
    CHECK(tdm_size_parse(NULL, &v) != TDM_OK);
}

TEST(max_memory) {
    tdm_max_memory_t mm;
    CHECK(tdm_max_memory_parse("0=16GiB,1=16GiB,cpu=64GiB,disk=1TB", &mm) == TDM_OK);
    CHECK(mm.n == 4 && mm.dev[0] == 0 && mm.dev[1] == 1 && mm.dev[2] == TDM_PLACE_CPU &&
          mm.dev[3] == TDM_PLACE_DISK);
    CHECK(mm.bytes[0] == 17179869184LL && mm.bytes[2] == 68719476736LL && mm.bytes[3] == 1000000000000LL);
    /* accelerate's order whatever the order given */
    CHECK(tdm_max_memory_parse("disk=1TB, cpu = 2GB ,3=1GB,0=3GB,10=1KB", &mm) == TDM_OK);
    CHECK(mm.n == 5 && mm.dev[0] == 0 && mm.dev[1] == 3 && mm.dev[2] == 10 && mm.dev[3] == TDM_PLACE_CPU &&
          mm.dev[4] == TDM_PLACE_DISK && mm.bytes[3] == 2000000000LL && mm.bytes[2] == 1000);
    static const struct { const char *s, *msg; } bad[] = {
        {"0=1GB,0=2GB", "'0' given twice"}, {"cpu=1GB,cpu=1GB", "'cpu' given twice"},
        {"cuda:0=1GB", "unknown device 'cuda:0'"}, {"gpu=1GB", "unknown device 'gpu'"},
        {"-1=1GB", "unknown device '-1'"}, {"0=16gb", "device '0'"}, {"0=16G", "unknown unit"},
        {"0:16GB", "not KEY=SIZE"}, {"", "empty"}, {"0=1GB,", "not KEY=SIZE"}, {"0=", "device '0'"},
        {"=1GB", "unknown device ''"}, {"mps=1GB", "unknown device 'mps'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK_MSG(tdm_max_memory_parse(bad[i].s, &mm) != TDM_OK && strstr(tdm_last_error(), bad[i].msg),
                  "'%s': %s", bad[i].s, tdm_last_error());
    tdm_place_strategy s;
    CHECK(tdm_place_strategy_parse("auto", &s) == TDM_OK && s == TDM_PLACE_BALANCED);
    CHECK(tdm_place_strategy_parse("balanced_low_0", &s) == TDM_OK && s == TDM_PLACE_BALANCED_LOW_0);
    CHECK(tdm_place_strategy_parse("sequential", &s) == TDM_OK && s == TDM_PLACE_SEQUENTIAL);
    CHECK(tdm_place_strategy_parse("balanced_low_1", &s) != TDM_OK);
}

/* ---- against accelerate ------------------------------------------------ */

TEST(synthetic_vs_accelerate) {
    cJSON *j = load_json("place/synthetic.json");
    CHECK(j != NULL);
    if (!j) return;
    int n = 0, nbug = 0;
    const cJSON *tree;
    cJSON_ArrayForEach(tree, j) {
        tdm_plist_t l;
        CHECK_MSG(plist_from_json(tree, &l), "%s: bad fixture", tree->string);
        n += run_cases(tree->string, &l, cJSON_GetObjectItem(tree, "nosplit_classes"),
                       cJSON_GetObjectItem(tree, "cases"), &nbug);
        tdm_plist_free(&l);
    }
    printf("  %d synthetic cases (%d trigger a spec bug), both modes\n", n, nbug);
    CHECK(n >= 150);
    cJSON_Delete(j);
}

TEST(real_models_vs_accelerate) {
    static const char *models[] = {"flux_dev", "t5_xxl", "sd15_unet", "sd_vae", "clip_l"};
    int n = 0, nbug = 0;
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "place/%s.json", models[k]);
        cJSON *j = load_json(rel);
        snprintf(rel, sizeof rel, "ptree/%s.json", models[k]);
        cJSON *pt = load_json(rel);
        CHECK_MSG(j && pt, "%s: fixtures missing", models[k]);
        if (j && pt) {
            tdm_plist_t l;
            CHECK_MSG(plist_from_json(pt, &l), "%s: bad fixture", models[k]);
            n += run_cases(models[k], &l, cJSON_GetObjectItem(j, "nosplit_classes"),
                           cJSON_GetObjectItem(j, "cases"), &nbug);
            /* without class names, the numeric-pattern grouping: same maps on FLUX and T5 */
            if (!strcmp(models[k], "flux_dev")) {
                tdm_max_memory_t mm;
                tdm_max_memory_parse("0=10GB,1=10GB,cpu=64GB", &mm);
                tdm_place_map_t a, b;
                const cJSON *cls = cJSON_GetObjectItem(j, "nosplit_classes");
                const char **cv = calloc((size_t)l.nnosplit, sizeof *cv);
                for (int64_t i = 0; i < l.nnosplit; i++) cv[i] = cJSON_GetArrayItem(cls, (int)i)->valuestring;
                CHECK(tdm_place_plan_ex(&l, cv, &mm, TDM_PLACE_BALANCED, 0, &a) == TDM_OK);
                CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_BALANCED, 0, &b) == TDM_OK);
                CHECK(a.n == b.n && a.budget[0] == b.budget[0]);
                tdm_place_map_free(&a);
                tdm_place_map_free(&b);
                free(cv);
            }
            tdm_plist_free(&l);
        }
        cJSON_Delete(j);
        cJSON_Delete(pt);
    }
    printf("  %d real-model cases (%d trigger a spec bug), both modes\n", n, nbug);
    CHECK(n >= 80);
}

/* ---- tandem's fixes, worked by hand ------------------------------------ */

/* Four top-level leaf modules a, b, c, d of 100 bytes each (float32 [25]):
 * total 400, largest layer 100, no no-split classes, so the balanced margin
 * is 1.25 x mean leaf (100) = 125. */
static void four(tdm_plist_t *l) {
    tdm_plist_init(l, TDM_F32);
    int64_t sh[1] = {25};
    for (const char *m = "abcd"; *m; m++) tdm_plist_add(l, 0, TDM_F32, 1, sh, "%c.weight", *m);
}

static int plan_is(const char *mms, tdm_place_strategy s, unsigned flags, const char *want_json) {
    tdm_plist_t l;
    four(&l);
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    int ok = 0;
    if (tdm_max_memory_parse(mms, &mm) == TDM_OK && tdm_place_plan(&l, &mm, s, flags, &m) == TDM_OK) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        tdm_place_map_json(&m, NULL, f);
        fclose(f);
        ok = !strcmp(buf, want_json);
        if (!ok) printf("  %s %s: got %s, expected %s\n", mms, flags ? "[accelerate]" : "[tandem]", buf, want_json);
        free(buf);
        tdm_place_map_free(&m);
    } else {
        printf("  %s: %s\n", mms, tdm_last_error());
    }
    tdm_plist_free(&l);
    return ok;
}

TEST(fix_reserve_only_when_offloading) {
    /* #3041: accelerate keeps the largest layer (100) free on GPU 0 although
     * nothing needs to come back to it: GPU 0 (cap 250-100) takes a; GPU 1
     * takes b, c; d goes to the implicit disk although 2 x 250 >= 400. */
    CHECK(plan_is("0=250,1=250", TDM_PLACE_SEQUENTIAL, TDM_PLACE_ACCELERATE_COMPAT,
                  "{\"a\": 0, \"b\": 1, \"c\": 1, \"d\": \"disk\"}"));
    /* tandem: the plan without the reserve offloads nothing, so it stands. */
    CHECK(plan_is("0=250,1=250", TDM_PLACE_SEQUENTIAL, 0, "{\"a\": 0, \"b\": 0, \"c\": 1, \"d\": 1}"));
    /* with offload the reserve applies, as accelerate: the first pass puts c, d
     * on cpu, so plan again with 100 kept free on GPU 0 and on cpu. */
    CHECK(plan_is("0=250,cpu=1000", TDM_PLACE_SEQUENTIAL, 0,
                  "{\"a\": 0, \"b\": \"cpu\", \"c\": \"cpu\", \"d\": \"cpu\"}"));
    CHECK(plan_is("0=250,cpu=1000", TDM_PLACE_SEQUENTIAL, TDM_PLACE_ACCELERATE_COMPAT,
                  "{\"a\": 0, \"b\": \"cpu\", \"c\": \"cpu\", \"d\": \"cpu\"}"));
}

TEST(fix_low_zero_by_id) {
    /* #4297: accelerate sums GPUs 1..n-1 by position: ids {0,2} -> KeyError 1. */
    tdm_plist_t l;
    four(&l);
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=300,2=300", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_BALANCED_LOW_0, TDM_PLACE_ACCELERATE_COMPAT, &m) != TDM_OK &&
          strstr(tdm_last_error(), "KeyError: 1"));
    /* tandem: low GPU = 0, the other = 2 keeps 300 (last GPU); GPU 0 gets
     * max(0, 400 - 300) = 100: a on GPU 0, b c d on GPU 2. */
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_BALANCED_LOW_0, 0, &m) == TDM_OK);
    CHECK(m.ndev == 3 && m.budget[0] == 100 && m.budget[1] == 300 && m.used[0] == 100 && m.used[1] == 300);
    CHECK(m.dev[2] == TDM_PLACE_DISK && m.budget[2] == -1 && m.used[2] == 0);   /* implicit, unused */
    tdm_place_map_free(&m);
    tdm_plist_free(&l);
    CHECK(plan_is("0=300,2=300", TDM_PLACE_BALANCED_LOW_0, 0, "{\"a\": 0, \"b\": 2, \"c\": 2, \"d\": 2}"));
    /* no GPU 0 at all: the lowest id (1) is the light one */
    CHECK(plan_is("1=300,2=300", TDM_PLACE_BALANCED_LOW_0, 0, "{\"a\": 1, \"b\": 2, \"c\": 2, \"d\": 2}"));
}

TEST(fix_disk_with_balanced) {
    /* #3480: accelerate's balanced crashes on a "disk" key. tandem: one GPU,
     * so no balancing; the first pass (GPU 0 a b, cpu c d) offloads, so the
     * reserve (100) applies: GPU 0 cap 150 takes a, cpu cap 150 takes b,
     * disk takes c and d. */
    tdm_plist_t l;
    four(&l);
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=250,cpu=250,disk=1TB", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_BALANCED, TDM_PLACE_ACCELERATE_COMPAT, &m) != TDM_OK &&
          strstr(tdm_last_error(), "disk"));
    tdm_plist_free(&l);
    CHECK(plan_is("0=250,cpu=250,disk=1TB", TDM_PLACE_BALANCED, 0,
                  "{\"a\": 0, \"b\": \"cpu\", \"c\": \"disk\", \"d\": \"disk\"}"));
}

TEST(fix_zero_budget_gpu) {
    /* #1933: a GPU with budget 0. accelerate keeps it as the main device, so
     * its reserve is wasted and GPU 1 (where offloaded layers would run)
     * reserves nothing: GPU 1 takes a b, cpu c d. */
    CHECK(plan_is("0=0,1=250,cpu=1000", TDM_PLACE_SEQUENTIAL, TDM_PLACE_ACCELERATE_COMPAT,
                  "{\"a\": 1, \"b\": 1, \"c\": \"cpu\", \"d\": \"cpu\"}"));
    /* tandem: GPU 0 is no device; GPU 1 is the main one and keeps 100 free
     * once offloading is needed: a on GPU 1, the rest on cpu. */
    CHECK(plan_is("0=0,1=250,cpu=1000", TDM_PLACE_SEQUENTIAL, 0,
                  "{\"a\": 1, \"b\": \"cpu\", \"c\": \"cpu\", \"d\": \"cpu\"}"));
    /* a single GPU with budget 0, balanced: everything on cpu in both modes */
    CHECK(plan_is("0=0,cpu=1000", TDM_PLACE_BALANCED, 0, "{\"\": \"cpu\"}"));
    CHECK(plan_is("0=0,cpu=1000", TDM_PLACE_BALANCED, TDM_PLACE_ACCELERATE_COMPAT, "{\"\": \"cpu\"}"));
}

TEST(impossible_plan) {
    tdm_plist_t l;
    four(&l);
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=250", &mm);
    /* accelerate sends the rest to an implicit unlimited disk */
    CHECK(plan_is("0=250", TDM_PLACE_SEQUENTIAL, TDM_PLACE_ACCELERATE_COMPAT,
                  "{\"a\": 0, \"b\": \"disk\", \"c\": \"disk\", \"d\": \"disk\"}"));
    /* tandem too: the first pass (a b on GPU 0, c d on disk) offloads, so the
     * reserve applies and the plan is accelerate's; the map says the disk
     * was implicit (unlimited) */
    CHECK(plan_is("0=250", TDM_PLACE_SEQUENTIAL, 0,
                  "{\"a\": 0, \"b\": \"disk\", \"c\": \"disk\", \"d\": \"disk\"}"));
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_OK);
    CHECK(m.disk_implicit == 1 && m.ndev == 2 && m.dev[1] == TDM_PLACE_DISK && m.budget[1] == -1 &&
          m.used[1] == 300);
    tdm_place_map_free(&m);
    /* only an explicit disk= cap can be too small: 400 bytes in 250 + 100
     * (a b on GPU 0, c on disk, no room for d) */
    tdm_max_memory_parse("0=250,disk=100", &mm);
    tdm_status st = tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m);
    CHECK(st == TDM_ERR_NOMEM);
    CHECK_MSG(strstr(tdm_last_error(), "'d' needs 100 bytes") && strstr(tdm_last_error(), "100 bytes are left") &&
                  strstr(tdm_last_error(), "GPU 0: 200 of 250 bytes; disk: 100 of 100 bytes") &&
                  strstr(tdm_last_error(), "disk=100 bytes cap is too small"),
              "%s", tdm_last_error());
    CHECK(m.n == 0 && m.e == NULL);
    /* a no-split unit bigger than every budget */
    tdm_max_memory_parse("0=99,cpu=99,disk=99", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_ERR_NOMEM &&
          strstr(tdm_last_error(), "'a' needs 100") && strstr(tdm_last_error(), "disk: 0 of 99") &&
          strstr(tdm_last_error(), "disk=99 bytes cap"));
    /* an explicit disk budget is no implicit disk */
    tdm_max_memory_parse("0=250,disk=1000", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_OK && m.disk_implicit == 0);
    tdm_place_map_free(&m);
    tdm_plist_free(&l);
}

TEST(json_and_lookup) {
    tdm_plist_t l;
    four(&l);
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=1000", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_BALANCED, 0, &m) == TDM_OK);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    tdm_place_map_json(&m, NULL, f);
    fputc('|', f);
    tdm_place_map_json(&m, "transformer", f);
    fclose(f);
    CHECK_MSG(!strcmp(buf, "{\"\": 0}|{\"transformer\": 0}"), "%s", buf);
    free(buf);
    CHECK(tdm_place_map_lookup(&m, "c.weight") == 0 && m.used[0] == 400 && m.total == 400);
    tdm_place_map_free(&m);
    tdm_max_memory_parse("0=250,1=250", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_OK);
    buf = NULL;
    f = open_memstream(&buf, &len);
    tdm_place_map_json(&m, "transformer", f);
    fclose(f);
    CHECK_MSG(!strcmp(buf, "{\"transformer.a\": 0, \"transformer.b\": 0, \"transformer.c\": 1, "
                           "\"transformer.d\": 1}"), "%s", buf);
    free(buf);
    CHECK(tdm_place_map_lookup(&m, "c.weight") == 1 && tdm_place_map_lookup(&m, "cc.weight") < TDM_PLACE_DISK);
    tdm_place_map_free(&m);
    tdm_place_map_free(NULL);
    tdm_plist_free(&l);
}

/* Ties: x.w (first) and z.w; when x is placed, z's module comes along. */
TEST(tied_pull) {
    tdm_plist_t l;
    tdm_plist_init(&l, TDM_F32);
    int64_t sh[1] = {25};
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "x.w");
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "y.w");
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "z.b");
    tdm_plist_tie(&l, "x.w", "z.w");
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    /* GPU 0 (cap 300-100 reserve in accelerate): x + z (200) fit together;
     * y (100) no longer fits -> GPU 1 */
    tdm_max_memory_parse("0=300,1=300", &mm);
    for (int mode = 0; mode < 2; mode++) {
        CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, mode ? 0 : TDM_PLACE_ACCELERATE_COMPAT, &m) == TDM_OK);
        CHECK(tdm_place_map_lookup(&m, "z.w") == 0 && tdm_place_map_lookup(&m, "z.b") == 0);
        CHECK(tdm_place_map_lookup(&m, "y.w") == (mode ? 0 : 1));
        tdm_place_map_free(&m);
    }
    tdm_plist_free(&l);
}

/* accelerate tests "k is inside name" as a substring (`name + "." in k + "."`):
 * with children 0..11 and 1.w tied to 11.w, module "1" counts 11.w as its
 * own, is placed alone, and "11" then finds its partner's module gone
 * (IndexError). tandem matches on dot boundaries: "1" pulls "11" along. */
TEST(tied_substring) {
    tdm_plist_t l;
    tdm_plist_init(&l, TDM_F32);
    int64_t sh[1] = {25};
    for (int k = 0; k < 11; k++) tdm_plist_add(&l, 0, TDM_F32, 1, sh, "%d.w", k);
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "11.b");
    tdm_plist_tie(&l, "1.w", "11.w");
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=10000", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, TDM_PLACE_ACCELERATE_COMPAT, &m) != TDM_OK &&
          strstr(tdm_last_error(), "IndexError"));
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_OK && m.n == 1 && m.e[0].name[0] == 0);
    tdm_place_map_free(&m);
    /* room for 10 of the 12 (1200 bytes) on GPU 0: "1" takes "11" with it
     * (200 bytes at once), so 0..9 fit and 10 goes to cpu */
    tdm_max_memory_parse("0=1100,cpu=10000", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_OK);
    CHECK(tdm_place_map_lookup(&m, "11.b") == tdm_place_map_lookup(&m, "1.w"));
    tdm_place_map_free(&m);
    tdm_plist_free(&l);
}

TEST(bad_lists) {
    tdm_plist_t l;
    tdm_plist_init(&l, TDM_F32);
    int64_t sh[1] = {4};
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "a.w");
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "a.w.x");
    tdm_max_memory_t mm;
    tdm_place_map_t m;
    tdm_max_memory_parse("0=1GB", &mm);
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_ERR_MODEL);
    tdm_plist_free(&l);
    tdm_plist_init(&l, TDM_F32);
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "a..w");
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_ERR_MODEL);
    tdm_plist_free(&l);
    tdm_plist_init(&l, TDM_F32);
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "a.w");
    tdm_plist_add(&l, 0, TDM_F32, 1, sh, "a.w");
    CHECK(tdm_place_plan(&l, &mm, TDM_PLACE_SEQUENTIAL, 0, &m) == TDM_ERR_MODEL &&
          strstr(tdm_last_error(), "twice"));
    tdm_plist_free(&l);
}

int main(void) {
    RUN(size_units);
    RUN(size_rejects);
    RUN(max_memory);
    RUN(synthetic_vs_accelerate);
    RUN(real_models_vs_accelerate);
    RUN(fix_reserve_only_when_offloading);
    RUN(fix_low_zero_by_id);
    RUN(fix_disk_with_balanced);
    RUN(fix_zero_budget_gpu);
    RUN(impossible_plan);
    RUN(json_and_lookup);
    RUN(tied_pull);
    RUN(tied_substring);
    RUN(bad_lists);
    return test_summary();
}
