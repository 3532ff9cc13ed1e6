// label: unit
/* test_offload.c — streaming of offloaded blocks (nn/offload.c) on a fake
 * execution device with a side copy queue (host memory behind the device
 * interface, every queued copy counted): blocks brought in get their
 * tensors, blocks dropped lose them, and from the second forward on each
 * tdm_offload_in prefetches the block that followed it last time (its copies
 * queued before that block is asked for), while the first forward, a block
 * with no successor and a forward in another order prefetch nothing wrong. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "nn/offload.h"
#include "test.h"

/* ---- a device with a side queue, in host memory ---- */
static int g_async;        /* upload_async calls */
static int64_t g_async_bytes;

static void *f_alloc(tdm_device_t *d, int64_t n) { (void)d; return calloc(1, (size_t)n); }
static void f_free(tdm_device_t *d, void *p) { (void)d; free(p); }
static int f_zero(tdm_device_t *d, void *p, int64_t n) { (void)d; memset(p, 0, (size_t)n); return 1; }
static int f_copy(tdm_device_t *d, void *dst, const void *src, int64_t n) {
    (void)d;
    memcpy(dst, src, (size_t)n);
    return 1;
}
static int f_ok(tdm_device_t *d) { (void)d; return 1; }
static int f_async(tdm_device_t *d, void *dst, const void *src, int64_t n) {
    g_async++;
    g_async_bytes += n;
    return f_copy(d, dst, src, n);
}
static void f_unpin(tdm_device_t *d, void *p) { (void)d; (void)p; }

static const tdm_device_ops_t g_ops = {
    .alloc = f_alloc, .free = f_free, .zero = f_zero, .upload = f_copy, .download = f_copy,
    .copy = f_copy, .sync = f_ok, .unpin = f_unpin, .copy_begin = f_ok,
    .upload_async = f_async, .copy_end = f_ok, .copy_wait = f_ok,
};

#define NBLK 4

/* Block b holds one tensor of b+1 floats, all equal to b; its field fld[b]. */
typedef struct {
    tdm_device_t  host, exec;
    tdm_offload_t off;
    const float  *fld[NBLK];
} fixture_t;

static void setup(fixture_t *f) {
    memset(f, 0, sizeof *f);
    tdm_device_init(&f->host, TDM_DEV_CPU, 1);
    tdm_device_init(&f->exec, TDM_DEV_CPU, 0);
    f->exec.ops = &g_ops;   /* a "GPU" with a side queue */
    for (int b = 0; b < NBLK; b++) {
        tdm_tensor_t *t = NULL;
        int64_t n = b + 1;
        char name[32];
        snprintf(name, sizeof name, "blk%d.weight", b);
        CHECK(tdm_tensor_create(&t, &f->host, TDM_F32, 1, &n, name) == TDM_OK);
        for (int64_t i = 0; i < n; i++) tdm_f32(t)[i] = (float)b;
        CHECK(tdm_offload_add(&f->off, &f->fld[b], 0, t, name, 1, &n, 0, b) == TDM_OK);
        f->off.e[b].dma_dev = &f->exec;   /* page-locked: copies go by DMA */
    }
    f->off.owns_host = 1;
}

/* One forward over blocks order[0..n-1]; returns how many blocks were on
 * the device already when asked for (prefetched). */
static int forward(fixture_t *f, const int *order, int n) {
    int prefetched = 0;
    CHECK(tdm_offload_in(&f->off, &f->exec, -1) == TDM_OK);
    for (int k = 0; k < n; k++) {
        const int b = order[k];
        /* a prefetched block already sits on the device before it is asked for */
        if (f->off.e[b].tmp) prefetched++;
        CHECK(tdm_offload_in(&f->off, &f->exec, b) == TDM_OK);
        CHECK_MSG(f->fld[b] && f->fld[b][0] == (float)b && f->fld[b][b] == (float)b,
                  "block %d not brought in", b);
        tdm_offload_out(&f->off, b);
        CHECK(f->fld[b] == NULL);
    }
    tdm_offload_out_all(&f->off);
    return prefetched;
}

TEST(test_learned_prefetch) {
    fixture_t f;
    setup(&f);
    const int order[NBLK] = {0, 1, 2, 3};
    g_async = 0;
    CHECK_MSG(forward(&f, order, NBLK) == 0, "first forward prefetched without an order");
    CHECK_MSG(g_async == NBLK, "first forward: %d copies, expected %d", g_async, NBLK);
    g_async = 0;
    int p = forward(&f, order, NBLK);
    /* block 0 follows the start (-1), so it too is fetched early */
    CHECK_MSG(p == NBLK, "second forward: %d blocks prefetched, expected %d", p, NBLK);
    CHECK_MSG(g_async == NBLK, "second forward: %d copies, expected %d (each once)", g_async,
              NBLK);
    /* another order: what is learned follows the latest forward */
    const int rev[NBLK] = {3, 2, 1, 0};
    g_async = 0;
    forward(&f, rev, NBLK);   /* mispredicted prefetches cost copies, never results */
    CHECK_MSG(g_async >= NBLK && g_async <= 2 * NBLK, "reordered forward: %d copies", g_async);
    g_async = 0;
    p = forward(&f, rev, NBLK);
    CHECK_MSG(p == NBLK && g_async == NBLK, "after learning the new order: %d blocks "
              "prefetched, %d copies", p, g_async);
    for (int b = 0; b < NBLK; b++) CHECK(f.off.e[b].tmp == NULL && f.fld[b] == NULL);
    CHECK(f.exec.cur_bytes == 0);
    tdm_offload_free(&f.off);
}

/* A host execution device has no side queue: nothing is prefetched, every
 * block still comes in. */
TEST(test_no_side_queue) {
    fixture_t f;
    setup(&f);
    f.exec.ops = NULL;
    for (int b = 0; b < NBLK; b++) f.off.e[b].dma_dev = NULL;
    const int order[NBLK] = {0, 1, 2, 3};
    g_async = 0;
    forward(&f, order, NBLK);
    CHECK(forward(&f, order, NBLK) == 0);
    CHECK(g_async == 0);
    tdm_offload_free(&f.off);
}

/* A prefetch that finds no room is dropped, and the block comes in when it runs. */
TEST(test_prefetch_no_room) {
    fixture_t f;
    setup(&f);
    const int order[NBLK] = {0, 1, 2, 3};
    forward(&f, order, NBLK);
    f.exec.cap_bytes = (int64_t)(NBLK * sizeof(float));   /* one block at a time, not two */
    g_async = 0;
    /* blocks 0 and 1 fit beside the one running; 2 and 3 do not (12 + 8, 16 + 12 bytes) */
    const int p = forward(&f, order, NBLK);
    CHECK_MSG(p == 2, "%d blocks prefetched under the cap, expected 2", p);
    CHECK_MSG(g_async == NBLK, "%d copies, expected %d", g_async, NBLK);
    CHECK(f.exec.cur_bytes == 0);
    tdm_offload_free(&f.off);
}

int main(void) {
    RUN(test_learned_prefetch);
    RUN(test_no_side_queue);
    RUN(test_prefetch_no_room);
    return test_summary();
}
