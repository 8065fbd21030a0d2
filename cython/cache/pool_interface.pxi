# Interface to the buffer pool (cython/cache/): the types the pool's chapters and their
# callers share, stated once, in the manner of fts5Int.h's "Interface to code in ..."
# sections. Included by the engine's interface file (engine.pxd), which cimports what it
# needs (libc.stdint's uint64_t, sqlite3api).
#
# Interface to code in cache/, called from other chapters:
#   process_pool.pxi  st_pool_source_init, st_pool_source_close, st_pool_source_same_version
#                     (plans); st_pool_pin, st_pool_unpin, st_pool_page_slot (kernels);
#                     snapshot_hold, snapshot_release, read_tensor, result_tensor_blob (the
#                     store's readers; page-layer names, not yet prefixed)
#   registry.pxi      st_pool_init_policies (entry point)
#   cache_sql.pxi     fn_tensor_cache, st_pool_stats_module, st_pool_init_stats_module,
#                     ST_POOL_STATS_TABLE, ST_POOL_PAGES_TABLE (entry point)
#   python_api.pxi's cache_* functions (sqlite_tensor.cache) use the pool's own names.

# -- the pool (pool.pxi) ------------------------------------------------------------------------

cdef enum:
    ST_POOL_BUCKETS = 16384         # hash buckets of a pool (a power of two)
    ST_POOL_HISTORY_SLOTS = 65536   # pages remembered, resident or not (a power of two)
    ST_POOL_HISTORY_PROBES = 16
    ST_POOL_MAX_PARAMS = 8          # named parameters of one policy


ctypedef struct PoolPage:
    uint64_t store_key            # which store (file name + store uid)
    sqlite3_int64 page_id         # row of <store>_pages
    uint64_t mark                 # view epoch it was last confirmed in (0 in a simulation)
    unsigned char *data           # the page BLOB (NULL in a simulation)
    sqlite3_int64 nbytes
    int pins                      # kernels using it now; never evicted while > 0
    int detached                  # not in the table (stale, or not admitted): freed at unpin
    PoolPage *hnext               # hash chain
    # -- policy fields ------------------------------------------------------------------
    PoolPage *prev                # links of the policy's list
    PoolPage *next
    int queue                     # which of the policy's lists holds it
    int flag                      # CLOCK reference bit, SIEVE visited bit
    int shared                    # models sharing the page (when the policy asks)
    sqlite3_int64 freq            # access count as of aging window `epoch` (see page_count)
    sqlite3_int64 epoch
    sqlite3_int64 last            # logical time of the last access
    sqlite3_int64 before_last     # and of the one before (0: none), for LRU-2
    sqlite3_int64 next_use        # simulation: when it is used next (int64 max if not)


ctypedef struct PageList:
    PoolPage *head                # most recently added
    PoolPage *tail
    sqlite3_int64 count
    sqlite3_int64 bytes


ctypedef struct HistoryEntry:
    int used
    uint64_t store_key
    sqlite3_int64 page_id
    sqlite3_int64 count           # accesses, aged (see aged_count)
    sqlite3_int64 epoch           # aging window count was last updated in
    sqlite3_int64 last            # logical times of the last two accesses
    sqlite3_int64 before_last
    sqlite3_int64 evicted_at      # pool.evictions_seq when last evicted (0: never)
    int evicted_from              # the policy queue it was evicted from


cdef struct Policy
cdef struct Pool

# A named parameter of a policy, with its default and its range: a policy declares them in
# a constant C table (so they exist in the shell too, where no Python module init runs).
cdef extern from *:
    """
    typedef struct st_pool_param {
        const char *name;
        const char *doc;
        double value;        /* the default */
        double min, max;     /* allowed range, inclusive */
        int integer;         /* whole numbers only */
        int pool_setting;    /* 1: the pool's aging window (kept across policy changes) */
    } st_pool_param;
    """
    ctypedef struct st_pool_param:
        const char *name
        const char *doc
        double value
        double min
        double max
        int integer
        int pool_setting


