# Reading blocks out of page BLOBs, and tensors out of blocks.
#
# The page format (version 1) is described byte by byte at the top of
# sqlite_tensor/pages.py, which writes pages. In short, little-endian:
#   0  'STPG'   4  u32 version   8  u32 nslots   12  u32 header bytes
#   16 + 16*i   u64 offset, u64 nbytes of slot i    (offsets 64-byte aligned)
# Every read is checked against the page's size and the block table, so a damaged page
# gives SQLITE_CORRUPT with a message naming page and slot, never a wild read.
#
# Residuals (<store>_residuals; payload format at the top of sqlite_tensor/residuals.py):
# a float32 tile may carry a low-rank or quantized correction stored in a slot of a
# residual page; readers return block + residual. The helpers that check and apply a
# payload live here and serve read_tensor and the kernels alike.

cdef enum:
    RES_LOWRANK = 1              # residual kinds (sqlite_tensor/residuals.py documents them)
    RES_QUANTIZED = 2

cdef enum:
    PAGE_MAGIC = 0x47505453      # 'STPG' read as a little-endian u32
    PAGE_VERSION = 1
    PAGE_HEADER_BYTES = 16
    PAGE_SLOT_BYTES = 16


ctypedef struct PageReader:
    sqlite3 *db
    const char *schema          # database holding the store ("main")
    char *table                 # "<store>_pages", from sqlite3_mprintf
    sqlite3_blob *blob          # open on page_id, or NULL
    sqlite3_int64 page_id       # page the blob is positioned on; -1 for none
    int page_bytes              # size of that page's BLOB
    unsigned int nslots         # slots that page holds


ctypedef struct TensorInfo:
    sqlite3_int64 id             # rowid in <store>_tensors
    sqlite3_int64 rows, cols     # the 2-D view: leading dims flattened, 1-D as one column
    sqlite3_int64 nbytes         # rows * cols * itemsize
    int itemsize                 # bytes per element
    sqlite3_int64 block_rows     # the store's block shape
    sqlite3_int64 block_cols


cdef int check_page_header(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                           const char *table, char **err) noexcept nogil:
    """A page must start with the version-1 header and its slot table must fit."""
    if n < PAGE_HEADER_BYTES or st_get_u32(data) != PAGE_MAGIC or st_get_u32(data + 4) != PAGE_VERSION:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: not a version-%d page",
                                 page_id, table, <int>PAGE_VERSION)
        return SQLITE_CORRUPT
    cdef sqlite3_int64 nslots = st_get_u32(data + 8)
    if PAGE_HEADER_BYTES + nslots * PAGE_SLOT_BYTES > n:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: %lld slots do not fit in %lld bytes",
                                 page_id, table, nslots, n)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int check_slot(const unsigned char *entry, sqlite3_int64 slot, sqlite3_int64 nslots,
                    sqlite3_int64 nbytes, sqlite3_int64 page_bytes, sqlite3_int64 page_id,
                    const char *table, uint64_t *offset, char **err) noexcept nogil:
    """Check slot's directory entry (entry: its 16 bytes, NULL when slot is out of range):
    the block must be nbytes long and lie within the page. Sets offset."""
    if entry == NULL or slot < 0 or slot >= nslots:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %lld of %lld",
                                 page_id, table, slot, nslots)
        return SQLITE_CORRUPT
    offset[0] = st_get_u64(entry)
    cdef uint64_t size = st_get_u64(entry + 8)
    # offset > page_bytes first: offset + size could wrap around 2**64 and pass
    if size != <uint64_t>nbytes or offset[0] > <uint64_t>page_bytes \
            or size > <uint64_t>page_bytes - offset[0]:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: slot %lld holds %llu bytes at %llu, "
                                 "expected %lld bytes within %lld", page_id, table, slot,
                                 size, offset[0], nbytes, page_bytes)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int pr_init(PageReader *r, sqlite3 *db, const char *schema, const char *store) noexcept nogil:
    memset(r, 0, sizeof(PageReader))
    r.db = db
    r.schema = schema
    r.page_id = -1
    r.table = sqlite3_mprintf("%s_pages", store)
    return SQLITE_OK if r.table != NULL else SQLITE_NOMEM


