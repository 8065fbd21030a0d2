# Forward pass over page-resident blocks.
#
# A weight is never reassembled: each tile is used where it sits in its pinned page.
#   dense, W (out x in):   Y[:, bi-range] += X[:, bj-range] @ T^T     (T: tile (bi, bj))
#   dense, W (in x out):   Y[:, bj-range] += X[:, bi-range] @ T
# Batches use sgemm per tile, a single input st_gemv per tile (the memory-bound case); BLAS
# itself runs single-threaded and our threads split the tiles (dense()).
# Edge tiles are stored trimmed, so their own extent (br x bc) is their leading dimension
# and no padding is read. Non-float32 tiles are widened into a scratch tile first.
#
# Residuals (float32 tiles; format in sqlite_tensor/residuals.py): the effective tile is
# T + residual, never rebuilt as such for low-rank ones:
#   low-rank (U br x r, V bc x r):  W (out x in)  Y[:, bi-range] += (X[:, bj-range] @ V) @ U^T
#                                   W (in x out)  Y[:, bj-range] += (X[:, bi-range] @ U) @ V^T
#   quantized, sign, sparse: expanded into the worker's scratch tile as T + residual, then
#   the usual product on the scratch tile (a sparse part's indices are checked first, on the
#   calling thread, like every payload byte that could point somewhere).
# The calling thread pins residual pages with the block pages; workers get pointers.
#
# Factors (a float32 weight's whole-tensor U V^T, <store>_factors; U rows x r, V cols x r,
# read into the plan): one thin product per layer after the tiles, on the calling thread:
#   dense  W (out x in)  Y += (X @ V) @ U^T          W (in x out)  Y += (X @ U) @ V^T
#   embedding rows       Y[b] += (sum of scale * U[id] over b's ids) @ V^T
#   gather (biases, norms)  out += U V^T

from libc.math cimport expf, tanhf, erff

# The thread pool (c/st_parallel.c), the half-float widening (c/st_half.h) and the GEMV
# kernels for one input (c/st_gemv.c) are declared in engine.pxd, with Input.
cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    enum:
        _SC_NPROCESSORS_ONLN

cdef int st_kern_thread_setting          # the thread setting; 0 = one per online CPU


cdef int st_kern_thread_count(sqlite3_int64 macs) noexcept nogil:
    """Threads for a layer of this many multiply-adds: small layers are not worth waking
    threads for."""
    if macs < MIN_PARALLEL_MACS:   # first: sysconf reads /sys, a system call or three
        return 1
    cdef long n = st_kern_thread_setting if st_kern_thread_setting > 0 else sysconf(_SC_NPROCESSORS_ONLN)
    if n < 1:
        return 1
    return <int>min(n, 256)


cdef int st_kern_dense_threads(sqlite3_int64 B, const Weight *w, sqlite3_int64 R,
                               sqlite3_int64 C, bint transpose, int *slot) noexcept nogil:
    """Threads for a dense layer: st_kern_thread_count's, except that a batch-1 float32
    layer goes parallel only where that is measured to pay on this CPU, now
    (st_gemv_threads_now: a hand-off can cost more than half of a cache-resident layer
    saves, and another process may have the other CPUs); slot >= 0: report the call's
    time to st_gemv_threads_observe."""
    slot[0] = -1
    cdef int n = st_kern_thread_count(B * w.rows * w.cols)
    if n <= 1 or B != 1 or w.dtype != DT_F32:
        return n
    return st_gemv_threads_now(R, C, w.rows * w.cols * 4, w.grid_c if transpose else w.grid_r,
                               n, slot)

# TileCursor (engine.pxd): the page pinned now and a scratch tile, for a forward pass.

cdef int st_kern_cursor_tile(TileCursor *c, Weight *w, sqlite3_int64 bi, sqlite3_int64 bj,
                             sqlite3_int64 br, sqlite3_int64 bc, const unsigned char **out,
                             char **err) noexcept nogil:
    """Point out at tile (bi, bj) of w in its page, pinning the page (and unpinning the
    previous one when the tile lives elsewhere)."""
    cdef sqlite3_int64 k = bi * w.grid_c + bj
    cdef int rc
    if c.page == NULL or c.page.page_id != w.page_ids[k]:
        if c.page != NULL:
            st_pool_unpin(c.page)
            c.page = NULL
        rc = st_pool_pin(&c.plan.src, w.page_ids[k], &c.page, err)
        if rc != SQLITE_OK:
            return rc
    return st_pool_page_slot(c.page, w.slots[k], br * bc * w.itemsize, c.plan.src.table, out, err)


cdef inline int st_kern_check_payload(const Plan *plan, const Weight *w, sqlite3_int64 k,
                                      const unsigned char *payload, sqlite3_int64 br,
                                      sqlite3_int64 bc, char **err) noexcept nogil:
    """The content check of tile k's residual payload (a sparse part's indices), on the
    calling thread before any worker applies it."""
    return st_page_check_residual_payload(plan.store, w.name, w.tensor_id, k // w.grid_c,
                                          k % w.grid_c, w.res_kind[k], w.res_param[k], payload,
                                          br, bc, err)


