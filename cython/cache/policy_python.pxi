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

cdef object python_policy = None        # the plugged-in object (Python hosts only)
cdef sqlite3_int64 python_errors = 0
cdef object python_last_error = None


cdef object page_info(PoolPage *p, Pool *pool):
    return (p.page_id, p.nbytes, p.shared, page_count(pool, p), p.last)


cdef void python_failed(str what, object error) noexcept:
    global python_errors, python_last_error
    python_errors += 1
    python_last_error = f"{what}: {error!r}"


cdef PoolPage *python_victim(Pool *pool) noexcept nogil:
    cdef PoolPage *fallback = oldest_unpinned(&pool.lists[0])
    if fallback == NULL:
        return NULL
    with gil:
        return ask_victim(pool, fallback)


cdef PoolPage *ask_victim(Pool *pool, PoolPage *fallback) noexcept:
    """The Python half of python_victim (runs with the GIL)."""
    cdef PoolPage *p = pool.lists[0].tail
    candidates = {}
    while p != NULL:
        if p.pins == 0:
            candidates[p.page_id] = <size_t>p
        p = p.prev
    try:
        chosen = python_policy.victim([page_info(<PoolPage *><size_t>a, pool)
                                       for a in candidates.values()])
        if chosen not in candidates:
            raise LookupError(f"page {chosen!r} is not one of the {len(candidates)} candidates")
        return <PoolPage *><size_t>candidates[chosen]
    except BaseException as e:
        python_failed("victim", e)
    return fallback


cdef int python_admit(Pool *pool, PoolPage *p) noexcept nogil:
    if pool_admit_if_room(pool, p):
        return 1
    with gil:
        return ask_admit(pool, p)


cdef int ask_admit(Pool *pool, PoolPage *p) noexcept:
    """The Python half of python_admit (runs with the GIL)."""
    admit = getattr(python_policy, "admit", None)
    if admit is None:
        return 1
    try:
        return bool(admit(page_info(p, pool)))
    except BaseException as e:
        python_failed("admit", e)
    return 1
