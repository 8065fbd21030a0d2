# Forward pass over page-resident blocks.
#
# A weight is never reassembled: each tile is used where it sits in its pinned page.
#   dense, W (out x in):   Y[:, bi-range] += X[:, bj-range] @ T^T     (T: tile (bi, bj))
#   dense, W (in x out):   Y[:, bj-range] += X[:, bi-range] @ T
# Batches use sgemm per tile, a single input sgemv per tile (the memory-bound case); BLAS
# itself runs single-threaded and our threads split the tiles (dense()).
# Edge tiles are stored trimmed, so their own extent (br x bc) is their leading dimension
# and no padding is read. Non-float32 tiles are widened into a scratch tile first.
#
# Residuals (float32 tiles; format in sqlite_tensor/residuals.py): the effective tile is
# T + residual, never rebuilt as such for low-rank ones:
#   low-rank (U br x r, V bc x r):  W (out x in)  Y[:, bi-range] += (X[:, bj-range] @ V) @ U^T
#                                   W (in x out)  Y[:, bj-range] += (X[:, bi-range] @ U) @ V^T
#   quantized: dequantized into the worker's scratch tile as T + residual, then the usual
#   product on the scratch tile.
# The calling thread pins residual pages with the block pages; workers get pointers.

from libc.math cimport expf, tanhf, erff