cdef int st_kern_cursor_residual(TileCursor *c, Weight *w, sqlite3_int64 k, sqlite3_int64 br,
                                 sqlite3_int64 bc, const unsigned char **out,
                                 char **err) noexcept nogil:
    """Point out at the residual payload of tile k of w (which has one), pinning its page
    beside the block page."""
    cdef int rc
    if c.res_page == NULL or c.res_page.page_id != w.res_page[k]:
        if c.res_page != NULL:
            st_pool_unpin(c.res_page)
            c.res_page = NULL
        rc = st_pool_pin(&c.plan.src, w.res_page[k], &c.res_page, err)
        if rc != SQLITE_OK:
            return rc
    rc = st_pool_page_slot(c.res_page, w.res_slot[k], st_page_residual_bytes(w.res_kind[k],
                                                                             w.res_param[k], br,
                                                                             bc),
                           c.plan.src.table, out, err)
    if rc != SQLITE_OK:
        return rc
    return st_kern_check_payload(c.plan, w, k, out[0], br, bc, err)


cdef inline bint st_kern_has_residual(const Weight *w, sqlite3_int64 k) noexcept nogil:
    return w.res_kind != NULL and w.res_kind[k] != 0


cdef void st_kern_cursor_release(TileCursor *c) noexcept nogil:
    if c.page != NULL:
        st_pool_unpin(c.page)
        c.page = NULL
    if c.res_page != NULL:
        st_pool_unpin(c.res_page)
        c.res_page = NULL


cdef void st_kern_widen(const unsigned char *src, int dtype, sqlite3_int64 n,
                        float *dst) noexcept nogil:
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


cdef inline const float *st_kern_as_f32(TileCursor *c, const unsigned char *tile, int dtype,
                                        sqlite3_int64 n) noexcept nogil:
    """The tile as float32: itself when stored so, else widened into the scratch tile."""
    if dtype == DT_F32:
        return <const float *>tile
    st_kern_widen(tile, dtype, n, c.scratch)
    return c.scratch


cdef int st_kern_gather(TileCursor *c, Weight *w, float *out, char **err) noexcept nogil:
    """out = the whole tensor (rows x cols, float32); for small tensors such as biases."""
    cdef sqlite3_int64 bi, bj, br, bc, r
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef const unsigned char *tile
    cdef const unsigned char *res
    cdef const float *t
    cdef int rc
    for bi in range(w.grid_r):
        br = min(R, w.rows - bi * R)
        for bj in range(w.grid_c):
            bc = min(C, w.cols - bj * C)
            rc = st_kern_cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            t = st_kern_as_f32(c, tile, w.dtype, br * bc)
            if bc == w.cols:   # a full-width tile is one run (a bias is a column: 1 float a row)
                memcpy(out + bi * R * w.cols, t, br * bc * sizeof(float))
            else:
                for r in range(br):
                    memcpy(out + (bi * R + r) * w.cols + bj * C, t + r * bc, bc * sizeof(float))
            if st_kern_has_residual(w, bi * w.grid_c + bj):
                rc = st_kern_cursor_residual(c, w, bi * w.grid_c + bj, br, bc, &res, err)
                if rc != SQLITE_OK:
                    return rc
                st_page_residual_add(w.res_kind[bi * w.grid_c + bj],
                                     w.res_param[bi * w.grid_c + bj],
                                     res, br, bc, out + bi * R * w.cols + bj * C, w.cols)
    if w.fac_uv != NULL:
        st_page_factors_add(w.rows, w.cols, w.fac_rank, w.fac_uv, out, w.cols)
    return SQLITE_OK


cdef void st_kern_tile_product(const Layer *L, const unsigned char *tile, const unsigned char *res,
                               int res_kind, int res_param, sqlite3_int64 bi, sqlite3_int64 bj,
                               sqlite3_int64 br, sqlite3_int64 bc, sqlite3_int64 R, sqlite3_int64 C,
                               const float *X, sqlite3_int64 B, float *Y, float *scratch,
                               float *lowrank, int gemv) noexcept nogil:
    """Y += the product of X with tile (bi, bj) of L's weight (br x bc, stored trimmed),
    plus its residual (res_kind 0: none).

    W (out x in):  Y[:, bi*R : bi*R+br] += X[:, bj*C : bj*C+bc] @ T^T
    W (in x out):  Y[:, bj*C : bj*C+bc] += X[:, bi*R : bi*R+br] @ T
    One input is a matrix-vector product (st_gemv_*), a batch a matrix-matrix one
    (single-threaded BLAS sgemm: the threads split tiles, see dense()). A quantized, sign
    or sparse residual is added to a copy of T in scratch; a low-rank one is its own thin product
    (st_kern_lowrank_product, with min(B, LOWRANK_ROWS) x rank floats at lowrank). gemv: the
    kernel st_gemv_pick chose for tiles read where they sit in the pool.
    """
    cdef const float *T = <const float *>tile
    if L.weight.dtype != DT_F32:
        st_kern_widen(tile, L.weight.dtype, br * bc, scratch)
        T = scratch
    if res_kind == RES_LOWRANK:
        st_kern_lowrank_product(L, res, res_param, bi, bj, br, bc, R, C, X, B, Y, lowrank)
    elif res_kind != 0:  # quantized, sign, sparse: T + residual in the scratch tile
        if T != scratch:
            memcpy(scratch, T, br * bc * sizeof(float))
        st_page_residual_add(res_kind, res_param, res, br, bc, scratch, bc)
        T = scratch
    if not L.transpose:
        if B == 1:
            st_gemv_n_with(gemv if T != scratch else 0, br, bc, T, X + bj * C, Y + bi * R)
        else:
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>B, <int>br, <int>bc,
                              1.0, X + bj * C, <int>L.n_in, T, <int>bc, 1.0, Y + bi * R,
                              <int>L.n_out)
    elif B == 1:
        st_gemv_t(br, bc, T, X + bi * R, Y + bj * C)
    else:
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>B, <int>bc, <int>br,
                          1.0, X + bi * R, <int>L.n_in, T, <int>bc, 1.0, Y + bj * C, <int>L.n_out)


