# The part of SQLite's C API the engine uses, declared for Cython.
#
# Every function here is a macro of sqlite3ext.h (see st_sqlite.h): calls go through the
# routines table of whichever SQLite loaded us. Only declarations live here.

from libc.stdint cimport int64_t, uint64_t

cdef extern from "st_sqlite.h" nogil:
    ctypedef long long sqlite3_int64
    ctypedef unsigned long long sqlite3_uint64
    ctypedef struct sqlite3
    ctypedef struct sqlite3_stmt
    ctypedef struct sqlite3_value
    ctypedef struct sqlite3_context
    ctypedef struct sqlite3_blob
    ctypedef struct sqlite3_str
    ctypedef struct sqlite3_api_routines

    const sqlite3_api_routines *st_api_get()
    const sqlite3_api_routines *st_api_claim(const sqlite3_api_routines *p)
    unsigned int st_get_u32(const unsigned char *p)
    uint64_t st_get_u64(const unsigned char *p)

    enum:
        SQLITE_OK
        SQLITE_ERROR
        SQLITE_NOMEM
        SQLITE_CONSTRAINT
        SQLITE_CORRUPT
        SQLITE_ROW
        SQLITE_DONE
        SQLITE_MISUSE
        SQLITE_INTEGER
        SQLITE_FLOAT
        SQLITE_TEXT
        SQLITE_BLOB
        SQLITE_NULL
        SQLITE_UTF8
        SQLITE_DETERMINISTIC
        SQLITE_DIRECTONLY
        SQLITE_INNOCUOUS
        SQLITE_INDEX_CONSTRAINT_EQ
        SQLITE_INDEX_SCAN_UNIQUE
        SQLITE_VTAB_INNOCUOUS
        SQLITE_VTAB_DIRECTONLY
        # used by the SQL-surface guards (sql_text.pxi)
        SQLITE_TOOBIG
        SQLITE_INTERRUPT
        SQLITE_LIMIT_LENGTH
        # used by the pool's freshness test (cache/process_pool.pxi)
        SQLITE_FCNTL_DATA_VERSION
        SQLITE_STMTSTATUS_REPREPARE
        SQLITE_STMTSTATUS_RUN

    ctypedef void (*sqlite3_destructor_type)(void *)
    sqlite3_destructor_type SQLITE_TRANSIENT
    sqlite3_destructor_type SQLITE_STATIC

    # --- virtual tables -------------------------------------------------------------
    ctypedef struct sqlite3_vtab:
        const void *pModule
        int nRef
        char *zErrMsg

    ctypedef struct sqlite3_vtab_cursor:
        sqlite3_vtab *pVtab

    struct sqlite3_index_constraint:
        int iColumn
        unsigned char op
        unsigned char usable

    struct sqlite3_index_orderby:
        int iColumn
        unsigned char desc

    struct sqlite3_index_constraint_usage:
        int argvIndex
        unsigned char omit

    ctypedef struct sqlite3_index_info:
        int nConstraint
        sqlite3_index_constraint *aConstraint
        int nOrderBy
        sqlite3_index_orderby *aOrderBy
        sqlite3_index_constraint_usage *aConstraintUsage
        int idxNum
        char *idxStr
        int needToFreeIdxStr
        int orderByConsumed
        double estimatedCost
        sqlite3_int64 estimatedRows
        int idxFlags

    ctypedef struct sqlite3_module:
        int iVersion
        int (*xCreate)(sqlite3 *, void *, int, const char *const *, sqlite3_vtab **,
                       char **) noexcept nogil
        int (*xConnect)(sqlite3 *, void *, int, const char *const *, sqlite3_vtab **,
                        char **) noexcept nogil
        int (*xBestIndex)(sqlite3_vtab *, sqlite3_index_info *) noexcept nogil
        int (*xDisconnect)(sqlite3_vtab *) noexcept nogil
        int (*xDestroy)(sqlite3_vtab *) noexcept nogil
        int (*xOpen)(sqlite3_vtab *, sqlite3_vtab_cursor **) noexcept nogil
        int (*xClose)(sqlite3_vtab_cursor *) noexcept nogil
        int (*xFilter)(sqlite3_vtab_cursor *, int, const char *, int,
                       sqlite3_value **) noexcept nogil
        int (*xNext)(sqlite3_vtab_cursor *) noexcept nogil
        int (*xEof)(sqlite3_vtab_cursor *) noexcept nogil
        int (*xColumn)(sqlite3_vtab_cursor *, sqlite3_context *, int) noexcept nogil
        int (*xRowid)(sqlite3_vtab_cursor *, sqlite3_int64 *) noexcept nogil
        int (*xShadowName)(const char *) noexcept nogil
        int (*xRename)(sqlite3_vtab *, const char *) noexcept nogil

    int sqlite3_create_module_v2(sqlite3 *, const char *, const sqlite3_module *, void *,
                                 void (*)(void *) noexcept nogil)
    int sqlite3_declare_vtab(sqlite3 *, const char *)
    int sqlite3_vtab_config(sqlite3 *, int, ...)

    # --- statements ---------------------------------------------------------------------
    int sqlite3_prepare_v2(sqlite3 *, const char *, int, sqlite3_stmt **, const char **)
    int sqlite3_step(sqlite3_stmt *)
    int sqlite3_reset(sqlite3_stmt *)
    int sqlite3_clear_bindings(sqlite3_stmt *)
    int sqlite3_stmt_status(sqlite3_stmt *, int, int)
    int sqlite3_finalize(sqlite3_stmt *)
    int sqlite3_exec(sqlite3 *, const char *, void *, void *, char **)
    int sqlite3_bind_text(sqlite3_stmt *, int, const char *, int, sqlite3_destructor_type)
    int sqlite3_bind_int64(sqlite3_stmt *, int, sqlite3_int64)
    int sqlite3_bind_value(sqlite3_stmt *, int, const sqlite3_value *)
    int sqlite3_column_count(sqlite3_stmt *)
    int sqlite3_stmt_readonly(sqlite3_stmt *)
    int sqlite3_limit(sqlite3 *, int, int)
    int sqlite3_libversion_number()
    int sqlite3_file_control(sqlite3 *, const char *, int, void *)
    int sqlite3_total_changes(sqlite3 *)
    int sqlite3_txn_state(sqlite3 *, const char *)   # SQLite 3.34+: check the version first
    sqlite3_int64 sqlite3_column_int64(sqlite3_stmt *, int)
    const unsigned char *sqlite3_column_text(sqlite3_stmt *, int)
    int sqlite3_column_type(sqlite3_stmt *, int)
    const void *sqlite3_column_blob(sqlite3_stmt *, int)
    sqlite3_value *sqlite3_column_value(sqlite3_stmt *, int)
    const char *sqlite3_errmsg(sqlite3 *)
    int sqlite3_get_autocommit(sqlite3 *)
    sqlite3 *sqlite3_context_db_handle(sqlite3_context *)
    sqlite3 *sqlite3_db_handle(sqlite3_stmt *)

    # --- values and results -----------------------------------------------------------
    int sqlite3_value_type(sqlite3_value *)
    const unsigned char *sqlite3_value_text(sqlite3_value *)
    sqlite3_int64 sqlite3_value_int64(sqlite3_value *)
    int sqlite3_value_bytes(sqlite3_value *)
    const void *sqlite3_value_blob(sqlite3_value *)
    double sqlite3_value_double(sqlite3_value *)
    sqlite3_value *sqlite3_value_dup(const sqlite3_value *)
    void sqlite3_value_free(sqlite3_value *)
    void *sqlite3_get_auxdata(sqlite3_context *, int)
    void sqlite3_set_auxdata(sqlite3_context *, int, void *, void (*)(void *) noexcept nogil)
    void sqlite3_result_double(sqlite3_context *, double)
    void *sqlite3_user_data(sqlite3_context *)
    void sqlite3_result_blob64(sqlite3_context *, const void *, sqlite3_uint64,
                               sqlite3_destructor_type)
    void sqlite3_result_text(sqlite3_context *, const char *, int, sqlite3_destructor_type)
    const char *sqlite3_db_filename(sqlite3 *, const char *)
    void sqlite3_result_int64(sqlite3_context *, sqlite3_int64)
    void sqlite3_result_value(sqlite3_context *, sqlite3_value *)
    void sqlite3_result_null(sqlite3_context *)
    void sqlite3_result_error(sqlite3_context *, const char *, int)
    void sqlite3_result_error_code(sqlite3_context *, int)
    void sqlite3_result_error_nomem(sqlite3_context *)
    int sqlite3_create_function_v2(sqlite3 *, const char *, int, int, void *,
                                   void (*)(sqlite3_context *, int,
                                            sqlite3_value **) noexcept nogil,
                                   void *, void *, void (*)(void *) noexcept nogil)

    # --- BLOB I/O -----------------------------------------------------------------------
    int sqlite3_blob_open(sqlite3 *, const char *, const char *, const char *, sqlite3_int64,
                          int, sqlite3_blob **)
    int sqlite3_blob_reopen(sqlite3_blob *, sqlite3_int64)
    int sqlite3_blob_read(sqlite3_blob *, void *, int, int)
    int sqlite3_blob_bytes(sqlite3_blob *)
    int sqlite3_blob_close(sqlite3_blob *)

    # --- memory and strings -------------------------------------------------------------
    void *sqlite3_malloc64(sqlite3_uint64)
    void *sqlite3_realloc64(void *, sqlite3_uint64)
    int sqlite3_bind_blob64(sqlite3_stmt *, int, const void *, sqlite3_uint64,
                            sqlite3_destructor_type)
    void sqlite3_free(void *)
    char *sqlite3_mprintf(const char *, ...)
    int sqlite3_stricmp(const char *, const char *)
    sqlite3_str *sqlite3_str_new(sqlite3 *)
    void sqlite3_str_append(sqlite3_str *, const char *, int)
    void sqlite3_str_appendf(sqlite3_str *, const char *, ...)
    char *sqlite3_str_finish(sqlite3_str *)
    int sqlite3_str_errcode(sqlite3_str *)