cdef extern from *:
    """
    #include <pthread.h>
    #include <sched.h>
    #include <time.h>
    /* parallel_for: fn(ctx, begin, end, worker) over [0, n), on up to nthreads threads,
    ** the calling thread among them (worker 0); it returns when all of [0, n) is done.
    ** `worker` is unique among the threads running at once (for per-thread scratch).
    **
    ** The calling thread is joined by a process-wide set of worker threads, started on
    ** first use and kept: a hand-off (a condition variable) costs a wake-up, not a
    ** thread's start and end per call (the caller spins briefly for the last units, see
    ** st_join_spin). The threads claim units one at a time (an atomic
    ** counter), so a worker that wakes late, or a vCPU the host takes away for a while,
    ** leaves its share to the others instead of making them wait for it. Idle workers sleep in pthread_cond_wait: nothing spins (a spinning
    ** thread would take a core from other work, and a spinning vCPU from the host). The
    ** workers serve one call at a time: a call that finds them busy (another connection's
    ** layer, on another thread) starts threads of its own for that call, as every call
    ** did before (contiguous ranges, one per thread; a range whose thread could not be
    ** started is run by the caller).
    ** After fork() the child has no workers: it starts its own on first use.
    ** Not OpenMP: the OpenBLAS we link (a pthreads build) serialises calls made inside
    ** OpenMP regions. */
    typedef void (*st_range_fn)(void *ctx, long begin, long end, int worker);
    typedef struct { st_range_fn fn; void *ctx; long begin, end; int worker; } st_range;
    #define ST_MAX_THREADS 256
    static void *st_range_main(void *p) {
        st_range *r = (st_range *)p;
        r->fn(r->ctx, r->begin, r->end, r->worker);
        return 0;
    }
    static struct {
        pthread_mutex_t busy;         /* held by the call whose ranges the workers run */
        pthread_mutex_t lock;         /* guards the fields below */
        pthread_cond_t wake;          /* workers: a new job (generation changed) */
        pthread_cond_t done;          /* the caller: pending reached 0 */
        int nworkers;                 /* workers started, numbered 1 .. nworkers */
        int njob;                     /* threads of the current job: the caller and
                                      ** workers 1 .. njob-1 */
        int pending;                  /* workers of the job not finished yet */
        st_range_fn fn;               /* the current job: fn(ctx, u, u + 1, worker) for */
        void *ctx;                    /* every unit u < n, claimed through `next` */
        long n, next;
        unsigned long generation;     /* jobs handed out so far */
        unsigned long start_generation[ST_MAX_THREADS];  /* a worker's first `seen` */
        pthread_t tids[ST_MAX_THREADS];
        int excluded_cpu;             /* the CPU the workers are kept off (-1: none) */
        int atfork;                   /* the fork handler is registered */
    } st_workers = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                    PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, .excluded_cpu = -1};
    static long st_claim_units(int worker) {
        long u, done = 0;
        while ((u = __atomic_fetch_add(&st_workers.next, 1, __ATOMIC_RELAXED)) < st_workers.n) {
            st_workers.fn(st_workers.ctx, u, u + 1, worker);
            done++;
        }
        return done;
    }
    static long long st_mono_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
    }
    /* The caller, its units done, waits for the workers' last ones. Blocking at once let
    ** its vCPU halt, and the worker's wake-up then reached it late: on this 2-vCPU guest
    ** the two-thread layer took 1.6 - 2.5 ms a call against 1.45 with the caller spinning
    ** (numpy / ours 0.59 -> 0.81). So the caller first spins, up to about two of its own
    ** units' time (by then a worker has at most one unit left), at least 20 us and at
    ** most 1 ms; then it blocks. It spins only while its own call is still being
    ** computed; idle workers never spin. */
    static void st_join_spin(long long budget_ns) {
        long long end;
        int i = 0;
        if (budget_ns < 20000) budget_ns = 20000;
        if (budget_ns > 1000000) budget_ns = 1000000;
        end = st_mono_ns() + budget_ns;
        while (__atomic_load_n(&st_workers.pending, __ATOMIC_ACQUIRE) > 0) {
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #endif
            if (++i % 64 == 0 && st_mono_ns() > end) return;
        }
    }
    static void *st_worker_main(void *p) {
        int k = (int)(size_t)p;
        unsigned long seen;
    #ifdef __GLIBC__
        pthread_setname_np(pthread_self(), "st-kernel");
    #endif
        pthread_mutex_lock(&st_workers.lock);
        seen = st_workers.start_generation[k];  /* not generation: a job may have started */
        for (;;) {
            while (st_workers.generation == seen)
                pthread_cond_wait(&st_workers.wake, &st_workers.lock);
            seen = st_workers.generation;
            if (k < st_workers.njob) {
                pthread_mutex_unlock(&st_workers.lock);
                st_claim_units(k);
                pthread_mutex_lock(&st_workers.lock);
                if (__atomic_sub_fetch(&st_workers.pending, 1, __ATOMIC_RELEASE) == 0)
                    pthread_cond_signal(&st_workers.done);
            }
        }
        return 0;
    }
    static void st_workers_after_fork(void) {
        /* the child: the workers did not come along, and the locks may have been held */
        pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t c = PTHREAD_COND_INITIALIZER;
        st_workers.busy = m; st_workers.lock = m;
        st_workers.wake = c; st_workers.done = c;
        st_workers.nworkers = 0; st_workers.njob = 0; st_workers.pending = 0;
        st_workers.excluded_cpu = -1;
    }
    /* Start workers up to `want` (called holding busy: only one caller starts them). */
    static void st_workers_start(int want) {
        pthread_attr_t attr;
        pthread_t tid;
        if (!st_workers.atfork)
            st_workers.atfork = pthread_atfork(0, 0, st_workers_after_fork) == 0;
        if (!st_workers.atfork || pthread_attr_init(&attr) != 0)
            return;  /* without the fork handler a forked child would wait for no one */
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        while (st_workers.nworkers < want) {
            pthread_mutex_lock(&st_workers.lock);
            st_workers.start_generation[st_workers.nworkers + 1] = st_workers.generation;
            int ok = pthread_create(&tid, &attr, st_worker_main,
                                    (void *)(size_t)(st_workers.nworkers + 1)) == 0;
            if (ok) st_workers.tids[++st_workers.nworkers] = tid;
            st_workers.excluded_cpu = -1;  /* the new one is not steered yet */
            pthread_mutex_unlock(&st_workers.lock);
            if (!ok) break;
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
        if (cpu < 0 || cpu == st_workers.excluded_cpu || cpu >= CPU_SETSIZE) return;
        if (sched_getaffinity(0, sizeof set, &set) != 0) return;
        CPU_CLR(cpu, &set);
        if (CPU_COUNT(&set) == 0) return;   /* the caller may only run here: leave them be */
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
            if (!started[i]) st_range_main(&ranges[i]);
        st_range_main(&ranges[0]);
        for (i = 1; i < nthreads; i++)
            if (started[i]) pthread_join(tids[i], 0);
    }
    static void st_parallel_for(int nthreads, long n, st_range_fn fn, void *ctx) {
        st_range ranges[ST_MAX_THREADS];
        int i, njob;
        if (nthreads > n) nthreads = (int)n;
        if (nthreads > ST_MAX_THREADS) nthreads = ST_MAX_THREADS;
        if (nthreads < 1) nthreads = 1;
        for (i = 0; i < nthreads; i++) {
            ranges[i].fn = fn; ranges[i].ctx = ctx; ranges[i].worker = i;
            ranges[i].begin = n * i / nthreads; ranges[i].end = n * (i + 1) / nthreads;
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
        st_workers.fn = fn; st_workers.ctx = ctx;
        st_workers.n = n; st_workers.next = 0;
        st_workers.njob = njob;
        st_workers.pending = njob - 1;
        st_workers.generation++;
        if (njob > 1) pthread_cond_broadcast(&st_workers.wake);
        pthread_mutex_unlock(&st_workers.lock);
        long long t0 = st_mono_ns();
        long mine = st_claim_units(0);
        if (njob > 1)
            st_join_spin(mine > 0 ? 2 * (st_mono_ns() - t0) / mine : 200000);
        pthread_mutex_lock(&st_workers.lock);
        while (st_workers.pending > 0)
            pthread_cond_wait(&st_workers.done, &st_workers.lock);
        st_workers.njob = 0;
        pthread_mutex_unlock(&st_workers.lock);
        pthread_mutex_unlock(&st_workers.busy);
    }
    """
    ctypedef void (*st_range_fn)(void *ctx, long begin, long end, int worker) noexcept nogil
    void st_parallel_for(int nthreads, long n, st_range_fn fn, void *ctx) nogil

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    enum:
        _SC_NPROCESSORS_ONLN

