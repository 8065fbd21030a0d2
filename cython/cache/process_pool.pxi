# The process pool as the engine uses it: pages of a store, read through its connection.
#
#   source_init(src, db, schema, store)   identify the store (key, generation)
#   pool_pin(src, page_id, &page, &err)   the page, pinned: from the pool or read now
#   pool_unpin(page)
#   page_slot(page, slot, nbytes, ...)    a block's bytes within a pinned page
# The pool itself is cache/pool.pxi; its policies are the cache/policy_*.pxi files.

ctypedef struct PageSource:
    sqlite3 *db                   # connection to read misses through
    const char *schema
    char *table                   # "<store>_pages", from sqlite3_mprintf
    sqlite3_blob *blob            # reused across misses, or NULL
    uint64_t store_key
    sqlite3_int64 generation
    int uncached                  # the store has no uid/generation: never cache its pages
    sqlite3_stmt *sharing         # counts the models sharing a page (prepared when needed)
    const char *store             # the store's name (owned by the plan)


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
    src.store = store
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
    sqlite3_finalize(src.sharing)
    src.sharing = NULL
    sqlite3_free(src.table)
    src.blob = NULL
    src.table = NULL


cdef int read_page(PageSource *src, sqlite3_int64 page_id, unsigned char **data,
                   sqlite3_int64 *nbytes, char **err) noexcept nogil:
    """Read a whole page BLOB into new page memory (st_page_alloc; freed with st_page_free
    and its size) and check its header."""
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
    cdef unsigned char *buf = <unsigned char *>st_page_alloc(n)
    if buf == NULL:
        return SQLITE_NOMEM
    rc = sqlite3_blob_read(src.blob, buf, n, 0)
    if rc != SQLITE_OK:
        st_page_free(buf, n)
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
        return rc
    rc = check_page_header(buf, n, page_id, src.table, err)
    if rc != SQLITE_OK:
        st_page_free(buf, n)
        return rc
    data[0] = buf
    nbytes[0] = n
    return SQLITE_OK


cdef int source_load(void *ctx, sqlite3_int64 page_id, unsigned char **data,
                     sqlite3_int64 *nbytes, int *shared, char **err) noexcept nogil:
    """The process pool's loader: the page BLOB, and (for policies that ask) how many
    models share the page."""
    cdef PageSource *src = <PageSource *>ctx
    cdef int rc = read_page(src, page_id, data, nbytes, err)
    if rc != SQLITE_OK or not process_pool.policy.needs_sharing:
        return rc
    if src.sharing == NULL:
        rc = prepare_store_sql(
            src.db, "SELECT count(DISTINCT t.model_id) FROM {blocks} b JOIN {map} m"
                    " ON m.block_id = b.id JOIN {tensors} t ON t.id = m.tensor_id"
                    " WHERE b.page_id = ?1", src.schema, src.store, &src.sharing)
        if rc != SQLITE_OK:
            shared[0] = 1  # a hint only: the page is still usable
            return SQLITE_OK
    sqlite3_bind_int64(src.sharing, 1, page_id)
    shared[0] = <int>sqlite3_column_int64(src.sharing, 0) if sqlite3_step(src.sharing) == SQLITE_ROW else 1
    sqlite3_reset(src.sharing)
    return SQLITE_OK


cdef int pool_pin(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                  char **err) noexcept nogil:
    """Pin a page of src's store in the process pool (reading it on a miss)."""
    if src.uncached:
        return pin_uncached(src, page_id, out, err)
    return pool_access(&process_pool, src.store_key, page_id, src.generation, 0, source_load,
                       src, out, err)


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
    pool_lock(&process_pool)
    process_pool.misses += 1
    process_pool.bytes_read += p.nbytes
    pool_unlock(&process_pool)
    out[0] = p
    return SQLITE_OK


cdef void pool_unpin(PoolPage *p) noexcept nogil:
    pool_unpin_in(&process_pool, p)


cdef int page_slot(const PoolPage *p, int slot, sqlite3_int64 nbytes, const char *table,
                   const unsigned char **out, char **err) noexcept nogil:
    """Point out at slot's bytes within a pinned page; they must be exactly nbytes long."""
    cdef sqlite3_int64 nslots = st_get_u32(p.data + 8)
    cdef uint64_t offset
    cdef const unsigned char *entry = NULL
    if 0 <= slot < nslots:   # read_page checked that the slot table fits in the page
        entry = p.data + PAGE_HEADER_BYTES + slot * PAGE_SLOT_BYTES
    cdef int rc = check_slot(entry, slot, nslots, nbytes, p.nbytes, p.page_id, table, &offset, err)
    if rc == SQLITE_OK:
        out[0] = p.data + offset
    return rc
