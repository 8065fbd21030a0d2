/* sqlite-tensor: the GEMV kernels; see st_gemv.h. */
#include "st_gemv.h"

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
__attribute__((target_clones("avx512f", "avx2", "default")))
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
void st_gemv_t(long m, long n, const float *restrict a, const float *restrict x,
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
