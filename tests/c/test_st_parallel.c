/* st_parallel.c: every unit done exactly once, worker numbers below nthreads and never
** shared by two threads at once, the workers kept between calls, callers on several
** threads at once (the busy path starts threads of its own), and a forked child that
** starts its own workers. Also built with -fsanitize=thread (make c-test), without the
** fork part, which TSan does not support in a threaded process. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "st_parallel.h"
#include "st_test.h"

#define MAXN 5000

typedef struct {
    int nthreads;
    int done[MAXN];             /* times each unit ran */
    int inside[ST_MAX_THREADS]; /* 1 while a thread runs as that worker */
    long sum;
} job;

static void unit(void *ctx, long begin, long end, int worker) {
    job *j = ctx;
    CHECK(worker >= 0 && worker < j->nthreads);
    CHECK(__atomic_exchange_n(&j->inside[worker], 1, __ATOMIC_ACQ_REL) == 0);
    for (long u = begin; u < end; u++) {
        __atomic_add_fetch(&j->done[u], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&j->sum, u, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&j->inside[worker], 0, __ATOMIC_RELEASE);
}

static void run(int nthreads, long n) {
    job *j = calloc(1, sizeof(job));
    j->nthreads = nthreads < 1 ? 1 : nthreads;
    st_parallel_for(nthreads, n, unit, j);
    for (long u = 0; u < n; u++)
        CHECK(j->done[u] == 1);
    CHECK(j->sum == n * (n - 1) / 2);
    free(j);
}

static void *caller(void *arg) {
    for (int i = 0; i < 30; i++)
        run(2 + (int)(uintptr_t)arg % 3, 200 + i);
    return 0;
}

int main(void) {
    long sizes[] = {0, 1, 2, 3, 7, 64, 1000, MAXN};
    int threads[] = {0, 1, 2, 3, 4, 8, 300};
    for (size_t a = 0; a < sizeof threads / sizeof threads[0]; a++)
        for (size_t b = 0; b < sizeof sizes / sizeof sizes[0]; b++)
            run(threads[a], sizes[b]);
    int started = st_parallel_workers();
    CHECK(started >= 1 && started <= ST_MAX_THREADS - 1);
    for (int i = 0; i < 50; i++)
        run(4, 100);
    CHECK(st_parallel_workers() == started); /* kept, not started per call */

    /* many tiny jobs back to back, of changing widths: workers wake late and find the job
    ** closed, or find the next one (of another width, with their number beyond it) */
    for (int i = 0; i < 3000; i++)
        run(2 + i % 3, 1 + i % 5);

    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], 0, caller, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], 0);

#ifndef __SANITIZE_THREAD__
    /* a fork while another thread keeps the workers busy: the child has none, and its
    ** first call starts its own (a child waiting on its parent's workers would hang) */
    for (int k = 0; k < 5; k++) {
        pthread_t busy;
        CHECK(pthread_create(&busy, 0, caller, (void *)(uintptr_t)k) == 0);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            if (st_parallel_workers() != 0)
                _exit(3);
            run(3, 1000);
            if (st_parallel_workers() < 1)
                _exit(4);
            run(3, 1000);
            _exit(0);
        }
        CHECK(st_test_child_ok(pid, 20));
        pthread_join(busy, 0);
    }
#endif
    printf("test_st_parallel: ok\n");
    return 0;
}
