# sieve (Zhang et al., NSDI 2024). One FIFO queue (new pages at the head) and a hand that
# walks from the tail towards the head, wrapping; a hit sets the page's visited bit.
#   state:  the queue and its hand (st_pool_hand_list)
#   insert: at the head, bit clear (unlike clock, not at the hand: new pages are examined
#           soon, so one-time pages leave quickly)
#   victim: the hand clears visited bits as it passes and evicts the first unvisited,
#           unpinned page; survivors stay where they are

cdef void st_pool_sieve_insert(Pool *pool, PoolPage *p) noexcept nogil:
    p.flag = 0
    st_pool_list_push_head(&(<st_pool_hand_list *>pool.state).list, p)


cdef void st_pool_sieve_describe(Policy *p) noexcept nogil:
    p.init = st_pool_hand_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_sieve_insert
    p.hit = st_pool_mark_used
    p.remove = st_pool_hand_remove
    p.victim = st_pool_hand_sweep
