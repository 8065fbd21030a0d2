# lru2: LRU-K with K = 2 (O'Neil, O'Neil & Weikum, SIGMOD 1993). Evict the page whose
# second-to-last access is oldest; pages seen once (no second access) go first, oldest
# first. Access times live in the pool's history, so they survive eviction (the paper's
# retained information).
#   victim: the unpinned page with the smallest (time of the access before last, last)

cdef double lru2_key(Pool *pool, PoolPage *p) noexcept nogil:
    return <double>p.before_last + <double>p.last / <double>(pool.tick + 2)


cdef PoolPage *lru2_victim(Pool *pool) noexcept nogil:
    return min_unpinned(pool, lru2_key)
