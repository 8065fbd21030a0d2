# admit-lfu: ours, the default. Serving reads every page of a model per request, so a
# page's access rate is the sum of the request rates of the models sharing it: exactly what
# an access count measures, sharing and popularity in one number. Keeping the pages with
# the highest counts is what the optimum does when requests are independent; what spoils
# plain LFU is the first read of a cold page, which evicts a hot one. So a page read on a
# miss is admitted only if its count beats the count of the page it would evict (TinyLFU's
# admission, Einziger et al., TOS 2017, here with exact, aged counts from the history):
# a scan of cold pages passes through without disturbing the cache.
#   state:  one list of the resident pages
#   victim: the unpinned page with the smallest (aged count, last access)
#   admit:  if it fits without eviction, or if its count before this access exceeds the
#           victim's
# Parameters: aging_window, the pool's (configure(aging_window=) sets the same value).

cdef extern from *:
    """
    static const st_pool_param st_pool_admit_lfu_params[] = {
        {"aging_window", "accesses after which every access count halves (the pool's setting)",
         ST_POOL_DEFAULT_AGING_WINDOW, 1, 9007199254740992.0, 1, 1},
        {NULL}
    };
    """
    const st_pool_param st_pool_admit_lfu_params[]


cdef PoolPage *st_pool_admit_lfu_victim(Pool *pool) noexcept nogil:
    return st_pool_min_unpinned(pool, st_pool_the_list(pool), st_pool_count_key)


cdef int st_pool_admit_lfu_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if st_pool_fits(pool, p):
        return 1
    cdef PoolPage *v = st_pool_admit_lfu_victim(pool)
    # p's count includes the access being served; the victim's may not yet (a scan reads it
    # later). Comparing p's count before this access keeps equally hot pages where they are
    # instead of cycling them through the cache.
    return v == NULL or st_pool_page_count(pool, p) - 1 > st_pool_page_count(pool, v)


cdef void st_pool_admit_lfu_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_no_hit
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_admit_lfu_victim
    p.admit = st_pool_admit_lfu_admit
    p.params = st_pool_admit_lfu_params
