# The one page-access layer: pages of a store, read through its connection, checked, and
# cached in the process pool. Both readers use it: inference (kernels pin tiles' pages)
# and read_tensor (tensor_blob, the data column, Store.get_tensor).
#
#   st_pool_source_init(src, db, schema, store)   identify the store (key) and the
#                                                 connection's view
#   st_pool_pin(src, page_id, &page, &err)        the page, pinned: from the pool or read now
#   st_pool_unpin(page)
#   st_pool_page_slot(page, slot, nbytes, ...)    a block's bytes within a pinned page
#   st_pool_source_same_version(src, key, epoch)  whether what was read at (key, epoch) is
#                                                 still what this connection sees (plan
#                                                 caches use it)
# The pool itself is cache/pool.pxi; its policies are the cache/policy_*.pxi files.
#
# Checks: a page is checked in full (header, slot table, checksum of every byte) when it is
# read from the database, i.e. when it enters the pool and for every uncached read; slots
# and sizes are checked at each use (st_pool_page_slot).
#
# Freshness: the pool must never serve a page that differs from what the reading
# connection sees committed, whoever wrote it (this process, another one, plain SQL, a
# restore through the backup API). Each connection has a *view*: a process-unique epoch
# that changes whenever the connection's data version (SQLITE_FCNTL_DATA_VERSION: commits
# by any connection or process) or its own change count (sqlite3_total_changes: its own
# writes, committed or not) moves. A cached page carries the epoch it was last confirmed
# in; while the view is unchanged the page is served as is (no I/O). Used in another view
# (after any commit, or by another connection), it is re-confirmed once: its committed
# header (magic, version, slots, checksum: 24 bytes) and size are read and compared with
# the cached copy; the checksum covers every byte, so equal means the same page, and a
# difference reloads it. Inside a write transaction the view is new on every call: a
# rollback undoes changes without moving either counter.

from libc.string cimport memcmp


# PageSource and PageView are stated in pool_interface.pxi.


# -- views: one per (connection, schema), forgotten when the connection closes ---------------

ctypedef struct PoolConnView:
    sqlite3 *db
    char schema[32]
    unsigned int data_version
    int changes
    uint64_t epoch

# The views' own lock (never the pool's: see c/st_fork.h), defined in c/st_fork.c, whose
# fork handlers cover it.
cdef extern from "st_fork.h":
    pthread_mutex_t st_views_mutex

cdef PoolConnView *st_pool_views           # guarded by st_views_mutex
cdef int st_pool_nviews, st_pool_views_cap
cdef uint64_t st_pool_epoch_counter    # last epoch handed out (0 is never a view's)
cdef int st_page_checks_off       # hidden switch for measurements (_set_page_checks)


cdef void st_pool_view_forget(void *db) noexcept nogil:
    """The connection is closing (xDestroy of its marker function): drop its views, so a
    new connection at the same address never inherits them."""
    global st_pool_nviews
    cdef int i = 0
    pthread_mutex_lock(&st_views_mutex)
    while i < st_pool_nviews:
        if <void *>st_pool_views[i].db == db:
            st_pool_nviews -= 1
            st_pool_views[i] = st_pool_views[st_pool_nviews]
        else:
            i += 1
    pthread_mutex_unlock(&st_views_mutex)


cdef void st_pool_view_marker(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    sqlite3_result_null(ctx)


cdef int st_pool_view_known(sqlite3 *db) noexcept nogil:
    cdef int i, found = 0
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_pool_nviews):
        if st_pool_views[i].db == db:
            found = 1
            break
    pthread_mutex_unlock(&st_views_mutex)
    return found


cdef int st_pool_in_write_transaction(sqlite3 *db, const char *schema) noexcept nogil:
    """Whether db may hold uncommitted changes (a rollback would move no counter back).
    Hosts older than sqlite3_txn_state: any open transaction counts."""
    if sqlite3_libversion_number() >= 3034000:
        return sqlite3_txn_state(db, schema) == 2   # SQLITE_TXN_WRITE
    return sqlite3_get_autocommit(db) == 0


cdef uint64_t st_pool_connection_view(sqlite3 *db, const char *schema) noexcept nogil:
    """The connection's current view epoch (see the top of this file). A connection whose
    view cannot be tracked gets a new epoch on every call: nothing is trusted, every cached
    page is re-confirmed."""
    global st_pool_epoch_counter, st_pool_nviews, st_pool_views, st_pool_views_cap
    cdef unsigned int dv = 0
    cdef int changes = sqlite3_total_changes(db)
    cdef int i, tracked = 1
    cdef uint64_t epoch
    cdef PoolConnView *v = NULL
    cdef void *grown
    if sqlite3_file_control(db, schema, SQLITE_FCNTL_DATA_VERSION, &dv) != SQLITE_OK \
            or strlen(schema) >= 32 or st_pool_in_write_transaction(db, schema):
        tracked = 0
    elif not st_pool_view_known(db):
        # A marker function whose destructor runs when the connection closes. A new name
        # (never a replacement), so it is allowed while statements run.
        tracked = sqlite3_create_function_v2(db, "_tensor_pool_view", 0,
                                             SQLITE_UTF8 | SQLITE_DIRECTONLY, <void *>db,
                                             st_pool_view_marker, NULL, NULL,
                                             st_pool_view_forget) == SQLITE_OK
    pthread_mutex_lock(&st_views_mutex)
    st_pool_epoch_counter += 1
    epoch = st_pool_epoch_counter
    if tracked:
        for i in range(st_pool_nviews):
            if st_pool_views[i].db == db and strcmp(st_pool_views[i].schema, schema) == 0:
                v = &st_pool_views[i]
                break
        if v == NULL and st_pool_nviews == st_pool_views_cap:
            grown = realloc(st_pool_views, (st_pool_views_cap * 2 + 8) * sizeof(PoolConnView))
            if grown != NULL:
                st_pool_views = <PoolConnView *>grown
                st_pool_views_cap = st_pool_views_cap * 2 + 8
        if v == NULL and st_pool_nviews < st_pool_views_cap:
            v = &st_pool_views[st_pool_nviews]
            st_pool_nviews += 1
            memset(v, 0, sizeof(PoolConnView))
            v.db = db
            memcpy(v.schema, schema, strlen(schema) + 1)
            v.epoch = 0   # forces a new epoch below
        if v != NULL:
            if v.epoch != 0 and v.data_version == dv and v.changes == changes:
                st_pool_epoch_counter -= 1   # unchanged: keep its epoch
                epoch = v.epoch
            else:
                v.data_version = dv
                v.changes = changes
                v.epoch = epoch
    pthread_mutex_unlock(&st_views_mutex)
    return epoch