cdef void st_kern_lowrank_product(const Layer *L, const unsigned char *res, int rank,
                                  sqlite3_int64 bi,
                                  sqlite3_int64 bj, sqlite3_int64 br, sqlite3_int64 bc,
                                  sqlite3_int64 R,
                                  sqlite3_int64 C, const float *X, sqlite3_int64 B, float *Y,
                                  float *tmp) noexcept nogil:
    """Y += the low-rank residual's product, U V^T never formed:
    W (out x in):  Y[:, bi-range] += (X[:, bj-range] @ V) @ U^T
    W (in x out):  Y[:, bj-range] += (X[:, bi-range] @ U) @ V^T
    tmp holds the (rows x rank) intermediate, LOWRANK_ROWS rows of the batch at a time."""
    cdef const float *U = <const float *>res
    cdef const float *V = U + br * rank
    cdef const float *first      # (in_w x rank): applied to the inputs
    cdef const float *second     # (out_w x rank): back to the outputs
    cdef const float *xin
    cdef float *yout
    cdef sqlite3_int64 in_w, out_w, b0, nb
    if not L.transpose:
        first, second, in_w, out_w = V, U, bc, br
        xin = X + bj * C
        yout = Y + bi * R
    else:
        first, second, in_w, out_w = U, V, br, bc
        xin = X + bi * R
        yout = Y + bj * C
    if B == 1:
        memset(tmp, 0, rank * sizeof(float))
        st_gemv_t(in_w, rank, first, xin, tmp)        # tmp = first^T x
        st_gemv_n(out_w, rank, second, tmp, yout)     # y += second tmp
        return
    b0 = 0
    while b0 < B:
        nb = min(<sqlite3_int64>LOWRANK_ROWS, B - b0)
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>nb, rank, <int>in_w,
                          1.0, xin + b0 * L.n_in, <int>L.n_in, first, rank, 0.0, tmp, rank)
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>nb, <int>out_w, rank,
                          1.0, tmp, rank, second, rank, 1.0, yout + b0 * L.n_out, <int>L.n_out)
        b0 += nb


cdef int st_kern_dense(TileCursor *c, Layer *L, const float *X, sqlite3_int64 B, float *Y,
                       char **err) noexcept nogil:
    """Y (B x n_out) = X (B x n_in) W^T + b, tile by tile.

    Threads split the tiles so that no two write the same outputs: by block row of W
    (out x in), by block column of W (in x out). Worker threads never call SQLite (the
    calling thread holds the connection), so the calling thread pins the pages of a chunk
    of block rows and resolves every tile to a pointer first; the chunk is at most
    CHUNK_BYTES of tiles, so a layer larger than memory still streams through the pool.
    """
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi, bj, r0, r1, i, k, bytes, npinned, n, br, bc
    cdef int rc = SQLITE_OK
    cdef int slot
    cdef int nthreads = st_kern_dense_threads(B, w, R, C, L.transpose, &slot)
    # the products' time only: pinning (on a first call, reading pages from SQLite) is the
    # same whatever the threads, and taken for theirs it made one thread look 40x faster
    cdef double t0, spent = 0
    cdef int units
    cdef const unsigned char **tiles = NULL
    cdef const unsigned char **res = NULL
    cdef PoolPage **pinned = NULL
    cdef float *scratch = NULL
    cdef PoolPage *page
    cdef PoolPage *rpage
    # a small layer's tile and page lists live here (no allocation per call)
    cdef const unsigned char *tiles_here[DENSE_TILES_HERE]
    cdef PoolPage *pinned_here[2 * DENSE_TILES_HERE]
    # per worker: a tile, then the low-rank intermediate (min(B, LOWRANK_ROWS) x max rank);
    # float32 tiles without residuals are used where they lie and need none
    cdef bint needs_scratch = w.dtype != DT_F32 or w.res_kind != NULL
    cdef sqlite3_int64 stride = (R * C + min(B, <sqlite3_int64>LOWRANK_ROWS) * w.max_rank
                                 if needs_scratch else 0)
    if L.bias.tensor_id != 0:
        rc = st_kern_gather(c, &L.bias, Y, err)
        if rc != SQLITE_OK:
            return rc
        for i in range(1, B):
            memcpy(Y + i * L.n_out, Y, L.n_out * sizeof(float))
    else:
        memset(Y, 0, B * L.n_out * sizeof(float))
    n = w.grid_r * w.grid_c
    if n <= DENSE_TILES_HERE:
        tiles = tiles_here
        pinned = pinned_here
    else:
        tiles = <const unsigned char **>calloc(n, sizeof(unsigned char *))
        pinned = <PoolPage **>calloc(2 * n, sizeof(PoolPage *))   # block and residual pages
    if needs_scratch:
        scratch = <float *>malloc(nthreads * stride * sizeof(float))
    if tiles == NULL or pinned == NULL or (needs_scratch and scratch == NULL):
        rc = SQLITE_NOMEM
    if w.res_kind != NULL and rc == SQLITE_OK:
        res = <const unsigned char **>calloc(n, sizeof(unsigned char *))
        if res == NULL:
            rc = SQLITE_NOMEM
    st_kern_cursor_release(c)  # this function pins its own pages
    r0 = 0
    while rc == SQLITE_OK and r0 < w.grid_r:
        # pin a chunk of block rows and resolve its tiles (calling thread only)
        r1 = r0
        bytes = 0
        npinned = 0
        page = NULL
        rpage = NULL
        while rc == SQLITE_OK and r1 < w.grid_r and (r1 == r0 or bytes < CHUNK_BYTES):
            br = st_kern_tile_rows(w, r1, R)
            for bj in range(w.grid_c):
                k = r1 * w.grid_c + bj
                bc = st_kern_tile_cols(w, bj, C)
                if page == NULL or page.page_id != w.page_ids[k]:
                    rc = st_pool_pin(&c.plan.src, w.page_ids[k], &page, err)
                    if rc != SQLITE_OK:
                        break
                    pinned[npinned] = page
                    npinned += 1
                rc = st_pool_page_slot(page, w.slots[k], br * bc * w.itemsize, c.plan.src.table,
                                       &tiles[k], err)
                if rc != SQLITE_OK:
                    break
                bytes += br * bc * w.itemsize
                if not st_kern_has_residual(w, k):
                    continue
                if rpage == NULL or rpage.page_id != w.res_page[k]:
                    rc = st_pool_pin(&c.plan.src, w.res_page[k], &rpage, err)
                    if rc != SQLITE_OK:
                        break
                    pinned[npinned] = rpage
                    npinned += 1
                rc = st_pool_page_slot(rpage, w.res_slot[k],
                                       st_page_residual_bytes(w.res_kind[k], w.res_param[k], br,
                                                              bc),
                                       c.plan.src.table, &res[k], err)
                if rc != SQLITE_OK:
                    break
                rc = st_kern_check_payload(c.plan, w, k, res[k], br, bc, err)
                if rc != SQLITE_OK:
                    break
                bytes += st_page_residual_bytes(w.res_kind[k], w.res_param[k], br, bc)
            r1 += 1
        if rc == SQLITE_OK:
            units = <int>((r1 - r0) if not L.transpose else w.grid_c)
            t0 = st_gemv_clock() if slot >= 0 else 0
            st_kern_dense_chunk(L, tiles, res, r0, r1, R, C, X, B, Y, scratch, stride,
                                nthreads if B >= DENSE_ROW_SPLIT * nthreads
                                else min(nthreads, units))
            if slot >= 0:
                spent += st_gemv_clock() - t0
        for i in range(npinned):
            st_pool_unpin(pinned[i])
        r0 = r1
        if rc == SQLITE_OK and r0 < w.grid_r:
            rc = st_sql_interrupted(c.plan.src.db, err)
    if tiles != tiles_here:
        free(tiles)
        free(pinned)
    free(res)
    free(scratch)
    if slot >= 0 and rc == SQLITE_OK:
        st_gemv_threads_observe(slot, nthreads, spent, w.rows * w.cols * 4)
    if rc == SQLITE_OK and w.fac_uv != NULL:
        rc = st_kern_factor_dense(L, X, B, Y)
    return rc


