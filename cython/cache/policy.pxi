# The replacement-policy interface, and the generic machinery policies build on.
#
# A policy decides which unpinned page leaves when the pool is over budget, and may refuse
# to keep a page it has just read (admission). It owns its state, its init and its named
# parameters, libCacheSim style; the pool calls, under its lock:
#   init(pool)         make pool.state (the policy's own struct) from pool.params; before
#                      the first access after the policy was set or its pages dropped
#   free(pool)         free pool.state (when the pages are dropped)
#   insert(pool, p)    p was read on a miss and is now resident
#   hit(pool, p)       resident p was used again
#   remove(pool, p)    p leaves the pool (evicted, stale, or cleared)
#   victim(pool)       the unpinned page to evict next, or NULL if every page is pinned
#   admit(pool, p)     keep p (just read, not yet resident)? NULL: always
# Every page carries the per-page policy fields of PoolPage (list links, queue, flag, freq,
# times); pool.history remembers counts and access times of pages no longer resident, and
# which were evicted recently (the "ghosts" of 2Q and S3-FIFO).
#
# A new policy is one file, cython/cache/policy_<name>.pxi, defining its callbacks, its
# state, its parameter table (st_pool_param, pool_interface.pxi) and a describe function that fills
# its Policy; plus one line in the registry table (registry.pxi) and its include in
# engine.pyx. docs/cache.md describes them (a test checks it lists the same policies and
# parameters as the registry).
#
# Below, machinery that is not any one policy's: page lists, scans for the best victim,
# the history, the "one list" state many policies use, and a hand walking a list.

# -- page lists ----------------------------------------------------------------------------

cdef inline void st_pool_list_unlink(PageList *l, PoolPage *p) noexcept nogil:
    if p.prev != NULL:
        p.prev.next = p.next
    else:
        l.head = p.next
    if p.next != NULL:
        p.next.prev = p.prev
    else:
        l.tail = p.prev
    p.prev = NULL
    p.next = NULL
    l.count -= 1
    l.bytes -= p.nbytes


cdef inline void st_pool_list_push_head(PageList *l, PoolPage *p) noexcept nogil:
    p.prev = NULL
    p.next = l.head
    if l.head != NULL:
        l.head.prev = p
    l.head = p
    if l.tail == NULL:
        l.tail = p
    l.count += 1
    l.bytes += p.nbytes


cdef inline PoolPage *st_pool_oldest_unpinned(PageList *l) noexcept nogil:
    """From the tail (oldest) towards the head, the first page not pinned."""
    cdef PoolPage *p = l.tail
    while p != NULL and p.pins > 0:
        p = p.prev
    return p


cdef inline PoolPage *st_pool_newest_unpinned(PageList *l) noexcept nogil:
    """From the head (newest) towards the tail, the first page not pinned."""
    cdef PoolPage *p = l.head
    while p != NULL and p.pins > 0:
        p = p.next
    return p


cdef PoolPage *st_pool_min_unpinned(
        Pool *pool, PageList *l,
        double (*key)(Pool *, PoolPage *) noexcept nogil) noexcept nogil:
    """The unpinned page of l with the smallest key(page) (ties: the oldest).
    A scan: pools hold thousands of pages, not millions, and this runs per eviction."""
    cdef PoolPage *p = l.tail
    cdef PoolPage *best = NULL
    cdef double best_key = 0, k
    while p != NULL:
        if p.pins == 0:
            k = key(pool, p)
            if best == NULL or k < best_key:
                best = p
                best_key = k
        p = p.prev
    return best


# -- page history -----------------------------------------------------------------------------

cdef HistoryEntry *st_pool_history_get(Pool *pool, uint64_t key,
                                       sqlite3_int64 page_id) noexcept nogil:
    """The entry of a page, made if needed (replacing the least recently used entry of its
    probe window when the table is full); NULL only if the table cannot be allocated."""
    cdef size_t mask, slot, oldest
    cdef int i
    cdef HistoryEntry *e
    if pool.history == NULL:
        pool.history = <HistoryEntry *>calloc(ST_POOL_HISTORY_SLOTS, sizeof(HistoryEntry))
        if pool.history == NULL:
            return NULL
    mask = ST_POOL_HISTORY_SLOTS - 1
    slot = st_pool_bucket_hash(key, page_id) & mask
    oldest = slot
    for i in range(ST_POOL_HISTORY_PROBES):
        e = &pool.history[(slot + i) & mask]
        if e.used and e.store_key == key and e.page_id == page_id:
            return e
        if not e.used:
            oldest = (slot + i) & mask
            break
        if e.last < pool.history[oldest].last:
            oldest = (slot + i) & mask
    e = &pool.history[oldest]
    memset(e, 0, sizeof(HistoryEntry))
    e.used = 1
    e.store_key = key
    e.page_id = page_id
    e.epoch = pool.tick // pool.aging_window
    return e