# -- the snapshot statement, kept per connection ---------------------------------------------
# snapshot_hold runs on every Store.predict and get_tensor; preparing its statement each
# time was a third of a small model's call. So each (connection, schema) keeps one,
# prepared once and reset (not finalized) between uses: a reset statement holds no
# snapshot and no lock, and SQLite re-prepares it itself after a schema change.
# But while any statement is unfinalized sqlite3_close() refuses to close (SQLITE_BUSY:
# apsw's Connection.close raises), and function destructors run only after that check.
# sqlite3_close (and _v2) disconnects eponymous virtual tables *before* it, so that tables
# keeping statements (as FTS5's do) can finalize them: a connection keeps statements only
# once it has an instance of the eponymous table _tensor_kept_statements, whose
# xDisconnect finalizes them. Where that table cannot be made (an authorizer refuses it, a
# table of that name hides it), the statement is prepared per use, as before.
# The same keeps the statements Store.get_tensor's read runs (st_kept_prepare: the store's
# config, its tensor's block map, its residuals): four prepares a call before. A kept
# statement holds only its compiled program, never rows nor a snapshot (reset after each
# use), so each use reads what the transaction it runs in sees, as a new one would.
# Their parameters are written +?1: SQLite (3.54 here) re-prepares a join whose WHERE
# compares a column with a bare parameter at every new binding (the constant propagation
# reads the bound value), which undid the keeping; +?1 is the same value, the same plan.

ctypedef struct KeptStatement:
    sqlite3 *db
    char *sql                     # its text, the key (sqlite3_malloc'd)
    sqlite3_stmt *stmt
    int in_use                    # taken: one user at a time

ctypedef struct KeptVtab:
    sqlite3_vtab base             # must be first
    sqlite3 *db

cdef KeptStatement *st_kept              # guarded by st_views_mutex, as are the two below
cdef int st_nkept, st_kept_cap
cdef sqlite3 **st_kept_conns             # connections with a _tensor_kept_statements instance
cdef int st_nkept_conns, st_kept_conns_cap
cdef sqlite3_module st_kept_module


cdef int st_kept_grow(void **array, int *cap, size_t item) noexcept nogil:
    """Room for more items in a realloc'd array (0: out of memory, the array as it was)."""
    cdef void *grown = realloc(array[0], (cap[0] * 2 + 8) * item)
    if grown == NULL:
        return 0
    array[0] = grown
    cap[0] = cap[0] * 2 + 8
    return 1


cdef int st_kept_conn_index(sqlite3 *db) noexcept nogil:
    """db's place in st_kept_conns, or -1 (st_views_mutex held)."""
    cdef int i
    for i in range(st_nkept_conns):
        if st_kept_conns[i] == db:
            return i
    return -1


cdef int st_kept_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                         sqlite3_vtab **out, char **err) noexcept nogil:
    """The connection's instance: from now on it may keep statements (until xDisconnect)."""
    global st_nkept_conns
    cdef int rc = sqlite3_declare_vtab(db, "CREATE TABLE x(schema TEXT)")
    if rc != SQLITE_OK:
        return rc
    cdef KeptVtab *v = <KeptVtab *>sqlite3_malloc64(sizeof(KeptVtab))
    if v == NULL:
        return SQLITE_NOMEM
    memset(v, 0, sizeof(KeptVtab))
    v.db = db
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY)
    pthread_mutex_lock(&st_views_mutex)
    if st_kept_conn_index(db) < 0 and (st_nkept_conns < st_kept_conns_cap or st_kept_grow(
            <void **>&st_kept_conns, &st_kept_conns_cap, sizeof(sqlite3 *))):
        st_kept_conns[st_nkept_conns] = db
        st_nkept_conns += 1
    pthread_mutex_unlock(&st_views_mutex)
    out[0] = &v.base
    return SQLITE_OK


cdef int st_kept_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    """The connection is closing (or our module is replaced): finalize its kept statements.
    One in use is only forgotten; its user finalizes it (snapshot_release)."""
    global st_nkept_conns, st_nkept
    cdef sqlite3 *db = (<KeptVtab *>vtab).db
    cdef sqlite3_stmt **done = NULL
    cdef int i, ndone = 0
    pthread_mutex_lock(&st_views_mutex)
    i = st_kept_conn_index(db)
    if i >= 0:
        st_nkept_conns -= 1
        st_kept_conns[i] = st_kept_conns[st_nkept_conns]
    done = <sqlite3_stmt **>malloc(max(st_nkept, 1) * sizeof(sqlite3_stmt *))
    i = 0
    while i < st_nkept:
        if st_kept[i].db == db:
            if not st_kept[i].in_use and done != NULL:
                done[ndone] = st_kept[i].stmt
                ndone += 1
            elif not st_kept[i].in_use:
                sqlite3_finalize(st_kept[i].stmt)   # no memory for the list: under the lock
            sqlite3_free(st_kept[i].sql)
            st_nkept -= 1
            st_kept[i] = st_kept[st_nkept]
        else:
            i += 1
    pthread_mutex_unlock(&st_views_mutex)
    for i in range(ndone):   # outside the lock: finalize takes the connection's mutex
        sqlite3_finalize(done[i])
    free(done)
    sqlite3_free(vtab)
    return SQLITE_OK


