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
    args_t a;
    parse_args(&a, "plan", argc, argv);
    tdm_plan_params_t p;
    tdm_plan_params_init(&p);
    p.model = a.model;
    p.only = a.only;
    p.max_memory = a.max_memory;
    p.variant = a.variant;
    p.dtype = a.dtype;
    p.device_map = a.device_map[0] ? a.device_map : NULL;
    char *json = NULL;
    if (tdm_plan(&p, &json) != TDM_OK) die_status();
    fputs(json, stdout);
    free(json);
    args_free(&a);
    return 0;
}
