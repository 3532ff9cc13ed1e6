/* plan.c — `tandem plan`: a placement as JSON from configs and headers. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* tandem plan: the placement of a folder's components under memory budgets,
 * as one JSON object on stdout; reads config files and safetensors headers. */
int cmd_plan(int argc, char **argv) {
    tdm_plan_params_t p;
    tdm_plan_params_init(&p);
    char dmap[1024] = "";
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(stdout); exit(0); }
        if (strcmp(f, "--model") && strcmp(f, "--only") && strcmp(f, "--device-map") &&
            strcmp(f, "--max-memory") && strcmp(f, "--dtype") && strcmp(f, "--variant"))
            die(2, "%s: unknown flag for tandem plan (see tandem --help)", f);
        if (i + 1 >= argc) die(2, "%s: missing value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) p.model = v;
        else if (!strcmp(f, "--only")) p.only = v;
        else if (!strcmp(f, "--max-memory")) p.max_memory = v;
        else if (!strcmp(f, "--variant")) p.variant = v;
        else if (!strcmp(f, "--dtype")) {
            if (strcmp(v, "fp32") != 0 && strcmp(v, "fp16") != 0 && strcmp(v, "bf16") != 0)
                die(2, "--dtype %s: expected fp32, fp16 or bf16", v);
            p.dtype = v;
        } else {   /* --device-map, repeatable: joined with commas */
            size_t n = strlen(dmap);
            if (n + strlen(v) + 2 > sizeof dmap) die(2, "--device-map: too long");
            snprintf(dmap + n, sizeof dmap - n, "%s%s", n ? "," : "", v);
        }
    }
    if (!p.model) die(2, "--model: required");
    p.device_map = dmap[0] ? dmap : NULL;
    char *json = NULL;
    if (tdm_plan(&p, &json) != TDM_OK) die_status();
    fputs(json, stdout);
    free(json);
    return 0;
}
