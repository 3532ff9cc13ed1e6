/* devmap.h — a device map: module or tensor path -> GPU id, "cpu" or
 * "disk", shaped like accelerate's hf_device_map. The planner (place/place.h)
 * writes it; model loaders read it through a placement (offload.h) to put
 * each tensor where it belongs. Only the data and its lookup live here: no
 * planning, no devices, no I/O. */
#ifndef TDM_DEVMAP_H
#define TDM_DEVMAP_H

#include <stdint.h>

/* Device ids in budgets and maps: GPU ids are >= 0. */
#define TDM_PLACE_CPU  (-1)
#define TDM_PLACE_DISK (-2)
#define TDM_PLACE_MAX_DEVICES 66          /* 64 GPUs + cpu + disk */

typedef struct {
    char *name;   /* module or tensor path; "" = the whole model */
    int   dev;
} tdm_place_entry_t;

typedef struct tdm_place_map {
    tdm_place_entry_t *e;                  /* cleaned map, in placement order */
    int64_t            n;
    int                ndev;               /* the devices planned over, in order */
    int                dev[TDM_PLACE_MAX_DEVICES];
    int64_t            budget[TDM_PLACE_MAX_DEVICES];  /* after balancing; -1 = unlimited disk */
    int                disk_implicit;      /* 1: the budgets had no "disk"; an unlimited one was added */
    int64_t            used[TDM_PLACE_MAX_DEVICES];    /* bytes of tensors placed there */
    int64_t            reserve;            /* max_layer reserve applied on the main devices (0 if none) */
    int64_t            total;              /* bytes of the whole model */
} tdm_place_map_t;

/* Frees the entries and zeroes *m; NULL is a no-op. */
void       tdm_place_map_free(tdm_place_map_t *m);

/* The device of tensor `name` under map m (longest matching prefix), or
 * TDM_PLACE_DISK - 1 when the map does not cover it. */
int        tdm_place_map_lookup(const tdm_place_map_t *m, const char *name);

#endif
