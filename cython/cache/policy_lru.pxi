# lru: evict the least recently used page.
#   insert, hit: move the page to the head of the list
#   victim:      the unpinned page nearest the tail

cdef void lru_insert(Pool *pool, PoolPage *p) noexcept nogil:
    list_push_head(&pool.lists[0], p)


cdef void lru_hit(Pool *pool, PoolPage *p) noexcept nogil:
    list_unlink(&pool.lists[0], p)
    list_push_head(&pool.lists[0], p)


cdef void list0_remove(Pool *pool, PoolPage *p) noexcept nogil:
    """remove() of every policy that keeps its pages in list 0 alone."""
    list_unlink(&pool.lists[0], p)


cdef PoolPage *lru_victim(Pool *pool) noexcept nogil:
    return oldest_unpinned(&pool.lists[0])
