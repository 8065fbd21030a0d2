/* sqlite-tensor: the kernels of a transformer encoder besides its linear layers (which run
** over the pool's tiles, inference/kernels.pxi): layer norm, GELU, multi-head
** self-attention, pooling, L2 normalize.
**
** Sentences are packed, not padded: sentence s is rows start[s] .. start[s] + len[s] of
** every (tokens x width) activation, and attends to its own rows only. That is what the
** padding mask does to a padded batch (masked keys get weight exp(-huge) = 0, masked
** rows are dropped by pooling), without computing the padding.
**
** Every function is plain C, reads no SQLite and is safe on any thread; nthreads > 1
** splits the work with st_parallel_for. Errors: only memory (-1).
*/
#ifndef ST_ENCODER_H
#define ST_ENCODER_H

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden"))) /* not exported from the module */
#endif

/* x[r] = LayerNorm(x[r] (+ res[r] when res is not NULL)) * g + b, for rows x n floats */
ST_HIDDEN void st_enc_layernorm(float *x, const float *res, long rows, long n, const float *g,
                                const float *b, float eps, int nthreads);
/* x = 0.5 x (1 + erf(x / sqrt 2)), the exact GELU (to float precision) */
ST_HIDDEN void st_enc_gelu(float *x, long n, int nthreads);

/* ctx = softmax(Q K^T / sqrt(d)) V per sentence and head. q, k, v, ctx: (tokens x ld)
** with head h at columns h*d .. h*d + d. lens[s] <= maxlen. 0, or -1 out of memory. */
ST_HIDDEN int st_enc_attention(const float *q, const float *k, const float *v, float *ctx, long ld,
                               const long *start, const long *lens, long nsent, long maxlen,
                               int heads, int d, int nthreads);

/* out[s] (n floats) = the pooling (0 mean, 1 first row, 2 max) of sentence s's rows of x
** (rows x n); then L2-normalized when normalize. */
ST_HIDDEN void st_enc_pool(const float *x, long n, const long *start, const long *lens, long nsent,
                           int pooling, int normalize, float *out);
#endif
