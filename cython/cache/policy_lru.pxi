# lru: evict the least recently used page.
#   state:       one list, most recent at the head
#   insert, hit: the page to the head
#   victim:      the unpinned page nearest the tail

cdef PoolPage *st_pool_lru_victim(Pool *pool) noexcept nogil:
    return st_pool_oldest_unpinned(st_pool_the_list(pool))


cdef void st_pool_lru_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_one_list_touch
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_lru_victim
