# mru: evict the most recently used page (good for repeated scans larger than the cache,
# bad for everything else; a baseline of the paper).
#   insert, hit: as lru
#   victim:      the unpinned page nearest the head

cdef PoolPage *mru_victim(Pool *pool) noexcept nogil:
    cdef PoolPage *p = pool.lists[0].head
    while p != NULL and p.pins > 0:
        p = p.next
    return p