cdef void pr_close(PageReader *r) noexcept nogil:
    if r.blob != NULL:
        sqlite3_blob_close(r.blob)
    sqlite3_free(r.table)
    memset(r, 0, sizeof(PageReader))


cdef int pr_seek(PageReader *r, sqlite3_int64 page_id, char **err) noexcept nogil:
    """Position the reader on a page and check its header."""
    cdef unsigned char head[PAGE_HEADER_BYTES]
    cdef int rc
    if r.page_id == page_id:
        return SQLITE_OK
    if r.blob == NULL:
        rc = sqlite3_blob_open(r.db, r.schema, r.table, "data", page_id, 0, &r.blob)
    else:
        rc = sqlite3_blob_reopen(r.blob, page_id)
    if rc != SQLITE_OK:
        if rc == SQLITE_ERROR:
            # The page row is missing or its data is not a BLOB: the block table names
            # a page that is not there, which is corruption, not a failed read.
            err[0] = sqlite3_mprintf("page %lld of %s is corrupt: %s", page_id, r.table,
                                     sqlite3_errmsg(r.db))
            rc = SQLITE_CORRUPT
        else:
            err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, r.table,
                                     sqlite3_errmsg(r.db))
        if r.blob != NULL:
            sqlite3_blob_close(r.blob)
            r.blob = NULL
        r.page_id = -1
        return rc
    r.page_id = page_id
    r.page_bytes = sqlite3_blob_bytes(r.blob)
    if r.page_bytes < PAGE_HEADER_BYTES or sqlite3_blob_read(r.blob, head, PAGE_HEADER_BYTES, 0) != SQLITE_OK:
        memset(head, 0, PAGE_HEADER_BYTES)   # judged below as "not a page"
    rc = check_page_header(head, r.page_bytes, page_id, r.table, err)
    if rc != SQLITE_OK:
        r.page_id = -1
        return rc
    r.nslots = st_get_u32(head + 8)
    return SQLITE_OK


cdef int pr_read_slot(PageReader *r, sqlite3_int64 page_id, sqlite3_int64 slot, void *dst,
                      sqlite3_int64 nbytes, char **err) noexcept nogil:
    """Copy the block in (page_id, slot), which must be exactly nbytes long, to dst."""
    cdef unsigned char entry[PAGE_SLOT_BYTES]
    cdef uint64_t offset
    cdef int rc = pr_seek(r, page_id, err)
    if rc != SQLITE_OK:
        return rc
    if 0 <= slot < <sqlite3_int64>r.nslots and sqlite3_blob_read(
            r.blob, entry, PAGE_SLOT_BYTES, PAGE_HEADER_BYTES + slot * PAGE_SLOT_BYTES) == SQLITE_OK:
        rc = check_slot(entry, slot, r.nslots, nbytes, r.page_bytes, page_id, r.table, &offset, err)
    else:
        rc = check_slot(NULL, slot, r.nslots, nbytes, r.page_bytes, page_id, r.table, &offset, err)
    if rc != SQLITE_OK:
        return rc
    rc = sqlite3_blob_read(r.blob, dst, <int>nbytes, <int>offset)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("cannot read page %lld of %s: %s", page_id, r.table,
                                 sqlite3_errmsg(r.db))
    return rc


