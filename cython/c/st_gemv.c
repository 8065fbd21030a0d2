/* sqlite-tensor: the GEMV kernels; see st_gemv.h. */
#include "st_gemv.h"
#include "st_parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ST_X86 1
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* target_clones compiles one copy per instruction set and picks one at load time by
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
/* ThreadSanitizer crashes in an ifunc resolver (run before it is set up): its builds (make
** c-test) get the default copy only. */
#ifdef __SANITIZE_THREAD__
#define ST_CLONES
#else
#define ST_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
ST_CLONES
void st_gemv_n(long m, long n, const float *restrict a, const float *restrict x,
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
                c0[k] += a0[j + k] * xv;
                c1[k] += a1[j + k] * xv;
                c2[k] += a2[j + k] * xv;
                c3[k] += a3[j + k] * xv;
            }
        }
        for (int k = 0; k < 16; k++) {
            s0 += c0[k];
            s1 += c1[k];
            s2 += c2[k];
            s3 += c3[k];
        }
        for (; j < n; j++) {
            s0 += a0[j] * x[j];
            s1 += a1[j] * x[j];
            s2 += a2[j] * x[j];
            s3 += a3[j] * x[j];
        }
        y[i] += s0;
        y[i + 1] += s1;
        y[i + 2] += s2;
        y[i + 3] += s3;
    }
    for (; i < m; i++) {
        const float *ai = a + i * n;
        float s = 0;
        for (long j = 0; j < n; j++)
            s += ai[j] * x[j];
        y[i] += s;
    }
}
ST_CLONES
void st_gemv_t(long m, long n, const float *restrict a, const float *restrict x,
               float *restrict y) {
    /* y[0:n] += A^T x, A row-major m x n: one stream through A, prefetched as above */
    const char *end = (const char *)(a + m * n);
    for (long i = 0; i < m; i++, a += n) {
        float xi = x[i];
        for (long j = 0; j < n; j += 16) {
            const char *p = (const char *)(a + j) + ST_PREFETCH_BYTES;
            if (p < end)
                __builtin_prefetch(p);
        }
        for (long j = 0; j < n; j++)
            y[j] += xi * a[j];
    }
}

/* -- The candidates for y += A x, and the calibration that picks one --------------------- */

/* Software prefetch distance of the *_PF kernels: in one stream the hardware prefetcher
** usually suffices; where it does not, this far ahead covers DRAM latency at full speed. */
#define ST_LINEAR_PF_BYTES 4096

#ifdef ST_X86
__attribute__((target("avx512f"))) static void linear_512(long m, long n, const float *restrict a,
                                                          const float *restrict x,
                                                          float *restrict y, long pf) {
    const char *end = (const char *)(a + m * n);
    for (long i = 0; i < m; i++, a += n) {
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        long j = 0;
        for (; j + 64 <= n; j += 64) {
            if (pf) {
                const char *p = (const char *)(a + j) + pf;
                if (p + 192 < end) {
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p + 64, _MM_HINT_T0);
                    _mm_prefetch(p + 128, _MM_HINT_T0);
                    _mm_prefetch(p + 192, _MM_HINT_T0);
                }
            }
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(x + j), c0);
            c1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 16), _mm512_loadu_ps(x + j + 16), c1);
            c2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 32), _mm512_loadu_ps(x + j + 32), c2);
            c3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j + 48), _mm512_loadu_ps(x + j + 48), c3);
        }
        for (; j + 16 <= n; j += 16)
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + j), _mm512_loadu_ps(x + j), c0);
        if (j < n) { /* masked: lanes past the row are neither read nor able to fault */
            __mmask16 k = (__mmask16)((1u << (n - j)) - 1);
            c1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + j), _mm512_maskz_loadu_ps(k, x + j),
                                 c1);
        }
        y[i] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)));
    }
}

