# mru: evict the most recently used page (good for repeated scans larger than the cache,
# bad for everything else; a baseline of the paper).
#   state:       one list, most recent at the head
#   insert, hit: the page to the head
#   victim:      the unpinned page nearest the head

cdef PoolPage *st_pool_mru_victim(Pool *pool) noexcept nogil:
    return st_pool_newest_unpinned(st_pool_the_list(pool))


cdef void st_pool_mru_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_one_list_touch
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_mru_victim
