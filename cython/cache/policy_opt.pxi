# opt: Belady's MIN (Belady 1966), with bypass. Needs the future, so only simulate() can use
# it: the simulator tells each access when its page is used next (next_use).
#   state:  one list of the resident pages
#   victim: the unpinned page used furthest in the future
#   admit:  if it fits, or if it is used before the page it would evict
# With bypass it is optimal for equal-sized pages even against policies that may refuse a
# page, so every policy's misses can be compared with it.

cdef double st_pool_opt_key(Pool *pool, PoolPage *p) noexcept nogil:
    return -<double>p.next_use


cdef PoolPage *st_pool_opt_victim(Pool *pool) noexcept nogil:
    return st_pool_min_unpinned(pool, st_pool_the_list(pool), st_pool_opt_key)


cdef int st_pool_opt_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if st_pool_fits(pool, p):
        return 1
    cdef PoolPage *v = st_pool_opt_victim(pool)
    return v == NULL or p.next_use < v.next_use


cdef void st_pool_opt_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_no_hit
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_opt_victim
    p.admit = st_pool_opt_admit
    p.simulation_only = 1
