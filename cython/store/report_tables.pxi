# Report tables: read-only table-valued functions over a store's shadow tables.
#
#   SELECT * FROM tensor_stats('tensors');    -- one row: totals and the dedup ratio
#   SELECT * FROM tensor_models('tensors');   -- per model: logical vs physical bytes
#   SELECT * FROM tensor_pages('tensors');    -- per page: blocks, and who shares them
#
# A store argument 'db.name' names a store in attached database db (st_sql_split_store_name).
# The tables only read, so they are SQLITE_VTAB_INNOCUOUS: usable from views and triggers
# even with trusted_schema off.
#
# Each is one row of ST_REPORTS below: its name, its declared columns (the last one, store,
# is the HIDDEN argument), and the SQL that answers it. xBestIndex insists on store = ?:
# with the argument missing the query fails with a message saying how to call it.
#
# Residuals and factors count as physical bytes of the model that owns them (always one),
# residuals' pages as pages it reads. Each report's SQL starts with a CTE `res` of the
# residual rows and the factors rows (page NULL, bytes length(u) + length(v)); a store
# without those tables (created before them) gets none of theirs.

# The reports themselves (names, columns, SQL) are data in c/st_reports.h; engine.pxd
# declares them.


ctypedef struct ReportCursor:
    QueryCursor q             # must be first
    char *store               # the store argument of the current scan
    char *schema              # the database and store it names (st_sql_split_store_name)
    char *name


cdef int st_report_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                           sqlite3_vtab **out, char **err) noexcept nogil:
    cdef const st_report *spec = <const st_report *>aux
    cdef int rc = sqlite3_declare_vtab(db, spec.columns)
    if rc != SQLITE_OK:
        return rc
    cdef ReportVtab *v = <ReportVtab *>sqlite3_malloc64(sizeof(ReportVtab))
    if v == NULL:
        return SQLITE_NOMEM
    memset(v, 0, sizeof(ReportVtab))
    v.db = db
    v.spec = spec
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS)
    out[0] = &v.base
    return SQLITE_OK


cdef int st_report_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    sqlite3_free(vtab)
    return SQLITE_OK


cdef int st_report_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    """idxNum 1: argv[0] is the store name. 0: no store given (xFilter reports the error)."""
    cdef int store_col = (<ReportVtab *>vtab).spec.ncols
    cdef int i, unusable = 0
    info.idxNum = 0
    info.estimatedCost = 1e12
    for i in range(info.nConstraint):
        if info.aConstraint[i].iColumn != store_col:
            continue
        if info.aConstraint[i].op != SQLITE_INDEX_CONSTRAINT_EQ:
            # store > 'a' names no store: plan without it so xFilter can say so (asking
            # for another plan here would only end in "no query solution")
            continue
        if not info.aConstraint[i].usable:
            unusable = 1
            continue
        info.aConstraintUsage[i].argvIndex = 1
        info.aConstraintUsage[i].omit = 1
        info.idxNum = 1
        info.estimatedCost = 100.0
        return SQLITE_OK
    # A store constraint the planner cannot hand us yet: ask for another plan.
    return SQLITE_CONSTRAINT if unusable else SQLITE_OK


cdef int st_report_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    return st_qc_open(vtab, out, sizeof(ReportCursor))


cdef int st_report_close(sqlite3_vtab_cursor *cur) noexcept nogil:
    sqlite3_free((<ReportCursor *>cur).store)
    sqlite3_free((<ReportCursor *>cur).schema)
    sqlite3_free((<ReportCursor *>cur).name)
    return st_qc_close(cur)


cdef int st_report_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
                          int argc, sqlite3_value **argv) noexcept nogil:
    cdef ReportVtab *v = <ReportVtab *>cur.pVtab
    cdef ReportCursor *c = <ReportCursor *>cur
    cdef sqlite3_stmt *stmt = NULL
    cdef const char *store
    cdef int rc
    if idx_num != 1 or sqlite3_value_type(argv[0]) != SQLITE_TEXT:
        st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf(
            "%s: needs a store name, as in SELECT * FROM %s('tensors')", v.spec.name, v.spec.name))
        return SQLITE_ERROR
    store = <const char *>sqlite3_value_text(argv[0])
    if <int>strlen(store) != sqlite3_value_bytes(argv[0]):
        # read as a C string, 'tensors' || char(0) || 'x' would silently name 'tensors'
        st_qc_set_vtab_error(cur.pVtab,
                             sqlite3_mprintf("%s: the store name contains a NUL character",
                                             v.spec.name))
        return SQLITE_ERROR
    sqlite3_free(c.store)
    sqlite3_free(c.schema)
    sqlite3_free(c.name)
    c.schema = NULL
    c.name = NULL
    c.store = sqlite3_mprintf("%s", store)
    if c.store == NULL:
        return SQLITE_NOMEM
    cdef int has = 0
    cdef char *err = NULL
    cdef char *sql
    rc = st_sql_split_store_name(v.db, c.store, &c.schema, &c.name, &err)
    if rc != SQLITE_OK:
        return rc
    rc = st_sql_store_tables(v.db, c.schema, c.name, &has, &err)
    if rc != SQLITE_OK:
        st_qc_set_vtab_error(cur.pVtab, err)
        return rc
    # the rows of `res`: residuals (in their pages), then factors (in no page)
    cdef const char *residuals = "SELECT 0, 0, 0 WHERE 0"
    if has & ST_HAS_RESIDUALS:
        residuals = "SELECT tensor_id, page_id, nbytes FROM {residuals}"
    cdef const char *factors = ""
    if has & ST_HAS_FACTORS:
        factors = " UNION ALL SELECT tensor_id, NULL, length(u) + length(v) FROM {factors}"
    cdef char *rows = sqlite3_mprintf("%s%s", residuals, factors)
    if rows == NULL:
        return SQLITE_NOMEM
    sql = sqlite3_mprintf(v.spec.sql, rows)
    sqlite3_free(rows)
    if sql == NULL:
        return SQLITE_NOMEM
    rc = st_sql_prepare(v.db, sql, c.schema, c.name, &stmt)
    sqlite3_free(sql)
    if rc != SQLITE_OK:
        st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf("%s: no tensor store named '%s' (%s)",
                                                        v.spec.name, c.store, sqlite3_errmsg(v.db)))
        return SQLITE_ERROR
    return st_qc_start(&c.q, stmt, 0, NULL)


cdef int st_report_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef ReportCursor *c = <ReportCursor *>cur
    if i == (<ReportVtab *>cur.pVtab).spec.ncols:
        sqlite3_result_text(ctx, c.store, -1, SQLITE_TRANSIENT)
        return SQLITE_OK
    return st_qc_column(cur, ctx, i)


cdef sqlite3_module st_report_module


cdef void st_report_init_module() noexcept nogil:
    """One eponymous-only module serves every report; pAux picks the st_report row."""
    st_report_module.iVersion = 1
    st_report_module.xCreate = NULL
    st_report_module.xConnect = st_report_connect
    st_report_module.xBestIndex = st_report_best_index
    st_report_module.xDisconnect = st_report_disconnect
    st_report_module.xDestroy = st_report_disconnect
    st_report_module.xOpen = st_report_open
    st_report_module.xClose = st_report_close
    st_report_module.xFilter = st_report_filter
    st_report_module.xNext = st_qc_next
    st_report_module.xEof = st_qc_eof
    st_report_module.xColumn = st_report_column
    st_report_module.xRowid = st_qc_rowid