cdef enum:
    CHUNK_BYTES = 64 * 1024 * 1024     # tiles pinned at once by a threaded dense layer
    PASS_BYTES = 64 * 1024 * 1024      # activations of one pass over the layers (forward)
    MIN_PARALLEL_MACS = 1 << 20        # below this a layer runs on one thread
    LOWRANK_ROWS = 256                 # batch rows per low-rank product (sizes its scratch)

cdef int st_threads          # the thread setting; 0 = one per online CPU


cdef int kernel_threads(sqlite3_int64 macs) noexcept nogil:
    """Threads for a layer of this many multiply-adds: small layers are not worth waking
    threads for."""
    cdef long n = st_threads if st_threads > 0 else sysconf(_SC_NPROCESSORS_ONLN)
    if macs < MIN_PARALLEL_MACS or n < 1:
        return 1
    return <int>min(n, 256)

cdef extern from * nogil:
    """
    /* IEEE half -> float, exact (subnormals, infinities and NaN payloads kept). */
    static inline float st_half_to_float(uint16_t h) {
        uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
        if (exp == 0) {
            if (man == 0) f = sign;
            else { exp = 113; while (!(man & 0x400u)) { man <<= 1; exp--; }
                   f = sign | (exp << 23) | ((man & 0x3ffu) << 13); }
        } else if (exp == 31) f = sign | 0x7f800000u | (man << 13);
        else f = sign | ((exp + 112) << 23) | (man << 13);
        float out; memcpy(&out, &f, 4); return out;
    }
    /* Matrix-vector products for one input: memory-bound, so a simple vectorised loop
    ** keeps up with memory, and unlike OpenBLAS's sgemv it takes no lock (OpenBLAS takes
    ** a global one for its work buffer), so threads calling it in parallel scale.
    ** target_clones compiles one copy per instruction set and picks one at load time by
    ** CPU features (not "arch=": that matches exact CPU models only).
    ** Sixteen independent partial sums per row let the compiler vectorise without
    ** reassociating. */
    /* Software prefetch, this many bytes ahead of each row stream, within the tile. A tile's
    ** rows are short (1 KiB at 256 columns) and the four streams restart at every 4 KiB, so
    ** the hardware prefetcher alone ramps up too late: with it a cached 4096 x 4096 layer
    ** took 0.76-0.87 of OpenBLAS's sgemv's time over the same matrix right after that had
    ** run (the caches holding its matrix, not ours) without it, and 1.02-1.09 with it (a C
    ** microbenchmark, docs/benchmarks.md). Prefetches never fault; the bound only avoids
    ** reading past the tile. */
    #define ST_PREFETCH_BYTES 6144
    __attribute__((target_clones("avx512f", "avx2", "default")))
    static void st_gemv_n(long m, long n, const float *restrict a, const float *restrict x,
                          float *restrict y) {
        /* y[0:m] += A x, A row-major m x n; four rows at a time (four independent streams) */
        const char *end = (const char *)(a + m * n);
        long i = 0;
        for (; i + 4 <= m; i += 4) {
            const float *a0 = a + i * n, *a1 = a0 + n, *a2 = a1 + n, *a3 = a2 + n;
            float c0[16] = {0}, c1[16] = {0}, c2[16] = {0}, c3[16] = {0};
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            long j = 0;
            for (; j + 16 <= n; j += 16) {
                const char *p = (const char *)(a0 + j) + ST_PREFETCH_BYTES;
                if (p + 3 * n * sizeof(float) < end) {
                    __builtin_prefetch(p);
                    __builtin_prefetch(p + n * sizeof(float));
                    __builtin_prefetch(p + 2 * n * sizeof(float));
                    __builtin_prefetch(p + 3 * n * sizeof(float));
                }
                for (int k = 0; k < 16; k++) {
                    float xv = x[j + k];
                    c0[k] += a0[j + k] * xv; c1[k] += a1[j + k] * xv;
                    c2[k] += a2[j + k] * xv; c3[k] += a3[j + k] * xv;
                }
            }
            for (int k = 0; k < 16; k++) { s0 += c0[k]; s1 += c1[k]; s2 += c2[k]; s3 += c3[k]; }
            for (; j < n; j++) {
                s0 += a0[j] * x[j]; s1 += a1[j] * x[j]; s2 += a2[j] * x[j]; s3 += a3[j] * x[j];
            }
            y[i] += s0; y[i + 1] += s1; y[i + 2] += s2; y[i + 3] += s3;
        }
        for (; i < m; i++) {
            const float *ai = a + i * n;
            float s = 0;
            for (long j = 0; j < n; j++) s += ai[j] * x[j];
            y[i] += s;
        }
    }
    __attribute__((target_clones("avx512f", "avx2", "default")))
    static void st_gemv_t(long m, long n, const float *restrict a, const float *restrict x,
                          float *restrict y) {
        /* y[0:n] += A^T x, A row-major m x n: one stream through A, prefetched as above */
        const char *end = (const char *)(a + m * n);
        for (long i = 0; i < m; i++, a += n) {
            float xi = x[i];
            for (long j = 0; j < n; j += 16) {
                const char *p = (const char *)(a + j) + ST_PREFETCH_BYTES;
                if (p < end) __builtin_prefetch(p);
            }
            for (long j = 0; j < n; j++) y[j] += xi * a[j];
        }
    }
    static inline float st_bf16_to_float(uint16_t h) {
        uint32_t f = (uint32_t)h << 16; float out; memcpy(&out, &f, 4); return out;
    }
    """
    float st_half_to_float(unsigned short h)
    void st_gemv_n(long m, long n, const float *a, const float *x, float *y)
    void st_gemv_t(long m, long n, const float *a, const float *x, float *y)
    float st_bf16_to_float(unsigned short h)


