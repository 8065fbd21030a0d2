/* sqlite-tensor: st_parallel_for, the kernels' thread pool; see st_parallel.h.
**
** The calling thread is joined by a process-wide set of worker threads, started on first
** use and kept: a hand-off (a condition variable) costs a wake-up, not a thread's start
** and end per call (the caller spins briefly for the last units, see st_join_spin). Each
** thread of a job owns a contiguous share of the units (the same share for the same job
** shape, so a layer that fits in the caches is found in the same core's caches call after
** call: a 16 MiB layer on two threads went 2-3x faster once each core re-read its own
** half), claims its own units one at a time (an atomic counter per share), and then
** takes units left in the others' shares, so a worker that wakes late, or a vCPU the host
** takes away for a while, leaves its share to the others instead of making them wait.
** A worker done with a job watches for the next one for 0.1 ms (ST_WORKER_SPIN_NS), then
** sleeps in pthread_cond_wait: an idle pool takes no core (a spinning thread would take a
** core from other work, and a spinning vCPU from the host).
** The workers serve one call at a time: a call that finds them busy (another
** connection's layer, on another thread) starts threads of its own for that call
** (contiguous ranges, one per thread; a range whose thread could not be started is run
** by the caller).
** After fork() the child has no workers: its fork handler (st_workers_after_fork) resets
** the pool's locks and state, and the child starts its own workers on first use.
** Not OpenMP: the OpenBLAS we link (a pthreads build) serialises calls made inside
** OpenMP regions. */
#define _GNU_SOURCE
#include "st_parallel.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

typedef struct {
    st_range_fn fn;
    void *ctx;
    long begin, end;
    int worker;
} st_range;
static void *st_range_main(void *p) {
    st_range *r = (st_range *)p;
    r->fn(r->ctx, r->begin, r->end, r->worker);
    return 0;
}
static struct {
    pthread_mutex_t busy;     /* held by the call whose ranges the workers run */
    pthread_mutex_t lock;     /* guards the fields below */
    pthread_cond_t wake;      /* workers: a new job (generation changed) */
    pthread_cond_t done;      /* the caller: no worker inside the job */
    int nworkers;             /* workers started, numbered 1 .. nworkers */
    int njob;                 /* threads of the current job: the caller and
                                  ** workers 1 .. njob-1 */
    unsigned long long state; /* the current job's entry word, see st_job_enter */
    st_range_fn fn;           /* the current job: fn(ctx, u, u + 1, worker) for */
    void *ctx;                /* every unit u < n, claimed through share[].next */
    long n;
    unsigned long generation;                       /* jobs handed out so far */
    unsigned long start_generation[ST_MAX_THREADS]; /* a worker's first `seen` */
    pthread_t tids[ST_MAX_THREADS];
    int excluded_cpu; /* the CPU the workers are kept off (-1: none) */
    int atfork;       /* the fork handler is registered */
} st_workers = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                PTHREAD_COND_INITIALIZER, .excluded_cpu = -1};
/* A worker runs units of a job only once it has entered it, and it can enter only until the
** caller closes the job. The caller closes it when every unit has been claimed (its own
** and what the others left) and then waits only for the workers inside: a worker whose
** vCPU is busy elsewhere (another process on a shared 2-core machine) and that wakes
** late finds the job closed and leaves it, instead of holding the caller for a scheduler
** time slice (seen with other processes running: a 4 MiB layer on two threads at 0.154
** ms a call, median, against 0.104 on one). state: the job's generation (low 32 bits)
** << 32 | ST_JOB_CLOSED | workers inside. */
#define ST_JOB_CLOSED (1ULL << 31)
#define ST_JOB_INSIDE 0x7fffffffULL
static int st_job_enter(unsigned long generation) {
    unsigned long long s = __atomic_load_n(&st_workers.state, __ATOMIC_ACQUIRE);
    for (;;) {
        if ((s >> 32) != (generation & 0xffffffffUL) || (s & ST_JOB_CLOSED))
            return 0;
        if (__atomic_compare_exchange_n(&st_workers.state, &s, s + 1, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return 1;
    }
}
static void st_job_leave(void) {
    if ((__atomic_sub_fetch(&st_workers.state, 1, __ATOMIC_ACQ_REL) & ST_JOB_INSIDE) == 0) {
        pthread_mutex_lock(&st_workers.lock); /* the caller may be blocked on done */
        pthread_cond_signal(&st_workers.done);
        pthread_mutex_unlock(&st_workers.lock);
    }
}
static int st_job_busy(void) {
    return (__atomic_load_n(&st_workers.state, __ATOMIC_ACQUIRE) & ST_JOB_INSIDE) != 0;
}

/* Thread k's share of the current job: units [n k / njob, n (k + 1) / njob), the next one
** to claim (a cache line each: the threads claim at once). */
static struct {
    long next, end;
    char pad[48];
} __attribute__((aligned(64))) st_share[ST_MAX_THREADS];

static void st_shares_set(long n, int njob) {
    for (int k = 0; k < njob; k++) {
        st_share[k].next = n * k / njob;
        st_share[k].end = n * (k + 1) / njob;
    }
}

/* Worker k's own share first, then what is left of the others' (k + 1, k + 2, ...). */
static long st_claim_units(int worker) {
    long u, done = 0;
    int njob = st_workers.njob;
    for (int i = 0; i < njob; i++) {
        int k = (worker + i) % njob;
        while ((u = __atomic_fetch_add(&st_share[k].next, 1, __ATOMIC_RELAXED)) < st_share[k].end) {
            st_workers.fn(st_workers.ctx, u, u + 1, worker);
            done++;
        }
    }
    return done;
}
static long long st_mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}
/* The caller, its units done, waits for the workers' last ones (those inside the job).
** Blocking at once let its vCPU halt, and the worker's wake-up then reached it late: on
** this 2-vCPU guest the two-thread layer took 1.6 - 2.5 ms a call against 1.45 with the caller spinning
** (numpy / ours 0.59 -> 0.81). So the caller first spins, up to about two of its own
** units' time (by then a worker has at most one unit left), at least 20 us and at
** most 1 ms; then it blocks. It spins only while its own call is still being
** computed; idle workers never spin. */
static void st_join_spin(long long budget_ns) {
    long long end;
    int i = 0;
    if (budget_ns < 20000)
        budget_ns = 20000;
    if (budget_ns > 1000000)
        budget_ns = 1000000;
    end = st_mono_ns() + budget_ns;
    while (st_job_busy()) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (++i % 64 == 0 && st_mono_ns() > end)
            return;
    }
}
/* A worker, its job done, watches for the next one this long before it sleeps. Waking a
** sleeping worker costs tens of microseconds in a guest (its vCPU halted): as much as a
** whole small layer (a 4 MiB one takes 30 - 60 us), so on two threads such a layer took
** as long as on one. Jobs that follow each other closely (the layers of one predict, the
** predicts of a loop) now find the worker awake; an idle pool still sleeps after this. */
#define ST_WORKER_SPIN_NS 100000

