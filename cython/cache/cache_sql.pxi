# The buffer pool from SQL.
#
#   SELECT tensor_cache('policy', 'sieve');          -- set; returns the value now in force
#   SELECT tensor_cache('budget_bytes', 268435456);
#   SELECT tensor_cache('policy');                   -- read
#   SELECT tensor_cache('clear');                    -- drop every cached page, zero counters
#   SELECT * FROM tensor_cache_stats;                -- one row: policy, budget, counters
#   SELECT * FROM tensor_cache_pages;                -- one row per resident page
#
# The settings are the process's (every connection shares the pool), as in Python's
# sqlite_tensor.configure_cache().



cdef int cache_set_policy(const char *name, char **err) noexcept nogil:
    """Switch the process pool's policy; its pages are dropped (the old policy's state goes
    with them), its counters kept."""
    cdef const Policy *policy = policy_by_name(name)
    cdef char *names
    if policy == &policy_table[PYTHON_POLICY]:
        err[0] = sqlite3_mprintf("the python policy is plugged in from Python, with "
                                 "sqlite_tensor.cache.configure(policy=an_object)")
        return SQLITE_ERROR
    if policy == NULL or policy.simulation_only:
        names = policy_names(0)
        err[0] = sqlite3_mprintf("unknown policy '%s'; policies are %s", name, names)
        sqlite3_free(names)
        return SQLITE_ERROR
    use_policy(policy, 0)
    return SQLITE_OK


cdef void use_policy(const Policy *policy, int reset) noexcept nogil:
    """Make policy the process pool's. Its pages are dropped when the policy changes (the
    old policy's state goes with them), or always with reset; the counters stay."""
    pool_lock(&process_pool)
    if reset or process_pool.policy != policy:
        pool_drop_all(&process_pool)
        process_pool.policy = policy
    pool_unlock(&process_pool)


cdef int cache_set_budget(sqlite3_int64 budget, char **err) noexcept nogil:
    if budget < 1:
        err[0] = sqlite3_mprintf("budget_bytes must be at least 1, got %lld", budget)
        return SQLITE_ERROR
    pool_lock(&process_pool)
    process_pool.budget = budget
    evict_over_budget(&process_pool)
    pool_unlock(&process_pool)
    return SQLITE_OK


cdef void cache_drop_all() noexcept nogil:
    pool_lock(&process_pool)
    pool_drop_all(&process_pool)
    process_pool.hits = 0
    process_pool.misses = 0
    process_pool.evictions = 0
    process_pool.bypassed = 0
    process_pool.bytes_read = 0
    pool_unlock(&process_pool)


cdef char *policy_names(int with_simulation_only) noexcept nogil:
    """'a, b, c', from sqlite3_malloc: free it."""
    cdef sqlite3_str *out = sqlite3_str_new(NULL)
    cdef int i
    for i in range(NPOLICIES):
        if (policy_table[i].simulation_only and not with_simulation_only) or i == PYTHON_POLICY:
            continue
        if i > 0:
            sqlite3_str_append(out, ", ", 2)
        sqlite3_str_appendf(out, "%s", policy_table[i].name)
    return sqlite3_str_finish(out)


