# The tensor_store virtual table: a store of deduplicated tensors.
#
#   .load ./sqlite_tensor/libsqlite_tensor
#   CREATE VIRTUAL TABLE tensors USING tensor_store(block_rows=256, block_cols=256, page_blocks=8);
#   SELECT model, tensor, shape, dtype FROM tensors WHERE model = 'base';
#   SELECT data FROM tensors WHERE model = 'base' AND tensor = 'fc1.weight';   -- raw bytes
#
# Declared schema (one row per tensor; rowid is the tensor id):
#   CREATE TABLE x(model TEXT, tensor TEXT, shape TEXT, dtype TEXT, nbytes INTEGER,
#                  data BLOB HIDDEN)
#
# Options (all optional, fixed when the store is created):
#   block_rows, block_cols   block shape every tensor's 2-D view is cut into
#   page_blocks              blocks one page BLOB holds
#
# How it works: the rows come from SQL over the shadow tables <store>_models and
# <store>_tensors; `data` assembles the tensor from its blocks (page_reader.pxi). Writes go
# through the Python API (sqlite_tensor.Store), which fills the shadow tables; the table
# itself is read-only. The shadow tables are listed in sql_text.pxi (st_shadow_parts).
# <store>_residuals and <store>_dedup came later: stores created before them lack
# both, and every reader treats a missing residuals table as "no residuals"
# (store_has_residuals in sql_text.pxi).
#
# ALTER TABLE <store> RENAME TO <new> renames every shadow table and index with it
# (xRename). The table only reads, so it is SQLITE_VTAB_INNOCUOUS: views over a store
# work with trusted_schema off too. A store may live in an attached database
# (CREATE VIRTUAL TABLE aux.t USING tensor_store); functions and report tables name it
# 'aux.t' (split_store_name in sql_text.pxi).

cdef extern from *:
    """
    /* Defaults chosen by measurement; see docs/benchmarks.md. */
    #define ST_DEFAULT_BLOCK_ROWS 256
    #define ST_DEFAULT_BLOCK_COLS 256
    #define ST_DEFAULT_PAGE_BLOCKS 4
    #define ST_MAX_BLOCK_DIM 65536
    #define ST_MAX_PAGE_BYTES (512LL * 1024 * 1024)   /* worst case: 8-byte items */
    #define ST_FORMAT_VERSION 1
    """
    enum:
        ST_DEFAULT_BLOCK_ROWS
        ST_DEFAULT_BLOCK_COLS
        ST_DEFAULT_PAGE_BLOCKS
        ST_MAX_BLOCK_DIM
        ST_FORMAT_VERSION
    long long ST_MAX_PAGE_BYTES

cdef enum:
    STORE_COL_MODEL = 0
    STORE_COL_TENSOR = 1
    STORE_COL_DATA = 5
    # idxNum bits of xBestIndex, and the order of xFilter's argv:
    IDX_MODEL = 1       # argv[0] is the model name (model = ?)
    IDX_TENSOR = 2      # next argv is the tensor name (tensor = ?)

ctypedef struct StoreVtab:
    sqlite3_vtab base         # must be first
    sqlite3 *db
    char *schema              # database the store lives in
    char *name                # the store's name
    sqlite3_int64 block_rows  # block shape, read from <store>_config
    sqlite3_int64 block_cols






cdef int parse_option(const char *arg, const char **key, int *keylen,
                      sqlite3_int64 *value) noexcept nogil:
    """Split 'key = 123' into key and value; 0 if it has that form, 1 otherwise."""
    cdef const char *p = arg
    cdef const char *end
    while p[0] == b' ':
        p += 1
    key[0] = p
    while p[0] != 0 and p[0] != b'=' and p[0] != b' ':
        p += 1
    keylen[0] = <int>(p - key[0])
    while p[0] == b' ':
        p += 1
    if p[0] != b'=' or keylen[0] == 0:
        return 1
    p += 1
    value[0] = strtoll(p, <char **>&end, 10)
    if end == p:
        return 1
    while end[0] == b' ':
        end += 1
    return 0 if end[0] == 0 else 1


