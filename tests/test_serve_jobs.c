/* test_serve_jobs.c — the server's queue (src/serve/jobs.c) without HTTP:
 * a job's images handed to several workers, the queue bound counting jobs
 * none of whose images started, an image handed back when its worker is
 * lost (made again once, its job failed the second time), cancel of a job
 * with images in work, and stop. */
#include <stdlib.h>
#include <string.h>

#include "test.h"

#include "serve/jobs.h"

/* A request of n images (strings malloc'd: jobs_submit takes them). */
static job_req_t req(int n, const char *client) {
    job_req_t r;
    memset(&r, 0, sizeof r);
    r.prompt = strdup("a red cube");
    r.n = n;
    r.steps = 4;
    r.width = r.height = 64;
    snprintf(r.client, sizeof r.client, "%s", client);
    return r;
}

static void done(jobs_t *q, job_t *j, int k) {
    uint8_t *png = malloc(8);
    char *params = strdup("p");
    memset(png, k, 8);
    jobs_image_end(q, j, k, JOB_DONE, NULL, png, 8, params);
}

TEST(images_shared_and_retried) {
    jobs_t q;
    CHECK(jobs_init(&q, 1, 600, 1 << 20) == 0);
    job_req_t r = req(3, "a");
    job_t *j = NULL, *j2 = NULL;
    CHECK(jobs_submit(&q, &r, &j) == 0 && j);
    CHECK(q.qlen == 1);
    r = req(1, "a");
    CHECK(jobs_submit(&q, &r, &j2) == 1 && !j2);   /* --queue 1: full */
    int k0 = -1, k1 = -1, k2 = -1, k3 = -1;
    CHECK(jobs_try_take(&q, 0, &k0) == j && k0 == 0);
    CHECK(q.qlen == 0 && j->state == JOB_RUNNING);   /* started: no longer waiting */
    r = req(1, "b");
    CHECK(jobs_submit(&q, &r, &j2) == 0 && j2);   /* room again, though j has images left */
    CHECK(jobs_try_take(&q, 1, &k1) == j2 && k1 == 0);   /* client b, never served, goes first */
    CHECK(q.qlen == 0);
    /* worker 0 is lost on image 0 of j: it is queued again, first in line */
    jobs_image_retry(&q, j, 0, "worker 0 was lost");
    CHECK(j->redo == 1 && j->iworker[0] == -2 && j->state == JOB_RUNNING);
    CHECK(q.qlen == 0);   /* j started long ago: it does not count as waiting */
    CHECK(jobs_try_take(&q, 2, &k2) == j && k2 == 0);   /* the image handed back */
    CHECK(j->iworker[0] == 2 && j->order == 1 && j->worker == 0 && q.qlen == 0);
    CHECK(jobs_try_take(&q, 0, &k3) == j && k3 == 1);
    int k4 = -1;
    CHECK(jobs_try_take(&q, 1, &k4) == j && k4 == 2);
    CHECK(jobs_try_take(&q, 0, &k4) == NULL);   /* nothing left */
    CHECK(q.head == NULL);
    done(&q, j, 1);
    done(&q, j, 2);
    CHECK(j->ndone == 0 && j->made == 2 && j->state == JOB_RUNNING);   /* image 0 still in work */
    done(&q, j, 0);
    CHECK(j->state == JOB_DONE && j->ndone == 3 && j->iretry[0] == 1);
    for (int k = 0; k < 3; k++) CHECK(j->png[k] && j->png[k][0] == k);
    done(&q, j2, 0);
    CHECK(j2->state == JOB_DONE);
    jobs_free(&q);
}

TEST(second_loss_fails_the_job) {
    jobs_t q;
    CHECK(jobs_init(&q, 4, 600, 1 << 20) == 0);
    job_req_t r = req(2, "a");
    job_t *j = NULL;
    int k = -1, k1 = -1;
    CHECK(jobs_submit(&q, &r, &j) == 0);
    CHECK(jobs_try_take(&q, 0, &k) == j && k == 0);
    CHECK(jobs_try_take(&q, 1, &k1) == j && k1 == 1);
    jobs_image_retry(&q, j, 0, "worker 0 was lost");
    CHECK(jobs_try_take(&q, 2, &k) == j && k == 0);
    jobs_image_retry(&q, j, 0, "worker 2 was lost");   /* the second time: the job fails */
    CHECK(j->state == JOB_RUNNING && jobs_cancelled(&q, j));   /* image 1 is told to stop */
    CHECK(jobs_try_take(&q, 0, &k) == NULL);
    jobs_image_end(&q, j, 1, JOB_CANCELLED, NULL, NULL, 0, NULL);
    CHECK_MSG(j->state == JOB_FAILED && j->error && strstr(j->error, "worker 2 was lost"), "state %s, %s",
              job_state_name(j->state), j->error ? j->error : "");
    jobs_free(&q);
}

TEST(cancel_and_stop) {
    jobs_t q;
    CHECK(jobs_init(&q, 4, 600, 1 << 20) == 0);
    job_req_t r = req(3, "a");
    job_t *a = NULL, *b = NULL;
    int k = -1;
    CHECK(jobs_submit(&q, &r, &a) == 0);
    r = req(1, "a");
    CHECK(jobs_submit(&q, &r, &b) == 0);
    CHECK(jobs_try_take(&q, 0, &k) == a && k == 0);
    /* a has image 0 in work and two not handed out: it stops handing out, ends with image 0 */
    CHECK(jobs_cancel(&q, a->id) == JOB_RUNNING);
    CHECK(q.head == b && q.qlen == 1);
    done(&q, a, 0);   /* it finished anyway: still cancelled (2 images never made) */
    CHECK(a->state == JOB_CANCELLED && a->ndone == 1);
    /* stop: the waiting job is cancelled at once, a running one goes on until asked */
    r = req(1, "c");
    job_t *c = NULL;
    CHECK(jobs_try_take(&q, 0, &k) == b);
    CHECK(jobs_submit(&q, &r, &c) == 0);
    jobs_stop(&q, 0);
    CHECK(c->state == JOB_CANCELLED && b->state == JOB_RUNNING && !jobs_cancelled(&q, b));
    CHECK(jobs_take(&q, 0, &k) == NULL);   /* stopping and empty: no wait */
    jobs_stop(&q, 1);
    CHECK(jobs_cancelled(&q, b));
    jobs_image_end(&q, b, 0, JOB_CANCELLED, NULL, NULL, 0, NULL);
    CHECK(b->state == JOB_CANCELLED);
    jobs_free(&q);
}

int main(void) {
    RUN(images_shared_and_retried);
    RUN(second_loss_fails_the_job);
    RUN(cancel_and_stop);
    return test_summary();
}
