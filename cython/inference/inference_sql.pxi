# Inference from SQL.
#
#   SELECT tensor_predict('tensors', 'clf', '[0.1, 0.2, ...]');        -- float32 BLOB
#   SELECT tensor_argmax(tensor_predict('tensors', 'clf', features)) FROM inputs;
#   SELECT tensor_topk(tensor_predict('tensors', 'clf', features), 3) FROM inputs;
#   SELECT id, tensor_argmax(output)
#     FROM tensor_predict_batch('tensors', 'clf', 'SELECT id, features FROM inputs');
#
# tensor_predict runs one input per call (a matrix-vector product per weight tile); the
# model's plan is kept for the whole statement (sqlite3_set_auxdata on the model
# argument), so a query over many rows loads it once. tensor_predict_batch reads the rows
# of a query in batches and runs matrix-matrix products: the form for many rows.
#
# A store argument 'db.name' names a store in an attached database (st_sql_split_store_name).
# JSON results (tensor_json, tensor_topk) are valid JSON for every float, as SQLite's own
# JSON functions write them: NaN is null, +-infinity is +-9e999. Results are checked
# against SQLite's length limit before anything is allocated for them (SQLITE_TOOBIG).

# Plans are also kept between statements (a batch-1 tensor_predict per statement would
# otherwise load its plan every call): a statement's plan goes back to st_infer_plans when
# SQLite drops it, and the next statement of that connection, store argument and model
# takes it while st_pool_source_same_version says the store is as when it was loaded (Python's
# Store.predict keeps its plans the same way). Taken plans are out of the table, so no two
# statements share one; a kept plan holds no SQLite resources.
ctypedef struct SqlPlan:
    Plan plan                     # first: a SqlPlan * is the statement's Plan *
    sqlite3 *db
    char *model                   # sqlite3_mprintf
    uint64_t store_key, epoch     # the store and view it was loaded in
    uint64_t used                 # st_infer_plans_clock when it was put back

cdef enum:
    ST_INFER_PLANS_KEPT = 16

cdef SqlPlan *st_infer_plans[ST_INFER_PLANS_KEPT]   # guarded by st_views_mutex (fork handlers cover it)
cdef uint64_t st_infer_plans_clock


cdef void st_infer_plan_free(SqlPlan *sp) noexcept nogil:
    st_plan_free(&sp.plan)
    sqlite3_free(sp.model)
    free(sp)


cdef void st_infer_plan_destroy(void *p) noexcept nogil:
    """SQLite drops a statement's plan: kept for the next statement (the oldest kept plan
    freed to make room), or freed when its store cannot be cached."""
    global st_infer_plans_clock
    cdef SqlPlan *sp = <SqlPlan *>p
    cdef SqlPlan *out = NULL
    cdef int i, at = 0
    if sp.plan.src.uncached or sp.model == NULL or st_page_checks_off:   # (no epoch to trust)
        st_infer_plan_free(sp)
        return
    st_pool_source_close(&sp.plan.src)
    pthread_mutex_lock(&st_views_mutex)
    st_infer_plans_clock += 1
    sp.used = st_infer_plans_clock
    for i in range(ST_INFER_PLANS_KEPT):
        if st_infer_plans[i] == NULL:
            at = i
            break
        if st_infer_plans[i].used < st_infer_plans[at].used:
            at = i
    out = st_infer_plans[at]
    st_infer_plans[at] = sp
    pthread_mutex_unlock(&st_views_mutex)
    if out != NULL:
        st_infer_plan_free(out)


cdef SqlPlan *st_infer_plan_take(sqlite3 *db, const char *store_arg,
                                 const char *model) noexcept nogil:
    """The kept plan of (db, store_arg, model), out of the table, or NULL."""
    cdef SqlPlan *sp = NULL
    cdef int i
    pthread_mutex_lock(&st_views_mutex)
    for i in range(ST_INFER_PLANS_KEPT):
        if st_infer_plans[i] != NULL and st_infer_plans[i].db == db \
                and strcmp(st_infer_plans[i].plan.store_arg, store_arg) == 0 \
                and strcmp(st_infer_plans[i].model, model) == 0:
            sp = st_infer_plans[i]
            st_infer_plans[i] = NULL
            break
    pthread_mutex_unlock(&st_views_mutex)
    return sp


