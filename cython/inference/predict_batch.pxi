# tensor_predict_batch: batch inference over the rows of a query.
#
#   SELECT id, tensor_argmax(output)
#   FROM tensor_predict_batch('tensors', 'clf', 'SELECT id, features FROM inputs');
#   ... tensor_predict_batch('tensors', 'clf', 'SELECT ...', 512)   -- rows per batch
#
# Declared schema:
#   CREATE TABLE x(id, output BLOB, store HIDDEN, model HIDDEN, query HIDDEN, batch_size HIDDEN)
# The query's first column is passed through as id; its second is the input (as for
# tensor_predict). Rows are read batch_size at a time (default 256) and each batch runs
# as one matrix-matrix product per weight tile; outputs come back in the query's order.
#
# tensor_embed_batch is the same table giving an encoder's vectors (Store.embed's, SQL
# tensor_embed's) over (id, text) rows; its output column is named embedding:
#   SELECT id, embedding FROM tensor_embed_batch('tensors', 'minilm', 'SELECT id, body FROM docs');
#
# xBestIndex: store, model and query must be given (=); idxNum bit 1 says batch_size is
# given too. argv order: store, model, query[, batch_size].
#
# Safety (docs/security.md): the table is SQLITE_VTAB_DIRECTONLY, so no view or trigger
# (which a database file could bring along) can run a query through it; the query must
# be exactly one statement that sqlite3_stmt_readonly says writes nothing
# (st_sql_prepare_user_query); queries may nest inside each other's up to ST_MAX_BATCH_DEPTH
# (8) deep on a thread, deeper is an error, not a stack overflow. A batch's output
# buffer stays under BATCH_OUT_BYTES (fewer rows per batch for a wide model).

cdef enum:
    BATCH_COL_ID = 0
    BATCH_COL_OUTPUT = 1
    BATCH_COL_STORE = 2
    BATCH_COL_BATCH_SIZE = 5
    BATCH_DEFAULT_ROWS = 256
    BATCH_MAX_ROWS = 65536
    BATCH_OUT_BYTES = 64 * 1024 * 1024

ctypedef struct BatchVtab:
    ReportVtab base               # first: a ReportVtab without a report, freed as one
    int embed                     # tensor_embed_batch: the encoder's vectors

ctypedef struct BatchCursor:
    sqlite3_vtab_cursor base      # must be first
    int embed                     # as its table's
    sqlite3_int64 width           # floats per output row
    Plan plan
    int have_plan
    sqlite3_stmt *query           # the user's query
    int query_done
    InputBuilder input
    sqlite3_value **ids           # ids of the current batch (sqlite3_value_dup copies)
    float *out                    # outputs of the current batch: rows x plan.n_out
    sqlite3_int64 rows            # rows in the current batch
    sqlite3_int64 pos             # current row within it
    sqlite3_int64 batch_size
    sqlite3_int64 rowid
    sqlite3_value *args[4]        # the hidden arguments, for xColumn


cdef int st_batch_connect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                          sqlite3_vtab **out, char **err) noexcept nogil:
    cdef int rc = sqlite3_declare_vtab(
        db, "CREATE TABLE x(id, embedding BLOB, store HIDDEN, model HIDDEN, query HIDDEN,"
            " batch_size HIDDEN)" if aux != NULL else
            "CREATE TABLE x(id, output BLOB, store HIDDEN, model HIDDEN, query HIDDEN,"
            " batch_size HIDDEN)")
    if rc != SQLITE_OK:
        return rc
    # Never from a view or trigger: its query would run as a top-level statement, out of
    # the reach of the restrictions SQLite puts on schema-defined SQL.
    sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY)
    # A ReportVtab without a report: all this table needs is its connection.
    cdef BatchVtab *v = <BatchVtab *>sqlite3_malloc64(sizeof(BatchVtab))
    if v == NULL:
        return SQLITE_NOMEM
    memset(v, 0, sizeof(BatchVtab))
    v.base.db = db
    v.embed = aux != NULL
    out[0] = &v.base.base
    return SQLITE_OK


cdef int st_batch_best_index(sqlite3_vtab *vtab, sqlite3_index_info *info) noexcept nogil:
    cdef int i, col
    cdef int found[4]
    cdef int unusable = 0
    for i in range(4):
        found[i] = -1
    for i in range(info.nConstraint):
        col = info.aConstraint[i].iColumn
        if col < BATCH_COL_STORE:
            continue
        if not info.aConstraint[i].usable or info.aConstraint[i].op != SQLITE_INDEX_CONSTRAINT_EQ:
            unusable = 1
            continue
        found[col - BATCH_COL_STORE] = i
    if found[0] < 0 or found[1] < 0 or found[2] < 0:
        if unusable:
            return SQLITE_CONSTRAINT
        info.idxNum = -1  # xFilter reports the missing arguments
        info.estimatedCost = 1e12
        return SQLITE_OK
    info.idxNum = 0
    for i in range(3):
        info.aConstraintUsage[found[i]].argvIndex = i + 1
        info.aConstraintUsage[found[i]].omit = 1
    if found[3] >= 0:
        info.aConstraintUsage[found[3]].argvIndex = 4
        info.aConstraintUsage[found[3]].omit = 1
        info.idxNum = 1
    info.estimatedCost = 1e6
    return SQLITE_OK


