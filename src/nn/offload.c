/* offload.c — running a model split by a device map (offload.h). */
#include "nn/offload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/devmap.h"

/* Points the model's field at t (NULL clears it), through its own pointer
 * type (float * or tdm_tensor_t *). */
static void set_slot(const tdm_offload_entry_t *e, tdm_tensor_t *t) {
    if (e->tensor_slot) {
        memcpy(e->slot, &t, sizeof t);
    } else {
        float *f = t ? tdm_f32(t) : NULL;
        memcpy(e->slot, &f, sizeof f);
    }
}

tdm_status tdm_placement_check(const tdm_placement_t *pl, const char *what) {
    if (!pl || !pl->map || !pl->main || !pl->host)
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: a placement needs a map, a main and a host "
                          "device", what);
    /* virtual CPU devices, or one GPU (the main device) with host RAM and disk:
     * blocks on GPU 0 stay there, the others are streamed to it */
    int host_only = tdm_dev_is_host(pl->main) && tdm_dev_is_host(pl->host);
    for (int i = 0; i < pl->ngpu; i++) host_only &= !pl->gpu[i] || tdm_dev_is_host(pl->gpu[i]);
    /* GPUs: GPU 0 runs the model, the others' blocks are copied to it */
    int gpus = !tdm_dev_is_host(pl->main) && tdm_dev_is_host(pl->host) && pl->ngpu >= 1 &&
               pl->gpu[0] == pl->main;
    for (int i = 1; gpus && i < pl->ngpu; i++) gpus &= !pl->gpu[i] || !tdm_dev_is_host(pl->gpu[i]);
    if (!host_only && !gpus)
        return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: a placement mixes virtual CPU devices and "
                          "GPUs, or GPU 0 is not the device that runs the model", what);
    return TDM_OK;
}

tdm_status tdm_placement_where(const tdm_placement_t *pl, const char *what, const char *name,
                               tdm_device_t **dev, int *where) {
    int d = tdm_place_map_lookup(pl->map, name);
    *dev = NULL;
    if (d >= 0 && d < pl->ngpu && pl->gpu[d]) {
        *dev = pl->gpu[d];
        *where = TDM_PLACED_RESIDENT;
    } else if (d == TDM_PLACE_CPU) {
        *dev = pl->host;
        *where = TDM_PLACED_HOST;
    } else if (d == TDM_PLACE_DISK) {
        *where = TDM_PLACED_DISK;
    } else if (d >= 0) {
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: the device map puts tensor \"%s\" on GPU %d, "
                          "which has no device here (%d given)", what, name, d, pl->ngpu);
    } else {
        return tdm_errorf(TDM_ERR_INVALID_ARG, "%s: the device map does not cover tensor \"%s\"",
                          what, name);
    }
    return TDM_OK;
}

tdm_status tdm_offload_add(tdm_offload_t *o, void *slot, int tensor_slot, tdm_tensor_t *host,
                           const char *name, int ndim, const int64_t *shape, int gemm,
                           int64_t blk) {
    if (ndim < 1 || ndim > 4)
        return tdm_errorf(TDM_ERR_INTERNAL, "offload: tensor \"%s\" has %d dims", name, ndim);
    if (o->n == o->cap) {
        int64_t cap = o->cap ? 2 * o->cap : 64;
        tdm_offload_entry_t *p = realloc(o->e, (size_t)cap * sizeof(*p));
        if (!p) return tdm_errorf(TDM_ERR_NOMEM, "offload: out of memory for the offload list");
        o->e = p;
        o->cap = cap;
    }
    tdm_offload_entry_t *e = &o->e[o->n++];
    memset(e, 0, sizeof *e);
    e->slot = slot;
    e->tensor_slot = tensor_slot;
    e->host = host;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->ndim = ndim;
    e->gemm = gemm;
    for (int d = 0; d < 4; d++) e->shape[d] = d < ndim ? shape[d] : 0;
    e->blk = blk;
    set_slot(e, NULL);
    return TDM_OK;
}

