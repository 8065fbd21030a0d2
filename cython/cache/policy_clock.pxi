# clock: second chance (Corbato 1968). Pages sit on a circle (a list walked from the tail
# towards the head, wrapping); a hit sets the page's reference bit.
#   state:  the list and its hand (st_pool_hand_list)
#   insert: just behind the hand (it is examined last), bit clear
#   victim: the hand clears set bits as it passes and stops at the first unpinned page
#           whose bit is clear; that page goes, the hand stays where it was

cdef void st_pool_clock_insert(Pool *pool, PoolPage *p) noexcept nogil:
    cdef st_pool_hand_list *s = <st_pool_hand_list *>pool.state
    cdef PageList *l = &s.list
    cdef PoolPage *h = s.hand
    p.flag = 0
    if h == NULL or h.next == NULL:  # behind the hand is the head (where it wraps to)
        st_pool_list_push_head(l, p)
        return
    # between the hand and the page it passed last (its next, towards the tail)
    p.prev = h
    p.next = h.next
    h.next.prev = p
    h.next = p
    l.count += 1
    l.bytes += p.nbytes


cdef void st_pool_clock_describe(Policy *p) noexcept nogil:
    p.init = st_pool_hand_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_clock_insert
    p.hit = st_pool_mark_used
    p.remove = st_pool_hand_remove
    p.victim = st_pool_hand_sweep
