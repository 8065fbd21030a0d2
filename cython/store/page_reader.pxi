# Reading blocks out of page BLOBs: the page format's checks, and tensors out of blocks.
#
# The page format is described byte by byte at the top of sqlite_tensor/pages.py, which
# writes pages. In short, little-endian:
#   0  'STPG'   4  u32 version   8  u32 nslots   12  u32 header bytes
#   version 2:  16  u64 checksum    24 + 16*i  u64 offset, u64 nbytes of slot i
#   version 1:                      16 + 16*i  u64 offset, u64 nbytes of slot i
# A version-2 page's checksum (st_page_checksum, c/st_page.c) covers the whole BLOB, its own field
# counted as zero, seeded with the page id. Every read goes through the buffer pool's page
# source (cache/process_pool.pxi), which checks header, checksum, slots and sizes here, so
# a damaged page gives SQLITE_CORRUPT with a message naming page and slot, never a wild
# read nor silently wrong bytes.
#
# Residuals (<store>_residuals; payload format at the top of sqlite_tensor/residuals.py):
# a float32 tile may carry a correction (low-rank, quantized, sign, sparse) stored in a
# slot of a residual page; readers return block + residual. The helpers that check and apply a
# payload live here and serve read_tensor and the kernels alike.

# The page format's constants and its checksum are C (c/st_page.h, c/st_page.c), the one
# owner, declared in engine.pxd with TensorInfo; Python's writer (pages.py) takes them from
# _engine.PAGE_FORMAT.

cdef inline sqlite3_int64 st_page_slots_at(const unsigned char *data) noexcept nogil:
    """Where a checked page's slot table begins (its version says)."""
    return ST_PAGE_V1_HEADER_BYTES if st_get_u32(data + 4) == 1 else ST_PAGE_HEADER_BYTES


