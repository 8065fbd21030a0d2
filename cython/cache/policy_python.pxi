# python: a policy written in Python, plugged in with cache.configure(policy=obj).
#
#   obj.victim(candidates) -> page_id     per eviction; candidates are the unpinned resident
#                                         pages as PageInfo tuples, least recently used first
#   obj.admit(page) -> bool  (optional)   per fault: keep the page just read?
# PageInfo = (page_id, nbytes, shared, accesses, last_access). Never called per row, and
# never on hits: the pool keeps the pages in LRU order and passes what it knows.
#
# The calls run under the pool's lock with the GIL taken, so the object must not use
# sqlite-tensor itself. If it raises, or names a page that is not a candidate, the pool
# takes the least recently used candidate instead (admits the page, for admit), counts the
# error and keeps the message (cache.stats(): python_errors, python_last_error).
#   state: one list, least recently used at the tail

cdef object st_pool_python_object = None        # the plugged-in object (Python hosts only)
cdef sqlite3_int64 st_pool_python_errors = 0
cdef object st_pool_python_last_error = None


cdef object st_pool_python_page_info(PoolPage *p, Pool *pool):
    return (p.page_id, p.nbytes, p.shared, st_pool_page_count(pool, p), p.last)


cdef void st_pool_python_failed(str what, object error) noexcept:
    global st_pool_python_errors, st_pool_python_last_error
    st_pool_python_errors += 1
    st_pool_python_last_error = f"{what}: {error!r}"


cdef PoolPage *st_pool_python_victim(Pool *pool) noexcept nogil:
    cdef PoolPage *fallback = st_pool_oldest_unpinned(st_pool_the_list(pool))
    if fallback == NULL:
        return NULL
    with gil:
        return st_pool_python_ask_victim(pool, fallback)


cdef PoolPage *st_pool_python_ask_victim(Pool *pool, PoolPage *fallback) noexcept:
    """The Python half of st_pool_python_victim (runs with the GIL)."""
    cdef PoolPage *p = st_pool_the_list(pool).tail
    candidates = {}
    while p != NULL:
        if p.pins == 0:
            candidates[p.page_id] = <size_t>p
        p = p.prev
    try:
        chosen = st_pool_python_object.victim([st_pool_python_page_info(<PoolPage *><size_t>a, pool)
                                               for a in candidates.values()])
        if chosen not in candidates:
            raise LookupError(f"page {chosen!r} is not one of the {len(candidates)} candidates")
        return <PoolPage *><size_t>candidates[chosen]
    except BaseException as e:
        st_pool_python_failed("victim", e)
    return fallback


cdef int st_pool_python_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if st_pool_fits(pool, p):
        return 1
    with gil:
        return st_pool_python_ask_admit(pool, p)


cdef int st_pool_python_ask_admit(Pool *pool, PoolPage *p) noexcept:
    """The Python half of st_pool_python_admit (runs with the GIL)."""
    admit = getattr(st_pool_python_object, "admit", None)
    if admit is None:
        return 1
    try:
        return bool(admit(st_pool_python_page_info(p, pool)))
    except BaseException as e:
        st_pool_python_failed("admit", e)
    return 1


cdef void st_pool_python_describe(Policy *p) noexcept nogil:
    p.init = st_pool_one_list_init
    p.free = st_pool_state_free
    p.insert = st_pool_one_list_insert
    p.hit = st_pool_one_list_touch
    p.remove = st_pool_one_list_remove
    p.victim = st_pool_python_victim
    p.admit = st_pool_python_admit
    p.needs_sharing = 1
