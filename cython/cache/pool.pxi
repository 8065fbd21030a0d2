# The buffer pool: cached pages, pinned while used, evicted by a replacement policy.
#
# One pool per process (st_pool_process) is shared by every connection and thread; simulate()
# makes private ones that replay a trace through exactly the same code.
#
# A cached page is the whole page BLOB, keyed by (store key, page id) and marked with the
# view epoch it was last confirmed in. The store key mixes the database file name with the
# store's random uid (<store>_config 'uid'). A page used in another view than its mark is
# confirmed first (the caller's confirm callback compares it with the committed page) and
# reloaded if it differs; process_pool.pxi says what a view is. So a page is served only
# while it is what the reading connection sees committed, whoever changed the file.
#
# Pages in use by a kernel are pinned (st_pool_pin / st_pool_unpin) and never evicted; resident
# bytes stay within the budget plus the pages pinned at that moment. A budget smaller than
# one page still works: the page is read, used, and dropped at unpin. A page the policy
# does not admit is used the same way.
#
# Locking: the process pool's mutex guards its table, policy, history and counters; page
# reads from the database (loads and confirmations) happen outside it.

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)

cdef extern from "st_fork.h":
    pthread_mutex_t st_pool_mutex      # defined in c/st_fork.c, whose fork handlers cover it
    int st_fork_init() nogil
    int st_fork_pool_skipped() nogil

cdef extern from *:
    """
    #define ST_POOL_DEFAULT_BUDGET (512LL * 1024 * 1024)
    #define ST_POOL_DEFAULT_AGING_WINDOW 100000  /* accesses after which access counts halve */
    """
    long long ST_POOL_DEFAULT_BUDGET
    long long ST_POOL_DEFAULT_AGING_WINDOW

# Page memory (st_page_alloc / st_page_free): the huge-page arena of c/st_arena.c, whose
# header says how pages are placed. Its mutex is taken inside the pool's, never around it.
cdef extern from "st_arena.h" nogil:
    void *st_page_alloc(size_t n)
    void st_page_free(void *p, size_t n)
    ctypedef struct st_arena_figures:
        long long regions, mapped, in_use, huge_regions, fallbacks
        int enabled, huge
    void st_arena_stats(st_arena_figures *out)
    void st_arena_configure(int enabled, int huge)


def _page_memory_stats():
    """The page arena's figures: regions (count), mapped_bytes (address space), in_use_bytes
    (pages placed in regions, each rounded up to 64 bytes), huge_regions (regions that
    accepted MADV_HUGEPAGE), fallbacks (pages of 64 KiB or more that came from malloc
    because no region could be mapped), and the settings (arena, huge)."""
    cdef st_arena_figures f
    with nogil:
        st_arena_stats(&f)
    return {"regions": f.regions, "mapped_bytes": f.mapped, "in_use_bytes": f.in_use,
            "huge_regions": f.huge_regions, "fallbacks": f.fallbacks, "arena": bool(f.enabled),
            "huge": bool(f.huge)}


def _page_memory_configure(arena=None, huge=None):
    """Switch the arena (arena=False: pages come from malloc) or huge pages for regions
    mapped from now on (huge=False); for tests and measurements. Pages already placed stay
    where they are and are freed where they came from."""
    cdef int a = -1 if arena is None else (1 if arena else 0)
    cdef int h = -1 if huge is None else (1 if huge else 0)
    with nogil:
        st_arena_configure(a, h)


# The pool's types (PoolPage, PageList, HistoryEntry, Policy, Pool, ...) are stated in
# pool_interface.pxi (included by engine.pxd), with what the pool offers other chapters.


cdef Pool st_pool_process            # zero-initialised C static; set up by pool_setup()


