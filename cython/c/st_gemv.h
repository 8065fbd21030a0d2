/* sqlite-tensor: matrix-vector products for one input (the memory-bound case).
**
** A simple vectorised loop keeps up with memory, and unlike OpenBLAS's sgemv it takes no
** lock (OpenBLAS takes a global one for its work buffer), so threads calling it in
** parallel scale. Both accumulate into y.
**
** y += A x has several kernels (the order A is read in, the instruction set, the prefetch
** distance); which is fastest depends on the CPU and on whether the layer fits in its
** caches, so it is measured, not assumed: st_gemv_pick times the candidates once per
** process and size class (a short calibration over tiles of the layer's shape, laid out as
** the pool holds them) and remembers the winner; st_gemv_n_with runs it.
*/
#ifndef ST_GEMV_H
#define ST_GEMV_H

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

/* y[0:m] += A x, A row-major m x n (four rows at a time; for small products) */
ST_HIDDEN void st_gemv_n(long m, long n, const float *restrict a, const float *restrict x,
                         float *restrict y);
/* y[0:n] += A^T x, A row-major m x n */
ST_HIDDEN void st_gemv_t(long m, long n, const float *restrict a, const float *restrict x,
                         float *restrict y);

/* The candidates for y += A x. ROWS4 is st_gemv_n: four rows at once, so four streams
** through A a row apart. LINEAR_* read A strictly in address order, one row after the
** other (one stream; a tile's rows are contiguous, so a whole tile, and a page of tiles,
** is one stream), with AVX-512 or AVX2, and with or without software prefetch. */
enum {
    ST_GEMV_ROWS4 = 0,
    ST_GEMV_LINEAR_512,
    ST_GEMV_LINEAR_512_PF,
    ST_GEMV_LINEAR_256,
    ST_GEMV_LINEAR_256_PF,
    ST_GEMV_LINEAR, /* portable C, any CPU */
    ST_GEMV_KERNELS
};

/* 1 if this CPU can run the kernel. */
ST_HIDDEN int st_gemv_available(int kernel);
ST_HIDDEN const char *st_gemv_name(int kernel);
/* y[0:m] += A x with the given kernel (an available one; any other runs ST_GEMV_ROWS4). */
ST_HIDDEN void st_gemv_n_with(int kernel, long m, long n, const float *restrict a,
                              const float *restrict x, float *restrict y);