cdef int read_store_config(sqlite3 *db, const char *schema, const char *store,
                           sqlite3_int64 *block_rows, sqlite3_int64 *block_cols,
                           char **err) noexcept nogil:
    """Read the store's block shape; an error names the store if it is not one."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = prepare_store_sql(
        db, "SELECT key, value FROM {config} WHERE key IN ('block_rows', 'block_cols')",
        schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("no tensor store named '%s' (%s)", store, sqlite3_errmsg(db))
        sqlite3_finalize(stmt)
        return SQLITE_ERROR
    block_rows[0] = 0
    block_cols[0] = 0
    while sqlite3_step(stmt) == SQLITE_ROW:
        if strcmp(<const char *>sqlite3_column_text(stmt, 0), "block_rows") == 0:
            block_rows[0] = sqlite3_column_int64(stmt, 1)
        else:
            block_cols[0] = sqlite3_column_int64(stmt, 1)
    sqlite3_finalize(stmt)
    # the upper bound too: read_tensor's block buffer is block_rows * block_cols * itemsize
    if block_rows[0] <= 0 or block_cols[0] <= 0 or block_rows[0] > ST_MAX_BLOCK_DIM \
            or block_cols[0] > ST_MAX_BLOCK_DIM:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: no valid block shape in %s_config",
                                 store, store)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int lookup_tensor(sqlite3 *db, const char *schema, const char *store, const char *model,
                       const char *tensor, TensorInfo *info, char **err) noexcept nogil:
    """Find a tensor by model and name; the error says which of the three names is unknown."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = read_store_config(db, schema, store, &info.block_rows, &info.block_cols, err)
    if rc != SQLITE_OK:
        return rc
    rc = prepare_store_sql(
        db, "SELECT t.id, t.rows, t.cols, t.nbytes FROM {tensors} t JOIN {models} m "
            "ON m.id = t.model_id WHERE m.name = ?1 AND t.name = ?2", schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    sqlite3_bind_text(stmt, 2, tensor, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW:
        info.id = sqlite3_column_int64(stmt, 0)
        info.rows = sqlite3_column_int64(stmt, 1)
        info.cols = sqlite3_column_int64(stmt, 2)
        info.nbytes = sqlite3_column_int64(stmt, 3)
        sqlite3_finalize(stmt)
        return check_tensor_info(store, info, err)
    sqlite3_finalize(stmt)
    if rc != SQLITE_DONE:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    # Not found: say whether the model or the tensor is missing.
    rc = prepare_store_sql(db, "SELECT 1 FROM {models} WHERE name = ?1", schema, store, &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
        rc = sqlite3_step(stmt)
    sqlite3_finalize(stmt)
    if rc == SQLITE_ROW:
        err[0] = sqlite3_mprintf("no tensor '%s' in model '%s' of store '%s'", tensor, model, store)
    else:
        err[0] = sqlite3_mprintf("no model '%s' in store '%s'", model, store)
    return SQLITE_ERROR


cdef int check_tensor_info(const char *store, TensorInfo *info, char **err) noexcept nogil:
    """Derive the item size and refuse rows that cannot describe a tensor."""
    # rows > nbytes / cols first: rows * cols could overflow (even to 0, a division by zero)
    if info.rows <= 0 or info.cols <= 0 or info.nbytes <= 0 or info.rows > info.nbytes // info.cols \
            or info.nbytes % (info.rows * info.cols) != 0:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld has %lld x %lld "
                                 "elements in %lld bytes", store, info.id, info.rows, info.cols,
                                 info.nbytes)
        return SQLITE_CORRUPT
    cdef sqlite3_int64 itemsize = info.nbytes // (info.rows * info.cols)
    if itemsize != 1 and itemsize != 2 and itemsize != 4 and itemsize != 8:  # no stored dtype has another
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld has %lld x %lld "
                                 "elements of %lld bytes each", store, info.id, info.rows,
                                 info.cols, itemsize)
        return SQLITE_CORRUPT
    info.itemsize = <int>itemsize
    return SQLITE_OK


cdef int read_tensor(sqlite3 *db, const char *schema, const char *store, const TensorInfo *info,
                     unsigned char *out, char **err) noexcept nogil:
    """Assemble the tensor's bytes (row-major, its own dtype) into out[0:info.nbytes].

    Blocks are read in page order so each page is opened once. Edge blocks are stored
    without padding, so every block is copied whole into its place. Then a float32
    tensor's residuals are added to their tiles (the effective values).
    """
    cdef PageReader reader
    cdef sqlite3_stmt *stmt = NULL
    cdef unsigned char *tmp = NULL
    cdef sqlite3_int64 bi, bj, page_id, br, bc, nbytes, r, seen = 0
    cdef sqlite3_int64 row_bytes = info.cols * info.itemsize
    cdef sqlite3_int64 grid_rows = (info.rows + info.block_rows - 1) // info.block_rows
    cdef sqlite3_int64 grid_cols = (info.cols + info.block_cols - 1) // info.block_cols
    cdef sqlite3_int64 grid = grid_rows * grid_cols
    cdef unsigned char *dst
    cdef sqlite3_int64 slot
    cdef int rc = pr_init(&reader, db, schema, store)
    if rc != SQLITE_OK:
        return rc
    rc = prepare_store_sql(
        db, "SELECT m.block_row, m.block_col, b.page_id, b.slot, b.nbytes FROM {map} m "
            "JOIN {blocks} b ON b.id = m.block_id WHERE m.tensor_id = ?1 ORDER BY b.page_id, b.slot",
        schema, store, &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_int64(stmt, 1, info.id)
        tmp = <unsigned char *>sqlite3_malloc64(info.block_rows * info.block_cols * info.itemsize)
        if tmp == NULL:
            rc = SQLITE_NOMEM
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
        if br <= 0 or bc <= 0 or nbytes != br * bc * info.itemsize:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: block (%lld, %lld) of tensor "
                                     "%lld does not fit its shape", store, bi, bj, info.id)
            rc = SQLITE_CORRUPT
            break
        dst = out + bi * info.block_rows * row_bytes + bj * info.block_cols * info.itemsize
        if bc == info.cols:  # the block spans whole rows: it lands contiguously
            rc = pr_read_slot(&reader, page_id, slot, dst, nbytes, err)
        else:
            rc = pr_read_slot(&reader, page_id, slot, tmp, nbytes, err)
            if rc == SQLITE_OK:
                for r in range(br):
                    memcpy(dst + r * row_bytes, tmp + r * bc * info.itemsize, bc * info.itemsize)
        seen += 1
    if rc == SQLITE_OK and seen != grid:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld maps %lld of its "
                                 "%lld blocks", store, info.id, seen, grid)
        rc = SQLITE_CORRUPT
    if rc == SQLITE_OK:
        rc = add_tensor_residuals(&reader, store, info, out, err)
    sqlite3_free(tmp)
    sqlite3_finalize(stmt)
    pr_close(&reader)
    return rc


