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
# <store>_residuals, <store>_dedup and <store>_factors came later: stores created before
# them lack them, and every reader treats a missing residuals or factors table as "none"
# (st_sql_has_residuals, st_sql_has_factors in sql_text.pxi).
#
# ALTER TABLE <store> RENAME TO <new> renames every shadow table and index with it
# (xRename). The table only reads, so it is SQLITE_VTAB_INNOCUOUS: views over a store
# work with trusted_schema off too. A store may live in an attached database
# (CREATE VIRTUAL TABLE aux.t USING tensor_store); functions and report tables name it
# 'aux.t' (st_sql_split_store_name in sql_text.pxi).

# The defaults, limits and the DDL of every shadow table (st_store_ddl) are data in
# c/st_schema.h, declared in engine.pxd.

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


cdef int st_vtab_parse_option(const char *arg, const char **key, int *keylen,
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


cdef int st_vtab_create(sqlite3 *db, void *aux, int argc, const char *const *argv,
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
    names[0] = "block_rows"
    opts[0] = ST_DEFAULT_BLOCK_ROWS
    limits[0] = ST_MAX_BLOCK_DIM
    names[1] = "block_cols"
    opts[1] = ST_DEFAULT_BLOCK_COLS
    limits[1] = ST_MAX_BLOCK_DIM
    names[2] = "page_blocks"
    opts[2] = ST_DEFAULT_PAGE_BLOCKS
    limits[2] = 65536
    for i in range(3, argc):
        if st_vtab_parse_option(argv[i], &key, &keylen, &value) != 0:
            err[0] = sqlite3_mprintf("tensor_store: option '%s' is not of the form name=integer",
                                     argv[i])
            return SQLITE_ERROR
        j = 0
        while j < 3 and not (strlen(names[j]) == <size_t>keylen and strncmp(names[j], key,
                                                                            keylen) == 0):
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
    cdef char *taken = NULL
    rc = st_vtab_objects_exist(db, argv[1], argv[2], &i, err, &taken)
    if rc == SQLITE_OK and i > 0:
        # a table of that name is already there (left over, or planted): never adopt it
        err[0] = sqlite3_mprintf("tensor_store: cannot create store '%s': table \"%s\" already "
                                 "exists (%d of its shadow tables and indexes do)", argv[2],
                                 st_sql_text_or(taken, "?"), i)
        sqlite3_free(taken)
        return SQLITE_ERROR
    sqlite3_free(taken)
    if rc == SQLITE_OK:
        rc = st_sql_exec(db, st_store_ddl, argv[1], argv[2], err)
    if rc == SQLITE_OK:
        rc = st_sql_prepare(db, "INSERT INTO {config}(key, value) VALUES ('format_version', ?1),"
                            " ('block_rows', ?2), ('block_cols', ?3), ('page_blocks', ?4),"
                            " ('uid', random())",
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
    return st_vtab_connect(db, aux, argc, argv, out, err)


cdef int st_vtab_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                         sqlite3_vtab **out, char **err) noexcept nogil:
    """Attach to an existing store; its config must be readable and of a known version."""
    cdef StoreVtab *v
    cdef sqlite3_int64 block_rows, block_cols
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 version = -1
    cdef int rc = st_page_read_store_config(db, argv[1], argv[2], &block_rows, &block_cols, err)
    if rc != SQLITE_OK:
        return rc
    rc = st_vtab_config_int(db, argv[1], argv[2], "SELECT coalesce((SELECT value FROM {config}"
                            " WHERE key = 'format_version'), -1)", &version, err)
    if rc != SQLITE_OK:   # BUSY, IOERR, ...: a failed read, not a bad version
        return rc
    if version < 1 or version > ST_FORMAT_VERSION:
        err[0] = sqlite3_mprintf("tensor_store: store '%s' has format version %lld; this "
                                 "sqlite-tensor reads versions 1 to %d", argv[2], version,
                                 <int>ST_FORMAT_VERSION)
        return SQLITE_ERROR
    rc = sqlite3_declare_vtab(db,
                              "CREATE TABLE x(model TEXT, tensor TEXT, shape TEXT, dtype TEXT, nbytes INTEGER,"
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
        st_vtab_disconnect(&v.base)
        return SQLITE_NOMEM
    return SQLITE_OK


cdef int st_vtab_disconnect(sqlite3_vtab *vtab) noexcept nogil:
    cdef StoreVtab *v = <StoreVtab *>vtab
    sqlite3_free(v.schema)
    sqlite3_free(v.name)
    sqlite3_free(v)
    return SQLITE_OK


cdef int st_vtab_destroy(sqlite3_vtab *vtab) noexcept nogil:
    """DROP TABLE: the shadow tables go with the store."""
    cdef StoreVtab *v = <StoreVtab *>vtab
    cdef char *err = NULL
    cdef const char *drop = (
        "DROP TABLE IF EXISTS {factors}; DROP TABLE IF EXISTS {files}; DROP TABLE IF EXISTS {dedup};"
        " DROP TABLE IF EXISTS {residuals};"
        "DROP TABLE IF EXISTS {map}; DROP TABLE IF EXISTS {blocks}; DROP TABLE IF EXISTS {pages};"
        "DROP TABLE IF EXISTS {tensors}; DROP TABLE IF EXISTS {models}; DROP TABLE IF EXISTS {config};"
    )
    cdef int rc = st_sql_exec(v.db, drop, v.schema, v.name, &err)
    if rc != SQLITE_OK:
        st_qc_set_vtab_error(vtab, err)
        return rc
    return st_vtab_disconnect(vtab)


cdef int st_vtab_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
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


cdef int st_vtab_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    return st_qc_open(vtab, out, sizeof(QueryCursor))


cdef int st_vtab_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
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
        "SELECT m.name, t.name, t.shape, t.dtype, t.nbytes, t.id, t.rows, t.cols FROM {tensors} t"
        " JOIN {models} m ON m.id = t.model_id%s ORDER BY t.id", where)
    if sql == NULL:
        return SQLITE_NOMEM
    cdef int rc = st_sql_prepare(v.db, sql, v.schema, v.name, &stmt)
    sqlite3_free(sql)
    if rc != SQLITE_OK:
        st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf("%s", sqlite3_errmsg(v.db)))
        return rc
    return st_qc_start(<QueryCursor *>cur, stmt, argc, argv)


cdef int st_vtab_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef StoreVtab *v = <StoreVtab *>cur.pVtab
    cdef QueryCursor *c = <QueryCursor *>cur
    cdef TensorInfo info
    cdef char *err = NULL
    if i != STORE_COL_DATA:
        return st_qc_column(cur, ctx, i)
    info.id = sqlite3_column_int64(c.stmt, 5)
    info.nbytes = sqlite3_column_int64(c.stmt, 4)
    info.block_rows = v.block_rows
    info.block_cols = v.block_cols
    # the row's own rows and cols (columns 6, 7 of the scan): no query per row
    info.rows = sqlite3_column_int64(c.stmt, 6)
    info.cols = sqlite3_column_int64(c.stmt, 7)
    cdef int rc = st_page_check_tensor_info(v.name, &info, &err)
    if rc == SQLITE_OK:
        rc = st_sql_check_result_bytes(v.db, "the tensor", info.nbytes, 1, &err)
    if rc != SQLITE_OK:
        sqlite3_result_error(ctx, err, -1)
        if rc != SQLITE_ERROR:  # CORRUPT: same error class as a damaged page
            sqlite3_result_error_code(ctx, rc)
        sqlite3_free(err)
        return SQLITE_OK
    result_tensor_blob(ctx, v.db, v.schema, v.name, &info)
    return SQLITE_OK


cdef int st_vtab_shadow_name(const char *suffix) noexcept nogil:
    return st_sql_is_shadow_part(suffix)


cdef sqlite3_module st_vtab_module


cdef void st_vtab_init_module() noexcept nogil:
    """Fill the module struct (runs in every host: no Python module init in the shell)."""
    st_vtab_module.iVersion = 3
    st_vtab_module.xCreate = st_vtab_create
    st_vtab_module.xConnect = st_vtab_connect
    st_vtab_module.xBestIndex = st_vtab_best_index
    st_vtab_module.xDisconnect = st_vtab_disconnect
    st_vtab_module.xDestroy = st_vtab_destroy
    st_vtab_module.xOpen = st_vtab_open
    st_vtab_module.xClose = st_qc_close
    st_vtab_module.xFilter = st_vtab_filter
    st_vtab_module.xNext = st_qc_next
    st_vtab_module.xEof = st_qc_eof
    st_vtab_module.xColumn = st_vtab_column
    st_vtab_module.xRowid = st_vtab_rowid
    st_vtab_module.xShadowName = st_vtab_shadow_name
    st_vtab_module.xRename = st_vtab_rename


cdef int st_vtab_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = sqlite3_column_int64((<QueryCursor *>cur).stmt, 5)
    return SQLITE_OK


# -- the schema's upgrade ----------------------------------------------------------------------

from libc.string cimport strstr

cdef int st_vtab_objects_exist(sqlite3 *db, const char *schema, const char *store, int *count,
                               char **err, char **first=NULL) noexcept nogil:
    """How many of the objects st_store_ddl creates (each "IF NOT EXISTS {part}") exist;
    first (when given) gets the name of one of them (sqlite3_mprintf)."""
    cdef const char *p = st_store_ddl
    cdef const char *name
    cdef sqlite3_stmt *stmt = NULL
    cdef char *sql
    cdef int rc = SQLITE_OK, n
    count[0] = 0
    while rc == SQLITE_OK:
        p = strstr(p, "EXISTS {")
        if p == NULL:
            break
        p += 8
        name = p
        while p[0] != 0 and p[0] != b'}':
            p += 1
        n = <int>(p - name)
        sql = sqlite3_mprintf("SELECT 1 FROM \"%w\".sqlite_master WHERE name = '%q_%.*q'"
                              " COLLATE NOCASE", schema, store, n, name)
        if sql == NULL:
            return SQLITE_NOMEM
        rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL)
        sqlite3_free(sql)
        if rc == SQLITE_OK:
            rc = sqlite3_step(stmt)
            if rc == SQLITE_ROW:
                count[0] += 1
                if first != NULL and first[0] == NULL:
                    first[0] = sqlite3_mprintf("%s_%.*s", store, n, name)
            rc = SQLITE_OK if rc == SQLITE_ROW or rc == SQLITE_DONE else rc
        if rc != SQLITE_OK:
            err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        sqlite3_finalize(stmt)
        stmt = NULL
    return rc