cdef int st_kept_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    info.estimatedCost = 1.0
    return SQLITE_OK


cdef int st_kept_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    """An empty table: it exists for its lifetime, not its rows."""
    cdef sqlite3_vtab_cursor *c = <sqlite3_vtab_cursor *>sqlite3_malloc64(
        sizeof(sqlite3_vtab_cursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(sqlite3_vtab_cursor))
    out[0] = c
    return SQLITE_OK


cdef int st_kept_close(sqlite3_vtab_cursor *c) noexcept nogil:
    sqlite3_free(c)
    return SQLITE_OK


cdef int st_kept_filter(sqlite3_vtab_cursor *c, int idx, const char *idx_str, int argc,
                        sqlite3_value **argv) noexcept nogil:
    return SQLITE_OK


cdef int st_kept_next(sqlite3_vtab_cursor *c) noexcept nogil:
    return SQLITE_OK


cdef int st_kept_eof(sqlite3_vtab_cursor *c) noexcept nogil:
    return 1


cdef int st_kept_column(sqlite3_vtab_cursor *c, sqlite3_context *ctx, int i) noexcept nogil:
    sqlite3_result_null(ctx)
    return SQLITE_OK


cdef int st_kept_rowid(sqlite3_vtab_cursor *c, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = 0
    return SQLITE_OK


cdef void st_pool_init_kept_module() noexcept nogil:
    st_kept_module.iVersion = 1
    st_kept_module.xCreate = NULL   # eponymous only
    st_kept_module.xConnect = st_kept_connect
    st_kept_module.xBestIndex = st_kept_best_index
    st_kept_module.xDisconnect = st_kept_disconnect
    st_kept_module.xDestroy = st_kept_disconnect
    st_kept_module.xOpen = st_kept_open
    st_kept_module.xClose = st_kept_close
    st_kept_module.xFilter = st_kept_filter
    st_kept_module.xNext = st_kept_next
    st_kept_module.xEof = st_kept_eof
    st_kept_module.xColumn = st_kept_column
    st_kept_module.xRowid = st_kept_rowid


cdef sqlite3_stmt *st_kept_take(sqlite3 *db, const char *sql) noexcept nogil:
    """db's kept statement of this text, now in use; NULL when it has none free."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int i
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_nkept):
        if st_kept[i].db == db and not st_kept[i].in_use \
                and strcmp(st_kept[i].sql, sql) == 0:
            st_kept[i].in_use = 1
            stmt = st_kept[i].stmt
            break
    pthread_mutex_unlock(&st_views_mutex)
    return stmt


cdef int st_kept_instance(sqlite3 *db) noexcept nogil:
    """Whether db has (or now has) its _tensor_kept_statements instance."""
    cdef sqlite3_stmt *stmt = NULL
    pthread_mutex_lock(&st_views_mutex)
    cdef int known = st_kept_conn_index(db) >= 0
    pthread_mutex_unlock(&st_views_mutex)
    if known:
        return 1
    # preparing a statement that names it makes the instance (xConnect), which stays
    # after the statement is finalized, until the connection closes
    if sqlite3_prepare_v2(db, "SELECT 1 FROM main._tensor_kept_statements", -1, &stmt,
                          NULL) != SQLITE_OK:
        sqlite3_finalize(stmt)
        return 0
    sqlite3_finalize(stmt)
    pthread_mutex_lock(&st_views_mutex)
    known = st_kept_conn_index(db) >= 0
    pthread_mutex_unlock(&st_views_mutex)
    return known


cdef int st_kept_adopt(sqlite3 *db, const char *sql, sqlite3_stmt *stmt) noexcept nogil:
    """Keep stmt (in use now) for db under its text sql; 0 when it cannot be kept (the
    caller finalizes it as before). One statement per text: a second one, prepared while
    the first was in use (a nested read), is not kept."""
    global st_nkept
    cdef int kept = 0, i
    if not st_kept_instance(db):
        return 0
    cdef char *key = sqlite3_mprintf("%s", sql)
    if key == NULL:
        return 0
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_nkept):
        if st_kept[i].db == db and strcmp(st_kept[i].sql, sql) == 0:
            pthread_mutex_unlock(&st_views_mutex)
            sqlite3_free(key)
            return 0
    # still an instance (a close between the two is the caller's misuse, but cheap to see)
    if st_kept_conn_index(db) >= 0 and (st_nkept < st_kept_cap or st_kept_grow(
            <void **>&st_kept, &st_kept_cap, sizeof(KeptStatement))):
        memset(&st_kept[st_nkept], 0, sizeof(KeptStatement))
        st_kept[st_nkept].db = db
        st_kept[st_nkept].sql = key
        key = NULL
        st_kept[st_nkept].stmt = stmt
        st_kept[st_nkept].in_use = 1
        st_nkept += 1
        kept = 1
    pthread_mutex_unlock(&st_views_mutex)
    sqlite3_free(key)
    return kept


cdef int st_kept_give_back(sqlite3_stmt *stmt, int keep) noexcept nogil:
    """Return a statement st_kept_take or st_kept_adopt handed out: reset and free for the
    next use, or (keep = 0: it failed) forgotten. 0 when it is not kept (any more): the
    caller finalizes it."""
    global st_nkept
    cdef int i, found = 0
    if keep:
        sqlite3_reset(stmt)   # ends the snapshot; before the lock (it takes db's mutex)
        sqlite3_clear_bindings(stmt)
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_nkept):
        if st_kept[i].stmt == stmt and st_kept[i].in_use:
            found = 1
            if keep:
                st_kept[i].in_use = 0
            else:
                sqlite3_free(st_kept[i].sql)
                st_nkept -= 1
                st_kept[i] = st_kept[st_nkept]
            break
    pthread_mutex_unlock(&st_views_mutex)
    return found and keep


cdef int st_kept_count(sqlite3 *db, int *in_use) noexcept nogil:
    """How many statements db keeps (in_use: how many of them are taken now)."""
    cdef int i, n = 0
    in_use[0] = 0
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_nkept):
        if st_kept[i].db == db:
            n += 1
            in_use[0] += st_kept[i].in_use
    pthread_mutex_unlock(&st_views_mutex)
    return n


cdef void st_kept_stats(sqlite3 *db, sqlite3_int64 *runs, sqlite3_int64 *reprepares) noexcept nogil:
    """How many times db's kept statements have run, and been re-prepared (by SQLite)."""
    cdef int i
    runs[0] = 0
    reprepares[0] = 0
    pthread_mutex_lock(&st_views_mutex)
    for i in range(st_nkept):
        if st_kept[i].db == db:
            runs[0] += sqlite3_stmt_status(st_kept[i].stmt, SQLITE_STMTSTATUS_RUN, 0)
            reprepares[0] += sqlite3_stmt_status(st_kept[i].stmt, SQLITE_STMTSTATUS_REPREPARE, 0)
    pthread_mutex_unlock(&st_views_mutex)


cdef int snapshot_hold(sqlite3 *db, const char *schema, sqlite3_stmt **pin,
                       char **err) noexcept nogil:
    """Hold one read snapshot of schema's database until snapshot_release(pin).

    Outside a transaction every statement and blob read would see its own snapshot, so a
    commit between two of them (another writer's) would pair old rows with new pages:
    wrong numbers or a false corruption error. A statement stepped once and not reset keeps
    the connection's read transaction open, so everything read meanwhile is one snapshot.
    Nothing is held when a transaction is already open there (the caller's BEGIN, or the
    statement that called us reading the same database). The statement is the
    connection's kept one when it has one (see above)."""
    cdef char *sql
    cdef int rc
    pin[0] = NULL
    if sqlite3_libversion_number() >= 3034000 and sqlite3_txn_state(db, schema) != 0:
        return SQLITE_OK   # 0 is SQLITE_TXN_NONE
    sql = sqlite3_mprintf("SELECT count(*) FROM \"%w\".sqlite_master", schema)
    if sql == NULL:
        return SQLITE_NOMEM
    pin[0] = st_kept_take(db, sql)
    if pin[0] != NULL:
        sqlite3_free(sql)
        rc = sqlite3_step(pin[0])
        if rc == SQLITE_ROW:
            return SQLITE_OK
        err[0] = sqlite3_mprintf("cannot start reading database '%s': %s", schema,
                                 sqlite3_errmsg(db))
        st_kept_give_back(pin[0], 0)   # a failed statement is not kept: prepared anew next time
        sqlite3_finalize(pin[0])
        pin[0] = NULL
        return SQLITE_ERROR if rc == SQLITE_DONE else rc
    rc = sqlite3_prepare_v2(db, sql, -1, pin, NULL)
    if rc == SQLITE_OK:
        rc = sqlite3_step(pin[0])
        if rc == SQLITE_ROW:
            st_kept_adopt(db, sql, pin[0])
            sqlite3_free(sql)
            return SQLITE_OK
    sqlite3_free(sql)
    err[0] = sqlite3_mprintf("cannot start reading database '%s': %s", schema,
                             sqlite3_errmsg(db))
    sqlite3_finalize(pin[0])
    pin[0] = NULL
    return SQLITE_ERROR if rc == SQLITE_DONE else rc


cdef void snapshot_release(sqlite3_stmt **pin) noexcept nogil:
    if pin[0] != NULL and not st_kept_give_back(pin[0], 1):
        sqlite3_finalize(pin[0])
    pin[0] = NULL


cdef int st_kept_prepare(sqlite3 *db, const char *tmpl, const char *schema, const char *store,
                         sqlite3_stmt **stmt) noexcept nogil:
    """st_sql_prepare's statement, but the connection's kept one when it has it free (see
    above); give it back with st_kept_finish, never sqlite3_finalize. Bind every parameter:
    a kept one comes with none bound."""
    cdef char *sql = st_sql_expand(db, tmpl, schema, store)
    cdef int rc
    stmt[0] = NULL
    if sql == NULL:
        return SQLITE_NOMEM
    stmt[0] = st_kept_take(db, sql)
    if stmt[0] != NULL:
        sqlite3_free(sql)
        return SQLITE_OK
    rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL)
    if rc == SQLITE_OK:
        st_kept_adopt(db, sql, stmt[0])
    sqlite3_free(sql)
    return rc


cdef void st_kept_finish(sqlite3_stmt *stmt) noexcept nogil:
    """Done with a st_kept_prepare statement (NULL: nothing): reset and kept, or finalized."""
    if stmt != NULL and not st_kept_give_back(stmt, 1):
        sqlite3_finalize(stmt)


cdef int st_pool_source_init(PageSource *src, sqlite3 *db, const char *schema, const char *store,
                             char **err) noexcept nogil:
    """Identify the store for the pool (its key) and the connection's view, and hold one
    read snapshot until st_pool_source_close (snapshot_hold): everything read through src, and
    every statement run on db meanwhile, sees the same committed state."""
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 uid = 0, version = 1
    cdef int found = 0
    cdef const char *key
    cdef const char *fname
    cdef uint64_t h = 1469598103934665603ULL   # FNV-1a of the file name
    memset(src, 0, sizeof(PageSource))
    src.db = db
    src.store = store
    src.schema = schema
    src.table = sqlite3_mprintf("%s_pages", store)
    if src.table == NULL:
        return SQLITE_NOMEM
    cdef int rc = snapshot_hold(db, schema, &src.snapshot, err)
    if rc != SQLITE_OK:
        return rc
    rc = st_kept_prepare(
        db, "SELECT key, value FROM {config} WHERE key IN ('uid', 'format_version')", schema,
        store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("no tensor store named '%s' (%s)", store, sqlite3_errmsg(db))
        return SQLITE_ERROR if rc == SQLITE_ERROR else rc
    rc = sqlite3_step(stmt)
    while rc == SQLITE_ROW:
        key = st_sql_text_or(<const char *>sqlite3_column_text(stmt, 0), "")
        if strcmp(key, "uid") == 0:
            uid = sqlite3_column_int64(stmt, 1)
            found = 1
        elif strcmp(key, "format_version") == 0:
            version = sqlite3_column_int64(stmt, 1)
        rc = sqlite3_step(stmt)
    st_kept_finish(stmt)
    if rc != SQLITE_DONE:
        # BUSY, IOERR, ...: the read failed; never taken for "a store without a uid"
        err[0] = sqlite3_mprintf("cannot read %s_config: %s", store, sqlite3_errmsg(db))
        return rc
    # Without a uid two stores of one file would share a key: their pages are read for
    # each use (Store adds a uid when it opens a store writable).
    src.uncached = not found
    src.min_version = 2 if version >= 2 else 1
    fname = sqlite3_db_filename(db, schema)
    if fname == NULL or fname[0] == 0:
        # A memory or temporary database: private to this connection.
        h ^= <uint64_t><size_t>db
    else:
        while fname[0] != 0:
            h = (h ^ <unsigned char>fname[0]) * 1099511628211ULL
            fname += 1
    src.store_key = h ^ (<uint64_t>uid * 0x9E3779B97F4A7C15ULL)
    src.epoch = 0 if st_page_checks_off else st_pool_connection_view(db, schema)
    return SQLITE_OK


cdef void st_pool_source_view(PageSource *src) noexcept nogil:
    """Bring src's view up to date (no SQL: a file control and a counter)."""
    src.epoch = 0 if st_page_checks_off else st_pool_connection_view(src.db, src.schema)


cdef int st_pool_source_same_version(PageSource *src, uint64_t store_key,
                                     uint64_t epoch) noexcept nogil:
    """Whether what was read from the store at (store_key, epoch) - a plan, a page - is
    still what src's connection sees: the same store, and nothing written since (by this
    connection or committed by any other). The one validity test of every plan cache."""
    st_pool_source_view(src)
    return not src.uncached and src.store_key == store_key and src.epoch == epoch


cdef void st_pool_source_close(PageSource *src) noexcept nogil:
    if src.blob != NULL:
        sqlite3_blob_close(src.blob)
    snapshot_release(&src.snapshot)
    sqlite3_finalize(src.sharing)
    src.sharing = NULL
    sqlite3_free(src.table)
    src.blob = NULL
    src.table = NULL


cdef int st_pool_source_open(PageSource *src, sqlite3_int64 page_id, char **err) noexcept nogil:
    """Position src's blob handle on a page row."""
    cdef int rc
    if src.blob == NULL:
        rc = sqlite3_blob_open(src.db, src.schema, src.table, "data", page_id, 0, &src.blob)
    else:
        rc = sqlite3_blob_reopen(src.blob, page_id)
    if rc == SQLITE_OK:
        return rc
    if rc == SQLITE_ERROR:
        # The page row is missing or its data is not a BLOB: a block names a page that is
        # not there, which is corruption, not a failed read.
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
        rc = SQLITE_CORRUPT
    else:
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
    if src.blob != NULL:
        sqlite3_blob_close(src.blob)
        src.blob = NULL
    return rc


cdef int st_pool_read_page(PageSource *src, sqlite3_int64 page_id, unsigned char **data,
                           sqlite3_int64 *nbytes, char **err) noexcept nogil:
    """Read a whole page BLOB into new page memory (st_page_alloc; freed with st_page_free
    and its size) and check it: header, slot table, checksum."""
    cdef int rc = st_pool_source_open(src, page_id, err)
    if rc != SQLITE_OK:
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
    rc = st_page_check(buf, n, page_id, src.table, src.min_version, not st_page_checks_off, err)
    if rc != SQLITE_OK:
        st_page_free(buf, n)
        return rc
    data[0] = buf
    nbytes[0] = n
    return SQLITE_OK


cdef int st_pool_source_confirm(void *ctx, PoolPage *p, int *same, char **err) noexcept nogil:
    """Whether the cached page p is still the committed page (in src's view): equal size
    and equal header, checksum included. A version-1 page has no checksum: reloaded."""
    cdef PageSource *src = <PageSource *>ctx
    cdef unsigned char head[ST_PAGE_HEADER_BYTES]
    cdef int rc
    same[0] = 0
    if p.nbytes < ST_PAGE_HEADER_BYTES or st_get_u32(p.data + 4) != 2:
        return SQLITE_OK
    rc = st_pool_source_open(src, p.page_id, err)
    if rc != SQLITE_OK:
        return rc
    if sqlite3_blob_bytes(src.blob) != p.nbytes:
        return SQLITE_OK
    rc = sqlite3_blob_read(src.blob, head, ST_PAGE_HEADER_BYTES, 0)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", p.page_id, src.table,
                                 sqlite3_errmsg(src.db))
        return rc
    same[0] = memcmp(head, p.data, ST_PAGE_HEADER_BYTES) == 0
    return SQLITE_OK


cdef int st_pool_source_load(void *ctx, sqlite3_int64 page_id, unsigned char **data,
                             sqlite3_int64 *nbytes, int *shared, char **err) noexcept nogil:
    """The process pool's loader: the page BLOB, and (for policies that ask) how many
    models share the page."""
    cdef PageSource *src = <PageSource *>ctx
    cdef int rc = st_pool_read_page(src, page_id, data, nbytes, err)
    if rc != SQLITE_OK or not st_pool_process.policy.needs_sharing:
        return rc
    if src.sharing == NULL:
        rc = st_sql_prepare(
            src.db, "SELECT count(DISTINCT t.model_id) FROM {blocks} b JOIN {map} m"
                    " ON m.block_id = b.id JOIN {tensors} t ON t.id = m.tensor_id"
                    " WHERE b.page_id = ?1", src.schema, src.store, &src.sharing)
        if rc != SQLITE_OK:
            shared[0] = 1  # a hint only: the page is still usable
            return SQLITE_OK
    sqlite3_bind_int64(src.sharing, 1, page_id)
    shared[0] = 1
    if sqlite3_step(src.sharing) == SQLITE_ROW:
        shared[0] = <int>sqlite3_column_int64(src.sharing, 0)
    sqlite3_reset(src.sharing)
    return SQLITE_OK


cdef int st_pool_pin(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                     char **err) noexcept nogil:
    """Pin a page of src's store in the process pool (reading it on a miss, re-confirming
    it when src's view is not the one it was last confirmed in)."""
    if src.uncached:
        return st_pool_pin_uncached(src, page_id, out, err)
    return st_pool_access(&st_pool_process, src.store_key, page_id, src.epoch, 0,
                          st_pool_source_load, st_pool_source_confirm, src, out, err)


cdef int st_pool_pin_uncached(PageSource *src, sqlite3_int64 page_id, PoolPage **out,
                              char **err) noexcept nogil:
    """A page outside the table: read now, freed at unpin."""
    cdef PoolPage *p = <PoolPage *>calloc(1, sizeof(PoolPage))
    if p == NULL:
        return SQLITE_NOMEM
    cdef int rc = st_pool_read_page(src, page_id, &p.data, &p.nbytes, err)
    if rc != SQLITE_OK:
        free(p)
        return rc
    p.page_id = page_id
    p.pins = 1
    p.detached = 1
    st_pool_lock(&st_pool_process)
    st_pool_process.misses += 1
    st_pool_process.bytes_read += p.nbytes
    st_pool_unlock(&st_pool_process)
    out[0] = p
    return SQLITE_OK


cdef void st_pool_unpin(PoolPage *p) noexcept nogil:
    st_pool_unpin_in(&st_pool_process, p)


cdef int st_pool_page_slot(const PoolPage *p, int slot, sqlite3_int64 nbytes, const char *table,
                           const unsigned char **out, char **err) noexcept nogil:
    """Point out at slot's bytes within a pinned page; they must be exactly nbytes long."""
    return st_pool_slot_in(p.data, p.nbytes, p.page_id, slot, nbytes, table, out, err)


cdef int st_pool_slot_in(const unsigned char *data, sqlite3_int64 page_bytes, sqlite3_int64 page_id,
                         int slot, sqlite3_int64 nbytes, const char *table,
                         const unsigned char **out,
                         char **err) noexcept nogil:
    """page_slot over a checked page's bytes (pinned, or a reader's scratch copy)."""
    cdef sqlite3_int64 nslots = st_get_u32(data + 8)
    cdef uint64_t offset
    cdef const unsigned char *entry = NULL
    if 0 <= slot < nslots:   # read_page checked that the slot table fits in the page
        entry = data + st_page_slots_at(data) + slot * ST_PAGE_SLOT_BYTES
    cdef int rc = st_page_check_slot(entry, slot, nslots, nbytes, page_bytes, page_id, table,
                                     &offset, err)
    if rc == SQLITE_OK:
        out[0] = data + offset
    return rc


cdef int st_pool_view_page(PageSource *src, PageView *v, sqlite3_int64 page_id,
                           char **err) noexcept nogil:
    """Point v at page_id: the pool's copy (confirmed in src's view) or a fresh checked read."""
    cdef int rc, n
    cdef void *grown
    if v.page_id == page_id and v.data != NULL:
        return SQLITE_OK
    st_pool_view_release(v)
    if not src.uncached:
        rc = st_pool_access(&st_pool_process, src.store_key, page_id, src.epoch, 0, NULL,
                            st_pool_source_confirm, src, &v.pinned, err)
        if rc != SQLITE_OK:
            return rc
        if v.pinned != NULL:
            v.data = v.pinned.data
            v.nbytes = v.pinned.nbytes
            v.page_id = page_id
            return SQLITE_OK
    rc = st_pool_source_open(src, page_id, err)
    if rc != SQLITE_OK:
        return rc
    n = sqlite3_blob_bytes(src.blob)
    if n > v.cap:
        grown = realloc(v.scratch, n)
        if grown == NULL:
            return SQLITE_NOMEM
        v.scratch = <unsigned char *>grown
        v.cap = n
    rc = sqlite3_blob_read(src.blob, v.scratch, n, 0)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, src.table,
                                 sqlite3_errmsg(src.db))
        return rc
    rc = st_page_check(v.scratch, n, page_id, src.table, src.min_version, not st_page_checks_off,
                       err)
    if rc != SQLITE_OK:
        return rc
    st_pool_lock(&st_pool_process)
    st_pool_process.bytes_read += n
    st_pool_unlock(&st_pool_process)
    v.data = v.scratch
    v.nbytes = n
    v.page_id = page_id
    return SQLITE_OK


