# Scalar SQL functions.
#
#   SELECT tensor_version();                                  -- '0.1.0'
#   SELECT tensor_blob('tensors', 'base', 'fc1.weight');      -- the tensor's raw bytes
#   SELECT tensor_blob('aux.tensors', 'base', 'fc1.weight');  -- a store in attached db aux
#
# They are registered from the one table in engine.pyx (st_engine_register_functions); tests
# compare the registered names with the documented list.

# ST_VERSION is in c/st_schema.h, declared in engine.pxd.


cdef int st_fn_text_args(sqlite3_context *ctx, const char *fname, int argc, sqlite3_value **argv,
                         const char **names, const char **out) noexcept nogil:
    """Read argc TEXT arguments into out; on a NULL or non-text one set an error naming it."""
    cdef int i
    cdef char *msg
    for i in range(argc):
        if sqlite3_value_type(argv[i]) != SQLITE_TEXT:
            msg = sqlite3_mprintf("%s: argument %d (%s) must be text, got %s", fname, i + 1,
                                  names[i], st_fn_value_type_name(sqlite3_value_type(argv[i])))
            sqlite3_result_error(ctx, msg, -1)
            sqlite3_free(msg)
            return 1
        out[i] = <const char *>sqlite3_value_text(argv[i])
        if out[i] != NULL and <int>strlen(out[i]) != sqlite3_value_bytes(argv[i]):
            # read as a C string, 'a' || char(0) || 'b' would silently name 'a'
            msg = sqlite3_mprintf("%s: argument %d (%s) contains a NUL character", fname, i + 1,
                                  names[i])
            sqlite3_result_error(ctx, msg, -1)
            sqlite3_free(msg)
            return 1
    return 0


cdef const char *st_fn_value_type_name(int t) noexcept nogil:
    if t == SQLITE_INTEGER:
        return "an integer"
    if t == SQLITE_FLOAT:
        return "a real"
    if t == SQLITE_BLOB:
        return "a blob"
    if t == SQLITE_NULL:
        return "NULL"
    return "text"


cdef void st_fn_tensor_blob(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_blob(store, model, tensor): the tensor's bytes, row-major, in its own dtype."""
    cdef const char *names[3]
    cdef const char *args[3]
    cdef TensorInfo info
    cdef char *err = NULL
    cdef char *msg
    names[0] = "store"
    names[1] = "model"
    names[2] = "tensor"
    if st_fn_text_args(ctx, "tensor_blob", 3, argv, names, args):
        return
    cdef sqlite3 *db = sqlite3_context_db_handle(ctx)
    cdef char *schema = NULL
    cdef char *store = NULL
    cdef sqlite3_stmt *snapshot = NULL   # the tensor's row and its pages: one snapshot
    cdef int rc = st_sql_split_store_name(db, args[0], &schema, &store, &err)
    if rc == SQLITE_OK:
        rc = snapshot_hold(db, schema, &snapshot, &err)
    if rc == SQLITE_OK:
        rc = st_page_lookup_tensor(db, schema, store, args[1], args[2], &info, &err)
    if rc == SQLITE_OK:
        rc = st_sql_check_result_bytes(db, "the tensor", info.nbytes, 1, &err)
    if rc != SQLITE_OK:
        snapshot_release(&snapshot)
        sqlite3_free(schema)
        sqlite3_free(store)
        if rc == SQLITE_NOMEM and err == NULL:
            sqlite3_result_error_nomem(ctx)
            return
        msg = sqlite3_mprintf("tensor_blob: %s", err)
        sqlite3_result_error(ctx, msg, -1)
        if rc != SQLITE_ERROR:  # CORRUPT as a damaged page's; BUSY, IOERR, NOMEM their own
            sqlite3_result_error_code(ctx, rc)
        sqlite3_free(msg)
        sqlite3_free(err)
        return
    result_tensor_blob(ctx, db, schema, store, &info)
    snapshot_release(&snapshot)
    sqlite3_free(schema)
    sqlite3_free(store)


cdef void st_fn_tensor_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_version(): the engine's version string."""
    sqlite3_result_text(ctx, ST_VERSION, -1, SQLITE_STATIC)