cdef int store_create(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **out, char **err) noexcept nogil:
    """CREATE VIRTUAL TABLE: check options, create the shadow tables, then connect."""
    cdef sqlite3_int64 opts[3]
    cdef const char *names[3]
    cdef sqlite3_int64 limits[3]
    cdef const char *key
    cdef int keylen, i, j, rc
    cdef int given = 0        # bit j: option j was given
    cdef sqlite3_int64 value
    cdef sqlite3_stmt *stmt = NULL
    cdef const char *ddl = (
        "CREATE TABLE {config}(key TEXT PRIMARY KEY, value NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE {models}(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, layers TEXT,"
        " created TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')));"
        "CREATE TABLE {tensors}(id INTEGER PRIMARY KEY, model_id INTEGER NOT NULL, name TEXT NOT NULL,"
        " shape TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL, cols INTEGER NOT NULL,"
        " nbytes INTEGER NOT NULL, UNIQUE(model_id, name));"
        "CREATE TABLE {pages}(id INTEGER PRIMARY KEY, nblocks INTEGER NOT NULL,"
        " nbytes INTEGER NOT NULL, data BLOB NOT NULL);"
        "CREATE TABLE {blocks}(id INTEGER PRIMARY KEY, hash BLOB NOT NULL, nbytes INTEGER NOT NULL,"
        " page_id INTEGER NOT NULL, slot INTEGER NOT NULL, refcount INTEGER NOT NULL);"
        "CREATE INDEX {blocks_by_hash} ON {.blocks}(hash);"
        "CREATE INDEX {blocks_by_page} ON {.blocks}(page_id, slot);"
        "CREATE TABLE {map}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
        " block_col INTEGER NOT NULL, block_id INTEGER NOT NULL,"
        " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
        "CREATE INDEX {map_by_block} ON {.map}(block_id);"
        "CREATE TABLE {residuals}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
        " block_col INTEGER NOT NULL, kind INTEGER NOT NULL, param INTEGER NOT NULL,"
        " page_id INTEGER NOT NULL, slot INTEGER NOT NULL, nbytes INTEGER NOT NULL,"
        " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
        "CREATE INDEX {residuals_by_page} ON {.residuals}(page_id, slot);"
        "CREATE TABLE {dedup}(tensor_id INTEGER NOT NULL, block_row INTEGER NOT NULL,"
        " block_col INTEGER NOT NULL, source_hash BLOB NOT NULL, outcome INTEGER NOT NULL,"
        " PRIMARY KEY(tensor_id, block_row, block_col)) WITHOUT ROWID;"
    )
    names[0] = "block_rows"; opts[0] = ST_DEFAULT_BLOCK_ROWS; limits[0] = ST_MAX_BLOCK_DIM
    names[1] = "block_cols"; opts[1] = ST_DEFAULT_BLOCK_COLS; limits[1] = ST_MAX_BLOCK_DIM
    names[2] = "page_blocks"; opts[2] = ST_DEFAULT_PAGE_BLOCKS; limits[2] = 65536
    for i in range(3, argc):
        if parse_option(argv[i], &key, &keylen, &value) != 0:
            err[0] = sqlite3_mprintf("tensor_store: option '%s' is not of the form name=integer",
                                     argv[i])
            return SQLITE_ERROR
        j = 0
        while j < 3 and not (strlen(names[j]) == <size_t>keylen and strncmp(names[j], key, keylen) == 0):
            j += 1
        if j == 3:
            err[0] = sqlite3_mprintf("tensor_store: unknown option '%.*s'; options are block_rows, "
                                     "block_cols, page_blocks", keylen, key)
            return SQLITE_ERROR
        if given & (1 << j):  # a repeated option would silently override the first
            err[0] = sqlite3_mprintf("tensor_store: option %s is given twice", names[j])
            return SQLITE_ERROR
        given |= 1 << j
        if value < 1 or value > limits[j]:
            err[0] = sqlite3_mprintf("tensor_store: %s must be from 1 to %lld, got %lld",
                                     names[j], limits[j], value)
            return SQLITE_ERROR
        opts[j] = value
    if opts[0] * opts[1] * opts[2] * 8 > ST_MAX_PAGE_BYTES:
        err[0] = sqlite3_mprintf("tensor_store: a page of %lld blocks of %lld x %lld could reach "
                                 "%lld bytes, over the maximum %lld", opts[2], opts[0], opts[1],
                                 opts[0] * opts[1] * opts[2] * 8, ST_MAX_PAGE_BYTES)
        return SQLITE_ERROR
    rc = exec_store_sql(db, ddl, argv[1], argv[2], err)
    if rc == SQLITE_OK:
        rc = prepare_store_sql(db, "INSERT INTO {config}(key, value) VALUES ('format_version', ?1),"
                               " ('block_rows', ?2), ('block_cols', ?3), ('page_blocks', ?4),"
                               " ('uid', random()), ('generation', random())",
                               argv[1], argv[2], &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_int64(stmt, 1, ST_FORMAT_VERSION)
        for i in range(3):
            sqlite3_bind_int64(stmt, i + 2, opts[i])
        rc = sqlite3_step(stmt)
        rc = SQLITE_OK if rc == SQLITE_DONE else rc
    sqlite3_finalize(stmt)
    if rc != SQLITE_OK:
        if err[0] == NULL:
            err[0] = sqlite3_mprintf("tensor_store: %s", sqlite3_errmsg(db))
        return rc
    return store_connect(db, aux, argc, argv, out, err)


cdef int store_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                       sqlite3_vtab **out, char **err) noexcept nogil:
    """Attach to an existing store; its config must be readable and of a known version."""
    cdef StoreVtab *v
    cdef sqlite3_int64 block_rows, block_cols
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 version = -1
    cdef int rc = read_store_config(db, argv[1], argv[2], &block_rows, &block_cols, err)
    if rc != SQLITE_OK:
        return rc
    if prepare_store_sql(db, "SELECT value FROM {config} WHERE key = 'format_version'",
                         argv[1], argv[2], &stmt) == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        version = sqlite3_column_int64(stmt, 0)
    sqlite3_finalize(stmt)
    if version != ST_FORMAT_VERSION:
        err[0] = sqlite3_mprintf("tensor_store: store '%s' has format version %lld; this "
                                 "sqlite-tensor reads version %d", argv[2], version,
                                 <int>ST_FORMAT_VERSION)
        return SQLITE_ERROR
    rc = sqlite3_declare_vtab(db, "CREATE TABLE x(model TEXT, tensor TEXT, shape TEXT, dtype TEXT, nbytes INTEGER,"
        " data BLOB HIDDEN)")
    if rc != SQLITE_OK:
        return rc
    v = <StoreVtab *>sqlite3_malloc64(sizeof(StoreVtab))
    if v == NULL:
        return SQLITE_NOMEM
    memset(v, 0, sizeof(StoreVtab))
    v.db = db
    v.schema = sqlite3_mprintf("%s", argv[1])
    v.name = sqlite3_mprintf("%s", argv[2])
    v.block_rows = block_rows
    v.block_cols = block_cols
    sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS)   # read-only: no side effects
    out[0] = &v.base
    if v.schema == NULL or v.name == NULL:
        store_disconnect(&v.base)
        return SQLITE_NOMEM
    return SQLITE_OK


