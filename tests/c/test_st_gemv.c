/* st_gemv.c: y += A x (every kernel this CPU runs) and y += A^T x against a
** double-precision reference, over shapes that hit every remainder (rows mod 4, columns
** mod 8, 16, 32 and 64) and empty ones; the matrix ends at a PROT_NONE page, so a read past
** it (not a prefetch: those never fault) crashes. Then the calibration (st_gemv_pick):
** it picks a kernel this CPU runs, remembers it, honours ST_GEMV_KERNEL, and is safe from
** several threads at once (also built under ThreadSanitizer). Then the thread choice for
** batch-1 layers (st_gemv_threads): its rule, its answers (1 or the maximum, remembered),
** ST_GEMV_PARALLEL, several threads asking at once, and a fork while it measures. */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "st_gemv.h"
#include "st_test.h"

static unsigned long long rng = 88172645463325252ULL;
static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) % 2001) / 1000.0f - 1.0f;
}

/* Room for `count` floats that end exactly where an inaccessible page begins. */
static float *guarded(long count, void **map, size_t *len) {
    long page = sysconf(_SC_PAGESIZE);
    size_t bytes = (size_t)count * sizeof(float);
    size_t body = (bytes + page - 1) / page * page;
    *len = body + page;
    char *m = mmap(0, *len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    CHECK(mprotect(m + body, page, PROT_NONE) == 0);
    *map = m;
    return (float *)(m + body - bytes);
}

static void check_shape(long m, long n) {
    void *map;
    size_t len;
    float *a = guarded(m * n, &map, &len);
    float *x = malloc((m > n ? m : n) * sizeof(float) + 4);
    float *y = malloc((m > n ? m : n) * sizeof(float) + 4);
    double *want = malloc((m > n ? m : n) * sizeof(double) + 8);
    for (long i = 0; i < m * n; i++)
        a[i] = rnd();
    /* y += A x */
    for (long j = 0; j < n; j++)
        x[j] = rnd();
    for (long i = 0; i < m; i++) {
        y[i] = rnd();
        want[i] = y[i];
        for (long j = 0; j < n; j++)
            want[i] += (double)a[i * n + j] * x[j];
    }
    float *y0 = malloc((m > n ? m : n) * sizeof(float) + 4);
    memcpy(y0, y, m * sizeof(float));
    st_gemv_n(m, n, a, x, y);
    for (long i = 0; i < m; i++)
        CHECK(fabs(y[i] - want[i]) <= 1e-5 * (n + 1));
    for (int k = 0; k < ST_GEMV_KERNELS; k++) {
        if (!st_gemv_available(k))
            continue;
        memcpy(y, y0, m * sizeof(float));
        st_gemv_n_with(k, m, n, a, x, y);
        for (long i = 0; i < m; i++) {
            if (!(fabs(y[i] - want[i]) <= 1e-5 * (n + 1)))
                fprintf(stderr, "kernel %s, %ld x %ld, row %ld\n", st_gemv_name(k), m, n, i);
            CHECK(fabs(y[i] - want[i]) <= 1e-5 * (n + 1));
        }
    }
    free(y0);
    /* y += A^T x */
    for (long i = 0; i < m; i++)
        x[i] = rnd();
    for (long j = 0; j < n; j++) {
        y[j] = rnd();
        want[j] = y[j];
        for (long i = 0; i < m; i++)
            want[j] += (double)a[i * n + j] * x[i];
    }
    st_gemv_t(m, n, a, x, y);
    for (long j = 0; j < n; j++)
        CHECK(fabs(y[j] - want[j]) <= 1e-5 * (m + 1));
    munmap(map, len);
    free(x);
    free(y);
    free(want);
}

static void *pick_thread(void *arg) {
    long cols = (long)arg;
    for (int i = 0; i < 3; i++) {
        int k = st_gemv_pick(64, cols, 2 << 20);
        CHECK(st_gemv_available(k));
    }
    return NULL;
}

static void *big_pick_thread(void *arg) {
    (void)arg;
    CHECK(st_gemv_available(st_gemv_pick(256, 256, 16 << 20)));
    return NULL;
}

static void check_pick(void) {
    unsetenv("ST_GEMV_KERNEL");
    st_gemv_forget();
    CHECK(st_gemv_pick(256, 256, ST_GEMV_SMALL_BYTES) == ST_GEMV_ROWS4); /* small: not timed */
    int k = st_gemv_pick(256, 256, 2 << 20);
    CHECK(k >= 0 && k < ST_GEMV_KERNELS && st_gemv_available(k));
    /* the calibration timed every available kernel, and only those */
    double t[ST_GEMV_KERNELS];
    st_gemv_last_timings(t);
    for (int j = 0; j < ST_GEMV_KERNELS; j++)
        CHECK(st_gemv_available(j) ? t[j] > 0 : t[j] == -1);
    for (int j = 0; j < ST_GEMV_KERNELS; j++)
        CHECK(t[k] <= t[j] || t[j] == -1);
    /* remembered: the same shape and class is not measured again (the timings stay) */
    st_gemv_last_timings(t);
    CHECK(st_gemv_pick(256, 256, (2 << 20) - 5) == k);
    double t2[ST_GEMV_KERNELS];
    st_gemv_last_timings(t2);
    CHECK(memcmp(t, t2, sizeof t) == 0);
    /* odd shapes, a tile larger than its class, rows larger than it, empty ones */
    CHECK(st_gemv_available(st_gemv_pick(3, 17, 3 << 20)));
    CHECK(st_gemv_available(st_gemv_pick(1024, 1024, 4 << 20)));
    CHECK(st_gemv_available(st_gemv_pick(1, 1 << 20, 2 << 20)));
    CHECK(st_gemv_pick(0, 16, 0) == ST_GEMV_ROWS4 && st_gemv_pick(16, 0, 0) == ST_GEMV_ROWS4);
    /* forced by name (when this CPU has it); an unknown name is ignored */
    setenv("ST_GEMV_KERNEL", "linear", 1);
    CHECK(st_gemv_pick(256, 256, 2 << 20) == ST_GEMV_LINEAR);
    setenv("ST_GEMV_KERNEL", "linear-avx512", 1);
    CHECK(st_gemv_pick(256, 256, 2 << 20) ==
          (st_gemv_available(ST_GEMV_LINEAR_512) ? ST_GEMV_LINEAR_512 : k));
    setenv("ST_GEMV_KERNEL", "no-such-kernel", 1);
    CHECK(st_gemv_pick(256, 256, 2 << 20) == k);
    unsetenv("ST_GEMV_KERNEL");
    /* several threads calibrating and looking up at once */
    st_gemv_forget();
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, pick_thread, (void *)(64 + 16 * (i % 2))) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* a full table answers from what it holds, without measuring again */
    st_gemv_forget();
    for (long c = 1; c <= 40; c++)
        CHECK(st_gemv_available(st_gemv_pick(4, c, 2 << 20)));
    st_gemv_last_timings(t);
    CHECK(st_gemv_available(st_gemv_pick(4, 99, 2 << 20)));
    st_gemv_last_timings(t2);
    CHECK(memcmp(t, t2, sizeof t) == 0);
    st_gemv_forget();
    /* fork while another thread calibrates (holding the lock): the child still picks */
    pthread_t cal;
    CHECK(pthread_create(&cal, NULL, big_pick_thread, NULL) == 0);
    usleep(2000);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(st_gemv_available(st_gemv_pick(32, 32, 2 << 20)) ? 0 : 1);
    CHECK(st_test_child_ok(pid, 60));
    pthread_join(cal, NULL);
    st_gemv_forget();
}