cdef int st_page_check_header(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                              const char *table, int min_version, char **err) noexcept nogil:
    """A page must start with a known header (version 1 or 2, at least min_version: a store
    upgraded to version-2 pages refuses a version-1 page, which has no checksum), and its
    slot table must fit. n is the page's size; data holds at least its header."""
    cdef unsigned int version = st_get_u32(data + 4) if n >= 8 else 0
    if n < ST_PAGE_V1_HEADER_BYTES or st_get_u32(data) != ST_PAGE_MAGIC or version < <unsigned int>min_version \
            or version > ST_PAGE_VERSION or (version == 2 and n < ST_PAGE_HEADER_BYTES):
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: not a version-%d page",
                                 page_id, table, <int>(ST_PAGE_VERSION if min_version > 1 else 1))
        if n >= 8 and st_get_u32(data) == ST_PAGE_MAGIC and version == 1:
            sqlite3_free(err[0])
            err[0] = sqlite3_mprintf("page %lld of %s is corrupt: a version-1 page (no checksum) "
                                     "in a store of version-%d pages", page_id, table,
                                     <int>ST_PAGE_VERSION)
        return SQLITE_CORRUPT
    cdef sqlite3_int64 nslots = st_get_u32(data + 8)
    if st_page_slots_at(data) + nslots * ST_PAGE_SLOT_BYTES > n:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: %lld slots do not fit in %lld bytes",
                                 page_id, table, nslots, n)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int st_page_check(const unsigned char *data, sqlite3_int64 n, sqlite3_int64 page_id,
                       const char *table, int min_version, int verify, char **err) noexcept nogil:
    """A whole page read into memory: its header, then (version 2, unless verify is 0) its
    checksum, which covers every byte."""
    cdef int rc = st_page_check_header(data, n, page_id, table, min_version, err)
    if rc != SQLITE_OK or not verify or st_get_u32(data + 4) == 1:
        return rc
    cdef uint64_t want = st_get_u64(data + ST_PAGE_CHECKSUM_AT)
    cdef uint64_t got = st_page_checksum(data, <size_t>n, <uint64_t>page_id)
    if got != want:
        err[0] = sqlite3_mprintf("page %lld of %s is corrupt: checksum %016llx, the page's "
                                 "bytes give %016llx", page_id, table, want, got)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int st_page_check_slot(const unsigned char *entry, sqlite3_int64 slot, sqlite3_int64 nslots,
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


cdef int st_page_read_store_config(sqlite3 *db, const char *schema, const char *store,
                                   sqlite3_int64 *block_rows, sqlite3_int64 *block_cols,
                                   char **err) noexcept nogil:
    """Read the store's block shape; an error names the store if it is not one."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = st_kept_prepare(
        db, "SELECT key, value FROM {config} WHERE key IN ('block_rows', 'block_cols')",
        schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("no tensor store named '%s' (%s)", store, sqlite3_errmsg(db))
        st_kept_finish(stmt)
        return SQLITE_ERROR if rc & 0xff == SQLITE_ERROR else rc
    block_rows[0] = 0
    block_cols[0] = 0
    rc = sqlite3_step(stmt)
    while rc == SQLITE_ROW:
        if strcmp(st_sql_text_or(<const char *>sqlite3_column_text(stmt, 0), ""),
                  "block_rows") == 0:
            block_rows[0] = sqlite3_column_int64(stmt, 1)
        else:
            block_cols[0] = sqlite3_column_int64(stmt, 1)
        rc = sqlite3_step(stmt)
    if rc != SQLITE_DONE:   # BUSY, IOERR, ...: a failed read, not a damaged store
        err[0] = sqlite3_mprintf("cannot read %s_config: %s", store, sqlite3_errmsg(db))
        st_kept_finish(stmt)
        return rc
    st_kept_finish(stmt)
    # the upper bound too: read_tensor's block buffer is block_rows * block_cols * itemsize
    if block_rows[0] <= 0 or block_cols[0] <= 0 or block_rows[0] > ST_MAX_BLOCK_DIM \
            or block_cols[0] > ST_MAX_BLOCK_DIM:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: no valid block shape in %s_config",
                                 store, store)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int st_page_lookup_tensor(sqlite3 *db, const char *schema, const char *store,
                               const char *model,
                               const char *tensor, TensorInfo *info, char **err) noexcept nogil:
    """Find a tensor by model and name; the error says which of the three names is unknown."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc = st_page_read_store_config(db, schema, store, &info.block_rows, &info.block_cols,
                                            err)
    if rc != SQLITE_OK:
        return rc
    rc = st_sql_prepare(
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
        return st_page_check_tensor_info(store, info, err)
    sqlite3_finalize(stmt)
    if rc != SQLITE_DONE:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    # Not found: say whether the model or the tensor is missing.
    rc = st_sql_prepare(db, "SELECT 1 FROM {models} WHERE name = ?1", schema, store, &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
        rc = sqlite3_step(stmt)
    sqlite3_finalize(stmt)
    if rc == SQLITE_ROW:
        err[0] = sqlite3_mprintf("no tensor '%s' in model '%s' of store '%s'", tensor, model, store)
    elif rc == SQLITE_DONE:
        err[0] = sqlite3_mprintf("no model '%s' in store '%s'", model, store)
    else:   # BUSY, IOERR, ...: not an unknown name
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    return SQLITE_ERROR


cdef int st_page_check_tensor_info(const char *store, TensorInfo *info, char **err) noexcept nogil:
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


# -- residuals -------------------------------------------------------------------------------

cdef inline sqlite3_int64 st_page_sign_bytes(sqlite3_int64 nscales, sqlite3_int64 br,
                                             sqlite3_int64 bc) noexcept nogil:
    """A sign residual's length: nscales float32 scales, then one bit per element."""
    return nscales * 4 + br * ((bc + 7) // 8)


cdef inline sqlite3_int64 st_page_sparse_index_bytes(sqlite3_int64 br,
                                                     sqlite3_int64 bc) noexcept nogil:
    """A sparse residual's index width: uint16 when the tile's elements fit, else uint32."""
    return 2 if br * bc <= 65536 else 4


cdef sqlite3_int64 st_page_sparse_cap(sqlite3_int64 br, sqlite3_int64 bc) noexcept nogil:
    """The most entries a sparse residual of a br x bc tile may keep (a quarter of the
    tile, at least 1): beyond that a quantized one is smaller and exact to more bits."""
    return max(<sqlite3_int64>1, br * bc // 4)


cdef inline sqlite3_int64 st_page_sign_sparse_at(sqlite3_int64 br, sqlite3_int64 bc) noexcept nogil:
    """Where the sparse part of a sign+sparse residual starts: after the per-row sign part,
    rounded up to 4 bytes so that its indices are aligned."""
    return (st_page_sign_bytes(br, br, bc) + 3) & ~(<sqlite3_int64>3)


cdef sqlite3_int64 st_page_residual_bytes(sqlite3_int64 kind, sqlite3_int64 param, sqlite3_int64 br,
                                          sqlite3_int64 bc) noexcept nogil:
    """Payload length of a residual of this kind for a br x bc tile (br, bc >= 1, within
    ST_MAX_BLOCK_DIM); -1 when kind or param is not valid for it."""
    if kind == RES_LOWRANK:
        if param < 1 or param > br or param > bc:
            return -1
        return (br + bc) * param * 4
    if kind == RES_QUANTIZED:
        if not st_page_residual_bits_ok(param):
            return -1
        return br * 4 + br * ((bc * param + 7) // 8)
    if kind == RES_SIGN:
        if param != RES_SIGN_TILE and param != RES_SIGN_ROW:
            return -1
        return st_page_sign_bytes(1 if param == RES_SIGN_TILE else br, br, bc)
    if kind == RES_SPARSE or kind == RES_SIGN_SPARSE:
        if param < 1 or param > st_page_sparse_cap(br, bc):
            return -1
        return param * (st_page_sparse_index_bytes(br, bc) + 2) + (
            st_page_sign_sparse_at(br, bc) if kind == RES_SIGN_SPARSE else 0)
    return -1


cdef int st_page_residual_bits_ok(sqlite3_int64 bits) noexcept nogil:
    """Whether a quantized residual may take this many bits (st_residual_bits)."""
    cdef int i = 0
    while st_residual_bits[i] != 0:
        if bits == st_residual_bits[i]:
            return 1
        i += 1
    return 0


cdef int st_page_check_residual(const char *store, const char *tensor, sqlite3_int64 tensor_id,
                                sqlite3_int64 bi, sqlite3_int64 bj, sqlite3_int64 kind,
                                sqlite3_int64 param, sqlite3_int64 br, sqlite3_int64 bc,
                                sqlite3_int64 nbytes, char **err) noexcept nogil:
    """A residual row must name a tile of the grid (br, bc >= 1: the caller checked
    bi, bj), a known kind with a parameter valid for the tile, and the payload length
    they make. SQLITE_CORRUPT with a message naming store, tensor and tile otherwise."""
    cdef sqlite3_int64 want = st_page_residual_bytes(kind, param, br, bc)
    cdef char *what = NULL
    if br <= 0 or bc <= 0:
        what = sqlite3_mprintf("names a tile outside the tensor's grid")
    elif kind < RES_LOWRANK or kind > RES_SIGN_SPARSE:
        what = sqlite3_mprintf("has kind %lld; kinds are 1 (low-rank), 2 (quantized), 3 (sign), "
                               "4 (sparse) and 5 (sign+sparse)", kind)
    elif want < 0 and kind == RES_LOWRANK:
        what = sqlite3_mprintf("has rank %lld; a %lld x %lld tile takes ranks 1 to %lld",
                               param, br, bc, min(br, bc))
    elif want < 0 and kind == RES_QUANTIZED:
        what = sqlite3_mprintf("has %lld bits; quantized residuals take 2, 4 or 8", param)
    elif want < 0 and kind == RES_SIGN:
        what = sqlite3_mprintf("has scales %lld; sign residuals take 1 (one per tile) or 2 "
                               "(one per row)", param)
    elif want < 0:
        what = sqlite3_mprintf("keeps %lld entries; a %lld x %lld tile keeps 1 to %lld",
                               param, br, bc, st_page_sparse_cap(br, bc))
    elif nbytes != want:
        what = sqlite3_mprintf("records %lld bytes; its kind and parameter make %lld for a "
                               "%lld x %lld tile", nbytes, want, br, bc)
    else:
        return SQLITE_OK
    err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the residual of tile (%lld, %lld) "
                             "of tensor '%s' (id %lld) %s", store, bi, bj, tensor, tensor_id,
                             st_sql_text_or(what, "is invalid"))
    sqlite3_free(what)
    return SQLITE_CORRUPT


cdef inline sqlite3_int64 st_page_sparse_index(const unsigned char *idx, sqlite3_int64 t,
                                               sqlite3_int64 width) noexcept nogil:
    """Entry t of a sparse residual's index array (uint16 or uint32, aligned)."""
    if width == 2:
        return (<const unsigned short *>idx)[t]
    return (<const unsigned int *>idx)[t]


cdef inline const unsigned char *st_page_sparse_part(int kind, const unsigned char *payload,
                                                     sqlite3_int64 br, sqlite3_int64 bc) noexcept nogil:
    """Where a sparse or sign+sparse residual's sparse part (indices, then values) starts."""
    return payload + (st_page_sign_sparse_at(br, bc) if kind == RES_SIGN_SPARSE else 0)


cdef int st_page_check_residual_payload(const char *store, const char *tensor,
                                        sqlite3_int64 tensor_id, sqlite3_int64 bi,
                                        sqlite3_int64 bj, int kind, int param,
                                        const unsigned char *payload, sqlite3_int64 br,
                                        sqlite3_int64 bc, char **err) noexcept nogil:
    """The payload's own content, for the kinds whose bytes can point somewhere (the row
    was checked by st_page_check_residual, payload has its length): a sparse part's indices
    must rise strictly and stay inside the tile, else SQLITE_CORRUPT naming store, tensor
    and tile. O(k): run on every read, before st_page_residual_add / _row_add."""
    cdef sqlite3_int64 t, at, prev = -1, n = br * bc
    cdef sqlite3_int64 width = st_page_sparse_index_bytes(br, bc)
    cdef const unsigned char *idx
    if kind != RES_SPARSE and kind != RES_SIGN_SPARSE:
        return SQLITE_OK
    idx = st_page_sparse_part(kind, payload, br, bc)
    for t in range(param):
        at = st_page_sparse_index(idx, t, width)
        if at <= prev or at >= n:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the residual of tile (%lld, "
                                     "%lld) of tensor '%s' (id %lld) has index %lld at entry "
                                     "%lld; a %lld x %lld tile's indices rise from 0 to %lld",
                                     store, bi, bj, st_sql_text_or(tensor, "?"), tensor_id, at,
                                     t, br, bc, n - 1)
            return SQLITE_CORRUPT
        prev = at
    return SQLITE_OK


cdef inline float st_page_residual_code(const unsigned char *row, sqlite3_int64 j,
                                        int bits) noexcept nogil:
    """Element j of a row of packed codes, minus the offset 2**(bits-1), as a float."""
    if bits == 8:
        return <float>(<int>row[j] - 128)
    if bits == 4:
        return <float>(<int>((row[j >> 1] >> ((j & 1) << 2)) & 15) - 8)
    return <float>(<int>((row[j >> 2] >> ((j & 3) << 1)) & 3) - 2)


cdef void st_page_residual_add(int kind, int param, const unsigned char *payload, sqlite3_int64 br,
                               sqlite3_int64 bc, float *dst, sqlite3_int64 ld) noexcept nogil:
    """dst (br x bc, row stride ld) += the residual (its row checked by st_page_check_residual
    and its content by st_page_check_residual_payload; payload float-aligned: slots start at
    64-byte offsets of a malloc'd page)."""
    cdef const float *U
    cdef const float *V
    cdef const float *scale
    cdef const unsigned char *row
    cdef const unsigned char *idx
    cdef const unsigned short *val
    cdef sqlite3_int64 i, j, t, at, row_bytes, width, nscales
    cdef float s
    cdef float *d
    if kind == RES_LOWRANK:
        U = <const float *>payload
        V = U + br * param
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>br, <int>bc, param,
                          1.0, U, param, V, param, 1.0, dst, <int>ld)
        return
    if kind == RES_SIGN or kind == RES_SIGN_SPARSE:
        nscales = 1 if kind == RES_SIGN and param == RES_SIGN_TILE else br
        scale = <const float *>payload
        row_bytes = (bc + 7) // 8
        for i in range(br):
            st_sign_row_add(payload + nscales * 4 + i * row_bytes, bc,
                            scale[i if nscales > 1 else 0], dst + i * ld)
        if kind == RES_SIGN:
            return
    if kind == RES_SPARSE or kind == RES_SIGN_SPARSE:
        idx = st_page_sparse_part(kind, payload, br, bc)
        width = st_page_sparse_index_bytes(br, bc)
        val = <const unsigned short *>(idx + param * width)
        for t in range(param):
            at = st_page_sparse_index(idx, t, width)
            dst[(at // bc) * ld + at % bc] += st_half_to_float(val[t])
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


cdef void st_page_residual_row_add(int kind, int param, const unsigned char *payload,
                                   sqlite3_int64 br,
                                   sqlite3_int64 bc, sqlite3_int64 r, float *dst) noexcept nogil:
    """dst[0:bc] += row r of the residual (for embedding rows; checked as for
    st_page_residual_add)."""
    cdef const float *U
    cdef const float *V
    cdef const unsigned char *row
    cdef const unsigned char *idx
    cdef const unsigned short *val
    cdef sqlite3_int64 j, t, lo, hi, mid, at, width
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
    if kind == RES_SIGN or kind == RES_SIGN_SPARSE:
        if kind == RES_SIGN and param == RES_SIGN_TILE:
            st_sign_row_add(payload + 4 + r * ((bc + 7) // 8), bc,
                            (<const float *>payload)[0], dst)
            return
        st_sign_row_add(payload + br * 4 + r * ((bc + 7) // 8), bc,
                        (<const float *>payload)[r], dst)
        if kind == RES_SIGN:
            return
    if kind == RES_SPARSE or kind == RES_SIGN_SPARSE:
        # the indices rise (checked): the row's entries are one run, found by bisection
        idx = st_page_sparse_part(kind, payload, br, bc)
        width = st_page_sparse_index_bytes(br, bc)
        val = <const unsigned short *>(idx + param * width)
        lo = 0
        hi = param
        while lo < hi:
            mid = (lo + hi) >> 1
            if st_page_sparse_index(idx, mid, width) < r * bc:
                lo = mid + 1
            else:
                hi = mid
        t = lo
        while t < param:
            at = st_page_sparse_index(idx, t, width) - r * bc
            if at >= bc:
                break
            dst[at] += st_half_to_float(val[t])
            t += 1
        return
    s = (<const float *>payload)[r]
    row = payload + br * 4 + r * ((bc * param + 7) // 8)
    for j in range(bc):
        dst[j] += st_page_residual_code(row, j, param) * s


# -- factors ---------------------------------------------------------------------------------
# <store>_factors: one row per float32 tensor at most, (tensor_id, rank, u, v); the tensor's
# value is its tiles (+ their residuals) + U V^T, U (rows x rank) and V (cols x rank), each
# stored as rank float32 column scales then int8 codes row-major (sqlite_tensor/factors.py
# has the format). Every row is checked where it is read: the plan loader (model_plan.pxi)
# and read_tensor (process_pool.pxi) both read it with st_page_load_factors, which checks
# and decodes it (st_page_read_factors).

from libc.math cimport isfinite


cdef int st_page_factor_decode(const unsigned char *p, sqlite3_int64 n, sqlite3_int64 r,
                               float *out) noexcept nogil:
    """out (n x r float32) = codes * column scales of a payload whose length was checked;
    -1 if a scale is not finite (out then partly written)."""
    cdef const signed char *codes = <const signed char *>(p + r * 4)
    cdef float scale
    cdef sqlite3_int64 i, k
    for k in range(r):
        memcpy(&scale, p + k * 4, 4)   # unaligned in the BLOB: copied, not cast
        if not isfinite(scale):
            return -1
        for i in range(n):
            out[i * r + k] = codes[i * r + k] * scale
    return 0

cdef int st_page_read_factors(sqlite3_stmt *stmt, int col, const char *store, const char *tensor,
                              sqlite3_int64 tensor_id, sqlite3_int64 rows, sqlite3_int64 cols,
                              const char *dtype, int *rank, float **uv,
                              char **err) noexcept nogil:
    """Check the factors row at columns col (rank), col + 1 (u), col + 2 (v) of stmt against
    its tensor (rows x cols, checked; dtype its text) and decode U then V into uv (malloc'd,
    (rows + cols) * rank floats, aligned; the caller frees it). SQLITE_CORRUPT naming store,
    tensor and what is wrong otherwise, with uv NULL."""
    cdef char *what = NULL
    cdef int rt = sqlite3_column_type(stmt, col)
    cdef int ut = sqlite3_column_type(stmt, col + 1)
    cdef int vt = sqlite3_column_type(stmt, col + 2)
    cdef sqlite3_int64 r = sqlite3_column_int64(stmt, col)
    cdef sqlite3_int64 most = min(rows, cols), nu = -1, nv = -1
    cdef const void *u = NULL
    cdef const void *v = NULL
    rank[0] = 0
    uv[0] = NULL
    if ut == SQLITE_BLOB:
        u = sqlite3_column_blob(stmt, col + 1)
        nu = sqlite3_column_bytes(stmt, col + 1)
    if vt == SQLITE_BLOB:
        v = sqlite3_column_blob(stmt, col + 2)
        nv = sqlite3_column_bytes(stmt, col + 2)
    if dtype == NULL or strcmp(dtype, "float32") != 0:
        what = sqlite3_mprintf("are on a %s tensor; factors apply to float32 tensors only",
                               st_sql_text_or(dtype, "dtype-less"))
    elif rt != SQLITE_INTEGER:
        what = sqlite3_mprintf("have a rank that is %s; it must be an integer",
                               st_fn_value_type_name(rt))
    elif r < 1 or r > most:
        what = sqlite3_mprintf("have rank %lld; a %lld x %lld tensor takes ranks 1 to %lld",
                               r, rows, cols, most)
    elif ut != SQLITE_BLOB or vt != SQLITE_BLOB:
        what = sqlite3_mprintf("have %s that is %s; u and v must be BLOBs",
                               "u" if ut != SQLITE_BLOB else "v",
                               st_fn_value_type_name(ut if ut != SQLITE_BLOB else vt))
    elif nu != r * 4 + rows * r:   # no overflow: r <= cols and rows * cols * 4 fits
        what = sqlite3_mprintf("have u of %lld bytes; rank %lld makes %lld for %lld rows "
                               "(rank float32 scales, rows x rank int8 codes)", nu, r,
                               r * 4 + rows * r, rows)
    elif nv != r * 4 + cols * r:
        what = sqlite3_mprintf("have v of %lld bytes; rank %lld makes %lld for %lld columns "
                               "(rank float32 scales, cols x rank int8 codes)", nv, r,
                               r * 4 + cols * r, cols)
    elif u == NULL or v == NULL:   # lengths are at least 4 (rank >= 1): NULL is no memory
        return SQLITE_NOMEM
    else:
        uv[0] = <float *>malloc((rows + cols) * r * sizeof(float))
        if uv[0] == NULL:
            return SQLITE_NOMEM
        if st_page_factor_decode(<const unsigned char *>u, rows, r, uv[0]) != 0:
            what = sqlite3_mprintf("have u with a scale that is not finite")
        elif st_page_factor_decode(<const unsigned char *>v, cols, r, uv[0] + rows * r) != 0:
            what = sqlite3_mprintf("have v with a scale that is not finite")
        else:
            rank[0] = <int>r
            return SQLITE_OK
        free(uv[0])
        uv[0] = NULL
    err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the factors of tensor '%s' (id %lld) "
                             "in %s_factors %s", store, st_sql_text_or(tensor, "?"), tensor_id,
                             store, st_sql_text_or(what, "are invalid"))
    sqlite3_free(what)
    return SQLITE_CORRUPT


cdef int st_page_load_factors(sqlite3 *db, const char *schema, const char *store,
                              sqlite3_int64 tensor_id, sqlite3_int64 rows, sqlite3_int64 cols,
                              int *rank, float **uv, char **err) noexcept nogil:
    """The tensor's factors row, if it has one (the store has a factors table: the caller
    knows), checked against the tensor (rows x cols) and decoded into uv as
    st_page_read_factors leaves it; rank 0 and uv NULL when it has none."""
    cdef sqlite3_stmt *stmt = NULL
    rank[0] = 0
    uv[0] = NULL
    cdef int rc = st_kept_prepare(
        db, "SELECT f.rank, f.u, f.v, t.name, t.dtype FROM {factors} f JOIN {tensors} t"
            " ON t.id = f.tensor_id WHERE f.tensor_id = +?1", schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_int64(stmt, 1, tensor_id)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW:
        rc = st_page_read_factors(stmt, 0, store, <const char *>sqlite3_column_text(stmt, 3),
                                  tensor_id, rows, cols,
                                  <const char *>sqlite3_column_text(stmt, 4), rank, uv, err)
    elif rc == SQLITE_DONE:
        rc = SQLITE_OK
    else:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
    st_kept_finish(stmt)
    return rc


cdef void st_page_factors_add(sqlite3_int64 rows, sqlite3_int64 cols, int rank, const float *uv,
                              float *dst, sqlite3_int64 ld) noexcept nogil:
    """dst (rows x cols, row stride ld) += U V^T, uv as st_page_read_factors left it (its
    checks bound rows and cols by a BLOB's length: they fit an int)."""
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>rows, <int>cols, rank, 1.0,
                      uv, rank, uv + rows * rank, rank, 1.0, dst, <int>ld)
