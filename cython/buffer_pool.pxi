# The buffer pool: one per process, shared by every connection and thread.
#
# A cached page is the whole page BLOB in memory, keyed by (store key, page id) and tagged
# with the store generation it was read at. The store key mixes the database file name with
# the store's random uid (<store>_config 'uid'); the generation is a random number every
# write transaction of the store sets ('generation'), so a page is served from memory only
# while the store is unchanged since it was read - in this process or any other.
#
# Pages in use by a kernel are pinned (pool_pin / pool_unpin) and never evicted; resident
# bytes stay within the budget plus the pinned pages. A budget smaller than one page still
# works: the page is read, used, and dropped at unpin. Which unpinned page goes first is the
# replacement policy's choice; the policy interface is the pol_* functions below.
#
# Locking: one mutex guards the table, the policy and the counters; page reads from the
# database happen outside it.

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)

cdef extern from *:
    """
    #include <pthread.h>
    static pthread_mutex_t st_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
    #define ST_POOL_DEFAULT_BUDGET (512LL * 1024 * 1024)
    #define ST_POOL_BUCKETS 16384   /* a power of two */
    """
    pthread_mutex_t st_pool_mutex
    long long ST_POOL_DEFAULT_BUDGET
    enum:
        ST_POOL_BUCKETS


ctypedef struct PoolPage:
    uint64_t store_key            # which store (file name + store uid)
    sqlite3_int64 page_id         # row of <store>_pages
    sqlite3_int64 generation      # store generation the bytes were read at
    unsigned char *data           # the page BLOB
    sqlite3_int64 nbytes
    int pins                      # kernels using it now; never evicted while > 0
    int detached                  # out of the table (stale): freed at the last unpin
    PoolPage *hnext               # hash chain
    PoolPage *prev                # policy list (LRU: most recently used at the head)
    PoolPage *next


ctypedef struct PoolCounters:
    sqlite3_int64 budget          # bytes; 0 = ST_POOL_DEFAULT_BUDGET
    sqlite3_int64 resident        # bytes of pages in the table
    sqlite3_int64 pages           # pages in the table
    sqlite3_int64 hits
    sqlite3_int64 misses
    sqlite3_int64 evictions
    sqlite3_int64 bytes_read      # bytes read from databases on misses


ctypedef struct PageSource:
    sqlite3 *db                   # connection to read misses through
    const char *schema
    char *table                   # "<store>_pages", from sqlite3_mprintf
    sqlite3_blob *blob            # reused across misses, or NULL
    uint64_t store_key
    sqlite3_int64 generation
    int uncached                  # the store has no uid/generation: never cache its pages


cdef PoolPage *pool_table[ST_POOL_BUCKETS]
cdef PoolCounters pool
cdef PoolPage *lru_head
cdef PoolPage *lru_tail


# -- policy: LRU -------------------------------------------------------------------------

cdef void pol_unlink(PoolPage *p) noexcept nogil:
    global lru_head, lru_tail
    if p.prev != NULL:
        p.prev.next = p.next
    else:
        lru_head = p.next
    if p.next != NULL:
        p.next.prev = p.prev
    else:
        lru_tail = p.prev
    p.prev = NULL
    p.next = NULL


cdef void pol_insert(PoolPage *p) noexcept nogil:
    global lru_head, lru_tail
    p.prev = NULL
    p.next = lru_head
    if lru_head != NULL:
        lru_head.prev = p
    lru_head = p
    if lru_tail == NULL:
        lru_tail = p


cdef void pol_hit(PoolPage *p) noexcept nogil:
    pol_unlink(p)
    pol_insert(p)


cdef PoolPage *pol_victim() noexcept nogil:
    """The least recently used unpinned page, or NULL."""
    cdef PoolPage *p = lru_tail
    while p != NULL and p.pins > 0:
        p = p.prev
    return p


# -- the table ---------------------------------------------------------------------------