cdef inline size_t st_pool_bucket_hash(uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    cdef uint64_t h = (key ^ (<uint64_t>page_id * 0x9E3779B97F4A7C15ULL))
    h ^= h >> 29
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 32
    return <size_t>h


cdef inline void st_pool_lock(Pool *pool) noexcept nogil:
    if pool.locked:
        pthread_mutex_lock(&st_pool_mutex)


cdef inline void st_pool_unlock(Pool *pool) noexcept nogil:
    if pool.locked:
        pthread_mutex_unlock(&st_pool_mutex)


cdef void st_pool_init(Pool *pool, const Policy *policy, sqlite3_int64 budget,
                       int locked) noexcept nogil:
    memset(pool, 0, sizeof(Pool))
    pool.policy = policy
    pool.budget = budget
    pool.locked = locked
    pool.aging_window = ST_POOL_DEFAULT_AGING_WINDOW
    st_pool_default_params(policy, pool.params)


cdef sqlite3_int64 st_pool_budget(Pool *pool) noexcept nogil:
    return pool.budget if pool.budget > 0 else ST_POOL_DEFAULT_BUDGET


cdef PoolPage *st_pool_table_find(Pool *pool, uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    if pool.table == NULL:
        return NULL
    cdef PoolPage *p = pool.table[st_pool_bucket_hash(key, page_id) & (ST_POOL_BUCKETS - 1)]
    while p != NULL and not (p.store_key == key and p.page_id == page_id):
        p = p.hnext
    return p


cdef int st_pool_table_add(Pool *pool, PoolPage *p) noexcept nogil:
    cdef size_t b
    if pool.table == NULL:
        pool.table = <PoolPage **>calloc(ST_POOL_BUCKETS, sizeof(PoolPage *))
        if pool.table == NULL:
            return SQLITE_NOMEM
    b = st_pool_bucket_hash(p.store_key, p.page_id) & (ST_POOL_BUCKETS - 1)
    p.hnext = pool.table[b]
    pool.table[b] = p
    pool.resident += p.nbytes
    pool.pages += 1
    pool.policy.insert(pool, p)
    return SQLITE_OK


cdef void st_pool_page_free(PoolPage *p) noexcept nogil:
    st_page_free(p.data, p.nbytes)
    free(p)


cdef void st_pool_table_remove(Pool *pool, PoolPage *p) noexcept nogil:
    """Take p out of the table and the policy; free it now unless pinned."""
    cdef size_t b = st_pool_bucket_hash(p.store_key, p.page_id) & (ST_POOL_BUCKETS - 1)
    cdef PoolPage **link = &pool.table[b]
    while link[0] != p:
        link = &link[0].hnext
    link[0] = p.hnext
    pool.policy.remove(pool, p)
    pool.resident -= p.nbytes
    pool.pages -= 1
    if p.pins > 0:
        p.detached = 1
    else:
        st_pool_page_free(p)


cdef void st_pool_evict(Pool *pool, PoolPage *v) noexcept nogil:
    cdef HistoryEntry *e = st_pool_history_get(pool, v.store_key, v.page_id)
    pool.evictions += 1
    pool.evictions_seq += 1
    if e != NULL:
        e.evicted_at = pool.evictions_seq
        e.evicted_from = v.queue
    st_pool_table_remove(pool, v)


cdef void st_pool_evict_for(Pool *pool, sqlite3_int64 incoming) noexcept nogil:
    """Evict until incoming more bytes fit in the budget (or nothing unpinned is left)."""
    cdef PoolPage *v
    cdef sqlite3_int64 budget = st_pool_budget(pool)
    while pool.resident + incoming > budget:
        v = pool.policy.victim(pool)
        if v == NULL:
            return
        st_pool_evict(pool, v)


cdef void st_pool_evict_over_budget(Pool *pool) noexcept nogil:
    st_pool_evict_for(pool, 0)


cdef void st_pool_note_access(Pool *pool, PoolPage *p) noexcept nogil:
    """Count an access of p in its history and copy the figures policies read onto p."""
    cdef HistoryEntry *e = st_pool_history_get(pool, p.store_key, p.page_id)
    pool.tick += 1
    if e == NULL:
        p.freq = st_pool_page_count(pool, p) + 1
        p.epoch = pool.tick // pool.aging_window
        p.before_last = p.last
        p.last = pool.tick
        return
    st_pool_aged_count(pool, e)
    e.count += 1
    e.before_last = e.last
    e.last = pool.tick
    p.freq = e.count
    p.epoch = e.epoch
    p.before_last = e.before_last
    p.last = e.last


cdef int st_pool_start(Pool *pool) noexcept nogil:
    """Start the policy (make its state) before its first access since it was set or its
    pages were dropped. Out of line: it runs once per start, not per access."""
    return pool.policy.init(pool)


cdef inline int st_pool_access(Pool *pool, uint64_t key, sqlite3_int64 page_id, uint64_t epoch,
                               sqlite3_int64 next_use, st_pool_loader load,
                               st_pool_confirmer confirm, void *ctx, PoolPage **out,
                               char **err) noexcept nogil:
    """Pin a page: from the pool on a hit (confirmed first when its mark is not epoch),
    loaded (outside the lock) on a miss, then kept if the policy admits it. Unpin it with
    st_pool_unpin when done. With load NULL a miss pins nothing: out is NULL."""
    cdef PoolPage *p
    cdef unsigned char *data = NULL
    cdef sqlite3_int64 nbytes = 0
    cdef int shared = 0, rc, same = 0
    st_pool_lock(pool)
    if pool.state == NULL and st_pool_start(pool) != SQLITE_OK:
        st_pool_unlock(pool)
        return SQLITE_NOMEM
    if pool.recording:
        st_pool_record_access(pool, key, page_id)
    p = st_pool_table_find(pool, key, page_id)
    if p != NULL:
        p.pins += 1
        if p.mark != epoch and confirm != NULL:
            st_pool_unlock(pool)
            rc = confirm(ctx, p, &same, err)
            st_pool_lock(pool)
            if rc != SQLITE_OK or not same:
                p.pins -= 1
                if not p.detached:
                    st_pool_table_remove(pool, p)   # changed (or unreadable): never served again
                elif p.pins == 0:
                    st_pool_page_free(p)
                p = NULL
                if rc != SQLITE_OK:
                    st_pool_unlock(pool)
                    return rc
            else:
                p.mark = epoch
    if p != NULL:
        p.next_use = next_use
        pool.hits += 1
        st_pool_note_access(pool, p)
        if not p.detached:
            pool.policy.hit(pool, p)
        st_pool_unlock(pool)
        out[0] = p
        return SQLITE_OK
    pool.misses += 1
    if load == NULL:   # the caller reads misses itself, outside the pool (pool_peek)
        pool.bypassed += 1
        st_pool_unlock(pool)
        out[0] = NULL
        return SQLITE_OK
    st_pool_unlock(pool)

    rc = load(ctx, page_id, &data, &nbytes, &shared, err)
    if rc != SQLITE_OK:
        return rc

    st_pool_lock(pool)
    if pool.state == NULL and st_pool_start(pool) != SQLITE_OK:
        # the pages were dropped meanwhile (a policy change, a clear) and no memory is left
        st_pool_unlock(pool)
        st_page_free(data, nbytes)
        return SQLITE_NOMEM
    pool.bytes_read += nbytes
    p = st_pool_table_find(pool, key, page_id)
    if p != NULL and p.mark == epoch:
        st_page_free(data, nbytes)  # another thread read it meanwhile, in our view: use theirs
        p.pins += 1
        st_pool_note_access(pool, p)
        pool.policy.hit(pool, p)
    else:
        if p != NULL:
            st_pool_table_remove(pool, p)
        p = <PoolPage *>calloc(1, sizeof(PoolPage))
        if p == NULL:
            st_pool_unlock(pool)
            st_page_free(data, nbytes)
            return SQLITE_NOMEM
        p.store_key = key
        p.page_id = page_id
        p.mark = epoch
        p.data = data
        p.nbytes = nbytes
        p.shared = shared
        p.next_use = next_use
        p.pins = 1
        st_pool_note_access(pool, p)
        if pool.policy.admit == NULL or pool.policy.admit(pool, p):
            # Room first, then the page: a policy never sees its newest page as a candidate
            # (a clock hand would otherwise land on it).
            st_pool_evict_for(pool, p.nbytes)
            rc = st_pool_table_add(pool, p)
            if rc != SQLITE_OK:
                p.detached = 1
        else:
            p.detached = 1  # used once, then dropped
            pool.bypassed += 1
    st_pool_unlock(pool)
    out[0] = p
    return SQLITE_OK


cdef void st_pool_record_access(Pool *pool, uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    """Append an access to the trace (dropped, and recording stopped, if memory runs out)."""
    cdef sqlite3_int64 cap
    cdef void *a
    cdef void *b
    if pool.trace_len == pool.trace_cap:
        cap = pool.trace_cap * 2 if pool.trace_cap > 0 else 4096
        a = realloc(pool.trace, cap * sizeof(sqlite3_int64))
        if a != NULL:
            pool.trace = <sqlite3_int64 *>a
        b = realloc(pool.trace_keys, cap * sizeof(uint64_t))
        if b != NULL:
            pool.trace_keys = <uint64_t *>b
        if a == NULL or b == NULL:
            pool.recording = 0
            return
        pool.trace_cap = cap
    pool.trace[pool.trace_len] = page_id
    pool.trace_keys[pool.trace_len] = key
    pool.trace_len += 1


cdef void st_pool_unpin_in(Pool *pool, PoolPage *p) noexcept nogil:
    st_pool_lock(pool)
    p.pins -= 1
    if p.pins == 0:
        if p.detached:
            st_pool_page_free(p)
        else:
            st_pool_evict_over_budget(pool)
    st_pool_unlock(pool)


cdef void st_pool_drop_all(Pool *pool) noexcept nogil:
    """Every page leaves (pinned ones when unpinned); the policy's state goes with them."""
    cdef int i
    cdef PoolPage *p
    cdef PoolPage *nxt
    if pool.table != NULL:
        for i in range(ST_POOL_BUCKETS):
            p = pool.table[i]
            while p != NULL:
                nxt = p.hnext
                st_pool_table_remove(pool, p)
                p = nxt
    if pool.state != NULL:
        pool.policy.free(pool)
        pool.state = NULL
    free(pool.history)
    pool.history = NULL


cdef void st_pool_destroy(Pool *pool) noexcept nogil:
    """Free a private pool (a simulation's)."""
    st_pool_drop_all(pool)
    free(pool.table)
    pool.table = NULL
    free(pool.trace)
    free(pool.trace_keys)
    pool.trace = NULL
    pool.trace_keys = NULL


cdef int st_pool_fits(Pool *pool, PoolPage *p) noexcept nogil:
    """Whether p fits without evicting anything."""
    return pool.resident + p.nbytes <= st_pool_budget(pool)


cdef void st_pool_default_params(const Policy *policy, double *values) noexcept nogil:
    """values[i] = the default of the policy's i-th parameter."""
    cdef int i = 0
    memset(values, 0, ST_POOL_MAX_PARAMS * sizeof(double))
    if policy == NULL or policy.params == NULL:
        return
    while i < ST_POOL_MAX_PARAMS and policy.params[i].name != NULL:
        values[i] = policy.params[i].value
        i += 1


cdef int st_pool_param_index(const Policy *policy, const char *name) noexcept nogil:
    """The index of the policy's parameter called name, or -1."""
    cdef int i = 0
    if policy.params == NULL:
        return -1
    while i < ST_POOL_MAX_PARAMS and policy.params[i].name != NULL:
        if strcmp(policy.params[i].name, name) == 0:
            return i
        i += 1
    return -1


cdef int st_pool_param_count(const Policy *policy) noexcept nogil:
    cdef int i = 0
    if policy.params == NULL:
        return 0
    while i < ST_POOL_MAX_PARAMS and policy.params[i].name != NULL:
        i += 1
    return i


cdef double st_pool_param_value(Pool *pool, const char *name) noexcept nogil:
    """A parameter's value in this pool, by name (a policy's init reads its own; an unknown
    name, a bug caught by the registry guard test, reads 0)."""
    cdef int i = st_pool_param_index(pool.policy, name)
    if i < 0:
        return 0
    if pool.policy.params[i].pool_setting:
        return <double>pool.aging_window
    return pool.params[i]


cdef sqlite3_int64 st_pool_ppm(double fraction) noexcept nogil:
    """A fraction in millionths (what st_pool_share takes)."""
    return <sqlite3_int64>(fraction * 1000000.0 + 0.5)


cdef sqlite3_int64 st_pool_share(sqlite3_int64 n, sqlite3_int64 ppm, int round_up) noexcept nogil:
    """n * ppm / 10**6, rounded down (or up), exactly, without overflow for n >= 0: in
    millionths 0.1 of 1000 is 100, where a float product can land just below."""
    cdef sqlite3_int64 q = n // 1000000
    cdef sqlite3_int64 r = n % 1000000
    cdef sqlite3_int64 low = q * ppm + (r * ppm) // 1000000
    if round_up and (r * ppm) % 1000000 != 0:
        low += 1
    return low
