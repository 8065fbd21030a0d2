/* sqlite-tensor: matrix-vector products for one input (the memory-bound case).
**
** A simple vectorised loop keeps up with memory, and unlike OpenBLAS's sgemv it takes no
** lock (OpenBLAS takes a global one for its work buffer), so threads calling it in
** parallel scale. Both accumulate into y.
*/
#ifndef ST_GEMV_H
#define ST_GEMV_H

#ifndef ST_HIDDEN
#define ST_HIDDEN __attribute__((visibility("hidden")))  /* not exported from the module */
#endif

/* y[0:m] += A x, A row-major m x n */
ST_HIDDEN void st_gemv_n(long m, long n, const float *restrict a, const float *restrict x,
                         float *restrict y);
/* y[0:n] += A^T x, A row-major m x n */
ST_HIDDEN void st_gemv_t(long m, long n, const float *restrict a, const float *restrict x,
                         float *restrict y);
#endif
