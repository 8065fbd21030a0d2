# 2q (Johnson & Shasha, VLDB 1994), full version. A1in: a FIFO of pages seen once
# (kin_fraction of the budget); Am: an LRU of pages seen again; A1out: ghosts of pages
# evicted from A1in (the pool's history; kout_fraction of the pages cached, at least one).
#   state:  the two queues (queue 0: A1in, 1: Am; a page's queue says which) and the
#           parameters in millionths
#   insert: a ghost of A1in goes to Am's head, anything else to A1in's head
#   hit:    in Am, move to its head; in A1in, stay (correlated references)
#   victim: A1in's oldest while A1in holds more than its share, else Am's least recent
# Parameters (the paper's recommended Kin and Kout): kin_fraction 0.25, kout_fraction 0.50.

cdef extern from *:
    """
    static const st_pool_param st_pool_2q_params[] = {
        {"kin_fraction", "share of the budget (bytes) for A1in, the FIFO of pages seen once",
         0.25, 0.0, 1.0, 0, 0},
        {"kout_fraction", "ghosts remembered (A1out), as a share of the pages cached",
         0.50, 0.0, 10.0, 0, 0},
        {NULL}
    };
    """
    const st_pool_param st_pool_2q_params[]


ctypedef struct st_pool_2q:
    PageList queues[2]            # A1in, Am
    sqlite3_int64 kin_ppm, kout_ppm
    sqlite3_int64 budget, kin_bytes     # A1in's share of budget, kept while the budget stays


cdef int st_pool_2q_init(Pool *pool) noexcept nogil:
    cdef st_pool_2q *s = <st_pool_2q *>calloc(1, sizeof(st_pool_2q))
    if s == NULL:
        return SQLITE_NOMEM
    s.kin_ppm = st_pool_ppm(st_pool_param_value(pool, "kin_fraction"))
    s.kout_ppm = st_pool_ppm(st_pool_param_value(pool, "kout_fraction"))
    pool.state = s
    return SQLITE_OK


cdef void st_pool_2q_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef st_pool_2q *s = <st_pool_2q *>pool.state
    cdef HistoryEntry *e = st_pool_history_get(pool, p.store_key, p.page_id)
    cdef sqlite3_int64 ghosts = max(1, st_pool_share(pool.pages, s.kout_ppm, 0))
    p.queue = 1 if (st_pool_is_ghost(pool, e, ghosts) and e.evicted_from == 0) else 0
    st_pool_list_push_head(&s.queues[p.queue], p)


cdef void st_pool_2q_hit(Pool *pool, PoolPage *p) noexcept nogil:
    cdef st_pool_2q *s = <st_pool_2q *>pool.state
    if p.queue == 1:
        st_pool_list_unlink(&s.queues[1], p)
        st_pool_list_push_head(&s.queues[1], p)


cdef void st_pool_2q_remove(Pool *pool, PoolPage *p) noexcept nogil:
    st_pool_list_unlink(&(<st_pool_2q *>pool.state).queues[p.queue], p)


cdef PoolPage *st_pool_2q_victim(Pool *pool) noexcept nogil:
    cdef st_pool_2q *s = <st_pool_2q *>pool.state
    cdef PoolPage *v = NULL
    if s.budget != st_pool_budget(pool):
        s.budget = st_pool_budget(pool)
        s.kin_bytes = st_pool_share(s.budget, s.kin_ppm, 0)
    if s.queues[0].bytes > s.kin_bytes or s.queues[1].count == 0:
        v = st_pool_oldest_unpinned(&s.queues[0])
    if v == NULL:
        v = st_pool_oldest_unpinned(&s.queues[1])
    if v == NULL:
        v = st_pool_oldest_unpinned(&s.queues[0])
    return v


cdef void st_pool_2q_describe(Policy *p) noexcept nogil:
    p.init = st_pool_2q_init
    p.free = st_pool_state_free
    p.insert = st_pool_2q_insert
    p.hit = st_pool_2q_hit
    p.remove = st_pool_2q_remove
    p.victim = st_pool_2q_victim
    p.params = st_pool_2q_params