cdef Plan *st_infer_statement_plan(sqlite3_context *ctx, const char *fname,
                                   sqlite3_value **argv) noexcept nogil:
    """The plan of (argv[0] store, argv[1] model), loaded once per statement (or kept from
    an earlier one); NULL after setting the function's error."""
    cdef const char *names[2]
    cdef const char *args[2]
    cdef char *err = NULL
    cdef char *schema = NULL
    cdef char *store = NULL
    cdef int rc
    cdef PageSource src
    cdef sqlite3 *db = sqlite3_context_db_handle(ctx)
    cdef Plan *plan = <Plan *>sqlite3_get_auxdata(ctx, 1)
    cdef SqlPlan *sp
    names[0] = "store"
    names[1] = "model"
    if st_fn_text_args(ctx, fname, 2, argv, names, args):
        return NULL
    # SQLite keeps aux data while the model argument is unchanged; the store may still
    # change from row to row.
    if plan != NULL and strcmp(plan.store_arg, args[0]) == 0:
        return plan
    sp = st_infer_plan_take(db, args[0], args[1])
    if sp != NULL:
        # the store named the same may be another one now ('db.name' after a new ATTACH):
        # st_pool_source_init identifies it afresh
        rc = st_pool_source_init(&src, db, sp.plan.schema, sp.plan.store, &err)
        if rc == SQLITE_OK and st_pool_source_same_version(&src, sp.store_key, sp.epoch):
            sp.plan.src = src
            sqlite3_set_auxdata(ctx, 1, sp, st_infer_plan_destroy)
            return <Plan *>sqlite3_get_auxdata(ctx, 1)
        st_pool_source_close(&src)
        sqlite3_free(err)   # a failure recurs in the load below, which reports it
        err = NULL
        st_infer_plan_free(sp)
    sp = <SqlPlan *>calloc(1, sizeof(SqlPlan))
    if sp == NULL:
        sqlite3_result_error_nomem(ctx)
        return NULL
    plan = &sp.plan
    sp.db = db
    rc = st_sql_split_store_name(db, args[0], &schema, &store, &err)
    if rc == SQLITE_OK:
        rc = st_plan_load(db, schema, store, args[1], plan, &err)
    if rc == SQLITE_OK:
        plan.store_arg = sqlite3_mprintf("%s", args[0])
        sp.model = sqlite3_mprintf("%s", args[1])
        sp.store_key = plan.src.store_key
        sp.epoch = plan.src.epoch
        if plan.store_arg == NULL or sp.model == NULL:
            rc = SQLITE_NOMEM
    sqlite3_free(schema)
    sqlite3_free(store)
    if rc != SQLITE_OK:
        st_infer_fail(ctx, fname, err, rc)
        st_infer_plan_free(sp)
        return NULL
    sqlite3_set_auxdata(ctx, 1, sp, st_infer_plan_destroy)
    return <Plan *>sqlite3_get_auxdata(ctx, 1)  # NULL if SQLite could not keep it


cdef void st_infer_fail(sqlite3_context *ctx, const char *fname, char *err, int rc) noexcept nogil:
    """Report err (freed here) as the function's error, with rc as its code."""
    cdef char *msg = sqlite3_mprintf("%s: %s", fname, st_sql_text_or(err, "out of memory"))
    if rc == SQLITE_NOMEM and err == NULL:
        sqlite3_result_error_nomem(ctx)
        sqlite3_free(msg)
        return
    sqlite3_result_error(ctx, msg, -1)
    if rc != SQLITE_ERROR and rc != SQLITE_OK:
        sqlite3_result_error_code(ctx, rc)
    sqlite3_free(msg)
    sqlite3_free(err)


