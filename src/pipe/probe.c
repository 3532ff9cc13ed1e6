/* probe.c — the machine numbers of `--parallel auto` measured (tdm_parallel_probe):
 * every rank times a GEMM and an attention call on its own device, all at
 * once (ranks sharing a host's cores or a GPU see each other's load, as in
 * the run), and an all-to-all over the world through the nn group the run's
 * groups would use (NCCL or MPI, as --comm says); the ranks' numbers are
 * averaged. The buffers are zeros: the kernels' speed does not depend on the
 * values. Sizes: FLUX-like shapes on a GPU, small ones on a CPU, so the
 * probe takes well under a second. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/ops.h"
#include "dist/dist.h"
#include "dist/nn_group.h"
#include "place/pipe_plan.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static tdm_status dev_wait(tdm_device_t *dev, const char *what) {
    if (tdm_dev_is_host(dev) || !dev->ops->sync || dev->ops->sync(dev)) return TDM_OK;
    return tdm_errorf(TDM_ERR_INTERNAL, "--parallel auto probe: %s on %s failed: %s", what,
                      dev->kind == TDM_DEV_CUDA ? "cuda" : "cpu", tdm_last_error());
}

/* Seconds of the best of 3 runs of op (after one warm-up). */
typedef void (*probe_fn)(tdm_device_t *dev, void **buf, const int64_t *dim, tdm_dtype at);

static tdm_status best_of_3(tdm_device_t *dev, probe_fn fn, void **buf, const int64_t *dim, tdm_dtype at,
                            const char *what, double *secs) {
    *secs = INFINITY;
    for (int i = 0; i < 4; i++) {
        const double t0 = now_s();
        fn(dev, buf, dim, at);
        tdm_status st = dev_wait(dev, what);
        if (st != TDM_OK) return st;
        if (i > 0 && now_s() - t0 < *secs) *secs = now_s() - t0;
    }
    return TDM_OK;
}

static void run_gemm(tdm_device_t *dev, void **b, const int64_t *d, tdm_dtype at) {
    tdm_op_linear_ex(dev, b[2], at, d[2], b[0], at, b[1], NULL, d[0], d[1], d[2], 0);
}

static void run_attn(tdm_device_t *dev, void **b, const int64_t *d, tdm_dtype at) {
    tdm_op_attention_t(dev, at, b[3], b[0], b[1], b[2], 1, d[0], d[0], d[1], d[2], 0.088f, 0);
}

/* GEMM and attention flop/s of one rank on dev. */
static tdm_status probe_compute(tdm_device_t *dev, double *gemm, double *attn) {
    const int gpu = !tdm_dev_is_host(dev);
    const tdm_dtype at = tdm_op_act_dtype(dev);
    const int64_t es = (int64_t)tdm_dtype_size(at), ws = (int64_t)tdm_dtype_size(gpu ? dev->gemm_dtype : TDM_F32);
    const int64_t g[3] = {gpu ? 4096 : 256, gpu ? 3072 : 512, gpu ? 3072 : 512};   /* M, K, N */
    const int64_t a[3] = {gpu ? 4096 : 256, gpu ? 8 : 2, 128};                     /* S, H, D */
    const int64_t bytes[4] = {g[0] * g[1] * es, g[2] * g[1] * ws, g[0] * g[2] * es, 0};
    const int64_t abytes = a[0] * a[1] * a[2] * es;
    void *buf[4] = {0};
    double t = 0;
    tdm_status st = TDM_OK;
    for (int i = 0; i < 3 && st == TDM_OK; i++)
        if (!(buf[i] = tdm_dev_alloc(dev, bytes[i], "probe GEMM operand"))) st = TDM_ERR_NOMEM;
    if (st == TDM_OK) st = best_of_3(dev, run_gemm, buf, g, at, "the GEMM", &t);
    if (st == TDM_OK) *gemm = 2.0 * g[0] * g[1] * g[2] / t;
    for (int i = 0; i < 3; i++) tdm_dev_free(dev, buf[i], bytes[i]);
    memset(buf, 0, sizeof buf);
    for (int i = 0; i < 4 && st == TDM_OK; i++)
        if (!(buf[i] = tdm_dev_alloc(dev, abytes, "probe attention operand"))) st = TDM_ERR_NOMEM;
    if (st == TDM_OK) st = best_of_3(dev, run_attn, buf, a, at, "the attention", &t);
    if (st == TDM_OK) *attn = 4.0 * a[0] * a[0] * a[1] * a[2] / t;
    for (int i = 0; i < 4; i++) tdm_dev_free(dev, buf[i], abytes);
    return st == TDM_ERR_NOMEM ? tdm_errorf(st, "--parallel auto probe: out of memory on the device") : st;
}