cdef int st_kern_factor_dense(const Layer *L, const float *X, sqlite3_int64 B,
                              float *Y) noexcept nogil:
    """Y += the product of X with the weight's factors, U V^T never formed:
    W (out x in):  Y += (X @ V) @ U^T        W (in x out):  Y += (X @ U) @ V^T
    LOWRANK_ROWS rows of the batch at a time through a (rows x rank) intermediate."""
    cdef const Weight *w = &L.weight
    cdef int r = w.fac_rank
    cdef const float *first = w.fac_uv + w.rows * r if not L.transpose else w.fac_uv
    cdef const float *second = w.fac_uv if not L.transpose else w.fac_uv + w.rows * r
    cdef sqlite3_int64 b0 = 0, nb = min(B, <sqlite3_int64>LOWRANK_ROWS)
    cdef float here[256]
    cdef float *tmp = here
    if nb * r > 256:
        tmp = <float *>malloc(nb * r * sizeof(float))
        if tmp == NULL:
            return SQLITE_NOMEM
    if B == 1:
        memset(tmp, 0, r * sizeof(float))
        st_gemv_t(L.n_in, r, first, X, tmp)        # tmp = first^T x
        st_gemv_n(L.n_out, r, second, tmp, Y)      # y += second tmp
    else:
        while b0 < B:
            nb = min(<sqlite3_int64>LOWRANK_ROWS, B - b0)
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, <int>nb, r, <int>L.n_in,
                              1.0, X + b0 * L.n_in, <int>L.n_in, first, r, 0.0, tmp, r)
            scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>nb, <int>L.n_out, r,
                              1.0, tmp, r, second, r, 1.0, Y + b0 * L.n_out, <int>L.n_out)
            b0 += nb
    if tmp != here:
        free(tmp)
    return SQLITE_OK


