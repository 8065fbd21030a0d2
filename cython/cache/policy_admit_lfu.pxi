# admit-lfu: ours, the default. Serving reads every page of a model per request, so a
# page's access rate is the sum of the request rates of the models sharing it: exactly what
# an access count measures, sharing and popularity in one number. Keeping the pages with
# the highest counts is what the optimum does when requests are independent; what spoils
# plain LFU is the first read of a cold page, which evicts a hot one. So a page read on a
# miss is admitted only if its count beats the count of the page it would evict (TinyLFU's
# admission, Einziger et al., TOS 2017, here with exact, aged counts from the history):
# a scan of cold pages passes through without disturbing the cache.
#   victim: as lfu, the unpinned page with the smallest (count, last access)
#   admit:  if it fits without eviction, or if its count before this access exceeds the
#           victim's

cdef int admit_lfu_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if pool_admit_if_room(pool, p):
        return 1
    cdef PoolPage *v = lfu_victim(pool)
    # p's count includes the access being served; the victim's may not yet (a scan reads it
    # later). Comparing p's count before this access keeps equally hot pages where they are
    # instead of cycling them through the cache.
    return v == NULL or page_count(pool, p) - 1 > page_count(pool, v)