static void st_worker_linger(unsigned long seen) {
    long long end = st_mono_ns() + ST_WORKER_SPIN_NS;
    int i = 0;
    while (__atomic_load_n(&st_workers.generation, __ATOMIC_ACQUIRE) == seen) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (++i % 64 == 0 && st_mono_ns() > end)
            return;
    }
}

static void *st_worker_main(void *p) {
    int k = (int)(size_t)p;
    unsigned long seen;
#ifdef __GLIBC__
    pthread_setname_np(pthread_self(), "st-kernel");
#endif
    pthread_mutex_lock(&st_workers.lock);
    seen = st_workers.start_generation[k]; /* not generation: a job may have started */
    for (;;) {
        while (st_workers.generation == seen)
            pthread_cond_wait(&st_workers.wake, &st_workers.lock);
        seen = st_workers.generation;
        if (k < st_workers.njob) {
            pthread_mutex_unlock(&st_workers.lock);
            if (st_job_enter(seen)) {
                st_claim_units(k);
                st_job_leave();
            }
            st_worker_linger(seen);
            pthread_mutex_lock(&st_workers.lock);
        }
    }
    return 0;
}
static void st_workers_after_fork(void) {
    /* the child: the workers did not come along, and the locks may have been held */
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    st_workers.busy = m;
    st_workers.lock = m;
    st_workers.wake = c;
    st_workers.done = c;
    st_workers.nworkers = 0;
    st_workers.njob = 0;
    st_workers.state = 0;
    st_workers.excluded_cpu = -1;
}
/* Start workers up to `want` (called holding busy: only one caller starts them). */
static void st_workers_start(int want) {
    pthread_attr_t attr;
    pthread_t tid;
    if (!st_workers.atfork)
        st_workers.atfork = pthread_atfork(0, 0, st_workers_after_fork) == 0;
    if (!st_workers.atfork || pthread_attr_init(&attr) != 0)
        return; /* without the fork handler a forked child would wait for no one */
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (st_workers.nworkers < want) {
        pthread_mutex_lock(&st_workers.lock);
        st_workers.start_generation[st_workers.nworkers + 1] = st_workers.generation;
        int ok = pthread_create(&tid, &attr, st_worker_main,
                                (void *)(size_t)(st_workers.nworkers + 1)) == 0;
        if (ok)
            st_workers.tids[++st_workers.nworkers] = tid;
        st_workers.excluded_cpu = -1; /* the new one is not steered yet */
        pthread_mutex_unlock(&st_workers.lock);
        if (!ok)
            break;
    }
    pthread_attr_destroy(&attr);
}
/* Keep the workers off the caller's CPU. A worker woken by the caller is otherwise
** queued on the caller's own CPU (the scheduler's wake-affine choice), and with the
** other CPU idle in a guest nothing moves it until the caller blocks: the two halves
** of a layer then ran one after the other (seen on this 2-vCPU machine: 2.4-4 ms for
** a 64 MiB layer on two threads, 2.6 ms on one). Called holding busy; re-done only
** when the caller is found on another CPU (a system call per worker). */
static void st_workers_steer(void) {
#if defined(__linux__) && defined(CPU_SET)
    int cpu = sched_getcpu(), k;
    cpu_set_t set;
    if (cpu < 0 || cpu == st_workers.excluded_cpu || cpu >= CPU_SETSIZE)
        return;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    CPU_CLR(cpu, &set);
    if (CPU_COUNT(&set) == 0)
        return; /* the caller may only run here: leave them be */
    for (k = 1; k <= st_workers.nworkers; k++)
        pthread_setaffinity_np(st_workers.tids[k], sizeof set, &set);
    st_workers.excluded_cpu = cpu;
#endif
}
static void st_parallel_for_spawn(int nthreads, st_range *ranges) {
    /* the old way: threads of this call's own */
    pthread_t tids[ST_MAX_THREADS];
    int started[ST_MAX_THREADS];
    int i;
    for (i = 1; i < nthreads; i++)
        started[i] = pthread_create(&tids[i], 0, st_range_main, &ranges[i]) == 0;
    for (i = 1; i < nthreads; i++)
        if (!started[i])
            st_range_main(&ranges[i]);
    st_range_main(&ranges[0]);
    for (i = 1; i < nthreads; i++)
        if (started[i])
            pthread_join(tids[i], 0);
}
void st_parallel_for(int nthreads, long n, st_range_fn fn, void *ctx) {
    st_range ranges[ST_MAX_THREADS];
    int i, njob;
    if (nthreads > n)
        nthreads = (int)n;
    if (nthreads > ST_MAX_THREADS)
        nthreads = ST_MAX_THREADS;
    if (nthreads < 1)
        nthreads = 1;
    for (i = 0; i < nthreads; i++) {
        ranges[i].fn = fn;
        ranges[i].ctx = ctx;
        ranges[i].worker = i;
        ranges[i].begin = n * i / nthreads;
        ranges[i].end = n * (i + 1) / nthreads;
    }
    if (nthreads == 1) {
        st_range_main(&ranges[0]);
        return;
    }
    if (pthread_mutex_trylock(&st_workers.busy) != 0) {
        st_parallel_for_spawn(nthreads, ranges);
        return;
    }
    st_workers_start(nthreads - 1);
    st_workers_steer();
    njob = st_workers.nworkers + 1 < nthreads ? st_workers.nworkers + 1 : nthreads;
    pthread_mutex_lock(&st_workers.lock);
    st_workers.fn = fn;
    st_workers.ctx = ctx;
    st_workers.n = n;
    st_workers.njob = njob;
    st_shares_set(n, njob);
    unsigned long gen = st_workers.generation + 1;
    __atomic_store_n(&st_workers.state, (unsigned long long)(gen & 0xffffffffUL) << 32,
                     __ATOMIC_RELEASE);
    __atomic_store_n(&st_workers.generation, gen, __ATOMIC_RELEASE); /* read by lingerers */
    if (njob > 1)
        pthread_cond_broadcast(&st_workers.wake);
    pthread_mutex_unlock(&st_workers.lock);
    long long t0 = st_mono_ns();
    long mine = st_claim_units(0); /* then every unit is claimed: close the job */
    __atomic_fetch_or(&st_workers.state, ST_JOB_CLOSED, __ATOMIC_ACQ_REL);
    if (njob > 1 && st_job_busy())
        st_join_spin(mine > 0 ? 2 * (st_mono_ns() - t0) / mine : 200000);
    pthread_mutex_lock(&st_workers.lock);
    while (st_job_busy())
        pthread_cond_wait(&st_workers.done, &st_workers.lock);
    st_workers.njob = 0;
    pthread_mutex_unlock(&st_workers.lock);
    pthread_mutex_unlock(&st_workers.busy);
}

int st_parallel_workers(void) {
    int n;
    pthread_mutex_lock(&st_workers.lock);
    n = st_workers.nworkers;
    pthread_mutex_unlock(&st_workers.lock);
    return n;
}