/* The fastest kernel here for a layer of `bytes` bytes of float32 weights in tiles of
** rows x cols: measured the first time a (tile shape, size class) is seen in the process
** (size classes are powers of two, all those above max(2 x the last-level cache, 64 MiB)
** one class), then remembered. The environment variable ST_GEMV_KERNEL=<name> forces a
** kernel (when available); ST_GEMV_TRACE=1 prints each calibration to stderr.
** Thread-safe; never fails (without memory for the calibration it picks ST_GEMV_ROWS4). */
ST_HIDDEN int st_gemv_pick(long rows, long cols, long long bytes);
/* Layers of at most this many bytes are not timed: they get ST_GEMV_ROWS4 (they sit in L2,
** where it is as fast as any, their time is the call's fixed work, and their answers stay
** those of earlier versions, bit for bit). */
#define ST_GEMV_SMALL_BYTES (1LL << 20)
/* Drop what st_gemv_pick and st_gemv_threads remembered (tests). */
ST_HIDDEN void st_gemv_forget(void);
/* Threads worth using for a batch-1 layer of `bytes` bytes of float32 weights in tiles of
** rows x cols, split into `units` parts (block rows), when up to max_threads may run: 1 or
** max_threads. Measured once per process and (tile shape, size class, units, max_threads):
** the kernel st_gemv_pick chose is timed over the size class's calibration buffer on one
** thread (t1) and through st_parallel_for on max_threads (tn), passes in turns, the
** fastest of each kept, and so is a hand-off to workers that have gone to sleep (a
** st_parallel_for round trip of an empty job); st_gemv_threads_decide applies the rule.
** ST_GEMV_PARALLEL=always / never skips the measurement (tests, diagnosis);
** ST_GEMV_TRACE=1 prints it. Thread- and fork-safe; never fails (without memory for the
** calibration, or with its table full, it answers max_threads). */
ST_HIDDEN int st_gemv_threads(long rows, long cols, long long bytes, long units, int max_threads);
/* The rule: n threads when they save at least ST_GEMV_PARALLEL_GAIN of the one-thread time
** and at least one hand-off to sleeping workers (so that a layer called now and then, its
** workers asleep, does not lose either); else 1. */
#define ST_GEMV_PARALLEL_GAIN 0.1
ST_HIDDEN int st_gemv_threads_decide(double t1, double tn, double handoff, int n);
/* The choice after `current` (1 or n) given running estimates of one thread's time (t1) and
** n threads' (tn): from 1 to n by st_gemv_threads_decide (n save a tenth of t1), from n
** back to 1 only when one thread saves as much of tn; between the two it stays, so that
** estimates a few percent apart (noise, or a layer from DRAM that two threads hardly
** speed up) do not flip it. An estimate <= 0 (none yet) leaves it where it is. */
ST_HIDDEN int st_gemv_threads_next(int current, double t1, double tn, int n);
/* The choice for this call, made and kept up to date by what calls take: st_gemv_threads'
** measurement starts it, then every call of the layer reports its time
** (st_gemv_threads_observe: seconds for `bytes` of weights), and each choice keeps a running
** low estimate of its time per byte (st_gemv_threads_update), started by the calibration's
** figure and replaced by the first call's (the other choice's, not called yet, scaled
** alike); it moves by st_gemv_threads_next. A
** measurement made while another
** process had the other CPUs says "1", and would say it for the life of the process; so
** the choice not taken is tried now and then:
** max_threads for ST_GEMV_EXPLORE_N_CALLS calls in a row every ST_GEMV_EXPLORE_N_EVERY (in
** a row: the first wakes the sleeping workers, the next find them awake, as a loop of
** calls does), one thread once every ST_GEMV_EXPLORE_1_EVERY. *slot: what to pass to
** st_gemv_threads_observe, -1 when nothing is to be reported (the environment or the
** shape decided). Thread-safe. */
ST_HIDDEN int st_gemv_threads_now(long rows, long cols, long long bytes, long units,
                                  int max_threads, int *slot);
ST_HIDDEN void st_gemv_threads_observe(int slot, int threads, double seconds, long long bytes);
#define ST_GEMV_EXPLORE_N_EVERY 32
#define ST_GEMV_EXPLORE_N_CALLS 3
#define ST_GEMV_EXPLORE_1_EVERY 64
/* The running estimate after a call of `seconds`: a faster call is taken as it is (a time
** can only be too long), a slower one moves it 1 / ST_GEMV_RECENT_RISE of the way, and at
** most by that part of itself: a choice that became slower (another process took the
** other CPU) is seen to be after a few calls, while one call held up for a time slice
** (milliseconds, against tens of microseconds) moves it no more than any slow call.
** recent <= 0: none yet. */
#define ST_GEMV_RECENT_RISE 8
ST_HIDDEN double st_gemv_threads_update(double recent, double seconds);
/* The running estimates (seconds per byte, one thread and max_threads; 0: none) of the
** choice st_gemv_threads_now gave as *slot; 0 when that is not (or no longer) one. Tests. */
ST_HIDDEN int st_gemv_threads_recent(int slot, double out[2]);
/* Seconds on a monotonic clock. */
ST_HIDDEN double st_gemv_clock(void);
/* Seconds the last thread calibration measured: one thread, max_threads, and the hand-off
** (fastest of each), -1 before any; tests, diagnosis. */
ST_HIDDEN void st_gemv_last_thread_timings(double out[3]);
/* Seconds each available kernel took in the last calibration (min over its passes), -1 for
** those not timed; for tests and diagnostics. */
ST_HIDDEN void st_gemv_last_timings(double out[ST_GEMV_KERNELS]);
#endif
