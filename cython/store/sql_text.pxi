# SQL text for a store's shadow tables.
#
# Every statement the engine runs against a store is written once, as a template in which
# {part} stands for the shadow table "<schema>"."<store>_<part>" and {.part} for the same
# name unqualified (CREATE INDEX ... ON wants that). Quoting is done here, once, with %w,
# so a store may have any name.

# The shadow-table parts (st_shadow_parts) are data in c/st_schema.h, declared in engine.pxd.


cdef inline const char *st_sql_text_or(const char *text, const char *fallback) noexcept nogil:
    """text, or fallback where it is NULL (Cython makes `a if c else "..."` a Python object)."""
    return text if text != NULL else fallback


cdef char *st_sql_expand(sqlite3 *db, const char *tmpl, const char *schema,
                         const char *store) noexcept nogil:
    """Return tmpl with every {part} / {.part} expanded, from sqlite3_malloc; NULL on OOM.
    (Not bounded by the connection's length limit, which is for values: our own SQL must
    run under any limit a caller sets.)"""
    cdef sqlite3_str *out = sqlite3_str_new(NULL)
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


cdef int st_sql_is_shadow_part(const char *suffix) noexcept nogil:
    cdef int i = 0
    while st_shadow_parts[i] != NULL:
        if sqlite3_stricmp(suffix, st_shadow_parts[i]) == 0:
            return 1
        i += 1
    return 0


