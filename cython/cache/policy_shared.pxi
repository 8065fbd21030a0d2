# shared: the paper's sharing-aware policy (Zhou et al., VLDB 2022, section 3): pages that
# more models share are far more expensive to evict, so private pages go first; among
# pages shared equally, the least recently used.
#   victim: the unpinned page with the smallest (models sharing it, last access)
# The pool's loader asks the store how many models share each page it reads.

cdef double shared_key(Pool *pool, PoolPage *p) noexcept nogil:
    return <double>p.shared + <double>p.last / <double>(pool.tick + 2)


cdef PoolPage *shared_victim(Pool *pool) noexcept nogil:
    return min_unpinned(pool, shared_key)
