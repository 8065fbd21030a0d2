/* sqlite-tensor: the engine's locks across fork(); see st_fork.h.
**
** A child has only the thread that called fork(). A lock another thread held at that
** moment stays held in the child forever, and the data it guards may be half changed.
** So the prepare handler takes the engine's locks (the forking thread then holds them
** all, and no structure is mid-change), the parent releases them, and the child makes
** fresh ones (its thread is the holder; a fresh lock is the same as a released one).
**
** The pool's lock is the exception: a Python cache policy runs under it and needs the
** GIL, which the forking thread (os.fork) holds; waiting for it there would never end.
** So prepare tries it for up to ST_FORK_POOL_WAIT_NS (the pool's other holders keep it
** for microseconds) and otherwise goes on without it: the child still gets a fresh lock
** (no deadlock), and the pool as the policy's caller left it, at its call to the policy.
*/
#define _GNU_SOURCE
#include "st_fork.h"

#include <sched.h>
#include <time.h>

#include "st_arena.h"

pthread_mutex_t st_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t st_views_mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t st_api_mutex = PTHREAD_MUTEX_INITIALIZER;

static pthread_once_t st_fork_once = PTHREAD_ONCE_INIT;
static int st_fork_registered = -1; /* pthread_atfork's result */
static int st_fork_pool_held;       /* prepare took the pool's lock */
static int st_fork_pool_missed;

static long long st_fork_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void st_fork_prepare(void) {
    long long end = st_fork_now_ns() + ST_FORK_POOL_WAIT_NS;
    st_fork_pool_held = 0;
    while (!(st_fork_pool_held = pthread_mutex_trylock(&st_pool_mutex) == 0) &&
           st_fork_now_ns() < end)
        sched_yield();
    st_fork_pool_missed = !st_fork_pool_held;
    st_arena_fork_prepare();
    pthread_mutex_lock(&st_views_mutex);
    pthread_mutex_lock(&st_api_mutex);
}

static void st_fork_parent(void) {
    pthread_mutex_unlock(&st_api_mutex);
    pthread_mutex_unlock(&st_views_mutex);
    st_arena_fork_parent();
    if (st_fork_pool_held)
        pthread_mutex_unlock(&st_pool_mutex);
}

static void st_fork_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    st_api_mutex = fresh;
    st_views_mutex = fresh;
    st_arena_fork_child();
    st_pool_mutex = fresh;
}

static void st_fork_register(void) {
    st_fork_registered = pthread_atfork(st_fork_prepare, st_fork_parent, st_fork_child);
}

int st_fork_init(void) {
    pthread_once(&st_fork_once, st_fork_register);
    return st_fork_registered;
}

int st_fork_pool_skipped(void) {
    return st_fork_pool_missed;
}
