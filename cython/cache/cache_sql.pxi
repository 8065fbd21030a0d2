# The buffer pool from SQL.
#
#   SELECT tensor_cache('policy', 'sieve');          -- set; returns the value now in force
#   SELECT tensor_cache('budget_bytes', 268435456);
#   SELECT tensor_cache('policy');                   -- read
#   SELECT tensor_cache('clear');                    -- drop every cached page, zero counters
#   SELECT tensor_cache('params', 'small_fraction=0.2');  -- the policy's named parameters
#   SELECT tensor_cache('params');                   -- read: 'name=value,...'
#   SELECT * FROM tensor_cache_stats;                -- one row: policy, budget, counters
#   SELECT * FROM tensor_cache_pages;                -- one row per resident page
#
# The settings are the process's (every connection shares the pool), as in Python's
# sqlite_tensor.configure_cache().

from libc.string cimport strchr


cdef int st_pool_set_policy_by_name(const char *name, char **err) noexcept nogil:
    """Switch the process pool's policy (its defaults for parameters); its pages are dropped
    (the old policy's state goes with them), its counters kept."""
    cdef const Policy *policy = st_pool_policy_by_name(name)
    cdef char *names
    if st_pool_registry.error != NULL:
        err[0] = sqlite3_mprintf("%s", st_pool_registry.error)
        return SQLITE_ERROR
    if policy != NULL and policy == st_pool_python:
        err[0] = sqlite3_mprintf("the python policy is plugged in from Python, with "
                                 "sqlite_tensor.cache.configure(policy=an_object)")
        return SQLITE_ERROR
    if policy == NULL or policy.simulation_only:
        names = st_pool_policy_names(0)
        err[0] = sqlite3_mprintf("unknown policy '%s'; policies are %s", name, names)
        sqlite3_free(names)
        return SQLITE_ERROR
    st_pool_use_policy(policy, NULL, 0)
    return SQLITE_OK


cdef char *st_pool_params_text(const Policy *policy, const double *values,
                               sqlite3_int64 aging_window) noexcept nogil:
    """'name=value,name=value' (libCacheSim's form), from sqlite3_malloc: free it."""
    cdef sqlite3_str *out = sqlite3_str_new(NULL)
    cdef int i
    for i in range(st_pool_param_count(policy)):
        if i > 0:
            sqlite3_str_append(out, ",", 1)
        if policy.params[i].pool_setting:
            sqlite3_str_appendf(out, "%s=%lld", policy.params[i].name, aging_window)
        else:
            sqlite3_str_appendf(out, "%s=%.15g", policy.params[i].name, values[i])
    return sqlite3_str_finish(out)


cdef int st_pool_set_params_text(const char *text, char **err) noexcept nogil:
    """Set parameters of the process pool's policy from 'name=value,name=value'. All are
    checked before any is set; a change drops the pages (as a policy change does)."""
    cdef const Policy *policy
    cdef double values[ST_POOL_MAX_PARAMS]
    cdef sqlite3_int64 aging = 0
    cdef char name[64]
    cdef char msg[ST_POOL_MESSAGE_BYTES]
    cdef const char *at = text
    cdef const char *eq
    cdef char *end
    cdef double value
    cdef size_t n
    cdef int i
    st_pool_lock(&st_pool_process)
    policy = st_pool_process.policy
    memcpy(values, st_pool_process.params, sizeof(values))
    st_pool_unlock(&st_pool_process)
    while at[0] != 0:
        eq = strchr(at, 61)   # '='
        n = <size_t>(eq - at) if eq != NULL else 0
        if eq == NULL or n == 0 or n >= 64:
            err[0] = sqlite3_mprintf("parameters are 'name=value,name=value', got '%s'", text)
            return SQLITE_ERROR
        memcpy(name, at, n)
        name[n] = 0
        value = strtod(eq + 1, &end)
        if end == eq + 1 or (end[0] != 0 and end[0] != 44):   # ','
            err[0] = sqlite3_mprintf("%s's %s must be a number, got '%s'", policy.name, name,
                                     eq + 1)
            return SQLITE_ERROR
        i = st_pool_check_param(policy, name, value, msg, ST_POOL_MESSAGE_BYTES)
        if i < 0:
            err[0] = sqlite3_mprintf("%s", msg)
            return SQLITE_ERROR
        if policy.params[i].pool_setting:
            aging = <sqlite3_int64>value
        else:
            values[i] = value
        at = end + 1 if end[0] == 44 else end
    st_pool_use_policy(policy, values, 0)
    if aging > 0:
        st_pool_lock(&st_pool_process)
        st_pool_process.aging_window = aging
        st_pool_unlock(&st_pool_process)
    return SQLITE_OK