cdef int store_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    cdef StoreVtab *v = <StoreVtab *>vtab
    sqlite3_free(v.schema)
    sqlite3_free(v.name)
    sqlite3_free(v)
    return SQLITE_OK


cdef int store_destroy(sqlite3_vtab *vtab) noexcept nogil:
    """DROP TABLE: the shadow tables go with the store."""
    cdef StoreVtab *v = <StoreVtab *>vtab
    cdef char *err = NULL
    cdef const char *drop = (
        "DROP TABLE IF EXISTS {dedup}; DROP TABLE IF EXISTS {residuals};"
        "DROP TABLE IF EXISTS {map}; DROP TABLE IF EXISTS {blocks}; DROP TABLE IF EXISTS {pages};"
        "DROP TABLE IF EXISTS {tensors}; DROP TABLE IF EXISTS {models}; DROP TABLE IF EXISTS {config};"
    )
    cdef int rc = exec_store_sql(v.db, drop, v.schema, v.name, &err)
    if rc != SQLITE_OK:
        set_vtab_error(vtab, err)
        return rc
    return store_disconnect(vtab)


cdef int store_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    """Use model = ? and tensor = ? (see IDX_MODEL / IDX_TENSOR); anything else is a scan."""
    cdef int i, model_c = -1, tensor_c = -1, argv_i = 0
    for i in range(info.nConstraint):
        if not info.aConstraint[i].usable or info.aConstraint[i].op != SQLITE_INDEX_CONSTRAINT_EQ:
            continue
        if info.aConstraint[i].iColumn == STORE_COL_MODEL:
            model_c = i
        elif info.aConstraint[i].iColumn == STORE_COL_TENSOR:
            tensor_c = i
    info.idxNum = 0
    if model_c >= 0:
        info.idxNum |= IDX_MODEL
        argv_i += 1
        info.aConstraintUsage[model_c].argvIndex = argv_i
        info.aConstraintUsage[model_c].omit = 1
    if tensor_c >= 0:
        info.idxNum |= IDX_TENSOR
        argv_i += 1
        info.aConstraintUsage[tensor_c].argvIndex = argv_i
        info.aConstraintUsage[tensor_c].omit = 1
    if model_c >= 0 and tensor_c >= 0:
        info.estimatedCost = 1.0
        info.estimatedRows = 1
        info.idxFlags = SQLITE_INDEX_SCAN_UNIQUE
    elif model_c >= 0:
        info.estimatedCost = 20.0
        info.estimatedRows = 20
    elif tensor_c >= 0:
        info.estimatedCost = 200.0
        info.estimatedRows = 10
    else:
        info.estimatedCost = 1000.0
        info.estimatedRows = 1000
    return SQLITE_OK


