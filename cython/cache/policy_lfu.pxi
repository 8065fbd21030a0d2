# lfu: evict the least frequently used page; ties go to the least recently used.
# Counts live in the pool's history, so they survive eviction ("perfect" LFU), halved every
# aging window so that old popularity fades.
#   insert, hit: (the pool has counted the access)
#   victim:      the unpinned page with the smallest (count, last access)

cdef double lfu_key(Pool *pool, PoolPage *p) noexcept nogil:
    return <double>page_count(pool, p) + <double>p.last / <double>(pool.tick + 2)


cdef void list0_insert(Pool *pool, PoolPage *p) noexcept nogil:
    """insert() of policies that only need their pages listed (lfu, lru2, shared, ...)."""
    list_push_head(&pool.lists[0], p)


cdef void no_op(Pool *pool, PoolPage *p) noexcept nogil:
    pass


cdef PoolPage *lfu_victim(Pool *pool) noexcept nogil:
    return min_unpinned(pool, lfu_key)
