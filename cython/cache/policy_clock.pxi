# clock: second chance (Corbato 1968). Pages sit on a circle (list 0, walked from the tail
# towards the head, wrapping); a hit sets the page's reference bit.
#   insert: just behind the hand (it is examined last), bit clear
#   victim: the hand clears set bits as it passes and stops at the first unpinned page
#           whose bit is clear; that page goes, the hand stays where it was

cdef void clock_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef PageList *l = &pool.lists[0]
    cdef PoolPage *h = pool.hand
    p.flag = 0
    if h == NULL or h.next == NULL:  # behind the hand is the head (where it wraps to)
        list_push_head(l, p)
        return
    # between the hand and the page it passed last (its next, towards the tail)
    p.prev = h
    p.next = h.next
    h.next.prev = p
    h.next = p
    l.count += 1
    l.bytes += p.nbytes


cdef void flag_hit(Pool *pool, PoolPage *p) noexcept nogil:
    """hit() of clock and sieve: mark the page used."""
    p.flag = 1


cdef void hand_remove(Pool *pool, PoolPage *p) noexcept nogil:
    """remove() of clock and sieve: keep the hand on the circle."""
    if pool.hand == p:
        pool.hand = p.prev
    list_unlink(&pool.lists[0], p)


cdef PoolPage *clock_victim(Pool *pool) noexcept nogil:
    return sweep(pool)


cdef PoolPage *sweep(Pool *pool) noexcept nogil:
    """The hand's walk shared by clock and sieve: clear set bits, stop at a clear one."""
    cdef PageList *l = &pool.lists[0]
    cdef PoolPage *h = pool.hand if pool.hand != NULL else l.tail
    cdef sqlite3_int64 steps
    for steps in range(2 * l.count + 1):
        if h == NULL:
            h = l.tail
            if h == NULL:
                return NULL
        if h.pins == 0:
            if not h.flag:
                pool.hand = h.prev
                return h
            h.flag = 0
        h = h.prev
    return NULL
