# BLAS, linked at build time (scipy-openblas32: symbols prefixed scipy_), so the kernels
# need no Python import and work in the sqlite3 shell too. BLAS runs single-threaded (set
# at load): the kernels' own threads split a layer's tiles (kernels.pxi, dense).

cdef extern from "cblas.h" nogil:
    enum CBLAS_ORDER:
        CblasRowMajor
    enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans
    void scipy_cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                           int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
    void scipy_openblas_set_num_threads(int n)
    int scipy_openblas_get_num_threads()
