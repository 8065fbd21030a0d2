# A model plan: what a forward pass needs, read from the store in one go.
#
# The layer list is stored as canonical JSON (validated by sqlite_tensor/layers.py);
# SQLite's own JSON functions take it apart here and resolve tensor names to ids in the
# same query. Each weight's tiles are then listed as (page, slot) in grid order, so the
# kernels walk a weight tile by tile straight out of pinned pages; and so are its
# residuals (kind, param, page, slot per tile), when the store has any. A weight's factors
# (U, V: a few floats per row and column) are copied into the plan whole.
#
# Every number read from the store is untrusted (a file may be edited): shapes are checked
# for range and overflow against the tensor's byte count and dtype, a weight's tile list
# is counted before anything is allocated for it, the layer count is bounded, and a layer
# naming a tensor the model lacks is SQLITE_CORRUPT naming layer and tensor.

cdef int st_plan_name_code(const char *const *names, const char *name) noexcept nogil:
    """name's index in a NULL-ended list of c/st_names.h (its engine code); -1 if absent."""
    cdef int i = 0
    if name == NULL:
        return -1
    while names[i] != NULL:
        if strcmp(name, names[i]) == 0:
            return i
        i += 1
    return -1


cdef int st_plan_dtype_code(const char *name) noexcept nogil:
    return st_plan_name_code(st_dtype_names, name)


cdef int st_plan_act_code(const char *name) noexcept nogil:
    return ACT_IDENTITY if name == NULL else st_plan_name_code(st_act_names, name)


cdef int st_plan_op_code(const char *name) noexcept nogil:
    return st_plan_name_code(st_op_names, name)


cdef void st_plan_weight_free(Weight *w) noexcept nogil:
    free(w.page_ids)
    free(w.slots)
    free(w.res_kind)
    free(w.res_param)
    free(w.res_page)
    free(w.res_slot)
    free(w.fac_uv)
    sqlite3_free(w.name)
    w.name = NULL
    w.fac_uv = NULL
    w.fac_rank = 0
    w.page_ids = NULL
    w.slots = NULL
    w.res_kind = NULL
    w.res_param = NULL
    w.res_page = NULL
    w.res_slot = NULL


cdef void st_plan_free(Plan *plan) noexcept nogil:
    cdef int i
    if plan.layers != NULL:
        for i in range(plan.nlayers):
            st_plan_weight_free(&plan.layers[i].weight)
            st_plan_weight_free(&plan.layers[i].bias)
        free(plan.layers)
    st_enc_free(plan.encoder)
    st_pool_source_close(&plan.src)
    sqlite3_free(plan.store)
    sqlite3_free(plan.schema)
    sqlite3_free(plan.store_arg)
    memset(plan, 0, sizeof(Plan))