static void *threads_thread(void *arg) {
    long units = (long)arg;
    for (int i = 0; i < 3; i++) {
        int t = st_gemv_threads(64, 64, 2 << 20, units, 2);
        CHECK(t == 1 || t == 2);
    }
    return NULL;
}
#ifndef __SANITIZE_THREAD__
static void *big_threads_thread(void *arg) {
    (void)arg;
    int t = st_gemv_threads(256, 256, 64 << 20, 16, 2);
    CHECK(t == 1 || t == 2);
    return NULL;
}
#endif

static void check_threads(void) {
    /* the rule: a saving of at least a tenth of the one-thread time and of one hand-off */
    CHECK(st_gemv_threads_decide(100e-6, 50e-6, 5e-6, 2) == 2);
    CHECK(st_gemv_threads_decide(100e-6, 95e-6, 1e-6, 2) == 1);  /* 5 %: not worth it */
    CHECK(st_gemv_threads_decide(100e-6, 80e-6, 30e-6, 2) == 1); /* less than a hand-off */
    CHECK(st_gemv_threads_decide(100e-6, 120e-6, 0, 4) == 1);    /* slower */
    CHECK(st_gemv_threads_decide(10e-3, 6e-3, 50e-6, 4) == 4);
    CHECK(st_gemv_threads_decide(100e-6, 10e-6, 0, 1) == 1);
    /* the next choice: a tenth faster either way to move, between the two it stays */
    CHECK(st_gemv_threads_next(1, 100e-6, 85e-6, 2) == 2);
    CHECK(st_gemv_threads_next(1, 100e-6, 95e-6, 2) == 1);
    CHECK(st_gemv_threads_next(2, 95e-6, 100e-6, 2) == 2); /* one thread 5 % faster: stays */
    CHECK(st_gemv_threads_next(2, 85e-6, 100e-6, 2) == 1); /* 15 %: back to one */
    CHECK(st_gemv_threads_next(4, 100e-6, 60e-6, 4) == 4);
    CHECK(st_gemv_threads_next(4, 0, 60e-6, 4) == 4); /* no estimate: stays */
    CHECK(st_gemv_threads_next(1, 100e-6, 0, 4) == 1);
    CHECK(st_gemv_threads_next(2, 10e-6, 100e-6, 1) == 1); /* one allowed */
    /* one thread allowed, or one unit to split: one thread, nothing measured */
    st_gemv_forget();
    double t[3], t2[3];
    st_gemv_last_thread_timings(t);
    CHECK(st_gemv_threads(256, 256, 4 << 20, 4, 1) == 1);
    CHECK(st_gemv_threads(256, 256, 4 << 20, 1, 2) == 1);
    CHECK(st_gemv_threads(0, 256, 4 << 20, 4, 2) == 2);
    st_gemv_last_thread_timings(t2);
    CHECK(memcmp(t, t2, sizeof t) == 0);
    /* measured: 1 or the maximum, as the rule says of the timings; then remembered */
    int a = st_gemv_threads(256, 256, 4 << 20, 4, 2);
    st_gemv_last_thread_timings(t);
    CHECK(t[0] > 0 && t[1] > 0 && t[2] > 0);
    CHECK(a == st_gemv_threads_decide(t[0], t[1], t[2], 2));
    CHECK(st_gemv_threads(256, 256, (4 << 20) - 100, 4, 2) == a);
    st_gemv_last_thread_timings(t2);
    CHECK(memcmp(t, t2, sizeof t) == 0);
    int b = st_gemv_threads(256, 256, 4 << 20, 4, 3); /* another maximum: measured anew */
    CHECK(b == 1 || b == 3);
    st_gemv_last_thread_timings(t2);
    CHECK(memcmp(t, t2, sizeof t) != 0);
    /* forced */
    setenv("ST_GEMV_PARALLEL", "always", 1);
    CHECK(st_gemv_threads(256, 256, 4 << 20, 4, 2) == 2);
    CHECK(st_gemv_threads(256, 256, 4 << 20, 4, 1) == 1); /* the setting still rules */
    setenv("ST_GEMV_PARALLEL", "never", 1);
    CHECK(st_gemv_threads(256, 256, 64 << 20, 16, 2) == 1);
    unsetenv("ST_GEMV_PARALLEL");
    /* several threads measuring and looking up at once (the pool is used meanwhile) */
    st_gemv_forget();
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        CHECK(pthread_create(&th[i], NULL, threads_thread, (void *)(4 + 4 * (i % 2))) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
#ifndef __SANITIZE_THREAD__
    /* fork while another thread measures (holding the lock, its workers busy) */
    st_gemv_forget();
    pthread_t cal;
    CHECK(pthread_create(&cal, NULL, big_threads_thread, NULL) == 0);
    usleep(3000);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int k = st_gemv_threads(128, 128, 4 << 20, 8, 2);
        _exit(k == 1 || k == 2 ? 0 : 1);
    }
    CHECK(st_test_child_ok(pid, 60));
    pthread_join(cal, NULL);
#endif
    st_gemv_forget();
}