__attribute__((target("avx2,fma"))) static void linear_256(long m, long n, const float *restrict a,
                                                           const float *restrict x,
                                                           float *restrict y, long pf) {
    const char *end = (const char *)(a + m * n);
    for (long i = 0; i < m; i++, a += n) {
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        long j = 0;
        for (; j + 32 <= n; j += 32) {
            if (pf) {
                const char *p = (const char *)(a + j) + pf;
                if (p + 64 < end) {
                    _mm_prefetch(p, _MM_HINT_T0);
                    _mm_prefetch(p + 64, _MM_HINT_T0);
                }
            }
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(x + j), c0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(x + j + 8), c1);
            c2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 16), _mm256_loadu_ps(x + j + 16), c2);
            c3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 24), _mm256_loadu_ps(x + j + 24), c3);
        }
        for (; j + 8 <= n; j += 8)
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(x + j), c0);
        __m256 s = _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3));
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        float t = _mm_cvtss_f32(h);
        for (; j < n; j++)
            t += a[j] * x[j];
        y[i] += t;
    }
}
#endif

/* Portable: one row after the other, sixteen partial sums (vectorised by the compiler). */
static void linear_c(long m, long n, const float *restrict a, const float *restrict x,
                     float *restrict y) {
    for (long i = 0; i < m; i++, a += n) {
        float c[16] = {0}, s = 0;
        long j = 0;
        for (; j + 16 <= n; j += 16)
            for (int k = 0; k < 16; k++)
                c[k] += a[j + k] * x[j + k];
        for (int k = 0; k < 16; k++)
            s += c[k];
        for (; j < n; j++)
            s += a[j] * x[j];
        y[i] += s;
    }
}

static const char *const kernel_names[ST_GEMV_KERNELS] = {
    "rows4",       "linear-avx512",        "linear-avx512-prefetch",
    "linear-avx2", "linear-avx2-prefetch", "linear"};

