/* test_placed.h — the setup of the split-model tests (test_flux, test_t5):
 * one plain CPU device, two virtual devices standing for GPUs 0 and 1, host
 * RAM, and the plan of a model's config-only parameter list (float32, as CPU
 * devices hold it) under given budgets. Include after test.h. */
#ifndef TDM_TEST_PLACED_H
#define TDM_TEST_PLACED_H

#include <string.h>

#include "nn/offload.h"
#include "place/place.h"

typedef struct {
    tdm_device_t     one, gpu0, gpu1, host;
    tdm_device_t    *gpus[2];
    tdm_plist_t      pl;
    tdm_place_map_t  map;
    tdm_max_memory_t mm;
    tdm_placement_t  place;
    int64_t          planned[4];   /* bytes the plan puts on GPU 0, GPU 1, cpu, disk */
} placed_t;

typedef tdm_status (*placed_plist_fn)(const char *config_path, tdm_dtype dt, tdm_plist_t *out);

/* Plans the model of `cfg` with `strategy` under `budgets` into t; 1 on success. */
static int placed_setup(placed_t *t, placed_plist_fn plist, const char *cfg,
                        const char *strategy, const char *budgets) {
    tdm_place_strategy strat;
    memset(t, 0, sizeof *t);
    tdm_plist_init(&t->pl, TDM_F32);
    tdm_device_init(&t->one, TDM_DEV_CPU, 0);
    tdm_device_init(&t->gpu0, TDM_DEV_CPU, 0);
    tdm_device_init(&t->gpu1, TDM_DEV_CPU, 1);
    tdm_device_init(&t->host, TDM_DEV_CPU, 2);
    t->gpus[0] = &t->gpu0;
    t->gpus[1] = &t->gpu1;
    tdm_status st = tdm_place_strategy_parse(strategy, &strat);
    if (st == TDM_OK) st = tdm_max_memory_parse(budgets, &t->mm);
    if (st == TDM_OK) st = plist(cfg, TDM_F32, &t->pl);
    if (st == TDM_OK) st = tdm_place_plan(&t->pl, &t->mm, strat, 0, &t->map);
    CHECK_MSG(st == TDM_OK, "plan %s under %s: %s", cfg, budgets, tdm_last_error());
    if (st != TDM_OK) return 0;
    for (int i = 0; i < t->map.ndev; i++) {
        int d = t->map.dev[i];
        t->planned[d >= 0 ? d : d == TDM_PLACE_CPU ? 2 : 3] = t->map.used[i];
    }
    printf("  %s %s: GPU0 %lld, GPU1 %lld, cpu %lld, disk %lld bytes\n", strategy, budgets,
           (long long)t->planned[0], (long long)t->planned[1], (long long)t->planned[2],
           (long long)t->planned[3]);
    tdm_placement_t p = {&t->map, t->gpus, 2, &t->host, &t->gpu0};
    t->place = p;
    return 1;
}

/* After a placed load: each device holds exactly what the plan gives it. */
static inline void placed_check_held(const placed_t *t) {
    CHECK_MSG(t->gpu0.cur_bytes == t->planned[0] && t->gpu1.cur_bytes == t->planned[1] &&
              t->host.cur_bytes == t->planned[2], "held: GPU0 %lld, GPU1 %lld, host %lld",
              (long long)t->gpu0.cur_bytes, (long long)t->gpu1.cur_bytes,
              (long long)t->host.cur_bytes);
}

/* After placed forwards: streamed weights left the main device again (it
 * holds held0 + extra, e.g. a cache the forward keeps), they counted there
 * while in use (peak above peak0), and the other devices are untouched. */
static inline void placed_check_after(const placed_t *t, int64_t held0, int64_t extra, int64_t peak0) {
    CHECK_MSG(t->gpu0.cur_bytes == held0 + extra, "GPU0 holds %lld bytes after the forward, "
              "%lld expected", (long long)t->gpu0.cur_bytes, (long long)(held0 + extra));
    CHECK(t->gpu0.peak_bytes > peak0);
    CHECK(t->gpu1.cur_bytes == t->planned[1] && t->host.cur_bytes == t->planned[2]);
}

/* Frees the plan; every device must be empty by then. */
static void placed_done(placed_t *t) {
    CHECK(t->one.cur_bytes == 0 && t->gpu0.cur_bytes == 0 && t->gpu1.cur_bytes == 0 &&
          t->host.cur_bytes == 0);
    if (t->map.e) tdm_place_map_free(&t->map);
    tdm_plist_free(&t->pl);
}

#endif