cdef int store_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    return qc_open(vtab, out, sizeof(QueryCursor))


cdef int store_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
                      int argc, sqlite3_value **argv) noexcept nogil:
    cdef StoreVtab *v = <StoreVtab *>cur.pVtab
    cdef sqlite3_stmt *stmt = NULL
    cdef const char *where = ""       # the constraints of idx_num, bound in argv order
    if idx_num == IDX_MODEL | IDX_TENSOR:
        where = " WHERE m.name = ?1 AND t.name = ?2"
    elif idx_num == IDX_MODEL:
        where = " WHERE m.name = ?1"
    elif idx_num == IDX_TENSOR:
        where = " WHERE t.name = ?1"
    cdef char *sql = sqlite3_mprintf(
        "SELECT m.name, t.name, t.shape, t.dtype, t.nbytes, t.id FROM {tensors} t"
        " JOIN {models} m ON m.id = t.model_id%s ORDER BY t.id", where)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = prepare_store_sql(v.db, sql, v.schema, v.name, &stmt)
    sqlite3_free(sql)
    if rc != SQLITE_OK:
        set_vtab_error(cur.pVtab, sqlite3_mprintf("%s", sqlite3_errmsg(v.db)))
        return rc
    return qc_start(<QueryCursor *>cur, stmt, argc, argv)


cdef int store_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef StoreVtab *v = <StoreVtab *>cur.pVtab
    cdef QueryCursor *c = <QueryCursor *>cur
    cdef TensorInfo info
    cdef char *err = NULL
    if i != STORE_COL_DATA:
        return qc_column(cur, ctx, i)
    info.id = sqlite3_column_int64(c.stmt, 5)
    info.nbytes = sqlite3_column_int64(c.stmt, 4)
    info.block_rows = v.block_rows
    info.block_cols = v.block_cols
    cdef int rc = read_tensor_shape(v.db, v.schema, v.name, &info, &err)
    if rc == SQLITE_OK:
        rc = check_result_bytes(v.db, "the tensor", info.nbytes, 1, &err)
    if rc != SQLITE_OK:
        sqlite3_result_error(ctx, err, -1)
        if rc != SQLITE_ERROR:  # CORRUPT: same error class as a damaged page
            sqlite3_result_error_code(ctx, rc)
        sqlite3_free(err)
        return SQLITE_OK
    result_tensor_blob(ctx, v.db, v.schema, v.name, &info)
    return SQLITE_OK