cdef int st_pool_set_budget(sqlite3_int64 budget, char **err) noexcept nogil:
    if budget < 1:
        err[0] = sqlite3_mprintf("budget_bytes must be at least 1, got %lld", budget)
        return SQLITE_ERROR
    st_pool_lock(&st_pool_process)
    st_pool_process.budget = budget
    st_pool_evict_over_budget(&st_pool_process)
    st_pool_unlock(&st_pool_process)
    return SQLITE_OK


cdef void st_pool_clear() noexcept nogil:
    st_pool_lock(&st_pool_process)
    st_pool_drop_all(&st_pool_process)
    st_pool_process.hits = 0
    st_pool_process.misses = 0
    st_pool_process.evictions = 0
    st_pool_process.bypassed = 0
    st_pool_process.bytes_read = 0
    st_pool_unlock(&st_pool_process)


cdef char *st_pool_policy_names(int with_simulation_only) noexcept nogil:
    """'a, b, c', from sqlite3_malloc: free it."""
    cdef sqlite3_str *out = sqlite3_str_new(NULL)
    cdef int i
    cdef int listed = 0
    for i in range(st_pool_registry.n):
        if (st_pool_registry.policies[i].simulation_only and not with_simulation_only) \
                or &st_pool_registry.policies[i] == st_pool_python:
            continue
        if listed > 0:
            sqlite3_str_append(out, ", ", 2)
        sqlite3_str_appendf(out, "%s", st_pool_registry.policies[i].name)
        listed += 1
    return sqlite3_str_finish(out)