/* st_gemv_threads_now: calls keep the choice up to date, and the one not taken is tried */
static void check_threads_now(void) {
    CHECK(st_gemv_threads_update(0, 5e-6) == 5e-6);     /* the first time */
    CHECK(st_gemv_threads_update(10e-6, 5e-6) == 5e-6); /* faster: taken as it is */
    CHECK(fabs(st_gemv_threads_update(10e-6, 18e-6) - (10e-6 + 8e-6 / ST_GEMV_RECENT_RISE)) <
          1e-12); /* slower: part of the way */
    CHECK(fabs(st_gemv_threads_update(10e-6, 5e-3) - (10e-6 + 10e-6 / ST_GEMV_RECENT_RISE)) <
          1e-12); /* held up for a time slice: no more than its own part */
    st_gemv_forget();
    int slot, n = 0, i;
    CHECK(st_gemv_threads_now(256, 256, 4 << 20, 4, 1, &slot) == 1 && slot == -1);
    setenv("ST_GEMV_PARALLEL", "always", 1);
    CHECK(st_gemv_threads_now(256, 256, 4 << 20, 4, 2, &slot) == 2 && slot == -1);
    unsetenv("ST_GEMV_PARALLEL");
    int first = st_gemv_threads_now(256, 256, 4 << 20, 4, 2, &slot); /* measures */
    CHECK(slot >= 0 && (first == 1 || first == 2));
    /* the calibration's figures start the estimates; a call's first report replaces its
    ** choice's (even a slower one: the calibrated buffer was hot), later ones update it */
    double r[2], seed[2];
    CHECK(st_gemv_threads_recent(slot, seed) && seed[0] > 0 && seed[1] > 0);
    st_gemv_threads_observe(slot, 1, 1e3 * seed[0] * (1 << 20), 1 << 20);
    /* the other, not seen yet, keeps the calibration's proportion to it */
    CHECK(st_gemv_threads_recent(slot, r) && fabs(r[0] - 1e3 * seed[0]) < 1e-9 * r[0] &&
          fabs(r[1] - 1e3 * seed[1]) < 1e-9 * r[1]);
    st_gemv_threads_observe(slot, 2, 5e-9 * (1 << 20), 1 << 20); /* then its own call */
    CHECK(st_gemv_threads_recent(slot, r) && fabs(r[1] - 5e-9) < 1e-18 &&
          fabs(r[0] - 1e3 * seed[0]) < 1e-9 * r[0]);
    st_gemv_threads_observe(slot, 1, 2e3 * seed[0] * (1 << 20), 1 << 20);
    CHECK(st_gemv_threads_recent(slot, r) &&
          fabs(r[0] - 1e3 * seed[0] * (1 + 1.0 / ST_GEMV_RECENT_RISE)) < 1e-9 * r[0]);
    CHECK(!st_gemv_threads_recent(-1, r) && !st_gemv_threads_recent(1000, r));
    int calibrated = st_gemv_threads(256, 256, 4 << 20, 4, 2);
    /* one thread seen to be far faster: one thread, but two for a few calls in a row now
    ** and then (a measurement made while another process had the other CPU says 1) */
    for (i = 0; i < 400; i++) {
        st_gemv_threads_observe(slot, 1, 1e-6, 1 << 20);
        st_gemv_threads_observe(slot, 2, 1.0, 1 << 20);
    }
    int run = 0, longest = 0, s2;
    for (i = 0; i < 2 * ST_GEMV_EXPLORE_N_EVERY; i++) {
        int t = st_gemv_threads_now(256, 256, 4 << 20, 4, 2, &s2);
        CHECK(s2 == slot && (t == 1 || t == 2));
        n += t == 2;
        run = t == 2 ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    CHECK(n == 2 * ST_GEMV_EXPLORE_N_CALLS && longest == ST_GEMV_EXPLORE_N_CALLS);
    /* then two seen to be faster (the other CPU free again): two, one thread now and then */
    for (i = 0; i < 400; i++) {
        st_gemv_threads_observe(slot, 1, 1.0, 1 << 20);
        st_gemv_threads_observe(slot, 2, 1e-6, 1 << 20);
    }
    n = 0;
    for (i = 0; i < 2 * ST_GEMV_EXPLORE_1_EVERY; i++)
        n += st_gemv_threads_now(256, 256, 4 << 20, 4, 2, &s2) == 1;
    CHECK(n == 2);
    /* estimates a few percent apart do not move it back (n -> 1 takes a tenth too) */
    for (i = 0; i < 400; i++) {
        st_gemv_threads_observe(slot, 1, 0.95, 1 << 20);
        st_gemv_threads_observe(slot, 2, 1.0, 1 << 20);
    }
    n = 0;
    for (i = 0; i < 2 * ST_GEMV_EXPLORE_1_EVERY; i++)
        n += st_gemv_threads_now(256, 256, 4 << 20, 4, 2, &s2) == 1;
    CHECK(n == 2);
    /* the calibrated answer (st_gemv_threads) is not moved by what calls took */
    CHECK(st_gemv_threads(256, 256, 4 << 20, 4, 2) == calibrated);
    /* a report for an entry forgotten since is dropped */
    st_gemv_forget();
    st_gemv_threads_observe(slot, 2, 1e-6, 1 << 20);
    st_gemv_threads_observe(-1, 2, 1e-6, 1 << 20);
    st_gemv_forget();
}

int main(void) {
    long shapes[][2] = {{1, 1},     {3, 5},     {4, 16},  {5, 17},   {7, 31}, {8, 33}, {64, 48},
                        {255, 256}, {256, 255}, {257, 1}, {1, 1027}, {0, 8},  {8, 0},  {3, 64},
                        {2, 65},    {5, 95},    {6, 127}, {4, 128},  {3, 200}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        check_shape(shapes[k][0], shapes[k][1]);
    /* the product is the same whichever of A's rows are taken four at a time */
    {
        float a[6 * 20], x[20], y6[6] = {0}, y1[6] = {0};
        for (int i = 0; i < 120; i++)
            a[i] = rnd();
        for (int j = 0; j < 20; j++)
            x[j] = rnd();
        st_gemv_n(6, 20, a, x, y6);
        for (int i = 0; i < 6; i++)
            st_gemv_n(1, 20, a + i * 20, x, y1 + i);
        for (int i = 0; i < 6; i++)
            CHECK(fabsf(y6[i] - y1[i]) <= 1e-5f);
    }
    check_pick();
    check_threads();
    check_threads_now();
    printf("test_st_gemv: ok\n");
    return 0;
}