ctypedef struct Input:
    sqlite3_int64 batch           # rows of input
    const float *x                # INPUT_FEATURES: batch x n_in, row-major
    const int64_t *ids            # INPUT_IDS: batch ids; INPUT_BAGS: every bag's ids, concatenated
    const int64_t *offsets        # INPUT_BAGS: bag b is ids[offsets[b]:offsets[b+1]] (batch + 1)


ctypedef struct TileCursor:
    Plan *plan
    PoolPage *page                # the page pinned now, or NULL
    PoolPage *res_page            # the residual page pinned now, or NULL
    float *scratch                # block_rows * block_cols floats, for widening


cdef int cursor_tile(TileCursor *c, Weight *w, sqlite3_int64 bi, sqlite3_int64 bj,
                     sqlite3_int64 br, sqlite3_int64 bc, const unsigned char **out,
                     char **err) noexcept nogil:
    """Point out at tile (bi, bj) of w in its page, pinning the page (and unpinning the
    previous one when the tile lives elsewhere)."""
    cdef sqlite3_int64 k = bi * w.grid_c + bj
    cdef int rc
    if c.page == NULL or c.page.page_id != w.page_ids[k]:
        if c.page != NULL:
            pool_unpin(c.page)
            c.page = NULL
        rc = pool_pin(&c.plan.src, w.page_ids[k], &c.page, err)
        if rc != SQLITE_OK:
            return rc
    return page_slot(c.page, w.slots[k], br * bc * w.itemsize, c.plan.src.table, out, err)


cdef int cursor_residual(TileCursor *c, Weight *w, sqlite3_int64 k, sqlite3_int64 br,
                         sqlite3_int64 bc, const unsigned char **out, char **err) noexcept nogil:
    """Point out at the residual payload of tile k of w (which has one), pinning its page
    beside the block page."""
    cdef int rc
    if c.res_page == NULL or c.res_page.page_id != w.res_page[k]:
        if c.res_page != NULL:
            pool_unpin(c.res_page)
            c.res_page = NULL
        rc = pool_pin(&c.plan.src, w.res_page[k], &c.res_page, err)
        if rc != SQLITE_OK:
            return rc
    return page_slot(c.res_page, w.res_slot[k], residual_bytes(w.res_kind[k], w.res_param[k], br, bc),
                     c.plan.src.table, out, err)


cdef inline bint has_residual(const Weight *w, sqlite3_int64 k) noexcept nogil:
    return w.res_kind != NULL and w.res_kind[k] != 0


cdef void cursor_release(TileCursor *c) noexcept nogil:
    if c.page != NULL:
        pool_unpin(c.page)
        c.page = NULL
    if c.res_page != NULL:
        pool_unpin(c.res_page)
        c.res_page = NULL


cdef void widen(const unsigned char *src, int dtype, sqlite3_int64 n, float *dst) noexcept nogil:
    """dst[0:n] = src[0:n] as float32."""
    cdef sqlite3_int64 i
    cdef const unsigned short *h = <const unsigned short *>src
    cdef const double *d = <const double *>src
    if dtype == DT_F32:
        memcpy(dst, src, n * 4)
    elif dtype == DT_F16:
        for i in range(n):
            dst[i] = st_half_to_float(h[i])
    elif dtype == DT_BF16:
        for i in range(n):
            dst[i] = st_bf16_to_float(h[i])
    else:
        for i in range(n):
            dst[i] = <float>d[i]


cdef inline const float *as_f32(TileCursor *c, const unsigned char *tile, int dtype,
                                sqlite3_int64 n) noexcept nogil:
    """The tile as float32: itself when stored so, else widened into the scratch tile."""
    if dtype == DT_F32:
        return <const float *>tile
    widen(tile, dtype, n, c.scratch)
    return c.scratch


cdef int gather(TileCursor *c, Weight *w, float *out, char **err) noexcept nogil:
    """out = the whole tensor (rows x cols, float32); for small tensors such as biases."""
    cdef sqlite3_int64 bi, bj, br, bc, r
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef const unsigned char *tile
    cdef const unsigned char *res
    cdef const float *t
    cdef int rc
    for bi in range(w.grid_r):
        br = min(R, w.rows - bi * R)
        for bj in range(w.grid_c):
            bc = min(C, w.cols - bj * C)
            rc = cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            t = as_f32(c, tile, w.dtype, br * bc)
            for r in range(br):
                memcpy(out + (bi * R + r) * w.cols + bj * C, t + r * bc, bc * sizeof(float))
            if has_residual(w, bi * w.grid_c + bj):
                rc = cursor_residual(c, w, bi * w.grid_c + bj, br, bc, &res, err)
                if rc != SQLITE_OK:
                    return rc
                residual_add(w.res_kind[bi * w.grid_c + bj], w.res_param[bi * w.grid_c + bj],
                             res, br, bc, out + bi * R * w.cols + bj * C, w.cols)
    return SQLITE_OK


