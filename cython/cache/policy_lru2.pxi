# lru2: LRU-K with K = 2 (O'Neil, O'Neil & Weikum, SIGMOD 1993). Evict the page whose
# second-to-last access is oldest; pages seen once (no second access) go first, oldest
# first. Access times live in the pool's history, so they survive eviction (the paper's
# retained information).
#   state:  one list of the resident pages
#   victim: the unpinned page with the smallest (time of the access before last, last)

cdef double st_pool_lru2_key(Pool *pool, PoolPage *p) noexcept nogil:
    return <double>p.before_last + <double>p.last / <double>(pool.tick + 2)


cdef PoolPage *st_pool_lru2_victim(Pool *pool) noexcept nogil:
    return st_pool_min_unpinned(pool, st_pool_the_list(pool), st_pool_lru2_key)


cdef void st_pool_lru2_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_no_hit
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_lru2_victim
