# Forward pass over page-resident blocks.
#
# A weight is never reassembled: each tile is used where it sits in its pinned page.
#   dense, W (out x in):   Y[:, bi-range] += X[:, bj-range] @ T^T     (T: tile (bi, bj))
#   dense, W (in x out):   Y[:, bj-range] += X[:, bi-range] @ T
# Batches use sgemm per tile, a single input sgemv per tile (the memory-bound case).
# Edge tiles are stored trimmed, so their own extent (br x bc) is their leading dimension
# and no padding is read. Non-float32 tiles are widened into a scratch tile first.

from libc.math cimport expf, tanhf, erff, sqrtf

cdef extern from * nogil:
    """
    /* IEEE half -> float, exact (subnormals, infinities and NaN payloads kept). */
    static inline float st_half_to_float(uint16_t h) {
        uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, f;
        if (exp == 0) {
            if (man == 0) f = sign;
            else { exp = 113; while (!(man & 0x400u)) { man <<= 1; exp--; }
                   f = sign | (exp << 23) | ((man & 0x3ffu) << 13); }
        } else if (exp == 31) f = sign | 0x7f800000u | (man << 13);
        else f = sign | ((exp + 112) << 23) | (man << 13);
        float out; memcpy(&out, &f, 4); return out;
    }
    static inline float st_bf16_to_float(uint16_t h) {
        uint32_t f = (uint32_t)h << 16; float out; memcpy(&out, &f, 4); return out;
    }
    """
    float st_half_to_float(unsigned short h)
    float st_bf16_to_float(unsigned short h)


ctypedef struct Input:
    sqlite3_int64 batch           # rows of input
    const float *x                # INPUT_FEATURES: batch x n_in, row-major
    const int64_t *ids            # INPUT_IDS: batch ids; INPUT_BAGS: every bag's ids, concatenated
    const int64_t *offsets        # INPUT_BAGS: bag b is ids[offsets[b]:offsets[b+1]] (batch + 1)


ctypedef struct TileCursor:
    Plan *plan
    PoolPage *page                # the page pinned now, or NULL
    float *scratch                # block_rows * block_cols floats, for widening


cdef int cursor_tile(TileCursor *c, Weight *w, sqlite3_int64 bi, sqlite3_int64 bj,
                     sqlite3_int64 br, sqlite3_int64 bc, const unsigned char **out,
                     char **err) noexcept nogil:
    """Point out at tile (bi, bj) of w in its page, pinning the page (and unpinning the
    previous one when the tile lives elsewhere)."""
    cdef sqlite3_int64 k = bi * w.grid_c + bj
    cdef int rc
    if c.page == NULL or c.page.page_id != w.page_ids[k]:
        if c.page != NULL:
            pool_unpin(c.page)
            c.page = NULL
        rc = pool_pin(&c.plan.src, w.page_ids[k], &c.page, err)
        if rc != SQLITE_OK:
            return rc
    return page_slot(c.page, w.slots[k], br * bc * w.itemsize, c.plan.src.table, out, err)


cdef void cursor_release(TileCursor *c) noexcept nogil:
    if c.page != NULL:
        pool_unpin(c.page)
        c.page = NULL


cdef void widen(const unsigned char *src, int dtype, sqlite3_int64 n, float *dst) noexcept nogil:
    """dst[0:n] = src[0:n] as float32."""
    cdef sqlite3_int64 i
    cdef const unsigned short *h = <const unsigned short *>src
    cdef const double *d = <const double *>src
    if dtype == DT_F32:
        memcpy(dst, src, n * 4)
    elif dtype == DT_F16:
        for i in range(n):
            dst[i] = st_half_to_float(h[i])
    elif dtype == DT_BF16:
        for i in range(n):
            dst[i] = st_bf16_to_float(h[i])
    else:
        for i in range(n):
            dst[i] = <float>d[i]