int st_gemv_available(int kernel) {
    switch (kernel) {
    case ST_GEMV_ROWS4:
    case ST_GEMV_LINEAR:
        return 1;
#ifdef ST_X86
    case ST_GEMV_LINEAR_512:
    case ST_GEMV_LINEAR_512_PF:
        return __builtin_cpu_supports("avx512f");
    case ST_GEMV_LINEAR_256:
    case ST_GEMV_LINEAR_256_PF:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

const char *st_gemv_name(int kernel) {
    return kernel >= 0 && kernel < ST_GEMV_KERNELS ? kernel_names[kernel] : "?";
}

void st_gemv_n_with(int kernel, long m, long n, const float *restrict a, const float *restrict x,
                    float *restrict y) {
    switch (kernel) {
#ifdef ST_X86
    case ST_GEMV_LINEAR_512:
        linear_512(m, n, a, x, y, 0);
        return;
    case ST_GEMV_LINEAR_512_PF:
        linear_512(m, n, a, x, y, ST_LINEAR_PF_BYTES);
        return;
    case ST_GEMV_LINEAR_256:
        linear_256(m, n, a, x, y, 0);
        return;
    case ST_GEMV_LINEAR_256_PF:
        linear_256(m, n, a, x, y, ST_LINEAR_PF_BYTES);
        return;
#endif
    case ST_GEMV_LINEAR:
        linear_c(m, n, a, x, y);
        return;
    default:
        st_gemv_n(m, n, a, x, y);
        return;
    }
}

/* What st_gemv_pick measured: one entry per (tile shape, size class). */
typedef struct {
    long rows, cols;
    int cls, kernel;
} st_gemv_choice;
#define ST_GEMV_CHOICES 32
static st_gemv_choice choices[ST_GEMV_CHOICES];
static int nchoices;
static double last_timings[ST_GEMV_KERNELS];
static pthread_mutex_t choices_mu = PTHREAD_MUTEX_INITIALIZER;

#define ST_CAL_MIN_CLASS 16                /* 64 KiB: smaller layers are timed as this */
#define ST_CAL_STREAM ((double)(48 << 20)) /* bytes each candidate streams, at least */
#define ST_CAL_MIN_PASSES 4
#define ST_CAL_MAX_PASSES 200

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The last-level cache a core of this CPU sees, in bytes (0: unknown). sysfs first: in a VM
** glibc's sysconf may report the host's whole L3 (320 MiB here, where lscpu and sysfs say
** 32 MiB). */
static long long llc_bytes(void) {
    long long best = 0;
    int level = 0;
    for (int i = 0; i < 8; i++) {
        char path[96], buf[32];
        long long lv = 0, size = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            break;
        if (fgets(buf, sizeof buf, f))
            lv = atoll(buf);
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        if (f == NULL)
            continue;
        if (fgets(buf, sizeof buf, f)) {
            char *end;
            size = strtoll(buf, &end, 10);
            if (*end == 'K')
                size <<= 10;
            else if (*end == 'M')
                size <<= 20;
        }
        fclose(f);
        if (lv >= level && size > 0) {
            level = (int)lv;
            best = size;
        }
    }
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (best <= 0)
        best = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (best <= 0)
        best = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return best > 0 ? best : 0;
}

/* The largest size class: past the last-level cache (2 x its size, at least 64 MiB, at
** most 1 GiB), so that larger layers are timed over a buffer that does not fit either.
** Found once (under choices_mu). */
static int top_class(void) {
    static int top;
    if (top == 0) {
        long long want = 2 * llc_bytes();
        if (want < (64LL << 20))
            want = 64LL << 20;
        int c = 0;
        while ((1LL << c) < want && c < 30)
            c++;
        top = c;
    }
    return top;
}

static int size_class(long long bytes) {
    int c = ST_CAL_MIN_CLASS, top = top_class();
    while (c < top && (1LL << c) < bytes)
        c++;
    return c;
}

static int forced_kernel(void) {
    const char *s = getenv("ST_GEMV_KERNEL");
    if (s == NULL || *s == 0)
        return -1;
    for (int k = 0; k < ST_GEMV_KERNELS; k++)
        if (strcmp(s, kernel_names[k]) == 0 && st_gemv_available(k))
            return k;
    return -1;
}

/* Time every available kernel over `1 << cls` bytes of rows x cols tiles laid out one after
** another (as the pool's pages hold them), in turns, keeping each one's fastest pass. */
static int calibrate(long rows, long cols, int cls) {
    size_t tile = (size_t)cols * sizeof(float);
    long tr = rows;
    size_t budget = (size_t)1 << cls;
    if (tile > budget)
        return ST_GEMV_ROWS4; /* a row larger than the class */
    if ((size_t)tr * tile > budget)
        tr = (long)(budget / tile);
    size_t ntiles = budget / ((size_t)tr * tile);
    if (ntiles == 0)
        ntiles = 1;
    size_t bytes = ntiles * tr * tile;
    size_t align = (size_t)2 << 20, len = bytes + align;
    char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    float *x = malloc((cols + 16) * sizeof(float)), *y = malloc((tr + 16) * sizeof(float));
    int best = ST_GEMV_ROWS4;
    for (int k = 0; k < ST_GEMV_KERNELS; k++)
        last_timings[k] = -1;
    if (map == MAP_FAILED || x == NULL || y == NULL)
        goto done;
    float *a = (float *)(((size_t)map + align - 1) & ~(align - 1));
    if (bytes >= align)
        madvise(a, bytes, MADV_HUGEPAGE); /* as the pool's arena does */
    memset(a, 0x3e, bytes);               /* 0.186f: no denormals */
    for (long j = 0; j < cols; j++)
        x[j] = 0.5f;
    long passes = (long)(ST_CAL_STREAM / bytes);
    if (passes < ST_CAL_MIN_PASSES)
        passes = ST_CAL_MIN_PASSES;
    if (passes > ST_CAL_MAX_PASSES)
        passes = ST_CAL_MAX_PASSES;
    double t[ST_GEMV_KERNELS];
    for (int k = 0; k < ST_GEMV_KERNELS; k++)
        t[k] = 1e30;
    for (long p = 0; p < passes; p++) {
        for (int k = 0; k < ST_GEMV_KERNELS; k++) {
            if (!st_gemv_available(k))
                continue;
            memset(y, 0, tr * sizeof(float));
            double t0 = now_s();
            for (size_t i = 0; i < ntiles; i++)
                st_gemv_n_with(k, tr, cols, a + i * tr * cols, x, y);
            double dt = now_s() - t0;
            if (dt < t[k])
                t[k] = dt;
        }
    }
    for (int k = 0; k < ST_GEMV_KERNELS; k++) {
        if (t[k] < 1e30)
            last_timings[k] = t[k];
        if (t[k] < t[best])
            best = k;
    }
    if (getenv("ST_GEMV_TRACE") && *getenv("ST_GEMV_TRACE") && *getenv("ST_GEMV_TRACE") != '0') {
        fprintf(stderr, "st_gemv: tiles %ld x %ld, %zu bytes, %ld passes:", rows, cols, bytes,
                passes);
        for (int k = 0; k < ST_GEMV_KERNELS; k++)
            if (t[k] < 1e30)
                fprintf(stderr, " %s %.1f GB/s", kernel_names[k], bytes / t[k] / 1e9);
        fprintf(stderr, " -> %s\n", kernel_names[best]);
    }
done:
    if (map != MAP_FAILED)
        munmap(map, len);
    free(x);
    free(y);
    return best;
}

/* A fork while another thread calibrates would leave the child's lock held for ever: the
** child starts with a fresh one (what was remembered stays valid there). */
static void choices_after_fork(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    choices_mu = m;
}
static void choices_register(void) {
    pthread_atfork(NULL, NULL, choices_after_fork);
}
static pthread_once_t choices_once = PTHREAD_ONCE_INIT;

int st_gemv_pick(long rows, long cols, long long bytes) {
    if (rows <= 0 || cols <= 0)
        return ST_GEMV_ROWS4;
    int forced = forced_kernel();
    if (forced >= 0)
        return forced;
    if (bytes <= ST_GEMV_SMALL_BYTES)
        return ST_GEMV_ROWS4;
    pthread_once(&choices_once, choices_register);
    int cls, kernel = -1;
    pthread_mutex_lock(&choices_mu);
    cls = size_class(bytes);
    for (int i = 0; i < nchoices; i++)
        if (choices[i].rows == rows && choices[i].cols == cols && choices[i].cls == cls)
            kernel = choices[i].kernel;
    if (kernel < 0) {
        if (nchoices < ST_GEMV_CHOICES) {
            kernel = calibrate(rows, cols, cls);
            choices[nchoices++] = (st_gemv_choice){rows, cols, cls, kernel};
        } else { /* table full (many tile shapes): the choice for the nearest class */
            int d = 1 << 30;
            for (int i = 0; i < nchoices; i++)
                if (abs(choices[i].cls - cls) < d) {
                    d = abs(choices[i].cls - cls);
                    kernel = choices[i].kernel;
                }
        }
    }
    pthread_mutex_unlock(&choices_mu);
    return kernel;
}

/* -- Threads for a batch-1 layer ------------------------------------------------------- */

typedef struct {
    long rows, cols, units;
    int cls, max_threads, threads;
    /* st_gemv_threads_now: a running low estimate of a call's seconds on one thread [0] and
    ** on max_threads [1] (0: none yet), and the calls it answered */
    double recent[2];
    int seen[2]; /* recent[j] comes from calls (else from the calibration, or none) */
    unsigned long calls;
    /* (recent: seconds per byte of weights, so that every layer of the class counts alike) */
    int now; /* its answer at the last call, explorations aside (0: none yet) */
} st_thread_choice;
static st_thread_choice thread_choices[ST_GEMV_CHOICES];
static int nthread_choices;
static double last_thread_timings[3] = {-1, -1, -1};

int st_gemv_threads_decide(double t1, double tn, double handoff, int n) {
    double saved = t1 - tn;
    return n > 1 && saved >= ST_GEMV_PARALLEL_GAIN * t1 && saved >= handoff ? n : 1;
}

int st_gemv_threads_next(int current, double t1, double tn, int n) {
    if (n <= 1)
        return 1;
    if (t1 <= 0 || tn <= 0)
        return current == 1 ? 1 : n;
    if (current == 1)
        return st_gemv_threads_decide(t1, tn, 0, n);
    /* back to one thread only when it saves as much of the n-thread time */
    return tn - t1 >= ST_GEMV_PARALLEL_GAIN * tn ? 1 : n;
}

/* The calibration's job: `units` groups of consecutive tiles, unit u writing its own part
** of y (so the threads never share an output), as st_kern_dense splits a layer. */
typedef struct {
    int kernel;
    long tr, cols, ntiles, units;
    const float *a, *x;
    float *y;
} cal_job;
static void cal_range(void *ctx, long begin, long end, int worker) {
    const cal_job *j = ctx;
    (void)worker;
    for (long u = begin; u < end; u++)
        for (long i = j->ntiles * u / j->units; i < j->ntiles * (u + 1) / j->units; i++)
            st_gemv_n_with(j->kernel, j->tr, j->cols, j->a + i * j->tr * j->cols, j->x,
                           j->y + i * j->tr);
}
static void cal_noop(void *ctx, long begin, long end, int worker) {
    (void)ctx;
    (void)begin;
    (void)end;
    (void)worker;
}

/* Time `kernel` over 1 << cls bytes of rows x cols tiles on one thread and on n threads
** (in turns, fastest pass of each); the answer of st_gemv_threads_decide. */
#define ST_CAL_HANDOFFS 5
static int calibrate_threads(int kernel, long rows, long cols, int cls, long units, int n,
                             double *t1_out, double *tn_out) {
    size_t tile = (size_t)cols * sizeof(float);
    long tr = rows;
    size_t budget = (size_t)1 << cls;
    if (tile > budget)
        return n;
    if ((size_t)tr * tile > budget)
        tr = (long)(budget / tile);
    size_t ntiles = budget / ((size_t)tr * tile);
    if (ntiles == 0)
        ntiles = 1;
    size_t bytes = ntiles * tr * tile;
    size_t align = (size_t)2 << 20, len = bytes + align;
    char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    float *x = malloc((cols + 16) * sizeof(float));
    float *y = calloc(ntiles * tr + 16, sizeof(float));
    int answer = n;
    if (map == MAP_FAILED || x == NULL || y == NULL)
        goto done;
    float *a = (float *)(((size_t)map + align - 1) & ~(align - 1));
    if (bytes >= align)
        madvise(a, bytes, MADV_HUGEPAGE);
    memset(a, 0x3e, bytes);
    for (long j = 0; j < cols; j++)
        x[j] = 0.5f;
    cal_job job = {kernel, tr, cols, (long)ntiles, units < 1 ? 1 : units, a, x, y};
    if (job.units > job.ntiles)
        job.units = job.ntiles;
    long passes = (long)(ST_CAL_STREAM / bytes);
    if (passes < 2 * ST_CAL_MIN_PASSES)
        passes = 2 * ST_CAL_MIN_PASSES; /* shared machines */
    if (passes > ST_CAL_MAX_PASSES)
        passes = ST_CAL_MAX_PASSES;
    double t1 = 1e30, tn = 1e30, th = 1e30;
    cal_range(&job, 0, job.units, 0); /* first touch, and the workers started */
    st_parallel_for(n, job.units, cal_range, &job);
    for (long p = 0; p < passes; p++) {
        double t0 = now_s();
        cal_range(&job, 0, job.units, 0);
        double dt = now_s() - t0;
        if (dt < t1)
            t1 = dt;
        t0 = now_s();
        st_parallel_for(n, job.units, cal_range, &job);
        dt = now_s() - t0;
        if (dt < tn)
            tn = dt;
    }
    /* the hand-off to sleeping workers: they sleep after ST_WORKER_SPIN_NS (0.1 ms) idle */
    for (int i = 0; i < ST_CAL_HANDOFFS; i++) {
        usleep(400);
        double t0 = now_s();
        st_parallel_for(n, n, cal_noop, NULL);
        double dt = now_s() - t0;
        if (dt < th)
            th = dt;
    }
    answer = st_gemv_threads_decide(t1, tn, th, n);
    last_thread_timings[0] = t1;
    last_thread_timings[1] = tn;
    last_thread_timings[2] = th;
    /* per byte: the layers of a size class differ in size, up to 4x the buffer's in the
    ** top class; n threads have to show they pay for waking the workers too */
    *t1_out = t1 / (double)bytes;
    *tn_out = (tn + th) / (double)bytes;
    if (getenv("ST_GEMV_TRACE") && *getenv("ST_GEMV_TRACE") && *getenv("ST_GEMV_TRACE") != '0')
        fprintf(stderr,
                "st_gemv: threads for tiles %ld x %ld, %zu bytes in %ld units, %s: "
                "1 thread %.1f us, %d threads %.1f us, hand-off %.1f us -> %d\n",
                rows, cols, bytes, job.units, kernel_names[kernel], t1 * 1e6, n, tn * 1e6, th * 1e6,
                answer);
done:
    if (map != MAP_FAILED)
        munmap(map, len);
    free(x);
    free(y);
    return answer;
}

static int trace_on(void) {
    const char *t = getenv("ST_GEMV_TRACE");
    return t != NULL && *t && *t != '0';
}

/* The entry of (rows, cols, size class, units, max_threads), measured now if new; its index
** in thread_choices, or -1 when the table is full. Called holding choices_mu. */
static int thread_choice_index(int kernel, long rows, long cols, long long bytes, long units,
                               int max_threads) {
    int cls = size_class(bytes);
    for (int i = 0; i < nthread_choices; i++) {
        st_thread_choice *c = &thread_choices[i];
        if (c->rows == rows && c->cols == cols && c->cls == cls && c->units == units &&
            c->max_threads == max_threads)
            return i;
    }
    if (nthread_choices >= ST_GEMV_CHOICES)
        return -1;
    double t1 = 0, tn = 0; /* stay 0 when nothing was measured */
    int threads = calibrate_threads(kernel, rows, cols, cls, units, max_threads, &t1, &tn);
    thread_choices[nthread_choices] =
        (st_thread_choice){rows, cols, units, cls, max_threads, threads, {t1, tn}, {0, 0}, 0, 0};
    return nthread_choices++;
}

/* The environment's answer (ST_GEMV_PARALLEL), or 0 when it leaves the choice to us. */
static int threads_forced(long rows, long cols, long units, int max_threads) {
    if (max_threads <= 1)
        return 1;
    if (rows <= 0 || cols <= 0 || units <= 1)
        return units <= 1 ? 1 : max_threads;
    const char *env = getenv("ST_GEMV_PARALLEL");
    if (env != NULL && strcmp(env, "always") == 0)
        return max_threads;
    if (env != NULL && strcmp(env, "never") == 0)
        return 1;
    return 0;
}

int st_gemv_threads(long rows, long cols, long long bytes, long units, int max_threads) {
    int forced = threads_forced(rows, cols, units, max_threads);
    if (forced)
        return forced;
    int kernel = st_gemv_pick(rows, cols, bytes); /* before the lock: it takes it too */
    pthread_once(&choices_once, choices_register);
    pthread_mutex_lock(&choices_mu);
    int i = thread_choice_index(kernel, rows, cols, bytes, units, max_threads);
    int threads = i < 0 ? max_threads /* table full (many shapes): the old rule */
                        : thread_choices[i].threads;
    pthread_mutex_unlock(&choices_mu);
    return threads;
}

int st_gemv_threads_now(long rows, long cols, long long bytes, long units, int max_threads,
                        int *slot) {
    *slot = -1;
    int forced = threads_forced(rows, cols, units, max_threads);
    if (forced)
        return forced;
    int kernel = st_gemv_pick(rows, cols, bytes);
    pthread_once(&choices_once, choices_register);
    pthread_mutex_lock(&choices_mu);
    int i = thread_choice_index(kernel, rows, cols, bytes, units, max_threads);
    int threads = max_threads;
    if (i >= 0) {
        st_thread_choice *c = &thread_choices[i];
        unsigned long k = c->calls++;
        threads = c->now ? c->now : c->threads;
        /* a tenth faster either way to change: between the two the choice stays */
        threads = st_gemv_threads_next(threads, c->recent[0], c->recent[1], max_threads);
        if (threads != c->now && c->now != 0 && trace_on())
            fprintf(stderr,
                    "st_gemv: threads for tiles %ld x %ld, %ld units, after %lu calls: "
                    "1 thread %.1f GB/s, %d threads %.1f GB/s (recent) -> %d\n",
                    rows, cols, units, k, 1e-9 / c->recent[0], max_threads, 1e-9 / c->recent[1],
                    threads);
        c->now = threads;
        if (threads == 1 && k % ST_GEMV_EXPLORE_N_EVERY < ST_GEMV_EXPLORE_N_CALLS)
            threads = max_threads;
        else if (threads > 1 && k % ST_GEMV_EXPLORE_1_EVERY == ST_GEMV_EXPLORE_1_EVERY - 1)
            threads = 1;
        *slot = i;
    }
    pthread_mutex_unlock(&choices_mu);
    return threads;
}

double st_gemv_threads_update(double recent, double seconds) {
    if (recent <= 0 || seconds < recent)
        return seconds;
    double up = seconds - recent;
    return recent + (up < recent ? up : recent) / ST_GEMV_RECENT_RISE;
}

void st_gemv_threads_observe(int slot, int threads, double seconds, long long bytes) {
    if (slot < 0 || seconds <= 0 || bytes <= 0)
        return;
    seconds /= (double)bytes;
    pthread_mutex_lock(&choices_mu);
    if (slot < nthread_choices) { /* (st_gemv_forget may have emptied the table since) */
        st_thread_choice *c = &thread_choices[slot];
        int j = threads == 1 ? 0 : threads == c->max_threads ? 1 : -1;
        /* the calibration's figure only starts the estimate: its buffer is hot and whole,
        ** the layer's calls are not (a 16 MiB layer on one thread: 200 us calibrated, 350
        ** a call), so kept as a floor it made one thread look faster than it ever is */
        if (j >= 0 && !c->seen[j]) {
            /* and the other choice's figure, still the calibration's, moves by the same
            ** factor: the two stay as the calibration compared them (a first call, its
            ** caches cold, against a hot buffer's figure said "one thread") */
            if (!c->seen[1 - j] && c->recent[j] > 0)
                c->recent[1 - j] *= seconds / c->recent[j];
            c->recent[j] = seconds;
            c->seen[j] = 1;
        } else if (j >= 0)
            c->recent[j] = st_gemv_threads_update(c->recent[j], seconds);
    }
    pthread_mutex_unlock(&choices_mu);
}

double st_gemv_clock(void) {
    return now_s();
}

int st_gemv_threads_recent(int slot, double out[2]) {
    int ok = 0;
    pthread_mutex_lock(&choices_mu);
    if (slot >= 0 && slot < nthread_choices) {
        out[0] = thread_choices[slot].recent[0];
        out[1] = thread_choices[slot].recent[1];
        ok = 1;
    }
    pthread_mutex_unlock(&choices_mu);
    return ok;
}

void st_gemv_last_thread_timings(double out[3]) {
    pthread_mutex_lock(&choices_mu);
    memcpy(out, last_thread_timings, sizeof last_thread_timings);
    pthread_mutex_unlock(&choices_mu);
}

void st_gemv_forget(void) {
    pthread_mutex_lock(&choices_mu);
    nchoices = 0;
    nthread_choices = 0;
    pthread_mutex_unlock(&choices_mu);
}

void st_gemv_last_timings(double out[ST_GEMV_KERNELS]) {
    pthread_mutex_lock(&choices_mu);
    memcpy(out, last_timings, sizeof last_timings);
    pthread_mutex_unlock(&choices_mu);
}