cdef inline size_t bucket_of(uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    cdef uint64_t h = (key ^ (<uint64_t>page_id * 0x9E3779B97F4A7C15ULL))
    h ^= h >> 29
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 32
    return <size_t>(h & (ST_POOL_BUCKETS - 1))


cdef PoolPage *table_find(uint64_t key, sqlite3_int64 page_id) noexcept nogil:
    cdef PoolPage *p = pool_table[bucket_of(key, page_id)]
    while p != NULL and not (p.store_key == key and p.page_id == page_id):
        p = p.hnext
    return p


cdef void table_remove(PoolPage *p) noexcept nogil:
    """Take p out of the table and the policy; free it now unless pinned."""
    cdef PoolPage **link = &pool_table[bucket_of(p.store_key, p.page_id)]
    while link[0] != p:
        link = &link[0].hnext
    link[0] = p.hnext
    pol_unlink(p)
    pool.resident -= p.nbytes
    pool.pages -= 1
    if p.pins > 0:
        p.detached = 1
    else:
        free(p.data)
        free(p)


cdef sqlite3_int64 pool_budget() noexcept nogil:
    return pool.budget if pool.budget > 0 else ST_POOL_DEFAULT_BUDGET


cdef void evict_over_budget() noexcept nogil:
    cdef PoolPage *v
    cdef sqlite3_int64 budget = pool_budget()
    while pool.resident > budget:
        v = pol_victim()
        if v == NULL:
            return
        table_remove(v)
        pool.evictions += 1


# -- reading pages -----------------------------------------------------------------------

cdef int source_init(PageSource *src, sqlite3 *db, const char *schema, const char *store,
                     char **err) noexcept nogil:
    """Identify the store for the pool: its key and current generation."""
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 uid = 0
    cdef int found = 0
    cdef const char *fname
    cdef uint64_t h = 1469598103934665603ULL   # FNV-1a of the file name
    memset(src, 0, sizeof(PageSource))
    src.db = db
    src.schema = schema
    src.table = sqlite3_mprintf("%s_pages", store)
    if src.table == NULL:
        return SQLITE_NOMEM
    cdef int rc = prepare_store_sql(
        db, "SELECT key, value FROM {config} WHERE key IN ('uid', 'generation')", schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("no tensor store named '%s' (%s)", store, sqlite3_errmsg(db))
        return SQLITE_ERROR
    while sqlite3_step(stmt) == SQLITE_ROW:
        if strcmp(<const char *>sqlite3_column_text(stmt, 0), "uid") == 0:
            uid = sqlite3_column_int64(stmt, 1)
        else:
            src.generation = sqlite3_column_int64(stmt, 1)
        found += 1
    sqlite3_finalize(stmt)
    # A store written before uid/generation existed cannot tell when it changed: reading its
    # pages through the cache could serve stale ones, so they are read for each use.
    src.uncached = found != 2
    fname = sqlite3_db_filename(db, schema)
    if fname == NULL or fname[0] == 0:
        # A memory or temporary database: private to this connection.
        h ^= <uint64_t><size_t>db
    else:
        while fname[0] != 0:
            h = (h ^ <unsigned char>fname[0]) * 1099511628211ULL
            fname += 1
    src.store_key = h ^ (<uint64_t>uid * 0x9E3779B97F4A7C15ULL)
    return SQLITE_OK


cdef void source_close(PageSource *src) noexcept nogil:
    if src.blob != NULL:
        sqlite3_blob_close(src.blob)
    sqlite3_free(src.table)
    src.blob = NULL
    src.table = NULL


cdef int check_page_header(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                           const char *table, char **err) noexcept nogil:
    """A page must start with the version-1 header and its slot table must fit."""
    if n < PAGE_HEADER_BYTES or st_get_u32(data) != PAGE_MAGIC or st_get_u32(data + 4) != PAGE_VERSION:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: not a version-%d page",
                                 page_id, table, <int>PAGE_VERSION)
        return SQLITE_CORRUPT
    cdef sqlite3_int64 nslots = st_get_u32(data + 8)
    if PAGE_HEADER_BYTES + nslots * PAGE_SLOT_BYTES > n:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: %lld slots do not fit in %lld bytes",
                                 page_id, table, nslots, n)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int read_page(PageSource *src, sqlite3_int64 page_id, unsigned char **data,
                   sqlite3_int64 *nbytes, char **err) noexcept nogil:
    """Read a whole page BLOB into a new malloc'd buffer and check its header."""
    cdef int rc
    if src.blob == NULL:
        rc = sqlite3_blob_open(src.db, src.schema, src.table, "data", page_id, 0, &src.blob)
    else:
        rc = sqlite3_blob_reopen(src.blob, page_id)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
        if src.blob != NULL:
            sqlite3_blob_close(src.blob)
            src.blob = NULL
        return rc
    cdef int n = sqlite3_blob_bytes(src.blob)
    cdef unsigned char *buf = <unsigned char *>malloc(n if n > 0 else 1)
    if buf == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_blob_read(src.blob, buf, n, 0)
    if rc != SQLITE_OK:
        free(buf)
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
        return rc
    rc = check_page_header(buf, n, page_id, src.table, err)
    if rc != SQLITE_OK:
        free(buf)
        return rc
    data[0] = buf
    nbytes[0] = n
    return SQLITE_OK


