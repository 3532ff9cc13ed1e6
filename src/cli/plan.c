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

/* tandem plan --parallel auto: every layout of --ranks ranks, predicted. */
static int plan_parallel(args_t *a) {
    tdm_parallel_plan_params_t p;
    tdm_parallel_plan_params_init(&p);
    p.model = a->model;
    p.device = a->device;
    p.dtype = a->dtype;
    p.max_memory = a->max_memory;
    p.ranks = a->ranks;
    p.images = a->images;
    p.width = a->width, p.height = a->height;
    p.max_sequence_length = a->max_seq;
    p.guidance = a->guidance;
    char *json = NULL;
    if (tdm_parallel_plan(&p, &json) != TDM_OK) die_status();
    puts(json);
    free(json);
    args_free(a);
    return 0;
}

/* tandem plan: the placement of a folder's components under memory budgets,
 * as one JSON object on stdout; reads config files and safetensors headers. */
int cmd_plan(int argc, char **argv) {
    args_t a;
    parse_args(&a, "plan", argc, argv);
    if (a.parallel) return plan_parallel(&a);
    if (a.ranks || a.images) die(2, "--ranks and --images go with --parallel auto");
    tdm_plan_params_t p;
    tdm_plan_params_init(&p);
    p.model = a.model;
    p.only = a.only;
    p.max_memory = a.max_memory;
    p.variant = a.variant;
    p.config = a.config;
    p.vae_file = a.vae_file;
    p.text_encoder_file = a.te_file;
    p.text_encoder_2_file = a.te2_file;
    p.dtype = a.dtype;
    p.device_map = a.device_map[0] ? a.device_map : NULL;
    char *json = NULL;
    if (tdm_plan(&p, &json) != TDM_OK) die_status();
    fputs(json, stdout);
    free(json);
    args_free(&a);
    return 0;
}
