# s3fifo (Yang et al., SOSP 2023). S: a small FIFO (small_fraction of the budget) that new
# pages enter; M: the main FIFO; G: ghosts of pages evicted from S (the pool's history, as
# many as M can hold: ghost_fraction of the pages cached, rounded up). Each page keeps a
# 0..max_freq use counter (its flag).
#   state:  the two queues (queue 0: S, 1: M; a page's queue says which) and the
#           parameters (fractions in millionths)
#   insert: a ghost goes to M's head, anything else to S's head; counter 0
#   hit:    counter + 1, at most max_freq
#   victim: while S holds more than its share (or M is empty): S's oldest moves to M if it
#           was used at least move_threshold times while in S, else it is the victim (and
#           becomes a ghost); otherwise M's oldest goes back to M's head with its counter
#           decremented if it was used, else it is the victim
# Parameters (the paper's): small_fraction 0.10, ghost_fraction 0.90, max_freq 3,
# move_threshold 1.

cdef extern from *:
    """
    static const st_pool_param st_pool_s3fifo_params[] = {
        {"small_fraction", "share of the budget (bytes) for S, the small FIFO new pages enter",
         0.10, 0.0, 1.0, 0, 0},
        {"ghost_fraction", "ghosts remembered (G), as a share of the pages cached (rounded up)",
         0.90, 0.0, 10.0, 0, 0},
        {"max_freq", "a page's use counter stops at this", 3, 1, 1000, 1, 0},
        {"move_threshold", "uses while in S that move a page to M instead of evicting it",
         1, 1, 1000, 1, 0},
        {NULL}
    };
    """
    const st_pool_param st_pool_s3fifo_params[]


ctypedef struct st_pool_s3fifo:
    PageList queues[2]            # S, M
    sqlite3_int64 small_ppm, ghost_ppm
    int max_freq, move_threshold
    sqlite3_int64 budget, small_bytes   # S's share of budget, kept while the budget stays


cdef int st_pool_s3fifo_init(Pool *pool) noexcept nogil:
    cdef st_pool_s3fifo *s = <st_pool_s3fifo *>calloc(1, sizeof(st_pool_s3fifo))
    if s == NULL:
        return SQLITE_NOMEM
    s.small_ppm = st_pool_ppm(st_pool_param_value(pool, "small_fraction"))
    s.ghost_ppm = st_pool_ppm(st_pool_param_value(pool, "ghost_fraction"))
    s.max_freq = <int>st_pool_param_value(pool, "max_freq")
    s.move_threshold = <int>st_pool_param_value(pool, "move_threshold")
    pool.state = s
    return SQLITE_OK


cdef void st_pool_s3fifo_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef st_pool_s3fifo *s = <st_pool_s3fifo *>pool.state
    cdef HistoryEntry *e = st_pool_history_get(pool, p.store_key, p.page_id)
    # G is as large as M can grow (ghost_fraction of the cache), not as M is now
    cdef sqlite3_int64 ghosts = max(1, st_pool_share(pool.pages, s.ghost_ppm, 1))
    p.flag = 0
    p.queue = 1 if (st_pool_is_ghost(pool, e, ghosts) and e.evicted_from == 0) else 0
    st_pool_list_push_head(&s.queues[p.queue], p)


cdef void st_pool_s3fifo_hit(Pool *pool, PoolPage *p) noexcept nogil:
    if p.flag < (<st_pool_s3fifo *>pool.state).max_freq:
        p.flag += 1


cdef void st_pool_s3fifo_remove(Pool *pool, PoolPage *p) noexcept nogil:
    st_pool_list_unlink(&(<st_pool_s3fifo *>pool.state).queues[p.queue], p)


cdef PoolPage *st_pool_s3fifo_victim(Pool *pool) noexcept nogil:
    cdef st_pool_s3fifo *s = <st_pool_s3fifo *>pool.state
    cdef PageList *small = &s.queues[0]
    cdef PageList *main = &s.queues[1]
    cdef PoolPage *t
    cdef sqlite3_int64 steps
    if s.budget != st_pool_budget(pool):
        s.budget = st_pool_budget(pool)
        s.small_bytes = st_pool_share(s.budget, s.small_ppm, 0)
    cdef sqlite3_int64 limit = 4 * (small.count + main.count) + 4
    for steps in range(limit):
        if small.bytes > s.small_bytes or main.count == 0:
            t = st_pool_oldest_unpinned(small)
            if t != NULL:
                if t.flag >= s.move_threshold:  # used while in S: it earned a place in M
                    st_pool_list_unlink(small, t)
                    t.queue = 1
                    t.flag = 0
                    st_pool_list_push_head(main, t)
                    continue
                return t
        t = st_pool_oldest_unpinned(main)
        if t == NULL:
            return st_pool_oldest_unpinned(small)
        if t.flag > 0:  # reinserted, one use spent
            t.flag -= 1
            st_pool_list_unlink(main, t)
            st_pool_list_push_head(main, t)
            continue
        return t
    return st_pool_oldest_unpinned(main)


cdef void st_pool_s3fifo_describe(Policy *p) noexcept nogil:
    p.init = st_pool_s3fifo_init
    p.free = st_pool_state_free
    p.insert = st_pool_s3fifo_insert
    p.hit = st_pool_s3fifo_hit
    p.remove = st_pool_s3fifo_remove
    p.victim = st_pool_s3fifo_victim
    p.params = st_pool_s3fifo_params