cdef void st_pool_view_release(PageView *v) noexcept nogil:
    """Unpin v's page (the scratch buffer stays for the next page)."""
    if v.pinned != NULL:
        st_pool_unpin(v.pinned)
        v.pinned = NULL
    v.data = NULL
    v.page_id = -1


cdef void st_pool_view_close(PageView *v) noexcept nogil:
    st_pool_view_release(v)
    free(v.scratch)
    v.scratch = NULL
    v.cap = 0


# -- tensors out of blocks (tensor_blob, the data column, Store.get_tensor) -----------------

cdef int read_tensor(sqlite3 *db, const char *schema, const char *store, const TensorInfo *info,
                     unsigned char *out, char **err) noexcept nogil:
    """Assemble the tensor's bytes (row-major, its own dtype) into out[0:info.nbytes].

    Pages come through the page-access layer (st_pool_view_page: the pool's copy when cached,
    confirmed as for inference, else read and checked, the same checks), blocks in page
    order so each page is read once. Edge blocks are stored without
    padding, so every block is copied whole into its place. Then a float32 tensor's
    residuals are added to their tiles, and its factors' U V^T to the whole (the effective
    values).
    """
    cdef PageSource src
    cdef PageView page
    cdef sqlite3_stmt *stmt = NULL
    cdef const unsigned char *block
    cdef sqlite3_int64 bi, bj, page_id, br, bc, nbytes, r, seen = 0, slot
    cdef sqlite3_int64 row_bytes = info.cols * info.itemsize
    cdef sqlite3_int64 grid_rows = (info.rows + info.block_rows - 1) // info.block_rows
    cdef sqlite3_int64 grid_cols = (info.cols + info.block_cols - 1) // info.block_cols
    cdef sqlite3_int64 grid = grid_rows * grid_cols
    cdef unsigned char *dst
    # one bit per tile: a map row repeated (or moved onto another tile) must not leave a
    # tile unwritten while the count still matches
    cdef unsigned char *filled = <unsigned char *>calloc((grid + 7) // 8, 1)
    if filled == NULL:
        return SQLITE_NOMEM
    memset(&page, 0, sizeof(PageView))
    page.page_id = -1
    cdef int rc = st_pool_source_init(&src, db, schema, store, err)
    if rc != SQLITE_OK:
        st_pool_source_close(&src)
        free(filled)
        return rc
    rc = st_kept_prepare(
        db, "SELECT m.block_row, m.block_col, b.page_id, b.slot, b.nbytes FROM {map} m "
            "JOIN {blocks} b ON b.id = m.block_id WHERE m.tensor_id = +?1 ORDER BY b.page_id, b.slot",
        schema, store, &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_int64(stmt, 1, info.id)
    else:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            if rc == SQLITE_DONE:
                rc = SQLITE_OK
            else:
                err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
            break
        rc = SQLITE_OK
        bi = sqlite3_column_int64(stmt, 0)
        bj = sqlite3_column_int64(stmt, 1)
        page_id = sqlite3_column_int64(stmt, 2)
        slot = sqlite3_column_int64(stmt, 3)
        nbytes = sqlite3_column_int64(stmt, 4)
        # bounds on bi, bj before they are used: a huge one would overflow bi * block_rows
        if bi < 0 or bj < 0 or bi >= grid_rows or bj >= grid_cols:
            br = bc = 0
        else:
            br = min(info.block_rows, info.rows - bi * info.block_rows)
            bc = min(info.block_cols, info.cols - bj * info.block_cols)
        if br <= 0 or bc <= 0 or nbytes != br * bc * info.itemsize or seen >= grid:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: block (%lld, %lld) of tensor "
                                     "%lld does not fit its shape", store, bi, bj, info.id)
            rc = SQLITE_CORRUPT
            break
        r = bi * grid_cols + bj
        if filled[r >> 3] & (1 << (r & 7)):
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld maps block "
                                     "(%lld, %lld) twice", store, info.id, bi, bj)
            rc = SQLITE_CORRUPT
            break
        filled[r >> 3] |= <unsigned char>(1 << (r & 7))
        if slot < 0 or slot > 0x7fffffff:
            err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %lld", page_id, src.table,
                                     slot)
            rc = SQLITE_CORRUPT
            break
        rc = st_pool_view_page(&src, &page, page_id, err)
        if rc != SQLITE_OK:
            break
        rc = st_pool_slot_in(page.data, page.nbytes, page_id, <int>slot, nbytes, src.table,
                             &block, err)
        if rc != SQLITE_OK:
            break
        dst = out + bi * info.block_rows * row_bytes + bj * info.block_cols * info.itemsize
        if bc == info.cols:  # the block spans whole rows: it lands contiguously
            memcpy(dst, block, nbytes)
        else:
            for r in range(br):
                memcpy(dst + r * row_bytes, block + r * bc * info.itemsize, bc * info.itemsize)
        seen += 1
    st_pool_view_release(&page)
    st_kept_finish(stmt)
    free(filled)
    if rc == SQLITE_OK and seen != grid:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld maps %lld of its "
                                 "%lld blocks", store, info.id, seen, grid)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK:
        rc = add_tensor_residuals(&src, &page, store, info, out, err)
    if rc == SQLITE_OK:
        rc = add_tensor_factors(&src, store, info, out, err)
    st_pool_view_close(&page)
    st_pool_source_close(&src)
    return rc


