/* Batch-1 GEMV over a float32 N x N matrix, as the pool holds it (256 x 256 tiles laid out one
** after another) and whole (OpenBLAS's sgemv), single-threaded: the microbenchmark behind
** docs/benchmarks.md ("Batch 1 on the CPU at hand"). Medians over passes, the variants in
** turns. Build and run from the tree's root:
**
**   D=$(python -c "import scipy_openblas32 as s; print(s.get_include_dir().rsplit('/', 1)[0])")
**   gcc -O3 -fwrapv -Icython/c -I$D/include asv_bench/gemv_micro.c cython/c/st_gemv.c \
**       -L$D/lib -lscipy_openblas -Wl,-rpath,$D/lib -lpthread -lm -o /tmp/gemv_micro
**   /tmp/gemv_micro 4096 21
**
** k512 / k256: four rows at once (four streams a row apart, as st_gemv_n), AVX-512 / AVX2,
** with software prefetch 0, 2 or 6 KiB ahead; krow: one row after the other (one stream). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <immintrin.h>
#include "st_gemv.h"
#include "cblas.h"
void scipy_openblas_set_num_threads(int);
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
#define T 256
/* candidate: AVX-512, 4 rows, explicit, prefetch distance d bytes ahead linear in tile */
__attribute__((target("avx512f"))) static void k512(long m, long n, const float *a, const float *x,
                                                    float *y, long pf) {
    for (long i = 0; i + 4 <= m; i += 4) {
        const float *a0 = a + i * n;
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        for (long j = 0; j < n; j += 16) {
            __m512 xv = _mm512_loadu_ps(x + j);
            if (pf) {
                const char *p = (const char *)(a0 + j) + pf;
                _mm_prefetch(p, _MM_HINT_T0);
                _mm_prefetch(p + n * 4, _MM_HINT_T0);
                _mm_prefetch(p + 2 * n * 4, _MM_HINT_T0);
                _mm_prefetch(p + 3 * n * 4, _MM_HINT_T0);
            }
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(a0 + j), xv, c0);
            c1 = _mm512_fmadd_ps(_mm512_loadu_ps(a0 + n + j), xv, c1);
            c2 = _mm512_fmadd_ps(_mm512_loadu_ps(a0 + 2 * n + j), xv, c2);
            c3 = _mm512_fmadd_ps(_mm512_loadu_ps(a0 + 3 * n + j), xv, c3);
        }
        y[i] += _mm512_reduce_add_ps(c0);
        y[i + 1] += _mm512_reduce_add_ps(c1);
        y[i + 2] += _mm512_reduce_add_ps(c2);
        y[i + 3] += _mm512_reduce_add_ps(c3);
    }
}
__attribute__((target("avx2,fma"))) static void k256(long m, long n, const float *a, const float *x,
                                                     float *y, long pf) {
    for (long i = 0; i + 4 <= m; i += 4) {
        const float *a0 = a + i * n;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, d0 = c0, d1 = c0, d2 = c0,
               d3 = c0;
        for (long j = 0; j < n; j += 16) {
            __m256 xv = _mm256_loadu_ps(x + j), xw = _mm256_loadu_ps(x + j + 8);
            if (pf) {
                const char *p = (const char *)(a0 + j) + pf;
                _mm_prefetch(p, _MM_HINT_T0);
                _mm_prefetch(p + n * 4, _MM_HINT_T0);
                _mm_prefetch(p + 2 * n * 4, _MM_HINT_T0);
                _mm_prefetch(p + 3 * n * 4, _MM_HINT_T0);
            }
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + j), xv, c0);
            d0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + j + 8), xw, d0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + n + j), xv, c1);
            d1 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + n + j + 8), xw, d1);
            c2 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 2 * n + j), xv, c2);
            d2 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 2 * n + j + 8), xw, d2);
            c3 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 3 * n + j), xv, c3);
            d3 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 3 * n + j + 8), xw, d3);
        }
        float t[8];
        __m256 s;
#define RED(c, d, k)                                                                               \
    s = _mm256_add_ps(c, d);                                                                       \
    _mm256_storeu_ps(t, s);                                                                        \
    y[i + k] += t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
        RED(c0, d0, 0) RED(c1, d1, 1) RED(c2, d2, 2) RED(c3, d3, 3)
    }
}