cdef void result_tensor_blob(sqlite3_context *ctx, sqlite3 *db, const char *schema,
                             const char *store, const TensorInfo *info) noexcept nogil:
    """Set the function/column result to the tensor's bytes, or to an error."""
    cdef char *err = NULL
    cdef unsigned char *buf = <unsigned char *>sqlite3_malloc64(info.nbytes)
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


# -- residuals -------------------------------------------------------------------------------

cdef sqlite3_int64 residual_bytes(sqlite3_int64 kind, sqlite3_int64 param, sqlite3_int64 br,
                                  sqlite3_int64 bc) noexcept nogil:
    """Payload length of a residual of this kind for a br x bc tile (br, bc >= 1, within
    ST_MAX_BLOCK_DIM); -1 when kind or param is not valid for it."""
    if kind == RES_LOWRANK:
        if param < 1 or param > br or param > bc:
            return -1
        return (br + bc) * param * 4
    if kind == RES_QUANTIZED:
        if param != 2 and param != 4 and param != 8:
            return -1
        return br * 4 + br * ((bc * param + 7) // 8)
    return -1


cdef int check_residual(const char *store, const char *tensor, sqlite3_int64 tensor_id,
                        sqlite3_int64 bi, sqlite3_int64 bj, sqlite3_int64 kind,
                        sqlite3_int64 param, sqlite3_int64 br, sqlite3_int64 bc,
                        sqlite3_int64 nbytes, char **err) noexcept nogil:
    """A residual row must name a tile of the grid (br, bc >= 1: the caller checked
    bi, bj), a known kind with a parameter valid for the tile, and the payload length
    they make. SQLITE_CORRUPT with a message naming store, tensor and tile otherwise."""
    cdef sqlite3_int64 want = residual_bytes(kind, param, br, bc)
    cdef char *what = NULL
    if br <= 0 or bc <= 0:
        what = sqlite3_mprintf("names a tile outside the tensor's grid")
    elif kind != RES_LOWRANK and kind != RES_QUANTIZED:
        what = sqlite3_mprintf("has kind %lld; kinds are 1 (low-rank) and 2 (quantized)", kind)
    elif want < 0 and kind == RES_LOWRANK:
        what = sqlite3_mprintf("has rank %lld; a %lld x %lld tile takes ranks 1 to %lld",
                               param, br, bc, min(br, bc))
    elif want < 0:
        what = sqlite3_mprintf("has %lld bits; quantized residuals take 2, 4 or 8", param)
    elif nbytes != want:
        what = sqlite3_mprintf("records %lld bytes; its kind and parameter make %lld for a "
                               "%lld x %lld tile", nbytes, want, br, bc)
    else:
        return SQLITE_OK
    err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the residual of tile (%lld, %lld) "
                             "of tensor '%s' (id %lld) %s", store, bi, bj, tensor, tensor_id,
                             text_or(what, "is invalid"))
    sqlite3_free(what)
    return SQLITE_CORRUPT