cdef void tile_product(const Layer *L, const unsigned char *tile, const unsigned char *res,
                       int res_kind, int res_param, sqlite3_int64 bi, sqlite3_int64 bj,
                       sqlite3_int64 br, sqlite3_int64 bc, sqlite3_int64 R, sqlite3_int64 C,
                       const float *X, sqlite3_int64 B, float *Y, float *scratch,
                       float *lowrank) noexcept nogil:
    """Y += the product of X with tile (bi, bj) of L's weight (br x bc, stored trimmed),
    plus its residual (res_kind 0: none).

    W (out x in):  Y[:, bi*R : bi*R+br] += X[:, bj*C : bj*C+bc] @ T^T
    W (in x out):  Y[:, bj*C : bj*C+bc] += X[:, bi*R : bi*R+br] @ T
    One input is a matrix-vector product (st_gemv_*), a batch a matrix-matrix one
    (single-threaded BLAS sgemm: the threads split tiles, see dense()). A quantized
    residual is added to a copy of T in scratch; a low-rank one is its own thin product
    (lowrank_product, with min(B, LOWRANK_ROWS) x rank floats at lowrank).
    """
    cdef const float *T = <const float *>tile
    if L.weight.dtype != DT_F32:
        widen(tile, L.weight.dtype, br * bc, scratch)
        T = scratch
    if res_kind == RES_QUANTIZED:
        if T != scratch:
            memcpy(scratch, T, br * bc * sizeof(float))
        residual_add(res_kind, res_param, res, br, bc, scratch, bc)
        T = scratch
    elif res_kind == RES_LOWRANK:
        lowrank_product(L, res, res_param, bi, bj, br, bc, R, C, X, B, Y, lowrank)
    if not L.transpose:
        if B == 1:
            st_gemv_n(br, bc, T, X + bj * C, Y + bi * R)
        else:
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>B, <int>br, <int>bc,
                              1.0, X + bj * C, <int>L.n_in, T, <int>bc, 1.0, Y + bi * R,
                              <int>L.n_out)
    elif B == 1:
        st_gemv_t(br, bc, T, X + bi * R, Y + bj * C)
    else:
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>B, <int>bc, <int>br,
                          1.0, X + bi * R, <int>L.n_in, T, <int>bc, 1.0, Y + bj * C, <int>L.n_out)


cdef void lowrank_product(const Layer *L, const unsigned char *res, int rank, sqlite3_int64 bi,
                          sqlite3_int64 bj, sqlite3_int64 br, sqlite3_int64 bc, sqlite3_int64 R,
                          sqlite3_int64 C, const float *X, sqlite3_int64 B, float *Y,
                          float *tmp) noexcept nogil:
    """Y += the low-rank residual's product, U V^T never formed:
    W (out x in):  Y[:, bi-range] += (X[:, bj-range] @ V) @ U^T
    W (in x out):  Y[:, bj-range] += (X[:, bi-range] @ U) @ V^T
    tmp holds the (rows x rank) intermediate, LOWRANK_ROWS rows of the batch at a time."""
    cdef const float *U = <const float *>res
    cdef const float *V = U + br * rank
    cdef const float *first      # (in_w x rank): applied to the inputs
    cdef const float *second     # (out_w x rank): back to the outputs
    cdef const float *xin
    cdef float *yout
    cdef sqlite3_int64 in_w, out_w, b0, nb
    if not L.transpose:
        first, second, in_w, out_w = V, U, bc, br
        xin = X + bj * C
        yout = Y + bi * R
    else:
        first, second, in_w, out_w = U, V, br, bc
        xin = X + bi * R
        yout = Y + bj * C
    if B == 1:
        memset(tmp, 0, rank * sizeof(float))
        st_gemv_t(in_w, rank, first, xin, tmp)        # tmp = first^T x
        st_gemv_n(out_w, rank, second, tmp, yout)     # y += second tmp
        return
    b0 = 0
    while b0 < B:
        nb = min(<sqlite3_int64>LOWRANK_ROWS, B - b0)
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>nb, rank, <int>in_w,
                          1.0, xin + b0 * L.n_in, <int>L.n_in, first, rank, 0.0, tmp, rank)
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>nb, <int>out_w, rank,
                          1.0, tmp, rank, second, rank, 1.0, yout + b0 * L.n_out, <int>L.n_out)
        b0 += nb