cdef int st_batch_open(sqlite3_vtab *vtab, sqlite3_vtab_cursor **out) noexcept nogil:
    cdef BatchCursor *c = <BatchCursor *>sqlite3_malloc64(sizeof(BatchCursor))
    if c == NULL:
        return SQLITE_NOMEM
    memset(c, 0, sizeof(BatchCursor))
    c.embed = (<BatchVtab *>vtab).embed
    out[0] = &c.base
    return SQLITE_OK


cdef void st_batch_clear_rows(BatchCursor *c) noexcept nogil:
    cdef sqlite3_int64 i
    if c.ids != NULL:
        for i in range(c.rows):
            sqlite3_value_free(c.ids[i])
    c.rows = 0
    c.pos = 0


cdef void st_batch_reset(BatchCursor *c) noexcept nogil:
    cdef int i
    st_batch_clear_rows(c)
    sqlite3_finalize(c.query)
    c.query = NULL
    if c.have_plan:
        st_plan_free(&c.plan)
        c.have_plan = 0
    st_input_free(&c.input)
    free(c.ids)
    free(c.out)
    c.ids = NULL
    c.out = NULL
    for i in range(4):
        sqlite3_value_free(c.args[i])
        c.args[i] = NULL


cdef int st_batch_close(sqlite3_vtab_cursor *cur) noexcept nogil:
    st_batch_reset(<BatchCursor *>cur)
    sqlite3_free(cur)
    return SQLITE_OK


cdef const char *st_batch_name(sqlite3_vtab_cursor *cur) noexcept nogil:
    return "tensor_embed_batch" if (<BatchCursor *>cur).embed else "tensor_predict_batch"


cdef int st_batch_error(sqlite3_vtab_cursor *cur, char *err, int rc) noexcept nogil:
    st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf("%s: %s", st_batch_name(cur),
                                                    st_sql_text_or(err, "out of memory")))
    sqlite3_free(err)
    return rc


cdef int st_batch_fill(BatchCursor *c) noexcept nogil:
    """Read up to batch_size rows of the query and run the model on them."""
    global st_batch_depth
    cdef char *err = NULL
    cdef int rc
    st_batch_clear_rows(c)
    st_input_reset(&c.input)
    while not c.query_done and c.rows < c.batch_size:
        st_batch_depth += 1   # the query may hold a tensor_predict_batch of its own
        rc = sqlite3_step(c.query)
        st_batch_depth -= 1
        if rc == SQLITE_DONE:
            c.query_done = 1
            break
        if rc != SQLITE_ROW:
            err = sqlite3_mprintf("the query failed: %s",
                                  sqlite3_errmsg(sqlite3_db_handle(c.query)))
            return st_batch_error(&c.base, err, rc)
        rc = st_input_add(&c.input, &c.plan, sqlite3_column_value(c.query, 1), 1, &err)
        if rc != SQLITE_OK:
            return st_batch_error(&c.base, sqlite3_mprintf("row %lld of the query: %s",
                                                           c.rowid + c.rows + 1, err), rc)
        c.ids[c.rows] = sqlite3_value_dup(sqlite3_column_value(c.query, 0))
        c.rows += 1
    if c.rows > 0:
        c.input.inp.nlayers = 1 if c.embed else 0
        rc = st_kern_forward(&c.plan, &c.input.inp, c.out, &err)
        if rc != SQLITE_OK:
            return st_batch_error(&c.base, err, rc)
    return SQLITE_OK


