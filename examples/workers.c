/* A worker pool posting results to the event loop.
 *
 * libuv's thread pool counts primes; each worker hands its result to the
 * loop thread with hark_post, where the receiver prints it. The loop
 * thread never locks anything and the workers never touch loop state. */
#include <hark.h>
#include <stdio.h>
#include <stdlib.h>

#define JOBS 8

typedef struct result {
  int job;
  long primes;
} result;

static hark_loop *hl;
static hark_signal *job_done; /* args: a result */
static int received;

static long count_primes(long below) {
  long n = 0;
  for (long i = 2; i < below; i++) {
    long d = 2;
    while (d * d <= i && i % d != 0)
      d++;
    n += d * d > i;
  }
  return n;
}

/* On a pool thread. */
static void work(uv_work_t *req) {
  int job = (int)(intptr_t)req->data;
  result *r = malloc(sizeof(*r));
  if (r == NULL)
    return;
  r->job = job;
  r->primes = count_primes((job + 1) * 20000L);
  /* On success hark owns r and frees it after the send; else it is ours. */
  if (hark_post(hl, job_done, NULL, r, free) != 0)
    free(r);
}

static void after_work(uv_work_t *req, int status) { free(req); }

/* On the loop thread. */
static int print_result(void *self, void *sender, void *args) {
  const result *r = args;
  printf("job %d: %ld primes below %ld\n", r->job, r->primes,
         (r->job + 1) * 20000L);
  if (++received == JOBS)
    hark_loop_close(hl); /* lets uv_run return */
  return 0;
}

int main(void) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  hl = hark_loop_new(&loop);
  job_done = hark_signal_new("job-done");
  if (hl == NULL || job_done == NULL ||
      hark_connect(job_done, print_result, NULL, NULL, HARK_WEAK) != 0)
    return 1;

  for (int i = 0; i < JOBS; i++) {
    uv_work_t *req = malloc(sizeof(*req));
    if (req == NULL)
      return 1;
    req->data = (void *)(intptr_t)i;
    uv_queue_work(&loop, req, work, after_work);
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  hark_unref(job_done);
  hark_unref(hl);
  int rc = uv_loop_close(&loop);
  printf("received %d results, uv_loop_close: %d\n", received, rc);
  return rc == 0 && received == JOBS ? 0 : 1;
}
