# s3fifo (Yang et al., SOSP 2023). S: a small FIFO (list 0, a tenth of the budget) that
# new pages enter; M: the main FIFO (list 1); G: ghosts of pages evicted from S (the pool's
# history, as many as M can hold: nine tenths of the pages cached). Each page keeps a 0..3 use counter (flag).
#   insert: a ghost goes to M's head, anything else to S's head; counter 0
#   hit:    counter + 1, at most 3
#   victim: while S holds more than its tenth (or M is empty): S's oldest moves to M if it
#           was used while in S, else it is the victim (and becomes a ghost); otherwise
#           M's oldest goes back to M's head with its counter decremented if it was used,
#           else it is the victim

cdef void s3fifo_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef HistoryEntry *e = history_get(pool, p.store_key, p.page_id)
    # G is as large as M can grow (nine tenths of the cache), not as M is now
    pool.ghost_pages = max(1, (pool.pages * 9 + 9) // 10)
    p.flag = 0
    p.queue = 1 if (was_evicted_recently(pool, e) and e.evicted_from == 0) else 0
    list_push_head(&pool.lists[p.queue], p)


cdef void s3fifo_hit(Pool *pool, PoolPage *p) noexcept nogil:
    if p.flag < 3:
        p.flag += 1


cdef PoolPage *s3fifo_victim(Pool *pool) noexcept nogil:
    cdef PoolPage *t
    cdef sqlite3_int64 steps
    cdef sqlite3_int64 limit = 4 * (pool.lists[0].count + pool.lists[1].count) + 4
    for steps in range(limit):
        if pool.lists[0].bytes > pool_budget(pool) // 10 or pool.lists[1].count == 0:
            t = oldest_unpinned(&pool.lists[0])
            if t != NULL:
                if t.flag > 0:  # used while in S: it earned a place in M
                    list_unlink(&pool.lists[0], t)
                    t.queue = 1
                    t.flag = 0
                    list_push_head(&pool.lists[1], t)
                    continue
                return t
        t = oldest_unpinned(&pool.lists[1])
        if t == NULL:
            return oldest_unpinned(&pool.lists[0])
        if t.flag > 0:  # reinserted, one use spent
            t.flag -= 1
            list_unlink(&pool.lists[1], t)
            list_push_head(&pool.lists[1], t)
            continue
        return t
    return oldest_unpinned(&pool.lists[1])