cdef struct Policy:
    # Filled by the policy's own describe function (policy_<name>.pxi), named in registry.pxi.
    const char *name
    const char *summary
    # init: make pool.state from pool.params (SQLITE_OK or SQLITE_NOMEM); free: undo it.
    # The pool starts the policy at its first access and frees it when its pages are dropped.
    int (*init)(Pool *) noexcept nogil
    void (*free)(Pool *) noexcept nogil
    void (*insert)(Pool *, PoolPage *) noexcept nogil
    void (*hit)(Pool *, PoolPage *) noexcept nogil
    void (*remove)(Pool *, PoolPage *) noexcept nogil
    PoolPage *(*victim)(Pool *) noexcept nogil
    int (*admit)(Pool *, PoolPage *) noexcept nogil
    const st_pool_param *params   # terminated by a NULL name (NULL: none)
    int needs_sharing             # the loader must say how many models share each page
    int simulation_only           # needs the future (opt): only simulate() may use it


cdef struct Pool:
    const Policy *policy
    int locked                    # 1: the process pool (st_pool_mutex); 0: a simulation
    PoolPage **table              # ST_POOL_BUCKETS chains, allocated on first use
    sqlite3_int64 budget          # bytes; 0 = ST_POOL_DEFAULT_BUDGET
    sqlite3_int64 resident        # bytes of pages in the table
    sqlite3_int64 pages           # pages in the table
    sqlite3_int64 hits
    sqlite3_int64 misses
    sqlite3_int64 evictions
    sqlite3_int64 bypassed        # misses the policy did not admit
    sqlite3_int64 bytes_read      # bytes loaded on misses
    # -- policy state -----------------------------------------------------------------------
    void *state                   # the policy's own (its init makes it); NULL: not started
    double params[ST_POOL_MAX_PARAMS]   # the policy's parameters, in its table's order
    sqlite3_int64 tick            # logical time: one per access
    HistoryEntry *history         # ST_POOL_HISTORY_SLOTS entries, allocated on first use
    sqlite3_int64 aging_window    # accesses per halving of counts
    sqlite3_int64 evictions_seq   # evictions ever (ghost ages are measured in it)
    # -- recording (process pool) -----------------------------------------------------------
    int recording                 # append every access to trace
    sqlite3_int64 *trace          # page ids, in access order
    uint64_t *trace_keys          # their store keys
    sqlite3_int64 trace_len, trace_cap


ctypedef int (*st_pool_loader)(void *ctx, sqlite3_int64 page_id, unsigned char **data,
                               sqlite3_int64 *nbytes, int *shared, char **err) noexcept nogil
# Sets *same to whether the pinned cached page is still the committed one (read outside
# the lock); an SQLite result code.
ctypedef int (*st_pool_confirmer)(void *ctx, PoolPage *page, int *same, char **err) noexcept nogil


# -- page sources and views (process_pool.pxi) -------------------------------------------------

ctypedef struct PageSource:
    sqlite3 *db                   # connection to read misses through
    const char *schema
    char *table                   # "<store>_pages", from sqlite3_mprintf
    sqlite3_blob *blob            # reused across misses, or NULL
    uint64_t store_key
    uint64_t epoch                # the connection's view when st_pool_source_init / _view ran
    int min_version               # oldest page version the store may hold (2 once upgraded)
    int uncached                  # the store has no uid: never cache its pages
    sqlite3_stmt *sharing         # counts the models sharing a page (prepared when needed)
    const char *store             # the store's name (owned by the caller)
    sqlite3_stmt *snapshot        # holds one read snapshot while src is open (snapshot_hold)


# A page a bulk reader (read_tensor) uses: pinned in the pool when it is cached there, else
# read and checked into the reader's own scratch buffer, never admitted (a tensor export
# does not flush the pages inference serves, nor churns page memory).
ctypedef struct PageView:
    PoolPage *pinned
    unsigned char *scratch        # malloc'd, reused from page to page
    sqlite3_int64 cap
    const unsigned char *data
    sqlite3_int64 nbytes
    sqlite3_int64 page_id         # -1: none
