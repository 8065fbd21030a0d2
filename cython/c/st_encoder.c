/* sqlite-tensor: encoder kernels (see st_encoder.h). */
#include "st_encoder.h"
#include "st_parallel.h"

/* BLAS's sgemm: scipy-openblas32's (tests/c/test_st_encoder.c puts a plain one in its place) */
#ifndef ST_ENC_SGEMM
#include <cblas.h>
#define ST_ENC_SGEMM scipy_cblas_sgemm
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One copy per instruction set, picked at load time (as st_gemv.c does): the elementwise
** loops below are written to vectorise, so AVX-512 / AVX2 run 16 / 8 floats at a time.
** ThreadSanitizer crashes in an ifunc resolver: its builds get the default copy only. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define ST_ENC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ST_ENC_CLONES
#endif

/* e^x to about 1 ulp for x in [-87, 88] (Cephes' expf), in plain arithmetic so that a loop
** of it vectorises (libm's expf is a call). */
static inline float enc_exp(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    /* n = round(x / ln 2): adding 1.5 * 2^23 rounds to an integer (no fast-math here) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union {
        int i;
        float f;
    } scale;
    scale.i = ((int)n + 127) << 23;
    return p * scale.f;
}

/* erfc(z) for z >= 0 with a relative error under 1.2e-7 (Numerical Recipes' erfcc,
** Chebyshev-fitted). GELU uses it on the side where 1 + erf would cancel. */
static inline float enc_erfc(float z) {
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return t * enc_exp(p - z * z);
}

/* GELU(x) = x Phi(x) = 0.5 x erfc(-x / sqrt 2): through erfc of |x| / sqrt 2, so that the
** negative side keeps its relative precision (1 + erf(x) there is a difference of two
** numbers near 1) */
static inline float enc_gelu(float x) {
    float z = (x < 0 ? -x : x) * 0.70710678118654752f;
    float c = enc_erfc(z);
    return 0.5f * x * (x < 0 ? c : 2.0f - c);
}

/* -- layer norm ----------------------------------------------------------------------- */

typedef struct {
    float *x;
    const float *res, *g, *b;
    long n;
    float eps;
} ln_job;

ST_ENC_CLONES static void ln_rows(const ln_job *job, long begin, long end) {
    long n = job->n, i, r;
    for (r = begin; r < end; r++) {
        float *x = job->x + r * n;
        if (job->res) {
            const float *res = job->res + r * n;
            for (i = 0; i < n; i++)
                x[i] += res[i];
        }
        /* eight partial sums: vectorised, and closer than one running sum */
        float acc[8] = {0}, mean = 0, var = 0;
        for (i = 0; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++)
                acc[j] += x[i + j];
        for (; i < n; i++)
            acc[0] += x[i];
        for (int j = 0; j < 8; j++)
            mean += acc[j];
        mean /= (float)n;
        memset(acc, 0, sizeof(acc));
        for (i = 0; i + 8 <= n; i += 8)
            for (int j = 0; j < 8; j++) {
                float d = x[i + j] - mean;
                acc[j] += d * d;
            }
        for (; i < n; i++)
            acc[0] += (x[i] - mean) * (x[i] - mean);
        for (int j = 0; j < 8; j++)
            var += acc[j];
        float inv = 1.0f / sqrtf(var / (float)n + job->eps);
        for (i = 0; i < n; i++)
            x[i] = (x[i] - mean) * inv * job->g[i] + job->b[i];
    }
}

static void ln_range(void *ctx, long begin, long end, int worker) {
    (void)worker;
    ln_rows((const ln_job *)ctx, begin, end);
}

void st_enc_layernorm(float *x, const float *res, long rows, long n, const float *g, const float *b,
                      float eps, int nthreads) {
    ln_job job = {x, res, g, b, n, eps};
    if (nthreads > 1 && rows > 1)
        st_parallel_for(nthreads, rows, ln_range, &job);
    else
        ln_rows(&job, 0, rows);
}

/* -- GELU ----------------------------------------------------------------------------- */

ST_ENC_CLONES static void gelu_span(float *x, long n) {
    for (long i = 0; i < n; i++)
        x[i] = enc_gelu(x[i]);
}

enum { SPAN = 4096 }; /* elements per unit of threaded elementwise work */

static void gelu_range(void *ctx, long begin, long end, int worker) {
    (void)worker;
    float *x = ((float **)ctx)[0];
    long n = (long)(size_t)((float **)ctx)[1];
    long lo = begin * SPAN, hi = end * SPAN < n ? end * SPAN : n;
    gelu_span(x + lo, hi - lo);
}

void st_enc_gelu(float *x, long n, int nthreads) {
    void *ctx[2] = {x, (void *)(size_t)n};
    if (nthreads > 1 && n > SPAN)
        st_parallel_for(nthreads, (n + SPAN - 1) / SPAN, gelu_range, ctx);
    else
        gelu_span(x, n);
}

/* -- attention ------------------------------------------------------------------------ */

typedef struct {
    const float *q, *k, *v;
    float *ctx;
    long ld;
    const long *start, *lens;
    int heads, d;
    float scale;
    float *scratch; /* per worker: maxlen * maxlen scores */
    long stride;
} attn_job;

/* row = softmax(row) over n values */
ST_ENC_CLONES static void softmax_row(float *row, long n) {
    float m = row[0], s = 0;
    long i;
    for (i = 1; i < n; i++)
        m = row[i] > m ? row[i] : m;
    for (i = 0; i < n; i++) {
        row[i] = enc_exp(row[i] - m);
        s += row[i];
    }
    float inv = 1.0f / s;
    for (i = 0; i < n; i++)
        row[i] *= inv;
}

static void attn_range(void *ctx, long begin, long end, int worker) {
    const attn_job *job = (const attn_job *)ctx;
    float *S = job->scratch + worker * job->stride;
    for (long u = begin; u < end; u++) {
        long s = u / job->heads, h = u % job->heads, n = job->lens[s];
        long off = job->start[s] * job->ld + h * job->d;
        if (n <= 0)
            continue;
        /* S = scale * Q K^T (n x n), then each row softmaxed, then ctx = S V (n x d) */
        ST_ENC_SGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, job->d, job->scale,
                     job->q + off, (int)job->ld, job->k + off, (int)job->ld, 0.0f, S, (int)n);
        for (long r = 0; r < n; r++)
            softmax_row(S + r * n, n);
        ST_ENC_SGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, job->d, (int)n, 1.0f, S,
                     (int)n, job->v + off, (int)job->ld, 0.0f, job->ctx + off, (int)job->ld);
    }
}

