/* st_gemv.c: y += A x and y += A^T x against a double-precision reference, over shapes
** that hit every remainder (rows mod 4, columns mod 16) and empty ones; the matrix ends
** at a PROT_NONE page, so a read past it (not a prefetch: those never fault) crashes. */
#include <math.h>
#include <string.h>
#include <sys/mman.h>

#include "st_gemv.h"
#include "st_test.h"

static unsigned long long rng = 88172645463325252ULL;
static float rnd(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
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
    void *map; size_t len;
    float *a = guarded(m * n, &map, &len);
    float *x = malloc((m > n ? m : n) * sizeof(float) + 4);
    float *y = malloc((m > n ? m : n) * sizeof(float) + 4);
    double *want = malloc((m > n ? m : n) * sizeof(double) + 8);
    for (long i = 0; i < m * n; i++) a[i] = rnd();
    /* y += A x */
    for (long j = 0; j < n; j++) x[j] = rnd();
    for (long i = 0; i < m; i++) {
        y[i] = rnd();
        want[i] = y[i];
        for (long j = 0; j < n; j++) want[i] += (double)a[i * n + j] * x[j];
    }
    st_gemv_n(m, n, a, x, y);
    for (long i = 0; i < m; i++) CHECK(fabs(y[i] - want[i]) <= 1e-5 * (n + 1));
    /* y += A^T x */
    for (long i = 0; i < m; i++) x[i] = rnd();
    for (long j = 0; j < n; j++) {
        y[j] = rnd();
        want[j] = y[j];
        for (long i = 0; i < m; i++) want[j] += (double)a[i * n + j] * x[i];
    }
    st_gemv_t(m, n, a, x, y);
    for (long j = 0; j < n; j++) CHECK(fabs(y[j] - want[j]) <= 1e-5 * (m + 1));
    munmap(map, len);
    free(x); free(y); free(want);
}

int main(void) {
    long shapes[][2] = {{1, 1}, {3, 5}, {4, 16}, {5, 17}, {7, 31}, {8, 33}, {64, 48},
                        {255, 256}, {256, 255}, {257, 1}, {1, 1027}, {0, 8}, {8, 0}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
        check_shape(shapes[k][0], shapes[k][1]);
    /* the product is the same whichever of A's rows are taken four at a time */
    {
        float a[6 * 20], x[20], y6[6] = {0}, y1[6] = {0};
        for (int i = 0; i < 120; i++) a[i] = rnd();
        for (int j = 0; j < 20; j++) x[j] = rnd();
        st_gemv_n(6, 20, a, x, y6);
        for (int i = 0; i < 6; i++) st_gemv_n(1, 20, a + i * 20, x, y1 + i);
        for (int i = 0; i < 6; i++) CHECK(fabsf(y6[i] - y1[i]) <= 1e-5f);
    }
    printf("test_st_gemv: ok\n");
    return 0;
}