tdm_status tdm_offload_load(tdm_offload_t *o, const tdm_placement_t *pl, const tdm_st_set_t *set,
                            tdm_device_t *dev, const char *what, const char *name,
                            const char *map_name, int ndim, const int64_t *shape, int gemm,
                            void *slot, int tensor_slot, int64_t blk, tdm_tensor_t **out) {
    int where = TDM_PLACED_RESIDENT;
    tdm_status st;
    *out = NULL;
    if (pl) {
        if ((st = tdm_placement_where(pl, what, map_name ? map_name : name, &dev, &where)) != TDM_OK)
            return st;
        if (where == TDM_PLACED_DISK)   /* read from the file each time its block runs */
            return tdm_offload_add(o, slot, tensor_slot, NULL, name, ndim, shape, gemm, blk);
    }
    if (gemm && where == TDM_PLACED_HOST)   /* kept as the execution device wants it */
        st = tdm_st_set_load_gemm_host_copy(set, name, dev, pl->main, gemm, ndim, shape, out);
    else
        st = gemm ? tdm_st_set_load_gemm_weight(set, name, dev, gemm, ndim, shape, out)
                  : tdm_st_set_load_f32(set, name, dev, ndim, shape, out);
    if (st != TDM_OK) return st;
    /* resident on another GPU than the one that runs the model: kept there and
     * copied to the running GPU over the GPUs' link as its block runs (a peer
     * copy on the side queue, prefetched like host RAM) */
    tdm_device_t *x = pl ? pl->main : NULL;
    const int peer = where == TDM_PLACED_RESIDENT && x && dev != x && !tdm_dev_is_host(dev) &&
                     !tdm_dev_is_host(x);
    if (where != TDM_PLACED_HOST && !peer) {   /* resident: the field points at it */
        tdm_offload_entry_t e = {.slot = slot, .tensor_slot = tensor_slot};
        set_slot(&e, *out);
        return TDM_OK;
    }
    st = tdm_offload_add(o, slot, tensor_slot, *out, name, ndim, shape, gemm, blk);
    if (st != TDM_OK) {
        tdm_tensor_free(*out);
        *out = NULL;
        return st;
    }
    tdm_offload_entry_t *e = &o->e[o->n - 1];
    if (peer) {
        if (!x->ops->peer || !x->ops->peer(x, dev)) {
            o->n--;   /* the record goes; the caller gets no tensor */
            tdm_tensor_free(*out);
            *out = NULL;
            return tdm_errorf(TDM_ERR_UNSUPPORTED, "%s: the device map puts tensor \"%s\" on GPU "
                              "%d, which GPU %d cannot read directly (no peer access between "
                              "them); give GPU %d's share to cpu= instead", what, name,
                              dev->index, x->index, dev->index);
        }
        e->dma_dev = x;
        return TDM_OK;
    }
    /* page-lock large host copies for the GPU's DMA (malloc serves them from
     * their own mappings, so no two share a page); small ones and a refusal
     * keep the staged upload */
    if (x->ops && x->ops->pin && (*out)->nbytes >= x->opts.pin_min_bytes &&
        x->ops->pin(x, (*out)->data, (*out)->nbytes))
        e->dma_dev = x;
    return TDM_OK;
}

int tdm_offload_keep_set(tdm_offload_t *o, tdm_st_set_t *set) {
    for (int64_t i = 0; i < o->n; i++)
        if (!o->e[i].host) {
            o->set = set;
            return 1;
        }
    return 0;
}

/* 1 if e's copy can go by DMA on exec's side queue */
static int dma_ok(const tdm_offload_entry_t *e, const tdm_device_t *exec) {
    return e->host && e->dma_dev == exec && exec->ops && exec->ops->copy_begin &&
           exec->ops->upload_async && exec->ops->copy_end && exec->ops->copy_wait;
}

/* Allocates block blk's DMA-able copies on exec and queues their uploads on
 * the side queue after everything queued so far (the allocations included). */
static tdm_status queue_dma(tdm_offload_t *o, tdm_device_t *exec, int64_t blk) {
    int64_t n = 0;
    tdm_status st = TDM_OK;
    for (int64_t i = 0; i < o->n && st == TDM_OK; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->blk != blk || e->tmp || !dma_ok(e, exec)) continue;
        st = tdm_tensor_create(&e->tmp, exec, e->host->dtype, e->host->ndim, e->host->shape,
                               e->name);
        if (st == TDM_OK) {
            e->pending = 1;
            n++;
        }
    }
    if (st != TDM_OK || n == 0) return st;
    if (!exec->ops->copy_begin(exec)) goto fail;
    for (int64_t i = 0; i < o->n; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->blk == blk && e->pending && e->tmp &&
            !exec->ops->upload_async(exec, e->tmp->data, e->host->data, e->host->nbytes))
            goto fail;
    }
    if (!exec->ops->copy_end(exec)) goto fail;
    return TDM_OK;
fail:
    return tdm_errorf(TDM_ERR_INTERNAL, "offload: queueing block %lld's copies to device %d "
                      "failed: %s", (long long)blk, exec->index, tdm_last_error());
}

tdm_status tdm_offload_prefetch(tdm_offload_t *o, tdm_device_t *exec, int64_t blk) {
    if (!exec || !exec->ops || !exec->ops->copy_begin) return TDM_OK;
    return queue_dma(o, exec, blk);
}

/* The block that followed blk the last time (-2: none known), after
 * recording that blk follows the block brought in before it in this forward
 * (block -1 starts a forward: nothing is recorded across two, and the block
 * that ended the previous one has no successor). */