cdef int pool_pin(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                  char **err) noexcept nogil:
    """Pin a page of src's store in memory (reading it on a miss); unpin when done."""
    cdef PoolPage *p
    cdef unsigned char *data = NULL
    cdef sqlite3_int64 nbytes = 0
    cdef int rc
    if src.uncached:
        return pin_uncached(src, page_id, out, err)
    pthread_mutex_lock(&st_pool_mutex)
    p = table_find(src.store_key, page_id)
    if p != NULL and p.generation != src.generation:
        table_remove(p)  # stale: the store changed since it was read
        p = NULL
    if p != NULL:
        p.pins += 1
        pool.hits += 1
        pol_hit(p)
        pthread_mutex_unlock(&st_pool_mutex)
        out[0] = p
        return SQLITE_OK
    pool.misses += 1
    pthread_mutex_unlock(&st_pool_mutex)

    rc = read_page(src, page_id, &data, &nbytes, err)
    if rc != SQLITE_OK:
        return rc

    pthread_mutex_lock(&st_pool_mutex)
    pool.bytes_read += nbytes
    p = table_find(src.store_key, page_id)
    if p != NULL and p.generation == src.generation:
        free(data)  # another thread read it meanwhile: use theirs
    else:
        if p != NULL:
            table_remove(p)
        p = <PoolPage *>calloc(1, sizeof(PoolPage))
        if p == NULL:
            pthread_mutex_unlock(&st_pool_mutex)
            free(data)
            return SQLITE_NOMEM
        p.store_key = src.store_key
        p.page_id = page_id
        p.generation = src.generation
        p.data = data
        p.nbytes = nbytes
        p.hnext = pool_table[bucket_of(p.store_key, page_id)]
        pool_table[bucket_of(p.store_key, page_id)] = p
        pool.resident += nbytes
        pool.pages += 1
        pol_insert(p)
    p.pins += 1
    evict_over_budget()
    pthread_mutex_unlock(&st_pool_mutex)
    out[0] = p
    return SQLITE_OK


cdef int pin_uncached(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                      char **err) noexcept nogil:
    """A page outside the table: read now, freed at unpin."""
    cdef PoolPage *p = <PoolPage *>calloc(1, sizeof(PoolPage))
    if p == NULL:
        return SQLITE_NOMEM
    cdef int rc = read_page(src, page_id, &p.data, &p.nbytes, err)
    if rc != SQLITE_OK:
        free(p)
        return rc
    p.page_id = page_id
    p.pins = 1
    p.detached = 1
    pthread_mutex_lock(&st_pool_mutex)
    pool.misses += 1
    pool.bytes_read += p.nbytes
    pthread_mutex_unlock(&st_pool_mutex)
    out[0] = p
    return SQLITE_OK


cdef void pool_unpin(PoolPage *p) noexcept nogil:
    pthread_mutex_lock(&st_pool_mutex)
    p.pins -= 1
    if p.pins == 0:
        if p.detached:
            free(p.data)
            free(p)
        else:
            evict_over_budget()
    pthread_mutex_unlock(&st_pool_mutex)


cdef void pool_set_budget(sqlite3_int64 budget) noexcept nogil:
    pthread_mutex_lock(&st_pool_mutex)
    pool.budget = budget
    evict_over_budget()
    pthread_mutex_unlock(&st_pool_mutex)


cdef void pool_clear() noexcept nogil:
    """Drop every unpinned page (pinned ones go when unpinned) and zero the counters."""
    cdef size_t i
    cdef PoolPage *p
    cdef PoolPage *nxt
    pthread_mutex_lock(&st_pool_mutex)
    for i in range(ST_POOL_BUCKETS):
        p = pool_table[i]
        while p != NULL:
            nxt = p.hnext
            table_remove(p)
            p = nxt
    cdef sqlite3_int64 budget = pool.budget
    memset(&pool, 0, sizeof(PoolCounters))
    pool.budget = budget
    pthread_mutex_unlock(&st_pool_mutex)


cdef PoolCounters pool_counters() noexcept nogil:
    cdef PoolCounters c
    pthread_mutex_lock(&st_pool_mutex)
    c = pool
    c.budget = pool_budget()
    pthread_mutex_unlock(&st_pool_mutex)
    return c


cdef int page_slot(const PoolPage *p, int slot, sqlite3_int64 nbytes, const char *table,
                   const unsigned char **out, char **err) noexcept nogil:
    """Point out at slot's bytes within a pinned page; they must be exactly nbytes long."""
    cdef unsigned int nslots = st_get_u32(p.data + 8)
    cdef uint64_t offset, size
    if slot < 0 or <unsigned int>slot >= nslots:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %d of %u", p.page_id, table,
                                 slot, nslots)
        return SQLITE_CORRUPT
    offset = st_get_u64(p.data + PAGE_HEADER_BYTES + slot * PAGE_SLOT_BYTES)
    size = st_get_u64(p.data + PAGE_HEADER_BYTES + slot * PAGE_SLOT_BYTES + 8)
    if size != <uint64_t>nbytes or offset > <uint64_t>p.nbytes or size > <uint64_t>p.nbytes - offset:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %d holds %llu bytes at %llu, "
                                 "expected %lld bytes within %lld", p.page_id, table, slot, size,
                                 offset, nbytes, p.nbytes)
        return SQLITE_CORRUPT
    out[0] = p.data + offset
    return SQLITE_OK