cdef int read_tensor_shape(sqlite3 *db, const char *schema, const char *store, TensorInfo *info,
                           char **err) noexcept nogil:
    """Fill rows and cols of info (whose id is set) from <store>_tensors."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = prepare_store_sql(db, "SELECT rows, cols FROM {tensors} WHERE id = ?1",
                                    schema, store, &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_int64(stmt, 1, info.id)
        rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW:
        info.rows = sqlite3_column_int64(stmt, 0)
        info.cols = sqlite3_column_int64(stmt, 1)
        rc = SQLITE_OK
    else:
        err[0] = sqlite3_mprintf("tensor %lld of store '%s' vanished: %s", info.id, store,
                                 sqlite3_errmsg(db))
        rc = SQLITE_ERROR
    sqlite3_finalize(stmt)
    return check_tensor_info(store, info, err) if rc == SQLITE_OK else rc


cdef int store_shadow_name(const char *suffix) noexcept nogil:
    return is_shadow_part(suffix)


cdef sqlite3_module store_module


cdef void init_store_module() noexcept nogil:
    """Fill the module struct (runs in every host: no Python module init in the shell)."""
    store_module.iVersion = 3
    store_module.xCreate = store_create
    store_module.xConnect = store_connect
    store_module.xBestIndex = store_best_index
    store_module.xDisconnect = store_disconnect
    store_module.xDestroy = store_destroy
    store_module.xOpen = store_open
    store_module.xClose = qc_close
    store_module.xFilter = store_filter
    store_module.xNext = qc_next
    store_module.xEof = qc_eof
    store_module.xColumn = store_column
    store_module.xRowid = store_rowid
    store_module.xShadowName = store_shadow_name
    store_module.xRename = store_rename


cdef int store_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = sqlite3_column_int64((<QueryCursor *>cur).stmt, 5)
    return SQLITE_OK


cdef int store_rename(sqlite3_vtab *vtab, const char *new_name) noexcept nogil:
    """ALTER TABLE <store> RENAME TO <new_name>: rename every shadow table with it (a store
    made before residuals lacks some). Runs inside the ALTER's transaction: if anything
    fails, the whole ALTER is undone.

    The indexes keep their names ("<old>_blocks_by_hash", ...): SQLite cannot rename an
    index, and inside a running statement it cannot drop one either (SQLITE_LOCKED), so
    they cannot be rebuilt here. They serve the renamed tables all the same and go with
    them on DROP; while they exist, a new store cannot take the old name (SQLite says
    which index is in the way)."""
    cdef StoreVtab *v = <StoreVtab *>vtab
    cdef sqlite3_str *todo = sqlite3_str_new(NULL)
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql
    cdef char *err = NULL
    cdef char *copy
    cdef const char *name
    cdef int rc = SQLITE_OK
    cdef int old_len = <int>strlen(v.name)
    sql = sqlite3_mprintf("SELECT substr(name, %d) FROM \"%w\".sqlite_master WHERE type = 'table'"
                          " AND substr(name, 1, %d) = '%q_' COLLATE NOCASE", old_len + 2, v.schema,
                          old_len + 1, v.name)
    rc = SQLITE_NOMEM if sql == NULL else sqlite3_prepare_v2(v.db, sql, -1, &stmt, NULL)
    sqlite3_free(sql)
    while rc == SQLITE_OK and sqlite3_step(stmt) == SQLITE_ROW:
        name = <const char *>sqlite3_column_text(stmt, 0)
        if name != NULL and is_shadow_part(name):
            sqlite3_str_appendf(todo, "ALTER TABLE \"%w\".\"%w_%w\" RENAME TO \"%w_%w\";",
                                v.schema, v.name, name, new_name, name)
    sqlite3_finalize(stmt)
    copy = sqlite3_str_finish(todo)
    if rc == SQLITE_OK:
        rc = SQLITE_NOMEM if copy == NULL else sqlite3_exec(v.db, copy, NULL, NULL, &err)
    sqlite3_free(copy)
    if rc != SQLITE_OK:
        set_vtab_error(vtab, sqlite3_mprintf("tensor_store: cannot rename store '%s' to '%s': %s",
                                             v.name, new_name,
                                             text_or(err, sqlite3_errmsg(v.db))))
        sqlite3_free(err)
        return rc
    copy = sqlite3_mprintf("%s", new_name)
    if copy == NULL:
        return SQLITE_NOMEM
    sqlite3_free(v.name)
    v.name = copy
    return SQLITE_OK