cdef void fn_tensor_cache(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_cache(option [, value]): read or set a setting of the process's buffer pool."""
    cdef const char *option
    cdef char *err = NULL
    cdef char *msg
    cdef int rc = SQLITE_OK, has
    if sqlite3_value_type(argv[0]) != SQLITE_TEXT:
        sqlite3_result_error(ctx, "tensor_cache: the option must be text: 'policy', "
                             "'budget_bytes', 'clear' or 'params'", -1)
        return
    option = <const char *>sqlite3_value_text(argv[0])
    if strcmp(option, "clear") == 0:
        st_pool_clear()
        sqlite3_result_int64(ctx, 1)
        return
    if strcmp(option, "policy") == 0:
        if argc == 2:
            if sqlite3_value_type(argv[1]) != SQLITE_TEXT:
                rc = SQLITE_ERROR
                err = sqlite3_mprintf("the policy must be a name, got %s",
                                      st_fn_value_type_name(sqlite3_value_type(argv[1])))
            else:
                rc = st_pool_set_policy_by_name(<const char *>sqlite3_value_text(argv[1]), &err)
        if rc == SQLITE_OK:
            sqlite3_result_text(ctx, st_pool_process.policy.name, -1, SQLITE_STATIC)
    elif strcmp(option, "budget_bytes") == 0:
        if argc == 2:
            if sqlite3_value_type(argv[1]) != SQLITE_INTEGER:
                rc = SQLITE_ERROR
                err = sqlite3_mprintf("budget_bytes must be an integer number of bytes")
            else:
                rc = st_pool_set_budget(sqlite3_value_int64(argv[1]), &err)
        if rc == SQLITE_OK:
            sqlite3_result_int64(ctx, st_pool_budget(&st_pool_process))
    elif strcmp(option, "params") == 0:
        if argc == 2:
            if sqlite3_value_type(argv[1]) != SQLITE_TEXT:
                rc = SQLITE_ERROR
                err = sqlite3_mprintf("params must be text 'name=value,name=value', got %s",
                                      st_fn_value_type_name(sqlite3_value_type(argv[1])))
            else:
                rc = st_pool_set_params_text(<const char *>sqlite3_value_text(argv[1]), &err)
        if rc == SQLITE_OK:
            st_pool_lock(&st_pool_process)
            msg = st_pool_params_text(st_pool_process.policy, st_pool_process.params,
                                      st_pool_process.aging_window)
            has = st_pool_param_count(st_pool_process.policy) > 0
            st_pool_unlock(&st_pool_process)
            if not has:
                sqlite3_free(msg)
                sqlite3_result_text(ctx, "", 0, SQLITE_STATIC)   # a policy without any
                return
            if msg == NULL:
                sqlite3_result_error_nomem(ctx)
                return
            sqlite3_result_text(ctx, msg, -1, sqlite3_free)
    else:
        rc = SQLITE_ERROR
        err = sqlite3_mprintf("unknown option '%s'; options are 'policy', 'budget_bytes', 'clear',"
                              " 'params'", option)
    if rc != SQLITE_OK:
        msg = sqlite3_mprintf("tensor_cache: %s", st_sql_text_or(err, "out of memory"))
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        sqlite3_free(err)


# -- tensor_cache_stats and tensor_cache_pages: snapshots taken at xFilter -----------------

cdef enum:
    ST_POOL_STATS_TABLE = 0
    ST_POOL_PAGES_TABLE = 1
    ST_POOL_STAT_COLUMNS = 10             # policy + 9 numbers
    ST_POOL_PAGE_COLUMNS = 8


ctypedef struct PoolStatsCursor:
    sqlite3_vtab_cursor base      # must be first
    sqlite3_int64 *values         # rows x columns numbers (the stats row: column 0 unused)
    sqlite3_int64 rows, row
    const char *policy            # policy name (stats)


cdef int st_pool_stats_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                               sqlite3_vtab **out, char **err) noexcept nogil:
    cdef int rc
    if <size_t>aux == ST_POOL_STATS_TABLE:
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


cdef int st_pool_stats_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    info.estimatedCost = 10.0
    return SQLITE_OK


