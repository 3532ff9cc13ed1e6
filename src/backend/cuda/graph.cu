/* graph.cu — CUDA graphs of a device's stream (the graph ops of backend/ops_list.h):
 * a model captures one forward pass after an eager warm-up of the same
 * shapes and pointers, then replays it with one launch (no per-op host
 * launch cost: the SD1.5 UNet step issues ~1 000 kernels). Stream-ordered
 * allocations made during the capture (cuda_alloc's cudaMallocAsync and
 * cudaFreeAsync) become the graph's own memory nodes, so a replay never
 * touches memory that is live outside the graph. Capture mode is
 * thread-local: other threads' CUDA calls are not affected. */
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_common.cuh"

extern "C" int tdm_cuda_graph_ok(tdm_device_t *d) {
    /* profiling brackets every op with events and reads them back */
    return d && d->opts.cuda_graph && d->impl && !tdm_cuda_ctx(d)->prof;
}

extern "C" tdm_status tdm_cuda_graph_begin(tdm_device_t *d) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal));
    return TDM_OK;
fail:
    return TDM_ERR_INTERNAL;
}

extern "C" tdm_status tdm_cuda_graph_end(tdm_device_t *d, void **graph) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    cudaGraph_t g = NULL;
    cudaGraphExec_t ex = NULL;
    *graph = NULL;
    TDM_CUDA_CHECK(cudaStreamEndCapture(c->stream, &g));
    TDM_CUDA_CHECK(cudaGraphInstantiate(&ex, g, 0));
    cudaGraphDestroy(g);
    *graph = (void *)ex;
    return TDM_OK;
fail:
    if (g) cudaGraphDestroy(g);
    return TDM_ERR_INTERNAL;
}

extern "C" tdm_status tdm_cuda_graph_launch(tdm_device_t *d, void *graph) {
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    TDM_CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
    return TDM_OK;
fail:
    return TDM_ERR_INTERNAL;
}

extern "C" void tdm_cuda_graph_free(tdm_device_t *d, void *graph) {
    if (!graph) return;
    tdm_cuda_impl_t *c = tdm_cuda_ctx(d);
    /* replays queued on the stream finish first; the graph's memory goes
     * back to the driver */
    (void)cudaStreamSynchronize(c->stream);
    (void)cudaGraphExecDestroy((cudaGraphExec_t)graph);
    (void)cudaDeviceGraphMemTrim(d->index);
}
