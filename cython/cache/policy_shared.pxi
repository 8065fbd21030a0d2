# shared: the paper's sharing-aware policy (Zhou et al., VLDB 2022, section 3): pages that
# more models share are far more expensive to evict, so private pages go first; among
# pages shared equally, the least recently used.
#   state:  one list, most recent at the head
#   victim: the unpinned page with the smallest (models sharing it, last access)
# The pool's loader asks the store how many models share each page it reads.

cdef double st_pool_shared_key(Pool *pool, PoolPage *p) noexcept nogil:
    return <double>p.shared + <double>p.last / <double>(pool.tick + 2)


cdef PoolPage *st_pool_shared_victim(Pool *pool) noexcept nogil:
    return st_pool_min_unpinned(pool, st_pool_the_list(pool), st_pool_shared_key)


cdef void st_pool_shared_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_one_list_touch
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_shared_victim
    p.needs_sharing = 1