cdef int st_plan_weight_from_row(sqlite3_stmt *stmt, int col, Weight *w, const char *store,
                                 const char *model, int layer, const char *role,
                                 char **err) noexcept nogil:
    """Fill id, shape and dtype of w from columns col..col+5 (the name the layer gives, id,
    rows, cols, dtype, nbytes of the tensor it names). A name without a tensor, or a shape
    that does not fit the tensor's bytes and dtype, is corruption."""
    memset(w, 0, sizeof(Weight))
    cdef const char *name = <const char *>sqlite3_column_text(stmt, col)
    if sqlite3_column_type(stmt, col) == SQLITE_NULL:
        return SQLITE_OK   # the layer names none (a dense layer without bias)
    if sqlite3_column_type(stmt, col + 1) == SQLITE_NULL:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: layer %d of model '%s' names "
                                 "%s tensor '%s', which the model does not have", store, layer,
                                 model, role, st_sql_text_or(name, ""))
        return SQLITE_CORRUPT
    w.tensor_id = sqlite3_column_int64(stmt, col + 1)
    w.rows = sqlite3_column_int64(stmt, col + 2)
    w.cols = sqlite3_column_int64(stmt, col + 3)
    cdef const char *dt = <const char *>sqlite3_column_text(stmt, col + 4)
    cdef sqlite3_int64 nbytes = sqlite3_column_int64(stmt, col + 5)
    w.dtype = st_plan_dtype_code(st_sql_text_or(dt, ""))
    if w.dtype < 0:
        err[0] = sqlite3_mprintf("layer %d of model '%s' uses a %s tensor; inference computes with "
                                 "float32, float16, bfloat16 or float64 weights", layer, model, dt)
        return SQLITE_ERROR
    w.itemsize = 4 if w.dtype == DT_F32 else (8 if w.dtype == DT_F64 else 2)
    # rows > limit / cols first: the product could overflow
    if w.rows <= 0 or w.cols <= 0 or w.rows > (<sqlite3_int64>0x7fffffffffffffff // w.itemsize) // w.cols \
            or w.rows * w.cols * w.itemsize != nbytes:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor '%s' (id %lld) in "
                                 "%s_tensors has rows %lld, cols %lld, nbytes %lld, which do not "
                                 "make a %s tensor", store, name, w.tensor_id, store, w.rows,
                                 w.cols, nbytes, dt)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int st_plan_load_tiles(sqlite3 *db, const char *schema, const char *store, Plan *plan,
                            Weight *w, char **err) noexcept nogil:
    """List w's tiles as (page, slot) in grid order. The map rows are counted before the
    lists are allocated, so a shape edited to be huge costs nothing."""
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 n, bi, bj, slot, mapped = -1, seen = 0
    cdef int rc
    # no overflow: rows * cols fits (st_plan_weight_from_row) and a tile holds at least one element
    w.grid_r = (w.rows + plan.block_rows - 1) // plan.block_rows
    w.grid_c = (w.cols + plan.block_cols - 1) // plan.block_cols
    n = w.grid_r * w.grid_c
    rc = st_sql_prepare(db, "SELECT count(*) FROM {map} WHERE tensor_id = ?1", schema, store,
                        &stmt)
    if rc == SQLITE_OK:
        sqlite3_bind_int64(stmt, 1, w.tensor_id)
        rc = sqlite3_step(stmt)
        if rc == SQLITE_ROW:
            mapped = sqlite3_column_int64(stmt, 0)
            rc = SQLITE_OK
    sqlite3_finalize(stmt)
    stmt = NULL
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    if mapped != n:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld of %s_tensors "
                                 "(%lld x %lld) has %lld tiles but %s_map lists %lld", store,
                                 w.tensor_id, store, w.rows, w.cols, n, store, mapped)
        return SQLITE_CORRUPT
    w.page_ids = <sqlite3_int64 *>calloc(n, sizeof(sqlite3_int64))
    w.slots = <int *>calloc(n, sizeof(int))
    if w.page_ids == NULL or w.slots == NULL:
        return SQLITE_NOMEM
    rc = st_sql_prepare(
        db, "SELECT m.block_row, m.block_col, b.page_id, b.slot FROM {map} m"
            " JOIN {blocks} b ON b.id = m.block_id WHERE m.tensor_id = ?1", schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_int64(stmt, 1, w.tensor_id)
    while True:
        rc = sqlite3_step(stmt)
        if rc != SQLITE_ROW:
            break
        bi = sqlite3_column_int64(stmt, 0)
        bj = sqlite3_column_int64(stmt, 1)
        slot = sqlite3_column_int64(stmt, 3)
        if bi < 0 or bj < 0 or bi >= w.grid_r or bj >= w.grid_c or slot < 0 or slot > 0x7fffffff:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: %s_map row of tensor %lld "
                                     "names tile (%lld, %lld) of a %lld x %lld grid, slot %lld",
                                     store, store, w.tensor_id, bi, bj, w.grid_r, w.grid_c, slot)
            sqlite3_finalize(stmt)
            return SQLITE_CORRUPT
        w.page_ids[bi * w.grid_c + bj] = sqlite3_column_int64(stmt, 2)
        w.slots[bi * w.grid_c + bj] = <int>slot
        seen += 1
    sqlite3_finalize(stmt)
    if rc != SQLITE_DONE:   # an I/O error, a busy database or an interrupt: not corruption
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    if seen != n:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor %lld maps %lld of its "
                                 "%lld blocks", store, w.tensor_id, seen, n)
        return SQLITE_CORRUPT
    return SQLITE_OK


