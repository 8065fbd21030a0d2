# BLAS, linked at build time (scipy-openblas32: symbols prefixed scipy_), so the kernels
# need no Python import and work in the sqlite3 shell too. The thread count of every
# kernel is OpenBLAS's; set_threads() / SQL tensor_threads(n) change it.

cdef extern from "cblas.h" nogil:
    enum CBLAS_ORDER:
        CblasRowMajor
    enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int m, int n, float alpha,
                           const float *a, int lda, const float *x, int incx, float beta,
                           float *y, int incy)
    void scipy_openblas_set_num_threads(int n)
    int scipy_openblas_get_num_threads()