/* Per-rank all-to-all bandwidth and latency over the world's nn group. */
static tdm_status probe_link(tdm_comm_t *world, tdm_device_t *dev, tdm_nn_comm_mode mode, double *bw,
                             double *lat) {
    tdm_nn_group_t g;
    const int n = world->size;
    const int64_t per = (tdm_dev_is_host(dev) ? (int64_t)1 << 20 : (int64_t)8 << 20) / n;   /* floats a block */
    float *s = NULL, *r = NULL;
    tdm_status st = tdm_dist_nn_group_create_on(world, dev, mode, &g);
    if (st != TDM_OK) return st;
    s = tdm_dev_alloc(dev, per * n * 4, "probe send"), r = tdm_dev_alloc(dev, per * n * 4, "probe receive");
    if (!s || !r) st = tdm_errorf(TDM_ERR_NOMEM, "--parallel auto probe: out of memory on the device");
    double big = INFINITY, small = INFINITY;
    for (int i = 0; i < 4 && st == TDM_OK; i++) {
        double t0 = now_s();
        st = tdm_nn_group_all_to_all(&g, dev, s, r, 1, TDM_F32);
        if (st == TDM_OK) st = dev_wait(dev, "the all-to-all");
        double t1 = now_s();
        if (st == TDM_OK) st = tdm_nn_group_all_to_all(&g, dev, s, r, per, TDM_F32);
        if (st == TDM_OK) st = dev_wait(dev, "the all-to-all");
        if (i > 0) small = fmin(small, t1 - t0), big = fmin(big, now_s() - t1);
    }
    if (st == TDM_OK) {
        *lat = small;
        *bw = (double)per * 4 * (n - 1) / fmax(big - small, 1e-9);   /* bytes a rank sends to the others */
    }
    tdm_dev_free(dev, s, per * n * 4);
    tdm_dev_free(dev, r, per * n * 4);
    tdm_dist_nn_group_free(&g);
    return st;
}

tdm_status tdm_parallel_probe(tdm_dist_t *d, const char *device, const char *dtype, const char *comm,
                              int threads, tdm_parallel_machine_t *out) {
    tdm_device_t dev;
    tdm_nn_comm_mode mode;
    tdm_dtype dt = TDM_F32;
    double v[4] = {0};
    tdm_status st;
    memset(out, 0, sizeof *out);
    if (!d) return tdm_errorf(TDM_ERR_INVALID_ARG, "tdm_parallel_probe: NULL group");
    if ((st = tdm_nn_comm_mode_parse(comm, &mode)) != TDM_OK) return st;
    if (dtype && (st = tdm_dtype_parse(dtype, &dt)) != TDM_OK) return st;
    if (threads > 0) tdm_set_num_threads(threads);
    if ((st = tdm_backend_device_open(&dev, device ? device : "cpu", NULL)) != TDM_OK) return st;
    if (dev.kind == TDM_DEV_CUDA) dev.gemm_dtype = dtype ? tdm_dtype_gemm(dt, 1) : TDM_BF16;
    st = probe_compute(&dev, &v[0], &v[1]);
    /* every rank reaches the link probe, or the ones that failed abort the job (CLI) */
    if (st == TDM_OK) st = probe_link(tdm_dist_world(d), &dev, mode, &v[2], &v[3]);
    tdm_backend_device_close(&dev);
    if (st != TDM_OK) return st;
    const int n = tdm_dist_size(d);
    if ((st = tdm_dist_allreduce_sum(d, v, 4)) != TDM_OK) return st;
    out->gemm_flop_s = v[0] / n, out->attn_flop_s = v[1] / n;
    out->link_bytes_s = n > 1 ? v[2] / n : 0, out->latency_s = n > 1 ? v[3] / n : 0;
    return TDM_OK;
}