cdef void fn_tensor_cache(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_cache(option [, value]): read or set a setting of the process's buffer pool."""
    cdef const char *option
    cdef char *err = NULL
    cdef char *msg
    cdef int rc = SQLITE_OK
    if sqlite3_value_type(argv[0]) != SQLITE_TEXT:
        sqlite3_result_error(ctx, "tensor_cache: the option must be text: 'policy', "
                             "'budget_bytes' or 'clear'", -1)
        return
    option = <const char *>sqlite3_value_text(argv[0])
    if strcmp(option, "clear") == 0:
        cache_drop_all()
        sqlite3_result_int64(ctx, 1)
        return
    if strcmp(option, "policy") == 0:
        if argc == 2:
            if sqlite3_value_type(argv[1]) != SQLITE_TEXT:
                rc = SQLITE_ERROR
                err = sqlite3_mprintf("the policy must be a name, got %s",
                                      st_fn_value_type_name(sqlite3_value_type(argv[1])))
            else:
                rc = cache_set_policy(<const char *>sqlite3_value_text(argv[1]), &err)
        if rc == SQLITE_OK:
            sqlite3_result_text(ctx, process_pool.policy.name, -1, SQLITE_STATIC)
    elif strcmp(option, "budget_bytes") == 0:
        if argc == 2:
            if sqlite3_value_type(argv[1]) != SQLITE_INTEGER:
                rc = SQLITE_ERROR
                err = sqlite3_mprintf("budget_bytes must be an integer number of bytes")
            else:
                rc = cache_set_budget(sqlite3_value_int64(argv[1]), &err)
        if rc == SQLITE_OK:
            sqlite3_result_int64(ctx, pool_budget(&process_pool))
    else:
        rc = SQLITE_ERROR
        err = sqlite3_mprintf("unknown option '%s'; options are 'policy', 'budget_bytes', 'clear'",
                              option)
    if rc != SQLITE_OK:
        msg = sqlite3_mprintf("tensor_cache: %s", st_sql_text_or(err, "out of memory"))
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        sqlite3_free(err)


# -- tensor_cache_stats and tensor_cache_pages: snapshots taken at xFilter -----------------

cdef enum:
    CACHE_STATS = 0
    CACHE_PAGES = 1
    STAT_COLUMNS = 10             # policy + 9 numbers
    PAGE_COLUMNS = 8


ctypedef struct SnapshotCursor:
    sqlite3_vtab_cursor base      # must be first
    sqlite3_int64 *values         # rows x columns numbers (the stats row: column 0 unused)
    sqlite3_int64 rows, row
    const char *policy            # policy name (stats)


cdef int snapshot_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                          sqlite3_vtab **out, char **err) noexcept nogil:
    cdef int rc
    if <size_t>aux == CACHE_STATS:
        rc = sqlite3_declare_vtab(db, "CREATE TABLE x(policy TEXT, budget_bytes INTEGER,"
                                  " resident_bytes INTEGER, pages INTEGER, hits INTEGER,"
                                  " misses INTEGER, bypassed INTEGER, evictions INTEGER,"
                                  " bytes_read INTEGER, hit_ratio REAL)")
    else:
        rc = sqlite3_declare_vtab(db, "CREATE TABLE x(store_key INTEGER, page_id INTEGER,"
                                  " bytes INTEGER, pins INTEGER, accesses INTEGER,"
                                  " last_access INTEGER, shared INTEGER, queue INTEGER)")
    if rc != SQLITE_OK:
        return rc
    cdef ReportVtab *v = <ReportVtab *>sqlite3_malloc64(sizeof(ReportVtab))
    if v == NULL:
        return SQLITE_NOMEM
    memset(v, 0, sizeof(ReportVtab))
    v.db = db
    v.spec = <const st_report *>aux   # which snapshot (CACHE_STATS / CACHE_PAGES), not a report
    # direct use only: the pool is the process's, so a view in one file would see what
    # every other file's stores have cached
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY)
    out[0] = &v.base
    return SQLITE_OK


cdef int snapshot_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    info.estimatedCost = 10.0
    return SQLITE_OK


