/* st_encoder.c: the encoder's kernels against double-precision references: e^x and erfc
** (the vectorised approximations), GELU, layer norm (with and without the residual),
** attention over packed sentences of assorted lengths (a plain sgemm stands in for BLAS,
** so the test needs no BLAS library), pooling (mean, cls, max, normalize); each threaded
** and not, which must agree. Built with the file included, as one unit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum CBLAS_ORDER { CblasRowMajor = 101 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

/* C = alpha op(A) op(B) + beta C, row-major: the reference sgemm */
static void plain_sgemm(enum CBLAS_ORDER o, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m,
                        int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                        float beta, float *c, int ldc) {
    (void)o;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                double x = ta == CblasNoTrans ? a[i * lda + p] : a[p * lda + i];
                double y = tb == CblasNoTrans ? b[p * ldb + j] : b[j * ldb + p];
                acc += x * y;
            }
            c[i * ldc + j] = (float)(alpha * acc + (beta == 0 ? 0 : beta * c[i * ldc + j]));
        }
}
#define ST_ENC_SGEMM plain_sgemm
#include "../../cython/c/st_encoder.c"
#include "st_test.h"

static unsigned long long rng = 88172645463325252ULL;
static float rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) % 20001) / 10000.0f - 1.0f;
}

static void test_exp_erf(void) {
    for (double x = -87; x <= 88; x += 0.0137) {
        double want = exp((double)(float)x);
        CHECK(fabs(enc_exp((float)x) - want) <= 3e-7 * want);
    }
    CHECK(enc_exp(-1000.0f) >= 0 && enc_exp(-1000.0f) < 1e-37); /* clamped, not NaN */
    /* float's rounding of z * z bounds the relative error as z grows: 1e-6 at z = 3 */
    for (double z = 0; z <= 3; z += 0.0007) {
        double want = erfc((double)(float)z);
        CHECK(fabs(enc_erfc((float)z) - want) <= 1.5e-6 * want);
    }
}

static void test_gelu(void) {
    long n = 100003; /* no multiple of any vector width; several thread units */
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    float *in = malloc(n * sizeof(float));
    CHECK(x && y && in);
    for (long i = 0; i < n; i++)
        x[i] = y[i] = in[i] = 12.0f * rnd();
    st_enc_gelu(x, n, 1);
    st_enc_gelu(y, n, 3);
    for (long i = 0; i < n; i++) {
        double v = in[i], want = 0.5 * v * erfc(-v / sqrt(2.0));
        CHECK(fabs(x[i] - want) <= 1.5e-6 * fabs(want) + 1e-9);
        CHECK(x[i] == y[i]);
    }
    free(x);
    free(y);
    free(in);
}

static void test_layernorm(void) {
    long rows = 37, n = 45; /* n mod 8 != 0 */
    float *x = malloc(rows * n * 4), *x2 = malloc(rows * n * 4), *res = malloc(rows * n * 4);
    float g[45], b[45];
    double want[45];
    CHECK(x && x2 && res);
    for (long i = 0; i < n; i++) {
        g[i] = 1 + rnd();
        b[i] = rnd();
    }
    for (long i = 0; i < rows * n; i++) {
        x[i] = x2[i] = 3 * rnd() + 100; /* a large mean: the two-pass variance matters */
        res[i] = rnd();
    }
    for (int with_res = 0; with_res < 2; with_res++) {
        float *orig = malloc(rows * n * 4);
        memcpy(orig, x, rows * n * 4);
        st_enc_layernorm(x, with_res ? res : NULL, rows, n, g, b, 1e-12f, 1);
        st_enc_layernorm(x2, with_res ? res : NULL, rows, n, g, b, 1e-12f, 4);
        for (long r = 0; r < rows; r++) {
            double mean = 0, var = 0;
            for (long i = 0; i < n; i++)
                mean += (double)orig[r * n + i] + (with_res ? res[r * n + i] : 0);
            mean /= n;
            for (long i = 0; i < n; i++) {
                double d = (double)orig[r * n + i] + (with_res ? res[r * n + i] : 0) - mean;
                var += d * d;
            }
            var /= n;
            for (long i = 0; i < n; i++) {
                double d = (double)orig[r * n + i] + (with_res ? res[r * n + i] : 0) - mean;
                want[i] = d / sqrt(var + 1e-12) * g[i] + b[i];
                CHECK(fabs(x[r * n + i] - want[i]) < 2e-4);
                CHECK(x[r * n + i] == x2[r * n + i]);
            }
        }
        memcpy(x, orig, rows * n * 4);
        memcpy(x2, orig, rows * n * 4);
        free(orig);
    }
    free(x);
    free(x2);
    free(res);
}