cdef int st_plan_load_residuals(sqlite3 *db, const char *schema, const char *store, Plan *plan,
                                Weight *w, char **err) noexcept nogil:
    """List w's residuals per tile (kind, param, page, slot), each checked against its
    tile's extent; the arrays stay NULL when w has none."""
    cdef sqlite3_stmt *stmt = NULL
    cdef sqlite3_int64 n = w.grid_r * w.grid_c, bi, bj, k, kind, param, slot, br, bc
    cdef const char *tname
    cdef const char *why
    cdef int rc
    if not plan.has_residuals:
        return SQLITE_OK
    rc = st_sql_prepare(
        db, "SELECT r.block_row, r.block_col, r.kind, r.param, r.page_id, r.slot, r.nbytes,"
            " p.id IS NOT NULL, t.name FROM {residuals} r JOIN {tensors} t ON t.id = r.tensor_id"
            " LEFT JOIN {pages} p ON p.id = r.page_id WHERE r.tensor_id = ?1",
        schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_int64(stmt, 1, w.tensor_id)
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
        kind = sqlite3_column_int64(stmt, 2)
        param = sqlite3_column_int64(stmt, 3)
        slot = sqlite3_column_int64(stmt, 5)
        tname = st_sql_text_or(<const char *>sqlite3_column_text(stmt, 8), "?")
        if bi < 0 or bj < 0 or bi >= w.grid_r or bj >= w.grid_c:
            br = bc = 0
        else:
            br = min(plan.block_rows, w.rows - bi * plan.block_rows)
            bc = min(plan.block_cols, w.cols - bj * plan.block_cols)
        rc = st_page_check_residual(store, tname, w.tensor_id, bi, bj, kind, param, br, bc,
                                    sqlite3_column_int64(stmt, 6), err)
        if rc != SQLITE_OK:
            break
        if w.dtype != DT_F32:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: tensor '%s' (id %lld) is not "
                                     "float32 but has a residual at tile (%lld, %lld); residuals "
                                     "apply to float32 tensors only", store, tname, w.tensor_id,
                                     bi, bj)
            rc = SQLITE_CORRUPT
            break
        if not sqlite3_column_int64(stmt, 7) or slot < 0 or slot > 0x7fffffff:
            why = "no valid slot"
            if not sqlite3_column_int64(stmt, 7):
                why = "a page that is missing"
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: the residual of tile (%lld, "
                                     "%lld) of tensor '%s' (id %lld) names slot %lld of page %lld,"
                                     " %s", store, bi, bj, tname, w.tensor_id, slot,
                                     sqlite3_column_int64(stmt, 4), why)
            rc = SQLITE_CORRUPT
            break
        if w.name == NULL:
            w.name = sqlite3_mprintf("%s", tname)
            if w.name == NULL:
                rc = SQLITE_NOMEM
                break
        if w.res_kind == NULL:
            w.res_kind = <unsigned char *>calloc(n, 1)
            w.res_param = <int *>calloc(n, sizeof(int))
            w.res_page = <sqlite3_int64 *>calloc(n, sizeof(sqlite3_int64))
            w.res_slot = <int *>calloc(n, sizeof(int))
            if w.res_kind == NULL or w.res_param == NULL or w.res_page == NULL or w.res_slot == NULL:
                rc = SQLITE_NOMEM
                break
        k = bi * w.grid_c + bj
        w.res_kind[k] = <unsigned char>kind
        w.res_param[k] = <int>param
        w.res_page[k] = sqlite3_column_int64(stmt, 4)
        w.res_slot[k] = <int>slot
        if kind == RES_LOWRANK and param > w.max_rank:
            w.max_rank = <int>param
    sqlite3_finalize(stmt)
    return rc


cdef int st_plan_load_weight(sqlite3 *db, const char *schema, const char *store, Plan *plan,
                             Weight *w, char **err) noexcept nogil:
    """Everything the kernels read of w: its tiles, its residuals and its factors (each
    checked where it is read)."""
    cdef int rc = st_plan_load_tiles(db, schema, store, plan, w, err)
    if rc == SQLITE_OK:
        rc = st_plan_load_residuals(db, schema, store, plan, w, err)
    if rc == SQLITE_OK and plan.has_factors:
        rc = st_page_load_factors(db, schema, store, w.tensor_id, w.rows, w.cols, &w.fac_rank,
                                  &w.fac_uv, err)
    return rc