cdef int st_kern_factor_rows(const Layer *L, const Input *inp, float *Y) noexcept nogil:
    """Y[b] += (sum over b's ids of scale * U[id]) @ V^T, for embedding (one id a row) and
    embedding_bag (sum, or mean: scale 1/n); the ids were checked by the caller. The
    batch's coefficient rows go through one sgemm, LOWRANK_ROWS at a time."""
    cdef const Weight *w = &L.weight
    cdef int r = w.fac_rank
    cdef const float *U = w.fac_uv
    cdef const float *V = w.fac_uv + w.rows * r
    cdef const float *u
    cdef sqlite3_int64 b0 = 0, b, nb, j, lo, hi, t
    cdef float scale
    cdef float *acc
    cdef float *a = <float *>malloc(max(min(inp.batch, <sqlite3_int64>LOWRANK_ROWS) * r,
                                        <sqlite3_int64>1) * sizeof(float))
    if a == NULL:
        return SQLITE_NOMEM
    while b0 < inp.batch:
        nb = min(<sqlite3_int64>LOWRANK_ROWS, inp.batch - b0)
        memset(a, 0, nb * r * sizeof(float))
        for b in range(b0, b0 + nb):
            acc = a + (b - b0) * r
            if L.op == OP_EMBEDDING_BAG:
                lo = inp.offsets[b]
                hi = inp.offsets[b + 1]
            else:
                lo = b
                hi = b + 1
            scale = (1.0 / (hi - lo)) if L.op == OP_EMBEDDING_BAG and L.bag_mean and hi > lo else 1.0
            for j in range(lo, hi):
                u = U + inp.ids[j] * r
                for t in range(r):
                    acc[t] += scale * u[t]
        scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, <int>nb, <int>w.cols, r, 1.0,
                          a, r, V, r, 1.0, Y + b0 * L.n_out, <int>L.n_out)
        b0 += nb
    free(a)
    return SQLITE_OK


ctypedef struct DenseJob:
    const Layer *L
    const unsigned char **tiles   # tile pointers into pinned pages, grid order
    const unsigned char **res     # residual payloads likewise (NULL: the weight has none)
    sqlite3_int64 r0, r1          # block rows of this chunk
    sqlite3_int64 R, C            # block shape
    const float *X
    sqlite3_int64 B
    float *Y
    float *scratch                # per worker: a block_rows * block_cols tile, then the
    sqlite3_int64 stride          # low-rank intermediate; stride floats per worker
    int gemv                      # the y += A x kernel (batch 1), from st_gemv_pick
    sqlite3_int64 rows_per_unit   # > 0: threads split the batch's rows, not the tiles


cdef void st_kern_dense_range(void *ctx, long begin, long end, int worker) noexcept nogil:
    """Units begin..end of a DenseJob: block rows (W out x in) or block columns (in x out)."""
    cdef DenseJob *job = <DenseJob *>ctx
    cdef const Weight *w = &job.L.weight
    cdef float *mine = job.scratch + worker * job.stride if job.scratch != NULL else NULL
    cdef sqlite3_int64 u, v, bi, bj, k
    cdef int kind, param
    cdef const unsigned char *res
    cdef sqlite3_int64 inner = w.grid_c if not job.L.transpose else (job.r1 - job.r0)
    for u in range(begin, end):
        for v in range(inner):
            if not job.L.transpose:
                bi = job.r0 + u
                bj = v
            else:
                bi = job.r0 + v
                bj = u
            k = bi * w.grid_c + bj
            kind = 0
            param = 0
            res = NULL
            if job.res != NULL and w.res_kind[k] != 0:
                kind = w.res_kind[k]
                param = w.res_param[k]
                res = job.res[k]
            st_kern_tile_product(job.L, job.tiles[k], res, kind, param, bi, bj,
                                 st_kern_tile_rows(w, bi, job.R),
                                 st_kern_tile_cols(w, bj, job.C), job.R, job.C, job.X, job.B,
                                 job.Y, mine,
                                 mine + job.R * job.C if mine != NULL else NULL, job.gemv)


cdef void st_kern_dense_rows_range(void *ctx, long begin, long end,
                                   int worker) noexcept nogil:
    """Units begin..end of a DenseJob split by batch rows: rows_per_unit rows each, every
    tile of the chunk."""
    cdef DenseJob *job = <DenseJob *>ctx
    cdef const Weight *w = &job.L.weight
    cdef float *mine = job.scratch + worker * job.stride if job.scratch != NULL else NULL
    cdef sqlite3_int64 u, bi, bj, k, row0, nb
    cdef int kind, param
    cdef const unsigned char *res
    for u in range(begin, end):
        row0 = u * job.rows_per_unit
        nb = min(job.rows_per_unit, job.B - row0)
        if nb <= 0:
            continue
        for bi in range(job.r0, job.r1):
            for bj in range(w.grid_c):
                k = bi * w.grid_c + bj
                kind = 0
                param = 0
                res = NULL
                if job.res != NULL and w.res_kind[k] != 0:
                    kind = w.res_kind[k]
                    param = w.res_param[k]
                    res = job.res[k]
                st_kern_tile_product(job.L, job.tiles[k], res, kind, param, bi, bj,
                                     st_kern_tile_rows(w, bi, job.R),
                                     st_kern_tile_cols(w, bj, job.C), job.R, job.C,
                                     job.X + row0 * job.L.n_in, nb,
                                     job.Y + row0 * job.L.n_out, mine,
                                     mine + job.R * job.C if mine != NULL else NULL, 0)


