/* request.h — the body of a job request (native, OpenAI or A1111 field
 * names) to a job_req_t under the server's defaults and limits (internal
 * to src/serve/; fuzzed by fuzz/fuzz_serve_request.c). */
#ifndef TDM_SERVE_REQUEST_H
#define TDM_SERVE_REQUEST_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "serve/jobs.h"
#include "serve/serve.h"

enum { SERVE_API_JOBS = 0, SERVE_API_OPENAI, SERVE_API_A1111 };

/* The job of `body` (any JSON value, NULL: not JSON) for `api`, with p's
 * defaults (then info's) and limits: 0 and *r (its strings malloc'd; the
 * caller frees them or hands them to jobs_submit), or -1 with one line in
 * msg (a 400 answer) and nothing allocated. OpenAI: *url (may be NULL) = 1
 * for response_format "url". A1111: n = batch_size × n_iter; sampler_name
 * is logged and ignored. */
int serve_parse_request(const tdm_serve_params_t *p, const tdm_pipeline_info_t *info, int api,
                        const cJSON *body, job_req_t *r, int *url, char *msg, size_t cap);

/* Image k of job r as `tandem generate` makes it (seed + k): *gp from
 * tdm_generate_params_init with r's values (callbacks left NULL). */
void serve_generate_params(const job_req_t *r, int k, tdm_generate_params_t *gp);
/* Image k's parameters text (malloc'd; NULL: out of memory). */
char *serve_parameters_text(const job_req_t *r, int k, const char *scheduler, const char *model);
/* Makes image k of r on pipe — the same path for a worker thread and a
 * worker rank: TDM_OK with *png (*len bytes) and its *params text
 * (malloc'd, the caller's), or the status (TDM_ERR_CANCELLED when cancel
 * said so) with *err one line. on_step / cancel / user: tdm_generate_params_t's. */
tdm_status serve_make_image(tdm_pipeline_t *pipe, const job_req_t *r, int k, const char *scheduler,
                            const char *model, void (*on_step)(void *, int, int), int (*cancel)(void *),
                            void *user, uint8_t **png, size_t *len, char **params, const char **err);

#endif
