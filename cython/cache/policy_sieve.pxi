# sieve (Zhang et al., NSDI 2024). One FIFO queue (list 0, new pages at the head) and a hand
# that walks from the tail towards the head, wrapping; a hit sets the page's visited bit.
#   insert: at the head, bit clear (unlike clock, not at the hand: new pages are examined
#           soon, so one-time pages leave quickly)
#   victim: the hand clears visited bits as it passes and evicts the first unvisited,
#           unpinned page; survivors stay where they are

cdef void sieve_insert(Pool *pool, PoolPage *p) noexcept nogil:
    p.flag = 0
    list_push_head(&pool.lists[0], p)


cdef PoolPage *sieve_victim(Pool *pool) noexcept nogil:
    return sweep(pool)