/* one row at a time: the tile is read strictly in address order */
__attribute__((target("avx512f"))) static void krow(long m, long n, const float *a, const float *x,
                                                    float *y, long pf) {
    for (long i = 0; i < m; i++) {
        const float *r = a + i * n;
        __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
        long j = 0;
        for (; j + 64 <= n; j += 64) {
            if (pf) {
                const char *p = (const char *)(r + j) + pf;
                _mm_prefetch(p, _MM_HINT_T0);
                _mm_prefetch(p + 64, _MM_HINT_T0);
                _mm_prefetch(p + 128, _MM_HINT_T0);
                _mm_prefetch(p + 192, _MM_HINT_T0);
            }
            c0 = _mm512_fmadd_ps(_mm512_loadu_ps(r + j), _mm512_loadu_ps(x + j), c0);
            c1 = _mm512_fmadd_ps(_mm512_loadu_ps(r + j + 16), _mm512_loadu_ps(x + j + 16), c1);
            c2 = _mm512_fmadd_ps(_mm512_loadu_ps(r + j + 32), _mm512_loadu_ps(x + j + 32), c2);
            c3 = _mm512_fmadd_ps(_mm512_loadu_ps(r + j + 48), _mm512_loadu_ps(x + j + 48), c3);
        }
        y[i] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3)));
    }
}
int main(int argc, char **argv) {
    long N = atol(argv[1]);
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    scipy_openblas_set_num_threads(1);
    size_t bytes = N * N * 4;
    float *W =
        mmap(0, bytes + (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    W = (float *)(((unsigned long)W + (2 << 20) - 1) & ~((2UL << 20) - 1));
    madvise(W, bytes, MADV_HUGEPAGE);
    float *Wt = aligned_alloc(2 << 20, bytes);
    madvise(Wt, bytes, MADV_HUGEPAGE);
    float *x = aligned_alloc(64, N * 4), *y = aligned_alloc(64, N * 4);
    for (long i = 0; i < N * N; i++)
        W[i] = (float)((i * 7) % 13) / 13.f;
    long g = N / T;
    for (long bi = 0; bi < g; bi++)
        for (long bj = 0; bj < g; bj++)
            for (long r = 0; r < T; r++)
                memcpy(Wt + ((bi * g + bj) * T * T) + r * T, W + (bi * T + r) * N + bj * T, T * 4);
    for (long i = 0; i < N; i++)
        x[i] = 1.0f / (i + 1);
    const char *names[] = {"blas-whole", "st_gemv_n tiles", "blas tiles",
                           "k512 pf0",   "k512 pf6k",       "k512 pf2k",
                           "k256 pf0",   "k256 pf6k",       "blas whole, tiles' memory",
                           "krow pf0",   "krow pf1k",       "krow pf4k"};
    int nv = 12;
    double med[12][64];
    if (getenv("HP"))
        system("grep AnonHuge /proc/meminfo");
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < nv; v++) {
            memset(y, 0, N * 4);
            double t0 = now();
            if (v == 0 || v == 8)
                scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, N, N, 1.0f, v == 0 ? W : Wt, N, x, 1,
                                  1.0f, y, 1);
            else
                for (long bi = 0; bi < g; bi++)
                    for (long bj = 0; bj < g; bj++) {
                        const float *tile = Wt + (bi * g + bj) * T * T;
                        switch (v) {
                        case 1:
                            st_gemv_n(T, T, tile, x + bj * T, y + bi * T);
                            break;
                        case 2:
                            scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, T, T, 1.0f, tile, T,
                                              x + bj * T, 1, 1.0f, y + bi * T, 1);
                            break;
                        case 3:
                            k512(T, T, tile, x + bj * T, y + bi * T, 0);
                            break;
                        case 4:
                            k512(T, T, tile, x + bj * T, y + bi * T, 6144);
                            break;
                        case 5:
                            k512(T, T, tile, x + bj * T, y + bi * T, 2048);
                            break;
                        case 6:
                            k256(T, T, tile, x + bj * T, y + bi * T, 0);
                            break;
                        case 7:
                            k256(T, T, tile, x + bj * T, y + bi * T, 6144);
                            break;
                        case 9:
                            krow(T, T, tile, x + bj * T, y + bi * T, 0);
                            break;
                        case 10:
                            krow(T, T, tile, x + bj * T, y + bi * T, 1024);
                            break;
                        case 11:
                            krow(T, T, tile, x + bj * T, y + bi * T, 4096);
                            break;
                        }
                    }
            med[v][r] = now() - t0;
        }
    for (int v = 0; v < nv; v++) {
        double *a = med[v];
        for (int i = 0; i < reps; i++)
            for (int j = i + 1; j < reps; j++)
                if (a[j] < a[i]) {
                    double t = a[i];
                    a[i] = a[j];
                    a[j] = t;
                }
        printf("%-18s med %.3f ms  %.1f GB/s  (min %.3f)\n", names[v], a[reps / 2] * 1e3,
               bytes / a[reps / 2] / 1e9, a[0] * 1e3);
    }
}
