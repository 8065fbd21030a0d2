# The replacement-policy interface, and the lists and page history policies share.
#
# A policy decides which unpinned page leaves when the pool is over budget, and may refuse
# to keep a page it has just read (admission). The pool calls, under its lock:
#   insert(pool, p)    p was read on a miss and is now resident
#   hit(pool, p)       resident p was used again
#   remove(pool, p)    p leaves the pool (evicted, stale, or cleared)
#   victim(pool)       the unpinned page to evict next, or NULL if every page is pinned
#   admit(pool, p)     keep p (just read, not yet resident)? NULL: always
# Every page carries the policy fields of PoolPage (list links, queue, flag, freq, times);
# pool.history remembers counts and access times of pages no longer resident, and which
# were evicted recently (the "ghosts" of 2Q and S3-FIFO).
#
# The struct Policy is declared with the pool (pool.pxi); the registry (registry.pxi) maps
# lower-case names to policies, one file each; docs/cache.md describes them.

# -- page lists ----------------------------------------------------------------------------

cdef inline void list_unlink(PageList *l, PoolPage *p) noexcept nogil:
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


cdef inline void list_push_head(PageList *l, PoolPage *p) noexcept nogil:
    p.prev = NULL
    p.next = l.head
    if l.head != NULL:
        l.head.prev = p
    l.head = p
    if l.tail == NULL:
        l.tail = p
    l.count += 1
    l.bytes += p.nbytes


cdef inline PoolPage *oldest_unpinned(PageList *l) noexcept nogil:
    """From the tail (oldest) towards the head, the first page not pinned."""
    cdef PoolPage *p = l.tail
    while p != NULL and p.pins > 0:
        p = p.prev
    return p


cdef PoolPage *min_unpinned(Pool *pool, double (*key)(Pool *, PoolPage *) noexcept nogil) noexcept nogil:
    """The unpinned page with the smallest key(page) over list 0 (ties: the oldest).
    A scan: pools hold thousands of pages, not millions, and this runs per eviction."""
    cdef PoolPage *p = pool.lists[0].tail
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

cdef HistoryEntry *history_get(Pool *pool, uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    """The entry of a page, made if needed (replacing the least recently used entry of its
    probe window when the table is full); NULL only if the table cannot be allocated."""
    cdef size_t mask, slot, oldest
    cdef int i
    cdef HistoryEntry *e
    if pool.history == NULL:
        pool.history = <HistoryEntry *>calloc(HISTORY_SLOTS, sizeof(HistoryEntry))
        if pool.history == NULL:
            return NULL
    mask = HISTORY_SLOTS - 1
    slot = bucket_hash(key, page_id) & mask
    oldest = slot
    for i in range(HISTORY_PROBES):
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


cdef inline sqlite3_int64 aged_count(Pool *pool, HistoryEntry *e) noexcept nogil:
    """Accesses, halved for every aging window since they were counted."""
    cdef sqlite3_int64 now = pool.tick // pool.aging_window
    cdef sqlite3_int64 shift = now - e.epoch
    if shift > 0:
        e.count = e.count >> shift if shift < 63 else 0
        e.epoch = now
    return e.count


cdef inline sqlite3_int64 page_count(Pool *pool, PoolPage *p) noexcept nogil:
    """p's access count aged to now (a resident page's count ages while it sits unused)."""
    cdef sqlite3_int64 shift = pool.tick // pool.aging_window - p.epoch
    return p.freq >> shift if shift < 63 else 0


cdef inline int was_evicted_recently(Pool *pool, HistoryEntry *e) noexcept nogil:
    """A ghost: evicted within the last ghost_pages evictions."""
    return e != NULL and e.evicted_at > 0 and pool.evictions_seq - e.evicted_at < pool.ghost_pages