cdef void st_kern_dense_chunk(const Layer *L, const unsigned char **tiles,
                              const unsigned char **res,
                              sqlite3_int64 r0, sqlite3_int64 r1, sqlite3_int64 R, sqlite3_int64 C,
                              const float *X, sqlite3_int64 B, float *Y, float *scratch,
                              sqlite3_int64 stride, int nthreads) noexcept nogil:
    """The products of block rows r0..r1 of L's weight, split over nthreads threads."""
    cdef DenseJob job
    job.L = L
    job.tiles = tiles
    job.res = res
    job.stride = stride
    job.r0 = r0
    job.r1 = r1
    job.R = R
    job.C = C
    job.X = X
    job.B = B
    job.Y = Y
    job.scratch = scratch
    job.rows_per_unit = 0
    # measured on this CPU for this tile shape and layer size (once per process)
    job.gemv = (st_gemv_pick(R, C, L.weight.rows * L.weight.cols * 4)
                if B == 1 and not L.transpose and L.weight.dtype == DT_F32 else 0)
    cdef long units = <long>((r1 - r0) if not L.transpose else L.weight.grid_c)
    cdef long row_units
    if B >= DENSE_ROW_SPLIT * nthreads and (nthreads > 1 or B > DENSE_ROW_BLOCK):
        # a large batch (an encoder's tokens): its rows in blocks of at most DENSE_ROW_BLOCK,
        # each through every tile of the chunk, so that its rows stay in cache from one
        # tile to the next; threads split the blocks evenly (block rows of W can split
        # unevenly: 384 = 256 + 128)
        job.rows_per_unit = min(<sqlite3_int64>DENSE_ROW_BLOCK, (B + nthreads - 1) // nthreads)
        row_units = <long>((B + job.rows_per_unit - 1) // job.rows_per_unit)
        if nthreads <= 1:
            st_kern_dense_rows_range(&job, 0, row_units, 0)
        else:
            st_parallel_for(nthreads, row_units, st_kern_dense_rows_range, &job)
        return
    if nthreads <= 1:
        st_kern_dense_range(&job, 0, units, 0)
    else:
        st_parallel_for(nthreads, units, st_kern_dense_range, &job)


cdef inline sqlite3_int64 st_kern_tile_rows(const Weight *w, sqlite3_int64 bi,
                                            sqlite3_int64 R) noexcept nogil:
    return min(R, w.rows - bi * R)


cdef inline sqlite3_int64 st_kern_tile_cols(const Weight *w, sqlite3_int64 bj,
                                            sqlite3_int64 C) noexcept nogil:
    return min(C, w.cols - bj * C)


cdef int st_kern_embed_add(TileCursor *c, Layer *L, int64_t row, float scale, float *dst,
                           float **effective, char **err) noexcept nogil:
    """dst[0:dim] += scale * W[row] (one row, read from the tiles of its block row).

    effective: NULL, or one slot per tile for tiles with a residual built whole (tile +
    residual, float32) the first time a row of theirs is read, so that a large input
    pays for each residual once per tile instead of once per id."""
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef sqlite3_int64 bi = row // R, r = row % R, br, bc, bj, k
    cdef const unsigned char *tile
    cdef const unsigned char *res
    cdef const float *src
    cdef int rc
    br = min(R, w.rows - bi * R)
    for bj in range(w.grid_c):
        bc = min(C, w.cols - bj * C)
        k = bi * w.grid_c + bj
        if effective != NULL and st_kern_has_residual(w, k) and effective[k] != NULL:
            src = effective[k] + r * bc
        else:
            rc = st_kern_cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                return rc
            if st_kern_has_residual(w, k):
                rc = st_kern_cursor_residual(c, w, k, br, bc, &res, err)
                if rc != SQLITE_OK:
                    return rc
            if effective != NULL and st_kern_has_residual(w, k):
                effective[k] = <float *>malloc(br * bc * sizeof(float))
                if effective[k] == NULL:
                    return SQLITE_NOMEM
                st_kern_widen(tile, w.dtype, br * bc, effective[k])
                st_page_residual_add(w.res_kind[k], w.res_param[k], res, br, bc, effective[k], bc)
                src = effective[k] + r * bc
            else:
                st_kern_widen(tile + r * bc * w.itemsize, w.dtype, bc, c.scratch)
                if st_kern_has_residual(w, k):
                    st_page_residual_row_add(w.res_kind[k], w.res_param[k], res, br, bc, r,
                                             c.scratch)
                src = c.scratch
        for k in range(bc):
            dst[bj * C + k] += scale * src[k]
    return SQLITE_OK


cdef int st_kern_check_id(Layer *L, int64_t id, sqlite3_int64 at, char **err) noexcept nogil:
    if id < 0 or id >= L.n_in:
        err[0] = sqlite3_mprintf("id %lld (input %lld) is out of range: the embedding has %lld "
                                 "rows (ids 0 to %lld)", id, at, L.n_in, L.n_in - 1)
        return SQLITE_ERROR
    return SQLITE_OK


cdef extern from * nogil:
    void __builtin_prefetch(const void *addr)


cdef int st_kern_embedding_by_block_row(TileCursor *c, Layer *L, const Input *inp, float *Y,
                                        char **err) noexcept nogil:
    """embedding / embedding_bag of a weight without residuals, the ids taken by block row
    (a counting sort): each tile is pinned once per call instead of once per id, and a
    float32 row is added from where it lies in the page, not copied first. A bag's rows are
    added in block-row order (the per-id order within a block row). -1 (nothing done) when
    the sort's memory is missing: the caller's per-id path needs none."""
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 R = c.plan.block_rows, C = c.plan.block_cols
    cdef bint bags = L.op == OP_EMBEDDING_BAG
    cdef sqlite3_int64 first = inp.offsets[0] if bags else 0
    cdef sqlite3_int64 n = (inp.offsets[inp.batch] - first) if bags else inp.batch
    cdef sqlite3_int64 b, j, lo, hi, bi, bj, br, bc, k, q, done = 0
    cdef int64_t row
    cdef float scale
    cdef int rc = SQLITE_OK
    cdef const unsigned char *tile
    cdef const float *src
    cdef float *dst
    # start[bi] .. start[bi + 1]: the positions in order[] of block row bi's ids
    cdef sqlite3_int64 *start = <sqlite3_int64 *>calloc(w.grid_r + 1, sizeof(sqlite3_int64))
    cdef sqlite3_int64 *order = <sqlite3_int64 *>malloc(max(n, 1) * sizeof(sqlite3_int64))
    cdef sqlite3_int64 *owner = <sqlite3_int64 *>malloc(max(n, 1) * sizeof(sqlite3_int64))
    if start == NULL or order == NULL or owner == NULL:
        free(start)
        free(order)
        free(owner)
        return -1
    # every id checked in input order first: the error names the first bad one, as ever
    for b in range(inp.batch):
        lo = (inp.offsets[b] - first) if bags else b
        hi = (inp.offsets[b + 1] - first) if bags else b + 1
        for j in range(lo, hi):
            rc = st_kern_check_id(L, inp.ids[first + j], b, err)
            if rc != SQLITE_OK:
                break
            owner[j] = b
            start[inp.ids[first + j] // R + 1] += 1
        if rc != SQLITE_OK:
            break
    if rc == SQLITE_OK:
        for bi in range(w.grid_r):
            start[bi + 1] += start[bi]
        for j in range(n):   # stable: fill each block row's slots in input order
            bi = inp.ids[first + j] // R
            order[start[bi]] = j
            start[bi] += 1
        for bi in range(w.grid_r - 1, 0, -1):   # start[bi] is now block row bi's end
            start[bi] = start[bi - 1]
        start[0] = 0
        memset(Y, 0, inp.batch * L.n_out * sizeof(float))
    bi = 0
    while rc == SQLITE_OK and bi < w.grid_r:
        if start[bi] == start[bi + 1]:
            bi += 1
            continue
        if done >= 65536:
            done = 0
            rc = st_sql_interrupted(c.plan.src.db, err)
            if rc != SQLITE_OK:
                break
        br = min(R, w.rows - bi * R)
        for bj in range(w.grid_c):
            bc = min(C, w.cols - bj * C)
            rc = st_kern_cursor_tile(c, w, bi, bj, br, bc, &tile, err)
            if rc != SQLITE_OK:
                break
            for q in range(start[bi], start[bi + 1]):
                j = order[q]
                b = owner[j]
                row = inp.ids[first + j] - bi * R
                if q + 1 < start[bi + 1]:   # the next row's cache lines, while this one adds
                    src = <const float *>(tile + (inp.ids[first + order[q + 1]] - bi * R) * bc * w.itemsize)
                    for k in range(0, bc * w.itemsize, 64):
                        __builtin_prefetch(<const char *>src + k)
                if w.dtype == DT_F32:
                    src = <const float *>(tile + row * bc * 4)
                else:
                    st_kern_widen(tile + row * bc * w.itemsize, w.dtype, bc, c.scratch)
                    src = c.scratch
                scale = 1.0
                if bags and L.bag_mean:
                    scale = 1.0 / (inp.offsets[b + 1] - inp.offsets[b])
                dst = Y + b * L.n_out + bj * C
                for k in range(bc):
                    dst[k] += scale * src[k]
        done += start[bi + 1] - start[bi]
        bi += 1
    free(start)
    free(order)
    free(owner)
    return rc


cdef int st_kern_embedding(TileCursor *c, Layer *L, const Input *inp, float *Y,
                           char **err) noexcept nogil:
    cdef Weight *w = &L.weight
    cdef sqlite3_int64 b, j, n, k
    cdef sqlite3_int64 ids = inp.batch if L.op == OP_EMBEDDING else inp.offsets[inp.batch] - inp.offsets[0]
    cdef int rc = SQLITE_OK
    cdef float **effective = NULL
    if w.res_kind == NULL:
        rc = st_kern_embedding_by_block_row(c, L, inp, Y, err)
        if rc != -1:
            if rc == SQLITE_OK and w.fac_uv != NULL:
                rc = st_kern_factor_rows(L, inp, Y)
            return rc
        rc = SQLITE_OK
    # With at least a tile's rows of ids, building a residual tile whole costs no more
    # than the ids' rows would each cost to correct.
    if w.res_kind != NULL and ids >= c.plan.block_rows:
        effective = <float **>calloc(w.grid_r * w.grid_c, sizeof(float *))
        if effective == NULL:
            return SQLITE_NOMEM
    memset(Y, 0, inp.batch * L.n_out * sizeof(float))
    b = 0
    while rc == SQLITE_OK and b < inp.batch:
        if b % 4096 == 4095:
            rc = st_sql_interrupted(c.plan.src.db, err)
            if rc != SQLITE_OK:
                break
        if L.op == OP_EMBEDDING:
            rc = st_kern_check_id(L, inp.ids[b], b, err)
            if rc == SQLITE_OK:
                rc = st_kern_embed_add(c, L, inp.ids[b], 1.0, Y + b * L.n_out, effective, err)
        else:
            n = inp.offsets[b + 1] - inp.offsets[b]
            j = inp.offsets[b]
            while rc == SQLITE_OK and j < inp.offsets[b + 1]:
                rc = st_kern_check_id(L, inp.ids[j], b, err)
                if rc == SQLITE_OK:
                    rc = st_kern_embed_add(c, L, inp.ids[j], (1.0 / n) if L.bag_mean else 1.0,
                                           Y + b * L.n_out, effective, err)
                j += 1
        b += 1
    if effective != NULL:
        for k in range(w.grid_r * w.grid_c):
            free(effective[k])
        free(effective)
    if rc == SQLITE_OK and w.fac_uv != NULL:
        rc = st_kern_factor_rows(L, inp, Y)
    return rc


cdef void st_kern_activate(int act, float *Y, sqlite3_int64 B, sqlite3_int64 n) noexcept nogil:
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


cdef bint st_kern_needs_scratch(const Plan *plan) noexcept nogil:
    """Whether a forward pass may widen into the cursor's scratch tile: an embedding, or a
    dense weight or bias not stored as float32 (float32 tiles are used where they lie)."""
    cdef int i
    cdef const Layer *L
    for i in range(plan.nlayers):
        L = &plan.layers[i]
        if L.op == OP_EMBEDDING or L.op == OP_EMBEDDING_BAG or L.op == OP_ENCODER:
            return True
        if L.op == OP_DENSE and (L.weight.dtype != DT_F32 or
                                 (L.bias.tensor_id != 0 and L.bias.dtype != DT_F32)):
            return True
    return False


cdef int st_kern_forward(Plan *plan, const Input *inp, float *out, char **err) noexcept nogil:
    """Run every layer; out receives batch x plan.n_out floats.

    The rows go through in passes of at most PASS_BYTES of activations (at least one row),
    so memory follows the answer, not batch x the widest layer; sqlite3_interrupt is
    checked between layers and passes (and inside long layers)."""
    cdef sqlite3_int64 B = inp.batch, r0 = 0, rows
    # the encoder alone (Input.nlayers 1) gives its own width
    cdef sqlite3_int64 n_out = plan.encoder.hidden if inp.nlayers == 1 and plan.encoder != NULL \
        else plan.n_out
    cdef sqlite3_int64 per_pass = max(<sqlite3_int64>1,
                                      PASS_BYTES // (plan.max_width * <sqlite3_int64>sizeof(float) + 1))
    cdef Input part
    cdef TileCursor c
    cdef float *bufs[2]
    cdef int rc = SQLITE_OK
    # BLAS must stay single-threaded under our threads; threadpoolctl and the like reset
    # every OpenBLAS in the process (ours included) when they limit numpy's.
    if scipy_openblas_get_num_threads() != 1:
        scipy_openblas_set_num_threads(1)
    per_pass = min(per_pass, max(B, <sqlite3_int64>1))
    memset(&c, 0, sizeof(TileCursor))
    c.plan = plan
    cdef bint needs_scratch = st_kern_needs_scratch(plan)
    if needs_scratch:
        c.scratch = <float *>malloc(plan.block_rows * plan.block_cols * sizeof(float))
    bufs[0] = <float *>malloc(per_pass * plan.max_width * sizeof(float) + 1)
    bufs[1] = <float *>malloc(per_pass * plan.max_width * sizeof(float) + 1)
    if (needs_scratch and c.scratch == NULL) or bufs[0] == NULL or bufs[1] == NULL:
        rc = SQLITE_NOMEM
    while rc == SQLITE_OK and r0 < B:
        rows = min(per_pass, B - r0)
        part.batch = rows
        part.x = inp.x + r0 * plan.n_in if inp.x != NULL else NULL
        part.ids = inp.ids + r0 if inp.ids != NULL and inp.offsets == NULL else inp.ids
        part.offsets = inp.offsets + r0 if inp.offsets != NULL else NULL
        part.nlayers = inp.nlayers
        rc = st_kern_forward_pass(&c, &part, bufs, out + r0 * n_out, err)
        r0 += rows
    st_kern_cursor_release(&c)
    free(c.scratch)
    free(bufs[0])
    free(bufs[1])
    return rc


cdef int st_kern_forward_pass(TileCursor *c, const Input *inp, float **bufs, float *out,
                              char **err) noexcept nogil:
    """Every layer over inp's rows (bufs: two buffers of rows x max_width floats)."""
    cdef Plan *plan = c.plan
    cdef sqlite3_int64 B = inp.batch
    cdef const float *cur = inp.x
    cdef float *nxt
    cdef int i, which = 0, rc = SQLITE_OK
    cdef int nlayers = inp.nlayers if 0 < inp.nlayers < plan.nlayers else plan.nlayers
    cdef Layer *L
    i = 0
    while rc == SQLITE_OK and i < nlayers:
        rc = st_sql_interrupted(plan.src.db, err)
        if rc != SQLITE_OK:
            break
        L = &plan.layers[i]
        if L.op == OP_ACTIVATION:  # never first, so cur is one of our buffers
            st_kern_activate(L.act, <float *>cur, B, L.n_out)
            i += 1
            continue
        nxt = bufs[which]
        which ^= 1
        if L.op == OP_DENSE:
            rc = st_kern_dense(c, L, cur, B, nxt, err)
        elif L.op == OP_ENCODER:
            rc = st_enc_forward(c, plan.encoder, inp, nxt, err)
        else:
            rc = st_kern_embedding(c, L, inp, nxt, err)
        if rc == SQLITE_OK and L.op != OP_ENCODER:   # (an encoder's is its blocks')
            st_kern_activate(L.act, nxt, B, L.n_out)
        cur = nxt
        i += 1
    st_kern_cursor_release(c)
    if rc == SQLITE_OK:
        memcpy(out, cur, B * plan.layers[nlayers - 1].n_out * sizeof(float))
    return rc