cdef int st_sql_prepare(sqlite3 *db, const char *tmpl, const char *schema,
                        const char *store, sqlite3_stmt **stmt) noexcept nogil:
    """Expand tmpl for the store and prepare it; an SQLite result code."""
    cdef char *sql = st_sql_expand(db, tmpl, schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_prepare_v2(db, sql, -1, stmt, NULL)
    sqlite3_free(sql)
    return rc


cdef int st_sql_exec(sqlite3 *db, const char *tmpl, const char *schema,
                     const char *store, char **err) noexcept nogil:
    """Expand tmpl (one or more statements) for the store and run it."""
    cdef char *sql = st_sql_expand(db, tmpl, schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_exec(db, sql, NULL, NULL, err)
    sqlite3_free(sql)
    return rc


cdef int st_sql_store_tables(sqlite3 *db, const char *schema, const char *store,
                             int *has, char **err) noexcept nogil:
    """Set has to which of the later shadow tables the store has (ST_HAS_* bits): stores
    created before <store>_residuals or <store>_factors existed lack them (Python's Store
    adds them when it opens a writable store); for every reader a missing table means
    "none", never an error.

    Asked of sqlite_master once per view of the connection (c/st_memo.h): the answer is
    kept with the connection's view epoch (st_pool_connection_view, cache/process_pool.pxi), which
    moves on whenever another connection commits or this one writes, so a table another
    writer adds later is seen on the next read."""
    cdef uint64_t epoch = st_pool_connection_view(db, schema)
    if st_memo_get(db, epoch, schema, store, has):
        return SQLITE_OK
    cdef sqlite3_stmt *stmt = NULL
    # AS has: an unnamed result column is named by its text, and a low SQLITE_LIMIT_LENGTH
    # refuses a name this long (SQLITE_TOOBIG)
    cdef char *sql = sqlite3_mprintf(
        "SELECT EXISTS (SELECT 1 FROM \"%w\".sqlite_master WHERE type = 'table'"
        " AND name = '%q_residuals' COLLATE NOCASE) | (EXISTS (SELECT 1 FROM"
        " \"%w\".sqlite_master WHERE type = 'table' AND name = '%q_factors' COLLATE NOCASE)"
        " << 1) AS has", schema, store, schema, store)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
    sqlite3_free(sql)
    if rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        has[0] = <int>sqlite3_column_int64(stmt, 0) if rc == SQLITE_ROW else 0
        rc = SQLITE_OK if rc == SQLITE_ROW else rc
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
    else:
        st_memo_put(db, epoch, schema, store, has[0])
    sqlite3_finalize(stmt)
    return rc


cdef int st_sql_has_residuals(sqlite3 *db, const char *schema, const char *store,
                              int *has, char **err) noexcept nogil:
    """Set has to whether the store has a <store>_residuals table (st_sql_store_tables)."""
    cdef int rc = st_sql_store_tables(db, schema, store, has, err)
    has[0] = 1 if has[0] & ST_HAS_RESIDUALS else 0
    return rc


cdef int st_sql_has_factors(sqlite3 *db, const char *schema, const char *store,
                            int *has, char **err) noexcept nogil:
    """Set has to whether the store has a <store>_factors table (st_sql_store_tables)."""
    cdef int rc = st_sql_store_tables(db, schema, store, has, err)
    has[0] = 1 if has[0] & ST_HAS_FACTORS else 0
    return rc


# -- Guards every SQL entry point shares ---------------------------------------------------
#
# User-given SQL (tensor_predict_batch's query) is run only as exactly one read-only
# statement, and nesting through it is bounded; results and the buffers behind them stay
# within SQLite's length limit; long loops poll sqlite3_interrupt.

cdef int st_sql_interrupted(sqlite3 *db, char **err) noexcept nogil:
    """SQLITE_INTERRUPT (err set) when sqlite3_interrupt was called on db; else SQLITE_OK."""
    if db != NULL and st_interrupted(st_api_get(), db):
        err[0] = sqlite3_mprintf("interrupted")
        return SQLITE_INTERRUPT
    return SQLITE_OK


cdef sqlite3_int64 st_sql_length_limit(sqlite3 *db) noexcept nogil:
    """SQLite's limit on a string or BLOB on this connection (SQLITE_LIMIT_LENGTH)."""
    return sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1)


cdef int st_sql_check_result_bytes(sqlite3 *db, const char *what, sqlite3_int64 count,
                                   sqlite3_int64 item, char **err) noexcept nogil:
    """count items of item bytes must fit SQLite's length limit (overflow included):
    SQLITE_TOOBIG naming value and limit otherwise. Checked before allocating."""
    cdef sqlite3_int64 limit = st_sql_length_limit(db)
    if count < 0 or item <= 0 or count > limit // item:
        err[0] = sqlite3_mprintf("%s would be %lld x %lld bytes, over SQLite's length limit of "
                                 "%lld bytes", what, count, item, limit)
        return SQLITE_TOOBIG
    return SQLITE_OK


cdef int st_sql_utf8_prefix(const char *s, int most) noexcept nogil:
    """Bytes of s to quote in a message: at most `most`, never ending inside a UTF-8
    character (a cut one would make the whole message invalid text)."""
    cdef int n = 0
    while n < most and s[n] != 0:
        n += 1
    if s[n] != 0:   # cut: step back over continuation bytes to a character's start
        while n > 0 and (<unsigned char>s[n] & 0xC0) == 0x80:
            n -= 1
    return n


cdef const char *st_sql_skip_space(const char *p) noexcept nogil:
    """Past whitespace, ';' and comments (-- to end of line, /* */; an unclosed /* runs to
    the end, as in SQLite's tokenizer)."""
    while True:
        if p[0] == b' ' or p[0] == b'\t' or p[0] == b'\n' or p[0] == b'\r' or p[0] == b'\f' \
                or p[0] == b';':
            p += 1
        elif p[0] == b'-' and p[1] == b'-':
            while p[0] != 0 and p[0] != b'\n':
                p += 1
        elif p[0] == b'/' and p[1] == b'*':
            p += 2
            while p[0] != 0 and not (p[0] == b'*' and p[1] == b'/'):
                p += 1
            if p[0] != 0:
                p += 2
        else:
            return p


cdef int st_sql_prepare_user_query(sqlite3 *db, const char *fname, const char *sql,
                                   sqlite3_stmt **stmt, char **err) noexcept nogil:
    """Prepare SQL a caller gave us: exactly one statement (only whitespace, ';' and
    comments may follow) that sqlite3_stmt_readonly says writes nothing."""
    cdef const char *tail = NULL
    cdef const char *rest
    stmt[0] = NULL
    cdef int rc = sqlite3_prepare_v2(db, sql, -1, stmt, &tail)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("the query failed: %s", sqlite3_errmsg(db))
        return rc
    if stmt[0] == NULL:
        err[0] = sqlite3_mprintf("the query is empty; give one SELECT statement")
        return SQLITE_ERROR
    rest = st_sql_skip_space(tail)
    if rest[0] != 0:
        err[0] = sqlite3_mprintf("the query must be exactly one statement; extra text after "
                                 "it: '%.*s'", st_sql_utf8_prefix(rest, 40), rest)
        rc = SQLITE_ERROR
    elif not sqlite3_stmt_readonly(stmt[0]):
        err[0] = sqlite3_mprintf("the query must only read (a SELECT); this one writes: '%.*s'",
                                 st_sql_utf8_prefix(sql, 60), sql)
        rc = SQLITE_ERROR
    if rc != SQLITE_OK:
        sqlite3_finalize(stmt[0])
        stmt[0] = NULL
    return rc


cdef int st_sql_split_store_name(sqlite3 *db, const char *arg, char **schema, char **store,
                                 char **err) noexcept nogil:
    """The database and the store a function's store argument names: 'name' is a store
    in main; 'db.name' the store 'name' in attached database db, unless main has a store
    whose own name is 'db.name' or no database db is attached (then the whole text names
    a store in main, and a missing one is reported under that name). schema and store
    are from sqlite3_mprintf."""
    cdef const char *dot = arg
    cdef sqlite3_stmt *stmt = NULL
    cdef int split = 0
    cdef char *sql
    schema[0] = NULL
    store[0] = NULL
    while dot[0] != 0 and dot[0] != b'.':
        dot += 1
    if dot[0] == b'.' and dot != arg and dot[1] != 0:
        schema[0] = sqlite3_mprintf("%.*s", <int>(dot - arg), arg)
        sql = sqlite3_mprintf("SELECT 1 FROM main.sqlite_master WHERE type = 'table'"
                              " AND name = '%q_config'", arg)
        if schema[0] == NULL or sql == NULL:
            sqlite3_free(schema[0])
            sqlite3_free(sql)
            schema[0] = NULL
            return SQLITE_NOMEM
        split = sqlite3_db_filename(db, schema[0]) != NULL
        if split and sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK:
            split = sqlite3_step(stmt) != SQLITE_ROW
        sqlite3_finalize(stmt)
        sqlite3_free(sql)
        if not split:
            sqlite3_free(schema[0])
            schema[0] = NULL
    if split:
        store[0] = sqlite3_mprintf("%s", dot + 1)
    else:
        schema[0] = sqlite3_mprintf("main")
        store[0] = sqlite3_mprintf("%s", arg)
    if schema[0] == NULL or store[0] == NULL:
        sqlite3_free(schema[0])
        sqlite3_free(store[0])
        schema[0] = NULL
        store[0] = NULL
        return SQLITE_NOMEM
    return SQLITE_OK