static void test_attention(void) {
    const long lens[] = {1, 5, 17, 3, 9};
    const long nsent = 5, heads = 3, d = 4, ld = heads * d;
    long start[5], T = 0, maxlen = 0;
    for (long s = 0; s < nsent; s++) {
        start[s] = T;
        T += lens[s];
        maxlen = lens[s] > maxlen ? lens[s] : maxlen;
    }
    float *q = malloc(T * ld * 4), *k = malloc(T * ld * 4), *v = malloc(T * ld * 4);
    float *c1 = malloc(T * ld * 4), *c2 = malloc(T * ld * 4);
    CHECK(q && k && v && c1 && c2);
    for (long i = 0; i < T * ld; i++) {
        q[i] = 3 * rnd();
        k[i] = 3 * rnd();
        v[i] = rnd();
    }
    CHECK(st_enc_attention(q, k, v, c1, ld, start, lens, nsent, maxlen, heads, d, 1) == 0);
    CHECK(st_enc_attention(q, k, v, c2, ld, start, lens, nsent, maxlen, heads, d, 4) == 0);
    for (long s = 0; s < nsent; s++)
        for (long h = 0; h < heads; h++)
            for (long i = 0; i < lens[s]; i++) {
                double w[17], m = -1e300, sum = 0;
                const float *qi = q + (start[s] + i) * ld + h * d;
                for (long j = 0; j < lens[s]; j++) { /* only the sentence's own keys */
                    const float *kj = k + (start[s] + j) * ld + h * d;
                    double dot = 0;
                    for (long p = 0; p < d; p++)
                        dot += (double)qi[p] * kj[p];
                    w[j] = dot / sqrt((double)d);
                    m = w[j] > m ? w[j] : m;
                }
                for (long j = 0; j < lens[s]; j++)
                    sum += w[j] = exp(w[j] - m);
                for (long p = 0; p < d; p++) {
                    double want = 0;
                    for (long j = 0; j < lens[s]; j++)
                        want += w[j] / sum * v[(start[s] + j) * ld + h * d + p];
                    long at = (start[s] + i) * ld + h * d + p;
                    CHECK(fabs(c1[at] - want) < 1e-5);
                    CHECK(c1[at] == c2[at]);
                }
            }
    free(q);
    free(k);
    free(v);
    free(c1);
    free(c2);
}

static void test_pool(void) {
    const long n = 6, lens[] = {3, 1, 4}, start[] = {0, 3, 4};
    float x[8 * 6], out[3 * 6];
    for (long i = 0; i < 8 * n; i++)
        x[i] = 4 * rnd();
    for (int pooling = 0; pooling < 3; pooling++)
        for (int normalize = 0; normalize < 2; normalize++) {
            st_enc_pool(x, n, start, lens, 3, pooling, normalize, out);
            for (long s = 0; s < 3; s++) {
                double want[6], norm = 0;
                for (long i = 0; i < n; i++) {
                    const float *rows = x + start[s] * n;
                    double acc = pooling == 2 ? -1e300 : 0;
                    for (long r = 0; r < lens[s]; r++) {
                        double e = rows[r * n + i];
                        if (pooling == 0)
                            acc += e / lens[s];
                        if (pooling == 1 && r == 0)
                            acc = e;
                        if (pooling == 2)
                            acc = e > acc ? e : acc;
                    }
                    want[i] = acc;
                    norm += acc * acc;
                }
                for (long i = 0; i < n; i++) {
                    double w = normalize ? want[i] / sqrt(norm) : want[i];
                    CHECK(fabs(out[s * n + i] - w) < 1e-6 * (1 + fabs(w)));
                }
            }
        }
    /* an all-zero vector normalizes to zeros, not NaN */
    float zeros[6] = {0};
    const long one = 1, at = 0;
    st_enc_pool(zeros, 6, &at, &one, 1, 0, 1, out);
    for (long i = 0; i < 6; i++)
        CHECK(out[i] == 0);
}

int main(void) {
    test_exp_erf();
    test_gelu();
    test_layernorm();
    test_attention();
    test_pool();
    printf("test_st_encoder: ok\n");
    return 0;
}