cdef int st_plan_load(sqlite3 *db, const char *schema, const char *store, const char *model,
                      Plan *plan, char **err) noexcept nogil:
    """Read the model's layers and weights' tiles; st_plan_free() it afterwards, always."""
    cdef sqlite3_stmt *stmt = NULL
    cdef int rc, i, step, n = 0
    cdef Layer *L
    cdef sqlite3_int64 width = -1, nlayers = 0
    cdef const char *op_name
    cdef const char *mode
    cdef char *hint
    memset(plan, 0, sizeof(Plan))
    plan.store = sqlite3_mprintf("%s", store)
    plan.schema = sqlite3_mprintf("%s", schema)
    if plan.store == NULL or plan.schema == NULL:
        return SQLITE_NOMEM
    store = plan.store     # the plan's own copies: the page source keeps these pointers
    schema = plan.schema
    # first: the page source holds one read snapshot for everything the plan reads
    rc = st_pool_source_init(&plan.src, db, schema, store, err)
    if rc != SQLITE_OK:
        return rc
    rc = st_page_read_store_config(db, schema, store, &plan.block_rows, &plan.block_cols, err)
    if rc != SQLITE_OK:
        return rc
    if plan.block_rows * plan.block_cols * 8 > ST_MAX_PAGE_BYTES:   # each is at most 65536
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: blocks of %lld x %lld in "
                                 "%s_config are over the largest a store can have", store,
                                 plan.block_rows, plan.block_cols, store)
        return SQLITE_CORRUPT
    rc = st_sql_has_residuals(db, schema, store, &plan.has_residuals, err)
    if rc != SQLITE_OK:
        return rc
    rc = st_sql_has_factors(db, schema, store, &plan.has_factors, err)
    if rc != SQLITE_OK:
        return rc
    rc = st_sql_prepare(
        db, "SELECT m.layers IS NULL, json_array_length(m.layers) FROM {models} m WHERE m.name = ?1",
        schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    rc = sqlite3_step(stmt)
    if rc == SQLITE_ROW:
        nlayers = sqlite3_column_int64(stmt, 1)
        n = -1 if sqlite3_column_int64(stmt, 0) else <int>min(nlayers,
                                                              <sqlite3_int64>ST_MAX_LAYERS + 1)
    elif rc != SQLITE_DONE and rc != SQLITE_ERROR:   # busy, I/O, interrupted...: not damage
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        sqlite3_finalize(stmt)
        return rc
    elif rc != SQLITE_DONE:  # json_array_length failed: the stored layers are not JSON
        err[0] = sqlite3_mprintf("the layers of model '%s' cannot be read (%s); set them again "
                                 "with Store.set_layers", model, sqlite3_errmsg(db))
        sqlite3_finalize(stmt)
        return SQLITE_CORRUPT
    sqlite3_finalize(stmt)
    if rc != SQLITE_ROW:
        err[0] = sqlite3_mprintf("no model '%s' in store '%s'", model, store)
        return SQLITE_ERROR
    if n <= 0:
        hint = st_enc_no_layers_hint(db, schema, store, model)   # an unsupported architecture
        err[0] = sqlite3_mprintf("model '%s' has no layers%s; give it some with "
                                 "Store.set_layers('%s', [...])", model,
                                 st_sql_text_or(hint, ""), model)
        sqlite3_free(hint)
        return SQLITE_ERROR
    if n > ST_MAX_LAYERS:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s' lists %lld layers in "
                                 "%s_models, over the limit of %d", store, model, nlayers, store,
                                 <int>ST_MAX_LAYERS)
        return SQLITE_CORRUPT
    plan.layers = <Layer *>calloc(n, sizeof(Layer))
    if plan.layers == NULL:
        return SQLITE_NOMEM
    plan.nlayers = n
    rc = st_sql_prepare(
        db, "SELECT j.value ->> '$.op', j.value ->> '$.activation', j.value ->> '$.transpose',"
            " j.value ->> '$.mode', j.value ->> '$.weight', w.id, w.rows, w.cols, w.dtype, w.nbytes,"
            " j.value ->> '$.bias', b.id, b.rows, b.cols, b.dtype, b.nbytes"
            " FROM {models} m, json_each(m.layers) j"
            " LEFT JOIN {tensors} w ON w.model_id = m.id AND w.name = j.value ->> '$.weight'"
            " LEFT JOIN {tensors} b ON b.model_id = m.id AND b.name = j.value ->> '$.bias'"
            " WHERE m.name = ?1 ORDER BY j.key", schema, store, &stmt)
    if rc != SQLITE_OK:
        err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
        return rc
    sqlite3_bind_text(stmt, 1, model, -1, SQLITE_STATIC)
    i = 0
    while rc == SQLITE_OK and i < n:
        step = sqlite3_step(stmt)
        if step != SQLITE_ROW:
            if step != SQLITE_DONE and step != SQLITE_ERROR:
                err[0] = sqlite3_mprintf("%s", sqlite3_errmsg(db))
                rc = step
            break
        L = &plan.layers[i]
        op_name = <const char *>sqlite3_column_text(stmt, 0)
        L.op = st_plan_op_code(op_name)
        L.act = st_plan_act_code(<const char *>sqlite3_column_text(stmt, 1))
        L.transpose = <int>sqlite3_column_int64(stmt, 2)
        mode = <const char *>sqlite3_column_text(stmt, 3)
        L.bag_mean = 1 if mode == NULL else st_plan_name_code(st_bag_modes, mode)   # 1: mean
        if L.bag_mean < 0:
            L.act = -1   # reported below as a layer not understood
        if L.op < 0 or L.act < 0:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: layer %d of model '%s' is not "
                                     "understood (op %s); set the layers again with "
                                     "Store.set_layers", store, i, model,
                                     st_sql_text_or(op_name, "missing"))
            rc = SQLITE_CORRUPT
            break
        rc = st_plan_weight_from_row(stmt, 4, &L.weight, store, model, i, "weight", err)
        if rc == SQLITE_OK:
            rc = st_plan_weight_from_row(stmt, 10, &L.bias, store, model, i, "bias", err)
        if rc == SQLITE_OK and L.bias.tensor_id != 0 and L.op != OP_DENSE:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: layer %d of model '%s' is "
                                     "not dense but names a bias", store, i, model)
            rc = SQLITE_CORRUPT
        if rc == SQLITE_OK and L.op == OP_ENCODER and i == 0:
            rc = st_enc_plan_load(db, plan, model, err)   # its weights (inference/encoder.pxi)
        if rc != SQLITE_OK:
            break
        rc = st_plan_layer_shapes(plan, L, i, model, &width, err)
        i += 1
    sqlite3_finalize(stmt)
    if rc != SQLITE_OK:
        return rc
    if i != n:
        err[0] = sqlite3_mprintf("model '%s': its layer list could not be read", model)
        return SQLITE_CORRUPT
    for i in range(n):
        L = &plan.layers[i]
        if L.weight.tensor_id != 0:
            rc = st_plan_load_weight(db, schema, store, plan, &L.weight, err)
        if rc == SQLITE_OK and L.bias.tensor_id != 0:
            rc = st_plan_load_weight(db, schema, store, plan, &L.bias, err)
        if rc != SQLITE_OK:
            return rc
    plan.n_out = width
    # a row of activations must be something SQLite could hold (a tiny file can describe
    # a layer billions wide, every tile sharing one block)
    return st_sql_check_result_bytes(db, "a row of the model's activations", plan.max_width,
                                     sizeof(float), err)