cdef int snapshot_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    cdef SnapshotCursor *c = <SnapshotCursor *>sqlite3_malloc64(sizeof(SnapshotCursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(SnapshotCursor))
    out[0] = &c.base
    return SQLITE_OK


cdef int snapshot_close(sqlite3_vtab_cursor *cur) noexcept nogil:
    free((<SnapshotCursor *>cur).values)
    sqlite3_free(cur)
    return SQLITE_OK


cdef int snapshot_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
                         int argc, sqlite3_value **argv) noexcept nogil:
    cdef SnapshotCursor *c = <SnapshotCursor *>cur
    cdef size_t which = <size_t>(<ReportVtab *>cur.pVtab).spec
    cdef sqlite3_int64 i = 0, j
    cdef PoolPage *p
    free(c.values)
    c.values = NULL
    c.row = 0
    pool_lock(&process_pool)
    if which == CACHE_STATS:
        c.rows = 1
        c.values = <sqlite3_int64 *>calloc(STAT_COLUMNS, sizeof(sqlite3_int64))
        if c.values != NULL:
            c.policy = process_pool.policy.name
            c.values[1] = pool_budget(&process_pool)
            c.values[2] = process_pool.resident
            c.values[3] = process_pool.pages
            c.values[4] = process_pool.hits
            c.values[5] = process_pool.misses
            c.values[6] = process_pool.bypassed
            c.values[7] = process_pool.evictions
            c.values[8] = process_pool.bytes_read
    else:
        c.rows = process_pool.pages
        c.values = <sqlite3_int64 *>calloc(max(c.rows, 1) * PAGE_COLUMNS, sizeof(sqlite3_int64))
        if c.values != NULL and process_pool.table != NULL:
            for j in range(POOL_BUCKETS):
                p = process_pool.table[j]
                while p != NULL and i < c.rows:
                    c.values[i * PAGE_COLUMNS + 0] = <sqlite3_int64>p.store_key
                    c.values[i * PAGE_COLUMNS + 1] = p.page_id
                    c.values[i * PAGE_COLUMNS + 2] = p.nbytes
                    c.values[i * PAGE_COLUMNS + 3] = p.pins
                    c.values[i * PAGE_COLUMNS + 4] = p.freq
                    c.values[i * PAGE_COLUMNS + 5] = p.last
                    c.values[i * PAGE_COLUMNS + 6] = p.shared
                    c.values[i * PAGE_COLUMNS + 7] = p.queue
                    i += 1
                    p = p.hnext
    pool_unlock(&process_pool)
    return SQLITE_OK if c.values != NULL else SQLITE_NOMEM


cdef int snapshot_next(sqlite3_vtab_cursor *cur) noexcept nogil:
    (<SnapshotCursor *>cur).row += 1
    return SQLITE_OK


cdef int snapshot_eof(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef SnapshotCursor *c = <SnapshotCursor *>cur
    return c.row >= c.rows


cdef int snapshot_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef SnapshotCursor *c = <SnapshotCursor *>cur
    cdef sqlite3_int64 *v
    if <size_t>(<ReportVtab *>cur.pVtab).spec == CACHE_STATS:
        v = c.values
        if i == 0:
            sqlite3_result_text(ctx, c.policy, -1, SQLITE_STATIC)
        elif i == STAT_COLUMNS - 1:
            if v[4] + v[5] > 0:
                sqlite3_result_double(ctx, <double>v[4] / <double>(v[4] + v[5]))
            else:
                sqlite3_result_null(ctx)
        else:
            sqlite3_result_int64(ctx, v[i])
    else:
        sqlite3_result_int64(ctx, c.values[c.row * PAGE_COLUMNS + i])
    return SQLITE_OK


cdef int snapshot_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = (<SnapshotCursor *>cur).row
    return SQLITE_OK


cdef sqlite3_module snapshot_module


cdef void init_snapshot_module() noexcept nogil:
    snapshot_module.iVersion = 1
    snapshot_module.xCreate = NULL
    snapshot_module.xConnect = snapshot_connect
    snapshot_module.xBestIndex = snapshot_best_index
    snapshot_module.xDisconnect = st_report_disconnect
    snapshot_module.xDestroy = st_report_disconnect
    snapshot_module.xOpen = snapshot_open
    snapshot_module.xClose = snapshot_close
    snapshot_module.xFilter = snapshot_filter
    snapshot_module.xNext = snapshot_next
    snapshot_module.xEof = snapshot_eof
    snapshot_module.xColumn = snapshot_column
    snapshot_module.xRowid = snapshot_rowid
