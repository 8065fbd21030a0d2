/* st_fork.c: fork() while another thread holds each engine lock. The child must be able
** to take every lock (a lock still held by a thread the child does not have would hang
** it: st_test_child_ok fails after its timeout). The arena lock and the views' and the
** routines table's are waited for; the pool's is waited for up to ST_FORK_POOL_WAIT_NS
** and then left behind (its holder may be a Python policy waiting for the GIL, which
** the forking thread holds), the child getting a fresh one. */
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "st_arena.h"
#include "st_fork.h"
#include "st_test.h"

typedef struct {
    pthread_mutex_t *lock;
    int hold_ms; /* <0: until released by main (`go`) */
    volatile int holding, go;
} holder;

static void *hold(void *arg) {
    holder *h = arg;
    pthread_mutex_lock(h->lock);
    __atomic_store_n(&h->holding, 1, __ATOMIC_RELEASE);
    if (h->hold_ms >= 0)
        usleep(h->hold_ms * 1000);
    else
        while (!__atomic_load_n(&h->go, __ATOMIC_ACQUIRE))
            usleep(1000);
    pthread_mutex_unlock(h->lock);
    return 0;
}

static volatile int churning = 1;
static void *churn(void *arg) {
    (void)arg;
    while (__atomic_load_n(&churning, __ATOMIC_ACQUIRE)) {
        void *p = st_page_alloc(ST_ARENA_MIN * 3);
        CHECK(p);
        st_page_free(p, ST_ARENA_MIN * 3);
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* The child takes every engine lock and pages of memory, then exits 0. */
static void child_uses_everything(int want_skipped) {
    if (st_fork_pool_skipped() != want_skipped)
        _exit(2);
    pthread_mutex_lock(&st_pool_mutex);
    pthread_mutex_lock(&st_views_mutex);
    pthread_mutex_lock(&st_api_mutex);
    void *p = st_page_alloc(ST_ARENA_MIN * 2);
    if (!p)
        _exit(3);
    st_page_free(p, ST_ARENA_MIN * 2);
    st_arena_figures f;
    st_arena_stats(&f);
    pthread_mutex_unlock(&st_api_mutex);
    pthread_mutex_unlock(&st_views_mutex);
    pthread_mutex_unlock(&st_pool_mutex);
    _exit(0);
}

/* fork while a thread holds `lock` (for hold_ms, or until after the fork when < 0) */
static double fork_while_held(pthread_mutex_t *lock, int hold_ms, int want_skipped) {
    holder h = {lock, hold_ms, 0, 0};
    pthread_t t;
    CHECK(pthread_create(&t, 0, hold, &h) == 0);
    while (!__atomic_load_n(&h.holding, __ATOMIC_ACQUIRE))
        usleep(100);
    double t0 = now();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        child_uses_everything(want_skipped);
    double waited = now() - t0;
    CHECK(st_fork_pool_skipped() == want_skipped);
    __atomic_store_n(&h.go, 1, __ATOMIC_RELEASE);
    pthread_join(t, 0);
    CHECK(st_test_child_ok(pid, 10));
    /* the parent's locks were given back */
    CHECK(pthread_mutex_trylock(lock) == 0);
    pthread_mutex_unlock(lock);
    return waited;
}

int main(void) {
    CHECK(st_fork_init() == 0);
    CHECK(st_fork_init() == 0); /* once per process */

    /* briefly held locks: fork waits for them, then the child has them free */
    CHECK(fork_while_held(&st_views_mutex, 50, 0) >= 0.03);
    CHECK(fork_while_held(&st_api_mutex, 50, 0) >= 0.03);
    CHECK(fork_while_held(&st_pool_mutex, 50, 0) >= 0.03);
    /* the pool's lock held past the wait: fork goes on without it */
    double waited = fork_while_held(&st_pool_mutex, -1, 1);
    CHECK(waited >= ST_FORK_POOL_WAIT_NS / 1e9 * 0.9 && waited < 5);

    /* forks while threads use the arena */
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], 0, churn, 0) == 0);
    for (int k = 0; k < 40; k++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            child_uses_everything(0);
        CHECK(st_test_child_ok(pid, 10));
    }
    __atomic_store_n(&churning, 0, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], 0);
    printf("test_st_fork: ok\n");
    return 0;
}