cdef int dense(TileCursor *c, Layer *L, const float *X, sqlite3_int64 B, float *Y,
               char **err) noexcept nogil:
    """Y (B x n_out) = X (B x n_in) W^T + b, tile by tile.

    Threads split the tiles so that no two write the same outputs: by block row of W
    (out x in), by block column of W (in x out). Worker threads never call SQLite (the
    calling thread holds the connection), so the calling thread pins the pages of a chunk
    of block rows and resolves every tile to a pointer first; the chunk is at most
    CHUNK_BYTES of tiles, so a layer larger than memory still streams through the pool.
    """
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi, bj, r0, r1, i, k, bytes, npinned, n, br, bc
    cdef int rc = SQLITE_OK
    cdef int nthreads = kernel_threads(B * w.rows * w.cols)
    cdef int units
    cdef const unsigned char **tiles = NULL
    cdef const unsigned char **res = NULL
    cdef PoolPage **pinned = NULL
    cdef float *scratch = NULL
    cdef PoolPage *page
    cdef PoolPage *rpage
    # per worker: a tile, then the low-rank intermediate (min(B, LOWRANK_ROWS) x max rank)
    cdef sqlite3_int64 stride = R * C + min(B, <sqlite3_int64>LOWRANK_ROWS) * w.max_rank
    if L.bias.tensor_id != 0:
        rc = gather(c, &L.bias, Y, err)
        if rc != SQLITE_OK:
            return rc
        for i in range(1, B):
            memcpy(Y + i * L.n_out, Y, L.n_out * sizeof(float))
    else:
        memset(Y, 0, B * L.n_out * sizeof(float))
    n = w.grid_r * w.grid_c
    tiles = <const unsigned char **>calloc(n, sizeof(unsigned char *))
    pinned = <PoolPage **>calloc(2 * n, sizeof(PoolPage *))   # block and residual pages
    scratch = <float *>malloc(nthreads * stride * sizeof(float))
    if tiles == NULL or pinned == NULL or scratch == NULL:
        rc = SQLITE_NOMEM
    if w.res_kind != NULL and rc == SQLITE_OK:
        res = <const unsigned char **>calloc(n, sizeof(unsigned char *))
        if res == NULL:
            rc = SQLITE_NOMEM
    cursor_release(c)  # this function pins its own pages
    r0 = 0
    while rc == SQLITE_OK and r0 < w.grid_r:
        # pin a chunk of block rows and resolve its tiles (calling thread only)
        r1 = r0
        bytes = 0
        npinned = 0
        page = NULL
        rpage = NULL
        while rc == SQLITE_OK and r1 < w.grid_r and (r1 == r0 or bytes < CHUNK_BYTES):
            br = tile_rows(w, r1, R)
            for bj in range(w.grid_c):
                k = r1 * w.grid_c + bj
                bc = tile_cols(w, bj, C)
                if page == NULL or page.page_id != w.page_ids[k]:
                    rc = pool_pin(&c.plan.src, w.page_ids[k], &page, err)
                    if rc != SQLITE_OK:
                        break
                    pinned[npinned] = page
                    npinned += 1
                rc = page_slot(page, w.slots[k], br * bc * w.itemsize, c.plan.src.table,
                               &tiles[k], err)
                if rc != SQLITE_OK:
                    break
                bytes += br * bc * w.itemsize
                if not has_residual(w, k):
                    continue
                if rpage == NULL or rpage.page_id != w.res_page[k]:
                    rc = pool_pin(&c.plan.src, w.res_page[k], &rpage, err)
                    if rc != SQLITE_OK:
                        break
                    pinned[npinned] = rpage
                    npinned += 1
                rc = page_slot(rpage, w.res_slot[k],
                               residual_bytes(w.res_kind[k], w.res_param[k], br, bc),
                               c.plan.src.table, &res[k], err)
                if rc != SQLITE_OK:
                    break
                bytes += residual_bytes(w.res_kind[k], w.res_param[k], br, bc)
            r1 += 1
        if rc == SQLITE_OK:
            units = <int>((r1 - r0) if not L.transpose else w.grid_c)
            dense_chunk(L, tiles, res, r0, r1, R, C, X, B, Y, scratch, stride,
                        min(nthreads, units))
        for i in range(npinned):
            pool_unpin(pinned[i])
        r0 = r1
        if rc == SQLITE_OK and r0 < w.grid_r:
            rc = interrupted(c.plan.src.db, err)
    free(tiles)
    free(res)
    free(pinned)
    free(scratch)
    return rc


ctypedef struct DenseJob:
    const Layer *L
    const unsigned char **tiles   # tile pointers into pinned pages, grid order
    const unsigned char **res     # residual payloads likewise (NULL: the weight has none)
    sqlite3_int64 r0, r1          # block rows of this chunk
    sqlite3_int64 R, C            # block shape
    const float *X
    sqlite3_int64 B
    float *Y
    float *scratch                # per worker: a block_rows * block_cols tile, then the
    sqlite3_int64 stride          # low-rank intermediate; stride floats per worker


cdef void dense_range(void *ctx, long begin, long end, int worker) noexcept nogil:
    """Units begin..end of a DenseJob: block rows (W out x in) or block columns (in x out)."""
    cdef DenseJob *job = <DenseJob *>ctx
    cdef const Weight *w = &job.L.weight
    cdef float *mine = job.scratch + worker * job.stride
    cdef sqlite3_int64 u, v, bi, bj, k
    cdef int kind, param
    cdef const unsigned char *res
    cdef sqlite3_int64 inner = w.grid_c if not job.L.transpose else (job.r1 - job.r0)
    for u in range(begin, end):
        for v in range(inner):
            if not job.L.transpose:
                bi = job.r0 + u
                bj = v
            else:
                bi = job.r0 + v
                bj = u
            k = bi * w.grid_c + bj
            kind = 0
            param = 0
            res = NULL
            if job.res != NULL and w.res_kind[k] != 0:
                kind = w.res_kind[k]
                param = w.res_param[k]
                res = job.res[k]
            tile_product(job.L, job.tiles[k], res, kind, param, bi, bj, tile_rows(w, bi, job.R),
                         tile_cols(w, bj, job.C), job.R, job.C, job.X, job.B, job.Y, mine,
                         mine + job.R * job.C)


