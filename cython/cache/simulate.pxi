# Replaying a page-access trace through a private pool: the same st_pool_access / eviction /
# policy code that serves, with a loader that only reports each page's size. The only
# difference is the simulator's knowledge of the future (next_use), which opt reads.

ctypedef struct SimPages:
    const sqlite3_int64 *nbytes   # by dense page index
    const int *shared             # models sharing each page


cdef int st_pool_sim_load(void *ctx, sqlite3_int64 page, unsigned char **data,
                          sqlite3_int64 *nbytes, int *shared, char **err) noexcept nogil:
    cdef SimPages *pages = <SimPages *>ctx
    data[0] = NULL
    nbytes[0] = pages.nbytes[page]
    shared[0] = pages.shared[page]
    return SQLITE_OK


cdef int st_pool_simulate(const Policy *policy, const double *params, sqlite3_int64 budget,
                          sqlite3_int64 aging_window,
                          const sqlite3_int64 *trace, const sqlite3_int64 *next_use,
                          sqlite3_int64 n, SimPages *pages, Pool *result) noexcept nogil:
    """Replay trace (dense page indexes) through policy with params (its values in its
    table's order; NULL: its defaults) and leave the pool's counters in result."""
    cdef Pool pool
    cdef PoolPage *p
    cdef char *err = NULL
    cdef sqlite3_int64 i
    cdef int rc = SQLITE_OK
    st_pool_init(&pool, policy, budget, 0)
    if params != NULL:
        memcpy(pool.params, params, sizeof(pool.params))
    if aging_window > 0:
        pool.aging_window = aging_window
    for i in range(n):
        rc = st_pool_access(&pool, 0, trace[i], 0, next_use[i], st_pool_sim_load, NULL, pages,
                            &p, &err)
        if rc != SQLITE_OK:
            break
        st_pool_unpin_in(&pool, p)
    memcpy(result, &pool, sizeof(Pool))
    st_pool_destroy(&pool)
    return rc
