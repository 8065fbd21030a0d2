# SQL text for a store's shadow tables.
#
# Every statement the engine runs against a store is written once, as a template in which
# {part} stands for the shadow table "<schema>"."<store>_<part>" and {.part} for the same
# name unqualified (CREATE INDEX ... ON wants that). Quoting is done here, once, with %w,
# so a store may have any name.

cdef extern from *:
    """
    /* Shadow tables of a store, "<store>_<part>". xShadowName is derived from this list,
    ** and docs/architecture.md describes each; keep the three in step. SQLite asks
    ** xShadowName about the text after a table name's last '_': no part may hold one. */
    static const char *const st_shadow_parts[] = {
        "config", "models", "tensors", "blocks", "pages", "map", "residuals", "dedup", 0
    };
    """
    const char *const st_shadow_parts[]


cdef inline const char *text_or(const char *text, const char *fallback) noexcept nogil:
    """text, or fallback where it is NULL (Cython makes `a if c else "..."` a Python object)."""
    return text if text != NULL else fallback


cdef char *expand_sql(sqlite3 *db, const char *tmpl, const char *schema,
                      const char *store) noexcept nogil:
    """Return tmpl with every {part} / {.part} expanded, from sqlite3_malloc; NULL on OOM."""
    cdef sqlite3_str *out = sqlite3_str_new(db)
    cdef const char *p = tmpl
    cdef const char *start
    cdef const char *name
    cdef bint qualified
    while p[0] != 0:
        if p[0] != b'{':
            start = p
            while p[0] != 0 and p[0] != b'{':
                p += 1
            sqlite3_str_append(out, start, <int>(p - start))
            continue
        p += 1
        qualified = p[0] != b'.'
        if not qualified:
            p += 1
        name = p
        while p[0] != 0 and p[0] != b'}':
            p += 1
        if qualified:
            sqlite3_str_appendf(out, "\"%w\".", schema)
        sqlite3_str_appendf(out, "\"%w_%.*w\"", store, <int>(p - name), name)
        if p[0] == b'}':
            p += 1
    return sqlite3_str_finish(out)


cdef int is_shadow_part(const char *suffix) noexcept nogil:
    cdef int i = 0
    while st_shadow_parts[i] != NULL:
        if sqlite3_stricmp(suffix, st_shadow_parts[i]) == 0:
            return 1
        i += 1
    return 0


cdef int prepare_store_sql(sqlite3 *db, const char *tmpl, const char *schema,
                           const char *store, sqlite3_stmt **stmt) noexcept nogil:
    """Expand tmpl for the store and prepare it; an SQLite result code."""
    cdef char *sql = expand_sql(db, tmpl, schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL)
    sqlite3_free(sql)
    return rc


cdef int exec_store_sql(sqlite3 *db, const char *tmpl, const char *schema,
                        const char *store, char **err) noexcept nogil:
    """Expand tmpl (one or more statements) for the store and run it."""
    cdef char *sql = expand_sql(db, tmpl, schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_exec(db, sql, NULL, NULL, err)
    sqlite3_free(sql)
    return rc


cdef int store_has_residuals(sqlite3 *db, const char *schema, const char *store,
                             int *has, char **err) noexcept nogil:
    """Set has to whether the store has a <store>_residuals table. Stores created before
    residuals existed lack it (Python's Store adds it when it opens a writable store);
    for every reader a missing table means "no residuals", never an error."""
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql = sqlite3_mprintf(
        "SELECT 1 FROM \"%w\".sqlite_master WHERE type = 'table'"
        " AND name = '%q_residuals' COLLATE NOCASE", schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
    sqlite3_free(sql)
    if rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        has[0] = rc == SQLITE_ROW
        rc = SQLITE_OK if rc == SQLITE_ROW or rc == SQLITE_DONE else rc
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
    sqlite3_finalize(stmt)
    return rc
