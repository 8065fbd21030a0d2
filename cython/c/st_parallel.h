/* sqlite-tensor: st_parallel_for, the kernels' thread pool.
**
** st_parallel_for(nthreads, n, fn, ctx) calls fn(ctx, begin, end, worker) over [0, n), on
** up to nthreads threads, the calling thread among them (worker 0); it returns when all
** of [0, n) is done. `worker` is unique among the threads running at once (for
** per-thread scratch), and below nthreads.
*/
#ifndef ST_PARALLEL_H
#define ST_PARALLEL_H

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

#define ST_MAX_THREADS 256

typedef void (*st_range_fn)(void *ctx, long begin, long end, int worker);

ST_HIDDEN void st_parallel_for(int nthreads, long n, st_range_fn fn, void *ctx);

/* Worker threads started so far in this process (0 in a freshly forked child). */
ST_HIDDEN int st_parallel_workers(void);
#endif