cdef void result_tensor_blob(sqlite3_context *ctx, sqlite3 *db, const char *schema,
                             const char *store, const TensorInfo *info) noexcept nogil:
    """Set the function/column result to the tensor's bytes, or to an error. The caller
    has checked info.nbytes against SQLite's length limit (check_result_bytes), so nothing
    SQLite could not return is allocated."""
    cdef char *err = NULL
    cdef unsigned char *buf
    buf = <unsigned char *>sqlite3_malloc64(info.nbytes)
    if buf == NULL:
        sqlite3_result_error_nomem(ctx)
        return
    cdef int rc = read_tensor(db, schema, store, info, buf, &err)
    if rc != SQLITE_OK:
        sqlite3_free(buf)
        if err == NULL:
            sqlite3_result_error(ctx, "cannot read tensor", -1)
        else:
            sqlite3_result_error(ctx, err, -1)
        sqlite3_result_error_code(ctx, rc)
        sqlite3_free(err)
        return
    sqlite3_result_blob64(ctx, buf, info.nbytes, sqlite3_free)


cdef int add_tensor_residuals(PageSource *src, PageView *page, const char *store,
                              const TensorInfo *info, unsigned char *out,
                              char **err) noexcept nogil:
    """out (the tensor's bytes, assembled) += its residuals: block + residual for a float32
    tensor. A store without a residuals table has none."""
    cdef sqlite3_stmt *stmt = NULL
    cdef const unsigned char *payload
    cdef sqlite3_int64 bi, bj, kind, param, page_id, slot, nbytes, br, bc
    cdef sqlite3_int64 grid_rows = (info.rows + info.block_rows - 1) // info.block_rows
    cdef sqlite3_int64 grid_cols = (info.cols + info.block_cols - 1) // info.block_cols
    cdef const char *dtype
    cdef const char *tname
    cdef int has = 0
    cdef int rc = st_sql_has_residuals(src.db, src.schema, store, &has, err)
    if rc != SQLITE_OK or not has:
        return rc
    rc = st_kept_prepare(
        src.db, "SELECT r.block_row, r.block_col, r.kind, r.param, r.page_id, r.slot, r.nbytes,"
                " t.dtype, t.name FROM {residuals} r JOIN {tensors} t ON t.id = r.tensor_id"
                " WHERE r.tensor_id = +?1 ORDER BY r.page_id, r.slot",
        src.schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(src.db))
        return rc
    sqlite3_bind_int64(stmt, 1, info.id)
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            if rc == SQLITE_DONE:
                rc = SQLITE_OK
            else:
                err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(src.db))
            break
        bi = sqlite3_column_int64(stmt, 0)
        bj = sqlite3_column_int64(stmt, 1)
        kind = sqlite3_column_int64(stmt, 2)
        param = sqlite3_column_int64(stmt, 3)
        page_id = sqlite3_column_int64(stmt, 4)
        slot = sqlite3_column_int64(stmt, 5)
        nbytes = sqlite3_column_int64(stmt, 6)
        dtype = <const char *>sqlite3_column_text(stmt, 7)
        tname = st_sql_text_or(<const char *>sqlite3_column_text(stmt, 8), "?")
        if bi < 0 or bj < 0 or bi >= grid_rows or bj >= grid_cols:
            br = bc = 0
        else:
            br = min(info.block_rows, info.rows - bi * info.block_rows)
            bc = min(info.block_cols, info.cols - bj * info.block_cols)
        rc = st_page_check_residual(store, tname, info.id, bi, bj, kind, param, br, bc, nbytes, err)
        if rc != SQLITE_OK:
            break
        if dtype == NULL or strcmp(dtype, "float32") != 0 or info.itemsize != 4:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor '%s' (id %lld) is %s "
                                     "but has a residual at tile (%lld, %lld); residuals apply "
                                     "to float32 tensors only", store, tname, info.id,
                                     st_sql_text_or(dtype, "of no dtype"), bi, bj)
            rc = SQLITE_CORRUPT
            break
        if slot < 0 or slot > 0x7fffffff:
            err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %lld", page_id, src.table,
                                     slot)
            rc = SQLITE_CORRUPT
            break
        rc = st_pool_view_page(src, page, page_id, err)
        if rc != SQLITE_OK:
            break
        rc = st_pool_slot_in(page.data, page.nbytes, page_id, <int>slot, nbytes, src.table,
                             &payload, err)
        if rc != SQLITE_OK:
            break
        rc = st_page_check_residual_payload(store, tname, info.id, bi, bj, <int>kind, <int>param,
                                            payload, br, bc, err)
        if rc != SQLITE_OK:
            break
        st_page_residual_add(<int>kind, <int>param, payload, br, bc,
                             <float *>(out + (bi * info.block_rows * info.cols + bj * info.block_cols) * 4),
                             info.cols)
    st_pool_view_release(page)
    st_kept_finish(stmt)
    return rc


