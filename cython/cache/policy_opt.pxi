# opt: Belady's MIN (Belady 1966), with bypass. Needs the future, so only simulate() can use
# it: the simulator tells each access when its page is used next (next_use).
#   victim: the unpinned page used furthest in the future
#   admit:  if it fits, or if it is used before the page it would evict
# With bypass it is optimal for equal-sized pages even against policies that may refuse a
# page, so every policy's misses can be compared with it.

cdef double opt_key(Pool *pool, PoolPage *p) noexcept nogil:
    return -<double>p.next_use


cdef PoolPage *opt_victim(Pool *pool) noexcept nogil:
    return min_unpinned(pool, opt_key)


cdef int opt_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if pool_admit_if_room(pool, p):
        return 1
    cdef PoolPage *v = opt_victim(pool)
    return v == NULL or p.next_use < v.next_use