cdef inline const float *as_f32(TileCursor *c, const unsigned char *tile, int dtype,
                                sqlite3_int64 n) noexcept nogil:
    """The tile as float32: itself when stored so, else widened into the scratch tile."""
    if dtype == DT_F32:
        return <const float *>tile
    widen(tile, dtype, n, c.scratch)
    return c.scratch


cdef int gather(TileCursor *c, Weight *w, float *out, char **err) noexcept nogil:
    """out = the whole tensor (rows x cols, float32); for small tensors such as biases."""
    cdef sqlite3_int64 bi, bj, br, bc, r
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef const unsigned char *tile
    cdef const float *t
    cdef int rc
    for bi in range(w.grid_r):
        br = min(R, w.rows - bi * R)
        for bj in range(w.grid_c):
            bc = min(C, w.cols - bj * C)
            rc = cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            t = as_f32(c, tile, w.dtype, br * bc)
            for r in range(br):
                memcpy(out + (bi * R + r) * w.cols + bj * C, t + r * bc, bc * sizeof(float))
    return SQLITE_OK


cdef int dense(TileCursor *c, Layer *L, const float *X, sqlite3_int64 B, float *Y,
               char **err) noexcept nogil:
    """Y (B x n_out) = X (B x n_in) W^T + b, tile by tile."""
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi, bj, br, bc, i
    cdef const unsigned char *tile
    cdef const float *T
    cdef int rc
    if L.bias.tensor_id != 0:
        rc = gather(c, &L.bias, Y, err)
        if rc != SQLITE_OK:
            return rc
        for i in range(1, B):
            memcpy(Y + i * L.n_out, Y, L.n_out * sizeof(float))
    else:
        memset(Y, 0, B * L.n_out * sizeof(float))
    for bi in range(w.grid_r):
        br = min(R, w.rows - bi * R)
        for bj in range(w.grid_c):
            bc = min(C, w.cols - bj * C)
            rc = cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            T = as_f32(c, tile, w.dtype, br * bc)
            if not L.transpose:
                if B == 1:
                    scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, <int>br, <int>bc, 1.0, T, <int>bc,
                                      X + bj * C, 1, 1.0, Y + bi * R, 1)
                else:
                    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>B, <int>br,
                                      <int>bc, 1.0, X + bj * C, <int>L.n_in, T, <int>bc, 1.0,
                                      Y + bi * R, <int>L.n_out)
            else:
                if B == 1:
                    scipy_cblas_sgemv(CblasRowMajor, CblasTrans, <int>br, <int>bc, 1.0, T, <int>bc,
                                      X + bi * R, 1, 1.0, Y + bj * C, 1)
                else:
                    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>B, <int>bc,
                                      <int>br, 1.0, X + bi * R, <int>L.n_in, T, <int>bc, 1.0,
                                      Y + bj * C, <int>L.n_out)
    return SQLITE_OK


cdef int embed_add(TileCursor *c, Layer *L, int64_t row, float scale, float *dst,
                   char **err) noexcept nogil:
    """dst[0:dim] += scale * W[row] (one row, read from the tiles of its block row)."""
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi = row // R, r = row % R, br, bc, bj, k
    cdef const unsigned char *tile
    cdef int rc
    br = min(R, w.rows - bi * R)
    for bj in range(w.grid_c):
        bc = min(C, w.cols - bj * C)
        rc = cursor_tile(c, w, bi, bj, br, bc, &tile, err)
        if rc != SQLITE_OK:
            return rc
        widen(tile + r * bc * w.itemsize, w.dtype, bc, c.scratch)
        for k in range(bc):
            dst[bj * C + k] += scale * c.scratch[k]
    return SQLITE_OK


cdef int check_id(Layer *L, int64_t id, sqlite3_int64 at, char **err) noexcept nogil:
    if id < 0 or id >= L.n_in:
        err[0] = sqlite3_mprintf("id %lld (input %lld) is out of range: the embedding has %lld "
                                 "rows (ids 0 to %lld)", id, at, L.n_in, L.n_in - 1)
        return SQLITE_ERROR
    return SQLITE_OK