cdef int add_tensor_factors(PageSource *src, const char *store, const TensorInfo *info,
                            unsigned char *out, char **err) noexcept nogil:
    """out (the tensor's bytes, assembled) += U V^T of its factors row, if any (checked by
    st_page_load_factors: only a float32 tensor may have one). A store without a factors
    table has none."""
    cdef float *uv = NULL
    cdef int rank = 0
    cdef int has = 0
    cdef int rc = st_sql_has_factors(src.db, src.schema, store, &has, err)
    if rc != SQLITE_OK or not has:
        return rc
    rc = st_page_load_factors(src.db, src.schema, store, info.id, info.rows, info.cols, &rank,
                              &uv, err)
    if rc == SQLITE_OK and uv != NULL and info.itemsize != 4:   # the dtype's text said float32
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld is float32 but "
                                 "has %d-byte elements", store, info.id, info.itemsize)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK and uv != NULL:
        st_page_factors_add(info.rows, info.cols, rank, uv, <float *>out, info.cols)
    free(uv)
    return rc


def _set_page_checks(bint on):
    """Hidden switch for measurements only: off, pages are not checksummed on load and the
    pool trusts every cached page (as before freshness checks). Never for serving."""
    global st_page_checks_off
    st_page_checks_off = 0 if on else 1


def page_checksum(data, long long page_id):
    """The checksum of a page BLOB as stored at offset 16 of a version-2 page (the field
    itself counted as zero), seeded with the page id: the engine's own function, for the
    writer (sqlite_tensor/pages.py)."""
    cdef const unsigned char[::1] view = memoryview(data).cast("B")
    cdef size_t n = view.shape[0]
    cdef uint64_t h
    cdef unsigned char empty = 0
    with nogil:
        h = st_page_checksum(&view[0] if n else &empty, n, <uint64_t>page_id)
    return h