static int64_t learn_order(tdm_offload_t *o, int64_t blk) {
    int64_t nxt = -2, i;
    if (blk == -1 && o->has_last)   /* the last forward ended with o->last: nothing follows it */
        for (i = 0; i < o->nnext; i++)
            if (o->from[i] == o->last) o->next[i] = -2;
    if (blk != -1 && o->has_last) {
        for (i = 0; i < o->nnext && o->from[i] != o->last; i++) {}
        if (i == o->nnext && o->nnext == o->capnext) {   /* grow; on failure learn nothing */
            int64_t cap = o->capnext ? 2 * o->capnext : 64;
            int64_t *f = realloc(o->from, (size_t)cap * sizeof *f);
            if (f) o->from = f;
            int64_t *n = f ? realloc(o->next, (size_t)cap * sizeof *n) : NULL;
            if (n) {
                o->next = n;
                o->capnext = cap;
            }
        }
        if (i < o->capnext) {
            o->from[i] = o->last;
            o->next[i] = blk;
            if (i == o->nnext) o->nnext++;
        }
    }
    o->has_last = 1;
    o->last = blk;
    for (i = 0; i < o->nnext; i++)
        if (o->from[i] == blk) nxt = o->next[i];
    return nxt;
}

tdm_status tdm_offload_in(tdm_offload_t *o, tdm_device_t *exec, int64_t blk) {
    const int64_t after = learn_order(o, blk);
    tdm_status st = queue_dma(o, exec, blk);   /* pinned copies not prefetched */
    int waited = 0;
    for (int64_t i = 0; i < o->n && st == TDM_OK; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->blk != blk || !e->pending) continue;
        if (!waited && !exec->ops->copy_wait(exec))
            return tdm_errorf(TDM_ERR_INTERNAL, "offload: waiting for block %lld's copies on "
                              "device %d failed: %s", (long long)blk, exec->index,
                              tdm_last_error());
        waited = 1;
        e->pending = 0;
        set_slot(e, e->tmp);
    }
    if (st != TDM_OK) return st;
    for (int64_t i = 0; i < o->n; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->blk != blk || e->tmp) continue;
        if (e->host) {   /* host RAM → the execution device */
            st = tdm_tensor_create(&e->tmp, exec, e->host->dtype, e->host->ndim, e->host->shape,
                                   e->name);
            if (st == TDM_OK)
                st = tdm_dev_upload(exec, e->tmp->data, e->host->data, e->host->nbytes, e->name);
        } else {         /* the file → the execution device, converted as at load */
            st = e->gemm ? tdm_st_set_load_gemm_weight(o->set, e->name, exec, e->gemm, e->ndim, e->shape,
                                                       &e->tmp)
                         : tdm_st_set_load_f32(o->set, e->name, exec, e->ndim, e->shape, &e->tmp);
        }
        if (st != TDM_OK) {
            tdm_tensor_free(e->tmp);
            e->tmp = NULL;
            return st;
        }
        set_slot(e, e->tmp);
    }
    if (after >= -1 && after != blk && tdm_offload_prefetch(o, exec, after) != TDM_OK)
        tdm_offload_out(o, after);   /* no room now: that block comes in when it runs */
    return TDM_OK;
}

void tdm_offload_out(tdm_offload_t *o, int64_t blk) {
    for (int64_t i = 0; i < o->n; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->blk != blk || !e->tmp) continue;
        if (e->pending) {   /* prefetched, never brought in: the free waits for the copy */
            tdm_device_t *x = e->tmp->dev;
            if (x && x->ops && x->ops->copy_wait) (void)x->ops->copy_wait(x);
            e->pending = 0;
        }
        tdm_tensor_free(e->tmp);
        e->tmp = NULL;
        set_slot(e, NULL);
    }
}

void tdm_offload_out_all(tdm_offload_t *o) {
    for (int64_t i = 0; i < o->n; i++)
        if (o->e[i].tmp) tdm_offload_out(o, o->e[i].blk);
}

void tdm_offload_free(tdm_offload_t *o) {
    if (!o) return;
    tdm_offload_out_all(o);   /* frees the copies and clears the fields */
    for (int64_t i = 0; i < o->n; i++) {
        tdm_offload_entry_t *e = &o->e[i];
        if (e->dma_dev && e->host && tdm_dev_is_host(e->host->dev))   /* page-locked */
            e->dma_dev->ops->unpin(e->dma_dev, e->host->data);
    }
    if (o->owns_host)
        for (int64_t i = 0; i < o->n; i++) tdm_tensor_free(o->e[i].host);
    free(o->e);
    free(o->from);
    free(o->next);
    tdm_st_set_close(o->set);
    memset(o, 0, sizeof *o);
}