cdef int embedding(TileCursor *c, Layer *L, const Input *inp, float *Y, char **err) noexcept nogil:
    cdef sqlite3_int64 b, j, n
    cdef int rc
    memset(Y, 0, inp.batch * L.n_out * sizeof(float))
    for b in range(inp.batch):
        if L.op == OP_EMBEDDING:
            rc = check_id(L, inp.ids[b], b, err)
            if rc == SQLITE_OK:
                rc = embed_add(c, L, inp.ids[b], 1.0, Y + b * L.n_out, err)
            if rc != SQLITE_OK:
                return rc
            continue
        n = inp.offsets[b + 1] - inp.offsets[b]
        for j in range(inp.offsets[b], inp.offsets[b + 1]):
            rc = check_id(L, inp.ids[j], b, err)
            if rc == SQLITE_OK:
                rc = embed_add(c, L, inp.ids[j], (1.0 / n) if L.bag_mean else 1.0,
                               Y + b * L.n_out, err)
            if rc != SQLITE_OK:
                return rc
    return SQLITE_OK


cdef void activate(int act, float *Y, sqlite3_int64 B, sqlite3_int64 n) noexcept nogil:
    """Apply an activation in place; NaN propagates as in numpy."""
    cdef sqlite3_int64 i, b
    cdef float v, m, s
    cdef float *row
    if act == ACT_IDENTITY:
        return
    if act == ACT_SOFTMAX:
        for b in range(B):
            row = Y + b * n
            m = row[0]
            for i in range(1, n):
                if row[i] > m:
                    m = row[i]
            s = 0
            for i in range(n):
                row[i] = expf(row[i] - m)
                s += row[i]
            for i in range(n):
                row[i] /= s
        return
    for i in range(B * n):
        v = Y[i]
        if act == ACT_RELU:
            Y[i] = 0.0 if v < 0 else v
        elif act == ACT_SIGMOID:
            Y[i] = 1.0 / (1.0 + expf(-v))
        elif act == ACT_TANH:
            Y[i] = tanhf(v)
        else:  # ACT_GELU, exact
            Y[i] = 0.5 * v * (1.0 + erff(v * <float>0.7071067811865476))


cdef int forward(Plan *plan, const Input *inp, float *out, char **err) noexcept nogil:
    """Run every layer; out receives batch x plan.n_out floats."""
    cdef TileCursor c
    cdef sqlite3_int64 B = inp.batch
    cdef float *bufs[2]
    cdef const float *cur = inp.x
    cdef float *nxt
    cdef int i, which = 0, rc = SQLITE_OK
    cdef Layer *L
    memset(&c, 0, sizeof(TileCursor))
    c.plan = plan
    c.scratch = <float *>malloc(plan.block_rows * plan.block_cols * sizeof(float))
    bufs[0] = <float *>malloc(B * plan.max_width * sizeof(float) + 1)
    bufs[1] = <float *>malloc(B * plan.max_width * sizeof(float) + 1)
    if c.scratch == NULL or bufs[0] == NULL or bufs[1] == NULL:
        rc = SQLITE_NOMEM
    i = 0
    while rc == SQLITE_OK and i < plan.nlayers:
        L = &plan.layers[i]
        if L.op == OP_ACTIVATION:  # never first, so cur is one of our buffers
            activate(L.act, <float *>cur, B, L.n_out)
            i += 1
            continue
        nxt = bufs[which]
        which ^= 1
        if L.op == OP_DENSE:
            rc = dense(&c, L, cur, B, nxt, err)
        else:
            rc = embedding(&c, L, inp, nxt, err)
        if rc == SQLITE_OK:
            activate(L.act, nxt, B, L.n_out)
        cur = nxt
        i += 1
    cursor_release(&c)
    if rc == SQLITE_OK:
        memcpy(out, cur, B * plan.n_out * sizeof(float))
    free(c.scratch)
    free(bufs[0])
    free(bufs[1])
    return rc