cdef inline sqlite3_int64 st_pool_aged_count(Pool *pool, HistoryEntry *e) noexcept nogil:
    """Accesses, halved for every aging window since they were counted."""
    cdef sqlite3_int64 now = pool.tick // pool.aging_window
    cdef sqlite3_int64 shift = now - e.epoch
    if shift > 0:
        e.count = e.count >> shift if shift < 63 else 0
        e.epoch = now
    return e.count


cdef inline sqlite3_int64 st_pool_page_count(Pool *pool, PoolPage *p) noexcept nogil:
    """p's access count aged to now (a resident page's count ages while it sits unused)."""
    cdef sqlite3_int64 shift = pool.tick // pool.aging_window - p.epoch
    if shift <= 0:  # a wider window set since p was counted: its epoch is ahead of now
        return p.freq
    return p.freq >> shift if shift < 63 else 0


cdef inline int st_pool_is_ghost(Pool *pool, HistoryEntry *e, sqlite3_int64 ghosts) noexcept nogil:
    """Evicted within the last `ghosts` evictions."""
    return e != NULL and e.evicted_at > 0 and pool.evictions_seq - e.evicted_at < ghosts


cdef double st_pool_count_key(Pool *pool, PoolPage *p) noexcept nogil:
    """Rank by aged access count, then by last access (the least counted goes first)."""
    return <double>st_pool_page_count(pool, p) + <double>p.last / <double>(pool.tick + 2)


# -- one list: the state of policies that keep their pages in one list ---------------------------

ctypedef struct st_pool_one_list:
    PageList list                 # newest at the head


cdef int st_pool_one_list_init(Pool *pool) noexcept nogil:
    pool.state = calloc(1, sizeof(st_pool_one_list))
    return SQLITE_OK if pool.state != NULL else SQLITE_NOMEM


cdef void st_pool_state_free(Pool *pool) noexcept nogil:
    """free() of every policy whose state is one allocation."""
    free(pool.state)


cdef inline PageList *st_pool_the_list(Pool *pool) noexcept nogil:
    return &(<st_pool_one_list *>pool.state).list


cdef void st_pool_one_list_insert(Pool *pool, PoolPage *p) noexcept nogil:
    """insert(): the page at the head."""
    st_pool_list_push_head(st_pool_the_list(pool), p)


cdef void st_pool_one_list_touch(Pool *pool, PoolPage *p) noexcept nogil:
    """hit() that keeps the list in recency order: the page back to the head."""
    cdef PageList *l = st_pool_the_list(pool)
    st_pool_list_unlink(l, p)
    st_pool_list_push_head(l, p)


cdef void st_pool_one_list_remove(Pool *pool, PoolPage *p) noexcept nogil:
    st_pool_list_unlink(st_pool_the_list(pool), p)


cdef void st_pool_no_hit(Pool *pool, PoolPage *p) noexcept nogil:
    """hit() of policies that read everything they need from the history."""
    pass


# -- a hand walking one list (tail to head, wrapping), for second-chance policies ---------------

ctypedef struct st_pool_hand_list:
    PageList list                 # newest at the head
    PoolPage *hand                # where the walk resumes (NULL: at the tail)


cdef int st_pool_hand_list_init(Pool *pool) noexcept nogil:
    pool.state = calloc(1, sizeof(st_pool_hand_list))
    return SQLITE_OK if pool.state != NULL else SQLITE_NOMEM


cdef void st_pool_mark_used(Pool *pool, PoolPage *p) noexcept nogil:
    """hit(): set the page's bit."""
    p.flag = 1


cdef void st_pool_hand_remove(Pool *pool, PoolPage *p) noexcept nogil:
    """remove(), keeping the hand on the list."""
    cdef st_pool_hand_list *s = <st_pool_hand_list *>pool.state
    if s.hand == p:
        s.hand = p.prev
    st_pool_list_unlink(&s.list, p)


cdef PoolPage *st_pool_hand_sweep(Pool *pool) noexcept nogil:
    """The hand clears set bits as it passes and stops at the first unpinned page whose bit
    is clear: that page is the victim, and the hand rests just past it."""
    cdef st_pool_hand_list *s = <st_pool_hand_list *>pool.state
    cdef PageList *l = &s.list
    cdef PoolPage *h = s.hand if s.hand != NULL else l.tail
    cdef sqlite3_int64 steps
    for steps in range(2 * l.count + 1):
        if h == NULL:
            h = l.tail
            if h == NULL:
                return NULL
        if h.pins == 0:
            if not h.flag:
                s.hand = h.prev
                return h
            h.flag = 0
        h = h.prev
    return NULL
