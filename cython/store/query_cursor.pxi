# A virtual-table cursor that walks the rows of one prepared statement.
#
# The store table and every report table answer from SQL over the shadow tables; this
# cursor is the one piece of code that steps such a statement for them.

cdef int st_qc_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out, size_t size) noexcept nogil:
    """Allocate a zeroed cursor of `size` bytes (a QueryCursor or a struct starting with one)."""
    cdef QueryCursor *c = <QueryCursor *>sqlite3_malloc64(size)
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, size)
    c.eof = 1
    out[0] = &c.base
    return SQLITE_OK


cdef int st_qc_close(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef QueryCursor *c = <QueryCursor *>cur
    sqlite3_finalize(c.stmt)
    sqlite3_free(c)
    return SQLITE_OK


cdef void st_qc_set_vtab_error(sqlite3_vtab *vtab, char *msg) noexcept nogil:
    """Hand msg (from sqlite3_mprintf; may be NULL) to SQLite as the table's error text."""
    sqlite3_free(vtab.zErrMsg)
    vtab.zErrMsg = msg


cdef int st_qc_start(QueryCursor *c, sqlite3_stmt *stmt, int argc,
                     sqlite3_value **argv) noexcept nogil:
    """Run stmt (owned by the cursor from now on) with argv bound as ?1..?argc."""
    cdef int i, rc
    sqlite3_finalize(c.stmt)
    c.stmt = stmt
    c.rowid = 0
    for i in range(argc):
        rc = sqlite3_bind_value(stmt, i + 1, argv[i])
        if rc != SQLITE_OK:
            return rc
    return st_qc_next(&c.base)


cdef int st_qc_next(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef QueryCursor *c = <QueryCursor *>cur
    cdef int rc = sqlite3_step(c.stmt)
    c.rowid += 1
    if rc == SQLITE_ROW:
        c.eof = 0
        return SQLITE_OK
    c.eof = 1
    if rc == SQLITE_DONE:
        return SQLITE_OK
    st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf("%s",
                                                    sqlite3_errmsg(sqlite3_db_handle(c.stmt))))
    return rc


cdef int st_qc_eof(sqlite3_vtab_cursor *cur) noexcept nogil:
    return (<QueryCursor *>cur).eof


cdef int st_qc_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = (<QueryCursor *>cur).rowid
    return SQLITE_OK


cdef int st_qc_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    """Column i of the table is column i of the statement."""
    sqlite3_result_value(ctx, sqlite3_column_value((<QueryCursor *>cur).stmt, i))
    return SQLITE_OK