cdef int st_plan_layer_shapes(Plan *plan, Layer *L, int i, const char *model,
                              sqlite3_int64 *width, char **err) noexcept nogil:
    """Check a layer against the width flowing into it (layers.py checked it when stored;
    a mismatch now means the store was edited since: SQLITE_CORRUPT)."""
    if L.op == OP_ACTIVATION:
        if width[0] < 0:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s': layer %d is an "
                                     "activation with no input", plan.store, model, i)
            return SQLITE_CORRUPT
        L.n_in = width[0]
        L.n_out = width[0]
        return SQLITE_OK
    if L.op == OP_ENCODER:
        if i != 0 or plan.encoder == NULL:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s': layer %d is an "
                                     "encoder but not the first", plan.store, model, i)
            return SQLITE_CORRUPT
        L.n_in = plan.encoder.word.n_in
        L.n_out = plan.encoder.hidden
        plan.n_in = L.n_in
        width[0] = L.n_out
        plan.max_width = max(plan.max_width, L.n_out)
        return SQLITE_OK
    if L.weight.tensor_id == 0:
        err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: layer %d of model '%s' names no "
                                 "weight", plan.store, i, model)
        return SQLITE_CORRUPT
    if L.op == OP_EMBEDDING or L.op == OP_EMBEDDING_BAG:
        if i != 0:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s': layer %d is an "
                                     "embedding but not the first", plan.store, model, i)
            return SQLITE_CORRUPT
        plan.input_kind = INPUT_IDS if L.op == OP_EMBEDDING else INPUT_BAGS
        L.n_in = L.weight.rows
        L.n_out = L.weight.cols
        plan.n_in = L.n_in
    else:
        L.n_in = L.weight.rows if L.transpose else L.weight.cols
        L.n_out = L.weight.cols if L.transpose else L.weight.rows
        if width[0] < 0:
            plan.input_kind = INPUT_FEATURES
            plan.n_in = L.n_in
        elif L.n_in != width[0]:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s': layer %d takes "
                                     "%lld features but gets %lld", plan.store, model, i, L.n_in,
                                     width[0])
            return SQLITE_CORRUPT
        if L.bias.tensor_id != 0 and L.bias.rows * L.bias.cols != L.n_out:
            err[0] = sqlite3_mprintf("tensor store '%s' is corrupt: model '%s': the bias of layer "
                                     "%d has %lld values for %lld outputs", plan.store, model, i,
                                     L.bias.rows * L.bias.cols, L.n_out)
            return SQLITE_CORRUPT
    width[0] = L.n_out
    if L.n_out > plan.max_width:
        plan.max_width = L.n_out
    if plan.n_in > plan.max_width and plan.input_kind == INPUT_FEATURES:
        plan.max_width = plan.n_in
    return SQLITE_OK
