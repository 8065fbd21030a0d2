# 2q (Johnson & Shasha, VLDB 1994), full version. A1in: a FIFO of pages seen once (list 0,
# a quarter of the budget); Am: an LRU of pages seen again (list 1); A1out: ghosts of pages
# evicted from A1in (the pool's history, half as many as fit in the budget).
#   insert: a ghost of A1in goes to Am's head, anything else to A1in's head
#   hit:    in Am, move to its head; in A1in, stay (correlated references)
#   victim: A1in's oldest while A1in holds more than its quarter, else Am's least recent

cdef void twoq_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef HistoryEntry *e = history_get(pool, p.store_key, p.page_id)
    pool.ghost_pages = max(1, pool.pages // 2)
    p.queue = 1 if (was_evicted_recently(pool, e) and e.evicted_from == 0) else 0
    list_push_head(&pool.lists[p.queue], p)


cdef void twoq_hit(Pool *pool, PoolPage *p) noexcept nogil:
    if p.queue == 1:
        list_unlink(&pool.lists[1], p)
        list_push_head(&pool.lists[1], p)


cdef void queue_remove(Pool *pool, PoolPage *p) noexcept nogil:
    """remove() of policies with several queues (2q, s3fifo): p.queue says which."""
    list_unlink(&pool.lists[p.queue], p)


cdef PoolPage *twoq_victim(Pool *pool) noexcept nogil:
    cdef PoolPage *v = NULL
    if pool.lists[0].bytes > pool_budget(pool) // 4 or pool.lists[1].count == 0:
        v = oldest_unpinned(&pool.lists[0])
    if v == NULL:
        v = oldest_unpinned(&pool.lists[1])
    if v == NULL:
        v = oldest_unpinned(&pool.lists[0])
    return v