cdef void st_infer_predict(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_predict(store, model, input): the model's output as a float32 BLOB."""
    cdef InputBuilder b
    cdef char *err = NULL
    cdef float *out
    cdef int rc
    cdef Plan *plan = st_infer_statement_plan(ctx, "tensor_predict", argv)
    if plan == NULL:
        return
    memset(&b, 0, sizeof(InputBuilder))
    rc = st_input_add(&b, plan, argv[2], 0, &err)
    if rc == SQLITE_OK:
        rc = st_sql_check_result_bytes(sqlite3_context_db_handle(ctx), "the output",
                                       b.inp.batch, plan.n_out * sizeof(float), &err)
    if rc != SQLITE_OK:
        st_input_free(&b)
        st_infer_fail(ctx, "tensor_predict", err, rc)
        return
    cdef sqlite3_int64 nbytes = b.inp.batch * plan.n_out * sizeof(float)
    out = <float *>sqlite3_malloc64(nbytes)
    rc = SQLITE_NOMEM if out == NULL else st_kern_forward(plan, &b.inp, out, &err)
    st_input_free(&b)
    if rc != SQLITE_OK:
        sqlite3_free(out)
        st_infer_fail(ctx, "tensor_predict", err, rc)
        return
    sqlite3_result_blob64(ctx, out, nbytes, sqlite3_free)


cdef int st_infer_float_blob(sqlite3_context *ctx, const char *fname, sqlite3_value *v,
                             const float **data, int *n) noexcept nogil:
    """Read a non-empty float32 BLOB argument; sets the error and returns 1 otherwise."""
    cdef char *msg
    cdef int bytes = sqlite3_value_bytes(v)
    if sqlite3_value_type(v) != SQLITE_BLOB or bytes == 0 or bytes % 4 != 0:
        msg = sqlite3_mprintf("%s: expects a non-empty float32 BLOB (as tensor_predict returns), "
                              "got %s of %d bytes", fname,
                              st_fn_value_type_name(sqlite3_value_type(v)), bytes)
        sqlite3_result_error(ctx, msg, -1)
        sqlite3_free(msg)
        return 1
    data[0] = <const float *>sqlite3_value_blob(v)
    n[0] = bytes // 4
    return 0


cdef inline float st_infer_blob_float(const float *data, int i) noexcept nogil:
    cdef float v
    memcpy(&v, data + i, 4)  # SQLite does not promise an aligned BLOB
    return v


cdef int st_infer_argmax_of(const float *data, int n) noexcept nogil:
    """As numpy.argmax: the first largest value, or the first NaN if there is one."""
    cdef int i, best = 0
    cdef float v
    for i in range(n):
        v = st_infer_blob_float(data, i)
        if v != v:
            return i
        if v > st_infer_blob_float(data, best):
            best = i
    return best


cdef void st_infer_argmax(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_argmax(blob): index of the largest value (the first, on ties)."""
    cdef const float *data
    cdef int n
    if not st_infer_float_blob(ctx, "tensor_argmax", argv[0], &data, &n):
        sqlite3_result_int64(ctx, st_infer_argmax_of(data, n))


cdef void st_infer_max(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_max(blob): the largest value (the score of tensor_argmax's label); NULL when
    that is NaN (SQLite has no NaN)."""
    cdef const float *data
    cdef int n
    if not st_infer_float_blob(ctx, "tensor_max", argv[0], &data, &n):
        sqlite3_result_double(ctx, st_infer_blob_float(data, st_infer_argmax_of(data, n)))


cdef void st_infer_result_str(sqlite3_context *ctx, const char *fname,
                              sqlite3_str *out) noexcept nogil:
    """Finish a string built with sqlite3_str_* (which stops at SQLite's length limit) and
    make it the function's result."""
    cdef int code = sqlite3_str_errcode(out)
    cdef char *text = sqlite3_str_finish(out)
    if code == SQLITE_TOOBIG:
        sqlite3_free(text)
        st_infer_fail(ctx, fname,
                      sqlite3_mprintf("the result would be longer than SQLite's length limit "
                                      "of %lld bytes",
                                      st_sql_length_limit(sqlite3_context_db_handle(ctx))),
                      SQLITE_TOOBIG)
        return
    if text == NULL or code != SQLITE_OK:
        sqlite3_free(text)
        sqlite3_result_error_nomem(ctx)
        return
    sqlite3_result_text(ctx, text, -1, sqlite3_free)


cdef void st_infer_append_json_float(sqlite3_str *out, float v) noexcept nogil:
    """v as JSON, the way SQLite's JSON functions write doubles: NaN is null, infinities
    are 9e999 / -9e999 (which every JSON parser reads back as infinities)."""
    if v != v:
        sqlite3_str_append(out, "null", 4)
    elif v > 3.4028234663852886e38:
        sqlite3_str_append(out, "9e999", 5)
    elif v < -3.4028234663852886e38:
        sqlite3_str_append(out, "-9e999", 6)
    else:
        sqlite3_str_appendf(out, "%!.9g", <double>v)


cdef inline bint st_infer_ranks_above(float a, sqlite3_int64 i, float b,
                                      sqlite3_int64 j) noexcept nogil:
    """Order of tensor_topk: larger first, NaN above everything (as tensor_argmax and
    numpy.argmax pick the first NaN), ties by lower index."""
    if a != a or b != b:
        if a != a and b != b:
            return i < j
        return a != a
    if a != b:
        return a > b
    return i < j


cdef void st_infer_heap_sift_down(sqlite3_int64 *heap, float *vals, sqlite3_int64 n,
                                  sqlite3_int64 at) noexcept nogil:
    """Restore the heap below `at`: the root is the entry ranking lowest."""
    cdef sqlite3_int64 child, low
    while True:
        low = at
        child = 2 * at + 1
        if child < n and st_infer_ranks_above(vals[low], heap[low], vals[child], heap[child]):
            low = child
        child += 1
        if child < n and st_infer_ranks_above(vals[low], heap[low], vals[child], heap[child]):
            low = child
        if low == at:
            return
        heap[at], heap[low] = heap[low], heap[at]
        vals[at], vals[low] = vals[low], vals[at]
        at = low


cdef void st_infer_topk(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_topk(blob, k): JSON [[index, score], ...] of the k largest, best first.

    A heap of the k best so far: O(n log k); sqlite3_interrupt is checked as it goes."""
    cdef const float *data
    cdef int n
    cdef sqlite3_int64 i, j, k, m = 0
    cdef sqlite3_int64 *heap
    cdef float *vals
    cdef float v
    cdef char *err = NULL
    cdef sqlite3 *db = sqlite3_context_db_handle(ctx)
    cdef sqlite3_str *out
    if st_infer_float_blob(ctx, "tensor_topk", argv[0], &data, &n):
        return
    if sqlite3_value_type(argv[1]) != SQLITE_INTEGER or sqlite3_value_int64(argv[1]) < 1:
        sqlite3_result_error(ctx, "tensor_topk: k must be a positive integer", -1)
        return
    k = min(sqlite3_value_int64(argv[1]), <sqlite3_int64>n)
    heap = <sqlite3_int64 *>malloc(k * sizeof(sqlite3_int64))
    vals = <float *>malloc(k * sizeof(float))
    if heap == NULL or vals == NULL:
        free(heap)
        free(vals)
        sqlite3_result_error_nomem(ctx)
        return
    for i in range(n):
        if i % ST_INTERRUPT_EVERY == ST_INTERRUPT_EVERY - 1 and st_sql_interrupted(db,
                                                                                   &err) != SQLITE_OK:
            free(heap)
            free(vals)
            st_infer_fail(ctx, "tensor_topk", err, SQLITE_INTERRUPT)
            return
        v = st_infer_blob_float(data, <int>i)
        if m < k:   # sift up
            j = m
            m += 1
            heap[j] = i
            vals[j] = v
            while j > 0 and st_infer_ranks_above(vals[(j - 1) // 2], heap[(j - 1) // 2], vals[j],
                                                 heap[j]):
                heap[j], heap[(j - 1) // 2] = heap[(j - 1) // 2], heap[j]
                vals[j], vals[(j - 1) // 2] = vals[(j - 1) // 2], vals[j]
                j = (j - 1) // 2
        elif st_infer_ranks_above(v, i, vals[0], heap[0]):
            heap[0] = i
            vals[0] = v
            st_infer_heap_sift_down(heap, vals, m, 0)
    # take the lowest off the heap k times: the best ends up first
    while m > 1:
        m -= 1
        heap[0], heap[m] = heap[m], heap[0]
        vals[0], vals[m] = vals[m], vals[0]
        st_infer_heap_sift_down(heap, vals, m, 0)
    out = sqlite3_str_new(db)
    sqlite3_str_append(out, "[", 1)
    for j in range(k):
        if j > 0:
            sqlite3_str_append(out, ",", 1)
        sqlite3_str_appendf(out, "[%lld,", heap[j])
        st_infer_append_json_float(out, vals[j])
        sqlite3_str_append(out, "]", 1)
    sqlite3_str_append(out, "]", 1)
    free(heap)
    free(vals)
    st_infer_result_str(ctx, "tensor_topk", out)


cdef void st_infer_json(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_json(blob): a float32 BLOB as a JSON array (handy in the shell); NaN is null,
    infinities 9e999 / -9e999."""
    cdef const float *data
    cdef int n, i
    if st_infer_float_blob(ctx, "tensor_json", argv[0], &data, &n):
        return
    cdef sqlite3_str *out = sqlite3_str_new(sqlite3_context_db_handle(ctx))
    sqlite3_str_append(out, "[", 1)
    for i in range(n):
        if i > 0:
            sqlite3_str_append(out, ",", 1)
        st_infer_append_json_float(out, st_infer_blob_float(data, i))
    sqlite3_str_append(out, "]", 1)
    st_infer_result_str(ctx, "tensor_json", out)


cdef void st_infer_threads(sqlite3_context *ctx, int argc, sqlite3_value **argv) noexcept nogil:
    """tensor_threads() / tensor_threads(n): the kernels' thread setting, as set (with n);
    0 is the default, one per online CPU, so tensor_threads(tensor_threads()) changes nothing."""
    global st_kern_thread_setting
    if argc == 1:
        if sqlite3_value_type(argv[0]) != SQLITE_INTEGER or sqlite3_value_int64(argv[0]) < 0 \
                or sqlite3_value_int64(argv[0]) > 256:
            sqlite3_result_error(ctx, "tensor_threads: the thread count must be an integer from 1 "
                                 "to 256 (0: one per CPU)", -1)
            return
        st_kern_thread_setting = <int>sqlite3_value_int64(argv[0])
    sqlite3_result_int64(ctx, st_kern_thread_setting)