cdef int st_batch_filter(sqlite3_vtab_cursor *cur, int idx_num, const char *idx_str,
                         int argc, sqlite3_value **argv) noexcept nogil:
    cdef BatchCursor *c = <BatchCursor *>cur
    cdef char *err = NULL
    cdef sqlite3 *db
    cdef char *schema = NULL
    cdef char *store = NULL
    cdef int rc, i
    st_batch_reset(c)
    c.rowid = 0
    c.query_done = 0
    if idx_num < 0:
        st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf(
            "%s: needs a store, a model and a query, as in "
            "%s('tensors', 'clf', 'SELECT id, features FROM inputs')", st_batch_name(cur),
            st_batch_name(cur)))
        return SQLITE_ERROR
    for i in range(argc):
        c.args[i] = sqlite3_value_dup(argv[i])
    for i in range(3):
        if sqlite3_value_type(argv[i]) != SQLITE_TEXT:
            st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf(
                "%s: argument %d must be text, got %s", st_batch_name(cur), i + 1,
                st_fn_value_type_name(sqlite3_value_type(argv[i]))))
            return SQLITE_ERROR
        if <int>strlen(<const char *>sqlite3_value_text(argv[i])) != sqlite3_value_bytes(argv[i]):
            st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf(
                "%s: argument %d contains a NUL character", st_batch_name(cur), i + 1))
            return SQLITE_ERROR
    c.batch_size = BATCH_DEFAULT_ROWS
    if idx_num & 1:
        if sqlite3_value_type(argv[3]) != SQLITE_INTEGER or sqlite3_value_int64(argv[3]) < 1 \
                or sqlite3_value_int64(argv[3]) > BATCH_MAX_ROWS:
            st_qc_set_vtab_error(cur.pVtab, sqlite3_mprintf(
                "%s: batch_size must be an integer from 1 to %d", st_batch_name(cur),
                <int>BATCH_MAX_ROWS))
            return SQLITE_ERROR
        c.batch_size = sqlite3_value_int64(argv[3])
    db = (<ReportVtab *>cur.pVtab).db
    if st_batch_depth >= ST_MAX_BATCH_DEPTH:
        return st_batch_error(cur, sqlite3_mprintf(
            "queries nest %d deep, over the limit of %d (does the query, or a view it reads, "
            "feed tensor_predict_batch from itself?)", st_batch_depth + 1,
            <int>ST_MAX_BATCH_DEPTH), SQLITE_ERROR)
    rc = st_sql_split_store_name(db, <const char *>sqlite3_value_text(argv[0]), &schema, &store,
                                 &err)
    if rc == SQLITE_OK:
        rc = st_plan_load(db, schema, store, <const char *>sqlite3_value_text(argv[1]), &c.plan,
                          &err)
    sqlite3_free(schema)
    sqlite3_free(store)
    c.have_plan = 1
    if rc != SQLITE_OK:
        return st_batch_error(cur, err, rc)
    if c.embed and c.plan.encoder == NULL:
        return st_batch_error(cur, sqlite3_mprintf("model '%s' is not an encoder (its first "
                                                   "layer is not {\"op\": \"encoder\"}); "
                                                   "tensor_predict_batch runs it",
                                                   sqlite3_value_text(argv[1])), SQLITE_ERROR)
    c.width = c.plan.encoder.hidden if c.embed else c.plan.n_out
    rc = st_sql_prepare_user_query(db, st_batch_name(cur),
                                   <const char *>sqlite3_value_text(argv[2]),
                                   &c.query, &err)
    if rc != SQLITE_OK:
        return st_batch_error(cur, err, rc)
    if sqlite3_column_count(c.query) < 2:
        return st_batch_error(cur, sqlite3_mprintf("the query must return two columns (id, input), "
                                                   "it returns %d", sqlite3_column_count(c.query)),
                              SQLITE_ERROR)
    rc = st_sql_check_result_bytes(db, "an output row", c.width, sizeof(float), &err)
    if rc != SQLITE_OK:
        return st_batch_error(cur, err, rc)
    # a wide model takes fewer rows per batch: the buffer stays under BATCH_OUT_BYTES
    if c.batch_size > BATCH_OUT_BYTES // (c.width * <sqlite3_int64>sizeof(float)):
        c.batch_size = max(1, BATCH_OUT_BYTES // (c.width * <sqlite3_int64>sizeof(float)))
    c.ids = <sqlite3_value **>calloc(c.batch_size, sizeof(sqlite3_value *))
    c.out = <float *>malloc(c.batch_size * c.width * sizeof(float))
    if c.ids == NULL or c.out == NULL:
        return SQLITE_NOMEM
    return st_batch_fill(c)


cdef int st_batch_next(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef BatchCursor *c = <BatchCursor *>cur
    c.pos += 1
    c.rowid += 1
    if c.pos >= c.rows:
        return st_batch_fill(c)
    return SQLITE_OK


cdef int st_batch_eof(sqlite3_vtab_cursor *cur) noexcept nogil:
    cdef BatchCursor *c = <BatchCursor *>cur
    return c.pos >= c.rows


cdef int st_batch_column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) noexcept nogil:
    cdef BatchCursor *c = <BatchCursor *>cur
    if i == BATCH_COL_ID:
        sqlite3_result_value(ctx, c.ids[c.pos])
    elif i == BATCH_COL_OUTPUT:
        sqlite3_result_blob64(ctx, c.out + c.pos * c.width, c.width * sizeof(float),
                              SQLITE_TRANSIENT)
    elif c.args[i - BATCH_COL_STORE] != NULL:
        sqlite3_result_value(ctx, c.args[i - BATCH_COL_STORE])
    return SQLITE_OK


cdef int st_batch_rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *rowid) noexcept nogil:
    rowid[0] = (<BatchCursor *>cur).rowid
    return SQLITE_OK


cdef sqlite3_module st_batch_module


cdef void st_batch_init_module() noexcept nogil:
    st_batch_module.iVersion = 1
    st_batch_module.xCreate = NULL
    st_batch_module.xConnect = st_batch_connect
    st_batch_module.xBestIndex = st_batch_best_index
    st_batch_module.xDisconnect = st_report_disconnect
    st_batch_module.xDestroy = st_report_disconnect
    st_batch_module.xOpen = st_batch_open
    st_batch_module.xClose = st_batch_close
    st_batch_module.xFilter = st_batch_filter
    st_batch_module.xNext = st_batch_next
    st_batch_module.xEof = st_batch_eof
    st_batch_module.xColumn = st_batch_column
    st_batch_module.xRowid = st_batch_rowid