int st_enc_attention(const float *q, const float *k, const float *v, float *ctx, long ld,
                     const long *start, const long *lens, long nsent, long maxlen, int heads, int d,
                     int nthreads) {
    long units = nsent * heads;
    if (nthreads > units)
        nthreads = (int)units;
    if (nthreads < 1)
        nthreads = 1;
    attn_job job = {
        q, k, v, ctx, ld, start, lens, heads, d, 1.0f / sqrtf((float)d), NULL, maxlen * maxlen};
    job.scratch = malloc((size_t)nthreads * (size_t)job.stride * sizeof(float) + 1);
    if (!job.scratch)
        return -1;
    if (nthreads > 1)
        st_parallel_for(nthreads, units, attn_range, &job);
    else
        attn_range(&job, 0, units, 0);
    free(job.scratch);
    return 0;
}

/* -- pooling -------------------------------------------------------------------------- */

void st_enc_pool(const float *x, long n, const long *start, const long *lens, long nsent,
                 int pooling, int normalize, float *out) {
    for (long s = 0; s < nsent; s++) {
        float *o = out + s * n;
        const float *rows = x + start[s] * n;
        long len = lens[s], r, i;
        if (pooling == 1 || len <= 0) { /* cls: the first row (an empty sentence has none) */
            if (len > 0)
                memcpy(o, rows, n * sizeof(float));
            else
                memset(o, 0, n * sizeof(float));
        } else if (pooling == 2) { /* max */
            memcpy(o, rows, n * sizeof(float));
            for (r = 1; r < len; r++)
                for (i = 0; i < n; i++)
                    o[i] = rows[r * n + i] > o[i] ? rows[r * n + i] : o[i];
        } else { /* mean, summed in double: up to thousands of rows */
            for (i = 0; i < n; i++) {
                double acc = 0;
                for (r = 0; r < len; r++)
                    acc += rows[r * n + i];
                o[i] = (float)(acc / (double)len);
            }
        }
        if (normalize) { /* as torch.nn.functional.normalize: x / max(||x||, 1e-12) */
            double ss = 0;
            for (i = 0; i < n; i++)
                ss += (double)o[i] * o[i];
            double norm = sqrt(ss);
            float inv = (float)(1.0 / (norm > 1e-12 ? norm : 1e-12));
            for (i = 0; i < n; i++)
                o[i] *= inv;
        }
    }
}