cdef int st_pool_stats_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    cdef PoolStatsCursor *c = <PoolStatsCursor *>sqlite3_malloc64(sizeof(PoolStatsCursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(PoolStatsCursor))
    out[0] = &c.base
    return SQLITE_OK


cdef int st_pool_stats_close(sqlite3_vtab_cursor *cur) noexcept nogil:
    free((<PoolStatsCursor *>cur).values)
    sqlite3_free(cur)
    return SQLITE_OK


cdef int st_pool_stats_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
                              int argc, sqlite3_value **argv) noexcept nogil:
    cdef PoolStatsCursor *c = <PoolStatsCursor *>cur
    cdef size_t which = <size_t>(<ReportVtab *>cur.pVtab).spec
    cdef sqlite3_int64 i = 0, j
    cdef PoolPage *p
    free(c.values)
    c.values = NULL
    c.row = 0
    st_pool_lock(&st_pool_process)
    if which == ST_POOL_STATS_TABLE:
        c.rows = 1
        c.values = <sqlite3_int64 *>calloc(ST_POOL_STAT_COLUMNS, sizeof(sqlite3_int64))
        if c.values != NULL:
            c.policy = st_pool_process.policy.name
            c.values[1] = st_pool_budget(&st_pool_process)
            c.values[2] = st_pool_process.resident
            c.values[3] = st_pool_process.pages
            c.values[4] = st_pool_process.hits
            c.values[5] = st_pool_process.misses
            c.values[6] = st_pool_process.bypassed
            c.values[7] = st_pool_process.evictions
            c.values[8] = st_pool_process.bytes_read
    else:
        c.rows = st_pool_process.pages
        c.values = <sqlite3_int64 *>calloc(max(c.rows, 1) * ST_POOL_PAGE_COLUMNS,
                                           sizeof(sqlite3_int64))
        if c.values != NULL and st_pool_process.table != NULL:
            for j in range(ST_POOL_BUCKETS):
                p = st_pool_process.table[j]
                while p != NULL and i < c.rows:
                    c.values[i * ST_POOL_PAGE_COLUMNS + 0] = <sqlite3_int64>p.store_key
                    c.values[i * ST_POOL_PAGE_COLUMNS + 1] = p.page_id
                    c.values[i * ST_POOL_PAGE_COLUMNS + 2] = p.nbytes
                    c.values[i * ST_POOL_PAGE_COLUMNS + 3] = p.pins
                    c.values[i * ST_POOL_PAGE_COLUMNS + 4] = p.freq
                    c.values[i * ST_POOL_PAGE_COLUMNS + 5] = p.last
                    c.values[i * ST_POOL_PAGE_COLUMNS + 6] = p.shared
                    c.values[i * ST_POOL_PAGE_COLUMNS + 7] = p.queue
                    i += 1
                    p = p.hnext
    st_pool_unlock(&st_pool_process)
    return SQLITE_OK if c.values != NULL else SQLITE_NOMEM


cdef int st_pool_stats_next(sqlite3_vtab_cursor *cur) noexcept nogil:
    (<PoolStatsCursor *>cur).row += 1
    return SQLITE_OK


cdef int st_pool_stats_eof(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef PoolStatsCursor *c = <PoolStatsCursor *>cur
    return c.row >= c.rows


cdef int st_pool_stats_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef PoolStatsCursor *c = <PoolStatsCursor *>cur
    cdef sqlite3_int64 *v
    if <size_t>(<ReportVtab *>cur.pVtab).spec == ST_POOL_STATS_TABLE:
        v = c.values
        if i == 0:
            sqlite3_result_text(ctx, c.policy, -1, SQLITE_STATIC)
        elif i == ST_POOL_STAT_COLUMNS - 1:
            if v[4] + v[5] > 0:
                sqlite3_result_double(ctx, <double>v[4] / <double>(v[4] + v[5]))
            else:
                sqlite3_result_null(ctx)
        else:
            sqlite3_result_int64(ctx, v[i])
    else:
        sqlite3_result_int64(ctx, c.values[c.row * ST_POOL_PAGE_COLUMNS + i])
    return SQLITE_OK


cdef int st_pool_stats_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = (<PoolStatsCursor *>cur).row
    return SQLITE_OK


cdef sqlite3_module st_pool_stats_module


cdef void st_pool_init_stats_module() noexcept nogil:
    st_pool_stats_module.iVersion = 1
    st_pool_stats_module.xCreate = NULL
    st_pool_stats_module.xConnect = st_pool_stats_connect
    st_pool_stats_module.xBestIndex = st_pool_stats_best_index
    st_pool_stats_module.xDisconnect = st_report_disconnect
    st_pool_stats_module.xDestroy = st_report_disconnect
    st_pool_stats_module.xOpen = st_pool_stats_open
    st_pool_stats_module.xClose = st_pool_stats_close
    st_pool_stats_module.xFilter = st_pool_stats_filter
    st_pool_stats_module.xNext = st_pool_stats_next
    st_pool_stats_module.xEof = st_pool_stats_eof
    st_pool_stats_module.xColumn = st_pool_stats_column
    st_pool_stats_module.xRowid = st_pool_stats_rowid