cdef void dense_chunk(const Layer *L, const unsigned char **tiles, const unsigned char **res,
                      sqlite3_int64 r0, sqlite3_int64 r1, sqlite3_int64 R, sqlite3_int64 C,
                      const float *X, sqlite3_int64 B, float *Y, float *scratch,
                      sqlite3_int64 stride, int nthreads) noexcept nogil:
    """The products of block rows r0..r1 of L's weight, split over nthreads threads."""
    cdef DenseJob job
    job.L = L
    job.tiles = tiles
    job.res = res
    job.stride = stride
    job.r0 = r0
    job.r1 = r1
    job.R = R
    job.C = C
    job.X = X
    job.B = B
    job.Y = Y
    job.scratch = scratch
    cdef long units = <long>((r1 - r0) if not L.transpose else L.weight.grid_c)
    if nthreads <= 1:
        dense_range(&job, 0, units, 0)
    else:
        st_parallel_for(nthreads, units, dense_range, &job)


cdef inline sqlite3_int64 tile_rows(const Weight *w, sqlite3_int64 bi, sqlite3_int64 R) noexcept nogil:
    return min(R, w.rows - bi * R)


cdef inline sqlite3_int64 tile_cols(const Weight *w, sqlite3_int64 bj, sqlite3_int64 C) noexcept nogil:
    return min(C, w.cols - bj * C)


cdef int embed_add(TileCursor *c, Layer *L, int64_t row, float scale, float *dst,
                   float **effective, char **err) noexcept nogil:
    """dst[0:dim] += scale * W[row] (one row, read from the tiles of its block row).

    effective: NULL, or one slot per tile for tiles with a residual built whole (tile +
    residual, float32) the first time a row of theirs is read, so that a large input
    pays for each residual once per tile instead of once per id."""
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi = row // R, r = row % R, br, bc, bj, k
    cdef const unsigned char *tile
    cdef const unsigned char *res
    cdef const float *src
    cdef int rc
    br = min(R, w.rows - bi * R)
    for bj in range(w.grid_c):
        bc = min(C, w.cols - bj * C)
        k = bi * w.grid_c + bj
        if effective != NULL and has_residual(w, k) and effective[k] != NULL:
            src = effective[k] + r * bc
        else:
            rc = cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            if has_residual(w, k):
                rc = cursor_residual(c, w, k, br, bc, &res, err)
                if rc != SQLITE_OK:
                    return rc
            if effective != NULL and has_residual(w, k):
                effective[k] = <float *>malloc(br * bc * sizeof(float))
                if effective[k] == NULL:
                    return SQLITE_NOMEM
                widen(tile, w.dtype, br * bc, effective[k])
                residual_add(w.res_kind[k], w.res_param[k], res, br, bc, effective[k], bc)
                src = effective[k] + r * bc
            else:
                widen(tile + r * bc * w.itemsize, w.dtype, bc, c.scratch)
                if has_residual(w, k):
                    residual_row_add(w.res_kind[k], w.res_param[k], res, br, bc, r, c.scratch)
                src = c.scratch
        for k in range(bc):
            dst[bj * C + k] += scale * src[k]
    return SQLITE_OK


cdef int check_id(Layer *L, int64_t id, sqlite3_int64 at, char **err) noexcept nogil:
    if id < 0 or id >= L.n_in:
        err[0] = sqlite3_mprintf("id %lld (input %lld) is out of range: the embedding has %lld "
                                 "rows (ids 0 to %lld)", id, at, L.n_in, L.n_in - 1)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int embedding(TileCursor *c, Layer *L, const Input *inp, float *Y, char **err) noexcept nogil:
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 b, j, n, k
    cdef sqlite3_int64 ids = inp.batch if L.op == OP_EMBEDDING else inp.offsets[inp.batch] - inp.offsets[0]
    cdef int rc = SQLITE_OK
    cdef float **effective = NULL
    # With at least a tile's rows of ids, building a residual tile whole costs no more
    # than the ids' rows would each cost to correct.
    if w.res_kind != NULL and ids >= c.plan.block_rows:
        effective = <float **>calloc(w.grid_r * w.grid_c, sizeof(float *))
        if effective == NULL:
            return SQLITE_NOMEM
    memset(Y, 0, inp.batch * L.n_out * sizeof(float))
    b = 0
    while rc == SQLITE_OK and b < inp.batch:
        if b % 4096 == 4095:
            rc = interrupted(c.plan.src.db, err)
            if rc != SQLITE_OK:
                break
        if L.op == OP_EMBEDDING:
            rc = check_id(L, inp.ids[b], b, err)
            if rc == SQLITE_OK:
                rc = embed_add(c, L, inp.ids[b], 1.0, Y + b * L.n_out, effective, err)
        else:
            n = inp.offsets[b + 1] - inp.offsets[b]
            j = inp.offsets[b]
            while rc == SQLITE_OK and j < inp.offsets[b + 1]:
                rc = check_id(L, inp.ids[j], b, err)
                if rc == SQLITE_OK:
                    rc = embed_add(c, L, inp.ids[j], (1.0 / n) if L.bag_mean else 1.0,
                                   Y + b * L.n_out, effective, err)
                j += 1
        b += 1
    if effective != NULL:
        for k in range(w.grid_r * w.grid_c):
            free(effective[k])
        free(effective)
    return rc


