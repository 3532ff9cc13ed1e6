/* test_ptree.h — checks a model's parameter list (src/nn/ptree.h) against
 * the one PyTorch builds: tests/fixtures/ptree/<case>.json, written by
 * tools/ref/ptree_ref.py from diffusers / transformers on the meta device.
 * Names, order, shapes, buffer flags, integer dtypes, no-split module paths
 * and tied groups must all match exactly. Include after test.h. */
#ifndef TDM_TEST_PTREE_H
#define TDM_TEST_PTREE_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/ptree.h"

/* A builder: the parameter list of the model whose config.json is at
 * `config_path`, floating tensors as `dt`. */
typedef tdm_status (*ptree_builder_fn)(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

static tdm_dtype ptree_dtype(const char *torch_name) {
    if (!strcmp(torch_name, "int64")) return TDM_I64;
    if (!strcmp(torch_name, "int32")) return TDM_I32;
    if (!strcmp(torch_name, "bool")) return TDM_BOOL;
    return TDM_F32;   /* floating: the list's own dtype applies */
}

/* Compares the builder's list for fixture `case_name` (dtype BF16 for the
 * floating tensors) with the fixture; returns the number of tensors checked. */
static int64_t ptree_check_case(const char *fixtures, const char *case_name, ptree_builder_fn build) {
    char path[1024], cfg[1024];
    snprintf(path, sizeof path, "%s/ptree/%s.json", fixtures, case_name);
    char *text = test_slurp(path);
    CHECK_MSG(text != NULL, "cannot read %s", path);
    if (!text) return 0;
    cJSON *j = cJSON_Parse(text);
    free(text);
    CHECK_MSG(j != NULL, "%s: bad JSON", path);
    if (!j) return 0;
    const cJSON *cp = cJSON_GetObjectItem(j, "config_path");
    char tmpdir[] = "/tmp/tdm_ptree_XXXXXX";
    int made = 0;
    if (cJSON_IsString(cp)) {
        /* fixtures/<...>/config.json, relative to the repository root */
        snprintf(cfg, sizeof cfg, "%s/../../%s/config.json", fixtures, cp->valuestring);
    } else {   /* a real-model config embedded in the fixture: written to a temp file */
        char *c = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "config"));
        made = mkdtemp(tmpdir) != NULL;
        snprintf(cfg, sizeof cfg, "%s/config.json", tmpdir);
        FILE *f = made ? fopen(cfg, "w") : NULL;
        if (f) { fputs(c, f); fclose(f); }
        cJSON_free(c);
    }
    tdm_plist_t l;
    tdm_plist_init(&l, TDM_BF16);
    tdm_status st = build(cfg, TDM_BF16, &l);
    CHECK_MSG(st == TDM_OK, "%s: %s", case_name, tdm_last_error());
    int64_t checked = 0;
    if (st == TDM_OK) {
        const cJSON *ps = cJSON_GetObjectItem(j, "params");
        int64_t n = cJSON_GetArraySize(ps);
        CHECK_MSG(l.n == n, "%s: %lld tensors, PyTorch has %lld", case_name, (long long)l.n,
                  (long long)n);
        for (int64_t i = 0; i < n && i < l.n; i++) {
            const cJSON *p = cJSON_GetArrayItem(ps, (int)i);
            const char *nm = cJSON_GetArrayItem(p, 0)->valuestring;
            const cJSON *sh = cJSON_GetArrayItem(p, 1);
            tdm_dtype dt = ptree_dtype(cJSON_GetArrayItem(p, 2)->valuestring);
            int buf = cJSON_GetArrayItem(p, 3)->valueint;
            const tdm_pentry_t *e = &l.e[i];
            int same = !strcmp(e->name, nm) && e->ndim == cJSON_GetArraySize(sh) &&
                       e->is_buffer == buf && (dt == TDM_F32 ? e->dtype == TDM_BF16 : e->dtype == dt);
            for (int d = 0; same && d < e->ndim; d++)
                same = e->shape[d] == (int64_t)cJSON_GetArrayItem(sh, d)->valuedouble;
            if (!same) {
                CHECK_MSG(0, "%s: tensor %lld is %s (%d dims), PyTorch has %s", case_name,
                          (long long)i, e->name, e->ndim, nm);
                break;
            }
            checked++;
        }
        const cJSON *ns = cJSON_GetObjectItem(j, "nosplit");
        int64_t nn = cJSON_GetArraySize(ns);
        CHECK_MSG(l.nnosplit == nn, "%s: %lld no-split modules, PyTorch has %lld", case_name,
                  (long long)l.nnosplit, (long long)nn);
        const cJSON *nc = cJSON_GetObjectItem(j, "nosplit_class");
        for (int64_t i = 0; i < nn && i < l.nnosplit; i++)
            if (strcmp(l.nosplit[i], cJSON_GetArrayItem(ns, (int)i)->valuestring) ||
                strcmp(l.nosplit_class[i], cJSON_GetArrayItem(nc, (int)i)->valuestring)) {
                CHECK_MSG(0, "%s: no-split %lld is %s (%s), PyTorch has %s (%s)", case_name,
                          (long long)i, l.nosplit[i], l.nosplit_class[i],
                          cJSON_GetArrayItem(ns, (int)i)->valuestring,
                          cJSON_GetArrayItem(nc, (int)i)->valuestring);
                break;
            }
        const cJSON *ti = cJSON_GetObjectItem(j, "tied");
        int64_t nt = cJSON_GetArraySize(ti);
        CHECK_MSG(l.ntied == nt, "%s: %lld tied, PyTorch has %lld", case_name, (long long)l.ntied,
                  (long long)nt);
        for (int64_t i = 0; i < nt && i < l.ntied; i++)
            CHECK_MSG(!strcmp(l.tied[i], cJSON_GetArrayItem(ti, (int)i)->valuestring),
                      "%s: tie %s vs %s", case_name, l.tied[i],
                      cJSON_GetArrayItem(ti, (int)i)->valuestring);
    }
    tdm_plist_free(&l);
    if (made) {
        unlink(cfg);
        rmdir(tmpdir);
    }
    cJSON_Delete(j);
    return checked;
}

#endif