cdef inline float residual_code(const unsigned char *row, sqlite3_int64 j, int bits) noexcept nogil:
    """Element j of a row of packed codes, minus the offset 2**(bits-1), as a float."""
    if bits == 8:
        return <float>(<int>row[j] - 128)
    if bits == 4:
        return <float>(<int>((row[j >> 1] >> ((j & 1) << 2)) & 15) - 8)
    return <float>(<int>((row[j >> 2] >> ((j & 3) << 1)) & 3) - 2)


cdef void residual_add(int kind, int param, const unsigned char *payload, sqlite3_int64 br,
                       sqlite3_int64 bc, float *dst, sqlite3_int64 ld) noexcept nogil:
    """dst (br x bc, row stride ld) += the residual (checked by check_residual, payload
    float-aligned: slots start at 64-byte offsets of a malloc'd page)."""
    cdef const float *U
    cdef const float *V
    cdef const float *scale
    cdef const unsigned char *row
    cdef sqlite3_int64 i, j, row_bytes
    cdef float s
    cdef float *d
    if kind == RES_LOWRANK:
        U = <const float *>payload
        V = U + br * param
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>br, <int>bc, param,
                          1.0, U, param, V, param, 1.0, dst, <int>ld)
        return
    scale = <const float *>payload
    row_bytes = (bc * param + 7) // 8
    for i in range(br):
        s = scale[i]
        row = payload + br * 4 + i * row_bytes
        d = dst + i * ld
        if param == 8:
            for j in range(bc):
                d[j] += <float>(<int>row[j] - 128) * s
        elif param == 4:
            for j in range(bc):
                d[j] += <float>(<int>((row[j >> 1] >> ((j & 1) << 2)) & 15) - 8) * s
        else:
            for j in range(bc):
                d[j] += <float>(<int>((row[j >> 2] >> ((j & 3) << 1)) & 3) - 2) * s


