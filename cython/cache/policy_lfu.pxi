# lfu: evict the least frequently used page; among equal counts, the least recently used.
# Counts live in the pool's history, so they survive eviction ("perfect" LFU), halved every
# aging window so that old popularity fades.
#   state:       one list of the resident pages
#   insert, hit: (the pool has counted the access)
#   victim:      the unpinned page with the smallest (count, last access)
# Parameters: aging_window, the pool's (configure(aging_window=) sets the same value).

cdef extern from *:
    """
    static const st_pool_param st_pool_lfu_params[] = {
        {"aging_window", "accesses after which every access count halves (the pool's setting)",
         ST_POOL_DEFAULT_AGING_WINDOW, 1, 9007199254740992.0, 1, 1},
        {NULL}
    };
    """
    const st_pool_param st_pool_lfu_params[]


cdef PoolPage *st_pool_lfu_victim(Pool *pool) noexcept nogil:
    return st_pool_min_unpinned(pool, st_pool_the_list(pool), st_pool_count_key)


cdef void st_pool_lfu_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_no_hit
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_lfu_victim
    p.params = st_pool_lfu_params