cdef void activate(int act, float *Y, sqlite3_int64 B, sqlite3_int64 n) noexcept nogil:
    """Apply an activation in place; NaN propagates as in numpy."""
    cdef sqlite3_int64 i, b
    cdef float v, m, s
    cdef float *row
    if act == ACT_IDENTITY:
        return
    if act == ACT_SOFTMAX:
        for b in range(B):
            row = Y + b * n
            m = row[0]
            for i in range(1, n):
                if row[i] > m:
                    m = row[i]
            s = 0
            for i in range(n):
                row[i] = expf(row[i] - m)
                s += row[i]
            for i in range(n):
                row[i] /= s
        return
    for i in range(B * n):
        v = Y[i]
        if act == ACT_RELU:
            Y[i] = 0.0 if v < 0 else v
        elif act == ACT_SIGMOID:
            Y[i] = 1.0 / (1.0 + expf(-v))
        elif act == ACT_TANH:
            Y[i] = tanhf(v)
        else:  # ACT_GELU, exact
            Y[i] = 0.5 * v * (1.0 + erff(v * <float>0.7071067811865476))


cdef int forward(Plan *plan, const Input *inp, float *out, char **err) noexcept nogil:
    """Run every layer; out receives batch x plan.n_out floats.

    The rows go through in passes of at most PASS_BYTES of activations (at least one row),
    so memory follows the answer, not batch x the widest layer; sqlite3_interrupt is
    checked between layers and passes (and inside long layers)."""
    cdef sqlite3_int64 B = inp.batch, r0 = 0, rows
    cdef sqlite3_int64 per_pass = max(<sqlite3_int64>1, PASS_BYTES // (plan.max_width * <sqlite3_int64>sizeof(float) + 1))
    cdef Input part
    cdef TileCursor c
    cdef float *bufs[2]
    cdef int rc = SQLITE_OK
    # BLAS must stay single-threaded under our threads; threadpoolctl and the like reset
    # every OpenBLAS in the process (ours included) when they limit numpy's.
    if scipy_openblas_get_num_threads() != 1:
        scipy_openblas_set_num_threads(1)
    per_pass = min(per_pass, max(B, <sqlite3_int64>1))
    memset(&c, 0, sizeof(TileCursor))
    c.plan = plan
    c.scratch = <float *>malloc(plan.block_rows * plan.block_cols * sizeof(float))
    bufs[0] = <float *>malloc(per_pass * plan.max_width * sizeof(float) + 1)
    bufs[1] = <float *>malloc(per_pass * plan.max_width * sizeof(float) + 1)
    if c.scratch == NULL or bufs[0] == NULL or bufs[1] == NULL:
        rc = SQLITE_NOMEM
    while rc == SQLITE_OK and r0 < B:
        rows = min(per_pass, B - r0)
        part.batch = rows
        part.x = inp.x + r0 * plan.n_in if inp.x != NULL else NULL
        part.ids = inp.ids + r0 if inp.ids != NULL and inp.offsets == NULL else inp.ids
        part.offsets = inp.offsets + r0 if inp.offsets != NULL else NULL
        rc = forward_pass(&c, &part, bufs, out + r0 * plan.n_out, err)
        r0 += rows
    cursor_release(&c)
    free(c.scratch)
    free(bufs[0])
    free(bufs[1])
    return rc


cdef int forward_pass(TileCursor *c, const Input *inp, float **bufs, float *out,
                      char **err) noexcept nogil:
    """Every layer over inp's rows (bufs: two buffers of rows x max_width floats)."""
    cdef Plan *plan = c.plan
    cdef sqlite3_int64 B = inp.batch
    cdef const float *cur = inp.x
    cdef float *nxt
    cdef int i, which = 0, rc = SQLITE_OK
    cdef Layer *L
    i = 0
    while rc == SQLITE_OK and i < plan.nlayers:
        rc = interrupted(plan.src.db, err)
        if rc != SQLITE_OK:
            break
        L = &plan.layers[i]
        if L.op == OP_ACTIVATION:  # never first, so cur is one of our buffers
            activate(L.act, <float *>cur, B, L.n_out)
            i += 1
            continue
        nxt = bufs[which]
        which ^= 1
        if L.op == OP_DENSE:
            rc = dense(c, L, cur, B, nxt, err)
        else:
            rc = embedding(c, L, inp, nxt, err)
        if rc == SQLITE_OK:
            activate(L.act, nxt, B, L.n_out)
        cur = nxt
        i += 1
    cursor_release(c)
    if rc == SQLITE_OK:
        memcpy(out, cur, B * plan.n_out * sizeof(float))
    return rc