cdef void residual_row_add(int kind, int param, const unsigned char *payload, sqlite3_int64 br,
                           sqlite3_int64 bc, sqlite3_int64 r, float *dst) noexcept nogil:
    """dst[0:bc] += row r of the residual (for embedding rows)."""
    cdef const float *U
    cdef const float *V
    cdef const unsigned char *row
    cdef sqlite3_int64 j, t
    cdef float s, acc
    if kind == RES_LOWRANK:
        U = <const float *>payload + r * param
        V = <const float *>payload + br * param
        for j in range(bc):
            acc = 0
            for t in range(param):
                acc = acc + U[t] * V[j * param + t]
            dst[j] += acc
        return
    s = (<const float *>payload)[r]
    row = payload + br * 4 + r * ((bc * param + 7) // 8)
    for j in range(bc):
        dst[j] += residual_code(row, j, param) * s


cdef int add_tensor_residuals(PageReader *reader, const char *store, const TensorInfo *info,
                              unsigned char *out, char **err) noexcept nogil:
    """out (the tensor's bytes, assembled) += its residuals: block + residual for a float32
    tensor. A store without a residuals table has none."""
    cdef sqlite3_stmt *stmt = NULL
    cdef unsigned char *buf = NULL
    cdef sqlite3_int64 cap = 0, bi, bj, kind, param, page_id, slot, nbytes, br, bc
    cdef sqlite3_int64 grid_rows = (info.rows + info.block_rows - 1) // info.block_rows
    cdef sqlite3_int64 grid_cols = (info.cols + info.block_cols - 1) // info.block_cols
    cdef const char *dtype
    cdef const char *tname
    cdef int has = 0
    cdef int rc = store_has_residuals(reader.db, reader.schema, store, &has, err)
    if rc != SQLITE_OK or not has:
        return rc
    rc = prepare_store_sql(
        reader.db, "SELECT r.block_row, r.block_col, r.kind, r.param, r.page_id, r.slot, r.nbytes,"
                   " t.dtype, t.name FROM {residuals} r JOIN {tensors} t ON t.id = r.tensor_id"
                   " WHERE r.tensor_id = ?1 ORDER BY r.page_id, r.slot",
        reader.schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(reader.db))
        return rc
    sqlite3_bind_int64(stmt, 1, info.id)
    while rc == SQLITE_OK:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            if rc == SQLITE_DONE:
                rc = SQLITE_OK
            else:
                err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(reader.db))
            break
        bi = sqlite3_column_int64(stmt, 0)
        bj = sqlite3_column_int64(stmt, 1)
        kind = sqlite3_column_int64(stmt, 2)
        param = sqlite3_column_int64(stmt, 3)
        page_id = sqlite3_column_int64(stmt, 4)
        slot = sqlite3_column_int64(stmt, 5)
        nbytes = sqlite3_column_int64(stmt, 6)
        dtype = <const char *>sqlite3_column_text(stmt, 7)
        tname = text_or(<const char *>sqlite3_column_text(stmt, 8), "?")
        if bi < 0 or bj < 0 or bi >= grid_rows or bj >= grid_cols:
            br = bc = 0
        else:
            br = min(info.block_rows, info.rows - bi * info.block_rows)
            bc = min(info.block_cols, info.cols - bj * info.block_cols)
        rc = check_residual(store, tname, info.id, bi, bj, kind, param, br, bc, nbytes, err)
        if rc != SQLITE_OK:
            break
        if dtype == NULL or strcmp(dtype, "float32") != 0 or info.itemsize != 4:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor '%s' (id %lld) is %s "
                                     "but has a residual at tile (%lld, %lld); residuals apply "
                                     "to float32 tensors only", store, tname, info.id,
                                     text_or(dtype, "of no dtype"), bi, bj)
            rc = SQLITE_CORRUPT
            break
        if nbytes > cap:
            sqlite3_free(buf)
            buf = <unsigned char *>sqlite3_malloc64(nbytes)
            if buf == NULL:
                rc = SQLITE_NOMEM
                break
            cap = nbytes
        rc = pr_read_slot(reader, page_id, slot, buf, nbytes, err)
        if rc != SQLITE_OK:
            break
        residual_add(<int>kind, <int>param, buf, br, bc,
                     <float *>(out + (bi * info.block_rows * info.cols + bj * info.block_cols) * 4),
                     info.cols)
    sqlite3_finalize(stmt)
    sqlite3_free(buf)
    return rc