cdef int st_vtab_ddl_object_count() noexcept nogil:
    cdef const char *p = st_store_ddl
    cdef int n = 0
    while True:
        p = strstr(p, "EXISTS {")
        if p == NULL:
            return n
        n += 1
        p += 8


cdef int st_vtab_config_int(sqlite3 *db, const char *schema, const char *store, const char *tmpl,
                            sqlite3_int64 *out, char **err) noexcept nogil:
    """One integer a query over the store returns (0 when no row)."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = st_sql_prepare(db, tmpl, schema, store, &stmt)
    out[0] = 0
    if rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW:
            out[0] = sqlite3_column_int64(stmt, 0)
        rc = SQLITE_OK if rc == SQLITE_ROW or rc == SQLITE_DONE else rc
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
    sqlite3_finalize(stmt)
    return rc


cdef int st_vtab_needs_upgrade(sqlite3 *db, const char *schema, const char *store, int *needs,
                               char **err) noexcept nogil:
    """Whether store_upgrade has anything to do: an object of st_store_ddl missing, no
    uid, or pages of an older format. (A `generation` row an older store may carry is
    left alone: nothing reads it.)"""
    cdef int count = 0
    cdef sqlite3_int64 version = 0, ids = 0
    cdef int rc = st_vtab_objects_exist(db, schema, store, &count, err)
    if rc == SQLITE_OK:
        rc = st_vtab_config_int(db, schema, store, "SELECT value FROM {config} WHERE key = "
                                "'format_version'", &version, err)
    if rc == SQLITE_OK:
        rc = st_vtab_config_int(db, schema, store, "SELECT count(*) FROM {config} WHERE key = "
                                "'uid'", &ids, err)
    needs[0] = count != st_vtab_ddl_object_count() or version < ST_FORMAT_VERSION or ids != 1
    return rc


cdef inline sqlite3_int64 st_vtab_align64(sqlite3_int64 n) noexcept nogil:
    return (n + 63) // 64 * 64


cdef int st_vtab_page_v1_to_v2(const unsigned char *old, sqlite3_int64 n, sqlite3_int64 page_id,
                               unsigned char **out, sqlite3_int64 *out_n) noexcept nogil:
    """Rewrite a sound version-1 page as version 2: the same blocks, laid out as the writer
    (sqlite_tensor/pages.py) lays them out, checksum sealed. out stays NULL for a page that
    is not a sound version-1 page (left as it is: verify() and every read report it)."""
    cdef char *err = NULL
    cdef sqlite3_int64 k, i, start, total, off, size
    cdef uint64_t o
    out[0] = NULL
    if n < ST_PAGE_V1_HEADER_BYTES or st_get_u32(old + 4) != 1 or \
            st_page_check_header(old, n, page_id, "", 1, &err) != SQLITE_OK:
        sqlite3_free(err)
        return SQLITE_OK
    k = st_get_u32(old + 8)
    # the old data start when the 8 more header bytes fit before it (as the writer, which
    # aligns 24 + 16 * slots where it aligned 16 + 16 * slots), else the next multiple of 64
    start = st_vtab_align64(<sqlite3_int64>st_get_u32(old + 12))
    if start < ST_PAGE_HEADER_BYTES + k * ST_PAGE_SLOT_BYTES:
        start = st_vtab_align64(ST_PAGE_HEADER_BYTES + k * ST_PAGE_SLOT_BYTES)
    total = start
    for i in range(k):
        if st_page_check_slot(old + ST_PAGE_V1_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES, i, k,
                              <sqlite3_int64>st_get_u64(old + ST_PAGE_V1_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES + 8),
                              n, page_id, "", &o, &err) != SQLITE_OK:
            sqlite3_free(err)
            return SQLITE_OK
        size = <sqlite3_int64>st_get_u64(old + ST_PAGE_V1_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES + 8)
        total = (st_vtab_align64(total) if i > 0 else total) + size
        if total > n + 64 * (k + 1):   # overlapping slots: not a page the writer made
            return SQLITE_OK
    out[0] = <unsigned char *>sqlite3_malloc64(total if total > 0 else 1)
    if out[0] == NULL:
        return SQLITE_NOMEM
    memset(out[0], 0, total)
    memcpy(out[0], old, 4)
    (<unsigned int *>(out[0] + 4))[0] = 2
    memcpy(out[0] + 8, old + 8, 4)
    (<unsigned int *>(out[0] + 12))[0] = <unsigned int>start
    off = start
    for i in range(k):
        o = st_get_u64(old + ST_PAGE_V1_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES)
        size = <sqlite3_int64>st_get_u64(old + ST_PAGE_V1_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES + 8)
        if i > 0:
            off = st_vtab_align64(off)
        memcpy(out[0] + ST_PAGE_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES, &off, 8)
        memcpy(out[0] + ST_PAGE_HEADER_BYTES + i * ST_PAGE_SLOT_BYTES + 8, &size, 8)
        memcpy(out[0] + off, old + o, size)
        off += size
    o = st_page_checksum(out[0], <size_t>total, <uint64_t>page_id)
    memcpy(out[0] + ST_PAGE_CHECKSUM_AT, &o, 8)
    out_n[0] = total
    return SQLITE_OK


cdef int st_vtab_upgrade_pages(sqlite3 *db, const char *schema, const char *store,
                               sqlite3_int64 *done,
                               char **err) noexcept nogil:
    """Rewrite every sound version-1 page as version 2."""
    cdef sqlite3_stmt *ids = NULL
    cdef sqlite3_stmt *upd = NULL
    cdef sqlite3_blob *blob = NULL
    cdef sqlite3_int64 *idlist = NULL
    cdef sqlite3_int64 count = 0, cap = 0, i, new_n = 0
    cdef unsigned char *buf = NULL
    cdef unsigned char *fresh = NULL
    cdef char *table = sqlite3_mprintf("%s_pages", store)
    cdef void *grown
    cdef int n
    cdef int rc = SQLITE_NOMEM if table == NULL else SQLITE_OK
    done[0] = 0
    if rc == SQLITE_OK:
        rc = st_sql_prepare(db, "SELECT id FROM {pages} WHERE typeof(data) = 'blob' ORDER BY id",
                            schema, store, &ids)
    while rc == SQLITE_OK:   # the ids first: the table is rewritten below
        rc = sqlite3_step(ids)
        if rc != SQLITE_ROW:
            rc = SQLITE_OK if rc == SQLITE_DONE else rc
            break
        rc = SQLITE_OK
        if count == cap:
            grown = sqlite3_realloc64(idlist, (cap * 2 + 64) * sizeof(sqlite3_int64))
            if grown == NULL:
                rc = SQLITE_NOMEM
                break
            idlist = <sqlite3_int64 *>grown
            cap = cap * 2 + 64
        idlist[count] = sqlite3_column_int64(ids, 0)
        count += 1
    sqlite3_finalize(ids)
    if rc == SQLITE_OK:
        rc = st_sql_prepare(db, "UPDATE {pages} SET data = ?1, nbytes = ?2 WHERE id = ?3",
                            schema, store, &upd)
    i = 0
    while rc == SQLITE_OK and i < count:
        rc = sqlite3_blob_open(db, schema, table, "data", idlist[i], 0, &blob)
        if rc != SQLITE_OK:
            break
        n = sqlite3_blob_bytes(blob)
        buf = <unsigned char *>sqlite3_malloc64(n if n > 0 else 1)
        rc = SQLITE_NOMEM if buf == NULL else sqlite3_blob_read(blob, buf, n, 0)
        sqlite3_blob_close(blob)
        blob = NULL
        if rc == SQLITE_OK:
            rc = st_vtab_page_v1_to_v2(buf, n, idlist[i], &fresh, &new_n)
        sqlite3_free(buf)
        buf = NULL
        if rc == SQLITE_OK and fresh != NULL:
            sqlite3_bind_blob64(upd, 1, fresh, new_n, SQLITE_STATIC)
            sqlite3_bind_int64(upd, 2, new_n)
            sqlite3_bind_int64(upd, 3, idlist[i])
            rc = sqlite3_step(upd)
            rc = SQLITE_OK if rc == SQLITE_DONE else rc
            sqlite3_reset(upd)
            sqlite3_free(fresh)
            fresh = NULL
            done[0] += 1
        i += 1
    if rc != SQLITE_OK and err[0] == NULL:
        err[0] = sqlite3_mprintf("cannot upgrade the pages of store '%s': %s", store,
                                 sqlite3_errmsg(db))
    sqlite3_finalize(upd)
    sqlite3_free(idlist)
    sqlite3_free(table)
    return rc


cdef int st_vtab_upgrade(sqlite3 *db, const char *schema, const char *store, sqlite3_int64 *pages,
                         char **err) noexcept nogil:
    """Bring a store to the current schema in one savepoint (all or nothing): the objects
    of st_store_ddl it lacks, a uid, version-2 pages. The caller makes the
    shadow tables writable (defensive mode off) and holds the write transaction."""
    cdef sqlite3_int64 version = 0
    cdef int rc = sqlite3_exec(db, "SAVEPOINT tensor_store_upgrade", NULL, NULL, err)
    pages[0] = 0
    if rc != SQLITE_OK:
        return rc
    rc = st_sql_exec(db, st_store_ddl, schema, store, err)
    if rc == SQLITE_OK:
        rc = st_sql_exec(db, "INSERT OR IGNORE INTO {config}(key, value) VALUES ('uid', random())",
                         schema, store, err)
    if rc == SQLITE_OK:
        rc = st_vtab_config_int(db, schema, store, "SELECT value FROM {config} WHERE key = "
                                "'format_version'", &version, err)
    if rc == SQLITE_OK and version < ST_FORMAT_VERSION:
        rc = st_vtab_upgrade_pages(db, schema, store, pages, err)
        if rc == SQLITE_OK:
            rc = st_sql_exec(db, "UPDATE {config} SET value = 2 WHERE key = 'format_version'",
                             schema, store, err)
    if rc == SQLITE_OK:
        return sqlite3_exec(db, "RELEASE tensor_store_upgrade", NULL, NULL, err)
    sqlite3_exec(db, "ROLLBACK TO tensor_store_upgrade; RELEASE tensor_store_upgrade", NULL, NULL,
                 NULL)
    return rc


cdef int st_vtab_rename(sqlite3_vtab *vtab, const char *new_name) noexcept nogil:
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
        if name != NULL and st_sql_is_shadow_part(name):
            sqlite3_str_appendf(todo, "ALTER TABLE \"%w\".\"%w_%w\" RENAME TO \"%w_%w\";",
                                v.schema, v.name, name, new_name, name)
    sqlite3_finalize(stmt)
    copy = sqlite3_str_finish(todo)
    if rc == SQLITE_OK:
        rc = SQLITE_NOMEM if copy == NULL else sqlite3_exec(v.db, copy, NULL, NULL, &err)
    sqlite3_free(copy)
    if rc != SQLITE_OK:
        st_qc_set_vtab_error(vtab,
                             sqlite3_mprintf("tensor_store: cannot rename store '%s' to '%s': %s",
                                             v.name, new_name,
                                             st_sql_text_or(err, sqlite3_errmsg(v.db))))
        sqlite3_free(err)
        return rc
    copy = sqlite3_mprintf("%s", new_name)
    if copy == NULL:
        return SQLITE_NOMEM
    sqlite3_free(v.name)
    v.name = copy
    return SQLITE_OK
